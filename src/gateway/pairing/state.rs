//! The pairing data and every change to it, as plain functions of a
//! [`State`] and the time: paired devices with their roles, scopes and token
//! hashes; pending requests with their bounds and expiry. No I/O and no
//! locks: the store clones the state, applies one change here, makes the
//! result durable, then publishes it. A change that fails leaves its clone
//! to be dropped, so an error never half-applies.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr};

use crate::wire::frame::Role;

use super::crypto::TokenHash;
use super::{MAX_PAIRED_DEVICES, MAX_PENDING, MAX_PENDING_PER_SOURCE, MAX_SCOPES, PENDING_TTL_MS, StoreError, check};

/// What the gateway knows about a device from its verified `connect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// 64 lowercase hex characters: SHA-256 of the raw Ed25519 public key
    /// (the node id of a node).
    pub device_id: String,
    /// The raw 32-byte key in base64url without padding (43 characters).
    pub public_key: String,
    /// `client.displayName`.
    pub display_name: String,
    /// `client.platform`.
    pub platform: String,
    /// `client.version`.
    pub version: String,
    /// `client.id`, e.g. `node-host`, `cli`.
    pub client_id: String,
    /// `client.mode`, e.g. `node`, `cli`.
    pub client_mode: String,
    /// `client.deviceFamily` (v4 lists show it), often empty.
    pub device_family: String,
}

/// A device approved for one or both roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairedDevice {
    /// The device as it was when last approved.
    pub device: DeviceInfo,
    /// The roles approved: `node`, `operator` or both, in that order, never none.
    pub roles: Vec<Role>,
    /// The operator scopes approved, sorted (empty for a node-only device).
    pub scopes: Vec<String>,
    /// When the device was first approved, Unix ms.
    pub created_at_ms: u64,
    /// When it was last approved (a role or scope added), Unix ms.
    pub approved_at_ms: u64,
    /// At most one device token per approved role, by role.
    pub tokens: Vec<TokenRecord>,
}

impl PairedDevice {
    /// Whether the device is approved for `role`.
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

/// A device token, as the store remembers it: its role, its age and the
/// SHA-256 of the token (never the token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// The role the token authenticates.
    pub role: Role,
    /// When it was issued, Unix ms.
    pub created_at_ms: u64,
    pub(super) hash: TokenHash,
}

/// A request for approval that no operator has answered yet; it expires
/// [`PENDING_TTL_MS`] after `ts_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRequest {
    /// A UUID v4, lowercase hyphenated (`requestId` on the wire).
    pub request_id: String,
    /// The device asking.
    pub device: DeviceInfo,
    /// The role asked for.
    pub role: Role,
    /// The operator scopes asked for, sorted.
    pub scopes: Vec<String>,
    /// For a node: the caps it declared.
    pub caps: Vec<String>,
    /// For a node: the commands it declared.
    pub commands: Vec<String>,
    /// The remote address it asked from (the per-source bound counts these).
    pub source_ip: IpAddr,
    /// When the request was made, Unix ms (`ts` on the wire).
    pub ts_ms: u64,
}

impl PendingRequest {
    /// When the request expires, Unix ms.
    pub fn expires_at_ms(&self) -> u64 {
        self.ts_ms.saturating_add(PENDING_TTL_MS)
    }

    /// Whether it is still waiting at `now_ms`.
    pub fn is_live(&self, now_ms: u64) -> bool {
        now_ms < self.expires_at_ms()
    }

    fn is_for(&self, device_id: &str, role: Role) -> bool {
        self.device.device_id == device_id && self.role == role
    }
}

/// A request for approval as the gateway makes it; the store adds the
/// request id and the time.
#[derive(Debug, Clone)]
pub struct NewRequest {
    /// The device asking (already verified by the caller).
    pub device: DeviceInfo,
    /// The role asked for.
    pub role: Role,
    /// The operator scopes asked for.
    pub scopes: Vec<String>,
    /// For a node: its declared caps (empty otherwise).
    pub caps: Vec<String>,
    /// For a node: its declared commands (empty otherwise).
    pub commands: Vec<String>,
    /// The connection's remote address.
    pub source_ip: IpAddr,
}

/// What `Store::request` did.
#[derive(Debug, Clone)]
pub struct Requested {
    /// The pending request for the device and role.
    pub request: PendingRequest,
    /// `true` for a new request (announce it), `false` when the device
    /// already had one waiting (same `requestId`, nothing written).
    pub created: bool,
}

