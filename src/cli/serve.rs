//! `goclaw serve [FLAGS]`: the flag table of SPEC §2 and the gateway's
//! [`Config`] built from it, validated before anything starts.

use std::path::{Path, PathBuf};

use crate::cli::args::{FlagSpec, Lookup, resolve_token, split_args};
use crate::cli::command::Command;
use crate::cli::values::{
    parse_addr, parse_bool, parse_cidr, parse_duration, parse_level, parse_number, parse_origin, parse_rate,
    parse_switch,
};
use crate::gateway::config::{Config, TrustedProxies};
use crate::util::ConfigError;

/// One `serve` flag: its name, the placeholder for its value, the default
/// shown in `--help` and a one-line description.
pub struct Flag {
    /// The flag, e.g. `--listen`.
    pub name: &'static str,
    /// The placeholder for its value.
    pub value: &'static str,
    /// The default, as `--help` shows it.
    pub default: &'static str,
    /// What it does.
    pub help: &'static str,
}

pub const FLAGS: &[Flag] = &[
    Flag { name: "--listen", value: "ADDR", default: "127.0.0.1:18789", help: "WebSocket listener" },
    Flag {
        name: "--metrics-listen",
        value: "ADDR",
        default: "127.0.0.1:18790",
        help: "listener for /metrics, /healthz, /readyz",
    },
    Flag { name: "--token", value: "TOKEN", default: "none", help: "shared secret clients present in connect" },
    Flag {
        name: "--token-file",
        value: "PATH",
        default: "none",
        help: "read the token from a file ($CREDENTIALS_DIRECTORY/token is used when present)",
    },
    Flag {
        name: "--state-dir",
        value: "DIR",
        default: "$STATE_DIRECTORY, $XDG_STATE_HOME/goclaw or ~/.local/state/goclaw",
        help: "logs go to DIR/logs/goclaw.log",
    },
    Flag { name: "--log-level", value: "LEVEL", default: "info", help: "error, warn, info, debug or trace" },
    Flag {
        name: "--max-message-size",
        value: "BYTES",
        default: "524288",
        help: "larger messages or frames close the connection with 1009",
    },
    Flag { name: "--pong-wait", value: "DUR", default: "60s", help: "a client silent this long is closed" },
    Flag {
        name: "--ping-period",
        value: "DUR",
        default: "9/10 of --pong-wait",
        help: "server ping interval; must be shorter than --pong-wait",
    },
    Flag { name: "--write-wait", value: "DUR", default: "10s", help: "output stalled this long closes the connection" },
    Flag {
        name: "--handshake-timeout",
        value: "DUR",
        default: "10s",
        help: "time from TCP accept to a completed connect",
    },
    Flag { name: "--rate-limit", value: "PER_SEC", default: "5", help: "new connections per second per source IP" },
    Flag { name: "--rate-burst", value: "N", default: "10", help: "bucket size for --rate-limit" },
    Flag {
        name: "--max-connections",
        value: "N",
        default: "1024",
        help: "concurrent WebSocket connections (one thread each)",
    },
    Flag { name: "--message-rate", value: "PER_SEC", default: "100", help: "requests per second per connection" },
    Flag { name: "--message-burst", value: "N", default: "200", help: "bucket size for --message-rate" },
    Flag { name: "--tick-interval", value: "DUR", default: "15s", help: "tick event period" },
    Flag {
        name: "--shutdown-timeout",
        value: "DUR",
        default: "5s",
        help: "grace period for clients to close on shutdown",
    },
    Flag {
        name: "--allowed-origin",
        value: "ORIGIN",
        default: "any",
        help: "browser Origin allowed to connect; repeatable (variable: comma-separated)",
    },
    Flag {
        name: "--allow-token-nodes",
        value: "",
        default: "off",
        help: "accept nodes without a device identity, by the shared token and client.id",
    },
    Flag {
        name: "--local-auto-approve",
        value: "BOOL",
        default: "true",
        help: "approve a device silently on loopback with the shared token and no proxy header",
    },
    Flag {
        name: "--trusted-proxy",
        value: "CIDR",
        default: "none",
        help: "a reverse proxy whose X-Forwarded-For names the client, for the per-address limits; repeatable",
    },
];

