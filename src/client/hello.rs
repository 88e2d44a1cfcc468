//! The `connect` request goclaw's clients send, and what they read from
//! `hello-ok`, decided in this one place so that goclaw and real OpenClaw
//! gateways (2026.5.7, protocol v3; 2026.9.6, v4) all accept it
//! (OPENCLAW.md §2.2, §2.4, §4, §9(c)). Pure: no I/O.
//!
//! Where goclaw and OpenClaw differ, and the choice made:
//! - `client.id` and `client.mode` are closed enums on OpenClaw: a node is
//!   `node-host`/`node` (the only node id for a headless host), an operator
//!   `cli`/`cli`. goclaw takes any id; the node's own name goes in
//!   `client.instanceId` and `client.displayName`, which both accept.
//! - Protocol: nodes ask for `[3,3]` (2026.5.7 speaks only 3; 2026.9.6
//!   serves 3 to nodes in its N-1 window; goclaw keeps nodes on 3).
//!   Operators ask for `[3,4]`: 2026.5.7 answers 3, 2026.9.6 and goclaw 4.
//! - Every object is closed on OpenClaw: only v3 schema fields are sent
//!   (no `deviceFamily`, no `pathEnv`, nothing v4-only).
//! - Operators ask for every scope their commands use, on the first
//!   connect: 2026.5.7 grants a device-less operator none and approves a
//!   new device's first scopes silently on loopback, but a later wider ask
//!   is a scope upgrade it never approves by itself. goclaw grants what is
//!   asked.
//! - The signature is the v3 payload with `signedAt` = the challenge's
//!   `ts` (2026.9.6 clients do this; both gateways allow 120 s of skew),
//!   over `auth.token ?? auth.deviceToken`.
//! - Credentials: with a shared token, `auth.token` is it and
//!   `auth.deviceToken` the stored device token (goclaw then keeps the
//!   device token instead of issuing a new one); without, the stored device
//!   token goes in both fields (2026.5.7 reads `auth.token`, 2026.9.6
//!   `auth.deviceToken`).

use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::util::unix_ms;
use crate::wire::auth::Token;
use crate::wire::device::{DeviceKey, PayloadFields};

/// Which side of the protocol a client is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientRole {
    /// `goclaw node`.
    Node,
    /// `goclaw nodes`, `invoke`, `watch`.
    Operator,
}

impl ClientRole {
    /// `role` in `connect`, and the key for stored device tokens.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientRole::Node => "node",
            ClientRole::Operator => "operator",
        }
    }

    /// `client.id`, `client.mode`.
    fn client(self) -> (&'static str, &'static str) {
        match self {
            ClientRole::Node => ("node-host", "node"),
            ClientRole::Operator => ("cli", "cli"),
        }
    }

    /// `minProtocol`, `maxProtocol`.
    pub fn protocols(self) -> (u32, u32) {
        match self {
            ClientRole::Node => (3, 3),
            ClientRole::Operator => (3, 4),
        }
    }

    /// `scopes`, in the order signed.
    pub fn scopes(self) -> &'static [&'static str] {
        match self {
            ClientRole::Node => &[],
            ClientRole::Operator => &OPERATOR_SCOPES,
        }
    }
}

/// What the operator commands ask for: reading (`nodes`, `watch`),
/// invoking, and listing and deciding pairing requests (approving a node
/// that declares `system.run` needs `operator.admin` on OpenClaw).
pub const OPERATOR_SCOPES: [&str; 4] = ["operator.read", "operator.write", "operator.pairing", "operator.admin"];
/// The capabilities a node declares.
pub const NODE_CAPS: [&str; 1] = ["system"];
/// `hello-ok.policy.tickIntervalMs` when absent (OpenClaw's default).
const DEFAULT_TICK_MS: u64 = 30_000;
/// The shortest tick interval believed (a gateway saying 0 must not make
/// the keepalive fire constantly).
const MIN_TICK_MS: u64 = 1_000;
/// The longest one believed (the keepalive still notices a dead gateway).
const MAX_TICK_MS: u64 = 600_000;

/// Everything `connect` says.
#[derive(Clone, Copy)]
pub struct Hello<'a> {
    /// Node or operator.
    pub role: ClientRole,
    /// `client.instanceId`: how a node names itself (`--id`).
    pub instance_id: Option<&'a str>,
    /// `client.displayName`.
    pub display_name: Option<&'a str>,
    /// The commands a node answers.
    pub commands: &'a [String],
    /// The gateway's shared token, if configured.
    pub shared: Option<&'a Token>,
    /// The device token this gateway gave this device for this role.
    pub device_token: Option<&'a Token>,
    /// The device key that signs, if any.
    pub device: Option<&'a DeviceKey>,
}

