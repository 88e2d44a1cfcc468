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
    /// The limits a client must keep.
    pub policy: Policy,
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
    /// Largest message a client may send, in bytes.
    pub max_payload: usize,
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

/// One `node.list` entry.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeItem<'a> {
    /// The node id.
    pub node_id: &'a str,
    /// Its human name.
    pub display_name: &'a str,
    /// Its platform.
    pub platform: &'a str,
    /// Its version.
    pub version: &'a str,
    /// The commands it declared, sorted.
    pub commands: &'a [String],
    /// When it connected, Unix ms.
    pub connected_at_ms: u64,
}

/// Encodes a payload. These structs hold only strings, numbers and lists,
/// which serde_json always encodes, so the error branch is unreachable.
pub fn encode<T: Serialize>(payload: &T) -> String {
    serde_json::to_string(payload).unwrap_or_default()
}
