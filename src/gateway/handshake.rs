//! A connection's handshake: the HTTP upgrade under the handshake
//! deadline, the challenge, the `connect` request, who the client is
//! (`admit.rs`), registration in the hub and `hello-ok`. Everything a client
//! does before it is authenticated happens here; every refusal is one error
//! response and a close frame.

use std::sync::{Arc, LazyLock};
use std::time::Instant;

use log::{Level, info};
use uuid::Uuid;

use crate::gateway::admit::{self, Peer};
use crate::gateway::hub::{JoinError, Replaced};
use crate::gateway::limits::{Meter, PREAUTH_RETRY};
use crate::gateway::node::NodeInfo;
use crate::gateway::payload::{
    self, Auth, Challenge, Empty, Features, HelloOk, Policy, Server, Snapshot, StateVersion,
};
use crate::gateway::peer::Conn;
use crate::gateway::send::Answer;
use crate::gateway::session::{NODE_METHODS, OPERATOR_METHODS};
use crate::gateway::state::Shared;
use crate::gateway::transport::{End, Ws, await_close_reply, close_for_shutdown, code, greeted, next_text};
use crate::ops::metrics::{Direction, ErrorType, MsgType};
use crate::util::{millis, unix_ms};
use crate::wire::connect::{self, Connect};
use crate::wire::frame::{self, ErrorCode, Failure, Role};
use crate::wire::http::{self, HandshakeError, Refusal};
use crate::wire::net;

/// Every method, as `hello-ok.features.methods` lists it: `health`, then
/// the operators' methods and the nodes' (made once, from the lists the
/// request loop dispatches on).
static METHODS: LazyLock<Vec<&'static str>> =
    LazyLock::new(|| ["health"].iter().chain(OPERATOR_METHODS).chain(NODE_METHODS).copied().collect());
/// Events the gateway sends.
pub const EVENTS: &[&str] = &[
    "connect.challenge",
    "tick",
    "node.invoke.request",
    "node.event",
    "presence",
    "shutdown",
    "node.pair.requested",
    "node.pair.resolved",
    "device.pair.requested",
    "device.pair.resolved",
];

/// Who a connection's client is, once `connect` has registered it. The
/// connection's guard reads it to clean up after the client.
#[derive(Debug, Default)]
pub struct Who {
    /// Node or operator.
    pub role: Option<Role>,
    /// The node id, for a node.
    pub node_id: Option<String>,
    /// It completed `connect`: it no longer counts against its source's
    /// unauthenticated connections.
    pub authenticated: bool,
}

/// Reads and answers the HTTP upgrade; returns the bytes that followed it.
#[inline(never)]
pub fn upgrade(shared: &Shared, conn: &Conn, deadline: Instant) -> Result<(Vec<u8>, Peer), End> {
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
            if conn.counted().is_none() {
                // From a trusted proxy: the limits apply to the client it names.
                let peer = conn.addr.ip();
                let client = shared.config.trusted_proxies.client(peer, &upgrade.forwarded_for).unwrap_or(peer);
                if let Err(wait) = shared.limiter.check(client, Instant::now()) {
                    return Err(refuse(Refusal::RateLimited(wait)));
                }
                if !shared.preauth.enter(client) {
                    return Err(refuse(Refusal::RateLimited(PREAUTH_RETRY)));
                }
                conn.set_counted(client);
            }
            net::write_all(stream, http::switching_protocols(&upgrade).as_bytes())
                .map_err(|e| End::new(Level::Info, "client went away during upgrade").detail(e))?;
            Ok((tail, Peer { forwarded: upgrade.forwarded }))
        }
        Err(HandshakeError::Refused(refusal)) => Err(refuse(refusal)),
        Err(HandshakeError::Timeout) => {
            shared.metrics.error(ErrorType::Timeout);
            Err(End::new(Level::Warn, "handshake timeout before upgrade"))
        }
        Err(HandshakeError::Closed) => Err(End::new(Level::Debug, "client went away before upgrade")),
    }
}

