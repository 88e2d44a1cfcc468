//! Connection safety (SPEC §5) probed from outside: size limits, framing
//! errors and their RFC 6455 close codes, the pong deadline, the message
//! rate limit, and clients that never read.

mod support;

use std::io::{Read, Write};
use std::thread;
use std::time::{Duration, Instant};

use goclaw::ErrorType;
use serde_json::json;
use support::*;

fn expect_close_after(bytes: &[u8], code: u16, config: goclaw::Config) -> goclaw::Gateway {
    let gw = start(config);
    let mut ws = operator(gw.local_addr());
    ws.get_mut().write_all(bytes).unwrap();
    let close = recv_close(&mut ws);
    assert_eq!(close_code(&close), code, "after {:02x?}", &bytes[..bytes.len().min(16)]);
    gw
}

#[test]
fn oversized_messages_close_1009() {
    let mut config = config();
    config.max_message_bytes = 4096;
    // One frame over the limit.
    let gw = expect_close_after(&client_frame(0x81, &vec![b'a'; 4097]), 1009, config.clone());
    assert_eq!(gw.metrics().errors(ErrorType::TooLarge), 1);
    // Continuation frames each under the limit, together over it.
    let mut fragments = client_frame(0x01, &vec![b'a'; 3000]);
    fragments.extend(client_frame(0x00, &vec![b'a'; 3000]));
    expect_close_after(&fragments, 1009, config.clone());
    // A length header far over the limit and no body: refused on the header.
    let mut header = vec![0x81, 0xff];
    header.extend_from_slice(&(1u64 << 40).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    expect_close_after(&header, 1009, config.clone());
    // Exactly at the limit is fine.
    let gw = start(config);
    let mut ws = operator(gw.local_addr());
    let padding = "x".repeat(4096 - 60);
    let frame = format!(r#"{{"type":"req","id":"1","method":"health","pad":"{padding}"}}"#);
    let frame = format!("{frame}{}", " ".repeat(4096 - frame.len()));
    assert_eq!(frame.len(), 4096);
    ws.get_mut().write_all(&client_frame(0x81, frame.as_bytes())).unwrap();
    assert_eq!(recv_res(&mut ws, "1")["ok"], true);
}

#[test]
fn framing_errors_close_with_rfc6455_codes() {
    let health = json!({"type": "req", "id": "1", "method": "health"}).to_string();
    let mut unmasked = vec![0x81, health.len() as u8];
    unmasked.extend_from_slice(health.as_bytes());
    let mut split_utf8 = client_frame(0x01, &[b'"', 0xe2, 0x82]);
    split_utf8.extend(client_frame(0x80, &[0x28, b'"']));
    let mut bad_close_code = client_frame(0x88, &999u16.to_be_bytes());
    bad_close_code.truncate(bad_close_code.len());
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("unmasked frame", unmasked, 1002),
        ("reserved bit", client_frame(0x81 | 0x40, health.as_bytes()), 1002),
        ("reserved data opcode", client_frame(0x83, b"x"), 1002),
        ("reserved control opcode", client_frame(0x8b, b""), 1002),
        ("fragmented ping", client_frame(0x09, b"x"), 1002),
        ("control frame over 125 bytes", client_frame(0x89, &[b'p'; 126]), 1002),
        ("continuation without start", client_frame(0x80, b"x"), 1002),
        ("invalid UTF-8", client_frame(0x81, &[b'"', 0xff, b'"']), 1007),
        ("invalid UTF-8 across fragments", split_utf8, 1007),
        ("close with invalid code", bad_close_code, 1002),
        ("binary frame", client_frame(0x82, b"\x00\x01"), 1003),
    ];
    let gw = start(config());
    for (what, bytes, code) in cases {
        let mut ws = operator(gw.local_addr());
        ws.get_mut().write_all(&bytes).unwrap();
        assert_eq!(close_code(&recv_close(&mut ws)), code, "{what}");
    }
    assert!(wait_for(Duration::from_secs(5), || gw.active_connections() == 0));
    assert!(gw.metrics().errors(ErrorType::Protocol) >= 10);
}

#[test]
fn a_silent_client_is_closed_at_the_pong_deadline_and_a_live_one_is_not() {
    let mut config = config();
    config.pong_wait = Duration::from_millis(800);
    config.ping_period = Duration::from_millis(300);
    let gw = start(config);
    let addr = gw.local_addr();
    let mut live = operator(addr);
    let silent = operator(addr);
    let started = Instant::now();

    // The live client reads (so tungstenite answers pings) for three pong waits.
    live.get_mut().set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    while started.elapsed() < Duration::from_millis(2400) {
        match live.read() {
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("live client dropped: {e}"),
        }
    }
    live.get_mut().set_read_timeout(Some(READ_LIMIT)).unwrap();
    request(&mut live, "h", "health", json!(null));
    assert_eq!(recv_res(&mut live, "h")["payload"]["connections"], 1, "the silent one is gone");

    // The silent client read nothing: its buffer holds pings, then close 1008.
    let mut silent = silent;
    let (code, reason) = raw_close(silent.get_mut()).expect("a close frame");
    assert_eq!((code, reason.as_str()), (1008, "pong timeout"));
    assert!(gw.metrics().errors(ErrorType::Timeout) >= 1);
}

#[test]
fn a_trickling_client_cannot_stretch_the_pong_deadline() {
    let mut config = config();
    config.pong_wait = Duration::from_millis(800);
    config.ping_period = Duration::from_millis(700);
    let gw = start(config);
    let mut ws = operator(gw.local_addr());
    let frame = client_frame(0x81, json!({"type": "req", "id": "1", "method": "health"}).to_string().as_bytes());
    let mut writer = ws.get_ref().try_clone().unwrap();
    let started = Instant::now();
    let trickle = thread::spawn(move || {
        for byte in frame {
            if writer.write_all(&[byte]).is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(200));
        }
    });
    assert_eq!(close_code(&recv_close(&mut ws)), 1008);
    assert!(started.elapsed() < Duration::from_millis(2000), "{:?}", started.elapsed());
    trickle.join().unwrap();
}

