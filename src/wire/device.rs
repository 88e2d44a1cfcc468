//! Ed25519 device identity as OpenClaw has it (OPENCLAW.md §2.3-§2.5,
//! SPEC §4.4), for both sides: the signed payload strings, base64 decoded
//! as the real verifiers accept it, the device id, the gateway's checks in
//! the real gateway's order, and the node agent's key and signature. Pure
//! computation: no I/O but the OS random source for a new key.
//!
//! Crates: `ed25519-dalek` (`verify_strict`, signing), `sha2` (the device id),
//! `base64` (the codec), `getrandom` (a new key's seed).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest as _, Sha256};

use crate::wire::connect::{Connect, DeviceProof};
use crate::wire::frame::{ErrorCode, Failure};

/// The longest base64 text accepted for a key or signature (the 2026.9.6
/// verifier's bound): a client cannot make us decode megabytes.
pub const MAX_BASE64_LEN: usize = 4096;
/// How far `device.signedAt` may be from the gateway's clock (OpenClaw's
/// `DEVICE_SIGNATURE_SKEW_MS`).
pub const MAX_SKEW_MS: u64 = 120_000;

/// Verifies `hello.device` for a connection whose challenge was `nonce`,
/// in the real gateway's order (OPENCLAW.md §2.4): the id, the clock, the
/// nonce, the signature over the v3 payload then the v2 one. Returns the raw
/// public key.
///
/// # Errors
/// `INVALID_REQUEST` with the real `details.code` (`DEVICE_AUTH_*`) and
/// message of the first check that fails.
pub fn verify(hello: &Connect, proof: &DeviceProof, nonce: &str, now_ms: u64) -> Result<[u8; 32], Failure> {
    let fail = |code: ErrorCode, message: &'static str| Failure::new(code, message);
    let raw = check_device_id(&proof.id, &proof.public_key)
        .map_err(|_| fail(ErrorCode::DeviceIdMismatch, "device identity mismatch"))?;
    if now_ms.abs_diff(proof.signed_at) > MAX_SKEW_MS {
        return Err(fail(ErrorCode::SignatureExpired, "device signature expired"));
    }
    if proof.nonce.is_empty() {
        return Err(fail(ErrorCode::NonceRequired, "device nonce required"));
    }
    if proof.nonce != nonce {
        return Err(fail(ErrorCode::NonceMismatch, "device nonce mismatch"));
    }
    let scopes: Vec<&str> = hello.scopes.iter().map(String::as_str).collect();
    let fields = PayloadFields {
        device_id: &proof.id,
        client_id: &hello.client.id,
        client_mode: &hello.client.mode,
        role: hello.role.as_str(),
        scopes: &scopes,
        signed_at_ms: proof.signed_at,
        token: hello.token.as_deref().or(hello.device_token.as_deref()),
        nonce: &proof.nonce,
        platform: Some(&hello.client.platform),
        device_family: Some(&hello.client.device_family),
    };
    match verify_signature(&raw, &proof.signature, &fields) {
        Ok(_) => Ok(raw),
        Err(DeviceAuthError::PublicKeyInvalid) => Err(fail(ErrorCode::PublicKeyInvalid, "device public key invalid")),
        Err(_) => Err(fail(ErrorCode::SignatureInvalid, "device signature invalid")),
    }
}

/// Why a device check failed, before it becomes a wire error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceAuthError {
    /// `device.id` is not the hex SHA-256 of the key (or the key does not
    /// decode to 32 bytes).
    DeviceIdMismatch,
    /// Neither the v3 nor the v2 payload verifies.
    SignatureInvalid,
    /// The key decodes but is not a valid Ed25519 point.
    PublicKeyInvalid,
}

/// Which payload form a signature verified as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadVersion {
    /// `v3|...|platform|deviceFamily`, what real clients sign.
    V3,
    /// `v2|...|nonce`, still accepted.
    V2,
}

