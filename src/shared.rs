//! State shared by every thread of one gateway, and the policy around a send:
//! counting it, putting a backlogged connection on the flush list, cutting a
//! slow consumer. Also the connection slots, the thread registry and the
//! heartbeat's wake-up.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{info, warn};
use parking_lot::{Condvar, Mutex};
use tungstenite::protocol::WebSocketConfig;

use crate::config::Config;
use crate::hub::{Conn, Hub, Pending};
use crate::metrics::{Direction, ErrorType, InvokeOutcome, Metrics, MsgType};
use crate::notify::Notifier;
use crate::outbox::{DataFrame, SendError, Sent};
use crate::protocol::{self, ErrorCode, Failure};
use crate::ratelimit::{IpLimiter, Rate};

/// How long a client gets to answer our close frame before its socket is
/// cut (RFC 6455 §7.1.1 leaves the wait to the server).
pub const CLOSE_REPLY_WAIT: Duration = Duration::from_secs(2);
/// tungstenite's read chunk per connection. Small: most messages are a few
/// hundred bytes, and this buffer lives as long as the connection.
const READ_BUFFER_BYTES: usize = 1024;
/// Slack above `--max-message-size` in a connection's output queue: room for
/// events and control frames behind one maximal response.
const QUEUE_SLACK_BYTES: usize = 64 * 1024;

