//! `goclaw node`: the built-in node agent. It connects to a gateway as a
//! node, answers `device.status`, `system.info`, `echo` and the programs
//! the box's operator listed with `--exec`, and stays connected: it
//! reconnects after the gateway's `restartExpectedMs` when the gateway
//! shuts down, and with exponential backoff and jitter when the connection
//! is lost. One thread reads the connection; each `--exec` program runs on
//! a thread of its own so a slow program never delays pongs or other
//! answers.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use parking_lot::{Condvar, Mutex};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::client::{CONNECT_TIMEOUT, Client, ClientError, Endpoint, Identity};
use crate::config::Token;
use crate::protocol::{MAX_ERROR_MESSAGE_BYTES, MAX_INVOKE_TIMEOUT_MS};
use crate::sysinfo;

/// The commands every node answers.
pub const BUILT_IN: &[&str] = &["device.status", "echo", "system.info"];
/// Largest output an `--exec` program may produce (it is the result
/// payload, and the gateway's default message limit is 512 KiB).
pub const MAX_EXEC_OUTPUT: usize = 256 * 1024;
/// `--exec` programs running at once; more get `BUSY`.
pub const MAX_RUNNING_EXECS: usize = 4;
/// First reconnect delay; it doubles per failed attempt up to the cap.
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
/// Longest reconnect delay.
pub const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// Longest wait the gateway's `restartExpectedMs` may ask for.
const RESTART_WAIT_CAP: Duration = Duration::from_secs(60);
/// How often the reading thread looks up from the socket: for finished
/// `--exec` programs and for a stop request.
const POLL: Duration = Duration::from_millis(50);
/// How long a killed program's pipes get to close before we stop waiting.
const PIPE_GRACE: Duration = Duration::from_millis(100);
/// Bytes of a failing program's stderr quoted in its error.
const STDERR_TAIL_BYTES: usize = 512;

/// A local program exposed as a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exec {
    /// The command name operators invoke.
    pub name: String,
    /// The program run for it (no shell, no arguments).
    pub program: PathBuf,
}

/// What `goclaw node` runs with.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The gateway.
    pub endpoint: Endpoint,
    /// The node id (default: the host name).
    pub id: String,
    /// The name operators see (default: the id).
    pub display_name: String,
    /// The gateway's token.
    pub token: Option<Token>,
    /// Programs exposed as commands.
    pub execs: Vec<Exec>,
    /// Longest an `--exec` program may run (the invoke's own timeout may
    /// cut it shorter).
    pub exec_timeout: Duration,
    /// Console log level.
    pub log_level: log::LevelFilter,
}

impl NodeConfig {
    fn identity(&self) -> Identity {
        let mut commands: Vec<String> = BUILT_IN.iter().map(|c| c.to_string()).collect();
        commands.extend(self.execs.iter().map(|e| e.name.clone()));
        Identity {
            role: "node",
            id: self.id.clone(),
            display_name: self.display_name.clone(),
            commands,
            token: self.token.clone(),
        }
    }
}

