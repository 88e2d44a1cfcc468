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
//!   limit, `--max-connections`, shutdown) and gives each admitted
//!   connection to a handshake thread, a waiting one or a new one (`conn`,
//!   `greeters`);
//! - a connection has one thread at a time, its socket's only reader: the
//!   handshake thread does the HTTP upgrade, challenge and `connect`, then
//!   hands the client to a fresh thread for the request loop, so the
//!   handshake's deep stack is not kept for the life of the connection; the
//!   read deadline is the pong deadline;
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

// The rooms, in dependency order: `cli` uses `gateway` and `client`, which
// use `ops` and `wire`, which use `util`. The gateway and the client never
// import each other (`.ci/deps.py` checks it). docs/AUDIT.md is the tour.
mod cli;
mod client;
pub mod gateway;
mod ops;
mod util;
pub mod wire;

/// Entry points for the fuzz targets in `fuzz/` and the corpus replay;
/// compiled only for tests and fuzzing, never into the shipped binary.
#[cfg(any(test, fuzzing))]
pub mod fuzz;

pub use cli::{Command, parse as parse_args};
pub use client::agent::{NodeConfig, run as run_node};
pub use client::conn::Target;
pub use client::endpoint::Endpoint;
pub use client::error::ClientError;
pub use client::exec::Exec;
pub use client::operator::{
    EXIT_CONNECTION, EXIT_GATEWAY_ERROR, EXIT_REFUSED, EXIT_USAGE, Operator, REFUSED_ATTEMPTS, invoke, nodes, watch,
};
pub use client::pairing::{PairingAction, pairing};
pub use gateway::config::Config;
pub use gateway::{CONN_STACK_BYTES, Gateway, ShutdownReport, StartError};
pub use ops::health::probe as probe_health;
pub use ops::logfile::{JsonLog, LOG_FILE_NAME, LogLimits};
pub use ops::logging::{Logs, init as init_logging, under_journald};
pub use ops::metrics::{Direction, ErrorType, InvokeOutcome, Metrics, MsgType};
pub use util::{ConfigError, Stop};
pub use wire::auth::Token;
