//! The command line: `goclaw serve [FLAGS]`, `--help`, `--version`.
//!
//! Owns the flag table of SPEC §2 and the precedence flag > `GOCLAW_*`
//! variable > default. Turns arguments into a validated [`Config`] or a
//! [`ConfigError`] naming the flag (or variable) at fault; never exits itself.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use log::LevelFilter;

use crate::agent::{BUILT_IN, Exec, NodeConfig};
use crate::client::Endpoint;
use crate::config::{self, Config, ConfigError, MAX_TOKEN_BYTES, Token};
use crate::operator::Target;
use crate::protocol::{MAX_COMMAND_BYTES, MAX_ID_BYTES, MAX_INVOKE_TIMEOUT_MS, MAX_LABEL_BYTES};
use crate::sysinfo;

/// What the command line asks for.
pub enum Command {
    /// Run the gateway.
    Serve(Box<Config>),
    /// Print this text on stdout and exit 0.
    Help(String),
    /// Print the version on stdout and exit 0.
    Version,
    /// Probe a health URL; exit 0 if it answers 200, else 1.
    Healthcheck {
        /// `http://HOST:PORT/PATH` to probe.
        url: String,
    },
    /// Run the built-in node agent.
    Node(Box<NodeConfig>),
    /// List the connected nodes.
    Nodes {
        /// The gateway.
        target: Target,
        /// JSON instead of a table.
        json: bool,
    },
    /// Invoke a command on a node and print its result.
    Invoke {
        /// The gateway.
        target: Target,
        /// The node id.
        node: String,
        /// The command.
        command: String,
        /// Its params.
        params: serde_json::Value,
        /// How long the node may take.
        timeout: Duration,
        /// Print `{"ok":...}` as JSON instead of the bare payload.
        json: bool,
    },
    /// Print presence events until interrupted.
    Watch {
        /// The gateway.
        target: Target,
        /// JSON lines instead of text.
        json: bool,
    },
}

/// One `serve` flag: its name, the placeholder for its value, the default
/// shown in `--help` and a one-line description.
struct Flag {
    name: &'static str,
    value: &'static str,
    default: &'static str,
    help: &'static str,
}

const FLAGS: &[Flag] = &[
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
];

/// The only flag that may be given more than once.
const REPEATABLE: &str = "--allowed-origin";

/// Parses `args` (without the program name). `env` looks up environment
/// variables; tests pass a map instead of the real environment.
///
/// # Errors
/// Unknown flags, missing or malformed values and invalid combinations, each
/// as one [`ConfigError`] naming the flag or variable.
pub fn parse<F>(args: &[String], env: F) -> Result<Command, ConfigError>
where
    F: Fn(&str) -> Option<String>,
{
    let Some((command, rest)) = args.split_first() else {
        return Err(ConfigError::new("", "missing command; usage: goclaw serve [FLAGS] (see goclaw --help)"));
    };
    match command.as_str() {
        "-h" | "--help" | "help" => Ok(Command::Help(top_help())),
        "-V" | "--version" | "version" => Ok(Command::Version),
        "serve" => parse_serve(rest, &env),
        "healthcheck" => parse_healthcheck(rest, &env),
        "node" => parse_node(rest, &env),
        "nodes" | "invoke" | "watch" => parse_operator(command, rest, &env),
        other => Err(ConfigError::new("", format!("unknown command {other:?} (see goclaw --help)"))),
    }
}

fn parse_serve<F>(args: &[String], env: &F) -> Result<Command, ConfigError>
where
    F: Fn(&str) -> Option<String>,
{
    let flags: Vec<FlagSpec> = FLAGS.iter().map(|flag| (flag.name, true)).collect();
    let Some(parsed) = split_args("serve", args, &flags, Some(REPEATABLE))? else {
        return Ok(Command::Help(serve_help()));
    };
    parsed.no_positional("serve")?;
    let lookup = Lookup { given: &parsed.given, env };
    build_config(&lookup).map(|config| Command::Serve(Box::new(config)))
}