#[test]
fn a_flooding_client_is_rate_limited_then_closed() {
    let mut config = config();
    config.message_rate_per_sec = 20.0;
    config.message_burst = 5;
    config.flood_close_after = Duration::from_millis(600);
    let gw = start(config);
    let mut ws = operator(gw.local_addr());
    let mut ok = 0;
    let mut limited = 0;
    for i in 0..20 {
        request(&mut ws, &i.to_string(), "health", json!(null));
        let res = recv_res(&mut ws, &i.to_string());
        if res["ok"] == true {
            ok += 1;
        } else {
            assert_eq!(res["error"]["details"]["code"], "RATE_LIMITED", "{res}");
            limited += 1;
        }
    }
    // The burst of 5 counts the connect frame too (SPEC §5: every frame).
    assert!(ok >= 4 && limited >= 10, "ok {ok}, limited {limited}");
    // Keep flooding without a quiet second: closed with 1008.
    let started = Instant::now();
    let close = loop {
        let sent =
            ws.send(tungstenite::Message::text(json!({"type": "req", "id": "f", "method": "health"}).to_string()));
        assert!(sent.is_ok() && started.elapsed() < Duration::from_secs(5), "not closed");
        match ws.read() {
            Ok(tungstenite::Message::Close(frame)) => break frame,
            Ok(_) => {}
            Err(e) => panic!("{e}"),
        }
        thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(close_code(&close), 1008);
    assert!(gw.metrics().errors(ErrorType::RateLimit) >= 10);
}

#[test]
fn a_ping_flood_counts_against_the_message_rate() {
    let mut config = config();
    config.message_rate_per_sec = 20.0;
    config.message_burst = 5;
    config.flood_close_after = Duration::from_millis(600);
    let gw = start(config);
    let mut ws = operator(gw.local_addr());
    let ping = client_frame(0x89, b"p");
    let started = Instant::now();
    let writer = ws.get_ref().try_clone().unwrap();
    let flood = thread::spawn(move || {
        let mut writer = writer;
        while started.elapsed() < Duration::from_secs(5) {
            if writer.write_all(&ping).is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(2));
        }
    });
    let (code, reason) = raw_close(ws.get_mut()).expect("closed");
    assert_eq!((code, reason.as_str()), (1008, "rate limit exceeded"));
    assert!(started.elapsed() < Duration::from_secs(4));
    flood.join().unwrap();
    assert!(gw.metrics().errors(ErrorType::RateLimit) > 10);
}

