//! The params of the requests the gateway acts on after `connect`
//! (`node.invoke`, `node.invoke.result`, `node.event`, `node.list`,
//! `node.describe`, the pairing methods), validated into typed values with
//! every client-controlled string bounded and every forwarded JSON value
//! strict. Pure functions of the bytes: no gateway state, no I/O, never a
//! panic. `connect` is `connect.rs`.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::wire::connect::MAX_COMMAND_BYTES;
use crate::wire::frame::{Failure, MAX_ID_BYTES};
use crate::wire::json::{check_strict, invalid_params};
use crate::wire::text::check_name;

/// Longest error code a node may return, in bytes.
pub const MAX_ERROR_CODE_BYTES: usize = 64;
/// Longest error message a node may return, in bytes.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 4096;
/// `node.invoke` timeout when the operator gives none.
pub const DEFAULT_INVOKE_TIMEOUT_MS: u64 = 30_000;
/// Longest `node.invoke` timeout accepted.
pub const MAX_INVOKE_TIMEOUT_MS: u64 = 600_000;
/// Longest idempotency key or event name, in bytes.
pub const MAX_KEY_BYTES: usize = 256;
/// The error code a node's error gets when it sent none.
const DEFAULT_NODE_ERROR_CODE: &str = "NODE_ERROR";

/// Parses params that must be present.
fn params<'a, T: Deserialize<'a>>(method: &'static str, params: Option<&'a RawValue>) -> Result<T, Failure> {
    let params = params.ok_or_else(|| Failure::invalid(format!("{method} needs params")))?;
    serde_json::from_str(params.get()).map_err(|e| invalid_params(method, &e))
}

/// Checks a JSON value the gateway will forward (SPEC §4.2: nesting at
/// most 64, no lone surrogate, finite numbers).
fn strict(field: &'static str, json: &str) -> Result<(), Failure> {
    check_strict(json).map_err(|why| Failure::invalid(format!("{field} is refused: {why}")))
}

/// A validated `node.invoke` request.
#[derive(Debug)]
pub struct Invoke<'a> {
    /// Target node.
    pub node_id: Cow<'a, str>,
    /// Command to run.
    pub command: Cow<'a, str>,
    /// Raw JSON params for the node (`null` when absent), strictly valid.
    pub params: &'a str,
    /// How long to wait for the node, in milliseconds.
    pub timeout_ms: u64,
    /// The operator's idempotency key, if it gave one.
    pub idempotency_key: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InvokeParams<'a> {
    #[serde(borrow)]
    node_id: Cow<'a, str>,
    #[serde(borrow)]
    command: Cow<'a, str>,
    #[serde(borrow)]
    params: Option<&'a RawValue>,
    timeout_ms: Option<u64>,
    #[serde(borrow)]
    idempotency_key: Option<Cow<'a, str>>,
}

/// Validates `node.invoke` params.
///
/// # Errors
/// `INVALID_REQUEST` for missing or malformed fields, bounds exceeded and
/// params a strict parser would refuse.
pub fn parse_invoke(raw: Option<&RawValue>) -> Result<Invoke<'_>, Failure> {
    let p: InvokeParams<'_> = params("node.invoke", raw)?;
    check_name("nodeId", &p.node_id, MAX_ID_BYTES)?;
    check_name("command", &p.command, MAX_COMMAND_BYTES)?;
    if let Some(key) = &p.idempotency_key {
        check_name("idempotencyKey", key, MAX_KEY_BYTES)?;
    }
    let timeout_ms = p.timeout_ms.unwrap_or(DEFAULT_INVOKE_TIMEOUT_MS);
    if !(1..=MAX_INVOKE_TIMEOUT_MS).contains(&timeout_ms) {
        return Err(Failure::invalid(format!("timeoutMs must be between 1 and {MAX_INVOKE_TIMEOUT_MS}")));
    }
    let params = p.params.map_or("null", RawValue::get);
    strict("params", params)?;
    Ok(Invoke { node_id: p.node_id, command: p.command, params, timeout_ms, idempotency_key: p.idempotency_key })
}