/// `goclaw healthcheck [--url URL]`. The default URL follows
/// `GOCLAW_METRICS_LISTEN` (an unspecified address probes loopback), so in
/// the container image the bare command checks the running gateway.
fn parse_healthcheck<F>(args: &[String], env: &F) -> Result<Command, ConfigError>
where
    F: Fn(&str) -> Option<String>,
{
    let Some(parsed) = split_args("healthcheck", args, &[("--url", true)], None)? else {
        return Ok(Command::Help(healthcheck_help()));
    };
    parsed.no_positional("healthcheck")?;
    let url = parsed.given.get("--url").and_then(|values| values.last()).cloned();
    let url = match url {
        Some(url) => url,
        None => {
            let listen = match env("GOCLAW_METRICS_LISTEN").filter(|v| !v.is_empty()) {
                Some(value) => config::parse_addr("GOCLAW_METRICS_LISTEN", &value)?,
                None => Config::default().metrics_listen,
            };
            format!("http://{}/healthz", crate::net::loopback(listen))
        }
    };
    if !url.starts_with("http://") {
        return Err(ConfigError::new("--url", format!("{url:?}: expected http://HOST:PORT/PATH")));
    }
    Ok(Command::Healthcheck { url })
}

fn healthcheck_help() -> String {
    "usage: goclaw healthcheck [--url http://HOST:PORT/PATH]\n\n\
     Probes the gateway's /healthz (default: http://127.0.0.1:18790/healthz, or the port of\n\
     GOCLAW_METRICS_LISTEN) and exits 0 if it answers 200, 1 otherwise. For Docker's\n\
     HEALTHCHECK and for scripts; needs no shell and no curl.\n"
        .to_string()
}

/// Default gateway for the client commands (the gateway's default listener).
const DEFAULT_URL: &str = "ws://127.0.0.1:18789/ws";
/// Default `--timeout` of `goclaw invoke` and `--exec-timeout` of `goclaw node`.
const DEFAULT_CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// A flag of any command: its name, and whether it takes a value.
type FlagSpec = (&'static str, bool);

/// The flags every client command takes.
const CONNECTION_FLAGS: &[FlagSpec] = &[("--url", true), ("--token", true), ("--token-file", true)];

/// The flags given (all their values) and the positional arguments.
struct Args {
    given: HashMap<&'static str, Vec<String>>,
    positional: Vec<String>,
}

impl Args {
    /// Refuses positional arguments, for commands that take none.
    fn no_positional(&self, command: &str) -> Result<(), ConfigError> {
        match self.positional.first() {
            Some(extra) => {
                Err(ConfigError::new("", format!("unexpected argument {extra:?} (see goclaw {command} --help)")))
            }
            None => Ok(()),
        }
    }
}

/// Splits `args` into `flags` (as `--flag value` or `--flag=value`) and
/// positional arguments; only `repeatable` may be given more than once.
/// `Ok(None)`: `--help` was asked for.
fn split_args(
    command: &str,
    args: &[String],
    flags: &[FlagSpec],
    repeatable: Option<&str>,
) -> Result<Option<Args>, ConfigError> {
    let mut parsed = Args { given: HashMap::new(), positional: Vec::new() };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(None);
        }
        if !arg.starts_with("--") || arg == "--" {
            parsed.positional.push(arg.clone());
            continue;
        }
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) => (name, Some(value.to_string())),
            None => (arg.as_str(), None),
        };
        let Some(&(flag, takes_value)) = flags.iter().find(|(f, _)| *f == name) else {
            return Err(ConfigError::new("", format!("unknown flag {arg:?} (see goclaw {command} --help)")));
        };
        let value = match (takes_value, inline) {
            (true, Some(value)) => value,
            (true, None) => args.next().cloned().ok_or_else(|| ConfigError::new(flag, "missing value"))?,
            (false, None) => String::new(),
            (false, Some(_)) => return Err(ConfigError::new(flag, "takes no value")),
        };
        let values = parsed.given.entry(flag).or_default();
        if !values.is_empty() && repeatable != Some(flag) {
            return Err(ConfigError::new(flag, "given more than once"));
        }
        values.push(value);
    }
    Ok(Some(parsed))
}

/// `--url` (or `GOCLAW_URL`) and the token, as every client command takes them.
fn client_target<F: Fn(&str) -> Option<String>>(lookup: &Lookup<'_, F>) -> Result<Target, ConfigError> {
    let endpoint = match lookup.get("--url") {
        Some((source, url)) => Endpoint::parse(&url).map_err(|why| ConfigError::new(&source, why))?,
        None => Endpoint::parse(DEFAULT_URL).map_err(|why| ConfigError::new("--url", why))?,
    };
    Ok(Target { endpoint, token: resolve_token(lookup)? })
}

