//! A WebSocket echo server built from goclaw's transport pieces (the same
//! HTTP upgrade, tungstenite settings, read deadlines, heartbeat pings,
//! bounded non-blocking write path and close codes as the gateway; see
//! `server.rs`), with the protocol replaced by "send every text or binary
//! message back". It exists so goclaw's transport can be compared one to
//! one with other WebSocket servers, and checked by any WebSocket client.
//!
//!     cargo run --release --example echo -- --listen 127.0.0.1:9001
//!
//! Flags: `--listen ADDR` (default 127.0.0.1:9001), `--max-message-size
//! BYTES`. Up to 20,000 connections; everything else keeps the gateway's
//! defaults.
//!
//! `--raw` instead serves the benchmark's baseline: a std-only TCP echo of
//! 64-byte messages, one thread per connection with the gateway's stack
//! size, linked with the same libc as the gateway it is compared with.

mod server;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::thread;

use server::{EchoConfig, EchoServer};

fn main() {
    let mut config = EchoConfig::default();
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let raw = args.first().is_some_and(|a| a == "--raw");
    if raw {
        args.remove(0);
    }
    for pair in args.chunks(2) {
        let [flag, value] = pair else {
            exit(&format!("{} needs a value", pair[0]));
        };
        match flag.as_str() {
            "--listen" => config.listen = value.parse().unwrap_or_else(|_| exit("--listen: expected IP:PORT")),
            "--max-message-size" => {
                config.max_message_bytes = value.parse().unwrap_or_else(|_| exit("--max-message-size: expected bytes"));
            }
            other => exit(&format!("unknown flag {other}")),
        }
    }
    if raw {
        raw_echo(config.listen);
    }
    let server = EchoServer::start(config).unwrap_or_else(|e| exit(&e.to_string()));
    // Benchmarks read this line to find the port.
    eprintln!("echo listening addr={}", server.local_addr());
    let (stop, stopped) = mpsc::channel();
    ctrlc::set_handler(move || {
        let _ = stop.send(());
    })
    .unwrap_or_else(|e| exit(&e.to_string()));
    let _ = stopped.recv();
    let echoed = server.metrics().messages(goclaw::Direction::Out, goclaw::MsgType::Res);
    let report = server.shutdown();
    eprintln!("echo: stopped after {echoed} text messages; {} connections cut", report.cut);
}

/// The raw-TCP baseline: read 64 bytes, write them back, one thread per
/// connection with the gateway's connection stack size.
fn raw_echo(listen: std::net::SocketAddr) -> ! {
    let listener = TcpListener::bind(listen).unwrap_or_else(|e| exit(&e.to_string()));
    let addr = listener.local_addr().unwrap_or_else(|e| exit(&e.to_string()));
    eprintln!("raw echo listening addr={addr}");
    for stream in listener.incoming().flatten() {
        let spawned = thread::Builder::new().stack_size(128 * 1024).spawn(move || {
            let mut stream = stream;
            let _ = stream.set_nodelay(true);
            let mut buf = [0u8; 64];
            while stream.read_exact(&mut buf).is_ok() {
                if stream.write_all(&buf).is_err() {
                    return;
                }
            }
        });
        if spawned.is_err() {
            eprintln!("raw echo: cannot start a thread");
        }
    }
    exit("listener failed")
}

fn exit(why: &str) -> ! {
    eprintln!("echo: {why}");
    std::process::exit(2)
}
