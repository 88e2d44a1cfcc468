//! The `connect` request's params (SPEC §4.1, OPENCLAW.md §2.2): what real
//! node hosts and CLIs send, validated into a [`Connect`] with every string
//! and list bounded, and the protocol version agreed on. Fields the gateway
//! does not use are accepted and ignored, as real v4 clients send more than
//! v3 knows. Pure: no gateway state, no I/O, never a panic.

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::wire::frame::{Detail, ErrorCode, Failure, MAX_ID_BYTES, Role};
use crate::wire::json::invalid_params;
use crate::wire::text::{check_label, check_name};

/// The protocol nodes speak (and the one a mismatch asks them to use).
pub const NODE_PROTOCOL: u32 = 3;
/// The newest protocol served to operators (the 2026.9.6 CLI speaks only 4).
pub const OPERATOR_PROTOCOL: u32 = 4;
/// Longest label (`displayName`, `platform`, `version`, ...), in bytes.
pub const MAX_LABEL_BYTES: usize = 256;
/// Most commands a node may declare.
pub const MAX_COMMANDS: usize = 256;
/// Longest command name, in bytes.
pub const MAX_COMMAND_BYTES: usize = 128;
/// Most bytes of command names a node may declare in all: keeps one
/// `node.list` entry small (SPEC §5: nothing sent grows past its bound).
pub const MAX_COMMANDS_TOTAL_BYTES: usize = 8 * 1024;
/// Most capabilities a node may declare, and the longest one.
pub const MAX_CAPS: usize = 64;
/// Longest capability name, in bytes.
pub const MAX_CAP_BYTES: usize = 64;
/// Most scopes an operator may ask for, and the longest one.
pub const MAX_SCOPES: usize = 16;
/// Longest scope, in bytes.
pub const MAX_SCOPE_BYTES: usize = 64;
/// Longest public key, signature or nonce in `device` (v4 verifiers cap
/// key input at 4096 characters).
pub const MAX_DEVICE_FIELD_BYTES: usize = 4096;

/// A validated `connect` request.
#[derive(Debug)]
pub struct Connect {
    /// Node or operator.
    pub role: Role,
    /// The protocol version agreed on (3 for nodes; 3 or 4 for operators).
    pub protocol: u32,
    /// `auth.token`, if given.
    pub token: Option<String>,
    /// `auth.deviceToken`, if given.
    pub device_token: Option<String>,
    /// What the client says about itself.
    pub client: ClientInfo,
    /// Capabilities a node declares (sorted, deduplicated).
    pub caps: Vec<String>,
    /// Commands a node declares (sorted, deduplicated); empty for operators.
    pub commands: Vec<String>,
    /// Scopes an operator asks for, in the order sent (they are signed).
    pub scopes: Vec<String>,
    /// The device identity, if the client has one (not yet verified).
    pub device: Option<DeviceProof>,
}

/// What a client says about itself in `connect.client`.
#[derive(Debug, Default, Clone)]
pub struct ClientInfo {
    /// `client.id` (for a real node host, `node-host`); required for nodes.
    pub id: String,
    /// Human name; the id when absent.
    pub display_name: String,
    /// Free-form platform name (`linux`, ...).
    pub platform: String,
    /// The client's version.
    pub version: String,
    /// `client.mode` (`node`, `cli`, `backend`, `probe`, ...).
    pub mode: String,
    /// `client.deviceFamily`, if given.
    pub device_family: String,
    /// `client.modelIdentifier`, if given.
    pub model_identifier: String,
    /// `client.instanceId`: how the client names itself (real node hosts
    /// send a UUID; `goclaw node` its `--id`).
    pub instance_id: String,
}

