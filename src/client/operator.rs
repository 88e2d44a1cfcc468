//! `goclaw nodes`, `goclaw invoke` and `goclaw watch`: the operator side,
//! for people at a shell and for scripts, against goclaw or a real OpenClaw
//! gateway. Each connects as an operator with a device key of its own
//! (2026.5.7 grants an unsigned operator no scope), does one thing and
//! leaves with a close handshake. A gateway that refuses the connection for
//! now (429, 503) is asked again a bounded number of times, after the
//! `Retry-After` it gave; a device waiting for approval is exit 4 at once.

use std::io::{self, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::client::agent::random_fraction;
use crate::client::conn::{CONNECT_TIMEOUT, Client, Target};
use crate::client::dial::Dialer;
use crate::client::error::ClientError;
use crate::client::hello::ClientRole;
use crate::client::listing::{self, is_device_id, list_all, node_table};
use crate::client::state::{CLI_DIR, DeviceState};
use crate::util::{Stop, unix_ms};

/// Exit status for an error answer from the gateway (and for this
/// client's own device identity that cannot be read).
pub const EXIT_GATEWAY_ERROR: u8 = 1;
/// Exit status for bad usage.
pub const EXIT_USAGE: u8 = 2;
/// Exit status when the gateway cannot be reached or the connection breaks.
pub const EXIT_CONNECTION: u8 = 3;
/// Exit status when the gateway still refuses the connection for now (rate
/// limited, at capacity, restarting) after [`REFUSED_ATTEMPTS`], or this
/// client's device waits for approval.
pub const EXIT_REFUSED: u8 = 4;

/// Connection attempts, the first included, while the gateway answers 429
/// or 503: a script's loop of `goclaw invoke` rides out `--rate-limit`.
pub const REFUSED_ATTEMPTS: u32 = 5;
/// The most time spent waiting between those attempts, in all. A
/// `Retry-After` that does not fit in what is left is not waited for.
pub const REFUSED_WAIT_BUDGET: Duration = Duration::from_secs(30);
/// The wait when a refusal carries no `Retry-After`.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);
/// At most this much is added to each wait, at random, so that scripts
/// refused together do not come back together.
pub const RETRY_JITTER: Duration = Duration::from_millis(250);
/// Slack over an invoke's own timeout before we stop waiting for the
/// gateway's answer (it answers `TIMEOUT` itself at the deadline).
const INVOKE_SLACK: Duration = Duration::from_secs(5);
/// How often `watch` looks up from the socket for a stop request: it
/// wakes about once a second while nothing happens, and stops within one.
const WATCH_POLL: Duration = Duration::from_secs(1);

/// An operator command's gateway, and where its device key lives.
#[derive(Debug, Clone)]
pub struct Operator {
    /// The gateway.
    pub target: Target,
    /// The state directory (the key is in its `cli/`); `None`: no device
    /// (no directory could be found), which only a gateway that takes
    /// unsigned operators (goclaw, 2026.9.6, on loopback) serves.
    pub state_dir: Option<PathBuf>,
}

impl Operator {
    /// Connects as an operator. While the gateway refuses for now, waits
    /// what its `Retry-After` says (plus jitter) and tries again, up to
    /// [`REFUSED_ATTEMPTS`] attempts and [`REFUSED_WAIT_BUDGET`] of waiting;
    /// `stop` ends a wait early.
    ///
    /// # Errors
    /// As [`Client::connect`]; [`ClientError::State`] for a device key that
    /// cannot be read or made.
    pub fn connect(&self, stop: &Stop) -> Result<Client, ClientError> {
        let device = match &self.state_dir {
            Some(dir) => Some(DeviceState::open(&dir.join(CLI_DIR))?),
            None => None,
        };
        let mut dialer = Dialer {
            target: self.target.clone(),
            role: ClientRole::Operator,
            instance_id: None,
            display_name: Some("goclaw CLI".to_string()),
            commands: Vec::new(),
            device,
        };
        let (mut attempt, mut waited) = (1, Duration::ZERO);
        loop {
            let (message, retry_after) = match dialer.dial(CONNECT_TIMEOUT, true) {
                Ok((client, _)) => return Ok(client),
                Err(pending @ ClientError::PairingPending { .. }) => return self.unsigned(&mut dialer, pending),
                Err(ClientError::RefusedForNow { message, retry_after }) => (message, retry_after),
                Err(e) => return Err(e),
            };
            let asked = retry_after.unwrap_or(DEFAULT_RETRY_AFTER);
            // Saturating: the gateway's number may be as large as u64 seconds.
            let wait = asked.saturating_add(RETRY_JITTER.mul_f64(random_fraction()));
            let why = if attempt >= REFUSED_ATTEMPTS {
                format!("still refused after {attempt} attempts")
            } else if waited.saturating_add(wait) > REFUSED_WAIT_BUDGET {
                let budget = REFUSED_WAIT_BUDGET.as_secs();
                format!("it asks to retry after {} s, longer than goclaw waits ({budget} s)", asked.as_secs())
            } else if stop.sleep(wait) {
                "interrupted".to_string()
            } else {
                waited += wait;
                attempt += 1;
                continue;
            };
            return Err(ClientError::RefusedForNow { message: format!("{message} ({why})"), retry_after });
        }
    }

    /// This device waits for approval. On loopback with the shared token a
    /// gateway may serve an unsigned operator (goclaw with
    /// `--local-auto-approve false`: how its own host approves the first
    /// devices); only if it grants scopes is that used, else `pending`.
    fn unsigned(&self, dialer: &mut Dialer, pending: ClientError) -> Result<Client, ClientError> {
        if !(self.target.endpoint.is_loopback() && self.target.token.is_some()) {
            return Err(pending);
        }
        match dialer.dial(CONNECT_TIMEOUT, false) {
            Ok((client, welcome)) if welcome.scopes.as_ref().is_none_or(|s| !s.is_empty()) => Ok(client),
            Ok((client, _)) => {
                client.close();
                Err(pending)
            }
            Err(_) => Err(pending),
        }
    }
}

fn write_failed(e: io::Error) -> ClientError {
    ClientError::Connection(format!("cannot write the output: {e}"))
}

/// `goclaw nodes`: the connected nodes as a table, or as JSON.
///
/// # Errors
/// The gateway's error answer, or a connection problem.
pub fn nodes(operator: &Operator, as_json: bool, out: &mut impl Write) -> Result<(), ClientError> {
    let mut client = operator.connect(&Stop::default())?;
    let nodes = list_all(&mut client);
    client.close();
    let nodes = nodes?;
    let written = if as_json {
        writeln!(out, "{}", Value::Array(nodes))
    } else {
        out.write_all(node_table(&nodes, unix_ms()).as_bytes())
    };
    written.map_err(write_failed)
}

/// The node id `wanted` names (SPEC §2), asking the gateway's `node.list`
/// unless it is a whole device id already; as given if no node matches
/// (the gateway then says it does not know it).
///
/// # Errors
/// The gateway's error answer; [`ClientError::Usage`] when it is ambiguous.
pub fn node_id(client: &mut Client, wanted: &str) -> Result<String, ClientError> {
    if is_device_id(wanted) {
        return Ok(wanted.to_string());
    }
    let nodes = list_all(client)?;
    Ok(listing::resolve(&nodes, wanted)?.unwrap_or(wanted).to_string())
}

/// `goclaw invoke`: the node's result payload.
///
/// # Errors
/// The gateway's (or node's) error answer, or a connection problem.
pub fn invoke(
    operator: &Operator,
    node: &str,
    command: &str,
    params: Value,
    timeout: Duration,
) -> Result<Value, ClientError> {
    let mut client = operator.connect(&Stop::default())?;
    let answer = node_id(&mut client, node).and_then(|node_id| {
        let params = json!({
            "nodeId": node_id, "command": command, "params": params,
            "timeoutMs": timeout.as_millis() as u64, "idempotencyKey": uuid::Uuid::new_v4().to_string(),
        });
        client.request("node.invoke", params, timeout + INVOKE_SLACK)
    });
    client.close();
    unwrap_invoke(answer?)
}

/// The node's payload out of `node.invoke`'s answer: `{ok, nodeId,
/// command}` with `payload`, or `payloadJSON` (a string to parse).
fn unwrap_invoke(answer: Value) -> Result<Value, ClientError> {
    match answer.get("payloadJSON").and_then(Value::as_str) {
        Some(text) => serde_json::from_str(text)
            .map_err(|_| ClientError::Connection("the gateway sent a payloadJSON that is not JSON".into())),
        None => Ok(answer.get("payload").cloned().unwrap_or(Value::Null)),
    }
}

/// `goclaw watch`: prints each `presence` event as a line until `stop` is
/// set (then returns `Ok`) or the connection ends.
///
/// # Errors
/// A connection problem, the gateway closing the connection included.
pub fn watch(operator: &Operator, as_json: bool, stop: &Stop, out: &mut impl Write) -> Result<(), ClientError> {
    let mut client = match operator.connect(stop) {
        // Interrupted while waiting to be let in: the same as after.
        Err(ClientError::RefusedForNow { .. }) if stop.is_set() => return Ok(()),
        connected => connected?,
    };
    loop {
        if stop.is_set() {
            client.close();
            return Ok(());
        }
        let Some(frame) = client.read_until(Instant::now() + WATCH_POLL)? else { continue };
        if frame["event"] == "shutdown" {
            return Err(ClientError::Connection("the gateway is shutting down".into()));
        }
        if frame["event"] != "presence" {
            continue;
        }
        let presence = &frame["payload"];
        let line = if as_json {
            presence.to_string()
        } else {
            let at = presence["ts"]
                .as_i64()
                .and_then(chrono::DateTime::from_timestamp_millis)
                .map_or_else(|| "-".to_string(), |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
            let text = |v: &Value| v.as_str().unwrap_or("?").to_string();
            format!("{at}  {:<12}  {}", text(&presence["state"]), text(&presence["nodeId"]))
        };
        writeln!(out, "{line}").and_then(|()| out.flush()).map_err(write_failed)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::endpoint::Endpoint;
    use crate::client::trust::TlsSettings;
    use std::io::Read;
    use std::net::TcpListener;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::thread;

    /// A fake gateway that answers every upgrade with `answer`; returns its
    /// operator (no device) and the count of upgrade requests it has seen.
    fn refusing(answer: &'static str) -> (Operator, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("ws://{}/ws", listener.local_addr().unwrap());
        let seen = Arc::new(AtomicUsize::new(0));
        let counter = seen.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).is_ok_and(|n| n == 1) {
                    head.push(byte[0]);
                }
                counter.fetch_add(1, Ordering::SeqCst);
                let _ = stream.write_all(answer.as_bytes());
            }
        });
        let target = Target { endpoint: Endpoint::parse(&url).unwrap(), token: None, tls: TlsSettings::default() };
        (Operator { target, state_dir: None }, seen)
    }

    #[test]
    fn a_refusal_for_now_is_retried_a_bounded_number_of_times() {
        let (operator, seen) =
            refusing("HTTP/1.1 503 Service Unavailable\r\nRetry-After: 0\r\nContent-Length: 0\r\n\r\n");
        let started = Instant::now();
        let Err(ClientError::RefusedForNow { message, retry_after }) = operator.connect(&Stop::default()) else {
            panic!("not refused")
        };
        assert_eq!(seen.load(Ordering::SeqCst), REFUSED_ATTEMPTS as usize);
        assert_eq!(retry_after, Some(Duration::ZERO));
        assert!(message.contains("HTTP 503") && message.contains("after 5 attempts"), "{message}");
        // Four waits of Retry-After (0) plus jitter each.
        assert!(started.elapsed() < RETRY_JITTER * 4 + Duration::from_secs(2), "{:?}", started.elapsed());
    }

    #[test]
    fn a_retry_after_past_the_budget_is_not_waited_for() {
        let answers = [
            ("HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1000\r\n\r\n", "HTTP 429", "1000"),
            (
                "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 18446744073709551615\r\n\r\n",
                "HTTP 503",
                "18446744073709551615",
            ),
        ];
        for (answer, status, seconds) in answers {
            let (operator, seen) = refusing(answer);
            let started = Instant::now();
            let Err(ClientError::RefusedForNow { message, .. }) = operator.connect(&Stop::default()) else {
                panic!("not refused")
            };
            assert_eq!(seen.load(Ordering::SeqCst), 1);
            assert!(message.contains(status) && message.contains(&format!("retry after {seconds} s")), "{message}");
            assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
        }
    }

    #[test]
    fn other_refusals_are_not_retried_and_a_stop_ends_the_wait() {
        let (operator, seen) = refusing("HTTP/1.1 404 Not Found\r\n\r\n");
        assert!(matches!(operator.connect(&Stop::default()), Err(ClientError::Connection(_))));
        assert_eq!(seen.load(Ordering::SeqCst), 1);

        let (operator, seen) = refusing("HTTP/1.1 503 Service Unavailable\r\nRetry-After: 20\r\n\r\n");
        let stop = Stop::default();
        stop.set();
        let Err(ClientError::RefusedForNow { message, .. }) = operator.connect(&stop) else { panic!("not refused") };
        assert!(message.contains("interrupted"), "{message}");
        assert_eq!(seen.load(Ordering::SeqCst), 1);
    }
}
