//! A WebSocket echo server built from goclaw's own connection machinery:
//! the same accept loop, per-IP and connection limits, thread per
//! connection, read deadlines, heartbeat pings, bounded non-blocking write
//! path and close codes as the gateway; only the protocol is replaced by
//! "send every text or binary message back". It exists so goclaw's
//! transport can be compared one to one with other WebSocket servers, and
//! checked by any WebSocket client.
//!
//!     cargo run --release --example echo -- --listen 127.0.0.1:9001
//!
//! Flags: `--listen ADDR` (default 127.0.0.1:9001), `--metrics-listen ADDR`
//! (default 127.0.0.1:0, i.e. any free port), `--max-message-size BYTES`.
//! The per-IP connection rate limit is raised so benchmark clients on one
//! address are not throttled; everything else keeps the gateway's defaults.

use std::sync::mpsc;

use goclaw::{Config, Gateway, LogLimits};

fn main() {
    let mut config = Config {
        echo: true,
        rate_limit_per_sec: 1e6,
        rate_burst: 1_000_000,
        max_connections: 20_000,
        ..Config::default()
    };
    config.listen = "127.0.0.1:9001".parse().expect("a valid default address");
    config.metrics_listen = "127.0.0.1:0".parse().expect("a valid default address");
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let [flag, value] = pair else {
            exit(&format!("{} needs a value", pair[0]));
        };
        match flag.as_str() {
            "--listen" => config.listen = value.parse().unwrap_or_else(|_| exit("--listen: expected IP:PORT")),
            "--metrics-listen" => {
                config.metrics_listen = value.parse().unwrap_or_else(|_| exit("--metrics-listen: expected IP:PORT"));
            }
            "--max-message-size" => {
                config.max_message_bytes = value.parse().unwrap_or_else(|_| exit("--max-message-size: expected bytes"));
            }
            other => exit(&format!("unknown flag {other}")),
        }
    }
    let logs = goclaw::init_logging(log::LevelFilter::Warn, None, LogLimits::default()).expect("the only logger");
    let gateway = Gateway::start(config).unwrap_or_else(|e| exit(&e.to_string()));
    // Benchmarks read this line to find the port.
    eprintln!("echo listening addr={}", gateway.local_addr());
    let (stop, stopped) = mpsc::channel();
    ctrlc::set_handler(move || {
        let _ = stop.send(());
    })
    .unwrap_or_else(|e| exit(&e.to_string()));
    let _ = stopped.recv();
    gateway.shutdown();
    logs.finish();
}

fn exit(why: &str) -> ! {
    eprintln!("echo: {why}");
    std::process::exit(2)
}
