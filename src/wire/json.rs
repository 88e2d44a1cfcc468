//! JSON that every peer can parse: the strict check applied to what the
//! gateway forwards (invoke params to a node, a node's result to an
//! operator), and the error a failed parse turns into, which never quotes
//! the input. Pure functions; the check allocates nothing for strings
//! without escapes and recurses at most [`MAX_DEPTH`] levels.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::wire::frame::Failure;

/// Deepest nesting of arrays and objects forwarded (SPEC §4.2).
pub const MAX_DEPTH: usize = 64;

/// Checks that `text` is one JSON value a strict parser accepts: nesting
/// at most [`MAX_DEPTH`], no lone surrogate in a string (serde_json
/// refuses one when it decodes the string), every number finite.
///
/// # Errors
/// What is wrong, in a few words (never quoting the input).
pub fn check_strict(text: &str) -> Result<(), &'static str> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    Strict { depth: 0 }.deserialize(&mut deserializer).map_err(|e| match e.classify() {
        serde_json::error::Category::Data if e.to_string().starts_with(TOO_DEEP) => "nested deeper than 64 levels",
        serde_json::error::Category::Data => "a number that is not finite",
        // "lone leading surrogate in hex escape", "unexpected end of hex escape"
        _ if e.to_string().contains("hex escape") => "a string with a lone surrogate",
        _ if e.to_string().contains("recursion limit") => "nested deeper than 64 levels",
        _ if e.to_string().contains("number out of range") => "a number that is not finite",
        _ => "not valid JSON",
    })?;
    deserializer.end().map_err(|_| "not valid JSON")
}

const TOO_DEEP: &str = "too deep";

/// The `INVALID_REQUEST` for params that did not parse. serde's own message
/// may quote the input ("invalid type: string \"...\""), so only the
/// messages that name one of our fields are kept.
pub fn invalid_params(method: &'static str, error: &serde_json::Error) -> Failure {
    let text = error.to_string();
    let named = ["missing field `", "duplicate field `"].iter().find_map(|prefix| {
        let rest = text.strip_prefix(prefix)?;
        let field = &rest[..rest.find('`')?];
        // Our field names: short camelCase identifiers.
        (field.len() <= 32 && field.bytes().all(|b| b.is_ascii_alphanumeric())).then_some((prefix, field))
    });
    match named {
        Some((prefix, field)) => Failure::invalid(format!("invalid {method} params: {prefix}{field}`")),
        None if error.is_syntax() || error.is_eof() => {
            Failure::invalid(format!("invalid {method} params: not valid JSON"))
        }
        None => Failure::invalid(format!("invalid {method} params: a field has the wrong type or an invalid value")),
    }
}

/// Walks a value, decoding every string and number, counting depth.
struct Strict {
    depth: usize,
}

impl Strict {
    fn deeper<E: de::Error>(&self) -> Result<Strict, E> {
        if self.depth >= MAX_DEPTH {
            return Err(E::custom(TOO_DEEP));
        }
        Ok(Strict { depth: self.depth + 1 })
    }
}

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        if v.is_finite() { Ok(()) } else { Err(E::custom("number out of range")) }
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let inner = self.deeper()?;
        while seq.next_element_seed(Strict { depth: inner.depth })?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let inner = self.deeper()?;
        // Keys are decoded too (as strings), so a lone surrogate there fails.
        while map.next_key::<Key>()?.is_some() {
            map.next_value_seed(Strict { depth: inner.depth })?;
        }
        Ok(())
    }
}

/// A map key, decoded and dropped.
struct Key;

impl<'de> de::Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Key, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_str<E>(self, _: &str) -> Result<Key, E> {
                Ok(Key)
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_accepts_ordinary_json_and_refuses_what_peers_cannot_parse() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        for ok in ["null", "1", "-1.5e10", r#""a\"b\u00e9\ud83d\ude00""#, r#"{"a":[1,{"b":null}]}"#, &deep(64)] {
            assert_eq!(check_strict(ok), Ok(()), "{ok}");
        }
        let cases: &[(&str, &str)] = &[
            (&deep(65), "nested deeper than 64 levels"),
            (&deep(127), "nested deeper than 64 levels"),
            (r#""\ud800""#, "a string with a lone surrogate"),
            (r#"{"\udc00":1}"#, "a string with a lone surrogate"),
            ("1e400", "a number that is not finite"),
            ("[1e99999]", "a number that is not finite"),
            ("{", "not valid JSON"),
            ("1 2", "not valid JSON"),
        ];
        for (bad, why) in cases {
            assert_eq!(check_strict(bad), Err(*why), "{bad}");
        }
    }

    #[test]
    fn parse_errors_never_quote_the_input() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code, reason = "only parsed")]
        struct P {
            #[serde(rename = "minProtocol")]
            min_protocol: u32,
        }
        let secret = "s3cret-token-value";
        for input in [format!(r#"{{"minProtocol":"{secret}"}}"#), format!(r#""{secret}""#), "{}".to_string()] {
            let error = serde_json::from_str::<P>(&input).unwrap_err();
            let failure = invalid_params("connect", &error);
            assert!(!failure.message.contains(secret), "{failure}");
        }
        let error = serde_json::from_str::<P>("{}").unwrap_err();
        assert_eq!(invalid_params("connect", &error).message, "invalid connect params: missing field `minProtocol`");
    }
}
