//! The gateway: binding, start and the ordered shutdown of SPEC §7. The
//! rooms below are the whole attack surface of a gateway-only deployment
//! (docs/AUDIT.md gives the reading order).
//!
//! [`Gateway::shutdown`] is the only way down: readiness off, accept loop
//! woken and joined, `shutdown` event, pending invokes answered, close 1001,
//! grace period, cut, every thread joined.

mod accept;
mod admit;
pub mod config;
mod conn;
mod greeters;
mod handshake;
mod heartbeat;
mod hub;
mod limits;
mod manage;
mod node;
pub mod outbox;
mod pairing;
mod payload;
mod peer;
mod send;
mod session;
mod state;
mod transport;
mod waker;

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::thread::{self, JoinHandle};
use std::time::Instant;

use log::{info, warn};

use crate::gateway::config::Config;
use crate::gateway::pairing::{Store, StoreError};
use crate::gateway::send::Answer;
use crate::gateway::state::Shared;
use crate::ops::health::{HealthView, StatusServer};
use crate::ops::logging;
use crate::ops::metrics::Metrics;
use crate::util::ConfigError;
use crate::wire::frame::ErrorCode;
use crate::wire::net;

pub use accept::UNAUTHENTICATED_GRACE;
pub use conn::CONN_STACK_BYTES;

/// The pairing store's file in the state directory.
pub const PAIRING_FILE: &str = "pairing.json";
#[cfg(any(test, fuzzing))]
pub use node::{NodeIdentity, NodeInfo};
#[cfg(any(test, fuzzing))]
pub use send::{Forms, write_invoke_ok};
pub use state::{queue_limit_bytes, ws_config};