/// `goclaw node [FLAGS]`.
fn parse_node<F>(args: &[String], env: &F) -> Result<Command, ConfigError>
where
    F: Fn(&str) -> Option<String>,
{
    let flags =
        [("--id", true), ("--display-name", true), ("--exec", true), ("--exec-timeout", true), ("--log-level", true)];
    let flags = [CONNECTION_FLAGS, &flags].concat();
    let Some(parsed) = split_args("node", args, &flags, Some("--exec"))? else {
        return Ok(Command::Help(node_help()));
    };
    parsed.no_positional("node")?;
    let lookup = Lookup { given: &parsed.given, env };
    let target = client_target(&lookup)?;
    let id = match lookup.get("--id") {
        Some((source, id)) => id_value(&source, id, MAX_ID_BYTES)?,
        None => sysinfo::hostname()
            .ok_or_else(|| ConfigError::new("--id", "cannot read this machine's host name; give --id"))?,
    };
    let display_name = match lookup.get("--display-name") {
        Some((source, name)) => id_value(&source, name, MAX_LABEL_BYTES)?,
        None => id.clone(),
    };
    let mut execs: Vec<Exec> = Vec::new();
    for (source, value) in lookup.list("--exec") {
        let exec = parse_exec(&source, &value, env)?;
        if execs.iter().any(|e| e.name == exec.name) {
            return Err(ConfigError::new(&source, format!("command {:?} given twice", exec.name)));
        }
        execs.push(exec);
    }
    let exec_timeout = lookup.parsed("--exec-timeout", DEFAULT_CLIENT_TIMEOUT, parse_client_timeout)?;
    let log_level = lookup.parsed("--log-level", LevelFilter::Info, parse_level)?;
    Ok(Command::Node(Box::new(NodeConfig {
        endpoint: target.endpoint,
        id,
        display_name,
        token: target.token,
        execs,
        exec_timeout,
        log_level,
    })))
}

/// A node id or display name: not empty, printable, bounded.
fn id_value(source: &str, value: String, max: usize) -> Result<String, ConfigError> {
    if value.is_empty() || value.len() > max || value.chars().any(char::is_control) {
        return Err(ConfigError::new(source, format!("must be 1 to {max} bytes of printable text")));
    }
    Ok(value)
}

/// `NAME=PROGRAM`: the program must exist now; a bare name is looked up in
/// `PATH` once, here, so what runs later is exactly what was found.
fn parse_exec<F: Fn(&str) -> Option<String>>(source: &str, value: &str, env: &F) -> Result<Exec, ConfigError> {
    let Some((name, program)) = value.split_once('=') else {
        return Err(ConfigError::new(source, format!("{value:?}: expected NAME=PROGRAM")));
    };
    if name.is_empty() || name.len() > MAX_COMMAND_BYTES || !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ConfigError::new(
            source,
            format!("{name:?}: a command name is 1 to {MAX_COMMAND_BYTES} printable ASCII bytes"),
        ));
    }
    if BUILT_IN.contains(&name) {
        return Err(ConfigError::new(source, format!("{name:?} is a built-in command")));
    }
    let found = if program.contains('/') {
        Some(PathBuf::from(program)).filter(|p| p.is_file())
    } else {
        env("PATH").and_then(|path| {
            path.split(':').filter(|dir| !dir.is_empty()).map(|dir| Path::new(dir).join(program)).find(|p| p.is_file())
        })
    };
    let program = found
        .and_then(|p| std::fs::canonicalize(p).ok())
        .ok_or_else(|| ConfigError::new(source, format!("{name}: program {program:?} not found")))?;
    Ok(Exec { name: name.to_string(), program })
}

fn parse_client_timeout(source: &str, text: &str) -> Result<Duration, ConfigError> {
    let timeout = config::parse_duration(source, text)?;
    if timeout.is_zero() || timeout > Duration::from_millis(MAX_INVOKE_TIMEOUT_MS) {
        return Err(ConfigError::new(source, format!("must be between 1ms and {}s", MAX_INVOKE_TIMEOUT_MS / 1000)));
    }
    Ok(timeout)
}

