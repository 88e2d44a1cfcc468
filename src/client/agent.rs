//! `goclaw node`: the built-in node agent. It connects to a gateway (goclaw
//! or a real OpenClaw gateway) as a node with the device key of its state
//! directory, answers invokes (`client::commands`), and stays connected: it
//! waits for approval when its device is not paired yet (one log line per
//! request, naming what to run), reconnects after the gateway's
//! `restartExpectedMs` when the gateway shuts down, with exponential backoff
//! and jitter when the connection is lost, and when the gateway goes silent
//! for two tick intervals (close 4000 "tick timeout", as OpenClaw's clients
//! do). One thread reads the connection.

use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use log::{error, info, warn};
use serde_json::Value;

use crate::client::commands::{BUILT_IN, Finished, Runner, Running, result_frame};
use crate::client::conn::{CONNECT_TIMEOUT, Client, Target};
use crate::client::dial::Dialer;
use crate::client::error::ClientError;
use crate::client::hello::{ClientRole, Welcome};
use crate::client::state::{DeviceState, NODE_DIR};
use crate::util::Stop;

/// First reconnect delay; it doubles per failed attempt up to the cap.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
/// Longest reconnect delay.
pub const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// Longest wait the gateway's `restartExpectedMs` may ask for.
const RESTART_WAIT_CAP: Duration = Duration::from_secs(60);
/// How often the reading thread looks up from the socket for a stop
/// request and the keepalive while nothing runs: an idle node wakes about
/// once a second (as the real node host does), and stops within a second.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// How often it looks up while programs run, to send their results.
const BUSY_POLL: Duration = Duration::from_millis(50);

/// What `goclaw node` runs with.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The gateway.
    pub target: Target,
    /// How the node names itself (`client.instanceId`; default: the host
    /// name). The gateway's node id is the device id.
    pub id: String,
    /// The name operators see (default: the id).
    pub display_name: String,
    /// The state directory; the device key and tokens are in its `node/`.
    pub state_dir: PathBuf,
    /// The commands' programs and limits.
    pub runner: Runner,
    /// Console log level.
    pub log_level: log::LevelFilter,
}

impl NodeConfig {
    /// Every command the node declares.
    pub fn commands(&self) -> Vec<String> {
        let mut commands: Vec<String> = BUILT_IN.iter().map(|c| c.to_string()).collect();
        commands.extend(self.runner.execs.iter().map(|e| e.name.clone()));
        commands
    }
}

/// How one connection ended.
enum End {
    /// A stop was asked for; the connection was closed with 1000.
    Stopped,
    /// The gateway shut down and expects to be back after this long.
    Restart(Duration),
    /// Another node connected as this device (close 4000 `replaced`).
    Replaced,
    /// The connection broke, went silent or the gateway closed it.
    Lost(ClientError),
}

/// Runs the agent until `stop` is set: connect, serve, reconnect.
///
/// # Errors
/// [`ClientError::State`] when the device key cannot be read or made.
pub fn run(config: &NodeConfig, stop: &Stop) -> Result<(), ClientError> {
    let device = DeviceState::open(&config.state_dir.join(NODE_DIR))?;
    info!(device_id = device.device_id(), key = device.key_path().display().to_string().as_str();
        "node device identity (the gateway's node id)");
    let mut dialer = Dialer {
        target: config.target.clone(),
        role: ClientRole::Node,
        instance_id: Some(config.id.clone()),
        display_name: Some(config.display_name.clone()),
        commands: config.commands(),
        device: Some(device),
    };
    let endpoint = &config.target.endpoint;
    let mut failures = 0u32;
    let mut announced: Option<String> = None;
    while !stop.is_set() {
        let wait = match dialer.dial(CONNECT_TIMEOUT, true) {
            Ok((client, welcome)) => {
                failures = 0;
                announced = None;
                info!(url:% = endpoint, instance_id = config.id.as_str(), conn_id = welcome.conn_id.as_str(),
                    protocol = welcome.protocol; "connected to the gateway");
                match serve(&config.runner, client, &welcome, stop) {
                    End::Stopped => return Ok(()),
                    End::Restart(wait) => {
                        info!(wait_ms = wait.as_millis() as u64; "the gateway is restarting; reconnecting after its restartExpectedMs");
                        // A little jitter: a fleet should not all come back in the same millisecond.
                        wait + BACKOFF_FIRST.mul_f64(random_fraction())
                    }
                    End::Replaced => {
                        warn!(
                            "another node connected with this device and replaced us; reconnecting after the longest backoff"
                        );
                        failures = u32::MAX;
                        backoff(failures)
                    }
                    End::Lost(e) => {
                        warn!(error:% = e; "connection to the gateway lost");
                        backoff(failures)
                    }
                }
            }
            Err(ClientError::PairingPending { request_id, .. }) => {
                failures = failures.saturating_add(1);
                let wait = backoff(failures);
                if announced.as_deref() != Some(request_id.as_str()) {
                    warn!(request_id = request_id.as_str(); "this node waits for approval (retrying until then); {}",
                        ClientError::approval_hint(&request_id));
                    announced = Some(request_id);
                }
                wait
            }
            Err(e @ ClientError::State(_)) => return Err(e),
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
            return Ok(());
        }
    }
    Ok(())
}

