//! The gateway's configuration: one plain struct, every default in one place.
//!
//! [`Config`] is built by the command line from flags and `GOCLAW_*`
//! variables, checked once by [`Config::validate`], then frozen for the life
//! of the gateway. No I/O here.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use log::LevelFilter;

use crate::util::ConfigError;
use crate::wire::auth::Token;

/// Smallest accepted `--max-message-size`: a `connect` request must fit.
pub const MIN_MESSAGE_BYTES: usize = 1024;
/// Slowest `--rate-limit` and `--message-rate`: one per 1,000 s. The token
/// buckets turn `1 / rate` into a `Duration` and add it to an `Instant`;
/// a rate of 1e-20 would overflow both and panic the thread that asked.
pub const MIN_RATE_PER_SEC: f64 = 0.001;
/// Largest accepted `--max-message-size` (64 MiB): one message of this size
/// may be buffered per connection, so a bigger limit is a memory hazard on a
/// small board, not a feature.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;
/// Default `--max-message-size`.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 512 * 1024;
/// Largest accepted `--max-connections`: each connection is a thread.
pub const MAX_CONNECTIONS: usize = 100_000;

/// Everything the gateway needs to run. Built once at start-up, then shared
/// read-only; see [`Config::default`] for the defaults of SPEC §2.
#[derive(Clone)]
pub struct Config {
    /// WebSocket listener (`--listen`, default `127.0.0.1:18789`).
    pub listen: SocketAddr,
    /// Listener for `/metrics`, `/healthz` and `/readyz` (`--metrics-listen`,
    /// default `127.0.0.1:18790`).
    pub metrics_listen: SocketAddr,
    /// Shared secret clients present in `connect`; `None` turns auth off
    /// (allowed on loopback only, see [`Config::validate`]).
    pub token: Option<Token>,
    /// Where logs go (`DIR/logs/goclaw.log`); `None` when no default could be
    /// derived from the environment (no `$HOME`), in which case logs go to the
    /// console only.
    pub state_dir: Option<PathBuf>,
    /// Console log level (`--log-level`, default `info`).
    pub log_level: LevelFilter,
    /// Largest message and largest frame a client may send, in bytes
    /// (`--max-message-size`, default 512 KiB). Over it: close 1009.
    pub max_message_bytes: usize,
    /// A client that sends nothing (not even a pong) for this long is closed
    /// (`--pong-wait`, default 60 s).
    pub pong_wait: Duration,
    /// Interval between server pings (`--ping-period`, default 9/10 of
    /// `pong_wait`); must be shorter than `pong_wait`.
    pub ping_period: Duration,
    /// A connection whose queued output makes no progress for this long is
    /// closed (`--write-wait`, default 10 s).
    pub write_wait: Duration,
    /// Time from TCP accept to a completed `connect` (`--handshake-timeout`,
    /// default 10 s). Slowloris protection.
    pub handshake_timeout: Duration,
    /// New connections per second per source IP (`--rate-limit`, default 5).
    pub rate_limit_per_sec: f64,
    /// Bucket size for the above (`--rate-burst`, default 10).
    pub rate_burst: u32,
    /// Concurrent WebSocket connections, each a thread (`--max-connections`,
    /// default 1024). Further upgrades get 503 without a thread.
    pub max_connections: usize,
    /// Requests per second per connection (`--message-rate`, default 100).
    pub message_rate_per_sec: f64,
    /// Bucket size for the above (`--message-burst`, default 200).
    pub message_burst: u32,
    /// A client rate-limited without a quiet second for this long is closed
    /// with 1008 (default 10 s, SPEC §4.2). Not a flag: tests shorten it.
    pub flood_close_after: Duration,
    /// Period of the `tick` event (`--tick-interval`, default 15 s).
    pub tick_interval: Duration,
    /// Grace period for clients to close on shutdown (`--shutdown-timeout`,
    /// default 5 s).
    pub shutdown_timeout: Duration,
    /// Browser origins allowed to connect (`--allowed-origin`, repeatable).
    /// Empty: any origin. Requests without `Origin` are always allowed.
    pub allowed_origins: Vec<String>,
    /// Reverse proxies whose `X-Forwarded-For` names the client
    /// (`--trusted-proxy`, repeatable); empty: none.
    pub trusted_proxies: TrustedProxies,
    /// Accept nodes that present no device identity, by the shared token
    /// and `client.id` (`--allow-token-nodes`, default off; SPEC §4.4).
    pub allow_token_nodes: bool,
    /// Approve a device silently when it connects from loopback with the
    /// shared token and no forwarding header (`--local-auto-approve`,
    /// default true; SPEC §4.4).
    pub local_auto_approve: bool,
    /// Connections from one source (IPv6 by /64) that may be open before
    /// completing `connect` (default 8, SPEC §5). Not a flag.
    pub max_unauthenticated_per_source: usize,
}