/// The flags that may be given more than once (variables: comma-separated).
const REPEATABLE: &[&str] = &["--allowed-origin", "--trusted-proxy"];

/// `goclaw serve --help`: the flag table.
fn help() -> String {
    let mut text = String::from(
        "usage: goclaw serve [FLAGS]\n\n\
         Every flag also reads the variable GOCLAW_<FLAG> (e.g. --pong-wait: GOCLAW_PONG_WAIT);\n\
         a flag beats its variable, the variable beats the default. Durations take h, m, s and ms,\n\
         alone or combined, largest first (250ms, 60s, 2m, 1m30s, 1h). An ADDR of :PORT means\n\
         every IPv4 interface (0.0.0.0:PORT).\n\n",
    );
    let width = FLAGS.iter().map(|f| f.name.len() + f.value.len() + 1).max().unwrap_or(0);
    for flag in FLAGS {
        let left = format!("{} {}", flag.name, flag.value);
        text.push_str(&format!("  {left:<width$}  {} (default: {})\n", flag.help, flag.default));
    }
    text
}

/// Parses the flags of `serve`.
pub fn parse<F>(args: &[String], env: &F) -> Result<Command, ConfigError>
where
    F: Fn(&str) -> Option<String>,
{
    let flags: Vec<FlagSpec> = FLAGS.iter().map(|flag| (flag.name, !flag.value.is_empty())).collect();
    let Some(parsed) = split_args("serve", args, &flags, REPEATABLE)? else {
        return Ok(Command::Help(help()));
    };
    parsed.no_positional("serve")?;
    let lookup = Lookup { given: &parsed.given, env };
    build_config(&lookup).map(|config| Command::Serve(Box::new(config)))
}

fn build_config<F: Fn(&str) -> Option<String>>(lookup: &Lookup<'_, F>) -> Result<Config, ConfigError> {
    let d = Config::default();
    let pong_wait = lookup.parsed("--pong-wait", d.pong_wait, parse_duration)?;
    let allowed_origins = lookup
        .list("--allowed-origin")
        .iter()
        .map(|(source, origin)| parse_origin(source, origin))
        .collect::<Result<Vec<_>, _>>()?;
    let trusted_proxies = lookup
        .list("--trusted-proxy")
        .iter()
        .map(|(source, cidr)| parse_cidr(source, cidr))
        .collect::<Result<Vec<_>, _>>()?;
    let config = Config {
        listen: lookup.parsed("--listen", d.listen, parse_addr)?,
        metrics_listen: lookup.parsed("--metrics-listen", d.metrics_listen, parse_addr)?,
        token: resolve_token(lookup)?,
        state_dir: match lookup.get("--state-dir") {
            Some((_, dir)) => Some(PathBuf::from(dir)),
            None => default_state_dir(lookup.env),
        },
        log_level: lookup.parsed("--log-level", d.log_level, parse_level)?,
        max_message_bytes: lookup.parsed("--max-message-size", d.max_message_bytes, parse_number)?,
        pong_wait,
        ping_period: lookup.parsed("--ping-period", pong_wait * 9 / 10, parse_duration)?,
        write_wait: lookup.parsed("--write-wait", d.write_wait, parse_duration)?,
        handshake_timeout: lookup.parsed("--handshake-timeout", d.handshake_timeout, parse_duration)?,
        rate_limit_per_sec: lookup.parsed("--rate-limit", d.rate_limit_per_sec, parse_rate)?,
        rate_burst: lookup.parsed("--rate-burst", d.rate_burst, parse_number)?,
        max_connections: lookup.parsed("--max-connections", d.max_connections, parse_number)?,
        message_rate_per_sec: lookup.parsed("--message-rate", d.message_rate_per_sec, parse_rate)?,
        message_burst: lookup.parsed("--message-burst", d.message_burst, parse_number)?,
        flood_close_after: d.flood_close_after,
        tick_interval: lookup.parsed("--tick-interval", d.tick_interval, parse_duration)?,
        shutdown_timeout: lookup.parsed("--shutdown-timeout", d.shutdown_timeout, parse_duration)?,
        allowed_origins,
        trusted_proxies: TrustedProxies::new(trusted_proxies),
        allow_token_nodes: lookup.parsed("--allow-token-nodes", d.allow_token_nodes, parse_switch)?,
        local_auto_approve: lookup.parsed("--local-auto-approve", d.local_auto_approve, parse_bool)?,
        max_unauthenticated_per_source: d.max_unauthenticated_per_source,
    };
    config.validate()?;
    Ok(config)
}

