//! `goclaw nodes pending|approve|reject|remove`: deciding pairing requests
//! on goclaw or a real OpenClaw gateway (SPEC §4.4, OPENCLAW.md §5).
//!
//! OpenClaw has two approvals: a device's (`device.pair.*`, inside
//! `connect`) and a node's command surface (`node.pair.*`, after it). goclaw
//! has one store that both method families reach. So `pending` lists both
//! families' requests (one row per request id), and `approve` / `reject`
//! try `node.pair.*` first and, for a request id it does not know,
//! `device.pair.*`: one command approves either kind on any gateway.

use std::io::Write;
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::client::error::ClientError;
use crate::client::listing::{LIST_TIMEOUT, human_duration, list_all, render, resolve, short_id};
use crate::client::operator::Operator;
use crate::util::{Stop, unix_ms};

/// Time for a pairing method's answer.
const PAIRING_TIMEOUT: Duration = Duration::from_secs(15);

/// What a pairing subcommand does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PairingAction {
    /// List the requests waiting.
    Pending,
    /// Approve a request.
    Approve(String),
    /// Reject a request.
    Reject(String),
    /// Remove a paired node.
    Remove(String),
}

/// Runs a pairing subcommand; writes the list (table or JSON) or one line
/// saying what was done.
///
/// # Errors
/// The gateway's error answer, a connection problem, or a NODE that names
/// several nodes.
pub fn pairing(
    operator: &Operator,
    action: &PairingAction,
    as_json: bool,
    out: &mut impl Write,
) -> Result<(), ClientError> {
    let mut client = operator.connect(&Stop::default())?;
    let text = match action {
        PairingAction::Pending => {
            let nodes = client.request("node.pair.list", json!({}), PAIRING_TIMEOUT);
            let devices = client.request("device.pair.list", json!({}), PAIRING_TIMEOUT);
            pending_rows(nodes, devices)
                .map(|rows| if as_json { format!("{}\n", Value::Array(rows)) } else { pending_table(&rows, unix_ms()) })
        }
        PairingAction::Approve(id) | PairingAction::Reject(id) => {
            let (verb, done) = if matches!(action, PairingAction::Approve(_)) {
                ("approve", "approved")
            } else {
                ("reject", "rejected")
            };
            let mut call = |method: &str, params: Value| client.request(method, params, PAIRING_TIMEOUT);
            decide(&mut call, verb, id).map(|answer| decided(done, id, &answer))
        }
        PairingAction::Remove(node) => remove(&mut client, node),
    };
    client.close();
    out.write_all(text?.as_bytes()).map_err(|e| ClientError::Connection(format!("cannot write the output: {e}")))
}

/// `node.pair.<verb>`, else `device.pair.<verb>` for a request id the first
/// does not know.
fn decide(
    call: &mut impl FnMut(&str, Value) -> Result<Value, ClientError>,
    verb: &str,
    request_id: &str,
) -> Result<Value, ClientError> {
    let params = json!({ "requestId": request_id });
    match call(&format!("node.pair.{verb}"), params.clone()) {
        Err(ClientError::Gateway { message, .. }) if message.contains("unknown requestId") => {
            call(&format!("device.pair.{verb}"), params)
        }
        answered => answered,
    }
}

/// One line for a decided request: what it was for, as the answer says.
fn decided(what: &str, request_id: &str, answer: &Value) -> String {
    let subject = if answer["node"].is_object() { &answer["node"] } else { &answer["device"] };
    let id = subject["nodeId"].as_str().or(subject["deviceId"].as_str()).or(answer["nodeId"].as_str());
    let name = subject["displayName"].as_str().filter(|n| !n.is_empty());
    match (id, name) {
        (Some(id), Some(name)) => format!("{what} request {request_id}: {} ({name})\n", short_id(id)),
        (Some(id), None) => format!("{what} request {request_id}: {}\n", short_id(id)),
        _ => format!("{what} request {request_id}\n"),
    }
}

/// `node.pair.remove` for the paired node `node` names (connected or not).
fn remove(client: &mut crate::client::conn::Client, node: &str) -> Result<String, ClientError> {
    let mut nodes = list_all(client)?;
    let paired = client.request("node.pair.list", json!({}), LIST_TIMEOUT)?;
    nodes.extend(paired["paired"].as_array().cloned().unwrap_or_default());
    let Some(node_id) = resolve(&nodes, node)?.map(str::to_string) else {
        return Err(ClientError::Gateway { code: "NODE_NOT_FOUND".into(), message: "no such paired node".into() });
    };
    client.request("node.pair.remove", json!({ "nodeId": node_id }), PAIRING_TIMEOUT)?;
    Ok(format!("removed node {}\n", short_id(&node_id)))
}

