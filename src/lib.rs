//! goclaw: a small, auditable WebSocket gateway.
//!
//! Devices ("nodes") keep a WebSocket open to the gateway; operators connect
//! the same way and ask it to run a command on a node (`node.invoke`); the
//! gateway routes the request to the node and the node's answer back. The
//! wire protocol is OpenClaw gateway protocol v3 (the subset in SPEC.md).
//!
//! # Shape
//!
//! Synchronous, one OS thread per client, no async runtime:
//!
//! - the accept thread refuses what it can without a thread (per-IP rate
//!   limit, `--max-connections`, shutdown) and spawns one named thread per
//!   admitted connection (`conn`);
//! - that thread is its socket's only reader: HTTP upgrade, challenge,
//!   `connect`, request loop; its read deadline is the pong deadline;
//! - every write to a client goes through that client's non-blocking outbox
//!   (`outbox`), so no thread ever waits for another client's socket;
//! - one heartbeat thread (`heartbeat`) pings, ticks, times out invokes and
//!   flushes backlogged outboxes;
//! - [`Gateway::shutdown`] stops it all in the order of SPEC §7.
//!
//! # Example
//!
//! ```no_run
//! let mut config = goclaw::Config::default();
//! config.listen = "127.0.0.1:0".parse().unwrap();
//! let gateway = goclaw::Gateway::start(config)?;
//! println!("listening on {}", gateway.local_addr());
//! gateway.shutdown();
//! # Ok::<(), goclaw::StartError>(())
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs, unused_must_use)]

mod agent;
mod cli;
mod client;
mod config;
mod conn;
pub mod fuzz;
mod heartbeat;
mod http;
mod hub;
mod logging;
mod metrics;
mod net;
mod notify;
mod operator;
mod outbox;
mod process;
mod protocol;
mod ratelimit;
mod server;
mod sha1;
mod shared;
mod status;
mod sysinfo;

pub use agent::{Exec, NodeConfig, Stop, run as run_node};
pub use cli::{Command, parse as parse_args};
pub use client::{ClientError, Endpoint};
pub use config::{Config, ConfigError, Token};
pub use conn::CONN_STACK_BYTES;
pub use logging::{JsonLog, LOG_FILE_NAME, LogLimits, Logs, init as init_logging};
pub use metrics::{Direction, ErrorType, InvokeOutcome, Metrics, MsgType};
pub use operator::{EXIT_CONNECTION, EXIT_GATEWAY_ERROR, EXIT_USAGE, Target, invoke, nodes, watch};
pub use server::{Gateway, ShutdownReport, StartError};
pub use status::probe as probe_health;