/// Sends the challenge, takes `connect`, decides who the client is,
/// registers it and greets it; `who` is filled in as soon as the hub knows
/// the client, so its guard cleans up after it however the connection
/// ends. Returns its role and node id.
pub fn join(
    shared: &Arc<Shared>,
    conn: &Arc<Conn>,
    ws: &mut Ws,
    who: &mut Who,
    meter: &mut Meter,
    peer: Peer,
) -> Result<(Role, Option<String>), End> {
    let nonce = Uuid::new_v4().to_string();
    let challenge = payload::encode(&Challenge { nonce: &nonce, ts: unix_ms() });
    shared.send_to(conn, "connect.challenge", &challenge);

    let (request_id, hello) = await_connect(shared, conn, ws, meter)?;
    let admitted = match admit::admit(shared, conn, &hello, &nonce, peer) {
        Ok(admitted) => admitted,
        Err(failure) => {
            let kind = if failure.code == ErrorCode::Unauthorized { ErrorType::Auth } else { ErrorType::Protocol };
            return Err(refuse(shared, conn, ws, Some(&request_id), &failure, kind));
        }
    };
    let role = hello.role;
    let (scopes, protocol) = (hello.scopes.clone(), hello.protocol);
    // Registered before hello-ok goes out: a client that has its hello-ok
    // can be invoked and listed at once.
    let joined = match &admitted.node {
        None => shared.hub.join_operator(conn).map(|()| None).map_err(|_| JoinError::Draining),
        Some((node_id, identity)) => {
            let remote_ip = conn.client_ip().to_string();
            let info = NodeInfo::new(node_id.clone(), identity.clone(), hello, &remote_ip, unix_ms());
            if info.json.len() > shared.config.max_message_bytes / 2 {
                let failure =
                    Failure::new(ErrorCode::TooLarge, "the declared commands do not fit this gateway's maxPayload");
                return Err(refuse(shared, conn, ws, Some(&request_id), &failure, ErrorType::Protocol));
            }
            shared.hub.join_node(conn, Arc::new(info))
        }
    };
    let replaced = match joined {
        Ok(replaced) => replaced,
        Err(JoinError::Taken) => {
            let failure = Failure::invalid("node id in use by a node with another identity");
            return Err(refuse(shared, conn, ws, Some(&request_id), &failure, ErrorType::Auth));
        }
        Err(JoinError::Draining) => {
            let failure = Failure::new(ErrorCode::Unavailable, "gateway shutting down");
            shared.respond_error(conn, Some(&request_id), &failure);
            return Err(close_for_shutdown(shared, conn, ws));
        }
    };
    let node_id = admitted.node.map(|(id, _)| id);
    who.role = Some(role);
    who.node_id = node_id.clone();
    who.authenticated = true;
    if let Some(ip) = conn.counted() {
        shared.preauth.leave(ip);
    }
    if let Some(device) = &admitted.device_id {
        conn.set_device(device);
    }
    // Answered before anything else can happen to this connection: the
    // displaced node's invokes are settled on every path.
    if let (Some(replaced), Some(id)) = (replaced, &node_id) {
        displace(shared, replaced, id);
    }
    let auth = Auth {
        role: role.as_str(),
        scopes: if role == Role::Operator { &scopes } else { &[] },
        device_token: admitted.device_token.as_deref(),
        issued_at_ms: admitted.device_token.as_ref().map(|_| unix_ms()),
    };
    shared.respond_ok(conn, &request_id, &hello_ok(shared, conn, protocol, auth));
    if let Some(end) = greeted(shared, conn, ws) {
        return Err(end);
    }
    if let Some(id) = &node_id {
        shared.presence(id, "connected");
    }
    Ok((role, node_id))
}

/// Waits for the `connect` request and parses it; anything else first is
/// refused with an error and a close.
#[inline(never)]
fn await_connect(
    shared: &Arc<Shared>,
    conn: &Arc<Conn>,
    ws: &mut Ws,
    meter: &mut Meter,
) -> Result<(String, Connect), End> {
    let (text, _) = next_text(shared, conn, ws, meter, None)?;
    let request = match frame::parse_request(&text) {
        Ok(request) => request,
        Err(bad) => {
            shared.metrics.message(Direction::In, MsgType::Invalid);
            return Err(refuse(shared, conn, ws, bad.id, &bad.failure, ErrorType::Protocol));
        }
    };
    shared.metrics.message(Direction::In, MsgType::Req);
    if request.method != "connect" {
        let failure = Failure::invalid("invalid handshake: first request must be connect");
        return Err(refuse(shared, conn, ws, Some(request.id), &failure, ErrorType::Protocol));
    }
    match connect::parse_connect(request.params) {
        Ok(hello) => Ok((request.id.to_string(), hello)),
        Err(failure) => Err(refuse(shared, conn, ws, Some(request.id), &failure, ErrorType::Protocol)),
    }
}

/// Refuses `connect`: the error response, then close 1008 with the message
/// as its reason (1002 "protocol mismatch" for a mismatch, as OpenClaw).
fn refuse(shared: &Shared, conn: &Arc<Conn>, ws: &mut Ws, id: Option<&str>, failure: &Failure, kind: ErrorType) -> End {
    shared.metrics.error(kind);
    shared.respond_error(conn, id, failure);
    let close = if failure.code == ErrorCode::ProtocolMismatch { code::PROTOCOL } else { code::POLICY };
    shared.close(conn, close, &failure.message);
    let end = End::new(Level::Warn, "connect refused").code(close).detail(failure);
    await_close_reply(ws, end)
}

/// The `hello-ok` payload (OPENCLAW.md §4: what real clients read).
#[inline(never)]
fn hello_ok(shared: &Shared, conn: &Conn, protocol: u32, auth: Auth<'_>) -> String {
    let config = &shared.config;
    payload::encode(&HelloOk {
        kind: "hello-ok",
        protocol,
        server: Server { version: env!("CARGO_PKG_VERSION"), conn_id: &conn.id.to_string() },
        features: Features { methods: &METHODS, events: EVENTS },
        snapshot: Snapshot {
            presence: [],
            health: Empty {},
            state_version: StateVersion { presence: 0, health: 0 },
            uptime_ms: millis(shared.started.elapsed()),
        },
        auth,
        policy: Policy {
            max_payload: config.max_message_bytes,
            max_buffered_bytes: shared.queue_limit_bytes,
            tick_interval_ms: millis(config.tick_interval),
            ping_interval_ms: millis(config.ping_period),
        },
    })
}

/// Closes the node connection a new one displaced, failing its invokes.
#[inline(never)]
fn displace(shared: &Shared, replaced: Replaced, node_id: &str) {
    let Replaced { old, failed } = replaced;
    for pending in failed {
        shared.answer(pending, Answer::Gateway(ErrorCode::NodeDisconnected, "node replaced by a new connection"));
    }
    info!(target: "goclaw::conn", conn_id:% = old.id, node_id = node_id; "node replaced by a newer connection");
    shared.close_from_elsewhere(&old, code::REPLACED, "replaced");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_list_every_method_once() {
        for method in OPERATOR_METHODS.iter().chain(NODE_METHODS) {
            assert!(METHODS.contains(method), "{method}");
        }
        assert_eq!(METHODS.len(), 1 + OPERATOR_METHODS.len() + NODE_METHODS.len());
    }
}