/// How an invoke is answered.
#[derive(Debug, Clone, Copy)]
pub enum Answer<'a> {
    /// The node's payload (raw JSON).
    Ok(&'a str),
    /// The node's own error.
    NodeError {
        /// The node's code.
        code: &'a str,
        /// The node's message.
        message: &'a str,
    },
    /// The gateway's error: `TIMEOUT`, `NODE_DISCONNECTED` or `UNAVAILABLE`.
    Gateway(ErrorCode, &'a str),
}

/// Everything the threads of one gateway share.
#[derive(Debug)]
pub struct Shared {
    /// Frozen configuration.
    pub config: Config,
    /// Counters and gauges.
    pub metrics: Arc<Metrics>,
    /// Registries and pending invokes.
    pub hub: Hub,
    /// Per-IP connection buckets.
    pub limiter: IpLimiter,
    /// Connection slots (`--max-connections`).
    pub slots: Slots,
    /// Join handles of connection threads.
    pub threads: ConnThreads,
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
    draining: AtomicBool,
    next_key: AtomicU64,
}

impl Shared {
    /// Shared state for a gateway listening on `local_addr`.
    pub fn new(config: Config, local_addr: SocketAddr) -> Shared {
        let metrics = Arc::new(Metrics::new());
        let max = config.max_message_bytes;
        let ws_config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER_BYTES)
            // Our transport queues writes itself; tungstenite only writes the
            // pongs and close replies it generates, each flushed at once.
            .write_buffer_size(0)
            .max_write_buffer_size(max + QUEUE_SLACK_BYTES)
            .max_message_size(Some(max))
            .max_frame_size(Some(max))
            .accept_unmasked_frames(false);
        Shared {
            limiter: IpLimiter::new(Rate::new(config.rate_limit_per_sec, config.rate_burst)),
            slots: Slots::new(config.max_connections),
            hub: Hub::new(metrics.clone()),
            metrics,
            threads: ConnThreads::default(),
            waker: Waker::default(),
            flush_list: Mutex::new(Vec::new()),
            closing: Mutex::new(VecDeque::new()),
            ws_config,
            queue_limit_bytes: max + QUEUE_SLACK_BYTES,
            local_addr,
            started: Instant::now(),
            notifier: Notifier::from_env(),
            draining: AtomicBool::new(false),
            next_key: AtomicU64::new(1),
            config,
        }
    }

    /// Whether shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(SeqCst)
    }

    /// Marks shutdown as begun (readiness off); true the first time.
    pub fn begin_draining(&self) -> bool {
        !self.draining.swap(true, SeqCst)
    }

    /// A fresh connection key.
    pub fn next_key(&self) -> u64 {
        self.next_key.fetch_add(1, Relaxed)
    }

    /// Sends a complete frame. False if the connection is closing or gone.
    pub fn send(&self, conn: &Arc<Conn>, frame: &[u8], kind: MsgType) -> bool {
        self.settle(conn, conn.out.send(frame), kind)
    }

    /// Sends an event (the connection's `seq` is appended).
    pub fn send_event(&self, conn: &Arc<Conn>, prefix: &[u8]) -> bool {
        self.settle(conn, conn.out.send_event(prefix), MsgType::Event)
    }

    /// Sends a close frame from the connection's own thread.
    pub fn close(&self, conn: &Arc<Conn>, code: u16, reason: &str) -> bool {
        self.settle(conn, conn.out.send_close(code, reason), MsgType::Close)
    }

    /// Sends a close frame from another thread, and schedules a cut in case
    /// the client never answers it.
    pub fn close_from_elsewhere(&self, conn: &Arc<Conn>, code: u16, reason: &str) {
        if self.close(conn, code, reason) {
            self.closing.lock().push_back((Instant::now() + CLOSE_REPLY_WAIT, conn.clone()));
            self.waker.wake();
        }
    }

    /// Counts a send and handles its outcome; true if the frame was accepted.
    pub fn settle(&self, conn: &Arc<Conn>, result: Result<Sent, SendError>, kind: MsgType) -> bool {
        match result {
            Ok(sent) => {
                self.metrics.message(Direction::Out, kind);
                if let Sent::Queued { list: true } = sent {
                    self.flush_list.lock().push(conn.clone());
                    self.waker.wake();
                }
                true
            }
            Err(SendError::Overflow) => {
                self.metrics.error(ErrorType::Timeout);
                warn!(conn_id:% = conn.id, addr:% = conn.addr, limit_bytes = self.queue_limit_bytes;
                    "slow consumer: output queue full, connection cut");
                false
            }
            Err(SendError::Closing | SendError::Dead) => false,
        }
    }

    /// Sends a success response.
    pub fn respond_ok(&self, conn: &Arc<Conn>, id: &str, payload: &str) -> bool {
        let mut frame = DataFrame::text();
        protocol::write_ok(frame.body(), id, payload);
        self.send(conn, frame.finish(), MsgType::Res)
    }

    /// Sends an error response; `id` is raw JSON (`null` when unknown).
    pub fn respond_error(&self, conn: &Arc<Conn>, id: Option<&str>, failure: &Failure) -> bool {
        let mut frame = DataFrame::text();
        protocol::write_error(frame.body(), id, failure.code.as_str(), &failure.message);
        self.send(conn, frame.finish(), MsgType::Res)
    }

    /// Answers a pending invoke (its one response) and records its outcome.
    pub fn answer(&self, pending: Pending, answer: Answer<'_>) {
        let mut frame = DataFrame::text();
        let outcome = match answer {
            Answer::Ok(payload) => {
                protocol::write_ok(frame.body(), &pending.request_id, payload);
                InvokeOutcome::Ok
            }
            Answer::NodeError { code, message } => {
                protocol::write_error(frame.body(), Some(&pending.request_id), code, message);
                InvokeOutcome::Error
            }
            Answer::Gateway(code, message) => {
                protocol::write_error(frame.body(), Some(&pending.request_id), code.as_str(), message);
                match code {
                    ErrorCode::Timeout => InvokeOutcome::Timeout,
                    ErrorCode::Unavailable => InvokeOutcome::Unavailable,
                    _ => InvokeOutcome::Disconnected,
                }
            }
        };
        self.metrics.invoke(outcome, pending.started.elapsed());
        self.send(&pending.operator, frame.finish(), MsgType::Res);
    }

    /// Tells every operator that a node connected or disconnected.
    pub fn presence(&self, node_id: &str, state: &str) {
        let mut payload = Vec::with_capacity(64 + node_id.len());
        payload.extend_from_slice(br#"{"nodeId":"#);
        protocol::push_json_str(&mut payload, node_id);
        payload.extend_from_slice(format!(r#","state":"{state}","ts":{}}}"#, unix_ms()).as_bytes());
        let prefix = protocol::event_prefix("presence", &String::from_utf8_lossy(&payload));
        for operator in self.hub.operators() {
            self.send_event(&operator, &prefix);
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Counts connection threads against `--max-connections`; lets shutdown
/// wait for the count to reach zero.
#[derive(Debug)]
pub struct Slots {
    max: usize,
    active: AtomicUsize,
    idle_lock: Mutex<()>,
    idle: Condvar,
}

impl Slots {
    /// `max` slots, none in use.
    pub fn new(max: usize) -> Slots {
        Slots { max, active: AtomicUsize::new(0), idle_lock: Mutex::new(()), idle: Condvar::new() }
    }

    /// Takes a slot, unless all are in use.
    pub fn try_acquire(&self) -> bool {
        self.active.fetch_update(SeqCst, SeqCst, |n| (n < self.max).then_some(n + 1)).is_ok()
    }

    /// Gives a slot back; returns how many remain in use.
    pub fn release(&self) -> usize {
        let left = self.active.fetch_sub(1, SeqCst).saturating_sub(1);
        if left == 0 {
            let _guard = self.idle_lock.lock();
            self.idle.notify_all();
        }
        left
    }

    /// Slots in use.
    pub fn active(&self) -> usize {
        self.active.load(SeqCst)
    }

    /// Waits until no slot is in use or `deadline` passes; true if idle.
    pub fn wait_idle(&self, deadline: Instant) -> bool {
        let mut guard = self.idle_lock.lock();
        while self.active() > 0 {
            if self.idle.wait_until(&mut guard, deadline).timed_out() {
                return self.active() == 0;
            }
        }
        true
    }
}

/// Gives a map's memory back once a burst is over: a `HashMap` keeps its
/// largest capacity forever, so 1,000 clients once would cost their table
/// space for the life of the process. Only a map under a quarter full is
/// rebuilt (to half full), so under churn the cost stays amortized.
pub fn shrink_if_sparse<K: Eq + Hash, V>(map: &mut HashMap<K, V>) {
    const FLOOR: usize = 64;
    if map.capacity() > FLOOR && map.len() < map.capacity() / 4 {
        map.shrink_to((map.len() * 2).max(FLOOR));
    }
}

/// Join handles of connection threads. A finished thread reports its key;
/// the accept and heartbeat threads join finished threads promptly, so
/// neither handles nor exited threads' stacks pile up under churn.
#[derive(Debug, Default)]
pub struct ConnThreads {
    inner: Mutex<ThreadsInner>,
}

#[derive(Debug, Default)]
struct ThreadsInner {
    handles: HashMap<u64, JoinHandle<()>>,
    /// Keys of threads that have finished (or are finishing).
    finished: Vec<u64>,
}

impl ConnThreads {
    /// Records a started thread.
    pub fn insert(&self, key: u64, handle: JoinHandle<()>) {
        self.inner.lock().handles.insert(key, handle);
    }

    /// Called by a connection thread as its last act.
    pub fn finished(&self, key: u64) {
        self.inner.lock().finished.push(key);
    }

    /// Joins the threads that have finished.
    pub fn reap(&self) {
        let done: Vec<JoinHandle<()>> = {
            let mut inner = self.inner.lock();
            let ThreadsInner { handles, finished } = &mut *inner;
            let mut done = Vec::new();
            // A key may be reported before its handle is recorded; keep it until then.
            finished.retain(|key| match handles.remove(key) {
                Some(handle) => {
                    done.push(handle);
                    false
                }
                None => true,
            });
            shrink_if_sparse(handles);
            done
        };
        for handle in done {
            join(handle);
        }
    }

    /// Joins every thread; returns how many there were.
    pub fn join_all(&self) -> usize {
        let handles: Vec<JoinHandle<()>> = {
            let mut inner = self.inner.lock();
            inner.finished.clear();
            inner.handles.drain().map(|(_, h)| h).collect()
        };
        let count = handles.len();
        for handle in handles {
            join(handle);
        }
        count
    }
}

fn join(handle: JoinHandle<()>) {
    let name = handle.thread().name().unwrap_or("?").to_string();
    if handle.join().is_err() {
        // The panic message was already printed by the panic hook; the
        // connection's guards cleaned up during unwinding.
        info!(thread:% = name; "joined a connection thread that panicked");
    }
}

/// Wakes the heartbeat thread early: new output to flush, an invoke deadline
/// earlier than its next wake, a close to enforce, or shutdown.
#[derive(Debug)]
pub struct Waker {
    notified: Mutex<bool>,
    cv: Condvar,
    stop: AtomicBool,
    base: Instant,
    /// The heartbeat's next planned wake, in ms since `base`.
    next_wake_ms: AtomicU64,
}

impl Default for Waker {
    fn default() -> Self {
        Waker {
            notified: Mutex::new(false),
            cv: Condvar::new(),
            stop: AtomicBool::new(false),
            base: Instant::now(),
            next_wake_ms: AtomicU64::new(0),
        }
    }
}

impl Waker {
    /// Wakes the heartbeat now.
    pub fn wake(&self) {
        *self.notified.lock() = true;
        self.cv.notify_one();
    }

    /// Wakes the heartbeat if `at` is before its planned wake, or if it is
    /// between two sleeps and may already have planned past `at`.
    pub fn wake_by(&self, at: Instant) {
        let at_ms = u64::try_from(at.saturating_duration_since(self.base).as_millis()).unwrap_or(u64::MAX);
        let planned = self.next_wake_ms.load(SeqCst);
        if planned == 0 || at_ms < planned {
            self.wake();
        }
    }

    /// Asks the heartbeat to stop.
    pub fn stop(&self) {
        self.stop.store(true, SeqCst);
        self.wake();
    }

    /// Whether the heartbeat was asked to stop.
    pub fn stopped(&self) -> bool {
        self.stop.load(SeqCst)
    }

    /// Sleeps until `at` or an earlier wake.
    pub fn sleep_until(&self, at: Instant) {
        // At least 1: 0 means "awake" to wake_by.
        let at_ms = u64::try_from(at.saturating_duration_since(self.base).as_millis()).unwrap_or(u64::MAX).max(1);
        self.next_wake_ms.store(at_ms, SeqCst);
        let mut notified = self.notified.lock();
        if !*notified {
            let _ = self.cv.wait_until(&mut notified, at);
        }
        *notified = false;
        self.next_wake_ms.store(0, SeqCst);
    }
}
