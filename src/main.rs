//! The `goclaw` binary: parses the command line, runs the gateway until
//! SIGINT or SIGTERM, shuts it down in order and exits 0. A second signal
//! exits 130 at once. Bad input exits 2, a failed start 1, each with one line.
//! `goclaw healthcheck` probes a running gateway and exits 0 or 1.

#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use std::time::Duration;

use goclaw::{Command, Config, Gateway, LogLimits};

/// Everything `goclaw healthcheck` does must fit in this (Docker's default
/// HEALTHCHECK timeout is 30 s; ours uses 5 s).
const HEALTHCHECK_TIMEOUT: Duration = Duration::from_secs(3);

fn main() -> ExitCode {
    let args: Result<Vec<String>, _> = std::env::args_os().skip(1).map(|a| a.into_string()).collect();
    let Ok(args) = args else {
        eprintln!("goclaw: arguments must be valid UTF-8");
        return ExitCode::from(2);
    };
    match goclaw::parse_args(&args, |name| std::env::var(name).ok()) {
        Ok(Command::Help(text)) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Ok(Command::Version) => {
            println!("goclaw {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Ok(Command::Serve(config)) => serve(*config),
        Ok(Command::Healthcheck { url }) => match goclaw::probe_health(&url, HEALTHCHECK_TIMEOUT) {
            Ok(()) => ExitCode::SUCCESS,
            Err(why) => {
                eprintln!("goclaw: unhealthy: {why}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("goclaw: {e}");
            ExitCode::from(2)
        }
    }
}

fn serve(config: Config) -> ExitCode {
    let logs = match goclaw::init_logging(config.log_level, config.state_dir.as_deref(), LogLimits::default()) {
        Ok(logs) => logs,
        Err(e) => {
            eprintln!("goclaw: cannot set up logging: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Installed before the gateway starts, so no signal finds the default
    // action. The first signal asks for a graceful shutdown; the second
    // means "now".
    let (signalled, signal) = mpsc::channel();
    let count = AtomicUsize::new(0);
    let handler = ctrlc::set_handler(move || {
        if count.fetch_add(1, Ordering::SeqCst) == 0 {
            let _ = signalled.send(());
        } else {
            eprintln!("goclaw: second signal, exiting now");
            std::process::exit(130);
        }
    });
    if let Err(e) = handler {
        eprintln!("goclaw: cannot install the signal handler: {e}");
        return ExitCode::FAILURE;
    }
    let gateway = match Gateway::start(config) {
        Ok(gateway) => gateway,
        Err(e) => {
            logs.finish();
            eprintln!("goclaw: {e}");
            return ExitCode::FAILURE;
        }
    };
    // recv() only fails if the handler is gone, which it never is.
    let _ = signal.recv();
    // Logs "shutdown complete" last; finish() puts it in the file and closes it.
    gateway.shutdown();
    logs.finish();
    ExitCode::SUCCESS
}
