//! The `goclaw` binary: parses the command line, runs the gateway until
//! SIGINT or SIGTERM, shuts it down in order and exits 0. A second signal
//! exits 130 at once. Bad input exits 2, a failed start 1, each with one line.
//! `goclaw healthcheck` probes a running gateway and exits 0 or 1.
//! `goclaw node` runs the node agent until SIGINT or SIGTERM (exit 0; 1
//! when its device key cannot be read); `goclaw nodes` (and its pairing
//! subcommands), `invoke` and `watch` exit 0, 1 for an error answer (or a
//! device key that cannot be read), 2 for bad usage, 3 when the gateway
//! cannot be reached and 4 when it still refuses the connection for now
//! after bounded retries, or this client's device waits for approval.

#![forbid(unsafe_code)]

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use goclaw::{
    ClientError, Command, Config, EXIT_CONNECTION, EXIT_GATEWAY_ERROR, EXIT_REFUSED, EXIT_USAGE, Gateway, LogLimits,
    Logs, Stop,
};

/// `eprintln!` for the lines the binary writes itself: under journald they
/// start with the error priority `<3>` (sd-daemon(3)), as the logger's
/// error lines do, so `journalctl -p err` shows why goclaw stopped.
macro_rules! error_line {
    ($($arg:tt)*) => {
        eprintln!("{}{}", if goclaw::under_journald() { "<3>" } else { "" }, format_args!($($arg)*))
    };
}

/// Everything `goclaw healthcheck` does must fit in this (Docker's default
/// HEALTHCHECK timeout is 30 s; ours uses 5 s).
const HEALTHCHECK_TIMEOUT: Duration = Duration::from_secs(3);

fn main() -> ExitCode {
    let args: Result<Vec<String>, _> = std::env::args_os().skip(1).map(|a| a.into_string()).collect();
    let Ok(args) = args else {
        error_line!("goclaw: arguments must be valid UTF-8");
        return ExitCode::from(EXIT_USAGE);
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
                error_line!("goclaw: unhealthy: {why}");
                ExitCode::FAILURE
            }
        },
        Ok(Command::Node(config)) => {
            let Some(logs) = logging(config.log_level, None) else { return ExitCode::FAILURE };
            let Some(stop) = stop_on_signal() else { return ExitCode::FAILURE };
            let ran = goclaw::run_node(&config, &stop);
            logs.finish();
            match ran {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    error_line!("goclaw: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Ok(Command::Nodes { operator, json }) => client_exit(goclaw::nodes(&operator, json, &mut std::io::stdout())),
        Ok(Command::Pairing { operator, action, json }) => {
            client_exit(goclaw::pairing(&operator, &action, json, &mut std::io::stdout()))
        }
        Ok(Command::Invoke { operator, node, command, params, timeout, json }) => {
            let answer = goclaw::invoke(&operator, &node, &command, params, timeout);
            let mut out = std::io::stdout();
            let printed = match (&answer, json) {
                (Ok(payload), false) if out.is_terminal() => serde_json::to_string_pretty(payload).ok(),
                (Ok(payload), false) => Some(payload.to_string()),
                (Ok(payload), true) => Some(serde_json::json!({"ok": true, "payload": payload}).to_string()),
                (Err(ClientError::Gateway { code, message }), true) => {
                    Some(serde_json::json!({"ok": false, "error": {"code": code, "message": message}}).to_string())
                }
                (Err(_), _) => None,
            };
            if let Some(text) = printed {
                let _ = writeln!(out, "{text}");
            }
            client_exit(answer.map(|_| ()))
        }
        Ok(Command::Watch { operator, json }) => {
            let Some(stop) = stop_on_signal() else { return ExitCode::FAILURE };
            client_exit(goclaw::watch(&operator, json, &stop, &mut std::io::stdout()))
        }
        Err(e) => {
            error_line!("goclaw: {e}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// The exit status of an operator command, its error on stderr: the
/// gateway's `CODE: message` (1), this client's device key that cannot be
/// read (1), usage the gateway's answer shows wrong (2), what kept us from
/// talking to it (3), its refusal for now or a device waiting for approval
/// (4).
fn client_exit(result: Result<(), ClientError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ ClientError::Gateway { .. }) => {
            error_line!("{e}");
            ExitCode::from(EXIT_GATEWAY_ERROR)
        }
        Err(e @ ClientError::State(_)) => {
            error_line!("goclaw: {e}");
            ExitCode::from(EXIT_GATEWAY_ERROR)
        }
        Err(e @ ClientError::Usage(_)) => {
            error_line!("goclaw: {e}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(e @ (ClientError::RefusedForNow { .. } | ClientError::PairingPending { .. })) => {
            error_line!("goclaw: {e}");
            ExitCode::from(EXIT_REFUSED)
        }
        Err(e) => {
            error_line!("goclaw: {e}");
            ExitCode::from(EXIT_CONNECTION)
        }
    }
}

/// A stop request set by the first SIGINT or SIGTERM; the second exits 130
/// at once. Installed before anything starts, so no signal finds the
/// default action.
fn stop_on_signal() -> Option<Arc<Stop>> {
    let stop = Arc::new(Stop::default());
    let setter = stop.clone();
    let count = AtomicUsize::new(0);
    let installed = ctrlc::set_handler(move || {
        if count.fetch_add(1, Ordering::SeqCst) == 0 {
            setter.set();
        } else {
            error_line!("goclaw: second signal, exiting now");
            std::process::exit(130);
        }
    });
    match installed {
        Ok(()) => Some(stop),
        Err(e) => {
            error_line!("goclaw: cannot install the signal handler: {e}");
            None
        }
    }
}

/// The console logger, and the JSON file under `state_dir` if given.
fn logging(level: log::LevelFilter, state_dir: Option<&std::path::Path>) -> Option<Logs> {
    match goclaw::init_logging(level, state_dir, LogLimits::default()) {
        Ok(logs) => Some(logs),
        Err(e) => {
            error_line!("goclaw: cannot set up logging: {e}");
            None
        }
    }
}

fn serve(config: Config) -> ExitCode {
    let Some(logs) = logging(config.log_level, config.state_dir.as_deref()) else { return ExitCode::FAILURE };
    let Some(stop) = stop_on_signal() else { return ExitCode::FAILURE };
    let gateway = match Gateway::start(config) {
        Ok(gateway) => gateway,
        Err(e) => {
            logs.finish();
            error_line!("goclaw: {e}");
            return ExitCode::FAILURE;
        }
    };
    stop.wait();
    // Logs "shutdown complete" last; finish() puts it in the file and closes it.
    gateway.shutdown();
    logs.finish();
    ExitCode::SUCCESS
}