/// What `Store::approve` did: the request it resolved and the device's
/// record after the merge.
#[derive(Debug, Clone)]
pub struct Approved {
    /// The request, as it was pending.
    pub request: PendingRequest,
    /// The paired device, with the role and scopes of the request merged in.
    pub device: PairedDevice,
}

/// The whole store in memory. Invariants (kept by every change below and
/// checked on the file at open): at most [`MAX_PAIRED_DEVICES`] devices,
/// keyed by their id; at most one pending request per (device, role); at
/// most [`MAX_PENDING`] pending requests; tokens only for approved roles.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct State {
    pub(super) paired: BTreeMap<String, PairedDevice>,
    pub(super) pending: Vec<PendingRequest>,
}

impl State {
    /// The device's record if it is approved for `role`.
    pub(super) fn approved(&self, device_id: &str, role: Role) -> Option<&PairedDevice> {
        self.paired.get(device_id).filter(|d| d.has_role(role))
    }

    /// Pending requests still live at `now_ms`.
    pub(super) fn live(&self, now_ms: u64) -> impl Iterator<Item = &PendingRequest> {
        self.pending.iter().filter(move |p| p.is_live(now_ms))
    }

    /// The live pending request of (device, role).
    pub(super) fn pending_for(&self, device_id: &str, role: Role, now_ms: u64) -> Option<&PendingRequest> {
        self.live(now_ms).find(|p| p.is_for(device_id, role))
    }

    /// Drops the requests that expired by `now_ms`; whether any did.
    pub(super) fn drop_expired(&mut self, now_ms: u64) -> bool {
        let before = self.pending.len();
        self.pending.retain(|p| p.is_live(now_ms));
        self.pending.len() != before
    }

    /// Approves (device, role) without a request (local auto-approval).
    /// Returns the record and whether anything changed: approving again what
    /// is already approved, with no new scope, changes nothing.
    pub(super) fn approve_local(
        &mut self,
        device: DeviceInfo,
        role: Role,
        scopes: Vec<String>,
        now_ms: u64,
    ) -> Result<(PairedDevice, bool), StoreError> {
        check::device(&device)?;
        let scopes = check::scopes(scopes)?;
        let had_request = self.take_pending(|p| p.is_for(&device.device_id, role)).is_some();
        if let Some(known) = self.approved(&device.device_id, role)
            && !had_request
            && known.device == device
            && scopes.iter().all(|s| known.scopes.contains(s))
        {
            return Ok((known.clone(), false));
        }
        Ok((self.merge(device, role, scopes, now_ms)?, true))
    }

    /// Records a request for (device, role), or returns the one waiting.
    pub(super) fn request(&mut self, new: NewRequest, now_ms: u64) -> Result<Requested, StoreError> {
        check::device(&new.device)?;
        let scopes = check::scopes(new.scopes)?;
        check::names("caps", &new.caps)?;
        check::names("commands", &new.commands)?;
        if let Some(waiting) = self.pending_for(&new.device.device_id, new.role, now_ms) {
            return Ok(Requested { request: waiting.clone(), created: false });
        }
        let source = source_key(new.source_ip);
        let from_source = self.live(now_ms).filter(|p| source_key(p.source_ip) == source).count();
        if from_source >= MAX_PENDING_PER_SOURCE {
            return Err(StoreError::TooManyPending { per_source: true, limit: MAX_PENDING_PER_SOURCE });
        }
        if self.live(now_ms).count() >= MAX_PENDING {
            return Err(StoreError::TooManyPending { per_source: false, limit: MAX_PENDING });
        }
        let request = PendingRequest {
            request_id: uuid::Uuid::new_v4().hyphenated().to_string(),
            device: new.device,
            role: new.role,
            scopes,
            caps: new.caps,
            commands: new.commands,
            source_ip: new.source_ip,
            ts_ms: now_ms,
        };
        self.pending.push(request.clone());
        Ok(Requested { request, created: true })
    }

    /// Approves a live pending request, merging its role and scopes into the
    /// device's record (a node approved for `operator` keeps `node`).
    pub(super) fn approve(&mut self, request_id: &str, now_ms: u64) -> Result<Approved, StoreError> {
        let request = self.take_live(request_id, now_ms)?;
        let device = self.merge(request.device.clone(), request.role, request.scopes.clone(), now_ms)?;
        Ok(Approved { request, device })
    }

