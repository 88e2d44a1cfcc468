//! The operator's pairing methods (SPEC §4.2, §4.4): `node.pair.*` and
//! `device.pair.*` to list, approve, reject and remove devices, with the
//! rows and answers the real CLIs read (OPENCLAW.md §5, §8), the
//! `*.pair.requested` / `*.pair.resolved` events, and closing a removed
//! device's connections (4001). Store writes run here, on the approving
//! operator's thread.

use log::info;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::gateway::pairing::{PairedDevice, PendingRequest, StoreError};
use crate::gateway::payload;
use crate::gateway::state::Shared;
use crate::gateway::transport::code;
use crate::util::unix_ms;
use crate::wire::frame::{self, ErrorCode, Failure, Role};
use crate::wire::params;

/// Runs one pairing method for an operator; returns its payload.
///
/// # Errors
/// `INVALID_REQUEST` for bad params or an unknown request or device;
/// `UNAVAILABLE` when the store cannot write.
pub fn call(shared: &Shared, method: &str, raw: Option<&RawValue>) -> Result<String, Failure> {
    let now = unix_ms();
    let store = &shared.pairing;
    match method {
        "node.pair.list" | "device.pair.list" => Ok(list(shared, method == "node.pair.list", now)),
        "node.pair.approve" | "device.pair.approve" => {
            let request_id = params::parse_id(static_name(method), "requestId", raw)?;
            let approved = store.approve(&request_id, now).map_err(refused)?;
            update_gauges(shared);
            info!(target: "goclaw::audit", request_id = &*request_id, device_id = &*approved.device.device.device_id,
                role = approved.request.role.as_str(); "device approved");
            resolved(shared, &approved.request, "approved");
            Ok(if method == "node.pair.approve" {
                payload::encode(&NodeApproved { request_id: &request_id, node: node_row(&approved.device, shared) })
            } else {
                payload::encode(&DeviceApproved { request_id: &request_id, device: device_row(&approved.device) })
            })
        }
        "node.pair.reject" | "device.pair.reject" => {
            let request_id = params::parse_id(static_name(method), "requestId", raw)?;
            let rejected = store.reject(&request_id, now).map_err(refused)?;
            update_gauges(shared);
            info!(target: "goclaw::audit", request_id = &*request_id, device_id = &*rejected.device.device_id;
                "pairing request rejected");
            resolved(shared, &rejected, "rejected");
            Ok(payload::encode(&Rejected { request_id: &request_id, decision: "rejected" }))
        }
        "node.pair.remove" => {
            let node_id = params::parse_id("node.pair.remove", "nodeId", raw)?;
            store.remove_role(&node_id, Role::Node, now).map_err(refused)?;
            removed(shared, &node_id, Some(Role::Node));
            Ok("{}".to_string())
        }
        "device.pair.remove" => {
            let device_id = params::parse_id("device.pair.remove", "deviceId", raw)?;
            store.remove_device(&device_id, now).map_err(refused)?;
            removed(shared, &device_id, None);
            Ok("{}".to_string())
        }
        _ => Err(Failure::new(ErrorCode::UnknownMethod, "unknown method")),
    }
}

/// The pairing gauges, after a change.
pub fn update_gauges(shared: &Shared) {
    let counts = shared.pairing.snapshot().counts(unix_ms());
    shared.metrics.set_pairing(counts.pending, counts.paired);
}

/// Tells operators a new request waits: `device.pair.requested`, and
/// `node.pair.requested` for a node.
pub fn announce_request(shared: &Shared, request: &PendingRequest) {
    let device = payload::encode(&device_pending_row(request));
    shared.broadcast_to_operators(&frame::event_prefix("device.pair.requested", &device));
    if request.role == Role::Node {
        let node = payload::encode(&node_pending_row(request));
        shared.broadcast_to_operators(&frame::event_prefix("node.pair.requested", &node));
    }
}

