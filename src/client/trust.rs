//! How a `wss://` gateway's certificate is trusted, as the command line
//! gives it: the system's roots, a CA file (`--ca-file`), or the
//! certificate's SHA-256 fingerprint (`--pin-sha256`). Data and parsing
//! only; `client::tls` applies it.

use std::path::PathBuf;

/// How the gateway's TLS certificate is trusted (`wss://` only).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// `--ca-file`: trust the CA certificates in this PEM file instead of
    /// the system's.
    pub ca_file: Option<PathBuf>,
    /// `--pin-sha256`: the SHA-256 of the gateway's certificate (DER).
    pub pin_sha256: Option<[u8; 32]>,
}

/// Parses `--pin-sha256`: 64 hex digits, any case, colons allowed (what
/// `openssl x509 -noout -fingerprint -sha256` prints, the whole line
/// included), an optional `sha256:` or `sha256/` prefix.
///
/// # Errors
/// What it expects, in a sentence.
pub fn parse_pin(text: &str) -> Result<[u8; 32], String> {
    let t = text.trim();
    let t = t.strip_prefix("sha256:").or_else(|| t.strip_prefix("sha256/")).unwrap_or(t);
    // `openssl x509 -fingerprint` prints "sha256 Fingerprint=" (3.x) or
    // "SHA256 Fingerprint=" (1.1).
    let t = match t.get(..19) {
        Some(p) if p.eq_ignore_ascii_case("sha256 fingerprint=") => &t[19..],
        _ => t,
    };
    let digits: Vec<u8> = t.bytes().filter(|&b| b != b':').collect();
    let bad = || "expected 64 hex digits (openssl x509 -noout -fingerprint -sha256 -in CERT)".to_string();
    if digits.len() != 64 {
        return Err(bad());
    }
    let mut pin = [0u8; 32];
    for (slot, pair) in pin.iter_mut().zip(digits.chunks(2)) {
        // Digit by digit: `u8::from_str_radix` would take a leading '+'.
        let digit = |b: u8| char::from(b).to_digit(16).ok_or_else(bad);
        *slot = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
    }
    Ok(pin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_parse() {
        let hex = "ab".repeat(32);
        assert_eq!(parse_pin(&hex).unwrap(), [0xab; 32]);
        let colons = ["AB"; 32].join(":");
        assert_eq!(parse_pin(&colons).unwrap(), [0xab; 32]);
        assert_eq!(parse_pin(&format!("sha256:{hex}")).unwrap(), [0xab; 32]);
        assert_eq!(parse_pin(&format!("SHA256 Fingerprint={colons}")).unwrap(), [0xab; 32]);
        assert_eq!(parse_pin(&format!("sha256 Fingerprint={colons}\n")).unwrap(), [0xab; 32]);
        for bad in [&hex[2..], &"zz".repeat(32), &format!("+{}", &hex[1..]), "é".repeat(32).as_str()] {
            assert!(parse_pin(bad).is_err(), "{bad}");
        }
    }
}