/// SPEC §5: one slow or stalled client must not delay pings, ticks or invoke
/// routing for the others. 30 clients fire a burst of requests and then
/// never read their socket: 15 produce more output than their queue may
/// hold (cut on overflow), 15 less (only the write deadline can catch them).
/// Meanwhile a healthy operator and node keep invoking and ticking. A
/// blocking write on any shared path would stall for --write-wait (3 s);
/// every healthy round trip and tick gap must stay well below it.
#[test]
fn thirty_clients_that_never_read_do_not_delay_anyone() {
    let mut config = config();
    config.max_message_bytes = 16 * 1024; // output queue bound: 16 KiB + 64 KiB
    config.write_wait = Duration::from_secs(3);
    config.tick_interval = Duration::from_millis(100);
    config.pong_wait = Duration::from_secs(30);
    config.ping_period = Duration::from_millis(200);
    let gw = start(config);
    let addr = gw.local_addr();
    let mut node = node(addr, "healthy-node", &["echo"]);
    let mut op = operator(addr);

    let health = client_frame(0x81, json!({"type": "req", "id": "x", "method": "health"}).to_string().as_bytes());
    let mut stallers: Vec<Client> = (0..30)
        .map(|i| {
            let (mut ws, _) = upgrade(tcp(addr, None, Some(4096)));
            assert_eq!(hello(&mut ws, connect_params("operator", &format!("s{i}"), &[]))["ok"], true);
            // ~105 bytes of response per request. The kernel holds ~130 KiB
            // (64 KiB send buffer, doubled, and the client's 4 KiB receive
            // buffer); the queue 80 KiB more. 6000 overflow it, 1600 do not.
            let count = if i % 2 == 0 { 6000 } else { 1600 };
            let burst: Vec<u8> = health.iter().copied().cycle().take(health.len() * count).collect();
            ws.get_mut().write_all(&burst).unwrap();
            ws
        })
        .collect();

    let node_thread = thread::spawn(move || {
        for _ in 0..40 {
            let routed = recv_event(&mut node, "node.invoke.request");
            let id = routed["payload"]["id"].clone();
            request(&mut node, "r", "node.invoke.result", json!({"id": id, "ok": true, "payload": params_of(&routed)}));
        }
        node
    });
    let mut worst_round_trip = Duration::ZERO;
    let mut worst_tick_gap = Duration::ZERO;
    let mut last_tick = Instant::now();
    for i in 0..40 {
        let started = Instant::now();
        request(
            &mut op,
            &format!("i{i}"),
            "node.invoke",
            json!({"nodeId": "healthy-node", "command": "echo", "params": i}),
        );
        loop {
            let frame = recv(&mut op);
            if frame["event"] == "tick" {
                worst_tick_gap = worst_tick_gap.max(last_tick.elapsed());
                last_tick = Instant::now();
            } else if frame["id"] == format!("i{i}") {
                assert_eq!(invoke_payload(&frame), json!(i), "{frame}");
                break;
            }
        }
        worst_round_trip = worst_round_trip.max(started.elapsed());
        thread::sleep(Duration::from_millis(50));
    }
    let _node = node_thread.join().unwrap();
    eprintln!("worst invoke round trip {worst_round_trip:?}, worst tick gap {worst_tick_gap:?}");
    assert!(worst_round_trip < Duration::from_millis(1500), "worst invoke round trip {worst_round_trip:?}");
    assert!(worst_tick_gap < Duration::from_millis(1500), "worst tick gap {worst_tick_gap:?}");

    // Every staller is cut, by overflow or by the write deadline.
    assert!(wait_for(Duration::from_secs(10), || gw.active_connections() == 2), "{}", gw.active_connections());
    assert!(gw.metrics().errors(ErrorType::Timeout) >= 30);
    for staller in &mut stallers {
        let socket = staller.get_mut();
        socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut sink = Vec::new();
        let ended = match socket.read_to_end(&mut sink) {
            Ok(_) => true,
            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
        };
        assert!(ended, "a staller's socket is still open");
    }
    request(&mut op, "h", "health", json!(null));
    assert_eq!(recv_res(&mut op, "h")["payload"]["connections"], 2);
}
