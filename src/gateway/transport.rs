//! A connection's socket as tungstenite sees it, and how a connection
//! ends: reads against the current deadline, writes through the outbox,
//! control frames, read errors mapped to RFC 6455 close codes, waiting for
//! the client's close reply, and the shutdown notice. Shared by the
//! handshake and the request loop; never waits on another client.

use std::io::{self, ErrorKind, Read, Write};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use log::Level;
use tungstenite::error::{Error as WsError, ProtocolError};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, WebSocket};
use tungstenite::{Message, Utf8Bytes};

use crate::gateway::limits::{Meter, Verdict};
use crate::gateway::outbox::SendError;
use crate::gateway::payload::{self, Shutdown};
use crate::gateway::peer::Conn;
use crate::gateway::state::{CLOSE_REPLY_WAIT, Shared};
use crate::ops::metrics::{Direction, ErrorType, MsgType};
use crate::wire::frame;
use crate::wire::net;
use crate::wire::ws::OP_CLOSE;

/// When the `shutdown` event tells clients to expect the gateway back.
const RESTART_EXPECTED_MS: u64 = 5000;
/// How long a connection's thread pauses after a frame over the message
/// rate before it reads on: a flood is read at most about a thousand
/// frames a second, still enough to tell it from a burst.
const OVER_RATE_PAUSE: Duration = Duration::from_millis(1);
/// The reason tungstenite puts in its answer to a forbidden close code.
const INVALID_CODE_REASON: &str = "Protocol violation";

/// Close codes (RFC 6455 §7.4.1, and 4000 from SPEC §4.1).
pub mod code {
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL: u16 = 1002;
    pub const UNSUPPORTED: u16 = 1003;
    pub const INVALID_DATA: u16 = 1007;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const REPLACED: u16 = 4000;
    pub const DEVICE_REMOVED: u16 = 4001;
}

/// How a connection ended, for its one disconnect log line: who sent which
/// close code, and why.
#[derive(Debug, Clone)]
pub struct End {
    /// The level of the disconnect line.
    pub level: Level,
    /// Why, in a few words.
    pub reason: &'static str,
    /// The close code the gateway sent, if any.
    pub server_code: Option<u16>,
    /// The close code the client sent, if any (1005: a close without one).
    pub client_code: Option<u16>,
    /// The error behind it, if any (our words, never client input).
    pub detail: Option<String>,
}

impl End {
    /// An end without close codes.
    pub fn new(level: Level, reason: &'static str) -> End {
        End { level, reason, server_code: None, client_code: None, detail: None }
    }

    /// The close code the gateway sent.
    pub fn code(mut self, code: u16) -> End {
        self.server_code = Some(code);
        self
    }

    /// The close code the client sent.
    pub fn client_code(mut self, code: u16) -> End {
        self.client_code = Some(code);
        self
    }

    /// The error behind it.
    pub fn detail(mut self, detail: impl ToString) -> End {
        self.detail = Some(detail.to_string());
        self
    }
}

