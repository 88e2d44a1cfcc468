//! The request loop of a connected client: reading with the pong
//! deadline, the per-connection message rate, and the methods of SPEC §4.2
//! (health, node.list, routing an invoke to its node and a node's result
//! back to its operator). Never waits on another client.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{Level, debug};
use tungstenite::Message;

use crate::gateway::hub::Conn;
use crate::gateway::limits::{Rate, TokenBucket};
use crate::gateway::payload::{self, Health};
use crate::gateway::send::Answer;
use crate::gateway::state::Shared;
use crate::gateway::transport::{End, Ws, await_close_reply, code, control, fail};
use crate::ops::metrics::{Direction, ErrorType, MsgType};
use crate::util::millis;
use crate::wire::frame::{self, ErrorCode, Failure, Request, Role};
use crate::wire::params::{self, Outcome};

/// A client rate-limited with less than this between refusals is still
/// flooding (SPEC §4.2: closed after `flood_close_after` of it).
const FLOOD_QUIET: Duration = Duration::from_secs(1);

/// The request loop of a connected client.
pub struct Session<'a> {
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
    pub fn new(shared: &'a Arc<Shared>, conn: &'a Arc<Conn>, role: Role, node_id: Option<String>) -> Session<'a> {
        let rate = Rate::new(shared.config.message_rate_per_sec, shared.config.message_burst);
        let bucket = TokenBucket::full(rate, Instant::now());
        Session { shared, conn, role, node_id, rate, bucket, flood_since: None, last_limited: None }
    }

    #[inline(never)]
    pub fn serve(&mut self, ws: &mut Ws) -> End {
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
        let parsed = frame::parse_request(text);
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
        let (connections, nodes) = self.shared.hub.counts();
        let uptime_ms = millis(self.shared.started.elapsed());
        payload::encode(&Health { status: "ok", uptime_ms, connections, nodes })
    }

    /// Routes a `node.invoke`; the response comes later, from whoever
    /// finishes it (the node's result, the heartbeat's timeout, ...).
    #[inline(never)]
    fn invoke(&mut self, request: &Request<'_>) -> Option<End> {
        let shared = self.shared;
        let invoke = match params::parse_invoke(request.params) {
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
        let mut event = frame::event_prefix("node.invoke.request", "");
        let _ = write!(event, r#"{{"id":"{invoke_id}","nodeId":"#);
        frame::push_json_str(&mut event, &invoke.node_id);
        event.extend_from_slice(br#","command":"#);
        frame::push_json_str(&mut event, &invoke.command);
        event.extend_from_slice(br#","params":"#);
        event.extend_from_slice(invoke.params.as_bytes());
        event.extend_from_slice(br#","paramsJSON":"#);
        frame::push_json_str(&mut event, invoke.params);
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
        let result = params::parse_result(request.params)?;
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