/// The fields of `connect.params` that the signature covers.
#[derive(Debug, Clone, Copy)]
pub struct PayloadFields<'a> {
    /// `device.id`.
    pub device_id: &'a str,
    /// `client.id`.
    pub client_id: &'a str,
    /// `client.mode`.
    pub client_mode: &'a str,
    /// The resolved role (`"operator"` when absent).
    pub role: &'a str,
    /// `scopes` exactly as sent, order kept.
    pub scopes: &'a [&'a str],
    /// `device.signedAt` (ms).
    pub signed_at_ms: u64,
    /// `auth.token ?? auth.deviceToken ?? auth.bootstrapToken` (None: "").
    pub token: Option<&'a str>,
    /// `device.nonce`.
    pub nonce: &'a str,
    /// `client.platform` (v3 only).
    pub platform: Option<&'a str>,
    /// `client.deviceFamily` (v3 only).
    pub device_family: Option<&'a str>,
}

/// `v2|id|client|mode|role|scopes|signedAt|token|nonce`
pub fn payload_v2(f: &PayloadFields<'_>) -> String {
    let mut s = String::with_capacity(192);
    push_common(&mut s, "v2", f);
    s
}

/// `v2…|norm(platform)|norm(deviceFamily)`, with `v3` in front.
pub fn payload_v3(f: &PayloadFields<'_>) -> String {
    let mut s = String::with_capacity(208);
    push_common(&mut s, "v3", f);
    s.push('|');
    s.push_str(&norm(f.platform));
    s.push('|');
    s.push_str(&norm(f.device_family));
    s
}

fn push_common(s: &mut String, version: &str, f: &PayloadFields<'_>) {
    use std::fmt::Write as _;
    s.push_str(version);
    for field in [f.device_id, f.client_id, f.client_mode, f.role] {
        s.push('|');
        s.push_str(field);
    }
    s.push('|');
    for (i, scope) in f.scopes.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(scope);
    }
    let _ = write!(s, "|{}|{}|{}", f.signed_at_ms, f.token.unwrap_or(""), f.nonce);
}

/// OpenClaw's metadata normalization: `""` when absent, else JavaScript's
/// `trim()` followed by ASCII `A-Z` → `a-z` only (`"LİNUX"` keeps its `İ`).
pub fn norm(x: Option<&str>) -> String {
    let Some(x) = x else { return String::new() };
    x.trim_matches(is_js_whitespace).to_ascii_lowercase()
}

/// JavaScript's `String.prototype.trim` set (WhiteSpace + LineTerminator):
/// Unicode White_Space minus U+0085, plus U+FEFF.
fn is_js_whitespace(c: char) -> bool {
    (c.is_whitespace() && c != '\u{85}') || c == '\u{feff}'
}

/// Decoding is indifferent to padding and, like the OpenClaw v3 verifier,
/// accepts both alphabets. Trailing bits are allowed (Node's Buffer does).
const LENIENT: GeneralPurposeConfig = GeneralPurposeConfig::new()
    .with_decode_padding_mode(DecodePaddingMode::Indifferent)
    .with_decode_allow_trailing_bits(true);
const URL_LENIENT: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, LENIENT);
const STD_LENIENT: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, LENIENT);

/// Decodes base64url or standard base64, padded or not, into exactly `N`
/// bytes. `None` for anything longer than [`MAX_BASE64_LEN`], any other
/// character, or another length.
pub fn decode_lenient<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() > MAX_BASE64_LEN {
        return None;
    }
    // Room for N bytes plus the slack the decoder wants for its estimate.
    let mut buf = [0u8; 96];
    assert!(N + 3 <= buf.len());
    // Too long for N bytes: refuse before decoding (also keeps the decoder
    // inside `buf`).
    let unpadded = text.trim_end_matches('=');
    if unpadded.len() > (N * 4).div_ceil(3) {
        return None;
    }
    let n = URL_LENIENT.decode_slice(text, &mut buf).or_else(|_| STD_LENIENT.decode_slice(text, &mut buf)).ok()?;
    buf[..n].try_into().ok()
}

/// base64url without padding: how keys and signatures go on the wire.
pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Lowercase hex of SHA-256 over the raw 32-byte key: the device id.
pub fn device_id(raw_public_key: &[u8; 32]) -> String {
    hex(&Sha256::digest(raw_public_key))
}

/// A raw 32-byte public key as it is sent and stored: base64url without
/// padding, 43 characters.
pub fn encode_public_key(raw_public_key: &[u8; 32]) -> String {
    b64url(raw_public_key)
}

