//! `system.which` and `system.run`, shaped as the real OpenClaw node host
//! shapes them (OPENCLAW.md §7.2), so an OpenClaw operator or agent can use
//! a goclaw node without special gateway configuration. `system.run` is
//! confined to the programs the node's owner listed with `--exec`: `argv[0]`
//! is resolved (a bare name through `PATH`) and canonicalized, and must be
//! a listed program found under the same name; no shell; the limits of
//! `--exec` (time, output, the process group killed at the deadline).
//! Anything else is refused as the real node host refuses it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::client::exec::{Answer, Exec, run_bounded};

/// Most names one `system.which` looks up.
pub const MAX_WHICH_BINS: usize = 256;
/// Most arguments one `system.run` passes.
pub const MAX_RUN_ARGS: usize = 1024;
/// Most bytes of a `system.run` command line, all arguments together.
pub const MAX_RUN_ARG_BYTES: usize = 128 * 1024;
/// Output a `system.run` keeps, stdout and stderr together (the real node
/// host's `OUTPUT_CAP`).
pub const RUN_OUTPUT_CAP: usize = 200_000;
/// Largest `system.run` answer, as JSON: escaping can make output longer
/// than it was, and the answer must fit in the gateway's 512 KiB message.
const MAX_RUN_ANSWER_BYTES: usize = 384 * 1024;
/// The `PATH` used when the agent has none (the real node host's default).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The real node host's refusal of a command its exec policy does not
/// allow; operators and agents key on `SYSTEM_RUN_DENIED`.
const DENIED: &str = "SYSTEM_RUN_DENIED: approval required";

fn invalid(message: impl Into<String>) -> Answer {
    Err(("INVALID_REQUEST", message.into()))
}

/// `system.which {bins:[...]}` → `{bins:{name:path}}`: each bare name found
/// in `path` (names with a slash, and names not found, are left out).
pub fn which(params: &Value, path: Option<&str>) -> Answer {
    let Some(bins) = params.get("bins").and_then(Value::as_array) else {
        return invalid("INVALID_REQUEST: bins required");
    };
    if bins.len() > MAX_WHICH_BINS {
        return invalid(format!("INVALID_REQUEST: at most {MAX_WHICH_BINS} bins"));
    }
    let mut found = Map::new();
    for bin in bins.iter().filter_map(Value::as_str).map(str::trim) {
        if let Some(hit) = lookup(bin, path) {
            found.insert(bin.to_string(), json!(hit.to_string_lossy()));
        }
    }
    Ok(json!({"bins": found}).to_string())
}

/// A bare name's first match in `path` that is an executable file.
fn lookup(bin: &str, path: Option<&str>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if bin.is_empty() || bin.contains('/') || bin == "." || bin == ".." {
        return None;
    }
    let path = path.filter(|p| !p.is_empty()).unwrap_or(DEFAULT_PATH);
    path.split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(bin))
        .find(|candidate| candidate.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// What `system.run` reads (the real node host sends more: `rawCommand`,
/// `sessionKey`, `runId`, approval fields; they do not widen what runs).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RunParams {
    #[serde(default)]
    command: Vec<String>,
    cwd: Option<String>,
    env: Option<Map<String, Value>>,
    timeout_ms: Option<u64>,
}

