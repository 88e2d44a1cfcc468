//! The metrics listener (SPEC §6) probed over HTTP: every series present at
//! zero from the first scrape, each moving when its event happens, health
//! and readiness, and the listener's own bounds.

mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::thread;
use std::time::Duration;

use serde_json::json;
use support::*;

/// GETs `path` from the metrics listener: (status, headers+body text).
fn get(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let answer = http(addr, &format!("{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n"));
    let status = answer.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, answer)
}

/// Every sample of a scrape: `name{labels}` → value.
fn scrape(addr: SocketAddr) -> HashMap<String, f64> {
    let (status, answer) = get(addr, "GET", "/metrics");
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("Content-Type: text/plain; version=0.0.4"), "{answer}");
    let body = answer.split_once("\r\n\r\n").unwrap().1;
    body.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (name, value) = line.rsplit_once(' ').unwrap();
            (name.to_string(), value.parse().unwrap())
        })
        .collect()
}

fn value(samples: &HashMap<String, f64>, name: &str) -> f64 {
    *samples.get(name).unwrap_or_else(|| panic!("{name} missing from the scrape"))
}

const DIRECTIONS: [&str; 2] = ["in", "out"];
const TYPES: [&str; 8] = ["req", "res", "event", "ping", "pong", "close", "binary", "invalid"];
const ERRORS: [&str; 7] = ["auth", "protocol", "rate_limit", "too_large", "timeout", "capacity", "io"];
const OUTCOMES: [&str; 5] = ["ok", "error", "timeout", "disconnected", "unavailable"];

