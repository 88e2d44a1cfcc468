//! The params of the requests the gateway acts on (`connect`,
//! `node.invoke`, `node.invoke.result`), validated into typed values with
//! every client-controlled string bounded. Pure functions of the bytes: no
//! gateway state, no I/O, never a panic.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::wire::frame::{ErrorCode, Failure, MAX_ID_BYTES, PROTOCOL_VERSION, Role};

/// Longest `displayName`, `platform` or `version`, in bytes.
pub const MAX_LABEL_BYTES: usize = 256;
/// Most commands a node may declare.
pub const MAX_COMMANDS: usize = 256;
/// Longest command name, in bytes.
pub const MAX_COMMAND_BYTES: usize = 128;
/// Longest error code a node may return, in bytes.
pub const MAX_ERROR_CODE_BYTES: usize = 64;
/// Longest error message a node may return, in bytes.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 4096;
/// `node.invoke` timeout when the operator gives none.
pub const DEFAULT_INVOKE_TIMEOUT_MS: u64 = 30_000;
/// Longest `node.invoke` timeout accepted.
pub const MAX_INVOKE_TIMEOUT_MS: u64 = 600_000;

/// A validated `connect` request.
#[derive(Debug)]
pub struct Connect {
    /// Node or operator.
    pub role: Role,
    /// The token presented, if any.
    pub token: Option<String>,
    /// For nodes: who it is. For operators: empty unless given.
    pub client: ClientInfo,
    /// Commands a node declares (sorted, deduplicated); empty for operators.
    pub commands: Vec<String>,
}

/// What a client says about itself in `connect.client`.
#[derive(Debug, Default, Clone)]
pub struct ClientInfo {
    /// The node id (`client.id`); required for nodes.
    pub id: String,
    /// Human name; the id when absent.
    pub display_name: String,
    /// Free-form platform name.
    pub platform: String,
    /// The client's version.
    pub version: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConnectParams {
    min_protocol: u32,
    max_protocol: u32,
    client: Option<ClientParams>,
    role: Option<String>,
    #[serde(default, deserialize_with = "bounded_commands")]
    commands: Vec<String>,
    auth: Option<AuthParams>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClientParams {
    id: Option<String>,
    display_name: Option<String>,
    version: Option<String>,
    platform: Option<String>,
}

#[derive(Deserialize)]
struct AuthParams {
    token: Option<String>,
}

/// Validates `connect` params (SPEC §4.1).
///
/// # Errors
/// `INVALID_REQUEST` for missing or malformed fields and bounds exceeded,
/// `PROTOCOL_MISMATCH` when 3 is outside `[minProtocol, maxProtocol]`.
pub fn parse_connect(params: Option<&RawValue>) -> Result<Connect, Failure> {
    let params = params.ok_or_else(|| Failure::invalid("connect needs params"))?;
    let p: ConnectParams =
        serde_json::from_str(params.get()).map_err(|e| Failure::invalid(format!("invalid connect params: {e}")))?;
    if !(p.min_protocol..=p.max_protocol).contains(&PROTOCOL_VERSION) {
        return Err(Failure::new(
            ErrorCode::ProtocolMismatch,
            format!(
                "server speaks protocol {PROTOCOL_VERSION}, client asked for {}..={}",
                p.min_protocol, p.max_protocol
            ),
        ));
    }
    let role = match p.role.as_deref() {
        None | Some("node") => Role::Node,
        Some("operator") => Role::Operator,
        Some(_) => return Err(Failure::invalid("role must be \"node\" or \"operator\"")),
    };
    let mut client = ClientInfo::default();
    if let Some(c) = p.client {
        if let Some(id) = c.id {
            check_name("client.id", &id, MAX_ID_BYTES)?;
            client.id = id;
        }
        for (field, value, slot) in [
            ("client.displayName", c.display_name, &mut client.display_name),
            ("client.platform", c.platform, &mut client.platform),
            ("client.version", c.version, &mut client.version),
        ] {
            if let Some(value) = value {
                check_label(field, &value)?;
                *slot = value;
            }
        }
    }
    let mut commands = Vec::new();
    if role == Role::Node {
        if client.id.is_empty() {
            return Err(Failure::invalid("a node needs client.id"));
        }
        if client.display_name.is_empty() {
            client.display_name = client.id.clone();
        }
        commands = p.commands;
        for command in &commands {
            check_name("commands[]", command, MAX_COMMAND_BYTES)?;
        }
        commands.sort_unstable();
        commands.dedup();
    }
    Ok(Connect { role, token: p.auth.and_then(|a| a.token), client, commands })
}

/// Deserializes `commands`, refusing the array as soon as it passes
/// [`MAX_COMMANDS`] so a huge array is never materialized.
fn bounded_commands<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    struct Bounded;
    impl<'de> Visitor<'de> for Bounded {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "an array of at most {MAX_COMMANDS} strings")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
            let mut out = Vec::new();
            while let Some(command) = seq.next_element::<String>()? {
                if out.len() == MAX_COMMANDS {
                    return Err(de::Error::custom(format!("more than {MAX_COMMANDS} commands")));
                }
                out.push(command);
            }
            Ok(out)
        }
    }
    deserializer.deserialize_seq(Bounded)
}

