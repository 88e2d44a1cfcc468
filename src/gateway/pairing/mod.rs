//! The pairing store (SPEC §4.4): which devices are approved for which
//! role and scopes, the SHA-256 of each device token, and the pending
//! requests, in `STATE_DIR/pairing.json` (0600). Owns that file and its
//! in-memory view.
//!
//! Every change is durable before it is visible and before it returns: one
//! writer at a time (the writer lock) clones the view, changes the clone,
//! writes it through `file::write_durable`, and only then swaps it in.
//! Readers take a [`Snapshot`] (an `Arc` cloned under a short lock) and
//! never wait for a write's fsync. Pending requests expire lazily: reads
//! skip them, writes drop them; no timer, and no write just to drop them.
//!
//! Never keeps a device token in clear, never resets or rewrites a file it
//! could not read, never touches a socket or the hub, and must never be
//! written to from the heartbeat or while the hub lock is held (a write may
//! take milliseconds on an SD card; ARCHITECTURE.md "Identity and pairing").

mod check;
mod crypto;
mod file;
mod format;
mod state;

#[cfg(test)]
mod crash_test;
#[cfg(test)]
mod tests;

use std::fmt;
use std::io;
#[cfg(test)]
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;

use log::warn;
use parking_lot::Mutex;

use crate::wire::frame::Role;

pub use crypto::DeviceToken;
pub use state::{Approved, DeviceInfo, NewRequest, PairedDevice, PendingRequest, Requested};

use state::State;

/// Most paired devices the store holds; approving one more is refused.
pub const MAX_PAIRED_DEVICES: usize = 4096;
/// Most pending requests at once, all sources together.
pub const MAX_PENDING: usize = 64;
/// Most pending requests from one source (an IPv4 address or an IPv6 /64).
pub const MAX_PENDING_PER_SOURCE: usize = 4;
/// How long a pending request waits for an operator: 10 minutes.
pub const PENDING_TTL_MS: u64 = 10 * 60 * 1000;
// The store's own bounds are at least those `connect` validation applies
// (wire), so whatever a client may send, the store can keep; they are its
// own because they also bound a file that may have been edited by hand.

/// Most operator scopes per device or request.
pub const MAX_SCOPES: usize = 32;
/// Longest operator scope, in bytes.
pub const MAX_SCOPE_BYTES: usize = 64;
/// Longest label kept (`displayName`, `platform`, `version`, `clientMode`,
/// `deviceFamily`), in bytes; `clientId` has `wire::frame::MAX_ID_BYTES`.
pub const MAX_LABEL_BYTES: usize = 256;
/// Most caps, or commands, a pending node request keeps.
pub const MAX_NAMES: usize = 256;
/// Longest cap or command name kept, in bytes.
pub const MAX_NAME_BYTES: usize = 128;
/// Largest `pairing.json` read at open or written, in bytes (8 MiB): 4,096
/// ordinary devices take about 2 MiB.
pub const MAX_FILE_BYTES: usize = 8 << 20;