/// The reconnect delay after `failures` failed attempts: exponential from
/// 1 s, capped at 30 s, with "equal jitter" (half fixed, half random) so
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
fn serve(runner: &Runner, mut client: Client, welcome: &Welcome, stop: &Stop) -> End {
    let (done, finished) = mpsc::channel();
    let mut running = Running::new(done);
    let mut restart = None;
    let mut results = 0u64;
    // OpenClaw's watchdog: any frame at least every two tick intervals.
    let silence = welcome.tick_interval * 2;
    let mut last_frame = Instant::now();
    let end = loop {
        if stop.is_set() {
            client.close();
            break End::Stopped;
        }
        if last_frame.elapsed() > silence {
            client.close_with(4000, "tick timeout");
            break End::Lost(ClientError::Connection(format!(
                "the gateway sent nothing for {} s (two tick intervals)",
                silence.as_secs()
            )));
        }
        running.threads.retain(|handle| !handle.is_finished());
        if let Err(e) = send_finished(&mut client, &finished, &mut results) {
            break End::Lost(e);
        }
        let poll = if running.threads.is_empty() { IDLE_POLL } else { BUSY_POLL };
        let frame = match client.read_until((Instant::now() + poll).min(last_frame + silence)) {
            Ok(Some(frame)) => frame,
            Ok(None) => continue,
            Err(ClientError::Closed(4000, reason)) if reason == "replaced" => break End::Replaced,
            Err(ClientError::Closed(4001, reason)) => {
                warn!(reason = reason.as_str(); "the gateway removed this device; it must be approved again");
                break End::Lost(ClientError::Closed(4001, reason));
            }
            Err(e @ ClientError::Closed(..)) => break restart.map_or(End::Lost(e), End::Restart),
            Err(e) => break End::Lost(e),
        };
        last_frame = Instant::now();
        match (frame["type"].as_str(), frame["event"].as_str()) {
            (Some("event"), Some("node.invoke.request")) => {
                let request = &frame["payload"];
                if let Some(answer) = runner.answer(request, &mut running) {
                    results += 1;
                    if let Err(e) = client.send(&result_frame(results, request, answer)) {
                        break End::Lost(e);
                    }
                }
            }
            (Some("event"), Some("shutdown")) => {
                let ms = frame["payload"]["restartExpectedMs"].as_u64().unwrap_or(0);
                restart = Some(Duration::from_millis(ms).min(RESTART_WAIT_CAP));
            }
            (Some("event"), Some(event @ ("node.pair.resolved" | "device.pair.resolved"))) => {
                pairing_resolved(event, &frame["payload"]);
            }
            (Some("res"), _) if frame["ok"] != true => {
                let error = &frame["error"];
                warn!(code = error["code"].as_str().unwrap_or_default(),
                    message = error["message"].as_str().unwrap_or_default(); "the gateway refused a result");
            }
            _ => {}
        }
    };
    // Programs still running finish on their own (each has a deadline);
    // their results have nowhere to go.
    drop(finished);
    for handle in running.threads {
        let _ = handle.join();
    }
    end
}

/// Logs how the gateway decided a pairing request about this node (the
/// command surface on OpenClaw: `openclaw nodes approve`).
fn pairing_resolved(event: &str, payload: &Value) {
    let text = |key: &str| payload[key].as_str().unwrap_or_default().chars().take(128).collect::<String>();
    info!(event = event, request_id = text("requestId").as_str(), decision = text("decision").as_str();
        "pairing request resolved");
}

/// Sends the results of programs that finished since the last call.
fn send_finished(client: &mut Client, finished: &Receiver<Finished>, results: &mut u64) -> Result<(), ClientError> {
    while let Ok((request, outcome)) = finished.try_recv() {
        *results += 1;
        client.send(&result_frame(*results, &request, outcome))?;
    }
    Ok(())
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