/// `goclaw nodes`, `goclaw invoke NODE COMMAND [PARAMS_JSON]`, `goclaw watch`.
fn parse_operator<F>(command: &str, args: &[String], env: &F) -> Result<Command, ConfigError>
where
    F: Fn(&str) -> Option<String>,
{
    let own: &[FlagSpec] =
        if command == "invoke" { &[("--json", false), ("--timeout", true)] } else { &[("--json", false)] };
    let Some(parsed) = split_args(command, args, &[CONNECTION_FLAGS, own].concat(), None)? else {
        return Ok(Command::Help(operator_help(command)));
    };
    let lookup = Lookup { given: &parsed.given, env };
    let target = client_target(&lookup)?;
    let json = parsed.given.contains_key("--json");
    let positional = &parsed.positional;
    match command {
        "invoke" => {
            let (node, command, params) = match positional.as_slice() {
                [node, command] => (node, command, serde_json::Value::Null),
                [node, command, params] => {
                    let params = serde_json::from_str(params)
                        .map_err(|e| ConfigError::new("PARAMS_JSON", format!("not valid JSON: {e}")))?;
                    (node, command, params)
                }
                _ => {
                    return Err(ConfigError::new(
                        "",
                        "usage: goclaw invoke NODE COMMAND [PARAMS_JSON] (see goclaw invoke --help)",
                    ));
                }
            };
            let timeout = lookup.parsed("--timeout", DEFAULT_CLIENT_TIMEOUT, parse_client_timeout)?;
            Ok(Command::Invoke { target, node: node.clone(), command: command.clone(), params, timeout, json })
        }
        _ if !positional.is_empty() => {
            Err(ConfigError::new("", format!("unexpected argument {:?} (see goclaw {command} --help)", positional[0])))
        }
        "nodes" => Ok(Command::Nodes { target, json }),
        _ => Ok(Command::Watch { target, json }),
    }
}

const CONNECTION_HELP: &str = "  --url URL            the gateway (variable GOCLAW_URL; default: ws://127.0.0.1:18789/ws)\n  \
     --token TOKEN        its token (variable GOCLAW_TOKEN)\n  \
     --token-file PATH    read the token from a file (variable GOCLAW_TOKEN_FILE; $CREDENTIALS_DIRECTORY/token\n                       is used when present)\n";

fn node_help() -> String {
    format!(
        "usage: goclaw node [FLAGS]\n\n\
         Connects this machine to a gateway as a node and answers device.status, system.info and\n\
         echo, plus the programs listed with --exec. Reconnects when the gateway goes away\n\
         (exponential backoff with jitter, at most 30 s; after a graceful gateway shutdown, when\n\
         the gateway said it would be back). SIGINT or SIGTERM: closes and exits 0.\n\n{CONNECTION_HELP}  \
         --id ID              the node id (default: the host name)\n  \
         --display-name NAME  the name operators see (default: the id)\n  \
         --exec NAME=PROGRAM  expose PROGRAM as command NAME; repeatable (variable GOCLAW_EXEC: comma-separated).\n                       \
         It gets the params as JSON on stdin; its stdout, JSON, is the result\n                       \
         (at most 256 KiB); a non-zero exit is an error. No shell, no arguments.\n  \
         --exec-timeout DUR   longest a program may run (default: 30s; the invoke's timeout may be shorter)\n  \
         --log-level LEVEL    error, warn, info, debug or trace (default: info)\n"
    )
}

fn operator_help(command: &str) -> String {
    let (usage, what, extra) = match command {
        "invoke" => (
            "goclaw invoke NODE COMMAND [PARAMS_JSON] [FLAGS]",
            "Runs COMMAND on NODE and prints the result payload: pretty JSON on a terminal, compact\n\
             otherwise. A gateway or node error prints CODE: message on stderr and exits 1; bad usage\n\
             exits 2; no gateway to talk to exits 3.",
            "  --timeout DUR        how long the node may take (default: 30s, at most 600s)\n  \
             --json               print {\"ok\":true,\"payload\":...} or {\"ok\":false,\"error\":...} on stdout\n",
        ),
        "nodes" => (
            "goclaw nodes [FLAGS]",
            "Lists the connected nodes: id, name, platform, version, commands and how long ago each\n\
             connected. Exits 1 on a gateway error, 2 on bad usage, 3 if the gateway cannot be reached.",
            "  --json               print the list as JSON\n",
        ),
        _ => (
            "goclaw watch [FLAGS]",
            "Prints a line each time a node connects or leaves, until interrupted (exit 0) or the\n\
             gateway goes away (exit 3).",
            "  --json               print each presence event as a JSON line\n",
        ),
    };
    format!("usage: {usage}\n\n{what}\n\n{CONNECTION_HELP}{extra}")
}