/// Both lists' pending rows, one per request id, each with `kind`:
/// `device` (a device's approval) or `node` (a node's command surface).
/// One list failing is enough; both failing is the node list's error.
fn pending_rows(
    nodes: Result<Value, ClientError>,
    devices: Result<Value, ClientError>,
) -> Result<Vec<Value>, ClientError> {
    let rows = |list: &Result<Value, ClientError>| -> Vec<Value> {
        list.as_ref().ok().and_then(|l| l["pending"].as_array().cloned()).unwrap_or_default()
    };
    if let (Err(e), Err(_)) = (&nodes, &devices) {
        return Err(e.clone());
    }
    let mut merged: Vec<Map<String, Value>> = Vec::new();
    for (kind, list) in [("device", &devices), ("node", &nodes)] {
        for row in rows(list) {
            let Value::Object(mut row) = row else { continue };
            match merged.iter_mut().find(|m| m.get("requestId").is_some() && m.get("requestId") == row.get("requestId"))
            {
                Some(existing) => {
                    for (key, value) in row {
                        existing.entry(key).or_insert(value);
                    }
                }
                None => {
                    row.insert("kind".into(), json!(kind));
                    merged.push(row);
                }
            }
        }
    }
    Ok(merged.into_iter().map(Value::Object).collect())
}

/// The pending requests as a table.
fn pending_table(rows: &[Value], now_ms: u64) -> String {
    let text = |v: &Value| v.as_str().filter(|s| !s.is_empty()).unwrap_or("-").to_string();
    let mut table =
        vec![["REQUEST", "KIND", "DEVICE", "NAME", "ROLE", "PLATFORM", "FROM", "AGE"].map(String::from).to_vec()];
    for row in rows {
        let device = row["deviceId"].as_str().or(row["nodeId"].as_str()).map_or("-", short_id);
        let role = row["role"].as_str().unwrap_or(if row["kind"] == "node" { "node" } else { "-" });
        let age = row["ts"].as_u64().map_or("-".to_string(), |ts| {
            format!("{} ago", human_duration(Duration::from_millis(now_ms.saturating_sub(ts))))
        });
        table.push(vec![
            text(&row["requestId"]),
            text(&row["kind"]),
            device.to_string(),
            text(&row["displayName"]),
            role.to_string(),
            text(&row["platform"]),
            text(&row["remoteIp"]),
            age,
        ]);
    }
    let mut out = render(&table);
    if rows.is_empty() {
        out.push_str("(no pending requests)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEV: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn both_lists_make_one_row_per_request() {
        let devices = json!({"pending": [
            {"requestId": "r1", "deviceId": DEV, "displayName": "pi", "role": "node", "platform": "linux", "ts": 1000},
            {"requestId": "r2", "deviceId": DEV, "displayName": "cli", "role": "operator", "ts": 1000},
        ]});
        let nodes = json!({"pending": [
            {"requestId": "r1", "nodeId": DEV, "displayName": "pi", "commands": ["system.run"]},
            {"requestId": "r3", "nodeId": DEV, "displayName": "pi"},
        ]});
        let rows = pending_rows(Ok(nodes.clone()), Ok(devices)).unwrap();
        let ids: Vec<(&str, &str)> =
            rows.iter().map(|r| (r["requestId"].as_str().unwrap(), r["kind"].as_str().unwrap())).collect();
        assert_eq!(ids, [("r1", "device"), ("r2", "device"), ("r3", "node")]);
        assert_eq!(rows[0]["commands"], json!(["system.run"]));
        let table = pending_table(&rows, 61_000);
        assert!(table.starts_with("REQUEST  KIND    DEVICE        NAME  ROLE"), "{table}");
        assert!(table.contains("r1       device  0123456789ab  pi    node      linux     -     1m00s ago"), "{table}");
        assert!(table.contains("r3       node    0123456789ab  pi    node"), "{table}");
        // One list is enough.
        let refused = Err(ClientError::Gateway { code: "INVALID_REQUEST".into(), message: "unknown method".into() });
        assert_eq!(pending_rows(Ok(nodes), refused.clone()).unwrap().len(), 2);
        assert!(pending_rows(refused.clone(), refused).is_err());
        assert_eq!(
            pending_table(&[], 0),
            "REQUEST  KIND  DEVICE  NAME  ROLE  PLATFORM  FROM  AGE\n(no pending requests)\n"
        );
    }

    #[test]
    fn an_unknown_request_id_goes_to_the_device_methods() {
        let mut calls = Vec::new();
        let mut call = |method: &str, _: Value| {
            calls.push(method.to_string());
            match method {
                "node.pair.approve" => {
                    Err(ClientError::Gateway { code: "INVALID_REQUEST".into(), message: "unknown requestId".into() })
                }
                _ => Ok(json!({"requestId": "r", "device": {"deviceId": DEV, "displayName": "cli"}})),
            }
        };
        let answer = decide(&mut call, "approve", "r").unwrap();
        assert_eq!(calls, ["node.pair.approve", "device.pair.approve"]);
        assert_eq!(decided("approved", "r", &answer), "approved request r: 0123456789ab (cli)\n");
        // Any other refusal stands.
        let mut call = |_: &str, _: Value| -> Result<Value, ClientError> {
            Err(ClientError::Gateway { code: "MISSING_SCOPE".into(), message: "missing scope".into() })
        };
        assert!(decide(&mut call, "reject", "r").is_err());
    }
}