impl Hello<'_> {
    /// The `connect` params answering `challenge` (the `connect.challenge`
    /// event).
    ///
    /// # Errors
    /// A challenge without a nonce (one line for the user).
    pub fn params(&self, challenge: &Value) -> Result<Value, String> {
        let payload = &challenge["payload"];
        let nonce = payload["nonce"].as_str().filter(|n| !n.is_empty()).ok_or("the challenge has no nonce")?;
        let signed_at = payload["ts"].as_u64().unwrap_or_else(unix_ms);
        let (client_id, mode) = self.role.client();
        let (min, max) = self.role.protocols();
        let platform = std::env::consts::OS;
        let mut client =
            json!({"id": client_id, "version": env!("CARGO_PKG_VERSION"), "platform": platform, "mode": mode});
        if let Some(name) = self.display_name {
            client["displayName"] = json!(name);
        }
        if let Some(instance) = self.instance_id {
            client["instanceId"] = json!(instance);
        }
        let (token, device_token) = self.auth();
        let mut auth = Map::new();
        if let Some(token) = token {
            auth.insert("token".into(), json!(token));
        }
        if let Some(token) = device_token {
            auth.insert("deviceToken".into(), json!(token));
        }
        let mut params = json!({
            "minProtocol": min, "maxProtocol": max, "client": client,
            "role": self.role.as_str(), "scopes": self.role.scopes(),
        });
        if self.role == ClientRole::Node {
            params["caps"] = json!(NODE_CAPS);
            params["commands"] = json!(self.commands);
        }
        if !auth.is_empty() {
            params["auth"] = Value::Object(auth);
        }
        if let Some(key) = self.device {
            let id = key.device_id();
            let fields = PayloadFields {
                device_id: &id,
                client_id,
                client_mode: mode,
                role: self.role.as_str(),
                scopes: self.role.scopes(),
                signed_at_ms: signed_at,
                token: token.or(device_token),
                nonce,
                platform: Some(platform),
                device_family: None,
            };
            params["device"] = json!({
                "id": id, "publicKey": key.public_key_b64url(), "signature": key.sign_v3(&fields),
                "signedAt": signed_at, "nonce": nonce,
            });
        }
        Ok(params)
    }

    /// `auth.token` and `auth.deviceToken`.
    fn auth(&self) -> (Option<&str>, Option<&str>) {
        let stored = self.device_token.map(Token::secret);
        match self.shared {
            Some(shared) => (Some(shared.secret()), stored),
            None => (stored, stored),
        }
    }
}

/// What a client reads from `hello-ok`. `Debug` shows the device token as
/// `***`.
#[derive(Debug, Clone)]
pub struct Welcome {
    /// The protocol the gateway speaks on this connection.
    pub protocol: u64,
    /// `server.connId`, for logs.
    pub conn_id: String,
    /// How often the gateway sends `tick` (bounded to 1 s..10 min).
    pub tick_interval: Duration,
    /// The scopes granted, if the gateway says.
    pub scopes: Option<Vec<String>>,
    /// A device token issued for this device and role, to keep.
    pub device_token: Option<Token>,
}

