//! `pairing.json`, the store's file format (version 1): one JSON object,
//! one record per line so it reads and diffs well; a device's details are
//! the same `device` object in both kinds of record:
//!
//! ```text
//! {"version":1,
//! "paired":[
//! {"device":{"deviceId":"…","publicKey":"…",…},"roles":["node"],"scopes":[],…,"tokens":[{"role":"node","sha256":"…",…}]}
//! ],
//! "pending":[
//! {"requestId":"…","device":{…},"role":"node",…,"sourceIp":"203.0.113.7","ts":…}
//! ]}
//! ```
//!
//! Reading refuses, with a reason, anything the store would not have
//! written: another version, an unknown or missing field, a duplicate, a
//! value out of bounds. Unknown fields are refused rather than ignored
//! because every write rewrites the whole file: a field this version does
//! not know (a newer goclaw's, or a hand edit's typo) would be dropped
//! silently at the next approval. Never reads or writes the disk itself.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::wire::frame::Role;

use super::crypto::TokenHash;
use super::state::{DeviceInfo, PairedDevice, PendingRequest, State, TokenRecord, role_rank};
use super::{MAX_PAIRED_DEVICES, MAX_PENDING, StoreError, check};

/// The version this code reads and writes.
pub(super) const VERSION: u32 = 1;

