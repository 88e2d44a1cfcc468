//! Nodes as an operator sees them: every `node.list` page, the table
//! `goclaw nodes` prints (a 64-hex device id shown by its first 12
//! characters), and how a NODE argument names one node (SPEC §2: the exact
//! node id, else an exact instance id or display name, else a unique
//! node-id prefix).

use std::time::Duration;

use serde_json::{Value, json};

use crate::client::conn::Client;
use crate::client::error::ClientError;

/// Most `node.list` pages followed, so a gateway that keeps sending cursors
/// cannot loop us.
const MAX_PAGES: usize = 1000;
/// Time for an answer to `node.list`.
pub const LIST_TIMEOUT: Duration = Duration::from_secs(10);
/// Characters of a device id shown in tables (as OpenClaw's CLI does).
pub const SHORT_ID_CHARS: usize = 12;

/// Every connected node, following `node.list`'s pages.
///
/// # Errors
/// The gateway's error answer, or a connection problem.
pub fn list_all(client: &mut Client) -> Result<Vec<Value>, ClientError> {
    let mut nodes = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let params = match &cursor {
            Some(cursor) => json!({"cursor": cursor}),
            None => json!({}),
        };
        let page = client.request("node.list", params, LIST_TIMEOUT)?;
        nodes.extend(page["nodes"].as_array().cloned().unwrap_or_default());
        match page["nextCursor"].as_str() {
            Some(next) if cursor.as_deref() != Some(next) => cursor = Some(next.to_string()),
            _ => return Ok(nodes),
        }
    }
    Ok(nodes)
}

/// Whether `id` is a device id (64 lowercase hex characters).
pub fn is_device_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A node id as tables show it: a device id by its first 12 characters,
/// any other id (a token node's `client.id`) whole.
pub fn short_id(id: &str) -> &str {
    if is_device_id(id) { &id[..SHORT_ID_CHARS] } else { id }
}

/// The node `wanted` names among `nodes`: its node id, else the one whose
/// instance id or display name it is, else the one whose node id starts
/// with it. `Ok(None)`: none does (the gateway answers for an unknown id).
///
/// # Errors
/// [`ClientError::Usage`] when two or more nodes match at the first level
/// that matches.
pub fn resolve<'a>(nodes: &'a [Value], wanted: &str) -> Result<Option<&'a str>, ClientError> {
    fn id(node: &Value) -> &str {
        node["nodeId"].as_str().unwrap_or_default()
    }
    let levels: [&dyn Fn(&Value) -> bool; 3] = [
        &|n| id(n) == wanted,
        &|n| n["instanceId"].as_str() == Some(wanted) || n["displayName"].as_str() == Some(wanted),
        &|n| !wanted.is_empty() && id(n).starts_with(wanted),
    ];
    for matches in levels {
        let mut found: Vec<&str> = nodes.iter().filter(|n| matches(n)).map(id).filter(|i| !i.is_empty()).collect();
        found.dedup();
        match found.as_slice() {
            [] => continue,
            [one] => return Ok(Some(one)),
            many => {
                let shown: Vec<&str> = many.iter().take(5).map(|id| short_id(id)).collect();
                return Err(ClientError::Usage(format!(
                    "{wanted:?} matches {} nodes ({}); give more of the node id",
                    many.len(),
                    shown.join(", ")
                )));
            }
        }
    }
    Ok(None)
}