/// Why the gateway could not start. Fatal: the process exits non-zero with
/// this on one line.
#[derive(Debug)]
pub enum StartError {
    /// The configuration is invalid (exit status 2).
    Config(ConfigError),
    /// A listener could not be bound (port in use, permission).
    Bind {
        /// The flag that asked for it.
        flag: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// A gateway thread could not be started.
    Thread(io::Error),
    /// The pairing store could not be read (it is never reset silently).
    Pairing(StoreError),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Config(e) => write!(f, "{e}"),
            StartError::Bind { flag, addr, source } => write!(f, "cannot listen on {addr} ({flag}): {source}"),
            StartError::Thread(e) => write!(f, "cannot start a thread: {e}"),
            StartError::Pairing(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for StartError {}

/// What shutdown did, for the last log line and for tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Clients that were sent the `shutdown` event and a close frame.
    pub notified: usize,
    /// Pending invokes answered `UNAVAILABLE`.
    pub unavailable: usize,
    /// Connections still open after the grace period, cut.
    pub cut: usize,
    /// Connection threads joined (a handshake thread that was waiting for
    /// its next connection is joined too, but not counted).
    pub joined: usize,
}

/// A running gateway. Dropping it shuts it down.
#[derive(Debug)]
pub struct Gateway {
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
    /// A clone of the accept thread's listener, to stop it.
    listener: Option<TcpListener>,
    /// Tells the accept thread to return.
    accept_stop: Arc<AtomicBool>,
    heartbeat: Option<JoinHandle<()>>,
    status: Option<StatusServer>,
}

impl Gateway {
    /// Binds the listener and starts the accept and heartbeat threads.
    ///
    /// # Errors
    /// An invalid configuration, a listener that cannot be bound, or a thread
    /// that cannot be started.
    pub fn start(config: Config) -> Result<Gateway, StartError> {
        config.validate().map_err(StartError::Config)?;
        let bind = |flag, addr| {
            let listener = TcpListener::bind(addr).map_err(|source| StartError::Bind { flag, addr, source })?;
            let local = listener.local_addr().map_err(|source| StartError::Bind { flag, addr, source })?;
            Ok((listener, local))
        };
        let (listener, local_addr) = bind("--listen", config.listen)?;
        let (status_listener, status_addr) = bind("--metrics-listen", config.metrics_listen)?;
        if config.token.is_none() {
            warn!(addr:% = local_addr; "no token configured: authentication is off (loopback only)");
        }
        let pairing = open_pairing(config.state_dir.as_deref())?;
        let shared = Arc::new(Shared::new(config, local_addr, pairing));
        let mut gateway = Gateway {
            shared: shared.clone(),
            accept: None,
            listener: None,
            accept_stop: Arc::new(AtomicBool::new(false)),
            heartbeat: None,
            status: None,
        };
        let view = HealthView { metrics: shared.metrics.clone(), readiness: shared.readiness.clone() };
        gateway.status = Some(StatusServer::start(view, status_listener).map_err(StartError::Thread)?);
        let beat = shared.clone();
        gateway.heartbeat = Some(
            thread::Builder::new()
                .name("heartbeat".into())
                .spawn(move || heartbeat::run(beat))
                .map_err(StartError::Thread)?,
        );
        let accept = shared.clone();
        let accept_stop = gateway.accept_stop.clone();
        gateway.listener = Some(listener.try_clone().map_err(StartError::Thread)?);
        gateway.accept = Some(
            thread::Builder::new()
                .name("accept".into())
                .spawn(move || accept::accept_loop(&accept, &listener, &accept_stop))
                .map_err(StartError::Thread)?,
        );
        info!(addr:% = local_addr, metrics_addr:% = status_addr, log_file:% = logging::file_or_none(),
            version = env!("CARGO_PKG_VERSION"); "listening");
        shared.notifier.notify(&format!("READY=1\nSTATUS=listening on {local_addr}, 0 connections"));
        Ok(gateway)
    }

    /// The address the WebSocket listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// The address the metrics listener (`/metrics`, `/healthz`, `/readyz`)
    /// is bound to.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.status.as_ref().map(StatusServer::local_addr)
    }

    /// The gateway's counters and gauges.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Connection threads alive (handshaking or connected).
    pub fn active_connections(&self) -> usize {
        self.shared.slots.active()
    }

    /// Source addresses remembered by the per-IP rate limiter.
    pub fn rate_limited_sources(&self) -> usize {
        self.shared.limiter.len()
    }

    /// True until shutdown begins (what `/readyz` reports).
    pub fn is_ready(&self) -> bool {
        !self.shared.is_draining()
    }

    /// Shuts down in the order of SPEC §7 and joins every thread.
    pub fn shutdown(mut self) -> ShutdownReport {
        self.stop()
    }

    fn stop(&mut self) -> ShutdownReport {
        let shared = &self.shared;
        shared.begin_draining();
        // Handshake threads waiting for a connection end now (none comes).
        shared.greeters.stop();
        let active = shared.slots.active();
        shared.notifier.notify(&format!("STOPPING=1\nSTATUS=shutting down, {active} connections"));
        info!(active = active; "shutting down");
        let (sockets, pending) = shared.hub.drain();
        // Claimed first: a connection greeted in the meantime notifies itself.
        let clients: Vec<_> = sockets.into_iter().filter(|client| client.claim_shutdown()).collect();
        let event = transport::shutdown_event();
        for client in &clients {
            shared.send_event(client, &event);
        }
        let unavailable = pending.len();
        for invoke in pending {
            shared.answer(invoke, Answer::Gateway(ErrorCode::Unavailable, "the gateway is shutting down"));
        }
        for client in &clients {
            shared.close(client, transport::code::GOING_AWAY, "server shutting down");
        }
        shared.slots.wait_idle(Instant::now() + shared.config.shutdown_timeout);
        let remaining = shared.hub.all();
        for conn in &remaining {
            conn.out.abort();
        }
        let joined = shared.threads.join_all();
        // The accept loop answered 503 all through the drain; now it stops.
        if let Some(accept) = self.accept.take() {
            self.accept_stop.store(true, SeqCst);
            if let Some(listener) = self.listener.take() {
                net::stop_accepting(&listener);
            }
            let _ = accept.join();
        }
        shared.waker.stop();
        if let Some(heartbeat) = self.heartbeat.take() {
            let _ = heartbeat.join();
        }
        // Last: /readyz answers 503 for as long as the drain lasts.
        if let Some(mut status) = self.status.take() {
            status.stop();
        }
        let report = ShutdownReport { notified: clients.len(), unavailable, cut: remaining.len(), joined };
        info!(notified = report.notified, unavailable = report.unavailable, cut = report.cut,
            joined = report.joined; "shutdown complete");
        report
    }
}

/// The pairing store in `state_dir`. A store file that exists but cannot be
/// read or parsed stops the start (it is never reset); a state directory
/// that cannot hold one, or none at all, leaves approvals in memory, with a
/// warning, as an unwritable log directory leaves logs on the console.
fn open_pairing(state_dir: Option<&Path>) -> Result<Store, StartError> {
    let Some(dir) = state_dir else {
        warn!("no state directory: device approvals are kept in memory until the gateway stops");
        return Ok(Store::in_memory());
    };
    let path = dir.join(PAIRING_FILE);
    match Store::open(&path) {
        Ok(store) => Ok(store),
        Err(e) if path.symlink_metadata().is_ok() => Err(StartError::Pairing(e)),
        Err(e) => {
            warn!(error:% = e; "device approvals are kept in memory until the gateway stops");
            Ok(Store::in_memory())
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if self.accept.is_some() || self.heartbeat.is_some() || self.status.is_some() {
            self.stop();
        }
    }
}
