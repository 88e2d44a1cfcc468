//! The pairing store's only cryptography: SHA-256, hex, base64url and the OS
//! random source, for device tokens (device ids are `wire::device`'s). A device token exists in
//! clear only inside a [`DeviceToken`] on its way to the device; the store
//! keeps its [`TokenHash`]. Never logs or prints a token.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::wire::device::{device_id, encode_public_key, hex};

/// Random bytes in a device token: 256 bits, beyond guessing.
const TOKEN_BYTES: usize = 32;
/// Longest token [`TokenHash::matches`] hashes, in bytes: a real one is 43
/// characters; the bound keeps the work per attempt small.
const MAX_PRESENTED_TOKEN_BYTES: usize = 4096;

/// A device token in clear, returned once by `Store::issue_token` for
/// `hello-ok.auth.deviceToken`. Its `Debug` prints `***`.
pub struct DeviceToken(String);

impl DeviceToken {
    /// The token, to send to its device (and nowhere else).
    #[cfg(test)]
    pub fn secret(&self) -> &str {
        &self.0
    }

    /// The token as a plain `String`, to move into a payload.
    pub fn into_secret(self) -> String {
        self.0
    }
}

impl fmt::Debug for DeviceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DeviceToken(***)")
    }
}

/// A fresh token from the OS CSPRNG: 32 bytes, base64url without padding
/// (43 characters), and its hash.
pub(super) fn new_token() -> Result<(DeviceToken, TokenHash), getrandom::Error> {
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes)?;
    let token = URL_SAFE_NO_PAD.encode(bytes);
    let hash = TokenHash::of(&token);
    Ok((DeviceToken(token), hash))
}

/// SHA-256 of a device token: what the store keeps instead of the token.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct TokenHash([u8; 32]);

impl TokenHash {
    /// The hash of `token`'s UTF-8 bytes.
    pub(super) fn of(token: &str) -> TokenHash {
        TokenHash(Sha256::digest(token.as_bytes()).into())
    }

    /// Whether `presented` hashes to this hash. The 32-byte comparison has no
    /// early exit, so its time says nothing about how close a guess was.
    pub(super) fn matches(&self, presented: &str) -> bool {
        if presented.is_empty() || presented.len() > MAX_PRESENTED_TOKEN_BYTES {
            return false;
        }
        let other = TokenHash::of(presented);
        let diff = self.0.iter().zip(other.0.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(diff) == 0
    }

    /// 64 lowercase hex characters, as in the file.
    pub(super) fn to_hex(self) -> String {
        hex(&self.0)
    }

    /// Parses 64 lowercase hex characters.
    pub(super) fn from_hex(text: &str) -> Option<TokenHash> {
        parse_hex32(text).map(TokenHash)
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenHash({})", self.to_hex())
    }
}

/// Whether `public_key` is the canonical text of a 32-byte key whose device
/// id is `device_id`.
pub(super) fn key_matches_id(public_key: &str, device_id_hex: &str) -> bool {
    let Ok(raw) = URL_SAFE_NO_PAD.decode(public_key) else { return false };
    let Ok(raw) = <[u8; 32]>::try_from(raw.as_slice()) else { return false };
    // Canonical only: one key, one spelling (no trailing bits set).
    encode_public_key(&raw) == public_key && device_id(&raw) == device_id_hex
}

/// Whether `text` is 64 lowercase hex characters.
pub(super) fn is_hex64(text: &str) -> bool {
    parse_hex32(text).is_some()
}

fn parse_hex32(text: &str) -> Option<[u8; 32]> {
    let digits = text.as_bytes();
    if digits.len() != 64 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (slot, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let &[high, low] = pair else { return None };
        *slot = nibble(high)? << 4 | nibble(low)?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_and_hex_match_fips_vectors() {
        // FIPS 180-2 appendix B.1: SHA-256("abc").
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(TokenHash::of("abc").to_hex(), abc);
        assert_eq!(TokenHash::from_hex(abc), Some(TokenHash::of("abc")));
        for bad in ["", "ab", &abc.to_uppercase(), &format!("{abc}0"), &abc.replace('a', "g")] {
            assert_eq!(TokenHash::from_hex(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn tokens_are_fresh_and_only_their_own_text_matches() {
        let (token, hash) = new_token().unwrap();
        let (other, _) = new_token().unwrap();
        assert_eq!(token.secret().len(), 43);
        assert_ne!(token.secret(), other.secret());
        assert!(hash.matches(token.secret()));
        let long = "x".repeat(MAX_PRESENTED_TOKEN_BYTES + 1);
        for wrong in ["", other.secret(), &token.secret()[1..], &format!("{}=", token.secret()), &long] {
            assert!(!hash.matches(wrong), "{wrong:?}");
        }
        assert_eq!(format!("{token:?}"), "DeviceToken(***)");
    }

    #[test]
    fn device_id_binds_the_canonical_key() {
        let raw = [0xffu8; 32];
        let key = encode_public_key(&raw);
        let id = device_id(&raw);
        assert_eq!(key.len(), 43);
        assert!(is_hex64(&id));
        assert!(key_matches_id(&key, &id));
        assert!(!key_matches_id(&key, &device_id(&[8u8; 32])));
        // Padded, standard-alphabet or short spellings are not canonical.
        for bad in [format!("{key}="), key.replace('_', "/"), key[..42].to_string(), String::new()] {
            assert!(!key_matches_id(&bad, &id), "{bad:?}");
        }
    }
}