/// The aligned table `goclaw nodes` prints: ID, NAME, INSTANCE (only when
/// some node's instance id is not its name), PLATFORM, VERSION, COMMANDS,
/// CONNECTED.
pub fn node_table(nodes: &[Value], now_ms: u64) -> String {
    let text = |v: &Value| v.as_str().filter(|s| !s.is_empty()).unwrap_or("-").to_string();
    fn instance(node: &Value) -> Option<&str> {
        node["instanceId"].as_str().filter(|i| !i.is_empty() && *i != node["displayName"])
    }
    let with_instance = nodes.iter().any(|n| instance(n).is_some());
    let mut header = vec!["ID", "NAME", "INSTANCE", "PLATFORM", "VERSION", "COMMANDS", "CONNECTED"];
    if !with_instance {
        header.remove(2);
    }
    let mut rows = vec![header.into_iter().map(String::from).collect::<Vec<_>>()];
    for node in nodes {
        let commands: Vec<&str> =
            node["commands"].as_array().map(|c| c.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
        let since = match (node["connectedAtMs"].as_u64(), node["connected"].as_bool()) {
            (_, Some(false)) => "no".to_string(),
            (Some(at), _) => format!("{} ago", human_duration(Duration::from_millis(now_ms.saturating_sub(at)))),
            (None, _) => "-".to_string(),
        };
        let mut row = vec![short_id(node["nodeId"].as_str().unwrap_or("-")).to_string(), text(&node["displayName"])];
        if with_instance {
            row.push(instance(node).unwrap_or("-").to_string());
        }
        row.extend([text(&node["platform"]), text(&node["version"]), commands.join(","), since]);
        rows.push(row);
    }
    let mut table = render(&rows);
    if nodes.is_empty() {
        table.push_str("(no nodes connected)\n");
    }
    table
}

/// Rows as aligned columns, two spaces apart, without trailing spaces.
pub fn render(rows: &[Vec<String>]) -> String {
    let mut widths = vec![0usize; rows.first().map_or(0, Vec::len)];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut table = String::new();
    for row in rows {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        table.push_str(cells.join("  ").trim_end());
        table.push('\n');
    }
    table
}

/// "42s", "7m05s", "3h12m", "2d04h".
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
    const B: &str = "a1b2c3ffffff0718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";

    #[test]
    fn durations_read_like_a_person_wrote_them() {
        let cases = [(0, "0s"), (59, "59s"), (60, "1m00s"), (425, "7m05s"), (11_520, "3h12m"), (187_200, "2d04h")];
        for (secs, text) in cases {
            assert_eq!(human_duration(Duration::from_secs(secs)), text);
        }
    }

    #[test]
    fn the_table_is_aligned_and_shows_device_ids_short() {
        let nodes = vec![
            json!({"nodeId": A, "displayName": "Kitchen Pi", "instanceId": "kitchen-pi", "platform": "linux",
                   "version": "0.1.0", "commands": ["device.status", "echo"], "connectedAtMs": 1_000}),
            json!({"nodeId": "n2", "displayName": "N", "instanceId": "N", "platform": "linux", "version": "0.1.0",
                   "commands": [], "connectedAtMs": 61_000}),
        ];
        let table = node_table(&nodes, 3_601_000);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(lines[0].starts_with("ID            NAME        INSTANCE    PLATFORM"), "{table}");
        assert!(lines[1].starts_with("a1b2c3d4e5f6  Kitchen Pi  kitchen-pi  linux"), "{table}");
        assert!(lines[1].contains("device.status,echo") && lines[1].ends_with("1h00m ago"), "{table}");
        assert!(lines[2].starts_with("n2            N           -           linux"), "{table}");
        // No instance column when it would only repeat the names.
        let plain = node_table(&nodes[1..], 61_000);
        assert!(plain.starts_with("ID  NAME  PLATFORM  VERSION  COMMANDS  CONNECTED\n"), "{plain}");
        assert_eq!(node_table(&[], 0), "ID  NAME  PLATFORM  VERSION  COMMANDS  CONNECTED\n(no nodes connected)\n");
    }

    #[test]
    fn a_node_is_named_by_id_then_instance_or_name_then_prefix() {
        let nodes = vec![
            json!({"nodeId": A, "displayName": "Kitchen Pi", "instanceId": "kitchen-pi"}),
            json!({"nodeId": B, "displayName": "Garage", "instanceId": "a1b2c3"}),
        ];
        assert_eq!(resolve(&nodes, A).unwrap(), Some(A));
        assert_eq!(resolve(&nodes, "kitchen-pi").unwrap(), Some(A));
        assert_eq!(resolve(&nodes, "Garage").unwrap(), Some(B));
        // An instance id beats a prefix of another node's id.
        assert_eq!(resolve(&nodes, "a1b2c3").unwrap(), Some(B));
        assert_eq!(resolve(&nodes, "a1b2c3d").unwrap(), Some(A));
        assert_eq!(resolve(&nodes, "nobody").unwrap(), None);
        assert_eq!(resolve(&nodes, "").unwrap(), None);
        let e = resolve(&nodes, "a1b2").unwrap_err().to_string();
        assert!(e.contains("matches 2 nodes") && e.contains("a1b2c3d4e5f6"), "{e}");
        let twins = vec![json!({"nodeId": A, "displayName": "pi"}), json!({"nodeId": B, "displayName": "pi"})];
        assert!(matches!(resolve(&twins, "pi"), Err(ClientError::Usage(_))));
    }
}
