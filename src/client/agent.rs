//! `goclaw node`: the built-in node agent. It connects to a gateway as a
//! node, answers `device.status`, `system.info`, `echo` and the programs
//! the box's operator listed with `--exec`, and stays connected: it
//! reconnects after the gateway's `restartExpectedMs` when the gateway
//! shuts down, and with exponential backoff and jitter when the connection
//! is lost. One thread reads the connection; each `--exec` program runs on
//! a thread of its own so a slow program never delays pongs or other
//! answers.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use serde_json::{Value, json};

use crate::client::conn::{CONNECT_TIMEOUT, Client, Identity};
use crate::client::endpoint::Endpoint;
use crate::client::error::ClientError;
use crate::client::exec::{Answer, Exec, run_program};
use crate::client::sysinfo;
use crate::util::Stop;
use crate::wire::auth::Token;
use crate::wire::params::{MAX_ERROR_MESSAGE_BYTES, MAX_INVOKE_TIMEOUT_MS};

/// The commands every node answers.
pub const BUILT_IN: &[&str] = &["device.status", "echo", "system.info"];
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
pub(crate) fn random_fraction() -> f64 {
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
    // The params as the gateway sends them: `paramsJSON` (OpenClaw), else `params`.
    let params = match (request["paramsJSON"].as_str(), request.get("params")) {
        (Some(text), _) => text.to_string(),
        (None, Some(params)) => params.to_string(),
        (None, None) => "null".to_string(),
    };
    let built_in = match command {
        "device.status" => Some(sysinfo::device_status().to_string()),
        "system.info" => Some(sysinfo::system_info().to_string()),
        "echo" => Some(params.clone()),
        _ => None,
    };
    if let Some(payload) = built_in {
        return Some(Ok(payload));
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
