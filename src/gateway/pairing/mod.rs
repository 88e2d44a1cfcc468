//! The pairing store (SPEC §4.4): device approvals, hashed device tokens and
//! pending requests, in `STATE_DIR/pairing.json`. Built in steps; so far it
//! holds its cryptography (device ids, device tokens and their hashes) and
//! its durable file writes. Never keeps a device token in clear; never
//! writes the file in place.

mod crypto;
mod file;

pub use crypto::{DeviceToken, device_id, encode_public_key};

/// Largest `pairing.json` read at open or written, in bytes (8 MiB): 4,096
/// ordinary devices take about 2 MiB.
pub const MAX_FILE_BYTES: usize = 8 << 20;