/// Where a value came from, for error messages: the flag or the variable.
struct Lookup<'a, F> {
    given: &'a HashMap<&'static str, Vec<String>>,
    env: &'a F,
}

impl<F: Fn(&str) -> Option<String>> Lookup<'_, F> {
    /// The value of `flag` and the name to blame for it: the flag itself if
    /// given, else its `GOCLAW_*` variable if set and non-empty.
    fn get(&self, flag: &'static str) -> Option<(String, String)> {
        if let Some(value) = self.given.get(flag).and_then(|v| v.last()) {
            return Some((flag.to_string(), value.clone()));
        }
        let var = env_name(flag);
        (self.env)(&var).filter(|v| !v.is_empty()).map(|value| (var, value))
    }

    /// Every value of a repeatable flag, or the comma-separated list in its
    /// variable; each with the name to blame for it.
    fn list(&self, flag: &'static str) -> Vec<(String, String)> {
        if let Some(values) = self.given.get(flag) {
            return values.iter().map(|value| (flag.to_string(), value.clone())).collect();
        }
        let Some((source, value)) = self.get(flag) else { return Vec::new() };
        value.split(',').map(str::trim).filter(|v| !v.is_empty()).map(|v| (source.clone(), v.to_string())).collect()
    }

    fn parsed<T>(
        &self,
        flag: &'static str,
        default: T,
        parse: impl Fn(&str, &str) -> Result<T, ConfigError>,
    ) -> Result<T, ConfigError> {
        match self.get(flag) {
            Some((source, value)) => parse(&source, &value),
            None => Ok(default),
        }
    }
}

/// `--rate-burst` → `GOCLAW_RATE_BURST`.
fn env_name(flag: &str) -> String {
    format!("GOCLAW_{}", flag.trim_start_matches('-').replace('-', "_").to_ascii_uppercase())
}

fn build_config<F: Fn(&str) -> Option<String>>(lookup: &Lookup<'_, F>) -> Result<Config, ConfigError> {
    let d = Config::default();
    let pong_wait = lookup.parsed("--pong-wait", d.pong_wait, config::parse_duration)?;
    let allowed_origins = lookup
        .list(REPEATABLE)
        .iter()
        .map(|(source, origin)| config::parse_origin(source, origin))
        .collect::<Result<Vec<_>, _>>()?;
    let config = Config {
        listen: lookup.parsed("--listen", d.listen, config::parse_addr)?,
        metrics_listen: lookup.parsed("--metrics-listen", d.metrics_listen, config::parse_addr)?,
        token: resolve_token(lookup)?,
        state_dir: match lookup.get("--state-dir") {
            Some((_, dir)) => Some(PathBuf::from(dir)),
            None => default_state_dir(lookup.env),
        },
        log_level: lookup.parsed("--log-level", d.log_level, parse_level)?,
        max_message_bytes: lookup.parsed("--max-message-size", d.max_message_bytes, parse_number)?,
        pong_wait,
        ping_period: lookup.parsed("--ping-period", pong_wait * 9 / 10, config::parse_duration)?,
        write_wait: lookup.parsed("--write-wait", d.write_wait, config::parse_duration)?,
        handshake_timeout: lookup.parsed("--handshake-timeout", d.handshake_timeout, config::parse_duration)?,
        rate_limit_per_sec: lookup.parsed("--rate-limit", d.rate_limit_per_sec, parse_rate)?,
        rate_burst: lookup.parsed("--rate-burst", d.rate_burst, parse_number)?,
        max_connections: lookup.parsed("--max-connections", d.max_connections, parse_number)?,
        message_rate_per_sec: lookup.parsed("--message-rate", d.message_rate_per_sec, parse_rate)?,
        message_burst: lookup.parsed("--message-burst", d.message_burst, parse_number)?,
        flood_close_after: d.flood_close_after,
        tick_interval: lookup.parsed("--tick-interval", d.tick_interval, config::parse_duration)?,
        shutdown_timeout: lookup.parsed("--shutdown-timeout", d.shutdown_timeout, config::parse_duration)?,
        allowed_origins,
        echo: false,
    };
    config.validate()?;
    Ok(config)
}

