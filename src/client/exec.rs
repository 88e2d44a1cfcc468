//! The program runner: a listed program in a process group of its own, no
//! shell, bounded in time (the whole group is killed at the deadline) and in
//! output. For `--exec` commands, the invoke's params as JSON on its stdin
//! and its stdout (JSON) as the answer; `system.run` (`client::run`) uses
//! the same bounded run. Never runs anything that was not listed at start.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::value::RawValue;

/// Largest output an `--exec` program may produce (it is the result
/// payload, and the gateway's default message limit is 512 KiB).
pub const MAX_EXEC_OUTPUT: usize = 256 * 1024;
/// How long a killed program's pipes get to close before we stop waiting.
const PIPE_GRACE: Duration = Duration::from_millis(100);
/// Bytes of a failing program's stderr quoted in its error.
const STDERR_TAIL_BYTES: usize = 512;
/// Bytes of an `--exec` program's stderr read (the rest is drained).
const STDERR_KEPT_BYTES: usize = 64 * 1024;

/// A command's outcome: the payload as JSON text, or an error code and message.
pub type Answer = Result<String, (&'static str, String)>;

/// A local program exposed as a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exec {
    /// The command name operators invoke.
    pub name: String,
    /// The program run for it, canonical (no shell, no arguments).
    pub program: PathBuf,
    /// The file name it was listed as (`ls` for `/bin/ls`, even when that
    /// is a link to a multi-call binary such as busybox): its `argv[0]`.
    pub invoked_as: String,
}

/// How a bounded run ended.
#[derive(Debug)]
pub struct Ran {
    /// The exit status; `None` when it was killed at the deadline.
    pub status: Option<ExitStatus>,
    /// What it wrote on stdout, at most the limit asked for plus one byte;
    /// `None` when something it left running still holds stdout open.
    pub stdout: Option<Vec<u8>>,
    /// What it wrote on stderr, at most the limit asked for plus one byte.
    pub stderr: Vec<u8>,
}

/// Runs `command` with `stdin` on its standard input (none: /dev/null),
/// in a process group of its own, until it exits and its pipes close or
/// `timeout` passes; then kills what is left of the group. Reads at most
/// `max_stdout + 1` and `max_stderr + 1` bytes (the rest is drained).
///
/// # Errors
/// The program cannot be started.
pub fn run_bounded(
    mut command: Command,
    stdin: Option<String>,
    timeout: Duration,
    max_stdout: usize,
    max_stderr: usize,
) -> std::io::Result<Ran> {
    // A process group of its own: on timeout, or once it exits, whatever
    // it started dies with it, and nothing is left holding its pipes open.
    let input = if stdin.is_some() { Stdio::piped() } else { Stdio::null() };
    command.process_group(0).stdin(input).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn()?;
    let deadline = Instant::now() + timeout;
    // Each pipe on a thread of its own: a program that fills one pipe
    // while we wait on another must not deadlock us.
    let stdin = child.stdin.take().zip(stdin).map(|(mut pipe, text)| {
        thread::spawn(move || {
            let _ = pipe.write_all(text.as_bytes());
        })
    });
    let stdout = child.stdout.take().map(|pipe| thread::spawn(move || read_bounded(pipe, max_stdout + 1)));
    let stderr = child.stderr.take().map(|pipe| thread::spawn(move || read_bounded(pipe, max_stderr + 1)));
    let mut status = None;
    poll_until(deadline, || match child.try_wait() {
        Ok(Some(exited)) => {
            status = Some(exited);
            true
        }
        Ok(None) => false,
        Err(_) => true,
    });
    let open =
        |stdout: &Pipe, stderr: &Pipe| [stdout, stderr].iter().any(|p| p.as_ref().is_some_and(|h| !h.is_finished()));
    if status.is_none() {
        // Not reaped yet, so its group id cannot have been reused.
        kill_group(&child);
        let _ = child.wait();
        poll_until(Instant::now() + PIPE_GRACE, || !open(&stdout, &stderr));
    } else if !poll_until(deadline, || !open(&stdout, &stderr)) {
        // It exited; something it started may still hold its pipes open.
        // Waited for until the deadline; then what is left of its group is
        // killed (still in use by whoever holds the pipes, so not reused).
        kill_group(&child);
        poll_until(Instant::now() + PIPE_GRACE, || !open(&stdout, &stderr));
    }
    let (stdout, stderr) = collect(stdin, stdout, stderr);
    Ok(Ran { status, stdout, stderr })
}

