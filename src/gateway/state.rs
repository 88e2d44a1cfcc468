//! The state every thread of one gateway shares: the frozen configuration,
//! metrics, registries, limiters, thread bookkeeping, the heartbeat's
//! wake-up and readiness. Plain data; the policy of a send is in `send.rs`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tungstenite::protocol::WebSocketConfig;

use crate::gateway::config::Config;
use crate::gateway::greeters::Greeters;
use crate::gateway::hub::Hub;
use crate::gateway::limits::{IpLimiter, PreAuth, Rate};
use crate::gateway::pairing::Store;
use crate::gateway::peer::Conn;
use crate::gateway::waker::Waker;
use crate::ops::health::Readiness;
use crate::ops::metrics::Metrics;
use crate::ops::notify::Notifier;
use crate::util::{ConnThreads, Slots, unix_ms};

/// How long a client gets to answer our close frame before its socket is
/// cut (RFC 6455 §7.1.1 leaves the wait to the server).
pub const CLOSE_REPLY_WAIT: Duration = Duration::from_secs(2);
/// tungstenite's read chunk per connection. Small: most messages are a few
/// hundred bytes, and this buffer lives as long as the connection.
const READ_BUFFER_BYTES: usize = 1024;
/// Slack above `--max-message-size` in a connection's output queue: room for
/// events and control frames behind one maximal response.
const QUEUE_SLACK_BYTES: usize = 64 * 1024;

/// Everything the threads of one gateway share.
pub struct Shared {
    /// Frozen configuration.
    pub config: Config,
    /// Counters and gauges.
    pub metrics: Arc<Metrics>,
    /// Registries and pending invokes.
    pub hub: Hub,
    /// Per-IP connection buckets.
    pub limiter: IpLimiter,
    /// Unauthenticated connections per source.
    pub preauth: PreAuth,
    /// Connection slots (`--max-connections`).
    pub slots: Slots,
    /// Join handles of connection threads.
    pub threads: ConnThreads,
    /// Handshake threads waiting for their next connection.
    pub greeters: Greeters,
    /// Wakes the heartbeat thread.
    pub waker: Waker,
    /// Connections with queued output, for the heartbeat to flush.
    pub flush_list: Mutex<Vec<Arc<Conn>>>,
    /// Connections sent a close by another thread, cut at the instant given
    /// unless they end first. In deadline order (the wait is a constant).
    pub closing: Mutex<VecDeque<(Instant, Arc<Conn>)>>,
    /// tungstenite settings for every connection.
    pub ws_config: WebSocketConfig,
    /// Bound of each connection's output queue.
    pub queue_limit_bytes: usize,
    /// The listener's address.
    pub local_addr: SocketAddr,
    /// Process start, for `uptimeMs`.
    pub started: Instant,
    /// systemd's notify socket (`READY=1`, `STATUS=`, `WATCHDOG=1`, `STOPPING=1`).
    pub notifier: Notifier,
    /// Off once shutdown begins; the health listener's `/readyz` reads it.
    pub readiness: Arc<Readiness>,
    /// Device approvals, device tokens and pending requests (SPEC §4.4).
    pub pairing: Store,
    next_key: AtomicU64,
}

impl Shared {
    /// Shared state for a gateway listening on `local_addr`.
    pub fn new(config: Config, local_addr: SocketAddr, pairing: Store) -> Shared {
        let metrics = Arc::new(Metrics::new());
        metrics.set_max_connections(config.max_connections);
        let counts = pairing.snapshot().counts(unix_ms());
        metrics.set_pairing(counts.pending, counts.paired);
        let max = config.max_message_bytes;
        Shared {
            limiter: IpLimiter::new(Rate::new(config.rate_limit_per_sec, config.rate_burst)),
            preauth: PreAuth::new(config.max_unauthenticated_per_source),
            slots: Slots::new(config.max_connections),
            hub: Hub::new(metrics.clone()),
            metrics,
            threads: ConnThreads::default(),
            greeters: Greeters::default(),
            waker: Waker::default(),
            flush_list: Mutex::new(Vec::new()),
            closing: Mutex::new(VecDeque::new()),
            ws_config: ws_config(max),
            queue_limit_bytes: queue_limit_bytes(max),
            local_addr,
            started: Instant::now(),
            notifier: Notifier::from_env(),
            readiness: Arc::new(Readiness::default()),
            next_key: AtomicU64::new(1),
            pairing,
            config,
        }
    }

    /// Whether shutdown has begun.
    pub fn is_draining(&self) -> bool {
        !self.readiness.is_ready()
    }

    /// Marks shutdown as begun (readiness off).
    pub fn begin_draining(&self) {
        self.readiness.set_draining();
    }

    /// A fresh connection key.
    pub fn next_key(&self) -> u64 {
        self.next_key.fetch_add(1, Relaxed)
    }
}

/// tungstenite's settings for a server connection reading messages of at
/// most `max_message_bytes`: a small read buffer, and no write buffer of
/// its own (the outbox queues writes; tungstenite only writes the pongs and
/// close replies it generates, each flushed at once).
pub fn ws_config(max_message_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(0)
        .max_write_buffer_size(queue_limit_bytes(max_message_bytes))
        .max_message_size(Some(max_message_bytes))
        .max_frame_size(Some(max_message_bytes))
        .accept_unmasked_frames(false)
}

/// The bound of a connection's output queue: one maximal message and room
/// for the events and control frames behind it.
pub fn queue_limit_bytes(max_message_bytes: usize) -> usize {
    max_message_bytes + QUEUE_SLACK_BYTES
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("local_addr", &self.local_addr).finish_non_exhaustive()
    }
}
