//! A connection's handshake: the HTTP upgrade under the handshake
//! deadline, the challenge, the `connect` request and its checks (token,
//! params), registration in the hub and `hello-ok`. Everything a client
//! does before it is authenticated happens here.

use std::sync::Arc;
use std::time::Instant;

use log::{Level, info};
use tungstenite::Message;
use uuid::Uuid;

use crate::gateway::hub::{Conn, NodeInfo, Replaced};
use crate::gateway::payload::{self, Challenge, Features, HelloOk, Policy, Server};
use crate::gateway::send::Answer;
use crate::gateway::state::Shared;
use crate::gateway::transport::{End, Ws, await_close_reply, close_for_shutdown, code, control, fail, greeted};
use crate::ops::metrics::{Direction, ErrorType, MsgType};
use crate::util::{millis, unix_ms};
use crate::wire::frame::{self, ErrorCode, Failure, Role};
use crate::wire::http::{self, HandshakeError, Refusal};
use crate::wire::net;
use crate::wire::params::{self, Connect};

/// Who a connection's client is, once `connect` has registered it.
#[derive(Debug, Default)]
pub struct Who {
    /// Node or operator.
    pub role: Option<Role>,
    /// The node id, for a node.
    pub node_id: Option<String>,
}

/// Methods a client may call after `connect`.
pub const METHODS: &[&str] = &["health", "node.list", "node.invoke", "node.invoke.result"];
/// Events the gateway sends.
pub const EVENTS: &[&str] = &["connect.challenge", "tick", "node.invoke.request", "presence", "shutdown"];

/// Reads and answers the HTTP upgrade; returns bytes that followed it.
#[inline(never)]
pub fn upgrade(shared: &Shared, conn: &Conn, deadline: Instant) -> Result<Vec<u8>, End> {
    let stream = conn.out.stream();
    let refuse = |refusal: Refusal| {
        shared.metrics.refused(refusal);
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

/// Sends the challenge, takes `connect`, registers the client and greets
/// it; `who` is filled in as soon as the hub knows the client, so its
/// guard cleans up after it however the connection ends. Returns its role
/// and node id.
pub fn join(shared: &Arc<Shared>, conn: &Arc<Conn>, ws: &mut Ws, who: &mut Who) -> Result<(Role, Option<String>), End> {
    let challenge = payload::encode(&Challenge { nonce: &Uuid::new_v4().to_string(), ts: unix_ms() });
    shared.send_event(conn, &frame::event_prefix("connect.challenge", &challenge));

    let (request_id, hello) = await_connect(shared, conn, ws)?;
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
        return Err(close_for_shutdown(shared, conn, ws));
    };
    who.role = Some(role);
    if role == Role::Node {
        who.node_id = Some(hello.client.id.clone());
    }
    shared.respond_ok(conn, &request_id, &hello_ok(shared, conn));
    if let Some(end) = greeted(shared, conn, ws) {
        return Err(end);
    }
    if let Some(replaced) = replaced {
        displace(shared, replaced, &hello.client.id);
    }
    if role == Role::Node {
        shared.presence(&hello.client.id, "connected");
    }
    Ok((role, who.node_id.clone()))
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
    let request = match frame::parse_request(&text) {
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
    let hello = match params::parse_connect(request.params) {
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

/// The `hello-ok` payload.
#[inline(never)]
fn hello_ok(shared: &Shared, conn: &Conn) -> String {
    let config = &shared.config;
    payload::encode(&HelloOk {
        kind: "hello-ok",
        protocol: frame::PROTOCOL_VERSION,
        server: Server { version: env!("CARGO_PKG_VERSION"), conn_id: &conn.id.to_string() },
        features: Features { methods: METHODS, events: EVENTS },
        policy: Policy {
            max_payload: config.max_message_bytes,
            tick_interval_ms: millis(config.tick_interval),
            ping_interval_ms: millis(config.ping_period),
        },
    })
}

/// Closes the node connection a new one displaced, failing its invokes.
#[inline(never)]
pub fn displace(shared: &Shared, replaced: Replaced, node_id: &str) {
    let Replaced { old, failed } = replaced;
    for pending in failed {
        shared
            .answer(pending, Answer::Gateway(ErrorCode::NodeDisconnected, "the node was replaced by a new connection"));
    }
    info!(target: "goclaw::conn", conn_id:% = old.id, node_id = node_id; "node replaced by a newer connection");
    shared.close_from_elsewhere(&old, code::REPLACED, "replaced");
}
