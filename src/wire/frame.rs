//! Protocol frames (SPEC §4): the request envelope as clients send it, the
//! closed set of error codes, and the writers of the frames the gateway
//! answers with. Parsing borrows from the message and never panics. Which
//! frames are written by hand and which with serde, and why: docs/AUDIT.md,
//! "JSON on the wire".

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde_json::value::RawValue;

/// The protocol version this gateway speaks.
pub const PROTOCOL_VERSION: u32 = 3;
/// Longest request id, node id or invoke id, in bytes.
pub const MAX_ID_BYTES: usize = 128;

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
/// the gateway's outbox to append the connection's `seq`.
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

#[cfg(test)]
mod tests {
    use super::*;

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
