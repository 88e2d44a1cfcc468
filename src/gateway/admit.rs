//! Who a client is (SPEC §4.4): its device (verified as OpenClaw does), its
//! credentials (the shared token or its device token), and whether that
//! device is approved for the role it asks for: approved, approved silently
//! because it is local, or refused with a pairing request for an operator to
//! approve. Decides before anything is registered; every refusal is a
//! [`Failure`] the handshake answers and closes with. Store writes made here
//! (a silent approval, a new request, a fresh device token) run on the
//! connecting client's own thread, never while the hub lock is held.

use log::{info, warn};

use crate::gateway::manage;
use crate::gateway::node::NodeIdentity;
use crate::gateway::pairing::{DeviceInfo, NewRequest, StoreError};
use crate::gateway::peer::Conn;
use crate::gateway::state::Shared;
use crate::util::unix_ms;
use crate::wire::connect::{Connect, DeviceProof};
use crate::wire::device::{self, encode_public_key};
use crate::wire::frame::{Detail, ErrorCode, Failure, Role};

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

/// Decides whether `hello` may join; `nonce` is this connection's challenge.
///
/// # Errors
/// `INVALID_REQUEST` with `DEVICE_AUTH_*` for a device that fails its
/// checks; `UNAUTHORIZED` for a missing or wrong token; `NOT_PAIRED` with
/// `DEVICE_IDENTITY_REQUIRED` for a node without a device (unless token
/// nodes are allowed) and an operator without one from elsewhere than
/// loopback; `NOT_PAIRED` with `PAIRING_REQUIRED` and a `requestId` for a
/// device not approved for its role yet.
pub fn admit(shared: &Shared, conn: &Conn, hello: &Connect, nonce: &str, peer: Peer) -> Result<Admitted, Failure> {
    let now = unix_ms();
    let device = match &hello.device {
        Some(proof) => Some((proof, device::verify(hello, proof, nonce, now)?)),
        None => None,
    };
    let shared_token = match &shared.config.token {
        Some(token) => hello.token.as_deref().is_some_and(|given| token.matches(given)),
        None => true,
    };
    // A device token may come in either field (2026.5.7 sends both,
    // 2026.9.6 only `deviceToken`; OPENCLAW.md §4).
    let device_token = device.as_ref().is_some_and(|(proof, _)| {
        let snapshot = shared.pairing.snapshot();
        [&hello.device_token, &hello.token]
            .into_iter()
            .flatten()
            .any(|presented| snapshot.token_matches(&proof.id, hello.role, presented))
    });
    if !shared_token && !device_token {
        let why = if hello.token.is_some() || hello.device_token.is_some() { "mismatch" } else { "missing" };
        return Err(Failure::new(ErrorCode::Unauthorized, format!("unauthorized: gateway token {why}")));
    }
    // Loopback, and no proxy in between (SPEC §4.4).
    let local = conn.addr.ip().to_canonical().is_loopback() && !peer.forwarded;
    let Some((proof, raw_key)) = device else {
        return match hello.role {
            Role::Operator if local && shared_token => Ok(Admitted::default()),
            Role::Node if shared.config.allow_token_nodes => {
                Ok(Admitted { node: Some((hello.client.id.clone(), NodeIdentity::Token)), ..Admitted::default() })
            }
            _ => Err(Failure::new(ErrorCode::DeviceIdentityRequired, "device identity required")),
        };
    };
    let auto_approve = local && shared_token && shared.config.local_auto_approve;
    pair(shared, conn, hello, proof, &raw_key, auto_approve, now)?;
    // A device that proved itself with the shared token gets a token of its
    // own, so it can come back without the shared one; one that presented
    // its device token keeps it (the store holds only hashes: it cannot be
    // sent again, and not rotating it spares a write per connect).
    let device_token = if device_token {
        None
    } else {
        match shared.pairing.issue_token(&proof.id, hello.role, now) {
            Ok(token) => Some(token.into_secret()),
            Err(e) => {
                warn!(conn_id:% = conn.id, error:% = e; "cannot issue a device token; the device keeps using the shared token");
                None
            }
        }
    };
    let node = (hello.role == Role::Node).then(|| (proof.id.clone(), NodeIdentity::Device));
    Ok(Admitted { node, device_id: Some(proof.id.clone()), device_token })
}

/// Whether the device is approved for the role it asks for; approves it
/// silently if `auto_approve` and it is new; else records (or finds) its
/// pending request and refuses with it.
fn pair(
    shared: &Shared,
    conn: &Conn,
    hello: &Connect,
    proof: &DeviceProof,
    raw_key: &[u8; 32],
    auto_approve: bool,
    now: u64,
) -> Result<(), Failure> {
    let snapshot = shared.pairing.snapshot();
    if snapshot.approved(&proof.id, hello.role).is_some() {
        return Ok(());
    }
    // A device approved for another role asks for this one: a role upgrade,
    // never silent (SPEC §4.4).
    let known = snapshot.device(&proof.id).is_some();
    let info = device_info(hello, proof, raw_key);
    if auto_approve && !known {
        shared.pairing.approve_local(info, hello.role, hello.scopes.clone(), now).map_err(store_failure)?;
        manage::update_gauges(shared);
        info!(conn_id:% = conn.id, device_id = &*proof.id, role = hello.role.as_str(); "device approved (local)");
        return Ok(());
    }
    let new = NewRequest {
        device: info,
        role: hello.role,
        scopes: hello.scopes.clone(),
        caps: hello.caps.clone(),
        commands: hello.commands.clone(),
        source_ip: conn.client_ip(),
    };
    let requested = shared.pairing.request(new, now).map_err(store_failure)?;
    if requested.created {
        manage::update_gauges(shared);
        manage::announce_request(shared, &requested.request);
        info!(conn_id:% = conn.id, device_id = &*proof.id, role = hello.role.as_str(),
            request_id = &*requested.request.request_id; "pairing request recorded");
    }
    let request_id = requested.request.request_id;
    let reason = if known { "role-upgrade" } else { "not-paired" };
    Err(Failure::new(
        ErrorCode::PairingRequired,
        format!("pairing required: device is not approved yet (requestId: {request_id})"),
    )
    .with(Detail::Pairing {
        reason,
        request_id,
        device_id: proof.id.clone(),
        requested_role: hello.role.as_str(),
        pause_reconnect: false,
        recommended_next_step: "wait_then_retry",
    }))
}

fn device_info(hello: &Connect, proof: &DeviceProof, raw_key: &[u8; 32]) -> DeviceInfo {
    let client = &hello.client;
    DeviceInfo {
        device_id: proof.id.clone(),
        public_key: encode_public_key(raw_key),
        display_name: client.display_name.clone(),
        platform: client.platform.clone(),
        version: client.version.clone(),
        client_id: client.id.clone(),
        client_mode: client.mode.clone(),
        device_family: client.device_family.clone(),
    }
}

/// The answer to a store that refused a change during `connect`.
fn store_failure(error: StoreError) -> Failure {
    match error {
        StoreError::TooManyPending { .. } => {
            Failure::new(ErrorCode::RateLimited, "too many pending pairing requests; try again later")
                .retry_after(60_000)
        }
        other => {
            warn!(error:% = other; "the pairing store refused a change");
            Failure::new(ErrorCode::Unavailable, "the pairing store is unavailable")
        }
    }
}