/// Tells operators (with `seq`) and the device's live connections (without)
/// how a request was decided.
fn resolved(shared: &Shared, request: &PendingRequest, decision: &'static str) {
    let device_id = &*request.device.device_id;
    let ts = unix_ms();
    let device = payload::encode(&Resolved { request_id: &request.request_id, device_id, node_id: None, decision, ts });
    shared.broadcast_to_operators(&frame::event_prefix("device.pair.resolved", &device));
    let node = (request.role == Role::Node).then(|| {
        payload::encode(&Resolved {
            request_id: &request.request_id,
            device_id,
            node_id: Some(device_id),
            decision,
            ts,
        })
    });
    if let Some(node) = &node {
        shared.broadcast_to_operators(&frame::event_prefix("node.pair.resolved", node));
    }
    for conn in shared.hub.device_conns(device_id) {
        shared.send_to(&conn, "device.pair.resolved", &device);
        if let Some(node) = &node {
            shared.send_to(&conn, "node.pair.resolved", node);
        }
    }
}

/// Closes a removed device's live connections (all, or those of `role`).
fn removed(shared: &Shared, device_id: &str, role: Option<Role>) {
    update_gauges(shared);
    info!(target: "goclaw::audit", device_id = device_id, role = role.map(Role::as_str); "device removed");
    for conn in shared.hub.device_conns(device_id) {
        if role.is_none() || shared.hub.is_node(&conn) == (role == Some(Role::Node)) {
            shared.close_from_elsewhere(&conn, code::DEVICE_REMOVED, "device removed");
        }
    }
}

fn list(shared: &Shared, nodes: bool, now: u64) -> String {
    let snapshot = shared.pairing.snapshot();
    if nodes {
        let pending: Vec<_> = snapshot.pending(now).filter(|p| p.role == Role::Node).map(node_pending_row).collect();
        let paired: Vec<_> =
            snapshot.paired().filter(|d| d.roles.contains(&Role::Node)).map(|d| node_row(d, shared)).collect();
        payload::encode(&Lists { pending, paired })
    } else {
        let pending: Vec<_> = snapshot.pending(now).map(device_pending_row).collect();
        let paired: Vec<_> = snapshot.paired().map(device_row).collect();
        payload::encode(&Lists { pending, paired })
    }
}

/// The method name as a `'static` for error messages.
fn static_name(method: &str) -> &'static str {
    ["node.pair.approve", "device.pair.approve", "node.pair.reject", "device.pair.reject"]
        .into_iter()
        .find(|m| *m == method)
        .unwrap_or("pairing")
}

/// A store refusal as the operator's answer.
fn refused(error: StoreError) -> Failure {
    match error {
        StoreError::UnknownRequest => Failure::invalid("unknown requestId"),
        StoreError::UnknownDevice => Failure::invalid("unknown deviceId"),
        StoreError::Invalid { .. } => Failure::invalid("the request cannot be approved as it is"),
        StoreError::TooManyDevices { .. } => {
            Failure::new(ErrorCode::Unavailable, "too many paired devices; remove one first")
        }
        other => {
            log::warn!(error:% = other; "the pairing store refused a change");
            Failure::new(ErrorCode::Unavailable, "the pairing store is unavailable")
        }
    }
}

fn roles(device: &PairedDevice) -> Vec<&'static str> {
    device.roles.iter().map(|r| r.as_str()).collect()
}

fn device_row(device: &PairedDevice) -> DeviceRow<'_> {
    let d = &device.device;
    DeviceRow {
        device_id: &d.device_id,
        public_key: &d.public_key,
        display_name: &d.display_name,
        platform: &d.platform,
        client_id: &d.client_id,
        client_mode: &d.client_mode,
        role: device.roles.first().map_or("", |r| r.as_str()),
        roles: roles(device),
        scopes: &device.scopes,
        created_at_ms: device.created_at_ms,
        approved_at_ms: device.approved_at_ms,
        tokens: device
            .tokens
            .iter()
            .map(|t| TokenRow { role: t.role.as_str(), created_at_ms: t.created_at_ms })
            .collect(),
    }
}