/// A stop request that interrupts sleeps (SIGINT and SIGTERM set it).
#[derive(Debug, Default)]
pub struct Stop {
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl Stop {
    /// Asks everything waiting on this to stop.
    pub fn set(&self) {
        *self.stopped.lock() = true;
        self.wake.notify_all();
    }

    /// Whether a stop was asked for.
    pub fn is_set(&self) -> bool {
        *self.stopped.lock()
    }

    /// Waits until a stop is asked for.
    pub fn wait(&self) {
        let mut stopped = self.stopped.lock();
        while !*stopped {
            self.wake.wait(&mut stopped);
        }
    }

    /// Sleeps for `duration` unless a stop comes first; true if it did.
    pub fn sleep(&self, duration: Duration) -> bool {
        let until = Instant::now() + duration;
        let mut stopped = self.stopped.lock();
        while !*stopped && !self.wake.wait_until(&mut stopped, until).timed_out() {}
        *stopped
    }
}

/// How one connection ended.
enum End {
    /// A stop was asked for; the connection was closed with 1000.
    Stopped,
    /// The gateway shut down and expects to be back after this long.
    Restart(Duration),
    /// Another node took our id (close 4000).
    Replaced,
    /// The connection broke or the gateway closed it unexpectedly.
    Lost(ClientError),
}

/// Runs the agent until `stop` is set: connect, serve, reconnect.
pub fn run(config: &NodeConfig, stop: &Stop) {
    let identity = config.identity();
    let mut failures = 0u32;
    while !stop.is_set() {
        let wait = match Client::connect(&config.endpoint, &identity, CONNECT_TIMEOUT) {
            Ok((client, hello)) => {
                failures = 0;
                info!(url:% = config.endpoint, node_id = config.id.as_str(),
                    conn_id = hello["server"]["connId"].as_str().unwrap_or_default(); "connected to the gateway");
                match serve(config, client, stop) {
                    End::Stopped => return,
                    End::Restart(wait) => {
                        info!(wait_ms = wait.as_millis() as u64; "the gateway is restarting; reconnecting after its restartExpectedMs");
                        // A little jitter: a fleet should not all come back in the same millisecond.
                        wait + BACKOFF_FIRST.mul_f64(random_fraction())
                    }
                    End::Replaced => {
                        warn!(node_id = config.id.as_str(); "another node connected with this id and replaced us; reconnecting after the longest backoff");
                        failures = u32::MAX;
                        backoff(failures)
                    }
                    End::Lost(e) => {
                        warn!(error:% = e; "connection to the gateway lost");
                        backoff(failures)
                    }
                }
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let wait = backoff(failures);
                if let ClientError::Gateway { .. } = e {
                    error!(error:% = e, retry_ms = wait.as_millis() as u64; "the gateway refused connect");
                } else {
                    warn!(error:% = e, retry_ms = wait.as_millis() as u64; "cannot connect to the gateway");
                }
                wait
            }
        };
        if stop.sleep(wait) {
            return;
        }
    }
}

/// The reconnect delay after `failures` failed attempts: exponential from
/// 0.5 s, capped at 30 s, with "equal jitter" (half fixed, half random) so
/// a fleet that lost its gateway at once does not return at once.
pub fn backoff(failures: u32) -> Duration {
    let ceiling = BACKOFF_FIRST.saturating_mul(1u32 << failures.min(16)).min(BACKOFF_CAP);
    let half = ceiling / 2;
    half + half.mul_f64(random_fraction())
}

/// A uniform fraction in [0, 1) from the random bits of a v4 UUID.
fn random_fraction() -> f64 {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    let mut bits = [0u8; 8];
    bits[1..].copy_from_slice(&bytes[9..16]); // 56 random bits (byte 8 holds the variant)
    (u64::from_be_bytes(bits) >> 3) as f64 / (1u64 << 53) as f64
}

/// One connection: answers invoke requests until it ends or `stop` is set.
fn serve(config: &NodeConfig, mut client: Client, stop: &Stop) -> End {
    let (done, finished) = mpsc::channel();
    let running = Arc::new(AtomicUsize::new(0));
    let mut execs: Vec<JoinHandle<()>> = Vec::new();
    let mut restart = None;
    let mut results = 0u64;
    let end = loop {
        if stop.is_set() {
            client.close();
            break End::Stopped;
        }
        execs.retain(|handle| !handle.is_finished());
        if let Err(e) = send_finished(&mut client, &config.id, &finished, &mut results) {
            break End::Lost(e);
        }
        let frame = match client.read_until(Instant::now() + POLL) {
            Ok(Some(frame)) => frame,
            Ok(None) => continue,
            Err(ClientError::Closed(4000, _)) => break End::Replaced,
            Err(e @ ClientError::Closed(..)) => break restart.map_or(End::Lost(e), End::Restart),
            Err(e) => break End::Lost(e),
        };
        match (frame["type"].as_str(), frame["event"].as_str()) {
            (Some("event"), Some("node.invoke.request")) => {
                let request = &frame["payload"];
                if let Some(answer) = answer(config, request, &done, &running, &mut execs) {
                    results += 1;
                    if let Err(e) = client.send(&result_frame(results, &config.id, request, answer)) {
                        break End::Lost(e);
                    }
                }
            }
            (Some("event"), Some("shutdown")) => {
                let ms = frame["payload"]["restartExpectedMs"].as_u64().unwrap_or(0);
                restart = Some(Duration::from_millis(ms).min(RESTART_WAIT_CAP));
            }
            (Some("res"), _) if frame["ok"] != true => {
                warn!(error:% = frame["error"]; "the gateway refused a result");
            }
            _ => {}
        }
    };
    // Programs still running finish on their own (each has a deadline);
    // their results have nowhere to go.
    drop(finished);
    for handle in execs {
        let _ = handle.join();
    }
    end
}

/// A command's outcome: the payload as JSON text, or an error code and message.
type Answer = Result<String, (&'static str, String)>;

/// Answers a built-in command at once; starts an `--exec` program on its
/// own thread (its answer comes through `done`) and returns `None`.
fn answer(
    config: &NodeConfig,
    request: &Value,
    done: &Sender<(Value, Answer)>,
    running: &Arc<AtomicUsize>,
    execs: &mut Vec<JoinHandle<()>>,
) -> Option<Answer> {
    let command = request["command"].as_str().unwrap_or_default();
    debug!(command = command, invoke_id = request["id"].as_str().unwrap_or_default(); "invoke request");
    let built_in = match command {
        "device.status" => Some(sysinfo::device_status()),
        "system.info" => Some(sysinfo::system_info()),
        "echo" => Some(request["params"].clone()),
        _ => None,
    };
    if let Some(payload) = built_in {
        return Some(Ok(payload.to_string()));
    }
    let Some(exec) = config.execs.iter().find(|e| e.name == command) else {
        return Some(Err(("UNKNOWN_COMMAND", format!("this node has no command {command:?}"))));
    };
    if running.fetch_add(1, SeqCst) >= MAX_RUNNING_EXECS {
        running.fetch_sub(1, SeqCst);
        return Some(Err(("BUSY", format!("{MAX_RUNNING_EXECS} programs are already running; try again"))));
    }
    let invoke_timeout = Duration::from_millis(request["timeoutMs"].as_u64().unwrap_or(MAX_INVOKE_TIMEOUT_MS));
    let timeout = config.exec_timeout.min(invoke_timeout);
    let params = request.get("paramsJSON").and_then(Value::as_str).unwrap_or("null").to_string();
    let (exec, request, done, running) = (exec.clone(), request.clone(), done.clone(), running.clone());
    let spawned = thread::Builder::new().name(format!("exec {}", exec.name)).spawn(move || {
        let outcome = run_program(&exec, &params, timeout);
        running.fetch_sub(1, SeqCst);
        let _ = done.send((request, outcome));
    });
    match spawned {
        Ok(handle) => {
            execs.push(handle);
            None
        }
        Err(e) => Some(Err(("EXEC_FAILED", format!("cannot start a thread: {e}")))),
    }
}

/// Sends the results of programs that finished since the last call.
fn send_finished(
    client: &mut Client,
    node_id: &str,
    finished: &Receiver<(Value, Answer)>,
    results: &mut u64,
) -> Result<(), ClientError> {
    while let Ok((request, outcome)) = finished.try_recv() {
        *results += 1;
        client.send(&result_frame(*results, node_id, &request, outcome))?;
    }
    Ok(())
}

/// The `node.invoke.result` request for an answer.
fn result_frame(n: u64, node_id: &str, request: &Value, outcome: Answer) -> Value {
    let mut params = json!({"id": request["id"], "nodeId": node_id});
    match outcome {
        Ok(payload) => {
            params["ok"] = json!(true);
            params["payloadJSON"] = json!(payload);
        }
        Err((code, message)) => {
            params["ok"] = json!(false);
            let message = &message[..message.floor_char_boundary(MAX_ERROR_MESSAGE_BYTES / 2)];
            params["error"] = json!({"code": code, "message": message});
        }
    }
    json!({"type": "req", "id": format!("result-{n}"), "method": "node.invoke.result", "params": params})
}

/// Runs an `--exec` program: `params` on its stdin, its stdout (JSON) as
/// the payload. Bounded in time and in output; nothing but the listed
/// program runs, and no shell.
pub fn run_program(exec: &Exec, params: &str, timeout: Duration) -> Answer {
    let failed = |message: String| Err(("EXEC_FAILED", message));
    let name = &exec.name;
    let mut command = Command::new(&exec.program);
    // A process group of its own: on timeout, or once it exits, whatever
    // it started dies with it, and nothing is left holding its pipes open.
    command.process_group(0).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => return failed(format!("cannot start {}: {e}", exec.program.display())),
    };
    let deadline = Instant::now() + timeout;
    // Each pipe on a thread of its own: a program that fills one pipe
    // while we wait on another must not deadlock us.
    let stdin = child.stdin.take().map(|mut pipe| {
        let params = params.to_string();
        thread::spawn(move || {
            let _ = pipe.write_all(params.as_bytes());
        })
    });
    let stdout = child.stdout.take().map(|pipe| thread::spawn(move || read_bounded(pipe, MAX_EXEC_OUTPUT + 1)));
    let stderr = child.stderr.take().map(|pipe| thread::spawn(move || read_bounded(pipe, 64 * 1024)));
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
    let Some(status) = status else {
        // Not reaped yet, so its group id cannot have been reused.
        kill_group(&child);
        let _ = child.wait();
        poll_until(Instant::now() + PIPE_GRACE, || !open(&stdout, &stderr));
        collect(stdin, stdout, stderr);
        return Err(("EXEC_TIMEOUT", format!("{name} did not finish within {} ms", timeout.as_millis())));
    };
    // It exited; something it started may still hold its pipes open. Wait
    // for them until the deadline, then kill what is left of its group
    // (still in use by whoever holds the pipes, so not reused).
    if !poll_until(deadline, || !open(&stdout, &stderr)) {
        kill_group(&child);
        poll_until(Instant::now() + PIPE_GRACE, || !open(&stdout, &stderr));
    }
    let (Some(output), errors) = collect(stdin, stdout, stderr) else {
        // Something left its group (setsid) and keeps the pipe: its reader
        // thread is left to end whenever that does; we do not wait.
        return failed(format!("{name} left a process running that holds its output open"));
    };
    if !status.success() {
        let tail = tail(&errors, STDERR_TAIL_BYTES);
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
        Exec { name: name.to_string(), program: path }
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
        let missing = Exec { name: "missing".into(), program: "/nonexistent/goclaw-program".into() };
        assert_eq!(run_program(&missing, "null", second).unwrap_err().0, "EXEC_FAILED");
    }

    #[test]
    fn backoff_grows_to_the_cap_with_jitter() {
        for failures in 0..40 {
            let ceiling = BACKOFF_FIRST.saturating_mul(1u32 << failures.min(16)).min(BACKOFF_CAP);
            let wait = backoff(failures);
            assert!(wait >= ceiling / 2 && wait <= ceiling, "{failures}: {wait:?}");
        }
        assert!(backoff(u32::MAX) <= BACKOFF_CAP);
        let waits: std::collections::HashSet<_> = (0..20).map(|_| backoff(10)).collect();
        assert!(waits.len() > 1, "no jitter");
    }

    #[test]
    fn stop_interrupts_a_sleep() {
        let stop = Arc::new(Stop::default());
        let setter = stop.clone();
        let started = Instant::now();
        let handle = thread::spawn(move || {
            thread::sleep(Duration::from_millis(50));
            setter.set();
        });
        assert!(stop.sleep(Duration::from_secs(10)));
        assert!(started.elapsed() < Duration::from_secs(5));
        handle.join().unwrap();
        assert!(stop.sleep(Duration::from_secs(10)), "stays stopped");
    }
}