/// A validated `node.invoke.result`.
#[derive(Debug)]
pub struct InvokeResult<'a> {
    /// The invoke id the gateway sent in `node.invoke.request`.
    pub id: uuid::Uuid,
    /// The node id, if the node repeated it.
    pub node_id: Option<Cow<'a, str>>,
    /// The answer to forward.
    pub outcome: Outcome<'a>,
}

/// What a node answered.
#[derive(Debug)]
pub enum Outcome<'a> {
    /// `payload`: raw JSON, forwarded as `payload`.
    Payload(&'a str),
    /// `payloadJSON`: a string holding JSON, forwarded as `payloadJSON`.
    PayloadJson(Cow<'a, str>),
    /// Neither: forwarded as `payload: null`.
    Empty,
    /// Failure, with the node's own code and message.
    Err {
        /// The node's error code.
        code: Cow<'a, str>,
        /// The node's message.
        message: Cow<'a, str>,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResultParams<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    node_id: Option<Cow<'a, str>>,
    ok: bool,
    #[serde(borrow)]
    payload: Option<&'a RawValue>,
    #[serde(borrow, rename = "payloadJSON")]
    payload_json: Option<Cow<'a, str>>,
    #[serde(borrow)]
    error: Option<NodeErrorParams<'a>>,
}

#[derive(Deserialize)]
struct NodeErrorParams<'a> {
    #[serde(borrow)]
    code: Option<Cow<'a, str>>,
    #[serde(borrow)]
    message: Option<Cow<'a, str>>,
}

/// Validates `node.invoke.result` params (`payload` or `payloadJSON`).
///
/// # Errors
/// `INVALID_REQUEST` for missing or malformed fields, an id that is not a
/// UUID, a payload a strict parser would refuse, and bounds exceeded.
pub fn parse_result(raw: Option<&RawValue>) -> Result<InvokeResult<'_>, Failure> {
    let p: ResultParams<'_> = params("node.invoke.result", raw)?;
    let id = uuid::Uuid::try_parse(&p.id).map_err(|_| Failure::invalid("id must be the invoke id (a UUID)"))?;
    let outcome = if p.ok {
        match (p.payload, p.payload_json) {
            (Some(_), Some(_)) => return Err(Failure::invalid("give payload or payloadJSON, not both")),
            (Some(raw), None) => {
                strict("payload", raw.get())?;
                Outcome::Payload(raw.get())
            }
            (None, Some(text)) => {
                strict("payloadJSON", &text)?;
                Outcome::PayloadJson(text)
            }
            (None, None) => Outcome::Empty,
        }
    } else {
        let error = p.error.ok_or_else(|| Failure::invalid("ok:false needs error {code, message}"))?;
        let code = error.code.unwrap_or(Cow::Borrowed(DEFAULT_NODE_ERROR_CODE));
        check_name("error.code", &code, MAX_ERROR_CODE_BYTES)?;
        let message = error.message.unwrap_or_default();
        if message.len() > MAX_ERROR_MESSAGE_BYTES {
            return Err(Failure::invalid(format!("error.message is longer than {MAX_ERROR_MESSAGE_BYTES} bytes")));
        }
        Outcome::Err { code, message }
    };
    Ok(InvokeResult { id, node_id: p.node_id, outcome })
}

/// A validated `node.event`.
#[derive(Debug)]
pub struct NodeEvent<'a> {
    /// The event's name.
    pub event: Cow<'a, str>,
    /// Its payload as a JSON string (`null` when the node sent none).
    pub payload_json: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct NodeEventParams<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(borrow)]
    payload: Option<&'a RawValue>,
    #[serde(borrow, rename = "payloadJSON")]
    payload_json: Option<Cow<'a, str>>,
}