/// `connect.device`: a claim the gateway verifies (`wire::device`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceProof {
    /// Hex SHA-256 of the raw public key.
    pub id: String,
    /// The raw 32-byte Ed25519 key, base64url (or base64).
    pub public_key: String,
    /// The signature of the payload string, base64url (or base64).
    pub signature: String,
    /// Unix ms the client signed at.
    pub signed_at: u64,
    /// The challenge nonce it signed.
    pub nonce: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConnectParams {
    min_protocol: u32,
    max_protocol: u32,
    client: Option<ClientParams>,
    role: Option<String>,
    #[serde(default, deserialize_with = "bounded::<_, MAX_CAPS>")]
    caps: Vec<String>,
    #[serde(default, deserialize_with = "bounded::<_, MAX_COMMANDS>")]
    commands: Vec<String>,
    #[serde(default, deserialize_with = "bounded::<_, MAX_SCOPES>")]
    scopes: Vec<String>,
    auth: Option<AuthParams>,
    device: Option<DeviceProof>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClientParams {
    id: Option<String>,
    display_name: Option<String>,
    version: Option<String>,
    platform: Option<String>,
    mode: Option<String>,
    device_family: Option<String>,
    model_identifier: Option<String>,
    instance_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuthParams {
    token: Option<String>,
    device_token: Option<String>,
}

/// Validates `connect` params (SPEC §4.1) and agrees on a protocol.
///
/// # Errors
/// `INVALID_REQUEST` for missing or malformed fields and bounds exceeded
/// (the message never quotes the input); `PROTOCOL_MISMATCH` with
/// `details.expectedProtocol: 3` when no version fits.
pub fn parse_connect(params: Option<&RawValue>) -> Result<Connect, Failure> {
    let params = params.ok_or_else(|| Failure::invalid("connect needs params"))?;
    let p: ConnectParams = serde_json::from_str(params.get()).map_err(|e| invalid_params("connect", &e))?;
    let role = match p.role.as_deref() {
        None | Some("node") => Role::Node,
        Some("operator") => Role::Operator,
        Some(_) => return Err(Failure::invalid("invalid role")),
    };
    let protocol = negotiate(role, p.min_protocol, p.max_protocol)?;
    let client = client_info(p.client)?;
    let (mut caps, mut commands) = (Vec::new(), Vec::new());
    if role == Role::Node {
        if client.id.is_empty() {
            return Err(Failure::invalid("a node needs client.id"));
        }
        caps = sorted(p.caps, "caps[]", MAX_CAP_BYTES)?;
        commands = sorted(p.commands, "commands[]", MAX_COMMAND_BYTES)?;
        if commands.iter().map(|c| c.len() + 3).sum::<usize>() > MAX_COMMANDS_TOTAL_BYTES {
            return Err(Failure::invalid(format!("commands must total at most {MAX_COMMANDS_TOTAL_BYTES} bytes")));
        }
    }
    for scope in &p.scopes {
        check_name("scopes[]", scope, MAX_SCOPE_BYTES)?;
    }
    if let Some(device) = &p.device {
        check_name("device.id", &device.id, MAX_ID_BYTES)?;
        for (field, value) in [
            ("device.publicKey", &device.public_key),
            ("device.signature", &device.signature),
            ("device.nonce", &device.nonce),
        ] {
            check_name(field, value, MAX_DEVICE_FIELD_BYTES)?;
        }
    }
    let (token, device_token) = p.auth.map_or((None, None), |a| (a.token, a.device_token));
    Ok(Connect { role, protocol, token, device_token, client, caps, commands, scopes: p.scopes, device: p.device })
}

/// The protocol a client gets: nodes speak 3 only (a v4 node host falls
/// back when told `expectedProtocol: 3`); operators get 4 if they can, else 3.
fn negotiate(role: Role, min: u32, max: u32) -> Result<u32, Failure> {
    let fits = |version: u32| (min..=max).contains(&version);
    match role {
        Role::Node if fits(NODE_PROTOCOL) => Ok(NODE_PROTOCOL),
        Role::Operator if fits(OPERATOR_PROTOCOL) => Ok(OPERATOR_PROTOCOL),
        Role::Operator if fits(NODE_PROTOCOL) => Ok(NODE_PROTOCOL),
        _ => Err(Failure::new(ErrorCode::ProtocolMismatch, "protocol mismatch")
            .with(Detail::Protocol { expected_protocol: NODE_PROTOCOL })),
    }
}

fn client_info(params: Option<ClientParams>) -> Result<ClientInfo, Failure> {
    let mut client = ClientInfo::default();
    let Some(c) = params else { return Ok(client) };
    if let Some(id) = c.id {
        check_name("client.id", &id, MAX_ID_BYTES)?;
        client.id = id;
    }
    for (field, value, slot) in [
        ("client.displayName", c.display_name, &mut client.display_name),
        ("client.platform", c.platform, &mut client.platform),
        ("client.version", c.version, &mut client.version),
        ("client.mode", c.mode, &mut client.mode),
        ("client.deviceFamily", c.device_family, &mut client.device_family),
        ("client.modelIdentifier", c.model_identifier, &mut client.model_identifier),
        ("client.instanceId", c.instance_id, &mut client.instance_id),
    ] {
        if let Some(value) = value {
            check_label(field, &value, MAX_LABEL_BYTES)?;
            *slot = value;
        }
    }
    if client.display_name.is_empty() {
        client.display_name = client.id.clone();
    }
    Ok(client)
}

/// Checks each name, then sorts and deduplicates.
fn sorted(mut names: Vec<String>, field: &'static str, max: usize) -> Result<Vec<String>, Failure> {
    for name in &names {
        check_name(field, name, max)?;
    }
    names.sort_unstable();
    names.dedup();
    Ok(names)
}

/// Deserializes an array of strings, refusing it as soon as it passes
/// `MAX` entries, so a huge array is never materialized.
fn bounded<'de, D: Deserializer<'de>, const MAX: usize>(deserializer: D) -> Result<Vec<String>, D::Error> {
    struct Bounded<const MAX: usize>(PhantomData<()>);
    impl<'de, const MAX: usize> Visitor<'de> for Bounded<MAX> {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "an array of at most {MAX} strings")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
            let mut out = Vec::new();
            while let Some(item) = seq.next_element::<String>()? {
                if out.len() == MAX {
                    return Err(de::Error::custom(format!("more than {MAX} entries")));
                }
                out.push(item);
            }
            Ok(out)
        }
    }
    deserializer.deserialize_seq(Bounded::<MAX>(PhantomData))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_string()).unwrap()
    }

    #[test]
    fn nodes_and_operators() {
        let node = raw(r#"{"minProtocol":3,"maxProtocol":3,"client":{"id":"pi","platform":"linux","mode":"node"},
                "caps":["system"],"commands":["echo","device.status","echo"],"auth":{"token":"t"},"pathEnv":"/bin"}"#);
        let c = parse_connect(Some(&node)).unwrap();
        assert_eq!((c.role, c.protocol), (Role::Node, 3));
        assert_eq!(c.client.display_name, "pi");
        assert_eq!(c.commands, ["device.status", "echo"]);
        assert_eq!(c.token.as_deref(), Some("t"));

        let op = raw(r#"{"minProtocol":1,"maxProtocol":5,"role":"operator","scopes":["operator.read"]}"#);
        assert_eq!(parse_connect(Some(&op)).map(|c| (c.role, c.protocol)).unwrap(), (Role::Operator, 4));
        let v4_cli = raw(r#"{"minProtocol":4,"maxProtocol":4,"role":"operator","client":{"id":"cli","mode":"cli"}}"#);
        assert_eq!(parse_connect(Some(&v4_cli)).unwrap().protocol, 4);
        let v3_cli = raw(r#"{"minProtocol":3,"maxProtocol":3,"role":"operator"}"#);
        assert_eq!(parse_connect(Some(&v3_cli)).unwrap().protocol, 3);
    }

    #[test]
    fn a_v4_node_gets_the_mismatch_that_makes_it_fall_back() {
        let node = raw(r#"{"minProtocol":4,"maxProtocol":4,"client":{"id":"node-host","mode":"node"},"role":"node"}"#);
        let failure = parse_connect(Some(&node)).unwrap_err();
        assert_eq!((failure.code, failure.message.as_ref()), (ErrorCode::ProtocolMismatch, "protocol mismatch"));
        assert_eq!(failure.detail.as_deref(), Some(&Detail::Protocol { expected_protocol: 3 }));
    }

    #[test]
    fn refusals() {
        let cases: &[(&str, ErrorCode)] = &[
            (r#"{"minProtocol":1,"maxProtocol":2,"role":"operator"}"#, ErrorCode::ProtocolMismatch),
            (r#"{"maxProtocol":3,"client":{"id":"a"}}"#, ErrorCode::InvalidRequest),
            (r#"{"minProtocol":3,"maxProtocol":3}"#, ErrorCode::InvalidRequest),
            (r#"{"minProtocol":3,"maxProtocol":3,"client":{"id":""}}"#, ErrorCode::InvalidRequest),
            (r#"{"minProtocol":3,"maxProtocol":3,"client":{"id":"a\u202eb"}}"#, ErrorCode::InvalidRequest),
            (
                r#"{"minProtocol":3,"maxProtocol":3,"client":{"id":"a","displayName":"x\u2028"}}"#,
                ErrorCode::InvalidRequest,
            ),
            (r#"{"minProtocol":3,"maxProtocol":3,"role":"admin"}"#, ErrorCode::InvalidRequest),
            (r#"{"minProtocol":1e400,"maxProtocol":3}"#, ErrorCode::InvalidRequest),
            (r#"{"minProtocol":"3","maxProtocol":3}"#, ErrorCode::InvalidRequest),
            (r#"{"minProtocol":3,"maxProtocol":3,"client":{"id":"a"},"commands":[1]}"#, ErrorCode::InvalidRequest),
            (r#"{"minProtocol":3,"maxProtocol":3,"client":{"id":"a"},"auth":"tok"}"#, ErrorCode::InvalidRequest),
        ];
        for &(params, code) in cases {
            assert_eq!(parse_connect(Some(&raw(params))).unwrap_err().code, code, "{params}");
        }
        assert!(parse_connect(None).is_err());
        let many = format!("[{}\"x\"]", "\"c\",".repeat(100_000));
        let connect = raw(&format!(r#"{{"minProtocol":3,"maxProtocol":3,"client":{{"id":"n"}},"commands":{many}}}"#));
        assert!(parse_connect(Some(&connect)).is_err());
        let wide: Vec<String> = (0..100).map(|i| format!("\"{i:0>120}\"")).collect();
        let connect = raw(&format!(
            r#"{{"minProtocol":3,"maxProtocol":3,"client":{{"id":"n"}},"commands":[{}]}}"#,
            wide.join(",")
        ));
        assert!(parse_connect(Some(&connect)).unwrap_err().message.contains("total"));
    }
}