/// Token sources, first match wins: `--token`, `--token-file`,
/// `GOCLAW_TOKEN`, `GOCLAW_TOKEN_FILE`, `$CREDENTIALS_DIRECTORY/token`.
/// Two sources at the same level are ambiguous and refused.
fn resolve_token<F: Fn(&str) -> Option<String>>(lookup: &Lookup<'_, F>) -> Result<Option<Token>, ConfigError> {
    let flag = |name| lookup.given.get(name).and_then(|v| v.last()).cloned();
    let var = |name| (lookup.env)(name).filter(|v: &String| !v.is_empty());
    let levels = [
        (flag("--token"), flag("--token-file"), "--token", "--token-file"),
        (var("GOCLAW_TOKEN"), var("GOCLAW_TOKEN_FILE"), "GOCLAW_TOKEN", "GOCLAW_TOKEN_FILE"),
    ];
    for (token, file, token_name, file_name) in levels {
        match (token, file) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(token_name, format!("use either {token_name} or {file_name}, not both")));
            }
            (Some(token), None) => return Token::new(token_name, token).map(Some),
            (None, Some(path)) => return read_token_file(file_name, Path::new(&path)).map(Some),
            (None, None) => {}
        }
    }
    if let Some(dir) = var("CREDENTIALS_DIRECTORY") {
        let path = Path::new(&dir).join("token");
        if path.exists() {
            return read_token_file("$CREDENTIALS_DIRECTORY/token", &path).map(Some);
        }
    }
    Ok(None)
}

/// Reads a token file, bounded in size, trailing newline trimmed.
fn read_token_file(source: &'static str, path: &Path) -> Result<Token, ConfigError> {
    let cannot = |why: String| ConfigError::new(source, format!("cannot read {}: {why}", path.display()));
    let file = File::open(path).map_err(|e| cannot(e.to_string()))?;
    let mut text = String::new();
    // Read one byte past the bound (plus a CRLF) so an oversized file is noticed.
    file.take(MAX_TOKEN_BYTES as u64 + 3).read_to_string(&mut text).map_err(|e| cannot(e.to_string()))?;
    let token = text.trim_end_matches(['\r', '\n']).to_string();
    Token::new(source, token)
}

fn default_state_dir<F: Fn(&str) -> Option<String>>(env: &F) -> Option<PathBuf> {
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

fn parse_level(source: &str, text: &str) -> Result<LevelFilter, ConfigError> {
    match text.to_ascii_lowercase().as_str() {
        "error" => Ok(LevelFilter::Error),
        "warn" => Ok(LevelFilter::Warn),
        "info" => Ok(LevelFilter::Info),
        "debug" => Ok(LevelFilter::Debug),
        "trace" => Ok(LevelFilter::Trace),
        _ => Err(ConfigError::new(source, format!("invalid level {text:?}: use error, warn, info, debug or trace"))),
    }
}

fn parse_number<T: std::str::FromStr>(source: &str, text: &str) -> Result<T, ConfigError> {
    text.parse().map_err(|_| ConfigError::new(source, format!("invalid number {text:?}: expected a whole number")))
}

fn parse_rate(source: &str, text: &str) -> Result<f64, ConfigError> {
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(ConfigError::new(source, format!("invalid rate {text:?}: expected a number greater than zero"))),
    }
}

fn top_help() -> String {
    format!(
        "goclaw {} — a small WebSocket gateway between nodes and operators\n\n\
         usage:\n  goclaw serve [FLAGS]   run the gateway (goclaw serve --help lists the flags)\n  \
         goclaw node [FLAGS]    connect this machine to a gateway as a node\n  \
         goclaw nodes           list the connected nodes\n  \
         goclaw invoke NODE COMMAND [PARAMS_JSON]\n                         run a command on a node and print its result\n  \
         goclaw watch           print nodes connecting and leaving until interrupted\n  \
         goclaw healthcheck     probe a running gateway's /healthz (exit 0 or 1)\n  \
         goclaw --version       print the version\n  goclaw --help          print this text\n\n\
         Each command takes --help.\n",
        env!("CARGO_PKG_VERSION")
    )
}

fn serve_help() -> String {
    let mut text = String::from(
        "usage: goclaw serve [FLAGS]\n\n\
         Every flag also reads the variable GOCLAW_<FLAG> (e.g. --pong-wait: GOCLAW_PONG_WAIT);\n\
         a flag beats its variable, the variable beats the default. Durations take ms, s or m.\n\n",
    );
    let width = FLAGS.iter().map(|f| f.name.len() + f.value.len() + 1).max().unwrap_or(0);
    for flag in FLAGS {
        let left = format!("{} {}", flag.name, flag.value);
        text.push_str(&format!("  {left:<width$}  {} (default: {})\n", flag.help, flag.default));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
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