/// Check 1: decodes `device.publicKey` and requires `device.id` to be its
/// id. Returns the raw key for the later checks.
pub fn check_device_id(id: &str, public_key_b64: &str) -> Result<[u8; 32], DeviceAuthError> {
    let raw = decode_lenient::<32>(public_key_b64).ok_or(DeviceAuthError::DeviceIdMismatch)?;
    if device_id(&raw) != id {
        return Err(DeviceAuthError::DeviceIdMismatch);
    }
    Ok(raw)
}

/// Check 5: the signature over the v3 payload, else over the v2 payload.
/// Strict verification (`verify_strict`: canonical S, no small-order key or
/// R); real clients' keys and signatures always pass it.
pub fn verify_signature(
    raw_public_key: &[u8; 32],
    signature_b64: &str,
    fields: &PayloadFields<'_>,
) -> Result<PayloadVersion, DeviceAuthError> {
    let key = VerifyingKey::from_bytes(raw_public_key).map_err(|_| DeviceAuthError::PublicKeyInvalid)?;
    let sig = decode_lenient::<64>(signature_b64).ok_or(DeviceAuthError::SignatureInvalid)?;
    let sig = Signature::from_bytes(&sig);
    if key.verify_strict(payload_v3(fields).as_bytes(), &sig).is_ok() {
        return Ok(PayloadVersion::V3);
    }
    if key.verify_strict(payload_v2(fields).as_bytes(), &sig).is_ok() {
        return Ok(PayloadVersion::V2);
    }
    Err(DeviceAuthError::SignatureInvalid)
}

/// The node agent's device key. Store [`DeviceKey::seed`] (32 bytes, 0600);
/// everything else derives from it.
pub struct DeviceKey {
    key: SigningKey,
}

