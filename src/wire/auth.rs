//! The shared token a client presents in `connect.auth`: held in a newtype
//! whose `Debug` prints `***`, compared in constant time. Never logged.

use std::fmt;

use crate::util::ConfigError;

/// Longest token accepted, in bytes; the comparison is constant-time over the
/// presented token, so this also bounds the work an attacker can cause.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// The shared secret. Its `Debug` prints `***`, and nothing logs it.
#[derive(Clone)]
pub struct Token(String);

impl Token {
    /// Wraps a token.
    ///
    /// # Errors
    /// An empty token or one over [`MAX_TOKEN_BYTES`] is refused; `flag` names
    /// where it came from.
    pub fn new(flag: &'static str, token: String) -> Result<Token, ConfigError> {
        if token.is_empty() {
            return Err(ConfigError::new(flag, "token is empty"));
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(ConfigError::new(flag, format!("token is longer than {MAX_TOKEN_BYTES} bytes")));
        }
        Ok(Token(token))
    }

    /// The token itself, for a client to present.
    pub fn secret(&self) -> &str {
        &self.0
    }

    /// Compares a presented token with this one in time that depends only on
    /// the length of the presented token, never on where the first differing
    /// byte is (no early exit).
    pub fn matches(&self, presented: &str) -> bool {
        let expected = self.0.as_bytes();
        let presented = presented.as_bytes();
        let mut diff = expected.len() ^ presented.len();
        for (i, &byte) in presented.iter().enumerate() {
            let want = expected.get(i).copied().unwrap_or(0);
            diff |= usize::from(want ^ byte);
        }
        std::hint::black_box(diff) == 0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_compare() {
        let token = Token::new("--token", "s3cret".into()).unwrap();
        assert!(token.matches("s3cret"));
        for wrong in ["", "s3cre", "s3cret!", "S3cret", "x3cret"] {
            assert!(!token.matches(wrong), "{wrong:?}");
        }
        assert_eq!(format!("{token:?}"), "Token(***)");
        assert!(Token::new("--token", String::new()).is_err());
    }
}
