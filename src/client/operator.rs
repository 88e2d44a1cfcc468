//! `goclaw nodes`, `goclaw invoke` and `goclaw watch`: the operator side,
//! for people at a shell and for scripts. Each connects as an operator,
//! does one thing and leaves with a close handshake. A gateway that
//! refuses the connection for now (429, 503) is asked again a bounded
//! number of times, after the `Retry-After` it gave.

use std::io::{self, Write};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::client::agent::random_fraction;
use crate::client::conn::{CONNECT_TIMEOUT, Client, Identity};
use crate::client::endpoint::Endpoint;
use crate::client::error::ClientError;
use crate::util::{Stop, unix_ms};
use crate::wire::auth::Token;

/// Exit status for an error answer from the gateway.
pub const EXIT_GATEWAY_ERROR: u8 = 1;
/// Exit status for bad usage.
pub const EXIT_USAGE: u8 = 2;
/// Exit status when the gateway cannot be reached or the connection breaks.
pub const EXIT_CONNECTION: u8 = 3;
/// Exit status when the gateway still refuses the connection for now (rate
/// limited, at capacity, restarting) after [`REFUSED_ATTEMPTS`].
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

/// Most `node.list` pages `goclaw nodes` follows.
const MAX_PAGES: usize = 1000;
/// Time for an answer to `node.list`.
const LIST_TIMEOUT: Duration = Duration::from_secs(10);
/// Slack over an invoke's own timeout before we stop waiting for the
/// gateway's answer (it answers `TIMEOUT` itself at the deadline).
const INVOKE_SLACK: Duration = Duration::from_secs(5);
/// How often `watch` looks up from the socket for a stop request.
const WATCH_POLL: Duration = Duration::from_millis(200);

/// The gateway an operator command talks to.
#[derive(Debug, Clone)]
pub struct Target {
    /// Where it listens.
    pub endpoint: Endpoint,
    /// Its token, if it has one.
    pub token: Option<Token>,
}

