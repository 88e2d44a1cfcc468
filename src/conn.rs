//! One connection's thread, from accept to close: HTTP upgrade, challenge,
//! `connect`, then the request loop.
//!
//! The thread is the only reader of its socket and never waits for another
//! client: everything it sends to others goes through their non-blocking
//! outboxes. Its [`ConnGuard`] releases the slot and every registry entry on
//! the way out, on a panic too. Nothing a client sends is unwrapped.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use log::{Level, debug, info, log};
use tungstenite::Message;
use tungstenite::error::{Error as WsError, ProtocolError};
use tungstenite::protocol::{CloseFrame, Role as WsRole, WebSocket};
use uuid::Uuid;

use crate::http::{self, HandshakeError, Refusal};
use crate::hub::{Conn, NodeInfo, Replaced};
use crate::metrics::{Direction, ErrorType, MsgType};
use crate::net;
use crate::outbox::{self, Outbox};
use crate::protocol::{self, Connect, ErrorCode, Failure, Outcome, Request, Role};
use crate::ratelimit::{Rate, TokenBucket};
use crate::shared::{Answer, CLOSE_REPLY_WAIT, Shared, unix_ms};

/// Stack reserved for each connection thread. The deepest path (serde
/// parsing `connect` params in a debug build) stays well below it; only the
/// pages actually touched count towards memory.
pub const CONN_STACK_BYTES: usize = 128 * 1024;
/// A client rate-limited with less than this between refusals is still
/// flooding (SPEC §4.2: closed after `flood_close_after` of it).
const FLOOD_QUIET: Duration = Duration::from_secs(1);

/// Close codes (RFC 6455 §7.4.1, and 4000 from SPEC §4.1).
pub mod code {
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL: u16 = 1002;
    pub const UNSUPPORTED: u16 = 1003;
    pub const INVALID_DATA: u16 = 1007;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const REPLACED: u16 = 4000;
}

/// Starts the thread for an accepted connection whose slot is taken.
///
/// # Errors
/// The thread could not be spawned; the slot is released and the caller
/// gets the connection back to refuse it.
pub fn spawn(shared: &Arc<Shared>, stream: TcpStream, addr: SocketAddr, accepted: Instant) -> Result<(), Arc<Conn>> {
    let id = Uuid::new_v4();
    let key = shared.next_key();
    let conn = Arc::new(Conn::new(id, key, addr, Outbox::new(stream, shared.queue_limit_bytes)));
    shared.hub.add(conn.clone());
    let guard = ConnGuard {
        shared: shared.clone(),
        conn: conn.clone(),
        accepted,
        running: false,
        role: None,
        node_id: None,
        end: End::new(Level::Error, "ended without a reason"),
    };
    let mut name = String::from("conn-");
    name.push_str(&id.simple().to_string()[..8]);
    let spawned = thread::Builder::new().name(name).stack_size(CONN_STACK_BYTES).spawn(move || run(guard));
    match spawned {
        Ok(handle) => {
            shared.threads.insert(key, handle);
            Ok(())
        }
        // The closure, and with it the guard, was dropped: slot and hub entry are released.
        Err(_) => Err(conn),
    }
}

/// How a connection ended, for its one disconnect log line.
#[derive(Debug, Clone)]
struct End {
    level: Level,
    reason: &'static str,
    /// Close code sent or received, if any.
    code: Option<u16>,
    detail: Option<String>,
}

impl End {
    fn new(level: Level, reason: &'static str) -> End {
        End { level, reason, code: None, detail: None }
    }

    fn code(mut self, code: u16) -> End {
        self.code = Some(code);
        self
    }

    fn detail(mut self, detail: impl ToString) -> End {
        self.detail = Some(detail.to_string());
        self
    }
}

