//! The request loop of a connected client: reading with the pong deadline,
//! the per-connection message rate, and the methods of SPEC §4.2 (health,
//! the node list, routing an invoke to its node and a node's result back to
//! its operator, node events). Never waits on another client. The pairing
//! methods are `manage.rs`.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::debug;
use uuid::Uuid;

use crate::gateway::limits::Meter;
use crate::gateway::manage;
use crate::gateway::payload::{self, Health};
use crate::gateway::peer::Conn;
use crate::gateway::send::Answer;
use crate::gateway::state::Shared;
use crate::gateway::transport::{End, Ws, next_text};
use crate::ops::metrics::{Direction, MsgType};
use crate::util::{millis, unix_ms};
use crate::wire::frame::{self, ErrorCode, Failure, Request, Role};
use crate::wire::params::{self, Invoke};
use crate::wire::text::quotable_method;
use crate::wire::ws::{DataFrame, OP_TEXT};

/// Methods only operators may call.
pub const OPERATOR_METHODS: &[&str] = &[
    "node.list",
    "node.describe",
    "node.invoke",
    "node.pair.list",
    "node.pair.approve",
    "node.pair.reject",
    "node.pair.remove",
    "device.pair.list",
    "device.pair.approve",
    "device.pair.reject",
    "device.pair.remove",
];
/// Methods only nodes may call. The inventory updates of 2026.9.6 node
/// hosts are accepted (and ignored) so they are not retried forever.
pub const NODE_METHODS: &[&str] = &[
    "node.invoke.result",
    "node.event",
    "node.runnerInventory.update",
    "node.skills.update",
    "node.pluginTools.update",
];
/// `RATE_LIMITED` asks the client to wait this long.
const RATE_LIMITED_RETRY_MS: u64 = 1000;

/// The request loop of a connected client.
pub struct Session<'a> {
    shared: &'a Arc<Shared>,
    conn: &'a Arc<Conn>,
    role: Role,
    node_id: Option<String>,
    meter: Meter,
}

