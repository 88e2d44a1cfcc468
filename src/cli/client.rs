//! The client commands' flags: `goclaw node`, `nodes` (and its pairing
//! subcommands), `invoke`, `watch` and `healthcheck`. Checks what can be
//! checked before connecting (URLs, TLS files and pins, ids, `--exec`
//! programs that must exist now, a state directory for the node's key).

use std::path::{Path, PathBuf};
use std::time::Duration;

use log::LevelFilter;

use crate::cli::args::{CONNECTION_FLAGS, FlagSpec, Lookup, resolve_token, split_args};
use crate::cli::command::Command;
use crate::cli::help;
use crate::cli::serve::default_state_dir;
use crate::cli::values::{parse_addr, parse_duration, parse_level};
use crate::client::agent::NodeConfig;
use crate::client::commands::{BUILT_IN, Runner};
use crate::client::conn::Target;
use crate::client::endpoint::Endpoint;
use crate::client::exec::Exec;
use crate::client::operator::Operator;
use crate::client::pairing::PairingAction;
use crate::client::sysinfo;
use crate::client::trust::{TlsSettings, parse_pin};
use crate::gateway::config::Config;
use crate::util::ConfigError;
use crate::wire::connect::{MAX_COMMAND_BYTES, MAX_LABEL_BYTES};
use crate::wire::frame::MAX_ID_BYTES;
use crate::wire::net;
use crate::wire::params::MAX_INVOKE_TIMEOUT_MS;

/// Default gateway for the client commands (the gateway's default listener).
const DEFAULT_URL: &str = "ws://127.0.0.1:18789/ws";
/// Default `--timeout` of `goclaw invoke` and `--exec-timeout` of `goclaw node`.
const DEFAULT_CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// `goclaw healthcheck [--url URL]`. The default URL follows
/// `GOCLAW_METRICS_LISTEN` (an unspecified address probes loopback), so in
/// the container image the bare command checks the running gateway.
pub fn parse_healthcheck<F>(args: &[String], env: &F) -> Result<Command, ConfigError>
where
    F: Fn(&str) -> Option<String>,
{
    let Some(parsed) = split_args("healthcheck", args, &[("--url", true)], &[])? else {
        return Ok(Command::Help(help::healthcheck()));
    };
    parsed.no_positional("healthcheck")?;
    let url = parsed.given.get("--url").and_then(|values| values.last()).cloned();
    let url = match url {
        Some(url) => url,
        None => {
            let listen = match env("GOCLAW_METRICS_LISTEN").filter(|v| !v.is_empty()) {
                Some(value) => parse_addr("GOCLAW_METRICS_LISTEN", &value)?,
                None => Config::default().metrics_listen,
            };
            format!("http://{}/healthz", net::loopback(listen))
        }
    };
    if !url.starts_with("http://") {
        return Err(ConfigError::new("--url", format!("{url:?}: expected http://HOST:PORT/PATH")));
    }
    Ok(Command::Healthcheck { url })
}

/// `--url` (or `GOCLAW_URL`), the token and the TLS trust, as every client
/// command takes them.
fn client_target<F: Fn(&str) -> Option<String>>(lookup: &Lookup<'_, F>) -> Result<Target, ConfigError> {
    let (source, endpoint) = match lookup.get("--url") {
        Some((source, url)) => (source.clone(), Endpoint::parse(&url).map_err(|why| ConfigError::new(&source, why))?),
        None => ("--url".to_string(), Endpoint::parse(DEFAULT_URL).map_err(|why| ConfigError::new("--url", why))?),
    };
    let mut tls = TlsSettings::default();
    if let Some((flag, path)) = lookup.get("--ca-file") {
        if !Path::new(&path).is_file() {
            return Err(ConfigError::new(&flag, format!("{path:?} is not a readable file")));
        }
        tls.ca_file = Some(PathBuf::from(path));
    }
    if let Some((flag, pin)) = lookup.get("--pin-sha256") {
        tls.pin_sha256 = Some(parse_pin(&pin).map_err(|why| ConfigError::new(&flag, why))?);
    }
    if !endpoint.tls && tls != TlsSettings::default() {
        return Err(ConfigError::new(&source, "--ca-file and --pin-sha256 need a wss:// URL"));
    }
    Ok(Target { endpoint, token: resolve_token(lookup)?, tls })
}

/// `--state-dir`, else the default a gateway on the same account uses.
fn state_dir<F: Fn(&str) -> Option<String>>(lookup: &Lookup<'_, F>) -> Option<PathBuf> {
    match lookup.get("--state-dir") {
        Some((_, dir)) => Some(PathBuf::from(dir)),
        None => default_state_dir(lookup.env),
    }
}