/// `system.run {command:[argv...], cwd?, timeoutMs?}` → `{exitCode,
/// timedOut, success, stdout, stderr, error}`, for a listed program only.
/// `timeout` is the most it may run (the agent's `--exec-timeout` and the
/// invoke's own timeout).
pub fn run(params: &Value, execs: &[Exec], path: Option<&str>, timeout: Duration) -> Answer {
    let params: RunParams = match serde_json::from_value(params.clone()) {
        Ok(params) => params,
        Err(e) => return invalid(format!("INVALID_REQUEST: {e}")),
    };
    let Some(program) = params.command.first() else { return invalid("command required") };
    if params.command.len() > MAX_RUN_ARGS || params.command.iter().map(String::len).sum::<usize>() > MAX_RUN_ARG_BYTES
    {
        return invalid(format!("INVALID_REQUEST: at most {MAX_RUN_ARGS} arguments, {MAX_RUN_ARG_BYTES} bytes"));
    }
    if params.env.as_ref().is_some_and(|env| !env.is_empty()) {
        // An environment can change what a listed program runs (LD_PRELOAD,
        // PATH, interpreters' own variables): refused, never filtered.
        return Err(("UNAVAILABLE", format!("{DENIED} (goclaw node does not take env overrides)")));
    }
    let cwd = params.cwd.as_deref().filter(|c| !c.is_empty()).map(PathBuf::from);
    if cwd.as_ref().is_some_and(|c| !c.is_dir()) {
        return invalid("INVALID_REQUEST: cwd is not a directory");
    }
    let Some(exec) = allowed(program, cwd.as_deref(), execs, path) else {
        return Err(("UNAVAILABLE", format!("{DENIED} (goclaw node runs only the programs listed with --exec)")));
    };
    let timeout = params.timeout_ms.filter(|&ms| ms > 0).map_or(timeout, |ms| Duration::from_millis(ms).min(timeout));
    let mut command = Command::new(&exec.program);
    std::os::unix::process::CommandExt::arg0(&mut command, &exec.invoked_as);
    command.args(&params.command[1..]);
    if let Some(cwd) = &cwd {
        command.current_dir(cwd);
    }
    let outcome = run_bounded(command, None, timeout, RUN_OUTPUT_CAP, RUN_OUTPUT_CAP);
    let result = match outcome {
        Ok(ran) => {
            let exit_code = ran.status.and_then(|s| s.code());
            let timed_out = ran.status.is_none();
            let mut stdout = ran.stdout.unwrap_or_default();
            let mut stderr = ran.stderr;
            let truncated = stdout.len() + stderr.len() > RUN_OUTPUT_CAP;
            stdout.truncate(RUN_OUTPUT_CAP);
            stderr.truncate(RUN_OUTPUT_CAP - stdout.len());
            RunResult { exit_code, timed_out, stdout, stderr, error: None, truncated }
        }
        Err(e) => RunResult {
            exit_code: None,
            timed_out: false,
            stdout: Vec::new(),
            stderr: Vec::new(),
            error: Some(format!("cannot start {}: {e}", exec.program.display())),
            truncated: false,
        },
    };
    Ok(result.into_json())
}

/// The listed program `argv0` names, if any: resolved as `execve` would
/// find it (a bare name through `PATH`, a relative path from `cwd`),
/// canonical, and found under the name it was listed as (so a link to a
/// multi-call binary does not open every other applet of it).
fn allowed<'a>(argv0: &str, cwd: Option<&Path>, execs: &'a [Exec], path: Option<&str>) -> Option<&'a Exec> {
    let resolved = if argv0.contains('/') {
        let p = Path::new(argv0);
        match cwd {
            Some(cwd) if p.is_relative() => cwd.join(p),
            _ => p.to_path_buf(),
        }
    } else {
        lookup(argv0, path)?
    };
    let name = resolved.file_name()?.to_str()?;
    let canonical = std::fs::canonicalize(&resolved).ok()?;
    execs.iter().find(|e| e.program == canonical && e.invoked_as == name)
}

/// The real node host's `system.run` answer.
struct RunResult {
    exit_code: Option<i32>,
    timed_out: bool,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    error: Option<String>,
    truncated: bool,
}

