//! Protocol v3 frames (SPEC §4): parsing what clients send, writing what the
//! gateway answers.
//!
//! Parsing borrows from the message and keeps `params` and payloads as raw
//! JSON, so routing an invoke never re-encodes the data it carries. Every
//! string a client controls and the gateway stores has a bound below; every
//! parse error is an `Err`, never a panic.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// The protocol version this gateway speaks.
pub const PROTOCOL_VERSION: u32 = 3;
/// Longest request id, node id or invoke id, in bytes.
pub const MAX_ID_BYTES: usize = 128;
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

/// Methods a client may call after `connect`.
pub const METHODS: &[&str] = &["health", "node.list", "node.invoke", "node.invoke.result"];
/// Events the gateway sends.
pub const EVENTS: &[&str] = &["connect.challenge", "tick", "node.invoke.request", "presence", "shutdown"];

/// The closed set of error codes a response may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// Malformed frame, missing field, request before or second `connect`.
    InvalidRequest,
    /// Token missing or wrong.
    Unauthorized,
    /// Protocol 3 not within the client's range.
    ProtocolMismatch,
    /// A node called an operator method or the reverse.
    Forbidden,
    /// No such method.
    UnknownMethod,
    /// No node with that id is connected.
    NodeNotFound,
    /// The node did not declare that command.
    UnknownCommand,
    /// The node did not answer in time.
    Timeout,
    /// The node disconnected or was replaced before answering.
    NodeDisconnected,
    /// The gateway is shutting down.
    Unavailable,
    /// Too many requests, or too many pending invokes.
    RateLimited,
}

impl ErrorCode {
    /// The code as sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "INVALID_REQUEST",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::ProtocolMismatch => "PROTOCOL_MISMATCH",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::UnknownMethod => "UNKNOWN_METHOD",
            ErrorCode::NodeNotFound => "NODE_NOT_FOUND",
            ErrorCode::UnknownCommand => "UNKNOWN_COMMAND",
            ErrorCode::Timeout => "TIMEOUT",
            ErrorCode::NodeDisconnected => "NODE_DISCONNECTED",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::RateLimited => "RATE_LIMITED",
        }
    }
}

/// An error answer: a code and a message for humans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The wire code.
    pub code: ErrorCode,
    /// What went wrong; never contains the token.
    pub message: Cow<'static, str>,
}

impl Failure {
    /// Builds a failure.
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Failure {
        Failure { code, message: message.into() }
    }

    /// An `INVALID_REQUEST` failure.
    pub fn invalid(message: impl Into<Cow<'static, str>>) -> Failure {
        Failure::new(ErrorCode::InvalidRequest, message)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

/// A parsed request frame. `id` is the raw JSON of a string id, echoed as is.
#[derive(Debug)]
pub struct Request<'a> {
    /// Raw JSON of the request id (a string of at most [`MAX_ID_BYTES`]).
    pub id: &'a str,
    /// The method name.
    pub method: Cow<'a, str>,
    /// Raw JSON of `params`, if present.
    pub params: Option<&'a RawValue>,
}

/// A frame that is not a valid request: the failure, and the raw id to echo
/// when one could be read.
#[derive(Debug)]
pub struct BadFrame<'a> {
    /// Raw JSON of the id, if it could be read and is small enough to echo.
    pub id: Option<&'a str>,
    /// Always `INVALID_REQUEST`.
    pub failure: Failure,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<&'a RawValue>,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    method: Option<&'a RawValue>,
    #[serde(borrow)]
    params: Option<&'a RawValue>,
}

/// Parses one text message as a request frame.
///
/// # Errors
/// Not JSON, not an object, duplicate keys, `type` other than `"req"`, a
/// missing or malformed `id` or `method`: a [`BadFrame`] with the id when it
/// could be read.
pub fn parse_request(text: &str) -> Result<Request<'_>, BadFrame<'_>> {
    let envelope: Envelope<'_> = serde_json::from_str(text)
        .map_err(|e| BadFrame { id: None, failure: Failure::invalid(format!("not a request frame: {e}")) })?;
    // Echo the id if it is a small string or number, whatever else is wrong.
    let echo = envelope.id.map(RawValue::get).filter(|raw| {
        raw.len() <= MAX_ID_BYTES + 2
            && (raw.starts_with('"') || raw.starts_with(|c: char| c == '-' || c.is_ascii_digit()))
    });
    let bad = |message: &'static str| BadFrame { id: echo, failure: Failure::invalid(message) };
    match envelope.kind.map(|k| k.get()) {
        Some(r#""req""#) => {}
        Some(_) => return Err(bad("type must be \"req\"")),
        None => return Err(bad("missing type")),
    }
    let id = envelope.id.ok_or_else(|| bad("missing id"))?;
    let id_text: Cow<'_, str> = serde_json::from_str(id.get()).map_err(|_| bad("id must be a string"))?;
    if id_text.is_empty() || id_text.len() > MAX_ID_BYTES {
        return Err(bad("id must be a non-empty string of at most 128 bytes"));
    }
    let method = envelope.method.ok_or_else(|| bad("missing method"))?;
    let method: Cow<'_, str> = serde_json::from_str(method.get()).map_err(|_| bad("method must be a string"))?;
    Ok(Request { id: id.get(), method, params: envelope.params })
}

/// Role of a connected client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A device that answers invokes.
    Node,
    /// A client that lists nodes and invokes them.
    Operator,
}