/// The socket as tungstenite sees it: reads honour the current deadline,
/// writes (tungstenite's own pongs and close replies) go through the outbox.
pub struct Transport {
    /// The gateway, for counting and the send policy.
    pub shared: Arc<Shared>,
    /// The connection.
    pub conn: Arc<Conn>,
    /// Reads fail with `TimedOut` from this instant on.
    pub deadline: Instant,
    /// Keeps the socket's read timeout in step with `deadline`.
    pub timer: net::ReadTimer,
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.timer.read(self.conn.out.stream(), buf, self.deadline)
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let kind = if buf.first().is_some_and(|b| b & 0x0f == OP_CLOSE) { MsgType::Close } else { MsgType::Pong };
        match self.conn.out.send_raw(buf) {
            Err(SendError::Closing) => Ok(buf.len()),
            result if self.shared.settle(&self.conn, result, kind) => Ok(buf.len()),
            _ => Err(ErrorKind::BrokenPipe.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A connection's WebSocket.
pub type Ws = WebSocket<Transport>;

/// Reads until the next text message, handling every control frame on the
/// way, and meters every frame, control frames included (SPEC §5). With
/// `pong_wait`, the read deadline restarts with every frame (the pong
/// deadline); without, it stays where it is (the handshake deadline).
/// Returns the text and whether the message rate allowed it; `Err` when the
/// connection must end (closed, broken, or flooding).
#[inline(never)]
pub fn next_text(
    shared: &Shared,
    conn: &Arc<Conn>,
    ws: &mut Ws,
    meter: &mut Meter,
    pong_wait: Option<Duration>,
) -> Result<(Utf8Bytes, bool), End> {
    let timeout = if pong_wait.is_some() { "pong timeout" } else { "handshake timeout" };
    loop {
        if let Some(wait) = pong_wait {
            ws.get_mut().deadline = Instant::now() + wait;
        }
        let message = ws.read().map_err(|e| fail(shared, conn, e, timeout))?;
        if conn.out.is_closing() && !matches!(message, Message::Close(_)) {
            // We sent a close (shutdown, replacement): only its answer matters now.
            continue;
        }
        let allowed = match meter.take(Instant::now()) {
            Verdict::Pass => true,
            Verdict::Limited => {
                shared.metrics.error(ErrorType::RateLimit);
                // Only this connection's thread waits: TCP's flow control
                // then slows the flooder, and the flood costs little CPU.
                thread::sleep(OVER_RATE_PAUSE);
                false
            }
            Verdict::Flooding => {
                shared.metrics.error(ErrorType::RateLimit);
                shared.close(conn, code::POLICY, "rate limit exceeded");
                let end = End::new(Level::Warn, "kept flooding past the rate limit").code(code::POLICY);
                return Err(await_close_reply(ws, end));
            }
        };
        let metrics = &shared.metrics;
        match message {
            Message::Text(text) => return Ok((text, allowed)),
            Message::Ping(_) => metrics.message(Direction::In, MsgType::Ping),
            Message::Pong(_) => metrics.message(Direction::In, MsgType::Pong),
            Message::Binary(_) => {
                metrics.message(Direction::In, MsgType::Binary);
                metrics.error(ErrorType::Protocol);
                shared.close(conn, code::UNSUPPORTED, "binary frames are not supported");
                let end = End::new(Level::Warn, "binary frame").code(code::UNSUPPORTED);
                return Err(await_close_reply(ws, end));
            }
            Message::Close(frame) => {
                metrics.message(Direction::In, MsgType::Close);
                // Decided before the reply below, which marks the outbox closing too.
                let end = closed_by_client(shared, conn, frame.as_ref());
                // Sends tungstenite's close reply (dropped if we closed first).
                let _ = ws.flush();
                return Err(end);
            }
            Message::Frame(_) => {}
        }
    }
}

/// The end of a connection the client closed.
fn closed_by_client(shared: &Shared, conn: &Conn, frame: Option<&CloseFrame>) -> End {
    let client = frame.map_or(1005, |f| u16::from(f.code));
    if let Some(ours) = conn.out.close_code() {
        // The client answered a close we sent.
        return match ours {
            code::GOING_AWAY => End::new(Level::Info, "server shutdown"),
            code::REPLACED => End::new(Level::Info, "replaced by a newer connection"),
            _ => End::new(Level::Info, "closed by server"),
        }
        .code(ours)
        .client_code(client);
    }
    // tungstenite answers a close code RFC 6455 §7.4 does not allow with
    // 1002 "Protocol violation" and hands us that instead of the client's.
    if frame.is_some_and(|f| f.code == CloseCode::Protocol && f.reason.as_str() == INVALID_CODE_REASON) {
        shared.metrics.error(ErrorType::Protocol);
        return End::new(Level::Warn, "client sent a close code RFC 6455 does not allow").code(code::PROTOCOL);
    }
    let level = if matches!(client, 1000 | 1001 | 1005) { Level::Info } else { Level::Warn };
    End::new(level, "closed by client").client_code(client)
}

/// Maps a read error to how the connection ends, sending the close code of
/// RFC 6455 §7.4.1 where one applies. `timeout` names the deadline that
/// applies in this phase.
#[inline(never)]
pub fn fail(shared: &Shared, conn: &Arc<Conn>, error: WsError, timeout: &'static str) -> End {
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
pub fn await_close_reply(ws: &mut Ws, end: End) -> End {
    let until = Instant::now() + CLOSE_REPLY_WAIT;
    ws.get_mut().deadline = ws.get_ref().deadline.min(until);
    loop {
        match ws.read() {
            Ok(Message::Close(_)) | Err(_) => return end,
            Ok(_) => {}
        }
    }
}

/// Marks a registered client greeted: from now on the shutdown path may
/// notify it. If shutdown took its snapshot before that, it left this
/// connection to notify itself (exactly once: see `Conn::claim_shutdown`),
/// and this returns how the connection ends.
pub fn greeted(shared: &Arc<Shared>, conn: &Arc<Conn>, ws: &mut Ws) -> Option<End> {
    conn.mark_greeted();
    shared.is_draining().then(|| close_for_shutdown(shared, conn, ws))
}

/// Delivers the `shutdown` event and close 1001 to a connection that the
/// shutdown path left to notify itself (it registered or greeted just too
/// late for its snapshot), unless the shutdown path got there first.
#[inline(never)]
pub fn close_for_shutdown(shared: &Arc<Shared>, conn: &Arc<Conn>, ws: &mut Ws) -> End {
    if conn.claim_shutdown() {
        shared.send_event(conn, &shutdown_event());
        shared.close(conn, code::GOING_AWAY, "server shutting down");
    }
    await_close_reply(ws, End::new(Level::Info, "server shutdown").code(code::GOING_AWAY))
}

/// The `shutdown` event.
pub fn shutdown_event() -> Vec<u8> {
    let shutdown = Shutdown { reason: "shutdown", restart_expected_ms: RESTART_EXPECTED_MS };
    frame::event_prefix("shutdown", &payload::encode(&shutdown))
}