impl RunResult {
    /// As JSON, at most [`MAX_RUN_ANSWER_BYTES`]: output that escapes to
    /// more is cut further (longest first), never the fields around it.
    fn into_json(mut self) -> String {
        loop {
            let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
            let mut answer = json!({
                "timedOut": self.timed_out,
                "success": self.exit_code == Some(0) && !self.timed_out && self.error.is_none(),
                "stdout": text(&self.stdout), "stderr": text(&self.stderr), "error": self.error,
            });
            // The real node host leaves exitCode out when there is none.
            if let Some(code) = self.exit_code {
                answer["exitCode"] = json!(code);
            }
            if self.truncated {
                answer["truncated"] = json!(true);
            }
            let encoded = answer.to_string();
            if encoded.len() <= MAX_RUN_ANSWER_BYTES || (self.stdout.is_empty() && self.stderr.is_empty()) {
                return encoded;
            }
            let longest = if self.stdout.len() >= self.stderr.len() { &mut self.stdout } else { &mut self.stderr };
            longest.truncate(longest.len() / 2);
            self.truncated = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(name: &str, program: &str) -> Exec {
        let program = std::fs::canonicalize(program).unwrap();
        Exec { name: name.into(), program, invoked_as: Path::new(name).file_name().unwrap().to_str().unwrap().into() }
    }

    fn run_ok(params: Value, execs: &[Exec]) -> Value {
        let answer = run(&params, execs, Some("/usr/bin:/bin"), Duration::from_secs(5)).unwrap();
        serde_json::from_str(&answer).unwrap()
    }

    #[test]
    fn which_finds_bare_names_and_leaves_out_the_rest() {
        let answer =
            which(&json!({"bins": ["sh", " sh ", "no-such-goclaw-bin", "/bin/sh", ""]}), Some("/usr/bin:/bin"));
        let payload: Value = serde_json::from_str(&answer.unwrap()).unwrap();
        let bins = payload["bins"].as_object().unwrap();
        assert_eq!(bins.len(), 1, "{payload}");
        assert!(bins["sh"].as_str().unwrap().ends_with("/sh"));
        assert_eq!(which(&json!({}), None).unwrap_err(), ("INVALID_REQUEST", "INVALID_REQUEST: bins required".into()));
        assert_eq!(which(&json!({"bins": "sh"}), None).unwrap_err().0, "INVALID_REQUEST");
        let many: Vec<String> = (0..=MAX_WHICH_BINS).map(|i| format!("b{i}")).collect();
        assert!(which(&json!({ "bins": many }), None).is_err());
    }

    #[test]
    fn run_runs_a_listed_program_with_its_arguments() {
        let execs = [listed("sh", "/bin/sh")];
        let payload = run_ok(json!({"command": ["sh", "-c", "echo out; echo err >&2; exit 3"]}), &execs);
        assert_eq!(payload["exitCode"], 3);
        assert_eq!((payload["stdout"].as_str(), payload["stderr"].as_str()), (Some("out\n"), Some("err\n")));
        assert_eq!((payload["success"].clone(), payload["timedOut"].clone()), (json!(false), json!(false)));
        assert_eq!(payload["error"], Value::Null);
        let payload = run_ok(json!({"command": ["/bin/sh", "-c", "pwd"], "cwd": "/", "runId": "x"}), &execs);
        assert_eq!((payload["stdout"].as_str(), payload["success"].as_bool()), (Some("/\n"), Some(true)));
        let slow = json!({"command": ["sh", "-c", "sleep 10"], "timeoutMs": 200});
        let payload = run_ok(slow, &execs);
        assert_eq!((payload["timedOut"].clone(), payload.get("exitCode")), (json!(true), None));
        let flood = json!({"command": ["sh", "-c", "head -c 300000 /dev/zero | tr '\\0' '\\1'"]});
        let payload = run_ok(flood, &execs);
        assert_eq!(payload["truncated"], true);
        assert!(payload.to_string().len() <= MAX_RUN_ANSWER_BYTES, "{}", payload.to_string().len());
    }

    #[test]
    fn run_refuses_what_was_not_listed() {
        let execs = [listed("sh", "/bin/sh")];
        let refuse = |params: Value| run(&params, &execs, Some("/usr/bin:/bin"), Duration::from_secs(5)).unwrap_err();
        for argv in [json!(["ls", "/"]), json!(["/bin/ls"]), json!(["./sh"]), json!(["/nonexistent/sh"])] {
            let (code, message) = refuse(json!({ "command": argv }));
            assert_eq!(code, "UNAVAILABLE", "{argv}");
            assert!(message.starts_with("SYSTEM_RUN_DENIED: approval required"), "{message}");
        }
        let (code, message) = refuse(json!({"command": ["sh"], "env": {"LD_PRELOAD": "/tmp/x.so"}}));
        assert!(code == "UNAVAILABLE" && message.starts_with("SYSTEM_RUN_DENIED"), "{message}");
        assert_eq!(refuse(json!({"command": []})), ("INVALID_REQUEST", "command required".into()));
        assert_eq!(refuse(json!({})), ("INVALID_REQUEST", "command required".into()));
        assert_eq!(refuse(json!({"command": "sh"})).0, "INVALID_REQUEST");
        assert_eq!(refuse(json!({"command": ["sh"], "cwd": "/nonexistent"})).0, "INVALID_REQUEST");
        // Listed under another name (a link to a multi-call binary): only that name.
        let as_other = [Exec { invoked_as: "dash-applet".into(), ..listed("sh", "/bin/sh") }];
        assert!(run(&json!({"command": ["sh"]}), &as_other, Some("/bin"), Duration::from_secs(1)).is_err());
    }
}