impl<'a> Session<'a> {
    /// A client that completed `connect`; `meter` has counted its frames
    /// since the upgrade.
    pub fn new(
        shared: &'a Arc<Shared>,
        conn: &'a Arc<Conn>,
        role: Role,
        node_id: Option<String>,
        meter: Meter,
    ) -> Session<'a> {
        Session { shared, conn, role, node_id, meter }
    }

    /// Serves requests until the connection ends.
    #[inline(never)]
    pub fn serve(&mut self, ws: &mut Ws) -> End {
        let pong_wait = self.shared.config.pong_wait;
        loop {
            match next_text(self.shared, self.conn, ws, &mut self.meter, Some(pong_wait)) {
                Ok((text, allowed)) => self.request(&text, allowed),
                Err(end) => return end,
            }
        }
    }

    /// Answers one text message: exactly one response, now or (an invoke)
    /// from whoever finishes it.
    #[inline(never)]
    fn request(&mut self, text: &str, allowed: bool) {
        let shared = self.shared;
        let parsed = frame::parse_request(text);
        let kind = if parsed.is_ok() { MsgType::Req } else { MsgType::Invalid };
        shared.metrics.message(Direction::In, kind);
        if !allowed {
            let id = match &parsed {
                Ok(request) => Some(request.id),
                Err(bad) => bad.id,
            };
            let failure =
                Failure::new(ErrorCode::RateLimited, "too many requests: slow down").retry_after(RATE_LIMITED_RETRY_MS);
            shared.respond_error(self.conn, id, &failure);
            return;
        }
        let request = match parsed {
            Ok(request) => request,
            Err(bad) => {
                shared.metrics.error(crate::ops::metrics::ErrorType::Protocol);
                shared.respond_error(self.conn, bad.id, &bad.failure);
                return;
            }
        };
        match self.dispatch(&request) {
            Ok(Some(payload)) => shared.respond_ok(self.conn, request.id, &payload),
            Ok(None) => true,
            Err(failure) => shared.respond_error(self.conn, Some(request.id), &failure),
        };
    }

    /// The method's answer: `Ok(None)` when it comes later (an invoke).
    fn dispatch(&mut self, request: &Request<'_>) -> Result<Option<String>, Failure> {
        let method = request.method.as_ref();
        let shared = self.shared;
        match (method, self.role) {
            ("health", _) => Ok(Some(self.health())),
            ("connect", _) => Err(Failure::invalid("connect is only valid as the first request")),
            ("node.list", Role::Operator) => {
                let list = params::parse_list(request.params)?;
                let limit = list.limit.unwrap_or(usize::MAX);
                Ok(Some(shared.hub.node_list(list.cursor.as_deref(), limit, shared.config.max_message_bytes)))
            }
            ("node.describe", Role::Operator) => {
                let node_id = params::parse_id("node.describe", "nodeId", request.params)?;
                let node = shared.hub.node(&node_id).ok_or_else(not_connected)?;
                Ok(Some(node.describe()))
            }
            ("node.invoke", Role::Operator) => self.invoke(request).map(|()| None),
            (_, Role::Operator) if OPERATOR_METHODS.contains(&method) => {
                manage::call(shared, method, request.params).map(Some)
            }
            ("node.invoke.result", Role::Node) => self.result(request).map(Some),
            ("node.event", Role::Node) => self.event(request).map(Some),
            (_, Role::Node) if NODE_METHODS.contains(&method) => {
                Ok(Some(payload::encode(&payload::NodeRef { node_id: self.node_id() })))
            }
            _ if OPERATOR_METHODS.contains(&method) || NODE_METHODS.contains(&method) => {
                Err(Failure::new(ErrorCode::Forbidden, format!("unauthorized role: {}", self.role.as_str())))
            }
            _ => Err(Failure::new(
                ErrorCode::UnknownMethod,
                match quotable_method(method) {
                    Some(method) => format!("unknown method: {method}"),
                    None => "unknown method".to_string(),
                },
            )),
        }
    }

    fn node_id(&self) -> &str {
        self.node_id.as_deref().unwrap_or_default()
    }

    fn health(&self) -> String {
        let (connections, nodes) = self.shared.hub.counts();
        let uptime_ms = millis(self.shared.started.elapsed());
        payload::encode(&Health { ok: true, ts: unix_ms(), status: "ok", uptime_ms, connections, nodes })
    }

    /// Routes a `node.invoke`; the response comes later, from whoever
    /// finishes it (the node's result, the heartbeat's timeout, ...). An
    /// invoke whose `node.invoke.request` would exceed `maxPayload` is
    /// refused before anything is registered or sent.
    #[inline(never)]
    fn invoke(&mut self, request: &Request<'_>) -> Result<(), Failure> {
        let shared = self.shared;
        let invoke = params::parse_invoke(request.params)?;
        let id = Uuid::new_v4();
        let mut event = invoke_request(id, &invoke);
        if !shared.fits(&event) {
            return Err(Failure::new(ErrorCode::TooLarge, "the node.invoke.request would exceed maxPayload"));
        }
        let now = Instant::now();
        let node = shared.hub.start_invoke(id, self.conn, &invoke, request.id, now)?;
        if shared.send(&node, event.finish(), MsgType::Event) {
            shared.waker.wake_by(now + Duration::from_millis(invoke.timeout_ms));
        } else if let Some(pending) = shared.hub.cancel_invoke(id) {
            shared.answer(pending, Answer::Gateway(ErrorCode::NodeDisconnected, "node disconnected"));
        }
        Ok(())
    }

    /// Takes a node's `node.invoke.result` and answers the operator.
    #[inline(never)]
    fn result(&mut self, request: &Request<'_>) -> Result<String, Failure> {
        let result = params::parse_result(request.params)?;
        if result.node_id.as_deref().is_some_and(|id| id != self.node_id()) {
            return Err(Failure::invalid("nodeId does not match this connection"));
        }
        match self.shared.hub.finish_invoke(result.id, self.conn.key) {
            Some(pending) => self.shared.answer(pending, Answer::Node(&result.outcome)),
            None => debug!(target: "goclaw::conn", conn_id:% = self.conn.id, node_id = self.node_id(),
                invoke_id:% = result.id; "late or unknown invoke result dropped"),
        }
        Ok(r#"{"ok":true}"#.to_string())
    }

    /// Takes a node's `node.event` and forwards it to every operator as
    /// `node.event {nodeId, event, payloadJSON}`.
    fn event(&mut self, request: &Request<'_>) -> Result<String, Failure> {
        let event = params::parse_node_event(request.params)?;
        let forwarded = payload::encode(&payload::NodeEvent {
            node_id: self.node_id(),
            event: &event.event,
            payload_json: event.payload_json.as_deref(),
        });
        let prefix = frame::event_prefix("node.event", &forwarded);
        // Room for `,"seq":N}` behind the prefix.
        if prefix.len() + 32 > self.shared.config.max_message_bytes {
            return Err(Failure::new(ErrorCode::TooLarge, "the forwarded node.event would exceed maxPayload"));
        }
        self.shared.broadcast_to_operators(&prefix);
        Ok(r#"{"ok":true}"#.to_string())
    }
}

/// `UNAVAILABLE` / `NODE_NOT_FOUND`, as a real gateway answers for a node
/// that is not connected.
fn not_connected() -> Failure {
    Failure::new(ErrorCode::NodeNotFound, "node not connected")
}

/// The `node.invoke.request` event as the real gateway sends it: `paramsJSON`
/// only, no `seq` (OPENCLAW.md §7). Written straight into the frame, the
/// operator's params escaped once (docs/AUDIT.md, "JSON on the wire").
fn invoke_request(id: Uuid, invoke: &Invoke<'_>) -> DataFrame {
    let mut frame = DataFrame::with_capacity(OP_TEXT, 192 + invoke.params.len() * 2);
    let out = frame.body();
    out.extend_from_slice(&frame::event_prefix("node.invoke.request", ""));
    // io::Write on Vec cannot fail.
    let _ = write!(out, r#"{{"id":"{id}","nodeId":"#);
    frame::push_json_str(out, &invoke.node_id);
    out.extend_from_slice(br#","command":"#);
    frame::push_json_str(out, &invoke.command);
    out.extend_from_slice(br#","paramsJSON":"#);
    frame::push_json_str(out, invoke.params);
    let _ = write!(out, r#","timeoutMs":{},"idempotencyKey":"#, invoke.timeout_ms);
    match &invoke.idempotency_key {
        Some(key) => frame::push_json_str(out, key),
        None => frame::push_json_str(out, &Uuid::new_v4().to_string()),
    }
    out.extend_from_slice(b"}}");
    frame
}