impl Target {
    /// Connects as an operator. While the gateway refuses for now, waits
    /// what its `Retry-After` says (plus jitter) and tries again, up to
    /// [`REFUSED_ATTEMPTS`] attempts and [`REFUSED_WAIT_BUDGET`] of waiting;
    /// `stop` ends a wait early.
    fn connect(&self, stop: &Stop) -> Result<Client, ClientError> {
        let identity = Identity {
            role: "operator",
            id: format!("goclaw-cli-{}", std::process::id()),
            display_name: "goclaw CLI".to_string(),
            commands: Vec::new(),
            token: self.token.clone(),
        };
        let (mut attempt, mut waited) = (1, Duration::ZERO);
        loop {
            let (message, retry_after) = match Client::connect(&self.endpoint, &identity, CONNECT_TIMEOUT) {
                Ok((client, _hello)) => return Ok(client),
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
}

/// `goclaw nodes`: the connected nodes as a table, or as JSON.
///
/// # Errors
/// The gateway's error answer, or a connection problem.
pub fn nodes(target: &Target, as_json: bool, out: &mut impl Write) -> Result<(), ClientError> {
    let mut client = target.connect(&Stop::default())?;
    let nodes = list_all(&mut client);
    client.close();
    let nodes = nodes?;
    let written = if as_json {
        writeln!(out, "{}", Value::Array(nodes))
    } else {
        out.write_all(node_table(&nodes, unix_ms()).as_bytes())
    };
    written.map_err(|e| ClientError::Connection(format!("cannot write the output: {e}")))
}

/// Every connected node, following `node.list`'s pages (at most
/// [`MAX_PAGES`], so a gateway that keeps sending cursors cannot loop us).
fn list_all(client: &mut Client) -> Result<Vec<Value>, ClientError> {
    let mut nodes = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let params = match &cursor {
            Some(cursor) => json!({"cursor": cursor}),
            None => json!({}),
        };
        let page = client.request("node.list", params, LIST_TIMEOUT)?;
        nodes.extend(page["nodes"].as_array().cloned().unwrap_or_default());
        match page["nextCursor"].as_str() {
            Some(next) if cursor.as_deref() != Some(next) => cursor = Some(next.to_string()),
            _ => return Ok(nodes),
        }
    }
    Ok(nodes)
}

/// The aligned table `goclaw nodes` prints.
pub fn node_table(nodes: &[Value], now_ms: u64) -> String {
    let text = |v: &Value| v.as_str().unwrap_or("-").to_string();
    let mut rows = vec![["ID", "NAME", "PLATFORM", "VERSION", "COMMANDS", "CONNECTED"].map(String::from)];
    for node in nodes {
        let commands: Vec<&str> =
            node["commands"].as_array().map(|c| c.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
        let since = node["connectedAtMs"].as_u64().map_or("-".to_string(), |at| {
            format!("{} ago", human_duration(Duration::from_millis(now_ms.saturating_sub(at))))
        });
        rows.push([
            text(&node["nodeId"]),
            text(&node["displayName"]),
            text(&node["platform"]),
            text(&node["version"]),
            commands.join(","),
            since,
        ]);
    }
    let mut widths = [0usize; 6];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut table = String::new();
    for row in &rows {
        let cells: Vec<String> = row.iter().zip(widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        table.push_str(cells.join("  ").trim_end());
        table.push('\n');
    }
    if nodes.is_empty() {
        table.push_str("(no nodes connected)\n");
    }
    table
}

/// "42s", "7m05s", "3h12m", "2d04h".
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// `goclaw invoke`: the node's result payload.
///
/// # Errors
/// The gateway's (or node's) error answer, or a connection problem.
pub fn invoke(
    target: &Target,
    node: &str,
    command: &str,
    params: Value,
    timeout: Duration,
) -> Result<Value, ClientError> {
    let mut client = target.connect(&Stop::default())?;
    let params = json!({
        "nodeId": node, "command": command, "params": params,
        "timeoutMs": timeout.as_millis() as u64, "idempotencyKey": uuid::Uuid::new_v4().to_string(),
    });
    let answer = client.request("node.invoke", params, timeout + INVOKE_SLACK);
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
pub fn watch(target: &Target, as_json: bool, stop: &Stop, out: &mut impl Write) -> Result<(), ClientError> {
    let mut client = match target.connect(stop) {
        // Interrupted while waiting to be let in: the same as after.
        Err(ClientError::RefusedForNow { .. }) if stop.is_set() => return Ok(()),
        connected => connected?,
    };
    let write_failed = |e: io::Error| ClientError::Connection(format!("cannot write the output: {e}"));
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
    use std::io::Read;
    use std::net::TcpListener;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::thread;

    /// A fake gateway that answers every upgrade with `answer`; returns its
    /// target and the count of upgrade requests it has seen.
    fn refusing(answer: &'static str) -> (Target, Arc<AtomicUsize>) {
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
        (Target { endpoint: Endpoint::parse(&url).unwrap(), token: None }, seen)
    }

    #[test]
    fn a_refusal_for_now_is_retried_a_bounded_number_of_times() {
        let (target, seen) =
            refusing("HTTP/1.1 503 Service Unavailable\r\nRetry-After: 0\r\nContent-Length: 0\r\n\r\n");
        let started = Instant::now();
        let Err(ClientError::RefusedForNow { message, retry_after }) = target.connect(&Stop::default()) else {
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
            let (target, seen) = refusing(answer);
            let started = Instant::now();
            let Err(ClientError::RefusedForNow { message, .. }) = target.connect(&Stop::default()) else {
                panic!("not refused")
            };
            assert_eq!(seen.load(Ordering::SeqCst), 1);
            assert!(message.contains(status) && message.contains(&format!("retry after {seconds} s")), "{message}");
            assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
        }
    }

    #[test]
    fn other_refusals_are_not_retried_and_a_stop_ends_the_wait() {
        let (target, seen) = refusing("HTTP/1.1 404 Not Found\r\n\r\n");
        assert!(matches!(target.connect(&Stop::default()), Err(ClientError::Connection(_))));
        assert_eq!(seen.load(Ordering::SeqCst), 1);

        let (target, seen) = refusing("HTTP/1.1 503 Service Unavailable\r\nRetry-After: 20\r\n\r\n");
        let stop = Stop::default();
        stop.set();
        let Err(ClientError::RefusedForNow { message, .. }) = target.connect(&stop) else { panic!("not refused") };
        assert!(message.contains("interrupted"), "{message}");
        assert_eq!(seen.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn durations_read_like_a_person_wrote_them() {
        let cases = [(0, "0s"), (59, "59s"), (60, "1m00s"), (425, "7m05s"), (11_520, "3h12m"), (187_200, "2d04h")];
        for (secs, text) in cases {
            assert_eq!(human_duration(Duration::from_secs(secs)), text);
        }
    }

    #[test]
    fn the_table_is_aligned() {
        let nodes = vec![
            json!({"nodeId": "kitchen-pi", "displayName": "Kitchen Pi", "platform": "linux", "version": "0.1.0",
                   "commands": ["device.status", "echo"], "connectedAtMs": 1_000}),
            json!({"nodeId": "n2", "displayName": "N", "platform": "linux", "version": "0.1.0", "commands": [],
                   "connectedAtMs": 61_000}),
        ];
        let table = node_table(&nodes, 3_601_000);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(lines[0].starts_with("ID          NAME"), "{table}");
        assert!(lines[1].contains("device.status,echo") && lines[1].ends_with("1h00m ago"), "{table}");
        assert_eq!(lines[1].find("linux"), lines[2].find("linux"), "{table}");
        assert_eq!(node_table(&[], 0), "ID  NAME  PLATFORM  VERSION  COMMANDS  CONNECTED\n(no nodes connected)\n");
    }
}