impl Default for Config {
    fn default() -> Self {
        let pong_wait = Duration::from_secs(60);
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 18789)),
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 18790)),
            token: None,
            state_dir: None,
            log_level: LevelFilter::Info,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            pong_wait,
            ping_period: pong_wait * 9 / 10,
            write_wait: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            rate_limit_per_sec: 5.0,
            rate_burst: 10,
            max_connections: 1024,
            message_rate_per_sec: 100.0,
            message_burst: 200,
            flood_close_after: Duration::from_secs(10),
            tick_interval: Duration::from_secs(15),
            shutdown_timeout: Duration::from_secs(5),
            allowed_origins: Vec::new(),
            trusted_proxies: TrustedProxies::default(),
            allow_token_nodes: false,
            local_auto_approve: true,
            max_unauthenticated_per_source: 8,
        }
    }
}

/// Written by hand, not derived: the token shows only as present or absent,
/// whatever `Token`'s own `Debug` does.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("metrics_listen", &self.metrics_listen)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("state_dir", &self.state_dir)
            .field("log_level", &self.log_level)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("pong_wait", &self.pong_wait)
            .field("ping_period", &self.ping_period)
            .field("write_wait", &self.write_wait)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("rate_limit_per_sec", &self.rate_limit_per_sec)
            .field("rate_burst", &self.rate_burst)
            .field("max_connections", &self.max_connections)
            .field("message_rate_per_sec", &self.message_rate_per_sec)
            .field("message_burst", &self.message_burst)
            .field("flood_close_after", &self.flood_close_after)
            .field("tick_interval", &self.tick_interval)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("allowed_origins", &self.allowed_origins)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("allow_token_nodes", &self.allow_token_nodes)
            .field("local_auto_approve", &self.local_auto_approve)
            .field("max_unauthenticated_per_source", &self.max_unauthenticated_per_source)
            .finish()
    }
}

/// Reverse proxies trusted to name the client (`--trusted-proxy CIDR`):
/// a connection from one of them counts against the per-address limits
/// under the address its `X-Forwarded-For` gives, not under the proxy's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<(IpAddr, u8)>);

impl TrustedProxies {
    /// From `(network, prefix length)` pairs, as `--trusted-proxy` parses them.
    pub fn new(networks: Vec<(IpAddr, u8)>) -> TrustedProxies {
        TrustedProxies(networks)
    }

    /// Whether `ip` is one of the trusted proxies.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|&(net, len)| match (net.to_canonical(), ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(u32::from(net).into(), u32::from(ip).into(), 32, len),
            (IpAddr::V6(net), IpAddr::V6(ip)) => prefix_eq(u128::from(net), u128::from(ip), 128, len),
            _ => false,
        })
    }

    /// The client behind the proxy `peer`: the last address of the
    /// `X-Forwarded-For` chain (`forwarded_for`, in header order) that is
    /// not itself a trusted proxy. `None` when `peer` is not trusted or the
    /// chain names no one.
    pub fn client(&self, peer: IpAddr, forwarded_for: &[IpAddr]) -> Option<IpAddr> {
        if !self.contains(peer) {
            return None;
        }
        forwarded_for.iter().rev().find(|ip| !self.contains(**ip)).or(forwarded_for.first()).copied()
    }
}

/// Whether the first `len` of `bits` bits of `a` and `b` are equal.
fn prefix_eq(a: u128, b: u128, bits: u32, len: u8) -> bool {
    let len = u32::from(len).min(bits);
    len == 0 || (a ^ b) >> (bits - len) == 0
}

