//! A connected node as operators see it: its id, how it proved who it is,
//! its declared commands, and its `node.list` entry, encoded once at
//! connect with the fields the real CLIs render (OPENCLAW.md §8), and the
//! pages of `node.list`, each within `maxPayload`.

use std::sync::Arc;

use crate::gateway::payload::{self, NodeItem};
use crate::util::unix_ms;
use crate::wire::connect::Connect;

/// How a node proved its identity; a newcomer replaces a connected node
/// only if it proves the same one (SPEC §4.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeIdentity {
    /// A verified Ed25519 device; the node id is the device id.
    Device,
    /// The shared token alone (`--allow-token-nodes`); the node id is
    /// `client.id`.
    Token,
}

/// A connected node.
#[derive(Debug)]
pub struct NodeInfo {
    /// The node id: its device id, or `client.id` for a token node.
    pub id: String,
    /// How it proved it.
    pub identity: NodeIdentity,
    /// Declared commands, sorted.
    pub commands: Vec<String>,
    /// Its `node.list` entry, encoded once at connect.
    pub json: String,
}

impl NodeInfo {
    /// Describes a node that connected at `connected_at_ms` (Unix ms).
    pub fn new(id: String, identity: NodeIdentity, hello: Connect, remote_ip: &str, connected_at_ms: u64) -> NodeInfo {
        let client = &hello.client;
        let paired = identity == NodeIdentity::Device;
        let json = payload::encode(&NodeItem {
            node_id: &id,
            display_name: &client.display_name,
            platform: &client.platform,
            version: &client.version,
            client_id: &client.id,
            client_mode: &client.mode,
            device_family: &client.device_family,
            model_identifier: &client.model_identifier,
            instance_id: &client.instance_id,
            remote_ip,
            caps: &hello.caps,
            commands: &hello.commands,
            paired,
            connected: true,
            connected_at_ms,
            approval_state: paired.then_some("approved"),
        });
        NodeInfo { id, identity, commands: hello.commands, json }
    }

    /// `node.describe`'s answer: the entry plus `ts`.
    pub fn describe(&self) -> String {
        // The entry is a JSON object: insert before its closing brace.
        let body = self.json.strip_suffix('}').unwrap_or(&self.json);
        format!(r#"{body},"ts":{}}}"#, unix_ms())
    }
}

/// Room left in a `node.list` answer for everything but the entries: the
/// response envelope, the request id, `ts` and `nextCursor`.
const PAGE_OVERHEAD_BYTES: usize = 512;

/// One page of `node.list`: `nodes` (sorted by id) after `cursor`, at most
/// `limit` of them and as many as fit in `max_bytes` in all. Returns the
/// payload; `nextCursor` is set when more remain.
pub fn page(nodes: &mut [Arc<NodeInfo>], cursor: Option<&str>, limit: usize, max_bytes: usize) -> String {
    nodes.sort_unstable_by(|a, b| a.id.cmp(&b.id));
    let start = cursor.map_or(0, |after| nodes.partition_point(|n| n.id.as_str() <= after));
    let budget = max_bytes.saturating_sub(PAGE_OVERHEAD_BYTES);
    let mut json = format!(r#"{{"ts":{},"nodes":["#, unix_ms());
    let mut used = 0;
    let mut taken = 0;
    for node in &nodes[start..] {
        if taken == limit || used + node.json.len() + 1 > budget {
            break;
        }
        if taken > 0 {
            json.push(',');
        }
        json.push_str(&node.json);
        used += node.json.len() + 1;
        taken += 1;
    }
    json.push(']');
    if start + taken < nodes.len() && taken > 0 {
        let last = &nodes[start + taken - 1].id;
        json.push_str(r#","nextCursor":"#);
        json.push_str(&payload::encode(&last));
    }
    json.push('}');
    json
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::connect::parse_connect;
    use serde_json::Value;
    use serde_json::value::RawValue;

    fn node(id: &str, commands: usize) -> Arc<NodeInfo> {
        let commands: Vec<String> = (0..commands).map(|i| format!("\"command.{i:03}\"")).collect();
        let params = format!(
            r#"{{"minProtocol":3,"maxProtocol":3,"client":{{"id":"{id}","mode":"node"}},"commands":[{}]}}"#,
            commands.join(",")
        );
        let raw = RawValue::from_string(params).unwrap();
        let hello = parse_connect(Some(&raw)).unwrap();
        Arc::new(NodeInfo::new(id.to_string(), NodeIdentity::Token, hello, "127.0.0.1", 1))
    }

    #[test]
    fn entries_carry_what_the_real_clis_render() {
        let entry: Value = serde_json::from_str(&node("pi", 2).json).unwrap();
        for field in ["nodeId", "displayName", "clientId", "clientMode", "caps", "commands", "connectedAtMs"] {
            assert!(entry.get(field).is_some(), "{field}: {entry}");
        }
        assert_eq!((entry["connected"].clone(), entry["paired"].clone()), (Value::Bool(true), Value::Bool(false)));
        let described: Value = serde_json::from_str(&node("pi", 2).describe()).unwrap();
        assert!(described["ts"].is_u64() && described["nodeId"] == "pi");
    }

    #[test]
    fn pages_stay_within_the_budget_and_follow_the_cursor() {
        let mut nodes: Vec<Arc<NodeInfo>> = (0..50).map(|i| node(&format!("n{i:02}"), 40)).collect();
        let max = 16 * 1024;
        let mut cursor: Option<String> = None;
        let mut seen = Vec::new();
        loop {
            let page = page(&mut nodes, cursor.as_deref(), 1000, max);
            assert!(page.len() + PAGE_OVERHEAD_BYTES / 2 <= max, "{} bytes", page.len());
            let page: Value = serde_json::from_str(&page).unwrap();
            let ids = page["nodes"].as_array().unwrap().iter().map(|n| n["nodeId"].as_str().unwrap().to_string());
            seen.extend(ids);
            match page["nextCursor"].as_str() {
                Some(next) => cursor = Some(next.to_string()),
                None => break,
            }
        }
        let want: Vec<String> = (0..50).map(|i| format!("n{i:02}")).collect();
        assert_eq!(seen, want);
        let first: Value = serde_json::from_str(&page(&mut nodes, None, 3, max)).unwrap();
        assert_eq!(first["nodes"].as_array().unwrap().len(), 3);
        assert_eq!(first["nextCursor"], "n02");
    }
}