    /// Removes a live pending request without approving it.
    pub(super) fn reject(&mut self, request_id: &str, now_ms: u64) -> Result<PendingRequest, StoreError> {
        self.take_live(request_id, now_ms)
    }

    /// Forgets a device: every role, token and pending request of it.
    pub(super) fn remove_device(&mut self, device_id: &str) -> Result<PairedDevice, StoreError> {
        let removed = self.paired.remove(device_id).ok_or(StoreError::UnknownDevice)?;
        self.pending.retain(|p| p.device.device_id != device_id);
        Ok(removed)
    }

    /// Withdraws one role (its token, its pending request and, for
    /// `operator`, the scopes). Returns the record left, or `None` when that
    /// was the device's last role and the device is gone.
    pub(super) fn remove_role(&mut self, device_id: &str, role: Role) -> Result<Option<PairedDevice>, StoreError> {
        let record = self.paired.get_mut(device_id).filter(|d| d.has_role(role)).ok_or(StoreError::UnknownDevice)?;
        record.roles.retain(|r| *r != role);
        record.tokens.retain(|t| t.role != role);
        if role == Role::Operator {
            record.scopes.clear();
        }
        let left = (!record.roles.is_empty()).then(|| record.clone());
        if left.is_none() {
            self.paired.remove(device_id);
        }
        self.pending.retain(|p| !p.is_for(device_id, role));
        Ok(left)
    }

    /// Replaces the token hash of (device, role).
    pub(super) fn set_token(
        &mut self,
        device_id: &str,
        role: Role,
        hash: TokenHash,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let record = self.paired.get_mut(device_id).filter(|d| d.has_role(role)).ok_or(StoreError::UnknownDevice)?;
        record.tokens.retain(|t| t.role != role);
        record.tokens.push(TokenRecord { role, created_at_ms: now_ms, hash });
        record.tokens.sort_by_key(|t| role_rank(t.role));
        Ok(())
    }

    fn take_live(&mut self, request_id: &str, now_ms: u64) -> Result<PendingRequest, StoreError> {
        match self.take_pending(|p| p.request_id == request_id) {
            Some(request) if request.is_live(now_ms) => Ok(request),
            _ => Err(StoreError::UnknownRequest),
        }
    }

    fn take_pending(&mut self, which: impl Fn(&PendingRequest) -> bool) -> Option<PendingRequest> {
        let at = self.pending.iter().position(which)?;
        Some(self.pending.remove(at))
    }

    fn merge(
        &mut self,
        device: DeviceInfo,
        role: Role,
        scopes: Vec<String>,
        now_ms: u64,
    ) -> Result<PairedDevice, StoreError> {
        if !self.paired.contains_key(&device.device_id) && self.paired.len() >= MAX_PAIRED_DEVICES {
            return Err(StoreError::TooManyDevices { limit: MAX_PAIRED_DEVICES });
        }
        let record = self.paired.entry(device.device_id.clone()).or_insert_with(|| PairedDevice {
            device: device.clone(),
            roles: Vec::new(),
            scopes: Vec::new(),
            created_at_ms: now_ms,
            approved_at_ms: now_ms,
            tokens: Vec::new(),
        });
        let mut merged = record.scopes.clone();
        merged.extend(scopes);
        merged.sort_unstable();
        merged.dedup();
        if merged.len() > MAX_SCOPES {
            let problem = format!("would hold more than {MAX_SCOPES} entries once merged");
            return Err(StoreError::Invalid { field: "scopes", problem });
        }
        record.scopes = merged;
        record.device = device;
        if !record.has_role(role) {
            record.roles.push(role);
            record.roles.sort_by_key(|r| role_rank(*r));
        }
        record.approved_at_ms = now_ms;
        Ok(record.clone())
    }
}

/// Node before operator, in lists and in the file.
pub(super) fn role_rank(role: Role) -> u8 {
    match role {
        Role::Node => 0,
        Role::Operator => 1,
    }
}

/// What the per-source bound counts: an IPv4 address (an IPv4-mapped IPv6
/// one included), or the /64 of an IPv6 address, since one host usually
/// owns a whole /64. The same keying as the connection rate limit.
pub(super) fn source_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        v4 => v4,
    }
}