/// Validates `node.event` params: `payloadJSON` (a string, or null as
/// 2026.5.7 sends it) or `payload`, which is forwarded as `payloadJSON`.
///
/// # Errors
/// `INVALID_REQUEST` for malformed fields, a payload a strict parser
/// would refuse, and bounds exceeded.
pub fn parse_node_event(raw: Option<&RawValue>) -> Result<NodeEvent<'_>, Failure> {
    let p: NodeEventParams<'_> = params("node.event", raw)?;
    check_name("event", &p.event, MAX_KEY_BYTES)?;
    let payload_json = match (p.payload_json, p.payload) {
        (Some(text), _) => {
            strict("payloadJSON", &text)?;
            Some(text)
        }
        (None, Some(raw)) if raw.get() != "null" => {
            strict("payload", raw.get())?;
            Some(Cow::Borrowed(raw.get()))
        }
        (None, _) => None,
    };
    Ok(NodeEvent { event: p.event, payload_json })
}

/// `node.list` paging: `{limit?, cursor?}`.
#[derive(Debug, Default, Deserialize)]
pub struct ListParams {
    /// Most items wanted on this page.
    pub limit: Option<usize>,
    /// Where the previous page stopped (its `nextCursor`).
    pub cursor: Option<String>,
}

/// Validates `node.list` params (absent params: the first page).
///
/// # Errors
/// `INVALID_REQUEST` for malformed fields.
pub fn parse_list(raw: Option<&RawValue>) -> Result<ListParams, Failure> {
    let list: ListParams = match raw {
        Some(raw) if raw.get() != "null" => params("node.list", Some(raw))?,
        _ => ListParams::default(),
    };
    if let Some(cursor) = &list.cursor {
        check_name("cursor", cursor, MAX_ID_BYTES)?;
    }
    Ok(list)
}