/// `goclaw node [FLAGS]`.
pub fn parse_node<F>(args: &[String], env: &F) -> Result<Command, ConfigError>
where
    F: Fn(&str) -> Option<String>,
{
    let flags =
        [("--id", true), ("--display-name", true), ("--exec", true), ("--exec-timeout", true), ("--log-level", true)];
    let flags = [CONNECTION_FLAGS, &flags].concat();
    let Some(parsed) = split_args("node", args, &flags, &["--exec"])? else {
        return Ok(Command::Help(help::node()));
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
    let state_dir = state_dir(&lookup).ok_or_else(|| {
        ConfigError::new("--state-dir", "no state directory for the node's device key: give --state-dir (or set HOME)")
    })?;
    Ok(Command::Node(Box::new(NodeConfig {
        target,
        id,
        display_name,
        state_dir,
        runner: Runner { execs, exec_timeout, path: env("PATH") },
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
    let not_found = || ConfigError::new(source, format!("{name}: program {program:?} not found"));
    let found = found.ok_or_else(not_found)?;
    // Its argv[0], and what `system.run` must name it as: the name it was
    // found under, which a multi-call binary (busybox) acts on.
    let invoked_as = found.file_name().and_then(|n| n.to_str()).ok_or_else(not_found)?.to_string();
    let program = std::fs::canonicalize(&found).map_err(|_| not_found())?;
    Ok(Exec { name: name.to_string(), program, invoked_as })
}

fn parse_client_timeout(source: &str, text: &str) -> Result<Duration, ConfigError> {
    let timeout = parse_duration(source, text)?;
    if timeout.is_zero() || timeout > Duration::from_millis(MAX_INVOKE_TIMEOUT_MS) {
        return Err(ConfigError::new(source, format!("must be between 1ms and {}s", MAX_INVOKE_TIMEOUT_MS / 1000)));
    }
    Ok(timeout)
}

/// `goclaw nodes [pending|approve REQUEST|reject REQUEST|remove NODE]`,
/// `goclaw invoke NODE COMMAND [PARAMS_JSON]`, `goclaw watch`.
pub fn parse_operator<F>(command: &str, args: &[String], env: &F) -> Result<Command, ConfigError>
where
    F: Fn(&str) -> Option<String>,
{
    let own: &[FlagSpec] =
        if command == "invoke" { &[("--json", false), ("--timeout", true)] } else { &[("--json", false)] };
    let Some(parsed) = split_args(command, args, &[CONNECTION_FLAGS, own].concat(), &[])? else {
        let sub = if command == "nodes" { args.iter().find(|a| !a.starts_with('-')) } else { None };
        return Ok(Command::Help(help::operator(command, sub.map(String::as_str))));
    };
    let lookup = Lookup { given: &parsed.given, env };
    let operator = Operator { target: client_target(&lookup)?, state_dir: state_dir(&lookup) };
    let json = parsed.given.contains_key("--json");
    let positional: Vec<&str> = parsed.positional.iter().map(String::as_str).collect();
    let unexpected =
        |extra: &str| ConfigError::new("", format!("unexpected argument {extra:?} (see goclaw {command} --help)"));
    match (command, positional.as_slice()) {
        ("invoke", args) => {
            let (node, command, params) = match args {
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
            let (node, command) = (node.to_string(), command.to_string());
            Ok(Command::Invoke { operator, node, command, params, timeout, json })
        }
        ("nodes", []) => Ok(Command::Nodes { operator, json }),
        ("nodes", ["pending", rest @ ..]) => match rest {
            [] => Ok(Command::Pairing { operator, action: PairingAction::Pending, json }),
            [extra, ..] => Err(unexpected(extra)),
        },
        ("nodes", [verb @ ("approve" | "reject" | "remove"), rest @ ..]) => {
            let [what] = rest else {
                let name = if *verb == "remove" { "NODE" } else { "REQUEST" };
                return Err(ConfigError::new(
                    "",
                    format!("usage: goclaw nodes {verb} {name} (see goclaw nodes --help)"),
                ));
            };
            if json {
                return Err(ConfigError::new("--json", format!("goclaw nodes {verb} prints one line; no --json")));
            }
            let what = what.to_string();
            let action = match *verb {
                "approve" => PairingAction::Approve(what),
                "reject" => PairingAction::Reject(what),
                _ => PairingAction::Remove(what),
            };
            Ok(Command::Pairing { operator, action, json })
        }
        (_, [extra, ..]) => Err(unexpected(extra)),
        _ => Ok(Command::Watch { operator, json }),
    }
}