/// Cleans up after a connection however its thread ends, unwinding included:
/// registries, pending invokes, presence, socket, slot.
struct ConnGuard {
    shared: Arc<Shared>,
    conn: Arc<Conn>,
    accepted: Instant,
    /// False until the thread runs: a guard dropped by a failed spawn only
    /// releases what it holds.
    running: bool,
    role: Option<Role>,
    node_id: Option<String>,
    end: End,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let shared = &self.shared;
        if thread::panicking() {
            self.end = End::new(Level::Error, "panic in connection thread");
        }
        let departure = shared.hub.remove(&self.conn, self.node_id.as_deref());
        if let Some(node_id) = &departure.node_gone {
            shared.presence(node_id, "disconnected");
        }
        for pending in departure.failed {
            shared.answer(pending, Answer::Gateway(ErrorCode::NodeDisconnected, "the node disconnected"));
        }
        let active = shared.slots.release();
        if !self.running {
            return;
        }
        // FIN now, even while other threads still hold this connection.
        self.conn.out.cut();
        let end = &self.end;
        log!(target: "goclaw::conn", end.level,
            conn_id:% = self.conn.id, addr:% = self.conn.addr,
            role = self.role.map(Role::as_str), node_id = self.node_id.as_deref(),
            reason = end.reason, code = end.code, error = end.detail.as_deref(),
            duration_ms = self.accepted.elapsed().as_millis() as u64, active = active;
            "client disconnected");
        shared.threads.finished(self.conn.key);
    }
}

