//! Parsers of flag values shared by every command: durations, addresses,
//! origins, levels, numbers and rates. Each error names the flag (or
//! variable) it came from; nothing here does I/O except resolving a host
//! name in an address.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use log::LevelFilter;

use crate::util::ConfigError;

/// Parses a duration with a unit: `250ms`, `60s`, `2m`.
///
/// # Errors
/// Anything else, including a bare number, is refused with a hint.
pub fn parse_duration(flag: &str, text: &str) -> Result<Duration, ConfigError> {
    let bad = || {
        ConfigError::new(
            flag,
            format!("invalid duration {text:?}: expected a whole number with ms, s or m (e.g. 250ms, 60s, 2m)"),
        )
    };
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let millis = match unit {
        "ms" => Some(number),
        "s" => number.checked_mul(1000),
        "m" => number.checked_mul(60_000),
        _ => None,
    };
    millis.map(Duration::from_millis).ok_or_else(bad)
}

/// Resolves `host:port` (an IP literal or a name such as `localhost`) to the
/// first address it names.
///
/// # Errors
/// An address that does not parse or resolve.
pub fn parse_addr(flag: &str, text: &str) -> Result<SocketAddr, ConfigError> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let bad = |why: String| ConfigError::new(flag, format!("invalid address {text:?}: {why}"));
    let mut addrs = text.to_socket_addrs().map_err(|e| bad(e.to_string()))?;
    addrs.next().ok_or_else(|| bad("resolves to no address".into()))
}

/// Normalizes an `--allowed-origin` value: `scheme://host[:port]`, lowercase,
/// without a trailing slash, as browsers send it.
///
/// # Errors
/// A value without a scheme or with a path.
pub fn parse_origin(flag: &str, text: &str) -> Result<String, ConfigError> {
    let origin = text.trim_end_matches('/').to_ascii_lowercase();
    let valid = match origin.split_once("://") {
        Some((scheme, host)) => !scheme.is_empty() && !host.is_empty() && !host.contains('/'),
        None => false,
    };
    if !valid {
        return Err(ConfigError::new(
            flag,
            format!("invalid origin {text:?}: expected scheme://host[:port], e.g. https://dash.example.com"),
        ));
    }
    Ok(origin)
}

/// A log level name.
pub fn parse_level(source: &str, text: &str) -> Result<LevelFilter, ConfigError> {
    match text.to_ascii_lowercase().as_str() {
        "error" => Ok(LevelFilter::Error),
        "warn" => Ok(LevelFilter::Warn),
        "info" => Ok(LevelFilter::Info),
        "debug" => Ok(LevelFilter::Debug),
        "trace" => Ok(LevelFilter::Trace),
        _ => Err(ConfigError::new(source, format!("invalid level {text:?}: use error, warn, info, debug or trace"))),
    }
}

/// A whole number.
pub fn parse_number<T: std::str::FromStr>(source: &str, text: &str) -> Result<T, ConfigError> {
    text.parse().map_err(|_| ConfigError::new(source, format!("invalid number {text:?}: expected a whole number")))
}

/// A rate per second, greater than zero.
pub fn parse_rate(source: &str, text: &str) -> Result<f64, ConfigError> {
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(ConfigError::new(source, format!("invalid rate {text:?}: expected a number greater than zero"))),
    }
}

/// `true` or `false` (also `1`/`0`, `yes`/`no`, `on`/`off`).
pub fn parse_bool(source: &str, text: &str) -> Result<bool, ConfigError> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(ConfigError::new(source, format!("invalid value {text:?}: expected true or false"))),
    }
}

/// A flag without a value: given means on; its variable takes a boolean.
pub fn parse_switch(source: &str, text: &str) -> Result<bool, ConfigError> {
    if text.is_empty() { Ok(true) } else { parse_bool(source, text) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let cases: &[(&str, Option<u64>)] = &[
            ("250ms", Some(250)),
            ("60s", Some(60_000)),
            ("2m", Some(120_000)),
            ("0s", Some(0)),
            ("60", None),
            ("s", None),
            ("1.5s", None),
            ("-1s", None),
            ("10h", None),
            ("", None),
            ("99999999999999999999s", None),
        ];
        for &(text, want) in cases {
            let got = parse_duration("--x", text).ok().map(|d| d.as_millis() as u64);
            assert_eq!(got, want, "{text:?}");
        }
    }

    #[test]
    fn origins() {
        assert_eq!(parse_origin("o", "https://A.example/").unwrap(), "https://a.example");
        assert!(parse_origin("o", "a.example").is_err());
        assert!(parse_origin("o", "https://a.example/path").is_err());
    }
}