fn node_row<'a>(device: &'a PairedDevice, shared: &Shared) -> NodeRow<'a> {
    let d = &device.device;
    NodeRow {
        node_id: &d.device_id,
        display_name: &d.display_name,
        platform: &d.platform,
        version: &d.version,
        client_id: &d.client_id,
        client_mode: &d.client_mode,
        created_at_ms: device.created_at_ms,
        approved_at_ms: device.approved_at_ms,
        connected: shared.hub.node(&d.device_id).is_some(),
    }
}

fn device_pending_row(p: &PendingRequest) -> DevicePending<'_> {
    let d = &p.device;
    DevicePending {
        request_id: &p.request_id,
        device_id: &d.device_id,
        public_key: &d.public_key,
        display_name: &d.display_name,
        platform: &d.platform,
        client_id: &d.client_id,
        client_mode: &d.client_mode,
        role: p.role.as_str(),
        roles: [p.role.as_str()],
        scopes: &p.scopes,
        silent: false,
        is_repair: false,
        remote_ip: p.source_ip.to_canonical().to_string(),
        ts: p.ts_ms,
    }
}

fn node_pending_row(p: &PendingRequest) -> NodePending<'_> {
    let d = &p.device;
    NodePending {
        request_id: &p.request_id,
        node_id: &d.device_id,
        display_name: &d.display_name,
        platform: &d.platform,
        version: &d.version,
        client_id: &d.client_id,
        client_mode: &d.client_mode,
        caps: &p.caps,
        commands: &p.commands,
        silent: false,
        remote_ip: p.source_ip.to_canonical().to_string(),
        ts: p.ts_ms,
    }
}

#[derive(Serialize)]
struct Lists<P: Serialize, Q: Serialize> {
    pending: Vec<P>,
    paired: Vec<Q>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DeviceRow<'a> {
    device_id: &'a str,
    public_key: &'a str,
    display_name: &'a str,
    platform: &'a str,
    client_id: &'a str,
    client_mode: &'a str,
    role: &'static str,
    roles: Vec<&'static str>,
    scopes: &'a [String],
    created_at_ms: u64,
    approved_at_ms: u64,
    tokens: Vec<TokenRow>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TokenRow {
    role: &'static str,
    created_at_ms: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NodeRow<'a> {
    node_id: &'a str,
    display_name: &'a str,
    platform: &'a str,
    version: &'a str,
    client_id: &'a str,
    client_mode: &'a str,
    created_at_ms: u64,
    approved_at_ms: u64,
    connected: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DevicePending<'a> {
    request_id: &'a str,
    device_id: &'a str,
    public_key: &'a str,
    display_name: &'a str,
    platform: &'a str,
    client_id: &'a str,
    client_mode: &'a str,
    role: &'static str,
    roles: [&'static str; 1],
    scopes: &'a [String],
    silent: bool,
    is_repair: bool,
    /// Where it asked from, as 2026.9.6 has it: what an operator weighs.
    remote_ip: String,
    ts: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NodePending<'a> {
    request_id: &'a str,
    node_id: &'a str,
    display_name: &'a str,
    platform: &'a str,
    version: &'a str,
    client_id: &'a str,
    client_mode: &'a str,
    caps: &'a [String],
    commands: &'a [String],
    silent: bool,
    remote_ip: String,
    ts: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NodeApproved<'a> {
    request_id: &'a str,
    node: NodeRow<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DeviceApproved<'a> {
    request_id: &'a str,
    device: DeviceRow<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Rejected<'a> {
    request_id: &'a str,
    decision: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Resolved<'a> {
    request_id: &'a str,
    device_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    node_id: Option<&'a str>,
    decision: &'static str,
    ts: u64,
}
