//! The pairing store (SPEC §4.4): device approvals, hashed device tokens and
//! pending requests, in `STATE_DIR/pairing.json`. Built in steps; this one
//! holds its cryptography: device ids, device tokens and their hashes.
//! Never keeps a device token in clear.

mod crypto;

pub use crypto::{DeviceToken, device_id, encode_public_key};
