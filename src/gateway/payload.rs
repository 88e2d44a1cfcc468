//! The payloads the gateway makes itself, as typed structs encoded with
//! serde: `hello-ok`, the challenge, `health`, presence, `tick`,
//! `shutdown` and a `node.list` entry. What goes on the wire is exactly
//! these fields, in this order. Frames that carry a client's bytes onward
//! (responses, `node.invoke.request`) are written by `wire::frame` instead.

use serde::Serialize;

/// The `hello-ok` payload (SPEC §4.1).
#[derive(Debug, Serialize)]
pub struct HelloOk<'a> {
    /// Always `hello-ok`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The protocol version agreed on.
    pub protocol: u32,
    /// Who answered.
    pub server: Server<'a>,
    /// What this gateway speaks.
    pub features: Features,
    /// The state a client starts from (OpenClaw's schema requires it).
    pub snapshot: Snapshot,
    /// The role and scopes granted, and a device token if one was issued.
    pub auth: Auth<'a>,
    /// The limits a client must keep.
    pub policy: Policy,
}

/// `hello-ok.snapshot`: goclaw keeps no presence or health history, so
/// this is the empty state with the uptime.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// Always empty.
    pub presence: [(); 0],
    /// Always empty.
    pub health: Empty,
    /// Both versions 0.
    pub state_version: StateVersion,
    /// Time since the gateway started.
    pub uptime_ms: u64,
}

/// `{}`.
#[derive(Debug, Serialize)]
pub struct Empty {}

/// `snapshot.stateVersion`.
#[derive(Debug, Serialize)]
pub struct StateVersion {
    /// Always 0.
    pub presence: u64,
    /// Always 0.
    pub health: u64,
}

/// `hello-ok.auth`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Auth<'a> {
    /// `node` or `operator`.
    pub role: &'static str,
    /// The scopes granted (an operator's, as asked; a node's, none).
    pub scopes: &'a [String],
    /// A fresh device token, when one was issued (clients store it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_token: Option<&'a str>,
    /// When it was issued, Unix ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issued_at_ms: Option<u64>,
}

/// `hello-ok.server`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Server<'a> {
    /// The crate version.
    pub version: &'static str,
    /// This connection's id.
    pub conn_id: &'a str,
}

/// `hello-ok.features`.
#[derive(Debug, Serialize)]
pub struct Features {
    /// Methods a client may call.
    pub methods: &'static [&'static str],
    /// Events the gateway sends.
    pub events: &'static [&'static str],
}

/// `hello-ok.policy`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    /// Largest message a client may send, in bytes; no frame the gateway
    /// sends is larger either.
    pub max_payload: usize,
    /// The bound of the gateway's output queue for this connection.
    pub max_buffered_bytes: usize,
    /// Period of the `tick` event.
    pub tick_interval_ms: u64,
    /// Period of the server's pings.
    pub ping_interval_ms: u64,
}

/// The `connect.challenge` payload.
#[derive(Debug, Serialize)]
pub struct Challenge<'a> {
    /// A fresh UUID.
    pub nonce: &'a str,
    /// Unix ms.
    pub ts: u64,
}

/// The `health` answer.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// Always true.
    pub ok: bool,
    /// Unix ms.
    pub ts: u64,
    /// Always `ok`.
    pub status: &'static str,
    /// Time since start.
    pub uptime_ms: u64,
    /// Connected clients.
    pub connections: usize,
    /// Connected nodes.
    pub nodes: usize,
}

/// The `presence` event payload.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Presence<'a> {
    /// The node.
    pub node_id: &'a str,
    /// `connected` or `disconnected`.
    pub state: &'static str,
    /// Unix ms.
    pub ts: u64,
}

/// The `tick` event payload.
#[derive(Debug, Serialize)]
pub struct Tick {
    /// Unix ms.
    pub ts: u64,
}

/// The `shutdown` event payload.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Shutdown {
    /// Always `shutdown`.
    pub reason: &'static str,
    /// When the gateway expects to be back.
    pub restart_expected_ms: u64,
}

/// One `node.list` entry: the fields the real CLIs render (OPENCLAW.md §8).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeItem<'a> {
    /// The node id (its device id, or `client.id` for a token node).
    pub node_id: &'a str,
    /// Its human name.
    pub display_name: &'a str,
    /// Its platform.
    pub platform: &'a str,
    /// Its version.
    pub version: &'a str,
    /// `client.id` as it connected (`node-host` for real node hosts).
    pub client_id: &'a str,
    /// `client.mode`.
    pub client_mode: &'a str,
    /// `client.deviceFamily`, when given.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub device_family: &'a str,
    /// `client.modelIdentifier`, when given.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub model_identifier: &'a str,
    /// `client.instanceId`, when given: what `goclaw node --id` names.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub instance_id: &'a str,
    /// The address it connected from.
    pub remote_ip: &'a str,
    /// The capabilities it declared, sorted.
    pub caps: &'a [String],
    /// The commands it declared, sorted.
    pub commands: &'a [String],
    /// Whether a person approved its device (false for token nodes).
    pub paired: bool,
    /// Always true: `node.list` lists connected nodes.
    pub connected: bool,
    /// When it connected, Unix ms.
    pub connected_at_ms: u64,
    /// `approved` for a paired device (2026.9.6 CLIs render it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_state: Option<&'static str>,
}

/// `{nodeId}`: the answer to a node's inventory updates.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRef<'a> {
    /// The node.
    pub node_id: &'a str,
}

/// The `node.event` forwarded to operators.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeEvent<'a> {
    /// The node that sent it.
    pub node_id: &'a str,
    /// Its name.
    pub event: &'a str,
    /// Its payload as a JSON string, or null.
    #[serde(rename = "payloadJSON")]
    pub payload_json: Option<&'a str>,
}

/// Encodes a payload. These structs hold only strings, numbers and lists,
/// which serde_json always encodes, so the error branch is unreachable.
pub fn encode<T: Serialize>(payload: &T) -> String {
    serde_json::to_string(payload).unwrap_or_default()
}
