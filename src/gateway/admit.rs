//! Who a client is: the shared token, and whether a node may join. Decides
//! before anything is registered; every refusal is a [`Failure`] the
//! handshake answers and closes with.

use crate::gateway::node::NodeIdentity;
use crate::gateway::peer::Conn;
use crate::gateway::state::Shared;
use crate::wire::connect::Connect;
use crate::wire::frame::{ErrorCode, Failure, Role};

/// What the HTTP upgrade said about the client.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// It came through a proxy (`Forwarded`, `X-Forwarded-For` or
    /// `X-Real-IP`): never local, whatever its address.
    pub forwarded: bool,
}

/// A client the gateway lets in.
#[derive(Debug, Default)]
pub struct Admitted {
    /// For a node: its id and how it proved it.
    pub node: Option<(String, NodeIdentity)>,
    /// The device it proved, if any.
    pub device_id: Option<String>,
    /// A fresh device token for `hello-ok.auth.deviceToken`, if issued.
    pub device_token: Option<String>,
}

/// Decides whether `hello` may join.
///
/// # Errors
/// `UNAUTHORIZED` for a missing or wrong token; `NOT_PAIRED` /
/// `DEVICE_IDENTITY_REQUIRED` for a node without a device identity when
/// token nodes are not allowed, and for an operator from elsewhere than
/// loopback.
pub fn admit(shared: &Shared, conn: &Conn, hello: &Connect, _nonce: &str, peer: Peer) -> Result<Admitted, Failure> {
    let token_ok = match &shared.config.token {
        Some(token) => hello.token.as_deref().is_some_and(|given| token.matches(given)),
        None => true,
    };
    if !token_ok {
        let why = if hello.token.is_some() { "gateway token mismatch" } else { "gateway token missing" };
        return Err(Failure::new(ErrorCode::Unauthorized, format!("unauthorized: {why}")));
    }
    // Loopback, and no proxy in between (SPEC §4.4).
    let local = conn.addr.ip().to_canonical().is_loopback() && !peer.forwarded;
    match hello.role {
        Role::Operator if local => Ok(Admitted::default()),
        Role::Operator => Err(Failure::new(ErrorCode::DeviceIdentityRequired, "device identity required")),
        Role::Node if shared.config.allow_token_nodes => {
            Ok(Admitted { node: Some((hello.client.id.clone(), NodeIdentity::Token)), ..Admitted::default() })
        }
        Role::Node => Err(Failure::new(ErrorCode::DeviceIdentityRequired, "device identity required")),
    }
}