pub(crate) fn default_state_dir<F: Fn(&str) -> Option<String>>(env: &F) -> Option<PathBuf> {
    let set = |name| env(name).filter(|v: &String| !v.is_empty());
    if let Some(dirs) = set("STATE_DIRECTORY") {
        // systemd passes a colon-separated list when several are configured.
        return dirs.split(':').next().map(PathBuf::from);
    }
    if let Some(xdg) = set("XDG_STATE_HOME").filter(|p| Path::new(p).is_absolute()) {
        return Some(Path::new(&xdg).join("goclaw"));
    }
    set("HOME").map(|home| Path::new(&home).join(".local/state/goclaw"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::parse;
    use std::collections::HashMap;
    use std::time::Duration;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn serve(list: &[&str], env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        match parse(&args(list), |name| env.get(name).cloned())? {
            Command::Serve(config) => Ok(*config),
            _ => panic!("not serve"),
        }
    }

    #[test]
    fn defaults() {
        let config = serve(&["serve"], &[]).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:18789");
        assert_eq!(config.ping_period, Duration::from_secs(54));
        assert!(config.token.is_none());
        assert!(config.state_dir.is_none());
    }

    #[test]
    fn a_bare_port_is_every_interface_and_compound_durations_parse() {
        let env = [("GOCLAW_METRICS_LISTEN", ":18790"), ("GOCLAW_PONG_WAIT", "1m30s")];
        let config = serve(&["serve", "--listen", ":18789", "--token", "t", "--write-wait", "1m"], &env).unwrap();
        assert_eq!(config.listen.to_string(), "0.0.0.0:18789");
        assert_eq!(config.metrics_listen.to_string(), "0.0.0.0:18790");
        assert_eq!(config.pong_wait, Duration::from_secs(90));
        assert_eq!(config.ping_period, Duration::from_secs(81));
        assert_eq!(config.write_wait, Duration::from_secs(60));
    }

    #[test]
    fn flag_beats_variable_beats_default() {
        let env = [("GOCLAW_PONG_WAIT", "10s"), ("GOCLAW_RATE_BURST", "3")];
        let config = serve(&["serve", "--pong-wait", "20s"], &env).unwrap();
        assert_eq!(config.pong_wait, Duration::from_secs(20));
        assert_eq!(config.ping_period, Duration::from_secs(18));
        assert_eq!(config.rate_burst, 3);
        let config = serve(&["serve", "--rate-burst=7"], &env).unwrap();
        assert_eq!(config.rate_burst, 7);
        assert_eq!(config.pong_wait, Duration::from_secs(10));
    }

    #[test]
    fn errors_name_the_source() {
        type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
        let cases: &[Case<'_>] = &[
            (&["serve", "--pong-wait", "5"], &[], "--pong-wait"),
            (&["serve"], &[("GOCLAW_PONG_WAIT", "x")], "GOCLAW_PONG_WAIT"),
            (&["serve", "--listen"], &[], "--listen"),
            (&["serve", "--listen", "0.0.0.0:1"], &[], "--listen"),
            (&["serve", "--listen", ":18789"], &[], "--listen"),
            (&["serve", "--metrics-listen", ":x"], &[], "--metrics-listen"),
            (&["serve", "--token", "a", "--token-file", "/x"], &[], "--token"),
            (&["serve", "--token-file", "/nonexistent/goclaw"], &[], "--token-file"),
            (&["serve", "--ping-period", "70s"], &[], "--ping-period"),
            (&["serve", "--max-connections", "0"], &[], "--max-connections"),
            (&["serve", "--rate-limit", "-1"], &[], "--rate-limit"),
            (&["serve", "--message-rate", "1e-20"], &[], "--message-rate"),
            (&["serve", "--log-level", "loud"], &[], "--log-level"),
            (&["serve", "--listen", "a", "--listen", "b"], &[], "--listen"),
            (&["serve", "--nope"], &[], ""),
            (&["serve", "extra"], &[], ""),
            (&["launch"], &[], ""),
        ];
        for (list, env, flag) in cases {
            let err = serve(list, env).err().unwrap_or_else(|| panic!("{list:?} accepted"));
            assert_eq!(err.flag, *flag, "{list:?}: {err}");
            assert!(!err.to_string().contains('\n'), "{err}");
        }
    }

    #[test]
    fn token_sources() {
        let dir = std::env::temp_dir().join(format!("goclaw-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("token"), "from-credentials\n").unwrap();
        let creds = dir.to_str().unwrap();
        let config = serve(&["serve", "--listen", "0.0.0.0:0"], &[("CREDENTIALS_DIRECTORY", creds)]).unwrap();
        assert!(config.token.unwrap().matches("from-credentials"));
        let config = serve(&["serve"], &[("CREDENTIALS_DIRECTORY", creds), ("GOCLAW_TOKEN", "env")]).unwrap();
        assert!(config.token.unwrap().matches("env"));
        let file = dir.join("token").to_str().unwrap().to_string();
        let config = serve(&["serve", "--token-file", &file], &[("GOCLAW_TOKEN", "env")]).unwrap();
        assert!(config.token.unwrap().matches("from-credentials"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn trusted_proxies_are_addresses_or_networks() {
        let config = serve(&["serve", "--trusted-proxy", "127.0.0.1", "--trusted-proxy=10.0.0.0/8"], &[]).unwrap();
        assert!(config.trusted_proxies.contains("10.9.9.9".parse().unwrap()));
        assert!(!config.trusted_proxies.contains("127.0.0.2".parse().unwrap()));
        let config = serve(&["serve"], &[("GOCLAW_TRUSTED_PROXY", "::1, 192.168.0.0/16")]).unwrap();
        assert!(config.trusted_proxies.contains("192.168.3.4".parse().unwrap()));
        for bad in ["10.0.0.0/33", "fd00::/129", "proxy.example", "10.0.0.0/", "1.2.3.4/x"] {
            let error = serve(&["serve", "--trusted-proxy", bad], &[]).unwrap_err();
            assert_eq!(error.flag, "--trusted-proxy", "{bad}");
        }
    }

    #[test]
    fn origins_and_help() {
        let config =
            serve(&["serve"], &[("GOCLAW_ALLOWED_ORIGIN", "https://a.example, http://b.example:8080")]).unwrap();
        assert_eq!(config.allowed_origins, ["https://a.example", "http://b.example:8080"]);
        let config = serve(
            &["serve", "--allowed-origin", "https://x.example", "--allowed-origin=https://y.example"],
            &[("GOCLAW_ALLOWED_ORIGIN", "https://ignored.example")],
        )
        .unwrap();
        assert_eq!(config.allowed_origins, ["https://x.example", "https://y.example"]);
        let Ok(Command::Help(text)) = parse(&args(&["serve", "--help"]), |_| None) else { panic!() };
        for flag in FLAGS {
            assert!(text.contains(flag.name), "{}", flag.name);
        }
    }
}