/// Runs an `--exec` program: `params` on its stdin, its stdout (JSON) as
/// the payload. Bounded in time and in output; nothing but the listed
/// program runs, and no shell.
pub fn run_program(exec: &Exec, params: &str, timeout: Duration) -> Answer {
    let failed = |message: String| Err(("EXEC_FAILED", message));
    let name = &exec.name;
    let mut command = Command::new(&exec.program);
    command.arg0(&exec.invoked_as);
    let ran = match run_bounded(command, Some(params.to_string()), timeout, MAX_EXEC_OUTPUT, STDERR_KEPT_BYTES) {
        Ok(ran) => ran,
        Err(e) => return failed(format!("cannot start {}: {e}", exec.program.display())),
    };
    let Some(status) = ran.status else {
        return Err(("EXEC_TIMEOUT", format!("{name} did not finish within {} ms", timeout.as_millis())));
    };
    let Some(output) = ran.stdout else {
        // Something left its group (setsid) and keeps the pipe: its reader
        // thread is left to end whenever that does; we do not wait.
        return failed(format!("{name} left a process running that holds its output open"));
    };
    if !status.success() {
        let tail = tail(&ran.stderr, STDERR_TAIL_BYTES);
        return failed(format!("{name} failed ({status}){}{tail}", if tail.is_empty() { "" } else { ": " }));
    }
    if output.len() > MAX_EXEC_OUTPUT {
        return failed(format!("{name} wrote more than {MAX_EXEC_OUTPUT} bytes"));
    }
    let text = match String::from_utf8(output) {
        Ok(text) if text.trim().is_empty() => return Ok("null".to_string()),
        Ok(text) => text,
        Err(_) => return failed(format!("{name} wrote output that is not UTF-8")),
    };
    match serde_json::from_str::<&RawValue>(text.trim()) {
        Ok(json) => Ok(json.get().to_string()),
        Err(e) => failed(format!("{name} wrote output that is not JSON: {e}")),
    }
}

/// Kills the program's process group: the program, if it still runs, and
/// whatever it started.
fn kill_group(child: &Child) {
    let group = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
}

type Pipe = Option<JoinHandle<Vec<u8>>>;

/// Joins the pipe threads that have finished and returns what they read
/// (`None` for stdout still open); the others are left to end on their own.
fn collect(stdin: Option<JoinHandle<()>>, stdout: Pipe, stderr: Pipe) -> (Option<Vec<u8>>, Vec<u8>) {
    fn finished<T>(handle: Option<JoinHandle<T>>) -> Option<T> {
        handle.filter(JoinHandle::is_finished).and_then(|h| h.join().ok())
    }
    finished(stdin);
    let output = match &stdout {
        Some(handle) if !handle.is_finished() => None,
        _ => Some(finished(stdout).unwrap_or_default()),
    };
    (output, finished(stderr).unwrap_or_default())
}

/// Polls every few milliseconds until `done` holds or `deadline` passes;
/// whether it held.
fn poll_until(deadline: Instant, mut done: impl FnMut() -> bool) -> bool {
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// Reads at most `limit` bytes, then drains (and drops) the rest so the
/// writer is never blocked on a full pipe.
fn read_bounded(mut pipe: impl Read, limit: usize) -> Vec<u8> {
    let mut kept = Vec::new();
    let _ = pipe.by_ref().take(limit as u64).read_to_end(&mut kept);
    let _ = std::io::copy(&mut pipe, &mut std::io::sink());
    kept
}

/// The last `max` bytes of `bytes` as text, on a character boundary.
fn tail(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    text[text.ceil_char_boundary(text.len().saturating_sub(max))..].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(name: &str, body: &str) -> Exec {
        let dir = std::env::temp_dir().join(format!("goclaw-agent-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        Exec { name: name.to_string(), program: path, invoked_as: name.to_string() }
    }

    #[test]
    fn programs_get_params_and_give_json() {
        let second = Duration::from_secs(5);
        let echo = script("cat-params", "cat");
        assert_eq!(run_program(&echo, r#"{"a":[1,2]}"#, second), Ok(r#"{"a":[1,2]}"#.to_string()));
        let quiet = script("quiet", "true");
        assert_eq!(run_program(&quiet, "null", second), Ok("null".to_string()));
        let (code, message) = run_program(&script("prose", "echo hello"), "null", second).unwrap_err();
        assert_eq!(code, "EXEC_FAILED");
        assert!(message.contains("not JSON"), "{message}");
        let (code, message) = run_program(&script("fails", "echo broken >&2; exit 3"), "null", second).unwrap_err();
        assert_eq!(code, "EXEC_FAILED");
        assert!(message.contains("broken") && message.contains('3'), "{message}");
        let started = Instant::now();
        let (code, _) = run_program(&script("sleeps", "sleep 30"), "null", Duration::from_millis(200)).unwrap_err();
        assert_eq!(code, "EXEC_TIMEOUT");
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        // Leaves a process in a session of its own holding stdout: not
        // waited for past the deadline.
        let started = Instant::now();
        let escapes = script("escapes", "setsid sleep 30 & echo '{}'");
        let (code, message) = run_program(&escapes, "null", Duration::from_millis(300)).unwrap_err();
        assert_eq!(code, "EXEC_FAILED");
        assert!(message.contains("holds its output open"), "{message}");
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        // Exits at once but leaves a child holding its stdout: cut at the deadline.
        let started = Instant::now();
        let daemon = script("daemonizes", "sleep 30 & echo '{\"started\":true}'");
        assert_eq!(run_program(&daemon, "null", Duration::from_millis(300)), Ok(r#"{"started":true}"#.to_string()));
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        let flood = script("floods", "head -c 1000000 /dev/zero | tr '\\0' 'x'");
        let (code, message) = run_program(&flood, "null", second).unwrap_err();
        assert_eq!(code, "EXEC_FAILED");
        assert!(message.contains("more than"), "{message}");
        let missing =
            Exec { name: "missing".into(), program: "/nonexistent/goclaw-program".into(), invoked_as: "x".into() };
        assert_eq!(run_program(&missing, "null", second).unwrap_err().0, "EXEC_FAILED");
        std::fs::remove_dir_all(echo.program.parent().unwrap()).unwrap();
    }
}