#[test]
fn every_series_is_present_at_zero_from_the_first_scrape() {
    let gw = start(config());
    let samples = scrape(gw.metrics_addr().unwrap());
    for direction in DIRECTIONS {
        for kind in TYPES {
            let name = format!(r#"goclaw_messages_total{{direction="{direction}",type="{kind}"}}"#);
            assert_eq!(value(&samples, &name), 0.0, "{name}");
        }
    }
    for kind in ERRORS {
        assert_eq!(value(&samples, &format!(r#"goclaw_errors_total{{type="{kind}"}}"#)), 0.0);
    }
    for outcome in OUTCOMES {
        assert_eq!(value(&samples, &format!(r#"goclaw_invoke_duration_seconds_count{{outcome="{outcome}"}}"#)), 0.0);
    }
    assert_eq!(value(&samples, "goclaw_connected_clients"), 0.0);
    assert_eq!(value(&samples, "goclaw_nodes_connected"), 0.0);
    assert_eq!(value(&samples, "goclaw_max_connections"), 1024.0);
    let version = format!(r#"goclaw_build_info{{version="{}"}}"#, env!("CARGO_PKG_VERSION"));
    assert_eq!(value(&samples, &version), 1.0);
    for name in [
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_threads",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
        "process_cpu_seconds_total",
    ] {
        assert!(value(&samples, name) >= 0.0, "{name}");
    }
    assert!(value(&samples, "process_threads") >= 4.0);
}

#[test]
fn each_series_moves_when_its_event_happens() {
    let mut config = config();
    config.max_message_bytes = 2048;
    config.rate_limit_per_sec = 1.0;
    config.rate_burst = 12;
    config.max_connections = 5;
    config.handshake_timeout = Duration::from_millis(300);
    config.ping_period = Duration::from_millis(200);
    config.pong_wait = Duration::from_secs(5);
    let gw = start(config);
    let (addr, metrics) = (gw.local_addr(), gw.metrics_addr().unwrap());

    let mut node = node(addr, "m1", &["echo"]);
    let mut op = operator(addr);
    let after_connect = scrape(metrics);
    assert_eq!(value(&after_connect, "goclaw_max_connections"), 5.0);
    assert_eq!(value(&after_connect, "goclaw_connected_clients"), 2.0);
    assert_eq!(value(&after_connect, "goclaw_nodes_connected"), 1.0);

    // req in, res out, event out, an invoke ok.
    request(&mut op, "1", "node.invoke", json!({"nodeId": "m1", "command": "echo"}));
    let routed = recv_event(&mut node, "node.invoke.request");
    request(&mut node, "r", "node.invoke.result", json!({"id": routed["payload"]["id"], "ok": true}));
    recv_res(&mut op, "1");
    // invalid in; ping in and pong out; the heartbeat's ping out and the client's pong in.
    op.send(tungstenite::Message::text("garbage")).unwrap();
    recv(&mut op);
    op.send(tungstenite::Message::Ping(b"p".to_vec().into())).unwrap();
    let (mut saw_pong, mut saw_ping) = (false, false);
    while !(saw_pong && saw_ping) {
        match op.read().unwrap() {
            tungstenite::Message::Pong(_) => saw_pong = true,
            tungstenite::Message::Ping(_) => saw_ping = true,
            _ => {}
        }
    }
    op.flush().unwrap(); // sends tungstenite's queued answer to the server's ping
    assert!(
        wait_for(Duration::from_secs(5), || gw.metrics().messages(goclaw::Direction::In, goclaw::MsgType::Pong) > 0)
    );
    // binary in, close out; close in.
    node.send(tungstenite::Message::binary(vec![1, 2])).unwrap();
    assert_eq!(close_code(&recv_close(&mut node)), 1003);
    op.close(None).unwrap();
    assert!(wait_for(Duration::from_secs(5), || gw.active_connections() == 0));
    // auth, too_large, timeout (handshake), rate_limit (429), capacity (503).
    let mut bad = ws(addr);
    let mut params = connect_params("operator", "x", &[]);
    params["auth"]["token"] = json!("nope");
    assert_eq!(hello(&mut bad, params)["error"]["details"]["code"], "UNAUTHORIZED");
    recv_close(&mut bad);
    let mut big = operator(addr);
    big.send(tungstenite::Message::text("x".repeat(4096))).unwrap();
    assert_eq!(close_code(&recv_close(&mut big)), 1009);
    let mut slow = tcp(addr, None, None);
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = slow.read(&mut [0u8; 16]);
    let holders: Vec<_> = (0..5).map(|_| tcp(addr, None, None)).collect();
    assert!(wait_for(Duration::from_secs(5), || gw.active_connections() == 5));
    assert!(status_line(addr).starts_with("HTTP/1.1 503"));
    drop(holders);
    while !status_line(addr).starts_with("HTTP/1.1 429") {}

    let samples = scrape(metrics);
    let messages = |direction: &str, kind: &str| {
        value(&samples, &format!(r#"goclaw_messages_total{{direction="{direction}",type="{kind}"}}"#))
    };
    for (direction, kind) in [
        ("in", "req"),
        ("out", "res"),
        ("out", "event"),
        ("in", "invalid"),
        ("in", "ping"),
        ("out", "pong"),
        ("out", "ping"),
        ("in", "pong"),
        ("in", "binary"),
        ("out", "close"),
        ("in", "close"),
    ] {
        assert!(messages(direction, kind) >= 1.0, "messages {direction} {kind}");
    }
    for kind in ERRORS.iter().filter(|&&k| k != "io") {
        assert!(value(&samples, &format!(r#"goclaw_errors_total{{type="{kind}"}}"#)) >= 1.0, "errors {kind}");
    }
    assert_eq!(value(&samples, r#"goclaw_invoke_duration_seconds_count{outcome="ok"}"#), 1.0);
    assert_eq!(value(&samples, "goclaw_connected_clients"), 0.0);
    assert_eq!(value(&samples, "goclaw_nodes_connected"), 0.0);
}

/// Opens a connection, sends an upgrade request, returns the status line
/// (a 101 is followed by WebSocket frames, so only the head is read).
fn status_line(addr: SocketAddr) -> String {
    let mut stream = tcp(addr, None, None);
    stream.write_all(upgrade_request("/", "").as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).trim_end().to_string()
}

#[test]
fn health_readiness_and_paths() {
    let mut config = config();
    config.shutdown_timeout = Duration::from_secs(30);
    let gw = start(config);
    let metrics = gw.metrics_addr().unwrap();
    assert_eq!(get(metrics, "GET", "/healthz").0, 200);
    assert_eq!(get(metrics, "GET", "/readyz").0, 200);
    assert_eq!(get(metrics, "GET", "/nope").0, 404);
    assert_eq!(get(metrics, "GET", "/").0, 404);
    let (status, answer) = get(metrics, "POST", "/metrics");
    assert_eq!(status, 405);
    assert!(answer.contains("Allow: GET, HEAD"), "{answer}");
    let (status, answer) = get(metrics, "HEAD", "/metrics");
    assert_eq!(status, 200);
    assert!(answer.ends_with("\r\n\r\n"), "HEAD has no body: {answer}");
    assert_eq!(get(metrics, "GET", "/readyz?verbose=1").0, 200);
    // The metrics endpoints do not exist on the WebSocket port.
    assert!(http(gw.local_addr(), "GET /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));

    // A client that does not answer the close keeps the drain going: /readyz
    // says 503 all along, /healthz stays 200.
    let deaf = operator(gw.local_addr());
    let stopping = thread::spawn(move || gw.shutdown());
    assert!(wait_for(Duration::from_secs(5), || get(metrics, "GET", "/readyz").0 == 503));
    assert_eq!(get(metrics, "GET", "/healthz").0, 200);
    drop(deaf);
    stopping.join().unwrap();
    assert!(std::net::TcpStream::connect(metrics).is_err(), "metrics listener closed after shutdown");
}

#[test]
fn a_slowloris_on_the_metrics_port_cannot_pile_up_threads() {
    let gw = start(config());
    let metrics = gw.metrics_addr().unwrap();
    // Silent connections: each newcomer takes the slot of the oldest one
    // still silent, so the last four hold the slots and the first sixteen
    // are let go (cut, or refused if a slot did not free in time).
    let mut silent: Vec<_> = (0..20).map(|_| tcp(metrics, None, None)).collect();
    let mut let_go = 0;
    for stream in &mut silent[..16] {
        stream.set_read_timeout(Some(READ_LIMIT)).unwrap();
        let mut answer = String::new();
        if stream.read_to_string(&mut answer).is_ok() && (answer.is_empty() || answer.starts_with("HTTP/1.1 503")) {
            let_go += 1;
        }
    }
    assert_eq!(let_go, 16, "the sixteen oldest let go");
    for stream in &mut silent[16..] {
        stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        assert!(stream.read(&mut [0u8; 1]).is_err(), "the four newest still held");
    }
    // A probe still gets its answer, and hanging up frees the slots.
    assert_eq!(get(metrics, "GET", "/healthz").0, 200);
    drop(silent);
    assert!(wait_for(Duration::from_secs(5), || get(metrics, "GET", "/healthz").0 == 200));
}