/// An identifier: non-empty, bounded, no control characters.
fn check_name(field: &'static str, value: &str, max: usize) -> Result<(), Failure> {
    if value.is_empty() || value.len() > max || value.chars().any(char::is_control) {
        return Err(Failure::invalid(format!("{field} must be 1 to {max} bytes without control characters")));
    }
    Ok(())
}

/// Free text: bounded, no control characters.
fn check_label(field: &'static str, value: &str) -> Result<(), Failure> {
    if value.len() > MAX_LABEL_BYTES || value.chars().any(char::is_control) {
        return Err(Failure::invalid(format!(
            "{field} must be at most {MAX_LABEL_BYTES} bytes without control characters"
        )));
    }
    Ok(())
}

/// A validated `node.invoke` request.
#[derive(Debug)]
pub struct Invoke<'a> {
    /// Target node.
    pub node_id: Cow<'a, str>,
    /// Command to run.
    pub command: Cow<'a, str>,
    /// Raw JSON params for the node (`null` when absent).
    pub params: &'a str,
    /// How long to wait for the node, in milliseconds.
    pub timeout_ms: u64,
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
}

/// Validates `node.invoke` params.
///
/// # Errors
/// `INVALID_REQUEST` for missing or malformed fields and bounds exceeded.
pub fn parse_invoke(params: Option<&RawValue>) -> Result<Invoke<'_>, Failure> {
    let params = params.ok_or_else(|| Failure::invalid("node.invoke needs params"))?;
    let p: InvokeParams<'_> =
        serde_json::from_str(params.get()).map_err(|e| Failure::invalid(format!("invalid node.invoke params: {e}")))?;
    check_name("nodeId", &p.node_id, MAX_ID_BYTES)?;
    check_name("command", &p.command, MAX_COMMAND_BYTES)?;
    let timeout_ms = p.timeout_ms.unwrap_or(DEFAULT_INVOKE_TIMEOUT_MS);
    if !(1..=MAX_INVOKE_TIMEOUT_MS).contains(&timeout_ms) {
        return Err(Failure::invalid(format!("timeoutMs must be between 1 and {MAX_INVOKE_TIMEOUT_MS}")));
    }
    Ok(Invoke { node_id: p.node_id, command: p.command, params: p.params.map_or("null", RawValue::get), timeout_ms })
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
    /// Success, with the raw JSON payload (`null` when absent).
    Ok(Cow<'a, str>),
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
    error: Option<NodeError<'a>>,
}

#[derive(Deserialize)]
struct NodeError<'a> {
    #[serde(borrow)]
    code: Cow<'a, str>,
    #[serde(borrow)]
    message: Option<Cow<'a, str>>,
}