impl Config {
    /// Checks the combination of values; the error names the flag at fault.
    ///
    /// # Errors
    /// A [`ConfigError`] for the first value out of range, for
    /// `ping_period >= pong_wait`, and for a non-loopback `listen` without a
    /// token (the guardrail of SPEC §2).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("--pong-wait", self.pong_wait),
            ("--ping-period", self.ping_period),
            ("--write-wait", self.write_wait),
            ("--handshake-timeout", self.handshake_timeout),
            ("--tick-interval", self.tick_interval),
        ];
        for (flag, value) in positive {
            if value.is_zero() {
                return Err(ConfigError::new(flag, "must be greater than zero"));
            }
        }
        if self.ping_period >= self.pong_wait {
            return Err(ConfigError::new(
                "--ping-period",
                format!(
                    "must be shorter than --pong-wait ({} ms >= {} ms)",
                    self.ping_period.as_millis(),
                    self.pong_wait.as_millis()
                ),
            ));
        }
        if !(MIN_MESSAGE_BYTES..=MAX_MESSAGE_BYTES).contains(&self.max_message_bytes) {
            return Err(ConfigError::new(
                "--max-message-size",
                format!("must be between {MIN_MESSAGE_BYTES} and {MAX_MESSAGE_BYTES} bytes"),
            ));
        }
        if !(1..=MAX_CONNECTIONS).contains(&self.max_connections) {
            return Err(ConfigError::new("--max-connections", format!("must be between 1 and {MAX_CONNECTIONS}")));
        }
        let rates = [("--rate-limit", self.rate_limit_per_sec), ("--message-rate", self.message_rate_per_sec)];
        for (flag, rate) in rates {
            if !(rate.is_finite() && rate >= MIN_RATE_PER_SEC) {
                return Err(ConfigError::new(flag, format!("must be a number of at least {MIN_RATE_PER_SEC}")));
            }
        }
        for (flag, burst) in [("--rate-burst", self.rate_burst), ("--message-burst", self.message_burst)] {
            if burst == 0 {
                return Err(ConfigError::new(flag, "must be at least 1"));
            }
        }
        if self.token.is_none() && !self.listen.ip().is_loopback() {
            return Err(ConfigError::new(
                "--listen",
                format!(
                    "refusing to listen on {} without a token: set --token, --token-file or \
                     GOCLAW_TOKEN, or listen on a loopback address",
                    self.listen
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_proxies_name_the_client_behind_them() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let proxies = TrustedProxies::new(vec![(ip("127.0.0.1"), 32), (ip("10.0.0.0"), 8), (ip("fd00::"), 8)]);
        for (addr, trusted) in [
            ("127.0.0.1", true),
            ("127.0.0.2", false),
            ("10.200.0.1", true),
            ("11.0.0.1", false),
            ("::ffff:10.1.2.3", true),
            ("fd12::1", true),
            ("fe80::1", false),
        ] {
            assert_eq!(proxies.contains(ip(addr)), trusted, "{addr}");
        }
        // The nearest untrusted hop, right to left; a peer not trusted names no one.
        let chain = [ip("198.51.100.1"), ip("203.0.113.7"), ip("10.0.0.9")];
        assert_eq!(proxies.client(ip("127.0.0.1"), &chain), Some(ip("203.0.113.7")));
        assert_eq!(proxies.client(ip("192.0.2.1"), &chain), None);
        assert_eq!(proxies.client(ip("127.0.0.1"), &[]), None);
        assert_eq!(proxies.client(ip("127.0.0.1"), &[ip("10.0.0.9")]), Some(ip("10.0.0.9")));
        assert!(!TrustedProxies::default().contains(ip("127.0.0.1")));
        assert!(TrustedProxies::new(vec![(ip("0.0.0.0"), 0)]).contains(ip("192.0.2.1")));
    }

    #[test]
    fn guardrail_and_ranges() {
        let mut config = Config::default();
        assert_eq!(config.validate(), Ok(()));
        config.listen = "0.0.0.0:1".parse().unwrap();
        assert_eq!(config.validate().unwrap_err().flag, "--listen");
        config.token = Some(Token::new("--token", "t".into()).unwrap());
        assert_eq!(config.validate(), Ok(()));
        config.ping_period = config.pong_wait;
        assert_eq!(config.validate().unwrap_err().flag, "--ping-period");
    }
}
