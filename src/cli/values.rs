//! Parsers of flag values shared by every command: durations, addresses,
//! origins, levels, numbers and rates. Each error names the flag (or
//! variable) it came from; nothing here does I/O except resolving a host
//! name in an address.

use std::net::{Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use log::LevelFilter;

use crate::util::ConfigError;

/// The units of a duration and their length in milliseconds. `ms` comes
/// before `m`, so that `250ms` is not read as 250 minutes and a stray `s`.
const DURATION_UNITS: [(&str, u64); 4] = [("h", 3_600_000), ("ms", 1), ("m", 60_000), ("s", 1000)];

/// Parses a duration: whole numbers with units, as Go and Prometheus write
/// them: `250ms`, `60s`, `2m`, `1h`, `1m30s`, `2h45m`, `1m30s500ms`. Each
/// unit at most once, largest first (`h`, `m`, `s`, `ms`).
///
/// # Errors
/// Anything else, including a bare number, a fraction and a total past
/// `u64` milliseconds, is refused with a hint.
pub fn parse_duration(flag: &str, text: &str) -> Result<Duration, ConfigError> {
    let bad = || {
        ConfigError::new(
            flag,
            format!(
                "invalid duration {text:?}: expected whole numbers with h, m, s or ms, largest first \
                 (e.g. 250ms, 60s, 2m, 1m30s, 1h)"
            ),
        )
    };
    let mut rest = text;
    let mut total: u64 = 0;
    // The length of the previous part's unit: each unit must be smaller.
    let mut previous_unit: Option<u64> = None;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (number, after) = rest.split_at(digits);
        let number: u64 = number.parse().map_err(|_| bad())?;
        let &(unit, unit_millis) = DURATION_UNITS.iter().find(|(unit, _)| after.starts_with(unit)).ok_or_else(bad)?;
        if previous_unit.is_some_and(|previous| unit_millis >= previous) {
            return Err(bad());
        }
        previous_unit = Some(unit_millis);
        total = number.checked_mul(unit_millis).and_then(|millis| total.checked_add(millis)).ok_or_else(bad)?;
        rest = &after[unit.len()..];
    }
    if previous_unit.is_none() {
        return Err(bad());
    }
    Ok(Duration::from_millis(total))
}

/// Resolves `host:port` (an IP literal or a name such as `localhost`) to the
/// first address it names. `:port`, as Go programs write it, means every
/// IPv4 interface (`0.0.0.0:port`); `[::]:port` is every IPv6 one.
///
/// # Errors
/// An address that does not parse or resolve.
pub fn parse_addr(flag: &str, text: &str) -> Result<SocketAddr, ConfigError> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let bad = |why: String| ConfigError::new(flag, format!("invalid address {text:?}: {why}"));
    if let Some(port) = text.strip_prefix(':') {
        let port = Some(port)
            .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|p| p.parse::<u16>().ok())
            .ok_or_else(|| bad("expected a port from 0 to 65535 after ':'".into()))?;
        return Ok(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)));
    }
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

/// An address or a network (`CIDR`): `127.0.0.1`, `10.0.0.0/8`, `::1`,
/// `fd00::/8`.
pub fn parse_cidr(flag: &str, text: &str) -> Result<(std::net::IpAddr, u8), ConfigError> {
    let (addr, len) = text.split_once('/').map_or((text, None), |(a, l)| (a, Some(l)));
    let invalid =
        || ConfigError::new(flag, format!("invalid address or network {text:?}: e.g. 127.0.0.1 or 10.0.0.0/8"));
    let addr: std::net::IpAddr = addr.parse().map_err(|_| invalid())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = match len {
        Some(len) => len.parse::<u8>().ok().filter(|l| *l <= max).ok_or_else(invalid)?,
        None => max,
    };
    Ok((addr, len))
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
        const H: u64 = 3_600_000;
        let cases: &[(&str, Option<u64>)] = &[
            ("250ms", Some(250)),
            ("60s", Some(60_000)),
            ("2m", Some(120_000)),
            ("0s", Some(0)),
            ("10h", Some(10 * H)),
            // Go-style compounds, largest unit first.
            ("1h", Some(H)),
            ("1m30s", Some(90_000)),
            ("2h45m", Some(2 * H + 45 * 60_000)),
            ("1m30s500ms", Some(90_500)),
            ("1h0m0s", Some(H)),
            ("1h1ms", Some(H + 1)),
            ("90s", Some(90_000)),
            ("1000ms", Some(1000)),
            // Refused: bare numbers, fractions, signs, spaces, other units.
            ("60", None),
            ("0", None),
            ("1m30", None),
            ("s", None),
            ("ms", None),
            ("1.5s", None),
            ("-1s", None),
            ("+1s", None),
            ("1 s", None),
            (" 1s", None),
            ("1S", None),
            ("1d", None),
            ("1us", None),
            ("", None),
            // Refused: a unit twice, or out of order.
            ("1s1s", None),
            ("30s1m", None),
            ("1ms1s", None),
            ("1m1h", None),
            // Refused: past u64 milliseconds, in one part or in the sum.
            ("99999999999999999999s", None),
            ("18446744073709551615ms", Some(u64::MAX)),
            ("18446744073709551615s", None),
            ("5124095576030h25m", Some(5_124_095_576_030 * H + 25 * 60_000)),
            ("5124095576031h", None),
            ("5124095576030h26m", None),
        ];
        for &(text, want) in cases {
            let got = parse_duration("--x", text).ok().map(|d| d.as_millis() as u64);
            assert_eq!(got, want, "{text:?}");
        }
        let err = parse_duration("--pong-wait", "90").unwrap_err();
        assert_eq!(err.flag, "--pong-wait");
        assert!(err.to_string().contains("1m30s"), "{err}");
    }

    #[test]
    fn addresses() {
        let cases: &[(&str, Option<&str>)] = &[
            ("127.0.0.1:18789", Some("127.0.0.1:18789")),
            (":18789", Some("0.0.0.0:18789")),
            (":0", Some("0.0.0.0:0")),
            ("[::]:18789", Some("[::]:18789")),
            ("[::1]:1", Some("[::1]:1")),
            ("0.0.0.0:18790", Some("0.0.0.0:18790")),
            (":", None),
            (":65536", None),
            (":+80", None),
            (":x", None),
            (": 80", None),
            ("127.0.0.1", None),
        ];
        for &(text, want) in cases {
            let got = parse_addr("--listen", text).ok().map(|a| a.to_string());
            assert_eq!(got.as_deref(), want, "{text:?}");
        }
        let err = parse_addr("--metrics-listen", ":port").unwrap_err();
        assert_eq!(err.flag, "--metrics-listen");
        assert!(err.to_string().contains("after ':'"), "{err}");
    }

    #[test]
    fn origins() {
        assert_eq!(parse_origin("o", "https://A.example/").unwrap(), "https://a.example");
        assert!(parse_origin("o", "a.example").is_err());
        assert!(parse_origin("o", "https://a.example/path").is_err());
    }
}
