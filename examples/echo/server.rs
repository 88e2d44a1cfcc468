//! The echo server of `examples/echo`: every text or binary message goes
//! back as it came. Built from the gateway's public transport pieces (the
//! HTTP upgrade, tungstenite with the gateway's settings, absolute read
//! deadlines, the non-blocking outbox and its frame encoding), so the
//! benchmark can compare goclaw's transport one to one with a raw-TCP echo
//! and with other WebSocket servers. No protocol, no registries, no ticks.
//! `tests/echo.rs` includes this file to test it.

use std::collections::HashMap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use goclaw::gateway::outbox::{Flush, Outbox, SendError, Sent};
use goclaw::gateway::{CONN_STACK_BYTES, queue_limit_bytes, ws_config};
use goclaw::wire::http::{self, HandshakeError, Refusal};
use goclaw::wire::net::{self, ReadTimer};
use goclaw::wire::ws::{DataFrame, OP_BINARY, OP_PING, OP_TEXT, control_frame};
use goclaw::{Direction, Metrics, MsgType};
use parking_lot::Mutex;
use tungstenite::protocol::{Role, WebSocket};
use tungstenite::{Error as WsError, Message};

/// How often the heartbeat retries backlogged outboxes.
const FLUSH_RETRY: Duration = Duration::from_millis(5);
/// How long clients get to answer the shutdown close before they are cut.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// The echo server's settings; the gateway's defaults unless given.
#[derive(Debug, Clone)]
pub struct EchoConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Largest message; over it, close 1009.
    pub max_message_bytes: usize,
    /// Most connections at once; more get 503.
    pub max_connections: usize,
    /// A client silent this long is cut.
    pub pong_wait: Duration,
    /// Server ping interval.
    pub ping_period: Duration,
    /// Time from accept to a completed upgrade.
    pub handshake_timeout: Duration,
    /// Output stalled this long cuts the connection.
    pub write_wait: Duration,
}

impl Default for EchoConfig {
    fn default() -> Self {
        let gateway = goclaw::Config::default();
        EchoConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9001)),
            max_message_bytes: gateway.max_message_bytes,
            max_connections: 20_000,
            pong_wait: gateway.pong_wait,
            ping_period: gateway.ping_period,
            handshake_timeout: gateway.handshake_timeout,
            write_wait: gateway.write_wait,
        }
    }
}

/// What shutdown did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EchoReport {
    /// Connections still open after the close wait, cut.
    pub cut: usize,
}

struct Shared {
    config: EchoConfig,
    metrics: Metrics,
    stopping: AtomicBool,
    next_key: AtomicU64,
    live: Mutex<HashMap<u64, Arc<Outbox>>>,
    backlog: Mutex<Vec<Arc<Outbox>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// A running echo server.
pub struct EchoServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    listener: TcpListener,
    accept: Option<JoinHandle<()>>,
    heartbeat: Option<JoinHandle<()>>,
}

impl EchoServer {
    /// Binds and starts the accept and heartbeat threads.
    pub fn start(config: EchoConfig) -> io::Result<EchoServer> {
        let listener = TcpListener::bind(config.listen)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            config,
            metrics: Metrics::new(),
            stopping: AtomicBool::new(false),
            next_key: AtomicU64::new(0),
            live: Mutex::new(HashMap::new()),
            backlog: Mutex::new(Vec::new()),
            threads: Mutex::new(Vec::new()),
        });
        let accepting = listener.try_clone()?;
        let (a, h) = (shared.clone(), shared.clone());
        let accept = thread::Builder::new().name("accept".into()).spawn(move || accept_loop(&a, &accepting))?;
        let heartbeat = thread::Builder::new().name("heartbeat".into()).spawn(move || heartbeat(&h))?;
        Ok(EchoServer { shared, addr, listener, accept: Some(accept), heartbeat: Some(heartbeat) })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Messages counted so far.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Stops accepting, sends every client close 1001, cuts those that do
    /// not answer in time and joins every thread.
    pub fn shutdown(mut self) -> EchoReport {
        let shared = &self.shared;
        shared.stopping.store(true, SeqCst);
        net::stop_accepting(&self.listener);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        let clients: Vec<Arc<Outbox>> = shared.live.lock().values().cloned().collect();
        for client in &clients {
            let _ = client.send_close(1001, "server shutting down");
        }
        let until = Instant::now() + CLOSE_WAIT;
        while !shared.live.lock().is_empty() && Instant::now() < until {
            thread::sleep(Duration::from_millis(5));
        }
        let remaining: Vec<Arc<Outbox>> = shared.live.lock().values().cloned().collect();
        for client in &remaining {
            client.cut();
        }
        for handle in shared.threads.lock().drain(..) {
            let _ = handle.join();
        }
        if let Some(heartbeat) = self.heartbeat.take() {
            let _ = heartbeat.join();
        }
        EchoReport { cut: remaining.len() }
    }
}

