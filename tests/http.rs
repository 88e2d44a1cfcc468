//! The HTTP side of the WebSocket port (SPEC §3), probed from outside with
//! raw TCP: paths, plain HTTP, origins, per-IP rate limit, capacity,
//! slowloris at every stage.

mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::thread;
use std::time::{Duration, Instant};

use goclaw::ErrorType;
use serde_json::json;
use support::*;
use tungstenite::Message;

fn status(answer: &str) -> &str {
    answer.lines().next().unwrap_or("")
}

#[test]
fn paths_plain_http_and_bad_upgrades() {
    let gw = start(config());
    let addr = gw.local_addr();
    let cases = [
        (upgrade_request("/nope", ""), "HTTP/1.1 404 Not Found"),
        ("GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_string(), "HTTP/1.1 426 Upgrade Required"),
        ("GET /ws HTTP/1.1\r\nHost: x\r\n\r\n".to_string(), "HTTP/1.1 426 Upgrade Required"),
        (upgrade_request("/", "").replace("Version: 13", "Version: 7"), "HTTP/1.1 426 Upgrade Required"),
        (upgrade_request("/", "").replacen("GET", "POST", 1), "HTTP/1.1 405 Method Not Allowed"),
        (upgrade_request("/", "").replace("dGhlIHNhbXBsZSBub25jZQ==", "x"), "HTTP/1.1 400 Bad Request"),
        ("\u{1}\u{2}\r\n\r\n".to_string(), "HTTP/1.1 400 Bad Request"),
        (upgrade_request("/", &"X-Pad: y\r\n".repeat(40)), "HTTP/1.1 431 Request Header Fields Too Large"),
        (format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(9000)), "HTTP/1.1 431 Request Header Fields Too Large"),
    ];
    for (request, want) in cases {
        let answer = http(addr, &request);
        assert_eq!(status(&answer), want, "{request:?}");
        assert!(answer.contains("\r\nConnection: close\r\n"), "{answer}");
    }
    let upgrade_hint = http(addr, "GET / HTTP/1.1\r\n\r\n");
    assert!(upgrade_hint.contains("\r\nUpgrade: websocket\r\n"), "{upgrade_hint}");
    assert_eq!(gw.active_connections(), 0);
}

#[test]
fn origins_are_checked_only_when_configured() {
    let mut config = config();
    config.allowed_origins = vec!["https://dash.example".into()];
    let gw = start(config);
    let addr = gw.local_addr();
    let evil = http(addr, &upgrade_request("/", "Origin: https://evil.example\r\n"));
    assert_eq!(status(&evil), "HTTP/1.1 403 Forbidden");
    assert_eq!(gw.metrics().errors(ErrorType::Auth), 1);
    for extra in ["Origin: https://dash.example\r\n", "Origin: https://DASH.example/\r\n", ""] {
        let mut stream = tcp(addr, None, None);
        stream.write_all(upgrade_request("/ws", extra).as_bytes()).unwrap();
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).unwrap();
        assert_eq!(&head, b"HTTP/1.1 101", "{extra:?}");
    }
}

#[test]
fn per_ip_rate_limit_answers_429_before_any_thread() {
    let mut config = config();
    config.rate_limit_per_sec = 0.5;
    config.rate_burst = 2;
    let gw = start(config);
    let addr = gw.local_addr();
    let _a = ws(addr);
    let _b = ws(addr);
    let before = gw.active_connections();
    let answer = http(addr, &upgrade_request("/", ""));
    assert_eq!(status(&answer), "HTTP/1.1 429 Too Many Requests");
    assert!(answer.contains("\r\nRetry-After: 2\r\n"), "{answer}");
    assert_eq!(gw.active_connections(), before);
    assert_eq!(gw.metrics().errors(ErrorType::RateLimit), 1);

    // Another source address has its own bucket.
    let other = tcp(addr, Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))), None);
    let (mut ws, _) = upgrade(other);
    assert_eq!(hello(&mut ws, connect_params("operator", "o", &[]))["ok"], true);
    assert_eq!(gw.rate_limited_sources(), 2);
}

#[test]
fn at_capacity_answers_503_without_a_thread() {
    let mut config = config();
    config.max_connections = 2;
    let gw = start(config);
    let addr = gw.local_addr();
    let first = tcp(addr, None, None);
    let mut second = operator(addr);
    assert!(wait_for(Duration::from_secs(5), || gw.active_connections() == 2));
    let answer = http(addr, &upgrade_request("/", ""));
    assert_eq!(status(&answer), "HTTP/1.1 503 Service Unavailable");
    assert_eq!(gw.metrics().errors(ErrorType::Capacity), 1);
    assert_eq!(gw.active_connections(), 2);

    drop(first);
    assert!(wait_for(Duration::from_secs(5), || gw.active_connections() == 1));
    let _third = operator(addr);
    request(&mut second, "h", "health", json!(null));
    assert_eq!(recv_res(&mut second, "h")["payload"]["connections"], 2);
}