impl Welcome {
    /// Reads a `hello-ok` payload; anything missing takes its default.
    pub fn read(hello: &Value) -> Welcome {
        let tick = hello["policy"]["tickIntervalMs"].as_u64().unwrap_or(DEFAULT_TICK_MS);
        let auth = &hello["auth"];
        Welcome {
            protocol: hello["protocol"].as_u64().unwrap_or(0),
            conn_id: hello["server"]["connId"].as_str().unwrap_or_default().chars().take(64).collect(),
            tick_interval: Duration::from_millis(tick.clamp(MIN_TICK_MS, MAX_TICK_MS)),
            scopes: auth["scopes"]
                .as_array()
                .map(|s| s.iter().filter_map(Value::as_str).take(64).map(str::to_string).collect()),
            // Empty or longer than MAX_TOKEN_BYTES: not one to keep.
            device_token: auth["deviceToken"]
                .as_str()
                .and_then(|t| Token::new("hello-ok.auth.deviceToken", t.to_string()).ok()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::device::{check_device_id, payload_v3, verify_signature};

    fn challenge() -> Value {
        json!({"type":"event","event":"connect.challenge","payload":{"nonce":"n-1","ts":1_796_018_051_413u64}})
    }

    fn token(text: &str) -> Token {
        Token::new("--token", text.to_string()).unwrap()
    }

    /// Checks a signed connect the way both real gateways do (v3 payload,
    /// token = auth.token ?? auth.deviceToken) and returns the payload.
    fn verified(params: &Value) -> String {
        let device = &params["device"];
        let raw = check_device_id(device["id"].as_str().unwrap(), device["publicKey"].as_str().unwrap()).unwrap();
        let scopes: Vec<&str> = params["scopes"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
        let auth = &params["auth"];
        let fields = PayloadFields {
            device_id: device["id"].as_str().unwrap(),
            client_id: params["client"]["id"].as_str().unwrap(),
            client_mode: params["client"]["mode"].as_str().unwrap(),
            role: params["role"].as_str().unwrap(),
            scopes: &scopes,
            signed_at_ms: device["signedAt"].as_u64().unwrap(),
            token: auth["token"].as_str().or(auth["deviceToken"].as_str()),
            nonce: device["nonce"].as_str().unwrap(),
            platform: params["client"]["platform"].as_str(),
            device_family: params["client"]["deviceFamily"].as_str(),
        };
        verify_signature(&raw, device["signature"].as_str().unwrap(), &fields).expect("signature verifies");
        payload_v3(&fields)
    }

    /// The keys of the v3 connect schema (OPENCLAW.md §2.2): closed objects.
    fn only_v3_keys(params: &Value) {
        let allowed = ["minProtocol", "maxProtocol", "client", "caps", "commands", "role", "scopes", "auth", "device"];
        for key in params.as_object().unwrap().keys() {
            assert!(allowed.contains(&key.as_str()), "{key} is not in the v3 schema");
        }
        for key in params["client"].as_object().unwrap().keys() {
            let client = ["id", "displayName", "version", "platform", "mode", "instanceId"];
            assert!(client.contains(&key.as_str()), "client.{key} is not sent to v3");
        }
        for key in params["auth"].as_object().map(|a| a.keys().collect::<Vec<_>>()).unwrap_or_default() {
            assert!(["token", "deviceToken"].contains(&key.as_str()), "auth.{key}");
        }
    }

    #[test]
    fn a_node_is_a_node_host_on_v3_signed_over_the_shared_token() {
        let key = DeviceKey::generate().unwrap();
        let (shared, stored) = (token("shared"), token("dev-tok"));
        let commands = vec!["system.which".to_string(), "system.run".to_string()];
        let hello = Hello {
            role: ClientRole::Node,
            instance_id: Some("kitchen-pi"),
            display_name: Some("Kitchen Pi"),
            commands: &commands,
            shared: Some(&shared),
            device_token: Some(&stored),
            device: Some(&key),
        };
        let params = hello.params(&challenge()).unwrap();
        only_v3_keys(&params);
        assert_eq!(params["client"]["id"], "node-host");
        assert_eq!(params["client"]["mode"], "node");
        assert_eq!(params["client"]["instanceId"], "kitchen-pi");
        assert_eq!((params["minProtocol"].clone(), params["maxProtocol"].clone()), (json!(3), json!(3)));
        assert_eq!(params["scopes"], json!([]));
        assert_eq!(params["caps"], json!(["system"]));
        assert_eq!(params["auth"], json!({"token": "shared", "deviceToken": "dev-tok"}));
        assert_eq!(params["device"]["signedAt"], 1_796_018_051_413u64);
        let signed = verified(&params);
        let id = key.device_id();
        assert_eq!(signed, format!("v3|{id}|node-host|node|node||1796018051413|shared|n-1|linux|"));
    }

    #[test]
    fn without_a_shared_token_the_device_token_goes_in_both_fields() {
        let key = DeviceKey::generate().unwrap();
        let stored = token("dev-tok");
        let hello = Hello {
            role: ClientRole::Operator,
            instance_id: None,
            display_name: None,
            commands: &[],
            shared: None,
            device_token: Some(&stored),
            device: Some(&key),
        };
        let params = hello.params(&challenge()).unwrap();
        only_v3_keys(&params);
        assert_eq!(params["auth"], json!({"token": "dev-tok", "deviceToken": "dev-tok"}));
        assert_eq!((params["client"]["id"].clone(), params["client"]["mode"].clone()), (json!("cli"), json!("cli")));
        assert_eq!((params["minProtocol"].clone(), params["maxProtocol"].clone()), (json!(3), json!(4)));
        assert_eq!(params.get("commands"), None);
        let signed = verified(&params);
        assert!(signed.contains("|cli|cli|operator|operator.read,operator.write,operator.pairing,operator.admin|"));
        assert!(signed.contains("|dev-tok|n-1|"));
        // Nothing at all: no auth object, and an unsigned connect.
        let bare = Hello { device_token: None, device: None, ..hello }.params(&challenge()).unwrap();
        assert_eq!((bare.get("auth"), bare.get("device")), (None, None));
        // A challenge without a nonce cannot be answered.
        assert!(hello.params(&json!({"payload": {"ts": 1}})).is_err());
    }

    #[test]
    fn hello_ok_is_read_with_defaults_and_bounds() {
        let hello = json!({"type":"hello-ok","protocol":3,"server":{"connId":"c1"},
            "auth":{"role":"node","scopes":[],"deviceToken":"tok"},"policy":{"tickIntervalMs":15000}});
        let welcome = Welcome::read(&hello);
        assert_eq!(welcome.tick_interval, Duration::from_secs(15));
        assert_eq!(welcome.device_token.as_ref().map(Token::secret), Some("tok"));
        assert!(!format!("{welcome:?}").contains("tok\""), "{welcome:?}");
        assert_eq!((welcome.protocol, welcome.conn_id.as_str()), (3, "c1"));
        let bare = Welcome::read(&json!({}));
        assert_eq!(bare.tick_interval, Duration::from_secs(30));
        assert!(bare.device_token.is_none() && bare.scopes.is_none());
        let zero = Welcome::read(&json!({"policy":{"tickIntervalMs":0}}));
        assert_eq!(zero.tick_interval, Duration::from_secs(1));
    }
}
