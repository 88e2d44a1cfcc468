//! Protocol frames (SPEC §4): the request envelope as clients send it, the
//! closed set of error codes, and the writers of the frames the gateway
//! answers with. Parsing borrows from the message and never panics. Which
//! frames are written by hand and which with serde, and why: docs/AUDIT.md,
//! "JSON on the wire".

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The protocol version this gateway speaks.
pub const PROTOCOL_VERSION: u32 = 3;
/// Longest request id, node id or invoke id, in bytes.
pub const MAX_ID_BYTES: usize = 128;

/// Longest `error.message` the gateway sends, in bytes (SPEC §4): longer
/// ones are cut on a character boundary. Messages never quote client input.
pub const MAX_MESSAGE_BYTES: usize = 256;

/// Why a request failed: goclaw's own reason, sent as `error.details.code`.
/// The top-level `error.code` is the real gateway's code for the same
/// situation ([`ErrorCode::wire_code`]), which is what real clients key on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// Malformed frame, missing field, request before or second `connect`.
    InvalidRequest,
    /// Token missing or wrong.
    Unauthorized,
    /// The protocol asked for is not one this gateway speaks for the role.
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
    /// The frame the gateway would send for it exceeds `maxPayload`.
    TooLarge,
    /// The node answered with an error of its own (in `details.nodeError`).
    NodeError,
    /// A node without a device identity, and token nodes not allowed.
    DeviceIdentityRequired,
    /// The device is not approved for this role yet (`details.requestId`).
    PairingRequired,
    /// `device.id` is not the SHA-256 of `device.publicKey`.
    DeviceIdMismatch,
    /// `device.signedAt` is more than 120 s away from the gateway's clock.
    SignatureExpired,
    /// `device.nonce` is empty.
    NonceRequired,
    /// `device.nonce` is not this connection's challenge.
    NonceMismatch,
    /// The signature verifies neither as the v3 nor as the v2 payload.
    SignatureInvalid,
    /// `device.publicKey` is not an Ed25519 key.
    PublicKeyInvalid,
}

impl ErrorCode {
    /// goclaw's reason, as sent in `error.details.code`.
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
            ErrorCode::TooLarge => "TOO_LARGE",
            ErrorCode::NodeError => "NODE_ERROR",
            ErrorCode::DeviceIdentityRequired => "DEVICE_IDENTITY_REQUIRED",
            ErrorCode::PairingRequired => "PAIRING_REQUIRED",
            ErrorCode::DeviceIdMismatch => "DEVICE_AUTH_DEVICE_ID_MISMATCH",
            ErrorCode::SignatureExpired => "DEVICE_AUTH_SIGNATURE_EXPIRED",
            ErrorCode::NonceRequired => "DEVICE_AUTH_NONCE_REQUIRED",
            ErrorCode::NonceMismatch => "DEVICE_AUTH_NONCE_MISMATCH",
            ErrorCode::SignatureInvalid => "DEVICE_AUTH_SIGNATURE_INVALID",
            ErrorCode::PublicKeyInvalid => "DEVICE_AUTH_PUBLIC_KEY_INVALID",
        }
    }

    /// The top-level `error.code`: what a real OpenClaw gateway answers in
    /// the same situation (OPENCLAW.md §1.2).
    pub fn wire_code(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest
            | ErrorCode::Unauthorized
            | ErrorCode::ProtocolMismatch
            | ErrorCode::Forbidden
            | ErrorCode::UnknownMethod
            | ErrorCode::UnknownCommand
            | ErrorCode::TooLarge
            | ErrorCode::DeviceIdMismatch
            | ErrorCode::SignatureExpired
            | ErrorCode::NonceRequired
            | ErrorCode::NonceMismatch
            | ErrorCode::SignatureInvalid
            | ErrorCode::PublicKeyInvalid => "INVALID_REQUEST",
            ErrorCode::DeviceIdentityRequired | ErrorCode::PairingRequired => "NOT_PAIRED",
            ErrorCode::NodeNotFound
            | ErrorCode::Timeout
            | ErrorCode::NodeDisconnected
            | ErrorCode::Unavailable
            | ErrorCode::RateLimited
            | ErrorCode::NodeError => "UNAVAILABLE",
        }
    }
}

/// Fields an error carries in `details` beside `code`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Detail {
    /// A protocol mismatch: the version a client should retry with.
    #[serde(rename_all = "camelCase")]
    Protocol {
        /// 3 for nodes (what makes a 2026.9.6 node host fall back).
        expected_protocol: u32,
    },
    /// The node's own error, as it sent it (bounded at parse).
    #[serde(rename_all = "camelCase")]
    Node {
        /// `{code, message}`.
        node_error: NodeError,
    },
    /// A device not approved yet: the request an operator approves, and
    /// what real node hosts need to keep retrying (OPENCLAW.md §5.3).
    #[serde(rename_all = "camelCase")]
    Pairing {
        /// `not-paired`, or `role-upgrade` for a device approved for
        /// another role.
        reason: &'static str,
        /// What `goclaw nodes approve` takes.
        request_id: String,
        /// The device.
        device_id: String,
        /// The role it asked for.
        requested_role: &'static str,
        /// Always false: keep retrying; the approval lets the next try in.
        pause_reconnect: bool,
        /// Always `wait_then_retry`.
        recommended_next_step: &'static str,
    },
}