fn accept_loop(shared: &Arc<Shared>, listener: &TcpListener) {
    for accepted in listener.incoming() {
        if shared.stopping.load(SeqCst) {
            return;
        }
        let Ok(stream) = accepted else { continue };
        if shared.live.lock().len() >= shared.config.max_connections
            || net::configure(&stream, shared.config.write_wait).is_err()
        {
            http::refuse_now(&stream, Refusal::AtCapacity);
            continue;
        }
        let owner = shared.clone();
        let spawned = thread::Builder::new()
            .name("conn".into())
            .stack_size(CONN_STACK_BYTES)
            .spawn(move || serve(&owner, stream));
        let mut threads = shared.threads.lock();
        threads.retain(|handle| !handle.is_finished());
        threads.extend(spawned.ok());
    }
}

/// Pings every client each ping period and retries backlogged outboxes.
fn heartbeat(shared: &Shared) {
    let ping = control_frame(OP_PING, b"");
    let mut next_ping = Instant::now() + shared.config.ping_period;
    while !shared.stopping.load(SeqCst) {
        let now = Instant::now();
        if now >= next_ping {
            next_ping = now + shared.config.ping_period;
            let clients: Vec<Arc<Outbox>> = shared.live.lock().values().cloned().collect();
            for client in clients {
                settle(shared, &client, client.send(&ping), MsgType::Ping);
            }
        }
        shared.backlog.lock().retain(|outbox| match outbox.flush(now, shared.config.write_wait) {
            Flush::Pending => true,
            Flush::Stalled => {
                outbox.cut();
                false
            }
            Flush::Empty | Flush::Dead => false,
        });
        thread::sleep(FLUSH_RETRY.min(next_ping.saturating_duration_since(now)));
    }
}

/// Counts a send and lists a backlogged outbox for the heartbeat.
fn settle(shared: &Shared, outbox: &Arc<Outbox>, sent: Result<Sent, SendError>, kind: MsgType) -> bool {
    match sent {
        Ok(sent) => {
            shared.metrics.message(Direction::Out, kind);
            if let Sent::Queued { list: true } = sent {
                shared.backlog.lock().push(outbox.clone());
            }
            true
        }
        Err(_) => false,
    }
}

/// The socket as tungstenite sees it: deadline reads, outbox writes.
struct Transport {
    shared: Arc<Shared>,
    outbox: Arc<Outbox>,
    deadline: Instant,
    timer: ReadTimer,
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.timer.read(self.outbox.stream(), buf, self.deadline)
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.outbox.send_raw(buf) {
            Err(SendError::Closing) => Ok(buf.len()),
            sent if settle(&self.shared, &self.outbox, sent, MsgType::Pong) => Ok(buf.len()),
            _ => Err(ErrorKind::BrokenPipe.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One connection: upgrade, then echo until it ends.
fn serve(shared: &Arc<Shared>, stream: TcpStream) {
    let config = &shared.config;
    let deadline = Instant::now() + config.handshake_timeout;
    let tail = match http::read_upgrade(&stream, deadline, &[]) {
        Ok((upgrade, tail)) if !shared.stopping.load(SeqCst) => {
            if net::write_all(&stream, http::switching_protocols(&upgrade).as_bytes()).is_err() {
                return;
            }
            tail
        }
        Ok(_) => return http::refuse_now(&stream, Refusal::ShuttingDown),
        Err(HandshakeError::Refused(refusal)) => {
            let _ = net::write_all(&stream, refusal.response().as_bytes());
            return;
        }
        Err(_) => return,
    };
    let outbox = Arc::new(Outbox::new(stream, queue_limit_bytes(config.max_message_bytes)));
    let key = shared.next_key.fetch_add(1, SeqCst);
    shared.live.lock().insert(key, outbox.clone());
    let transport = Transport { shared: shared.clone(), outbox: outbox.clone(), deadline, timer: ReadTimer::default() };
    let mut ws =
        WebSocket::from_partially_read(transport, tail, Role::Server, Some(ws_config(config.max_message_bytes)));
    loop {
        ws.get_mut().deadline = Instant::now() + config.pong_wait;
        let message = match ws.read() {
            Ok(message) => message,
            Err(error) => {
                let (code, reason) = match error {
                    WsError::Capacity(_) => (1009, "message too big"),
                    WsError::Utf8(_) => (1007, "invalid UTF-8"),
                    WsError::Protocol(_) => (1002, "protocol error"),
                    _ => break,
                };
                let _ = outbox.send_close(code, reason);
                break;
            }
        };
        let (opcode, payload, kind_in, kind_out) = match &message {
            Message::Text(text) => (OP_TEXT, text.as_bytes(), MsgType::Req, MsgType::Res),
            Message::Binary(data) => (OP_BINARY, &data[..], MsgType::Binary, MsgType::Binary),
            Message::Close(_) => {
                // Sends tungstenite's close reply (dropped if we closed first).
                let _ = ws.flush();
                break;
            }
            _ => continue,
        };
        shared.metrics.message(Direction::In, kind_in);
        let mut frame = DataFrame::with_capacity(opcode, payload.len());
        frame.body().extend_from_slice(payload);
        settle(shared, &outbox, outbox.send(frame.finish()), kind_out);
    }
    shared.live.lock().remove(&key);
    outbox.cut();
}