/// Validates `node.invoke.result` params (`payload` or `payloadJSON`).
///
/// # Errors
/// `INVALID_REQUEST` for missing or malformed fields, an id that is not a
/// UUID, `payloadJSON` that is not JSON, and bounds exceeded.
pub fn parse_result(params: Option<&RawValue>) -> Result<InvokeResult<'_>, Failure> {
    let params = params.ok_or_else(|| Failure::invalid("node.invoke.result needs params"))?;
    let p: ResultParams<'_> = serde_json::from_str(params.get())
        .map_err(|e| Failure::invalid(format!("invalid node.invoke.result params: {e}")))?;
    let id = uuid::Uuid::try_parse(&p.id).map_err(|_| Failure::invalid("id must be the invoke id (a UUID)"))?;
    let outcome = if p.ok {
        match (p.payload, p.payload_json) {
            (Some(_), Some(_)) => return Err(Failure::invalid("give payload or payloadJSON, not both")),
            (Some(raw), None) => Outcome::Ok(Cow::Borrowed(raw.get())),
            (None, Some(text)) => {
                serde_json::from_str::<&RawValue>(&text)
                    .map_err(|e| Failure::invalid(format!("payloadJSON is not JSON: {e}")))?;
                Outcome::Ok(text)
            }
            (None, None) => Outcome::Ok(Cow::Borrowed("null")),
        }
    } else {
        let error = p.error.ok_or_else(|| Failure::invalid("ok:false needs error {code, message}"))?;
        check_name("error.code", &error.code, MAX_ERROR_CODE_BYTES)?;
        let message = error.message.unwrap_or_default();
        if message.len() > MAX_ERROR_MESSAGE_BYTES {
            return Err(Failure::invalid(format!("error.message is longer than {MAX_ERROR_MESSAGE_BYTES} bytes")));
        }
        Outcome::Err { code: error.code, message }
    };
    Ok(InvokeResult { id, node_id: p.node_id, outcome })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_string()).unwrap()
    }

    #[test]
    fn huge_command_arrays_are_refused_early() {
        let many = format!("[{}\"x\"]", "\"c\",".repeat(100_000));
        let connect = raw(&format!(r#"{{"minProtocol":3,"maxProtocol":3,"client":{{"id":"n"}},"commands":{many}}}"#));
        let err = parse_connect(Some(&connect)).unwrap_err();
        assert!(err.message.contains("more than 256"), "{err}");
    }

    #[test]
    fn connect_params() {
        let node = raw(r#"{"minProtocol":3,"maxProtocol":3,"client":{"id":"pi","platform":"linux"},
                "commands":["echo","device.status","echo"],"auth":{"token":"t"}}"#);
        let c = parse_connect(Some(&node)).unwrap();
        assert_eq!(c.role, Role::Node);
        assert_eq!(c.client.display_name, "pi");
        assert_eq!(c.commands, ["device.status", "echo"]);
        assert_eq!(c.token.as_deref(), Some("t"));

        let op = raw(r#"{"minProtocol":1,"maxProtocol":5,"role":"operator"}"#);
        assert_eq!(parse_connect(Some(&op)).unwrap().role, Role::Operator);

        let cases: &[(&str, ErrorCode)] = &[
            (r#"{"minProtocol":4,"maxProtocol":5,"client":{"id":"a"}}"#, ErrorCode::ProtocolMismatch),
            (r#"{"minProtocol":1,"maxProtocol":2,"role":"operator"}"#, ErrorCode::ProtocolMismatch),
            (r#"{"maxProtocol":3,"client":{"id":"a"}}"#, ErrorCode::InvalidRequest),
            (r#"{"minProtocol":3,"maxProtocol":3}"#, ErrorCode::InvalidRequest),
            (r#"{"minProtocol":3,"maxProtocol":3,"client":{"id":""}}"#, ErrorCode::InvalidRequest),
            (r#"{"minProtocol":3,"maxProtocol":3,"client":{"id":"a\u0000"}}"#, ErrorCode::InvalidRequest),
            (r#"{"minProtocol":3,"maxProtocol":3,"role":"admin"}"#, ErrorCode::InvalidRequest),
            (r#"{"minProtocol":1e400,"maxProtocol":3}"#, ErrorCode::InvalidRequest),
            (r#"{"minProtocol":"3","maxProtocol":3}"#, ErrorCode::InvalidRequest),
            (r#"{"minProtocol":3,"maxProtocol":3,"client":{"id":"a"},"commands":[1]}"#, ErrorCode::InvalidRequest),
        ];
        for &(params, code) in cases {
            assert_eq!(parse_connect(Some(&raw(params))).unwrap_err().code, code, "{params}");
        }
        assert!(parse_connect(None).is_err());
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
        ] {
            assert!(parse_invoke(Some(&raw(bad))).is_err(), "{bad}");
        }
    }

    #[test]
    fn result_params() {
        let id = "6f1c1f0e-2a47-4c1e-9a57-1d2b7f3c9a10";
        let ok = raw(&format!(r#"{{"id":"{id}","ok":true,"payload":{{"v":1}}}}"#));
        assert!(matches!(parse_result(Some(&ok)).unwrap().outcome, Outcome::Ok(p) if p == r#"{"v":1}"#));
        let ok = raw(&format!(r#"{{"id":"{id}","ok":true,"payloadJSON":"{{\"v\":2}}"}}"#));
        assert!(matches!(parse_result(Some(&ok)).unwrap().outcome, Outcome::Ok(p) if p == r#"{"v":2}"#));
        let err = raw(&format!(r#"{{"id":"{id}","ok":false,"error":{{"code":"E","message":"m"}}}}"#));
        assert!(matches!(parse_result(Some(&err)).unwrap().outcome, Outcome::Err { code, .. } if code == "E"));
        for bad in [
            format!(r#"{{"id":"{id}","ok":true,"payloadJSON":"{{"}}"#),
            format!(r#"{{"id":"{id}","ok":true,"payload":1,"payloadJSON":"1"}}"#),
            format!(r#"{{"id":"{id}","ok":false}}"#),
            r#"{"id":"not-a-uuid","ok":true}"#.to_string(),
        ] {
            assert!(parse_result(Some(&raw(&bad))).is_err(), "{bad}");
        }
    }
}