/// A node's error, forwarded to the operator in `details.nodeError`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeError {
    /// The node's code.
    pub code: String,
    /// The node's message.
    pub message: String,
}

/// An error answer: goclaw's reason, a message for humans, and any detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// goclaw's reason; its top-level code follows from it.
    pub code: ErrorCode,
    /// What went wrong; never quotes client input, never the token.
    pub message: Cow<'static, str>,
    /// More fields for `details` (boxed: most failures have none, and a
    /// `Result` carrying a `Failure` should stay small).
    pub detail: Option<Box<Detail>>,
    /// For `retryAfterMs`: when the client may try again.
    pub retry_after_ms: Option<u64>,
}

impl Failure {
    /// Builds a failure.
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Failure {
        Failure { code, message: message.into(), detail: None, retry_after_ms: None }
    }

    /// An `INVALID_REQUEST` failure.
    pub fn invalid(message: impl Into<Cow<'static, str>>) -> Failure {
        Failure::new(ErrorCode::InvalidRequest, message)
    }

    /// The same failure with `detail` in `details`.
    pub fn with(mut self, detail: Detail) -> Failure {
        self.detail = Some(Box::new(detail));
        self
    }

    /// The same failure, retryable after `ms`.
    pub fn retry_after(mut self, ms: u64) -> Failure {
        self.retry_after_ms = Some(ms);
        self
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
    // serde's message would quote the input: say only what kind of error it is.
    let envelope: Envelope<'_> = serde_json::from_str(text).map_err(|e| {
        let what = if e.is_data() {
            "not a request frame: expected a JSON object"
        } else {
            "not a request frame: invalid JSON"
        };
        BadFrame { id: None, failure: Failure::invalid(what) }
    })?;
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

/// `error` as OpenClaw's closed schema has it: `{code, message, details,
/// retryable?, retryAfterMs?}`, nothing else.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ErrorShape<'a> {
    code: &'static str,
    message: &'a str,
    details: Details<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retryable: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_ms: Option<u64>,
}

#[derive(Serialize)]
struct Details<'a> {
    code: &'static str,
    #[serde(flatten)]
    detail: Option<&'a Detail>,
}

/// Appends an error response; `id` is raw JSON, `null` when unknown. The
/// message is cut to [`MAX_MESSAGE_BYTES`].
pub fn write_error(out: &mut Vec<u8>, id: Option<&str>, failure: &Failure) {
    let message = &failure.message[..failure.message.floor_char_boundary(MAX_MESSAGE_BYTES)];
    let shape = ErrorShape {
        code: failure.code.wire_code(),
        message,
        details: Details { code: failure.code.as_str(), detail: failure.detail.as_deref() },
        retryable: failure.retry_after_ms.map(|_| true),
        retry_after_ms: failure.retry_after_ms,
    };
    out.extend_from_slice(br#"{"type":"res","id":"#);
    out.extend_from_slice(id.unwrap_or("null").as_bytes());
    out.extend_from_slice(br#","ok":false,"error":"#);
    // Strings and numbers only: serde_json cannot fail on them.
    let _ = serde_json::to_writer(&mut *out, &shape);
    out.push(b'}');
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
        let failure = Failure::new(ErrorCode::Unauthorized, "quote \" slash \\ nl \n nul \u{0}");
        write_error(&mut out, Some(r#""a""#), &failure);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["error"]["message"], "quote \" slash \\ nl \n nul \u{0}");
        assert_eq!(
            (v["error"]["code"].as_str(), v["error"]["details"]["code"].as_str()),
            (Some("INVALID_REQUEST"), Some("UNAUTHORIZED"))
        );
        let mismatch = Failure::new(ErrorCode::ProtocolMismatch, "protocol mismatch")
            .with(Detail::Protocol { expected_protocol: 3 });
        let mut out = Vec::new();
        write_error(&mut out, Some(r#""1""#), &mismatch);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"type":"res","id":"1","ok":false,"error":{"code":"INVALID_REQUEST","message":"protocol mismatch","details":{"code":"PROTOCOL_MISMATCH","expectedProtocol":3}}}"#
        );
        let mut out = Vec::new();
        write_error(&mut out, None, &Failure::invalid("é".repeat(200)));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert!(v["error"]["message"].as_str().unwrap().len() <= MAX_MESSAGE_BYTES);
        let mut out = event_prefix("tick", r#"{"ts":1}"#);
        out.extend_from_slice(br#","seq":1}"#);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!((v["event"].as_str(), v["seq"].as_u64()), (Some("tick"), Some(1)));
    }
}