/// Just the version, read first so another version is named as such rather
/// than reported as its first unknown field.
#[derive(Deserialize)]
struct Version {
    version: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DiskFile {
    #[serde(rename = "version")]
    _version: u32,
    paired: Vec<DiskDevice>,
    pending: Vec<DiskPending>,
}

/// A device as both kinds of record carry it (`DeviceInfo`).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct DiskInfo {
    device_id: String,
    public_key: String,
    display_name: String,
    platform: String,
    version: String,
    client_id: String,
    client_mode: String,
    device_family: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct DiskDevice {
    device: DiskInfo,
    roles: Vec<String>,
    scopes: Vec<String>,
    created_at_ms: u64,
    approved_at_ms: u64,
    tokens: Vec<DiskToken>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct DiskToken {
    role: String,
    sha256: String,
    created_at_ms: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct DiskPending {
    request_id: String,
    device: DiskInfo,
    role: String,
    scopes: Vec<String>,
    caps: Vec<String>,
    commands: Vec<String>,
    /// Text, parsed by hand: serde's `IpAddr` costs 8 KiB of binary.
    source_ip: String,
    ts: u64,
}

/// The file's bytes for `state`.
pub(super) fn encode(state: &State) -> Vec<u8> {
    let mut out = format!("{{\"version\":{VERSION},\n\"paired\":[").into_bytes();
    for (i, device) in state.paired.values().enumerate() {
        out.extend_from_slice(if i == 0 { b"\n" } else { b",\n" });
        record(&mut out, &disk_device(device));
    }
    out.extend_from_slice(b"\n],\n\"pending\":[");
    for (i, request) in state.pending.iter().enumerate() {
        out.extend_from_slice(if i == 0 { b"\n" } else { b",\n" });
        record(&mut out, &disk_pending(request));
    }
    out.extend_from_slice(b"\n]}\n");
    out
}

fn record(out: &mut Vec<u8>, value: &impl Serialize) {
    // Plain structs of strings, numbers and addresses: nothing can fail.
    serde_json::to_writer(out, value).expect("invariant: pairing records always serialize");
}

/// The state a file holds.
///
/// # Errors
/// One line saying what is wrong, for `StoreError::Load`.
pub(super) fn decode(bytes: &[u8]) -> Result<State, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("cannot parse: not UTF-8: {e}"))?;
    let version: Version = serde_json::from_str(text).map_err(|e| format!("cannot parse: {e}"))?;
    if version.version != VERSION {
        return Err(format!("unsupported version {} (this goclaw reads version {VERSION})", version.version));
    }
    let file: DiskFile = serde_json::from_str(text).map_err(|e| format!("cannot parse: {e}"))?;
    if file.paired.len() > MAX_PAIRED_DEVICES {
        return Err(format!("more than {MAX_PAIRED_DEVICES} paired devices"));
    }
    if file.pending.len() > MAX_PENDING {
        return Err(format!("more than {MAX_PENDING} pending requests"));
    }
    let mut state = State { paired: BTreeMap::new(), pending: Vec::with_capacity(file.pending.len()) };
    for (i, disk) in file.paired.into_iter().enumerate() {
        let device = paired_device(disk).map_err(|e| format!("paired[{i}]: {e}"))?;
        if state.paired.insert(device.device.device_id.clone(), device).is_some() {
            return Err(format!("paired[{i}]: deviceId appears twice"));
        }
    }
    for (i, disk) in file.pending.into_iter().enumerate() {
        let request = pending_request(disk).map_err(|e| format!("pending[{i}]: {e}"))?;
        let twin = state.pending.iter().find(|p| {
            p.request_id == request.request_id
                || (p.device.device_id == request.device.device_id && p.role == request.role)
        });
        if twin.is_some() {
            return Err(format!("pending[{i}]: a second request with its requestId, or for its device and role"));
        }
        state.pending.push(request);
    }
    Ok(state)
}

fn paired_device(disk: DiskDevice) -> Result<PairedDevice, StoreError> {
    let device = device_info(disk.device)?;
    let mut roles = Vec::with_capacity(disk.roles.len());
    for name in &disk.roles {
        let role = parse_role("roles", name)?;
        if roles.contains(&role) {
            return Err(invalid("roles", "lists a role twice"));
        }
        roles.push(role);
    }
    if roles.is_empty() {
        return Err(invalid("roles", "is empty"));
    }
    roles.sort_by_key(|r| role_rank(*r));
    let mut tokens: Vec<TokenRecord> = Vec::with_capacity(disk.tokens.len());
    for token in disk.tokens {
        let role = parse_role("tokens[].role", &token.role)?;
        if !roles.contains(&role) || tokens.iter().any(|t| t.role == role) {
            return Err(invalid("tokens", "must hold at most one token per approved role"));
        }
        let hash = TokenHash::from_hex(&token.sha256)
            .ok_or_else(|| invalid("tokens[].sha256", "must be 64 lowercase hex characters"))?;
        tokens.push(TokenRecord { role, created_at_ms: token.created_at_ms, hash });
    }
    tokens.sort_by_key(|t| role_rank(t.role));
    Ok(PairedDevice {
        device,
        roles,
        scopes: check::scopes(disk.scopes)?,
        created_at_ms: disk.created_at_ms,
        approved_at_ms: disk.approved_at_ms,
        tokens,
    })
}

fn pending_request(disk: DiskPending) -> Result<PendingRequest, StoreError> {
    check::request_id(&disk.request_id)?;
    let device = device_info(disk.device)?;
    check::names("caps", &disk.caps)?;
    check::names("commands", &disk.commands)?;
    Ok(PendingRequest {
        request_id: disk.request_id,
        device,
        role: parse_role("role", &disk.role)?,
        scopes: check::scopes(disk.scopes)?,
        caps: disk.caps,
        commands: disk.commands,
        source_ip: disk.source_ip.parse().map_err(|_| invalid("sourceIp", "must be an IP address"))?,
        ts_ms: disk.ts,
    })
}

fn device_info(disk: DiskInfo) -> Result<DeviceInfo, StoreError> {
    let device = DeviceInfo {
        device_id: disk.device_id,
        public_key: disk.public_key,
        display_name: disk.display_name,
        platform: disk.platform,
        version: disk.version,
        client_id: disk.client_id,
        client_mode: disk.client_mode,
        device_family: disk.device_family,
    };
    check::device(&device)?;
    Ok(device)
}

fn disk_info(d: &DeviceInfo) -> DiskInfo {
    DiskInfo {
        device_id: d.device_id.clone(),
        public_key: d.public_key.clone(),
        display_name: d.display_name.clone(),
        platform: d.platform.clone(),
        version: d.version.clone(),
        client_id: d.client_id.clone(),
        client_mode: d.client_mode.clone(),
        device_family: d.device_family.clone(),
    }
}

fn disk_device(paired: &PairedDevice) -> DiskDevice {
    DiskDevice {
        device: disk_info(&paired.device),
        roles: paired.roles.iter().map(|r| r.as_str().to_owned()).collect(),
        scopes: paired.scopes.clone(),
        created_at_ms: paired.created_at_ms,
        approved_at_ms: paired.approved_at_ms,
        tokens: paired
            .tokens
            .iter()
            .map(|t| DiskToken {
                role: t.role.as_str().to_owned(),
                sha256: t.hash.to_hex(),
                created_at_ms: t.created_at_ms,
            })
            .collect(),
    }
}

fn disk_pending(p: &PendingRequest) -> DiskPending {
    DiskPending {
        request_id: p.request_id.clone(),
        device: disk_info(&p.device),
        role: p.role.as_str().to_owned(),
        scopes: p.scopes.clone(),
        caps: p.caps.clone(),
        commands: p.commands.clone(),
        source_ip: p.source_ip.to_string(),
        ts: p.ts_ms,
    }
}

fn parse_role(field: &'static str, name: &str) -> Result<Role, StoreError> {
    match name {
        "node" => Ok(Role::Node),
        "operator" => Ok(Role::Operator),
        _ => Err(invalid(field, "must be \"node\" or \"operator\"")),
    }
}

fn invalid(field: &'static str, problem: &str) -> StoreError {
    StoreError::Invalid { field, problem: problem.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::super::tests::sample_device;
    use super::*;

    fn sample_state() -> State {
        let mut state = State::default();
        let new = |seed: u8, role| super::super::NewRequest {
            device: sample_device(seed),
            role,
            scopes: vec!["operator.write".into(), "operator.read".into()],
            caps: vec!["system".into()],
            commands: vec!["system.which".into()],
            source_ip: "2001:db8::7".parse().unwrap(),
        };
        state.approve_local(sample_device(1), Role::Node, vec![], 5).unwrap();
        state.set_token(&sample_device(1).device_id, Role::Node, TokenHash::of("t"), 6).unwrap();
        state.request(new(1, Role::Operator), 7).unwrap();
        state.request(new(2, Role::Node), 8).unwrap();
        state
    }

    #[test]
    fn round_trip_one_record_per_line() {
        let state = sample_state();
        let bytes = encode(&state);
        assert_eq!(decode(&bytes).unwrap(), state);
        let text = String::from_utf8(bytes).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 8, "{text}");
        assert_eq!(lines[0], "{\"version\":1,");
        assert!(
            lines[2].starts_with("{\"device\":{\"deviceId\":")
                && lines[2].contains(r#""tokens":[{"role":"node","sha256":""#)
        );
        assert!(lines[5].starts_with("{\"requestId\":") && lines[5].contains(r#""sourceIp":"2001:db8::7","ts":7}"#));
        assert_eq!(decode(&encode(&State::default())).unwrap(), State::default());
    }

    #[test]
    fn anything_the_store_would_not_write_is_refused() {
        let good = String::from_utf8(encode(&sample_state())).unwrap();
        let device = &sample_device(1).device_id;
        let other = &sample_device(2).device_id;
        let cases: Vec<(&str, String, &str)> = vec![
            ("empty", String::new(), "cannot parse"),
            ("truncated", good[..good.len() / 2].to_string(), "cannot parse"),
            ("not json", "\u{0}\u{1}garbage".into(), "cannot parse"),
            ("no version", good.replacen("\"version\":1,", "", 1), "missing field `version`"),
            ("newer", good.replacen("\"version\":1", "\"version\":2", 1), "unsupported version 2"),
            ("unknown top field", good.replacen("{\"version\":1,", "{\"version\":1,\"x\":1,", 1), "unknown field `x`"),
            ("unknown record field", good.replacen("\"deviceId\"", "\"extra\":0,\"deviceId\"", 1), "unknown field"),
            ("missing field", good.replacen("\"platform\":\"linux\",", "", 1), "missing field `platform`"),
            ("bad role", good.replacen("\"roles\":[\"node\"]", "\"roles\":[\"admin\"]", 1), "paired[0]: roles"),
            ("no role", good.replacen("\"roles\":[\"node\"]", "\"roles\":[]", 1), "paired[0]: roles is empty"),
            ("twice", good.replacen("\"roles\":[\"node\"]", "\"roles\":[\"node\",\"node\"]", 1), "twice"),
            (
                "token role",
                good.replacen("\"role\":\"node\",\"sha256\"", "\"role\":\"operator\",\"sha256\"", 1),
                "tokens",
            ),
            ("bad hash", good.replacen("\"sha256\":\"", "\"sha256\":\"X", 1), "sha256"),
            ("key swap", good.replacen(device.as_str(), other, 1), "paired[0]: publicKey"),
            ("bad ip", good.replacen("2001:db8::7", "nowhere", 1), "pending[0]: sourceIp"),
            ("bad request id", good.replacen("\"requestId\":\"", "\"requestId\":\"x", 1), "pending[0]: requestId"),
            (
                "label",
                good.replacen("\"platform\":\"linux\"", &format!("\"platform\":\"{}\"", "p".repeat(257)), 1),
                "platform",
            ),
        ];
        for (name, text, want) in cases {
            let err = decode(text.as_bytes()).unwrap_err();
            assert!(err.contains(want), "{name}: {err}");
        }
        // Duplicates and counts.
        let state = sample_state();
        let mut two = String::from_utf8(encode(&state)).unwrap();
        let record = two.lines().nth(2).unwrap().to_string();
        two = two.replacen(&record, &format!("{record},\n{record}"), 1);
        assert!(decode(two.as_bytes()).unwrap_err().contains("paired[1]: deviceId appears twice"));
        let mut full = state.clone();
        let template = full.pending[1].clone();
        for n in 0..MAX_PENDING {
            let mut request = template.clone();
            request.request_id = uuid::Uuid::new_v4().to_string();
            request.ts_ms = n as u64;
            full.pending.push(request);
        }
        assert!(decode(&encode(&full)).unwrap_err().contains("more than 64 pending requests"));
        full.pending.truncate(3);
        assert!(decode(&encode(&full)).unwrap_err().contains("pending[2]: a second request"));
    }
}