/// Why the store refused to open or to change.
#[derive(Debug)]
pub enum StoreError {
    /// The file (or its directory) could not be created, read, parsed or
    /// validated at open. Fatal: the gateway prints it (one line, naming the
    /// file) and exits 1; the file is left as it is.
    Load {
        /// The file.
        path: PathBuf,
        /// What is wrong, on one line.
        reason: String,
    },
    /// A change could not be made durable (temp file, fsync, rename): the
    /// disk's fault. Nothing changed in memory.
    Write {
        /// The file.
        path: PathBuf,
        /// The failing step's error.
        source: io::Error,
    },
    /// The OS random source failed; no token was issued.
    Random(getrandom::Error),
    /// A value out of the store's bounds: the caller should have refused it.
    Invalid {
        /// The field, as named in the file.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// Too many requests pending, from this source or in all: the client's
    /// (or the crowd's) fault; it may retry once some are answered or expire.
    TooManyPending {
        /// Whether the per-source bound tripped (else the total did).
        per_source: bool,
        /// The bound that tripped.
        limit: usize,
    },
    /// [`MAX_PAIRED_DEVICES`] are paired; remove one first.
    TooManyDevices {
        /// The bound.
        limit: usize,
    },
    /// The file would grow past [`MAX_FILE_BYTES`]; nothing changed.
    TooLarge {
        /// The size the change would give the file.
        bytes: usize,
        /// The bound.
        limit: usize,
    },
    /// No live pending request has this id (unknown, answered or expired).
    UnknownRequest,
    /// The device is not paired, or not for this role.
    UnknownDevice,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Load { path, reason } => write!(f, "pairing store {}: {reason}", path.display()),
            StoreError::Write { path, source } => write!(f, "pairing store {}: cannot write: {source}", path.display()),
            StoreError::Random(e) => write!(f, "cannot make a device token: OS random source: {e}"),
            StoreError::Invalid { field, problem } => write!(f, "{field} {problem}"),
            StoreError::TooManyPending { per_source: true, limit } => {
                write!(f, "too many pending requests from this address (at most {limit})")
            }
            StoreError::TooManyPending { per_source: false, limit } => {
                write!(f, "too many pending requests (at most {limit})")
            }
            StoreError::TooManyDevices { limit } => write!(f, "too many paired devices (at most {limit})"),
            StoreError::TooLarge { bytes, limit } => {
                write!(f, "pairing store would grow to {bytes} bytes (at most {limit})")
            }
            StoreError::UnknownRequest => f.write_str("unknown requestId"),
            StoreError::UnknownDevice => f.write_str("unknown deviceId"),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Write { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The pairing store. Share it as `Arc<Store>`; every method takes `&self`.
pub struct Store {
    /// The file; `None` for a store kept in memory only (no state directory).
    path: Option<PathBuf>,
    /// What readers see: replaced whole, only after the file holds it.
    view: Mutex<Arc<State>>,
    /// Held for a whole change, fsyncs included: one writer at a time.
    writer: Mutex<()>,
}

impl Store {
    /// Opens the store at `path` (normally `STATE_DIR/pairing.json`). A
    /// missing file is an empty store, and its directory is created 0700;
    /// a temp file left by a crash is removed.
    ///
    /// # Errors
    /// [`StoreError::Load`] when the directory cannot be made or the file
    /// cannot be read, is larger than [`MAX_FILE_BYTES`], or does not parse
    /// or validate (another version, an unknown field, a bound exceeded).
    pub fn open(path: impl Into<PathBuf>) -> Result<Store, StoreError> {
        let path = path.into();
        let load = |reason: String| StoreError::Load { path: path.clone(), reason: reason.replace('\n', " ") };
        file::ensure_dir(file::dir_of(&path)).map_err(|e| load(format!("cannot create its directory: {e}")))?;
        file::remove_stale_temp(&path).map_err(|e| load(format!("cannot remove the leftover temp file: {e}")))?;
        let state = match file::read(&path).map_err(|e| load(format!("cannot read: {e}")))? {
            file::Found::Missing => State::default(),
            file::Found::Bytes(bytes, wide) => {
                if wide {
                    warn!(path:% = path.display(); "pairing store is readable by others; the next change makes it 0600");
                }
                format::decode(&bytes).map_err(load)?
            }
        };
        Ok(Store { path: Some(path), view: Mutex::new(Arc::new(state)), writer: Mutex::new(()) })
    }

    /// An empty store kept in memory only: for a gateway without a state
    /// directory, whose approvals then last as long as the process.
    pub fn in_memory() -> Store {
        Store { path: None, view: Mutex::new(Arc::new(State::default())), writer: Mutex::new(()) }
    }

    /// The file this store keeps, if any.
    #[cfg(test)]
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The store as it is now, for lookups and listings: cheap (an `Arc`
    /// clone), and never waits for a write in progress.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot(Arc::clone(&self.view.lock()))
    }

    /// Approves (device, role) silently, without a request: the loopback
    /// connect of SPEC §4.4. Merges into an existing record (role and
    /// scopes added); drops a pending request of (device, role). Writes
    /// nothing when the device is already approved for `role` with these
    /// scopes and details.
    ///
    /// # Errors
    /// `Invalid`, `TooManyDevices`, `TooLarge`, `Write`.
    pub fn approve_local(
        &self,
        device: DeviceInfo,
        role: Role,
        scopes: Vec<String>,
        now_ms: u64,
    ) -> Result<PairedDevice, StoreError> {
        self.change(now_ms, |state| state.approve_local(device, role, scopes, now_ms))
    }

    /// Records a pending request for (device, role), or returns the one
    /// already waiting (`created: false`, same `requestId`, nothing written).
    ///
    /// # Errors
    /// `TooManyPending` past [`MAX_PENDING_PER_SOURCE`] for the source or
    /// [`MAX_PENDING`] in all; `Invalid`, `TooLarge`, `Write`.
    pub fn request(&self, new: NewRequest, now_ms: u64) -> Result<Requested, StoreError> {
        self.change(now_ms, |state| {
            let requested = state.request(new, now_ms)?;
            let created = requested.created;
            Ok((requested, created))
        })
    }

    /// Approves a pending request: its role and scopes are merged into the
    /// device's record (a node approved for `operator` has both roles).
    ///
    /// # Errors
    /// `UnknownRequest` (unknown, answered or expired), `TooManyDevices`,
    /// `Invalid` (scopes past [`MAX_SCOPES`] once merged), `TooLarge`, `Write`.
    pub fn approve(&self, request_id: &str, now_ms: u64) -> Result<Approved, StoreError> {
        self.change(now_ms, |state| Ok((state.approve(request_id, now_ms)?, true)))
    }

    /// Rejects a pending request; returns it as it was.
    ///
    /// # Errors
    /// `UnknownRequest`, `TooLarge`, `Write`.
    pub fn reject(&self, request_id: &str, now_ms: u64) -> Result<PendingRequest, StoreError> {
        self.change(now_ms, |state| Ok((state.reject(request_id, now_ms)?, true)))
    }

    /// Forgets a device: its roles, tokens and pending requests. Returns the
    /// record removed (its live connections are the caller's to close, 4001).
    ///
    /// # Errors
    /// `UnknownDevice`, `TooLarge`, `Write`.
    pub fn remove_device(&self, device_id: &str, now_ms: u64) -> Result<PairedDevice, StoreError> {
        self.change(now_ms, |state| Ok((state.remove_device(device_id)?, true)))
    }

    /// Withdraws one role of a device (its token and pending request too,
    /// and its scopes for `operator`), as `node.pair.remove` does for
    /// `node`. Returns the record left, or `None` when it was the last role
    /// and the device is gone.
    ///
    /// # Errors
    /// `UnknownDevice` (not paired for `role`), `TooLarge`, `Write`.
    pub fn remove_role(&self, device_id: &str, role: Role, now_ms: u64) -> Result<Option<PairedDevice>, StoreError> {
        self.change(now_ms, |state| Ok((state.remove_role(device_id, role)?, true)))
    }

    /// Issues a fresh device token for (device, role): 32 bytes from the OS
    /// CSPRNG, base64url. Its hash replaces any earlier token of (device,
    /// role); the token itself is returned here once and kept nowhere.
    ///
    /// # Errors
    /// `UnknownDevice` (not paired for `role`), `Random`, `TooLarge`, `Write`.
    pub fn issue_token(&self, device_id: &str, role: Role, now_ms: u64) -> Result<DeviceToken, StoreError> {
        let (token, hash) = crypto::new_token().map_err(StoreError::Random)?;
        self.change(now_ms, |state| Ok((state.set_token(device_id, role, hash, now_ms)?, true)))?;
        Ok(token)
    }

    /// Runs one change on a clone of the view; if it says it changed
    /// something, writes the clone durably and only then publishes it.
    fn change<T>(
        &self,
        now_ms: u64,
        apply: impl FnOnce(&mut State) -> Result<(T, bool), StoreError>,
    ) -> Result<T, StoreError> {
        let _writer = self.writer.lock();
        // Clone outside the view lock: readers wait for an `Arc` clone only.
        let current = Arc::clone(&self.view.lock());
        let mut next = State::clone(&current);
        next.drop_expired(now_ms);
        let (value, changed) = apply(&mut next)?;
        if changed {
            let bytes = format::encode(&next);
            if bytes.len() > MAX_FILE_BYTES {
                return Err(StoreError::TooLarge { bytes: bytes.len(), limit: MAX_FILE_BYTES });
            }
            if let Some(path) = &self.path {
                file::write_durable(path, &bytes).map_err(|source| StoreError::Write { path: path.clone(), source })?;
            }
            *self.view.lock() = Arc::new(next);
        }
        Ok(value)
    }
}

/// The store at one instant. Lookups never wait for a write; a change made
/// after the snapshot was taken is not in it.
#[derive(Clone)]
pub struct Snapshot(Arc<State>);

impl Snapshot {
    /// The paired device, whatever its roles.
    pub fn device(&self, device_id: &str) -> Option<&PairedDevice> {
        self.0.paired.get(device_id)
    }

    /// The paired device if it is approved for `role`.
    pub fn approved(&self, device_id: &str, role: Role) -> Option<&PairedDevice> {
        self.0.approved(device_id, role)
    }

    /// Whether `presented` is the device token of (device, role): its
    /// SHA-256 equals the stored hash, compared in constant time.
    pub fn token_matches(&self, device_id: &str, role: Role, presented: &str) -> bool {
        let record = self.0.approved(device_id, role).and_then(|d| d.tokens.iter().find(|t| t.role == role));
        record.is_some_and(|t| t.hash.matches(presented))
    }

    /// The live pending request of (device, role), if any.
    #[cfg(test)]
    pub fn pending_for(&self, device_id: &str, role: Role, now_ms: u64) -> Option<&PendingRequest> {
        self.0.pending_for(device_id, role, now_ms)
    }

    /// The live pending request with this id, if any (to check the scopes
    /// an approval needs before approving).
    #[cfg(test)]
    pub fn pending_request(&self, request_id: &str, now_ms: u64) -> Option<&PendingRequest> {
        self.0.live(now_ms).find(|p| p.request_id == request_id)
    }

    /// Every live pending request, oldest first (`*.pair.list` `pending`).
    pub fn pending(&self, now_ms: u64) -> impl Iterator<Item = &PendingRequest> {
        self.0.live(now_ms)
    }

    /// Every paired device, by device id (`*.pair.list` `paired`).
    pub fn paired(&self) -> impl Iterator<Item = &PairedDevice> {
        self.0.paired.values()
    }

    /// The figures of the pairing metrics.
    pub fn counts(&self, now_ms: u64) -> Counts {
        Counts { pending: self.0.live(now_ms).count(), paired: self.0.paired.len() }
    }
}

/// The pairing figures for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Live pending requests.
    pub pending: usize,
    /// Paired devices.
    pub paired: usize,
}
