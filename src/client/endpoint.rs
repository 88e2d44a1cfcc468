//! Where a gateway listens, as the client commands take it: a `ws://` URL
//! parsed into host, port and path, and the TCP connection to it. Parsing
//! only; nothing here sends a byte of the protocol.

use std::fmt;
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::client::error::ClientError;

/// Where a gateway listens: `ws://HOST[:PORT][/PATH]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// Port (80 when the URL gives none, as RFC 6455 says).
    pub port: u16,
    /// Request path (`/ws` when the URL gives none).
    pub path: String,
}

impl Endpoint {
    /// Parses a `ws://` URL.
    ///
    /// # Errors
    /// One line saying what is wrong with it.
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let Some(rest) = url.strip_prefix("ws://") else {
            if url.starts_with("wss://") {
                return Err(format!(
                    "{url:?}: goclaw speaks plain ws://; put TLS in front of the gateway (a proxy or an SSH tunnel)"
                ));
            }
            return Err(format!("{url:?}: expected ws://HOST:PORT/PATH"));
        };
        let (authority, path) = match rest.find('/') {
            Some(at) => rest.split_at(at),
            None => (rest, "/ws"),
        };
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => {
                let (host, after) = v6.split_once(']').ok_or_else(|| format!("{url:?}: unclosed [ in the host"))?;
                (host, after.strip_prefix(':'))
            }
            None => match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            },
        };
        if host.is_empty() || host.contains(['@', ' ']) {
            return Err(format!("{url:?}: expected ws://HOST:PORT/PATH"));
        }
        let port = match port {
            Some(port) => port.parse().map_err(|_| format!("{url:?}: invalid port {port:?}"))?,
            None => 80,
        };
        if !path.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!("{url:?}: the path must be plain ASCII without spaces"));
        }
        Ok(Endpoint { host: host.to_string(), port, path: path.to_string() })
    }

    /// The `Host` header value.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ws://{}{}", self.authority(), self.path)
    }
}

/// Connects to the first address of `endpoint` that answers.
pub fn tcp_connect(endpoint: &Endpoint, timeout: Duration) -> Result<TcpStream, ClientError> {
    let addrs = (endpoint.host.as_str(), endpoint.port)
        .to_socket_addrs()
        .map_err(|e| ClientError::Connection(format!("cannot resolve {}: {e}", endpoint.host)))?;
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(ClientError::Connection(match last {
        Some(e) => format!("cannot connect to the gateway at {endpoint}: {e}"),
        None => format!("{} resolves to no address", endpoint.host),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let parsed = |url: &str| Endpoint::parse(url).map(|e| (e.host, e.port, e.path));
        assert_eq!(parsed("ws://127.0.0.1:18789/ws"), Ok(("127.0.0.1".into(), 18789, "/ws".into())));
        assert_eq!(parsed("ws://gw.lan"), Ok(("gw.lan".into(), 80, "/ws".into())));
        assert_eq!(parsed("ws://[::1]:9/"), Ok(("::1".into(), 9, "/".into())));
        for bad in ["http://x", "wss://x/ws", "ws://", "ws://x:port", "ws://[::1/ws", "ws://x/a b", "ws://u@x"] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Endpoint::parse("ws://[::1]:9").unwrap().to_string(), "ws://[::1]:9/ws");
    }
}