/// The socket as tungstenite sees it: reads honour the current deadline,
/// writes (tungstenite's own pongs and close replies) go through the outbox.
struct Transport {
    shared: Arc<Shared>,
    conn: Arc<Conn>,
    deadline: Instant,
    timer: net::ReadTimer,
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.timer.read(self.conn.out.stream(), buf, self.deadline)
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let kind =
            if buf.first().is_some_and(|b| b & 0x0f == outbox::OP_CLOSE) { MsgType::Close } else { MsgType::Pong };
        match self.conn.out.send_raw(buf) {
            Err(outbox::SendError::Closing) => Ok(buf.len()),
            result if self.shared.settle(&self.conn, result, kind) => Ok(buf.len()),
            _ => Err(ErrorKind::BrokenPipe.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

type Ws = WebSocket<Transport>;

fn run(mut guard: ConnGuard) {
    guard.running = true;
    let shared = guard.shared.clone();
    let conn = guard.conn.clone();
    guard.end = session(&shared, &conn, &mut guard);
}

/// The whole life of a connection; returns how it ended.
fn session(shared: &Arc<Shared>, conn: &Arc<Conn>, guard: &mut ConnGuard) -> End {
    let deadline = guard.accepted + shared.config.handshake_timeout;
    let tail = match upgrade(shared, conn, deadline) {
        Ok(tail) => tail,
        Err(end) => return end,
    };
    let transport =
        Transport { shared: shared.clone(), conn: conn.clone(), deadline, timer: net::ReadTimer::default() };
    let mut ws = WebSocket::from_partially_read(transport, tail, WsRole::Server, Some(shared.ws_config));
    if shared.hub.mark_upgraded(conn).is_err() {
        return close_for_shutdown(shared, conn, &mut ws);
    }
    if shared.config.echo {
        return echo(shared, conn, &mut ws);
    }
    let challenge = format!(r#"{{"nonce":"{}","ts":{}}}"#, Uuid::new_v4(), unix_ms());
    shared.send_event(conn, &protocol::event_prefix("connect.challenge", &challenge));

    let (request_id, hello) = match await_connect(shared, conn, &mut ws) {
        Ok(hello) => hello,
        Err(end) => return end,
    };
    let role = hello.role;
    // Registered before hello-ok goes out: a client that has its hello-ok
    // can be invoked and listed at once.
    let joined = match role {
        Role::Operator => shared.hub.join_operator(conn).map(|()| None),
        Role::Node => {
            let info = NodeInfo::new(&hello.client, hello.commands, unix_ms());
            shared.hub.join_node(conn, Arc::new(info))
        }
    };
    let Ok(replaced) = joined else {
        let failure = Failure::new(ErrorCode::Unavailable, "the gateway is shutting down");
        shared.respond_error(conn, Some(&request_id), &failure);
        return close_for_shutdown(shared, conn, &mut ws);
    };
    guard.role = Some(role);
    if role == Role::Node {
        guard.node_id = Some(hello.client.id.clone());
    }
    shared.respond_ok(conn, &request_id, &hello_ok(shared, conn));
    if let Some(end) = greeted(shared, conn, &mut ws) {
        return end;
    }
    if let Some(replaced) = replaced {
        displace(shared, replaced, &hello.client.id);
    }
    if role == Role::Node {
        shared.presence(&hello.client.id, "connected");
    }
    info!(target: "goclaw::conn", conn_id:% = conn.id, addr:% = conn.addr, role = role.as_str(),
        node_id = guard.node_id.as_deref(), active = shared.slots.active(); "client connected");
    let mut session = Session::new(shared, conn, role, guard.node_id.clone());
    session.serve(&mut ws)
}

/// Reads and answers the HTTP upgrade; returns bytes that followed it.
#[inline(never)]
fn upgrade(shared: &Shared, conn: &Conn, deadline: Instant) -> Result<Vec<u8>, End> {
    let stream = conn.out.stream();
    let refuse = |refusal: Refusal| {
        refusal.count(&shared.metrics);
        // Best effort: the client may already be gone.
        let _ = net::write_all(stream, refusal.response().as_bytes());
        End::new(Level::Debug, "http request refused").detail(format!("{refusal:?}"))
    };
    match http::read_upgrade(stream, deadline, &shared.config.allowed_origins) {
        Ok((upgrade, tail)) => {
            if shared.is_draining() {
                return Err(refuse(Refusal::ShuttingDown));
            }
            net::write_all(stream, http::switching_protocols(&upgrade).as_bytes())
                .map_err(|e| End::new(Level::Info, "client went away during upgrade").detail(e))?;
            Ok(tail)
        }
        Err(HandshakeError::Refused(refusal)) => Err(refuse(refusal)),
        Err(HandshakeError::Timeout) => {
            shared.metrics.error(ErrorType::Timeout);
            Err(End::new(Level::Warn, "handshake timeout before upgrade"))
        }
        Err(HandshakeError::Closed) => Err(End::new(Level::Debug, "client went away before upgrade")),
    }
}

/// Waits for the `connect` request and validates it; refusals are answered
/// with an error and a close 1008.
#[inline(never)]
fn await_connect(shared: &Arc<Shared>, conn: &Arc<Conn>, ws: &mut Ws) -> Result<(String, Connect), End> {
    let text = loop {
        let message = ws.read().map_err(|e| fail(shared, conn, e, "handshake timeout"))?;
        match message {
            Message::Text(text) => break text,
            other => {
                if let Some(end) = control(shared, conn, ws, other) {
                    return Err(end);
                }
            }
        }
    };
    let refuse = |id: Option<&str>, failure: Failure, kind: ErrorType, ws: &mut Ws| {
        shared.metrics.error(kind);
        shared.respond_error(conn, id, &failure);
        shared.close(conn, code::POLICY, failure.code.as_str());
        let end = End::new(Level::Warn, "connect refused").code(code::POLICY).detail(&failure);
        await_close_reply(ws, end)
    };
    let request = match protocol::parse_request(&text) {
        Ok(request) => request,
        Err(bad) => {
            shared.metrics.message(Direction::In, MsgType::Invalid);
            return Err(refuse(bad.id, bad.failure, ErrorType::Protocol, ws));
        }
    };
    shared.metrics.message(Direction::In, MsgType::Req);
    if request.method != "connect" {
        let failure = Failure::invalid("the first request must be connect");
        return Err(refuse(Some(request.id), failure, ErrorType::Protocol, ws));
    }
    let hello = match protocol::parse_connect(request.params) {
        Ok(hello) => hello,
        Err(failure) => return Err(refuse(Some(request.id), failure, ErrorType::Protocol, ws)),
    };
    let authorized = match &shared.config.token {
        Some(token) => hello.token.as_deref().is_some_and(|given| token.matches(given)),
        None => true,
    };
    if !authorized {
        let failure = Failure::new(ErrorCode::Unauthorized, "missing or invalid token");
        return Err(refuse(Some(request.id), failure, ErrorType::Auth, ws));
    }
    Ok((request.id.to_string(), hello))
}

/// Handles a non-text message; `Some` when the connection must end.
#[inline(never)]
fn control(shared: &Shared, conn: &Arc<Conn>, ws: &mut Ws, message: Message) -> Option<End> {
    let metrics = &shared.metrics;
    match message {
        Message::Ping(_) => metrics.message(Direction::In, MsgType::Ping),
        Message::Pong(_) => metrics.message(Direction::In, MsgType::Pong),
        Message::Binary(_) => {
            metrics.message(Direction::In, MsgType::Binary);
            metrics.error(ErrorType::Protocol);
            shared.close(conn, code::UNSUPPORTED, "binary frames are not supported");
            let end = End::new(Level::Warn, "binary frame").code(code::UNSUPPORTED);
            return Some(await_close_reply(ws, end));
        }
        Message::Close(frame) => {
            metrics.message(Direction::In, MsgType::Close);
            // Decided before the reply below, which marks the outbox closing too.
            let end = closed_by_client(conn, frame.as_ref());
            // Sends tungstenite's close reply (dropped if we closed first).
            let _ = ws.flush();
            return Some(end);
        }
        Message::Text(_) | Message::Frame(_) => {}
    }
    None
}

/// The end of a connection the client closed.
fn closed_by_client(conn: &Conn, frame: Option<&CloseFrame>) -> End {
    if let Some(ours) = conn.out.close_code() {
        // The client answered a close we sent.
        return match ours {
            code::GOING_AWAY => End::new(Level::Info, "server shutdown"),
            code::REPLACED => End::new(Level::Info, "replaced by a newer connection"),
            _ => End::new(Level::Info, "closed by server"),
        }
        .code(ours);
    }
    let code = frame.map_or(1005, |f| u16::from(f.code));
    let level = if matches!(code, 1000 | 1001 | 1005) { Level::Info } else { Level::Warn };
    End::new(level, "closed by client").code(code)
}

/// Maps a read error to how the connection ends, sending the close code of
/// RFC 6455 §7.4.1 where one applies. `timeout` names the deadline that
/// applies in this phase.
#[inline(never)]
fn fail(shared: &Shared, conn: &Arc<Conn>, error: WsError, timeout: &'static str) -> End {
    let metrics = &shared.metrics;
    let close = |code: u16, reason: &str, kind: ErrorType, why: &'static str| {
        metrics.error(kind);
        shared.close(conn, code, reason);
        End::new(Level::Warn, why).code(code).detail(&error)
    };
    if conn.out.is_dead() {
        // We cut it ourselves; the read error is only the echo of that.
        return match conn.out.close_code() {
            Some(code::GOING_AWAY) => End::new(Level::Info, "cut at the end of the shutdown grace period"),
            Some(code::REPLACED) => End::new(Level::Info, "replaced; cut without a close reply"),
            _ => End::new(Level::Warn, "cut: slow consumer or write error"),
        };
    }
    match &error {
        WsError::ConnectionClosed | WsError::AlreadyClosed => End::new(Level::Info, "closed"),
        // The client may be dead; the close frame tells a live but silent one why.
        WsError::Io(e) if e.kind() == ErrorKind::TimedOut => close(code::POLICY, timeout, ErrorType::Timeout, timeout),
        WsError::Io(e) => {
            metrics.error(ErrorType::Io);
            End::new(Level::Warn, "socket error").detail(e)
        }
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
            End::new(Level::Info, "client went away without a close frame")
        }
        WsError::Capacity(_) => close(code::TOO_BIG, "message too big", ErrorType::TooLarge, "message too big"),
        WsError::Utf8(_) => close(code::INVALID_DATA, "invalid UTF-8", ErrorType::Protocol, "invalid UTF-8"),
        WsError::Protocol(_) => {
            close(code::PROTOCOL, "protocol error", ErrorType::Protocol, "WebSocket protocol error")
        }
        _ => {
            metrics.error(ErrorType::Io);
            End::new(Level::Warn, "unexpected error").detail(&error)
        }
    }
}

/// After we sent a close frame: reads until the client's close arrives,
/// ignoring everything else, for at most [`CLOSE_REPLY_WAIT`].
#[inline(never)]
fn await_close_reply(ws: &mut Ws, end: End) -> End {
    let until = Instant::now() + CLOSE_REPLY_WAIT;
    ws.get_mut().deadline = ws.get_ref().deadline.min(until);
    loop {
        match ws.read() {
            Ok(Message::Close(_)) | Err(_) => return end,
            Ok(_) => {}
        }
    }
}

/// Closes the node connection a new one displaced, failing its invokes.
#[inline(never)]
fn displace(shared: &Shared, replaced: Replaced, node_id: &str) {
    let Replaced { old, failed } = replaced;
    for pending in failed {
        shared
            .answer(pending, Answer::Gateway(ErrorCode::NodeDisconnected, "the node was replaced by a new connection"));
    }
    info!(target: "goclaw::conn", conn_id:% = old.id, node_id = node_id; "node replaced by a newer connection");
    shared.close_from_elsewhere(&old, code::REPLACED, "replaced");
}

/// Echo mode: every text or binary message goes back as it came, through
/// the same outbox, deadlines and limits as the gateway's requests.
#[inline(never)]
fn echo(shared: &Arc<Shared>, conn: &Arc<Conn>, ws: &mut Ws) -> End {
    // Registered and greeted like an operator, so the heartbeat pings it
    // and shutdown reaches it.
    if shared.hub.join_operator(conn).is_err() {
        return close_for_shutdown(shared, conn, ws);
    }
    if let Some(end) = greeted(shared, conn, ws) {
        return end;
    }
    let pong_wait = shared.config.pong_wait;
    loop {
        ws.get_mut().deadline = Instant::now() + pong_wait;
        let message = match ws.read() {
            Ok(message) => message,
            Err(e) => return fail(shared, conn, e, "pong timeout"),
        };
        let (opcode, payload, kind_in, kind_out) = match &message {
            Message::Text(text) => (outbox::OP_TEXT, text.as_bytes(), MsgType::Req, MsgType::Res),
            Message::Binary(data) => (outbox::OP_BINARY, &data[..], MsgType::Binary, MsgType::Binary),
            _ => {
                if let Some(end) = control(shared, conn, ws, message) {
                    return end;
                }
                continue;
            }
        };
        shared.metrics.message(Direction::In, kind_in);
        let mut frame = outbox::DataFrame::with_capacity(opcode, payload.len());
        frame.body().extend_from_slice(payload);
        shared.send(conn, frame.finish(), kind_out);
    }
}

/// Marks a registered client greeted: from now on the shutdown path may
/// notify it. If shutdown took its snapshot before that, it left this
/// connection to notify itself (exactly once: see `Conn::claim_shutdown`),
/// and this returns how the connection ends.
fn greeted(shared: &Arc<Shared>, conn: &Arc<Conn>, ws: &mut Ws) -> Option<End> {
    conn.mark_greeted();
    shared.is_draining().then(|| close_for_shutdown(shared, conn, ws))
}

/// Delivers the `shutdown` event and close 1001 to a connection that the
/// shutdown path left to notify itself (it registered or greeted just too
/// late for its snapshot), unless the shutdown path got there first.
#[inline(never)]
fn close_for_shutdown(shared: &Arc<Shared>, conn: &Arc<Conn>, ws: &mut Ws) -> End {
    if conn.claim_shutdown() {
        shared.send_event(conn, &shutdown_event());
        shared.close(conn, code::GOING_AWAY, "server shutting down");
    }
    await_close_reply(ws, End::new(Level::Info, "server shutdown").code(code::GOING_AWAY))
}

/// The `shutdown` event.
pub fn shutdown_event() -> Vec<u8> {
    protocol::event_prefix("shutdown", r#"{"reason":"shutdown","restartExpectedMs":5000}"#)
}

/// The `hello-ok` payload.
#[inline(never)]
fn hello_ok(shared: &Shared, conn: &Conn) -> String {
    let quoted = |list: &[&str]| list.iter().map(|s| protocol::json_str(s)).collect::<Vec<_>>().join(",");
    let config = &shared.config;
    format!(
        r#"{{"type":"hello-ok","protocol":{},"server":{{"version":"{}","connId":"{}"}},"features":{{"methods":[{}],"events":[{}]}},"policy":{{"maxPayload":{},"tickIntervalMs":{},"pingIntervalMs":{}}}}}"#,
        protocol::PROTOCOL_VERSION,
        env!("CARGO_PKG_VERSION"),
        conn.id,
        quoted(protocol::METHODS),
        quoted(protocol::EVENTS),
        config.max_message_bytes,
        config.tick_interval.as_millis(),
        config.ping_period_ms(),
    )
}

/// The request loop of a connected client.
struct Session<'a> {
    shared: &'a Arc<Shared>,
    conn: &'a Arc<Conn>,
    role: Role,
    node_id: Option<String>,
    rate: Rate,
    bucket: TokenBucket,
    /// Start of the current run of refusals with no quiet second between.
    flood_since: Option<Instant>,
    last_limited: Option<Instant>,
}

impl<'a> Session<'a> {
    fn new(shared: &'a Arc<Shared>, conn: &'a Arc<Conn>, role: Role, node_id: Option<String>) -> Session<'a> {
        let rate = Rate::new(shared.config.message_rate_per_sec, shared.config.message_burst);
        let bucket = TokenBucket::full(rate, Instant::now());
        Session { shared, conn, role, node_id, rate, bucket, flood_since: None, last_limited: None }
    }

    #[inline(never)]
    fn serve(&mut self, ws: &mut Ws) -> End {
        let pong_wait = self.shared.config.pong_wait;
        loop {
            // The pong deadline restarts with every whole message read.
            ws.get_mut().deadline = Instant::now() + pong_wait;
            let message = match ws.read() {
                Ok(message) => message,
                Err(e) => return fail(self.shared, self.conn, e, "pong timeout"),
            };
            if self.conn.out.is_closing() && !matches!(message, Message::Close(_)) {
                // We sent a close (shutdown, replacement): only its answer matters now.
                continue;
            }
            match message {
                Message::Text(text) => {
                    if let Some(end) = self.request(ws, &text) {
                        return end;
                    }
                }
                // Pings cost a pong each, so they draw on the same bucket;
                // over it they cannot be refused, only counted as flooding.
                Message::Ping(_) => {
                    self.shared.metrics.message(Direction::In, MsgType::Ping);
                    let now = Instant::now();
                    if self.bucket.take(self.rate, now).is_err()
                        && let Some(end) = self.flooding(ws, now)
                    {
                        return end;
                    }
                }
                other => {
                    if let Some(end) = control(self.shared, self.conn, ws, other) {
                        return end;
                    }
                }
            }
        }
    }

    /// Handles one text message; `Some` when the connection must end.
    #[inline(never)]
    fn request(&mut self, ws: &mut Ws, text: &str) -> Option<End> {
        let shared = self.shared;
        let parsed = protocol::parse_request(text);
        let kind = if parsed.is_ok() { MsgType::Req } else { MsgType::Invalid };
        shared.metrics.message(Direction::In, kind);
        let now = Instant::now();
        if self.bucket.take(self.rate, now).is_err() {
            let id = match &parsed {
                Ok(request) => Some(request.id),
                Err(bad) => bad.id,
            };
            return self.limited(ws, id, now);
        }
        let request = match parsed {
            Ok(request) => request,
            Err(bad) => {
                shared.metrics.error(ErrorType::Protocol);
                shared.respond_error(self.conn, bad.id, &bad.failure);
                return None;
            }
        };
        let result = match (request.method.as_ref(), self.role) {
            ("health", _) => Ok(self.health()),
            ("node.list", Role::Operator) => Ok(shared.hub.node_list()),
            ("node.invoke", Role::Operator) => return self.invoke(&request),
            ("node.invoke.result", Role::Node) => self.result(&request),
            ("connect", _) => Err(Failure::invalid("already connected")),
            ("node.list" | "node.invoke", Role::Node) => {
                Err(Failure::new(ErrorCode::Forbidden, "operator method; this connection is a node"))
            }
            ("node.invoke.result", Role::Operator) => {
                Err(Failure::new(ErrorCode::Forbidden, "node method; this connection is an operator"))
            }
            _ => Err(Failure::new(ErrorCode::UnknownMethod, "unknown method")),
        };
        match result {
            Ok(payload) => shared.respond_ok(self.conn, request.id, &payload),
            Err(failure) => shared.respond_error(self.conn, Some(request.id), &failure),
        };
        None
    }

    /// Answers a request over the per-connection rate; closes a client that
    /// keeps flooding.
    fn limited(&mut self, ws: &mut Ws, id: Option<&str>, now: Instant) -> Option<End> {
        if let Some(end) = self.flooding(ws, now) {
            return Some(end);
        }
        let failure = Failure::new(ErrorCode::RateLimited, "too many requests: slow down");
        self.shared.respond_error(self.conn, id, &failure);
        None
    }

    /// Records one message over the rate. A client over it without a quiet
    /// second for `flood_close_after` is closed with 1008.
    fn flooding(&mut self, ws: &mut Ws, now: Instant) -> Option<End> {
        self.shared.metrics.error(ErrorType::RateLimit);
        let quiet = self.last_limited.is_none_or(|t| now.duration_since(t) >= FLOOD_QUIET);
        if quiet {
            self.flood_since = Some(now);
        }
        self.last_limited = Some(now);
        let flooding_for = self.flood_since.map_or(Duration::ZERO, |t| now.duration_since(t));
        if flooding_for < self.shared.config.flood_close_after {
            return None;
        }
        self.shared.close(self.conn, code::POLICY, "rate limit exceeded");
        let end = End::new(Level::Warn, "kept flooding past the rate limit").code(code::POLICY);
        Some(await_close_reply(ws, end))
    }

    fn health(&self) -> String {
        let (clients, nodes) = self.shared.hub.counts();
        format!(
            r#"{{"status":"ok","uptimeMs":{},"connections":{clients},"nodes":{nodes}}}"#,
            self.shared.started.elapsed().as_millis()
        )
    }

    /// Routes a `node.invoke`; the response comes later, from whoever
    /// finishes it (the node's result, the heartbeat's timeout, ...).
    #[inline(never)]
    fn invoke(&mut self, request: &Request<'_>) -> Option<End> {
        let shared = self.shared;
        let invoke = match protocol::parse_invoke(request.params) {
            Ok(invoke) => invoke,
            Err(failure) => {
                shared.respond_error(self.conn, Some(request.id), &failure);
                return None;
            }
        };
        let now = Instant::now();
        let (invoke_id, node) = match shared.hub.start_invoke(self.conn, &invoke, request.id, now) {
            Ok(started) => started,
            Err(failure) => {
                shared.respond_error(self.conn, Some(request.id), &failure);
                return None;
            }
        };
        // Written straight into the event (io::Write on Vec cannot fail).
        let mut event = protocol::event_prefix("node.invoke.request", "");
        let _ = write!(event, r#"{{"id":"{invoke_id}","nodeId":"#);
        protocol::push_json_str(&mut event, &invoke.node_id);
        event.extend_from_slice(br#","command":"#);
        protocol::push_json_str(&mut event, &invoke.command);
        event.extend_from_slice(br#","params":"#);
        event.extend_from_slice(invoke.params.as_bytes());
        event.extend_from_slice(br#","paramsJSON":"#);
        protocol::push_json_str(&mut event, invoke.params);
        let _ = write!(event, r#","timeoutMs":{}}}"#, invoke.timeout_ms);
        if shared.send_event(&node, &event) {
            shared.waker.wake_by(now + Duration::from_millis(invoke.timeout_ms));
        } else if let Some(pending) = shared.hub.cancel_invoke(invoke_id) {
            shared.answer(pending, Answer::Gateway(ErrorCode::NodeDisconnected, "the node disconnected"));
        }
        None
    }

    /// Takes a node's `node.invoke.result` and answers the operator.
    #[inline(never)]
    fn result(&mut self, request: &Request<'_>) -> Result<String, Failure> {
        let result = protocol::parse_result(request.params)?;
        let node_id = self.node_id.as_deref().unwrap_or_default();
        if result.node_id.as_deref().is_some_and(|id| id != node_id) {
            return Err(Failure::invalid("nodeId does not match this connection"));
        }
        match self.shared.hub.finish_invoke(result.id, self.conn.key) {
            Some(pending) => {
                let answer = match &result.outcome {
                    Outcome::Ok(payload) => Answer::Ok(payload),
                    Outcome::Err { code, message } => Answer::NodeError { code, message },
                };
                self.shared.answer(pending, answer);
            }
            None => debug!(target: "goclaw::conn", conn_id:% = self.conn.id, node_id = node_id,
                invoke_id:% = result.id; "late or unknown invoke result dropped"),
        }
        Ok("{}".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::protocol::ClientInfo;
    use std::net::TcpListener;

    /// A panicking connection thread still leaves the registries, the slot
    /// count and the thread list clean, and answers its pending invokes.
    #[test]
    fn a_panicking_thread_cleans_up() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let shared = Arc::new(Shared::new(Config::default(), listener.local_addr().unwrap()));
        let socket = |shared: &Shared| {
            let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let _client = listener.accept().unwrap();
            let key = shared.next_key();
            Arc::new(Conn::new(Uuid::new_v4(), key, stream.local_addr().unwrap(), Outbox::new(stream, 1 << 20)))
        };
        let operator = socket(&shared);
        shared.hub.add(operator.clone());
        shared.hub.join_operator(&operator).unwrap();

        assert!(shared.slots.try_acquire());
        let node = socket(&shared);
        shared.hub.add(node.clone());
        let client = ClientInfo { id: "n1".into(), ..ClientInfo::default() };
        let info = Arc::new(NodeInfo::new(&client, vec!["echo".into()], 0));
        shared.hub.join_node(&node, info).unwrap();
        let invoke =
            protocol::Invoke { node_id: "n1".into(), command: "echo".into(), params: "null", timeout_ms: 1000 };
        shared.hub.start_invoke(&operator, &invoke, "\"r1\"", Instant::now()).unwrap();

        let guard = ConnGuard {
            shared: shared.clone(),
            conn: node.clone(),
            accepted: Instant::now(),
            running: true,
            role: Some(Role::Node),
            node_id: Some("n1".into()),
            end: End::new(Level::Info, "test"),
        };
        let handle = thread::spawn(move || {
            let _guard = guard;
            panic!("injected");
        });
        shared.threads.insert(node.key, handle);
        assert_eq!(shared.threads.join_all(), 1);
        assert_eq!(shared.slots.active(), 0);
        assert_eq!(shared.hub.counts(), (1, 0));
        assert_eq!(shared.hub.next_deadline(), None);
        assert_eq!(shared.metrics.invokes(crate::metrics::InvokeOutcome::Disconnected), 1);
    }
}