impl DeviceKey {
    /// A fresh key from the OS's random source (getrandom(2)).
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed)?;
        let key = Self::from_seed(&seed);
        seed.fill(0);
        Ok(key)
    }

    /// The key for a stored seed (RFC 8032's 32-byte private key).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self { key: SigningKey::from_bytes(seed) }
    }

    /// The seed to store.
    pub fn seed(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// The raw 32-byte public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// `device.publicKey`.
    pub fn public_key_b64url(&self) -> String {
        b64url(&self.public_key())
    }

    /// `device.id`.
    pub fn device_id(&self) -> String {
        device_id(&self.public_key())
    }

    /// `device.signature` over the v3 payload (what real clients sign).
    /// `fields.device_id` must be [`DeviceKey::device_id`].
    pub fn sign_v3(&self, fields: &PayloadFields<'_>) -> String {
        b64url(&self.key.sign(payload_v3(fields).as_bytes()).to_bytes())
    }
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    // OPENCLAW.md §2.5: node host 2026.9.6 → gateway 2026.9.6.
    const ID: &str = "faf656a0b0f99cb70a01a006900e8ab01c91aafdbc471f547a59ebf55e5c698e";
    const KEY: &str = "XRAqmL51wEPN51OAN4ot0chfgFXv0a01UQSPcFPkooo";
    const SIG: &str = "ADBir2YWgEVj6Evpx-7cXWnEsKbmSuKG0iRTp-PQIX4Ob-6TCVx5Ge5tshnFH-KbqAz7oGldhK4m7Kfg7cRNDQ";
    const NONCE: &str = "6825e91d-a87f-4854-a2c3-1cefe9bc61df";
    const SIGNED_V3: &str = "v3|faf656a0b0f99cb70a01a006900e8ab01c91aafdbc471f547a59ebf55e5c698e|node-host|node|node||1796018051413|gwt0k|6825e91d-a87f-4854-a2c3-1cefe9bc61df|linux|linux";

    fn fields() -> PayloadFields<'static> {
        PayloadFields {
            device_id: ID,
            client_id: "node-host",
            client_mode: "node",
            role: "node",
            scopes: &[],
            signed_at_ms: 1796018051413,
            token: Some("gwt0k"),
            nonce: NONCE,
            platform: Some("linux"),
            device_family: Some("Linux"),
        }
    }

    fn to_standard(s: &str) -> String {
        s.replace('-', "+").replace('_', "/")
    }

    fn pad(s: &str) -> String {
        format!("{s}{}", "=".repeat((4 - s.len() % 4) % 4))
    }

    #[test]
    fn the_captured_payloads_are_rebuilt_exactly() {
        assert_eq!(payload_v3(&fields()), SIGNED_V3);
        assert_eq!(
            payload_v2(&fields()),
            "v2|faf656a0b0f99cb70a01a006900e8ab01c91aafdbc471f547a59ebf55e5c698e|node-host|node|node||1796018051413|gwt0k|6825e91d-a87f-4854-a2c3-1cefe9bc61df"
        );
        // 2026.5.7: no deviceFamily, so the payload ends in "|".
        let f = PayloadFields {
            device_id: "8b5f22aed9fdeb0b587ff7e6e5bbb1f71eed21c7b8cfd3a9e5c7c4ad1671eed8",
            signed_at_ms: 1796018155822,
            nonce: "fef69bd2-d057-4a55-b575-0b8c914308e1",
            device_family: None,
            ..fields()
        };
        assert_eq!(
            payload_v3(&f),
            "v3|8b5f22aed9fdeb0b587ff7e6e5bbb1f71eed21c7b8cfd3a9e5c7c4ad1671eed8|node-host|node|node||1796018155822|gwt0k|fef69bd2-d057-4a55-b575-0b8c914308e1|linux|"
        );
        // A device-token reconnect (the token is auth.deviceToken).
        let f = PayloadFields {
            device_id: "f510…",
            signed_at_ms: 1796018691273,
            token: Some("yETXSiOLNo78QyqXPzlLV5f5TWshSpS5Zs-9eCV6wL8"),
            nonce: "39268b7b-…",
            device_family: None,
            ..fields()
        };
        assert_eq!(
            payload_v3(&f),
            "v3|f510…|node-host|node|node||1796018691273|yETXSiOLNo78QyqXPzlLV5f5TWshSpS5Zs-9eCV6wL8|39268b7b-…|linux|"
        );
        // Scopes keep their order; no token gives an empty field.
        let f = PayloadFields {
            scopes: &["operator.read", "operator.pairing"],
            token: None,
            role: "operator",
            client_id: "cli",
            client_mode: "cli",
            platform: None,
            device_family: None,
            ..fields()
        };
        assert!(payload_v3(&f).contains("|cli|cli|operator|operator.read,operator.pairing|1796018051413||6825e9"));
        assert!(payload_v3(&f).ends_with(&format!("{NONCE}||")));
    }

    #[test]
    fn norm_trims_like_javascript_and_lowercases_ascii_only() {
        assert_eq!(norm(None), "");
        assert_eq!(norm(Some("  Linux\t\n")), "linux");
        assert_eq!(norm(Some("\u{feff}\u{a0}Linux\u{2028}")), "linux");
        assert_eq!(norm(Some("\u{85}Linux")), "\u{85}linux"); // NEL is not JS whitespace
        assert_eq!(norm(Some("LİNUX Ä")), "lİnux Ä");
    }

    #[test]
    fn the_captured_signature_verifies_as_v3_and_not_as_v2() {
        let raw = check_device_id(ID, KEY).expect("id is sha256 of the key");
        assert_eq!(verify_signature(&raw, SIG, &fields()), Ok(PayloadVersion::V3));
        // The same signature does not verify over the v2 string.
        let key = VerifyingKey::from_bytes(&raw).unwrap();
        let sig = Signature::from_bytes(&decode_lenient::<64>(SIG).unwrap());
        assert!(key.verify_strict(SIGNED_V3.as_bytes(), &sig).is_ok());
        assert!(key.verify_strict(payload_v2(&fields()).as_bytes(), &sig).is_err());
        assert_eq!(encode_public_key(&raw), KEY);
    }

    #[test]
    fn standard_and_padded_base64_are_accepted() {
        for (key, sig) in [
            (to_standard(KEY), to_standard(SIG)),
            (pad(KEY), pad(SIG)),
            (pad(&to_standard(KEY)), pad(&to_standard(SIG))),
        ] {
            let raw = check_device_id(ID, &key).unwrap();
            assert_eq!(verify_signature(&raw, &sig, &fields()), Ok(PayloadVersion::V3), "{key} {sig}");
        }
    }

    #[test]
    fn any_changed_field_fails() {
        let raw = check_device_id(ID, KEY).unwrap();
        let bad = [
            PayloadFields { nonce: "6825e91d-a87f-4854-a2c3-1cefe9bc61de", ..fields() },
            PayloadFields { signed_at_ms: 1796018051414, ..fields() },
            PayloadFields { token: None, ..fields() },
            PayloadFields { role: "operator", ..fields() },
            PayloadFields { scopes: &["operator.admin"], ..fields() },
            PayloadFields { device_family: None, ..fields() },
        ];
        for f in bad {
            assert_eq!(verify_signature(&raw, SIG, &f), Err(DeviceAuthError::SignatureInvalid));
        }
        // A changed signature byte.
        let mut sig = decode_lenient::<64>(SIG).unwrap();
        sig[10] ^= 1;
        assert_eq!(verify_signature(&raw, &b64url(&sig), &fields()), Err(DeviceAuthError::SignatureInvalid));
    }

    #[test]
    fn bad_ids_keys_and_signatures_are_refused() {
        let upper = ID.to_ascii_uppercase();
        assert_eq!(check_device_id(&upper, KEY), Err(DeviceAuthError::DeviceIdMismatch));
        assert_eq!(check_device_id(&ID[1..], KEY), Err(DeviceAuthError::DeviceIdMismatch));
        assert_eq!(check_device_id(ID, &KEY[1..]), Err(DeviceAuthError::DeviceIdMismatch));
        assert_eq!(check_device_id(ID, "not base64!"), Err(DeviceAuthError::DeviceIdMismatch));
        let raw = check_device_id(ID, KEY).unwrap();
        assert_eq!(verify_signature(&raw, &SIG[..80], &fields()), Err(DeviceAuthError::SignatureInvalid));
        assert_eq!(verify_signature(&raw, "", &fields()), Err(DeviceAuthError::SignatureInvalid));
        assert_eq!(verify_signature(&raw, &"A".repeat(5000), &fields()), Err(DeviceAuthError::SignatureInvalid));
        // An all-zero y decodes to a point of order 4, which verify_strict
        // refuses whatever the signature.
        let small_order = [0u8; 32];
        assert!(verify_signature(&small_order, SIG, &fields()).is_err());
    }

    #[test]
    fn decode_is_bounded() {
        assert!(decode_lenient::<32>(&"A".repeat(MAX_BASE64_LEN + 1)).is_none());
        assert!(decode_lenient::<32>(&"A".repeat(44)).is_none()); // 33 bytes
        assert!(decode_lenient::<32>(&"A".repeat(43)).is_some());
        assert!(decode_lenient::<64>(&format!("{}==", "A".repeat(86))).is_some());
        assert!(decode_lenient::<64>(&format!("{}{}", "A".repeat(86), "=".repeat(300))).is_none());
    }

    #[test]
    fn a_generated_key_signs_what_the_gateway_verifies() {
        let key = DeviceKey::generate().unwrap();
        let id = key.device_id();
        assert_eq!(id.len(), 64);
        let f = PayloadFields { device_id: &id, ..fields() };
        let sig = key.sign_v3(&f);
        assert_eq!(sig.len(), 86);
        let raw = check_device_id(&id, &key.public_key_b64url()).unwrap();
        assert_eq!(verify_signature(&raw, &sig, &f), Ok(PayloadVersion::V3));
        // The stored seed gives back the same identity.
        assert_eq!(DeviceKey::from_seed(&key.seed()).device_id(), id);
        assert_ne!(DeviceKey::generate().unwrap().device_id(), id);
    }

    #[test]
    fn rfc8032_test_vector_1() {
        // RFC 8032 §7.1 TEST 1 (empty message).
        let seed: [u8; 32] = hex_to("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60");
        let key = DeviceKey::from_seed(&seed);
        assert_eq!(hex(&key.public_key()), "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
        let sig = key.key.sign(b"").to_bytes();
        assert_eq!(
            hex(&sig),
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
        );
    }

    fn hex_to<const N: usize>(s: &str) -> [u8; N] {
        let v: Vec<u8> = (0..N).map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap()).collect();
        v.try_into().unwrap()
    }
}
