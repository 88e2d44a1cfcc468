//! Where a gateway listens, as the client commands take it: a `ws://` or
//! `wss://` URL parsed into scheme, host, port and path. Parsing only;
//! nothing here opens a socket or sends a byte of the protocol.

use std::fmt;
use std::net::IpAddr;

/// Where a gateway listens: `ws://HOST[:PORT][/PATH]` or `wss://…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `wss://`: the connection is TLS (SPEC §8).
    pub tls: bool,
    /// Host name or address (IPv6 without brackets); also the TLS server
    /// name (SNI and the name the certificate must be valid for).
    pub host: String,
    /// Port (80 for `ws://`, 443 for `wss://` when the URL gives none, as
    /// RFC 6455 §3 says).
    pub port: u16,
    /// Request path (`/ws` when the URL gives none).
    pub path: String,
}

impl Endpoint {
    /// Parses a `ws://` or `wss://` URL.
    ///
    /// # Errors
    /// One line saying what is wrong with it.
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let (tls, rest) = match (url.strip_prefix("ws://"), url.strip_prefix("wss://")) {
            (Some(rest), _) => (false, rest),
            (None, Some(rest)) => (true, rest),
            (None, None) => return Err(format!("{url:?}: expected ws://HOST:PORT/PATH or wss://HOST[:PORT]/PATH")),
        };
        if tls && !cfg!(feature = "tls") {
            return Err(format!(
                "{url:?}: this goclaw was built without TLS (cargo feature \"tls\"), so it speaks plain ws:// only; \
                 use a build with it, or reach the gateway through a tunnel"
            ));
        }
        let (authority, path) = match rest.find('/') {
            Some(at) => rest.split_at(at),
            None => (rest, "/ws"),
        };
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => {
                let (host, after) = v6.split_once(']').ok_or_else(|| format!("{url:?}: unclosed [ in the host"))?;
                if host.parse::<std::net::Ipv6Addr>().is_err() {
                    return Err(format!("{url:?}: {host:?} in brackets is not an IPv6 address"));
                }
                match after {
                    "" => (host, None),
                    _ => (host, Some(after.strip_prefix(':').ok_or_else(|| format!("{url:?}: junk after ]"))?)),
                }
            }
            None => match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            },
        };
        // An IPv6 address goes in brackets; anything else with a colon left
        // in the host, or URL syntax goclaw does not take, is refused.
        let bracketed = authority.starts_with('[');
        if host.is_empty() || host.contains(['@', ' ', '[', ']', '?', '#']) || (!bracketed && host.contains(':')) {
            return Err(format!("{url:?}: expected ws://HOST:PORT/PATH"));
        }
        let port = match port {
            Some(port) => port.parse().map_err(|_| format!("{url:?}: invalid port {port:?}"))?,
            None if tls => 443,
            None => 80,
        };
        if !path.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!("{url:?}: the path must be plain ASCII without spaces"));
        }
        Ok(Endpoint { tls, host: host.to_string(), port, path: path.to_string() })
    }

    /// The `Host` header value: the host, and the port unless it is the
    /// scheme's default (what browsers send, and what name-based virtual
    /// hosts in a TLS proxy match on).
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        if self.port == self.default_port() { host } else { format!("{host}:{}", self.port) }
    }

    fn default_port(&self) -> u16 {
        if self.tls { 443 } else { 80 }
    }

    /// Whether the host is a loopback address or `localhost`: a gateway on
    /// this machine.
    pub fn is_loopback(&self) -> bool {
        self.host.eq_ignore_ascii_case("localhost")
            || self.host.parse::<IpAddr>().is_ok_and(|ip| ip.to_canonical().is_loopback())
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "wss" } else { "ws" };
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        write!(f, "{scheme}://{host}:{}{}", self.port, self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let parsed = |url: &str| Endpoint::parse(url).map(|e| (e.tls, e.host, e.port, e.path));
        assert_eq!(parsed("ws://127.0.0.1:18789/ws"), Ok((false, "127.0.0.1".into(), 18789, "/ws".into())));
        assert_eq!(parsed("ws://gw.lan"), Ok((false, "gw.lan".into(), 80, "/ws".into())));
        assert_eq!(parsed("ws://[::1]:9/"), Ok((false, "::1".into(), 9, "/".into())));
        assert_eq!(parsed("ws://[::1]"), Ok((false, "::1".into(), 80, "/ws".into())));
        for bad in [
            "http://x",
            "ws://",
            "ws://x:port",
            "ws://[::1/ws",
            "ws://x/a b",
            "ws://u@x",
            "ws://[x]:1",
            "ws://[::1]x",
            "ws://a:b:c",
            "ws://x?y",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
        let v6 = Endpoint::parse("ws://[::1]:9").unwrap();
        assert_eq!(v6.to_string(), "ws://[::1]:9/ws");
        assert_eq!(v6.authority(), "[::1]:9");
        assert!(v6.is_loopback());
        assert_eq!(Endpoint::parse("ws://gw.lan").unwrap().authority(), "gw.lan");
        assert!(!Endpoint::parse("ws://gw.lan").unwrap().is_loopback());
        assert!(Endpoint::parse("ws://localhost:1").unwrap().is_loopback());
    }

    #[test]
    fn wss_defaults_to_443_or_is_refused_without_tls() {
        let parsed = Endpoint::parse("wss://gw.example/ws");
        if cfg!(feature = "tls") {
            let e = parsed.unwrap();
            assert_eq!((e.tls, e.port, e.authority()), (true, 443, "gw.example".to_string()));
            assert_eq!(e.to_string(), "wss://gw.example:443/ws");
            let e = Endpoint::parse("wss://gw.example:8443").unwrap();
            assert_eq!((e.port, e.authority(), e.path), (8443, "gw.example:8443".to_string(), "/ws".to_string()));
        } else {
            assert!(parsed.unwrap_err().contains("without TLS"));
        }
    }
}