/// Asserts the server ends `stream` within `limit` (EOF or reset), reading
/// and discarding whatever it sends first.
fn closed_within(stream: &mut std::net::TcpStream, limit: Duration) -> Vec<u8> {
    stream.set_read_timeout(Some(limit)).unwrap();
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) if started.elapsed() < limit => return got,
            Ok(0) | Err(_) => panic!("not closed within {limit:?}"),
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[test]
fn slowloris_is_cut_at_the_handshake_deadline_at_every_stage() {
    let mut config = config();
    config.handshake_timeout = Duration::from_millis(500);
    let gw = start(config);
    let addr = gw.local_addr();
    let limit = Duration::from_secs(3);

    // 1. Connect and send nothing.
    let started = Instant::now();
    let mut silent = tcp(addr, None, None);
    assert!(closed_within(&mut silent, limit).is_empty());
    assert!(started.elapsed() >= Duration::from_millis(450), "{:?}", started.elapsed());

    // 2. Dribble the request one byte every 100 ms: the deadline still holds.
    let started = Instant::now();
    let mut dribbler = tcp(addr, None, None);
    let request = upgrade_request("/", "");
    let writer = dribbler.try_clone().unwrap();
    let dribble = thread::spawn(move || {
        let mut writer = writer;
        for byte in request.as_bytes() {
            if writer.write_all(&[*byte]).is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
    });
    assert!(closed_within(&mut dribbler, limit).is_empty());
    assert!(started.elapsed() < Duration::from_secs(2));
    dribble.join().unwrap();

    // 3. Upgrade, never send connect: close 1008 at the deadline.
    let (mut upgraded, _) = upgrade(tcp(addr, None, None));
    let close = recv_close(&mut upgraded);
    assert_eq!(close_code(&close), 1008);
    assert_eq!(close.unwrap().reason.as_str(), "handshake timeout");

    // 4. Upgrade, then half a frame header; 5. a header announcing 2^63 bytes.
    for partial in [vec![0x81u8], vec![0x81, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]] {
        let (mut upgraded, _) = upgrade(tcp(addr, None, None));
        upgraded.get_mut().write_all(&partial).unwrap();
        let answer = closed_within(upgraded.get_mut(), limit);
        // Either the 1008 timeout close or, for the huge header, 1009 at once.
        assert!(answer.starts_with(&[0x88]), "{answer:?}");
    }
    assert!(wait_for(Duration::from_secs(5), || gw.active_connections() == 0));
    assert!(gw.metrics().errors(ErrorType::Timeout) >= 3);
}

#[test]
fn upgrades_during_shutdown_get_503() {
    let gw = start(config());
    let addr = gw.local_addr();
    let mut early = tcp(addr, None, None);
    let mut op = operator(addr);
    assert!(wait_for(Duration::from_secs(5), || gw.active_connections() == 2));
    let stopping = thread::spawn(move || gw.shutdown());
    recv_event(&mut op, "shutdown");
    early.write_all(upgrade_request("/", "").as_bytes()).unwrap();
    let mut answer = String::new();
    early.read_to_string(&mut answer).unwrap();
    assert_eq!(status(&answer), "HTTP/1.1 503 Service Unavailable");
    assert_eq!(close_code(&recv_close(&mut op)), 1001);
    let report = stopping.join().unwrap();
    assert_eq!(report.cut, 0);
}

#[test]
fn frames_sent_right_after_the_request_are_kept() {
    let gw = start(config());
    let mut stream = tcp(gw.local_addr(), None, None);
    let mut bytes = upgrade_request("/ws", "").into_bytes();
    let connect =
        json!({"type": "req", "id": "c", "method": "connect", "params": connect_params("operator", "o", &[])});
    bytes.extend(client_frame(0x81, connect.to_string().as_bytes()));
    stream.write_all(&bytes).unwrap();
    let mut ws = tungstenite::WebSocket::from_raw_socket(stream, tungstenite::protocol::Role::Client, None);
    // The 101 head arrives first as a "frame" we skip by reading raw bytes.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        ws.get_mut().read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    let mut texts = Vec::new();
    while texts.len() < 2 {
        if let Message::Text(text) = ws.read().unwrap() {
            texts.push(serde_json::from_str::<serde_json::Value>(&text).unwrap());
        }
    }
    assert_eq!(texts[0]["event"], "connect.challenge");
    assert_eq!(texts[1]["payload"]["type"], "hello-ok", "{}", texts[1]);
}