/// The one string a method takes (`node.describe {nodeId}`,
/// `*.pair.approve {requestId}`, `device.pair.remove {deviceId}`, ...).
///
/// # Errors
/// `INVALID_REQUEST` when it is missing or malformed.
pub fn parse_id(method: &'static str, field: &'static str, raw: Option<&RawValue>) -> Result<String, Failure> {
    let map: std::collections::HashMap<Cow<'_, str>, &RawValue> = params(method, raw)?;
    let value = map.get(field).ok_or_else(|| Failure::invalid(format!("invalid {method} params: missing {field}")))?;
    let id: String = serde_json::from_str(value.get())
        .map_err(|_| Failure::invalid(format!("invalid {method} params: {field} must be a string")))?;
    check_name(field, &id, MAX_ID_BYTES)?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_string()).unwrap()
    }

    #[test]
    fn invoke_params() {
        let p = raw(r#"{"nodeId":"pi","command":"echo","params":{"x":1}}"#);
        let i = parse_invoke(Some(&p)).unwrap();
        assert_eq!((i.params, i.timeout_ms), (r#"{"x":1}"#, DEFAULT_INVOKE_TIMEOUT_MS));
        for bad in [
            r#"{"command":"echo"}"#,
            r#"{"nodeId":"pi","command":"echo","timeoutMs":0}"#,
            r#"{"nodeId":"pi","command":"echo","timeoutMs":600001}"#,
            r#"{"nodeId":"pi","command":"echo","timeoutMs":1.5}"#,
            r#"{"nodeId":"pi","command":""}"#,
            r#"{"nodeId":"pi","command":"echo","params":"\ud800"}"#,
            r#"{"nodeId":"pi","command":"echo","params":[1e400]}"#,
            r#"{"nodeId":"pi\u200b","command":"echo"}"#,
        ] {
            assert!(parse_invoke(Some(&raw(bad))).is_err(), "{bad}");
        }
        let deep = format!(r#"{{"nodeId":"pi","command":"echo","params":{}{}}}"#, "[".repeat(127), "]".repeat(127));
        assert!(parse_invoke(Some(&raw(&deep))).unwrap_err().message.contains("deeper than 64"));
    }

    #[test]
    fn result_params() {
        let id = "6f1c1f0e-2a47-4c1e-9a57-1d2b7f3c9a10";
        let ok = raw(&format!(r#"{{"id":"{id}","ok":true,"payload":{{"v":1}}}}"#));
        assert!(matches!(parse_result(Some(&ok)).unwrap().outcome, Outcome::Payload(p) if p == r#"{"v":1}"#));
        let ok = raw(&format!(r#"{{"id":"{id}","ok":true,"payloadJSON":"{{\"v\":2}}"}}"#));
        assert!(matches!(parse_result(Some(&ok)).unwrap().outcome, Outcome::PayloadJson(p) if p == r#"{"v":2}"#));
        let empty = raw(&format!(r#"{{"id":"{id}","ok":true}}"#));
        assert!(matches!(parse_result(Some(&empty)).unwrap().outcome, Outcome::Empty));
        let bare = raw(&format!(r#"{{"id":"{id}","ok":false,"error":{{"message":"m"}}}}"#));
        assert!(
            matches!(parse_result(Some(&bare)).unwrap().outcome, Outcome::Err { code, .. } if code == "NODE_ERROR")
        );
        let err = raw(&format!(r#"{{"id":"{id}","ok":false,"error":{{"code":"E","message":"m"}}}}"#));
        assert!(matches!(parse_result(Some(&err)).unwrap().outcome, Outcome::Err { code, .. } if code == "E"));
        for bad in [
            format!(r#"{{"id":"{id}","ok":true,"payloadJSON":"{{"}}"#),
            format!(r#"{{"id":"{id}","ok":true,"payload":1,"payloadJSON":"1"}}"#),
            format!(r#"{{"id":"{id}","ok":false}}"#),
            format!(r#"{{"id":"{id}","ok":true,"payload":1e99999}}"#),
            format!(r#"{{"id":"{id}","ok":true,"payloadJSON":"\"\\ud800\""}}"#),
            r#"{"id":"not-a-uuid","ok":true}"#.to_string(),
        ] {
            assert!(parse_result(Some(&raw(&bad))).is_err(), "{bad}");
        }
    }

    #[test]
    fn events_lists_and_ids() {
        let stats = raw(r#"{"event":"node.host.stats","payloadJSON":"{\"cpuCount\":4}"}"#);
        let e = parse_node_event(Some(&stats)).unwrap();
        assert_eq!((e.event.as_ref(), e.payload_json.as_deref()), ("node.host.stats", Some(r#"{"cpuCount":4}"#)));
        let denied = raw(r#"{"event":"exec.denied","payloadJSON":null}"#);
        assert_eq!(parse_node_event(Some(&denied)).unwrap().payload_json, None);
        let object = raw(r#"{"event":"x","payload":{"a":1}}"#);
        assert_eq!(parse_node_event(Some(&object)).unwrap().payload_json.as_deref(), Some(r#"{"a":1}"#));
        assert!(parse_node_event(Some(&raw(r#"{"payloadJSON":"1"}"#))).is_err());
        let list = parse_list(Some(&raw(r#"{"limit":5,"cursor":"n1"}"#))).unwrap();
        assert_eq!((list.limit, list.cursor.as_deref()), (Some(5), Some("n1")));
        assert!(parse_list(None).unwrap().cursor.is_none());
        assert_eq!(parse_id("node.describe", "nodeId", Some(&raw(r#"{"nodeId":"pi"}"#))).unwrap(), "pi");
        assert!(parse_id("node.describe", "nodeId", Some(&raw(r#"{"nodeId":5}"#))).is_err());
        assert!(parse_id("node.describe", "nodeId", Some(&raw("{}"))).is_err());
    }
}