impl Role {
    /// The role's name on the wire and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Node => "node",
            Role::Operator => "operator",
        }
    }
}

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

/// Appends `{"type":"res","id":ID,"ok":true,"payload":PAYLOAD}`.
pub fn write_ok(out: &mut Vec<u8>, id: &str, payload: &str) {
    out.extend_from_slice(br#"{"type":"res","id":"#);
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(br#","ok":true,"payload":"#);
    out.extend_from_slice(payload.as_bytes());
    out.push(b'}');
}

/// Appends an error response; `id` is raw JSON, `null` when unknown.
pub fn write_error(out: &mut Vec<u8>, id: Option<&str>, code: &str, message: &str) {
    out.extend_from_slice(br#"{"type":"res","id":"#);
    out.extend_from_slice(id.unwrap_or("null").as_bytes());
    out.extend_from_slice(br#","ok":false,"error":{"code":"#);
    push_json_str(out, code);
    out.extend_from_slice(br#","message":"#);
    push_json_str(out, message);
    out.extend_from_slice(b"}}");
}

/// An event without its closing brace, ready for
/// [`crate::outbox::Outbox::send_event`] to append the connection's `seq`.
pub fn event_prefix(event: &str, payload: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(48 + event.len() + payload.len());
    out.extend_from_slice(br#"{"type":"event","event":"#);
    push_json_str(&mut out, event);
    out.extend_from_slice(br#","payload":"#);
    out.extend_from_slice(payload.as_bytes());
    out
}

/// Appends `s` as a JSON string literal (RFC 8259 §7).
pub fn push_json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for &byte in s.as_bytes() {
        match byte {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x00..=0x1f => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(byte >> 4)]);
                out.push(HEX[usize::from(byte & 0xf)]);
            }
            _ => out.push(byte),
        }
    }
    out.push(b'"');
}

/// A JSON string literal as a `String`.
pub fn json_str(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len() + 2);
    push_json_str(&mut out, s);
    // push_json_str only copies UTF-8 input and adds ASCII, so this never fails.
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_string()).unwrap()
    }

    #[test]
    fn requests() {
        let ok = parse_request(r#"{"type":"req","id":"7","method":"health","params":{"a":[1,2]}}"#).unwrap();
        assert_eq!((ok.id, ok.method.as_ref()), (r#""7""#, "health"));
        assert_eq!(ok.params.unwrap().get(), r#"{"a":[1,2]}"#);

        // (frame, echoed id)
        let bad: &[(&str, Option<&str>)] = &[
            ("", None),
            ("nope", None),
            ("[1,2]", None),
            ("\"req\"", None),
            (r#"{"type":"req","id":"1","id":"2","method":"x"}"#, None),
            (r#"{"type":"res","id":"1","method":"x"}"#, Some(r#""1""#)),
            (r#"{"id":"1","method":"x"}"#, Some(r#""1""#)),
            (r#"{"type":"req","method":"x"}"#, None),
            (r#"{"type":"req","id":5,"method":"x"}"#, Some("5")),
            (r#"{"type":"req","id":{"a":1},"method":"x"}"#, None),
            (r#"{"type":"req","id":"","method":"x"}"#, Some(r#""""#)),
            (r#"{"type":"req","id":"1"}"#, Some(r#""1""#)),
            (r#"{"type":"req","id":"1","method":7}"#, Some(r#""1""#)),
        ];
        for &(frame, echo) in bad {
            let err = parse_request(frame).unwrap_err();
            assert_eq!(err.id, echo, "{frame}");
            assert_eq!(err.failure.code, ErrorCode::InvalidRequest);
        }
        let long_id = format!(r#"{{"type":"req","id":"{}","method":"x"}}"#, "i".repeat(MAX_ID_BYTES + 1));
        let err = parse_request(&long_id).unwrap_err();
        assert_eq!(err.id, None);
    }

    #[test]
    fn deep_nesting_and_huge_arrays_do_not_hurt() {
        let deep = format!(
            r#"{{"type":"req","id":"1","method":"x","params":{}{}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let req = parse_request(&deep).unwrap();
        assert_eq!(req.params.unwrap().get().len(), 200_000);
        let unbalanced = format!(r#"{{"type":"req","id":"1","method":"x","params":{}}}"#, "[".repeat(100_000));
        assert!(parse_request(&unbalanced).is_err());
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

    #[test]
    fn writers_produce_json() {
        let mut out = Vec::new();
        write_error(&mut out, Some(r#""a""#), "X", "quote \" slash \\ nl \n nul \u{0}");
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["error"]["message"], "quote \" slash \\ nl \n nul \u{0}");
        let mut out = event_prefix("tick", r#"{"ts":1}"#);
        out.extend_from_slice(br#","seq":1}"#);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!((v["event"].as_str(), v["seq"].as_u64()), (Some("tick"), Some(1)));
    }
}
