//! Issue 11, "hostile world, round two": every bound the outside attack run
//! found missing, checked from outside the gateway with real clients. Each
//! test names the item it covers; each failed on the code before the fix.

mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::thread;
use std::time::{Duration, Instant};

use goclaw::{ErrorType, InvokeOutcome};
use serde_json::{Value, json};
use support::*;
use tungstenite::Message;

fn code(res: &Value) -> &str {
    res["error"]["details"]["code"].as_str().unwrap_or_default()
}

/// Reads every text frame until the response `id`, asserting each is at
/// most `max` bytes; returns the response.
fn response_within(ws: &mut Client, id: &str, max: usize) -> Value {
    loop {
        match ws.read().expect("a frame") {
            Message::Text(text) => {
                assert!(text.len() <= max, "a frame of {} bytes, maxPayload {max}", text.len());
                let frame: Value = serde_json::from_str(&text).unwrap();
                if frame["id"] == id {
                    return frame;
                }
            }
            Message::Close(frame) => panic!("closed: {frame:?}"),
            _ => {}
        }
    }
}

/// Item 1: no frame larger than maxPayload; node.list pages; a node's
/// declared commands are bounded.
#[test]
fn node_list_pages_within_max_payload() {
    const MAX: usize = 16 * 1024;
    let mut small = config();
    small.max_message_bytes = MAX;
    let gw = start(small);
    let addr = gw.local_addr();
    let commands: Vec<String> = (0..60).map(|i| format!("command.{i:03}.{}", "c".repeat(90))).collect();
    let commands: Vec<&str> = commands.iter().map(String::as_str).collect();
    let _nodes: Vec<Client> = (0..40).map(|i| node(addr, &format!("n{i:02}"), &commands)).collect();
    let mut op = operator(addr);
    let (mut seen, mut cursor, mut pages) = (Vec::new(), Value::Null, 0);
    loop {
        let params = if cursor.is_null() { json!({}) } else { json!({"cursor": cursor}) };
        request(&mut op, "l", "node.list", params);
        let page = response_within(&mut op, "l", MAX);
        seen.extend(page["payload"]["nodes"].as_array().unwrap().iter().map(|n| n["nodeId"].clone()));
        pages += 1;
        cursor = page["payload"]["nextCursor"].clone();
        if cursor.is_null() {
            break;
        }
    }
    assert_eq!(seen.len(), 40, "{pages} pages");
    assert!(pages > 1);
    // 256 commands of 128 bytes each (what used to make 300 nodes a 10 MB
    // list): refused, at the default maxPayload too.
    let roomy = start(config());
    let huge: Vec<String> = (0..256).map(|i| format!("{i:03}{}", "x".repeat(125))).collect();
    let huge: Vec<&str> = huge.iter().map(String::as_str).collect();
    let mut ws = ws(roomy.local_addr());
    let res = hello(&mut ws, connect_params("node", "greedy", &huge));
    assert_eq!((res["ok"].clone(), code(&res)), (json!(false), "INVALID_REQUEST"), "{res}");
}

/// Items 2, 3 and 9: a node.invoke.request over maxPayload, params and
/// results no strict parser takes: refused, never forwarded; an answer
/// over maxPayload becomes TOO_LARGE; the node stays connected.
#[test]
fn invokes_and_results_never_exceed_max_payload_or_carry_unparsable_json() {
    const MAX: usize = 64 * 1024;
    let mut config = config();
    config.max_message_bytes = MAX;
    let gw = start(config);
    let addr = gw.local_addr();
    let mut node = node(addr, "pi", &["echo"]);
    let mut op = operator(addr);
    // Quotes double each time they are escaped: 20 KiB of them are 40 KiB
    // of params and 80 KiB of paramsJSON.
    let quotes = "\"".repeat(20 * 1024);
    request(&mut op, "big", "node.invoke", json!({"nodeId": "pi", "command": "echo", "params": quotes}));
    assert_eq!(code(&response_within(&mut op, "big", MAX)), "TOO_LARGE");
    let deep = format!(r#"{{"nodeId":"pi","command":"echo","params":{}{}}}"#, "[".repeat(127), "]".repeat(127));
    for raw in [
        deep.as_str(),
        r#"{"nodeId":"pi","command":"echo","params":"\ud800"}"#,
        r#"{"nodeId":"pi","command":"echo","params":1e400}"#,
    ] {
        op.send(Message::text(format!(r#"{{"type":"req","id":"raw","method":"node.invoke","params":{raw}}}"#)))
            .unwrap();
        assert_eq!(code(&response_within(&mut op, "raw", MAX)), "INVALID_REQUEST");
    }
    // A result of exactly maxPayload bytes of frame, from a node whose long
    // id and command make the wrapped answer larger: the operator gets
    // TOO_LARGE instead.
    let (long_id, long_command) = ("n".repeat(100), "c".repeat(100));
    let mut long = node_from(addr, None, &long_id, &[&long_command]);
    request(&mut op, "r", "node.invoke", json!({"nodeId": long_id, "command": long_command}));
    let routed = recv_event(&mut long, "node.invoke.request");
    let head = json!({"type": "req", "id": "x", "method": "node.invoke.result",
        "params": {"id": routed["payload"]["id"], "ok": true, "payload": ""}})
    .to_string();
    let filler = "y".repeat(MAX - head.len());
    let result = head.replacen(r#""payload":"""#, &format!(r#""payload":"{filler}""#), 1);
    assert_eq!(result.len(), MAX);
    long.send(Message::text(result)).unwrap();
    assert_eq!(code(&response_within(&mut op, "r", MAX)), "TOO_LARGE");
    // A payloadJSON result that fits alone but not beside its parsed
    // `payload`: the answer carries `payload` alone.
    request(&mut op, "j", "node.invoke", json!({"nodeId": "pi", "command": "echo"}));
    let routed = recv_event(&mut node, "node.invoke.request");
    let text = json!("z".repeat(40 * 1024)).to_string();
    send(
        &mut node,
        &json!({"type": "req", "id": "j", "method": "node.invoke.result",
        "params": {"id": routed["payload"]["id"], "ok": true, "payloadJSON": text}}),
    );
    let answer = response_within(&mut op, "j", MAX);
    assert_eq!(answer["payload"]["payload"].as_str().map(str::len), Some(40 * 1024));
    assert!(answer["payload"].get("payloadJSON").is_none());
    // A result no strict parser takes is refused to the node, not forwarded.
    request(&mut op, "s", "node.invoke", json!({"nodeId": "pi", "command": "echo", "timeoutMs": 500}));
    let routed = recv_event(&mut node, "node.invoke.request");
    node.send(Message::text(format!(
        r#"{{"type":"req","id":"bad","method":"node.invoke.result","params":{{"id":"{}","ok":true,"payload":1e99999}}}}"#,
        routed["payload"]["id"].as_str().unwrap()
    )))
    .unwrap();
    assert_eq!(code(&recv_res(&mut node, "bad")), "INVALID_REQUEST");
    assert_eq!(code(&response_within(&mut op, "s", MAX)), "TIMEOUT");
    // The node is still there.
    request(&mut node, "h", "health", json!(null));
    assert_eq!(recv_res(&mut node, "h")["ok"], true);
    assert!(routed["payload"].get("params").is_none());
}

/// Items 4 and 5: error messages are short and never quote the input, the
/// token included, whatever field it was put in.
#[test]
fn errors_never_quote_the_input_or_the_token() {
    let gw = start(config());
    let addr = gw.local_addr();
    let huge = "9".repeat(500 * 1024);
    let mut in_auth = connect_params("node", "n", &[]);
    in_auth["auth"] = json!(TOKEN);
    let mut in_number = connect_params("node", "n", &[]);
    in_number["minProtocol"] = json!(TOKEN);
    let mut huge_number = connect_params("node", "n", &[]);
    huge_number["minProtocol"] = json!(huge);
    for params in [in_auth, in_number, huge_number] {
        let mut ws = ws(addr);
        send(&mut ws, &json!({"type": "req", "id": "c", "method": "connect", "params": params}));
        let text = match ws.read().unwrap() {
            Message::Text(text) => text.to_string(),
            other => panic!("{other:?}"),
        };
        assert!(text.len() < 600, "{} bytes", text.len());
        assert!(!text.contains(TOKEN), "{text}");
        let res: Value = serde_json::from_str(&text).unwrap();
        assert!(res["error"]["message"].as_str().unwrap().len() <= 256);
    }
    // A whole frame that is a huge JSON string: not quoted back either.
    let mut ws = ws(addr);
    ws.send(Message::text(json!(huge).to_string())).unwrap();
    let res = recv(&mut ws);
    assert!(res.to_string().len() < 600, "{res}");
}

/// Item 6: idle sockets on the metrics port do not keep /healthz from being
/// answered.
#[test]
fn health_answers_however_many_idle_sockets_hold_the_metrics_port() {
    let gw = start(config());
    let metrics = gw.metrics_addr().unwrap();
    let idle: Vec<_> = (0..8).map(|_| tcp(metrics, None, None)).collect();
    for _ in 0..5 {
        assert!(http(metrics, "GET /healthz HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200"));
        assert!(http(metrics, "GET /readyz HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200"));
    }
    drop(idle);
}

/// Item 7: a few unauthenticated connections per source; the slots stay
/// for everyone else.
#[test]
fn unauthenticated_connections_are_bounded_per_source() {
    let mut config = config();
    config.max_unauthenticated_per_source = 8;
    config.max_connections = 20;
    let gw = start(config);
    let addr = gw.local_addr();
    let attacker = Some(IpAddr::V4(Ipv4Addr::new(127, 0, 9, 9)));
    // Authenticated clients do not count against their source.
    let _authenticated: Vec<_> = (0..4).map(|_| operator_from(addr, attacker)).collect();
    let held: Vec<_> = (0..8).map(|_| tcp(addr, attacker, None)).collect();
    assert!(wait_for(Duration::from_secs(5), || gw.active_connections() == 12));
    let mut refused = tcp(addr, attacker, None);
    refused.write_all(upgrade_request("/", "").as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = refused.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    // Someone else still gets in.
    let _op = operator(addr);
    drop(held);
}

/// Item 7: at `--max-connections`, connections held open before `connect`
/// from many addresses give their slots to newcomers once they have had a
/// second; authenticated clients are never cut for them.
#[test]
fn connections_held_before_connect_make_room_for_newcomers() {
    let mut config = config();
    config.max_unauthenticated_per_source = 8;
    config.max_connections = 20;
    let gw = start(config);
    let addr = gw.local_addr();
    let mut authenticated: Vec<_> = (0..4).map(|_| operator(addr)).collect();
    let mut held: Vec<std::net::TcpStream> = (0..16).map(|i| tcp(addr, source(1 + i / 8), None)).collect();
    assert!(wait_for(Duration::from_secs(5), || gw.active_connections() == 20));
    // Too young to be cut: the newcomer is refused.
    let mut early = tcp(addr, source(9), None);
    early.write_all(upgrade_request("/", "").as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = early.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    // A second on, newcomers get in, each in place of the oldest one held.
    std::thread::sleep(goclaw::gateway::UNAUTHENTICATED_GRACE);
    authenticated.extend((0..3).map(|i| operator_from(addr, source(10 + i))));
    let cut = held[..3].iter_mut().all(|stream| {
        stream.set_read_timeout(Some(READ_LIMIT)).unwrap();
        matches!(stream.read(&mut [0u8; 1]), Ok(0) | Err(_))
    });
    assert!(cut, "the oldest held connections were cut");
    for op in &mut authenticated {
        request(op, "h", "health", json!(null));
        assert_eq!(recv_res(op, "h")["ok"], true);
    }
}

/// Behind a trusted proxy (`--trusted-proxy`) the per-address bounds count
/// the client its `X-Forwarded-For` names, not the proxy: one client
/// holding its eight unauthenticated connections does not lock out the
/// others behind the same proxy. An untrusted peer's header is ignored.
#[test]
fn behind_a_trusted_proxy_each_client_has_its_own_bounds() {
    let mut config = config();
    config.max_unauthenticated_per_source = 8;
    config.trusted_proxies = goclaw::gateway::config::TrustedProxies::new(vec![("127.0.0.1".parse().unwrap(), 32)]);
    let gw = start(config);
    let addr = gw.local_addr();
    let through = |client: &str| {
        let mut stream = tcp(addr, None, None);
        stream.write_all(upgrade_request("/ws", &format!("X-Forwarded-For: {client}\r\n")).as_bytes()).unwrap();
        stream
    };
    let status = |stream: &mut std::net::TcpStream| {
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).unwrap();
        String::from_utf8_lossy(&head).into_owned()
    };
    let mut held: Vec<_> = (0..8).map(|_| through("203.0.113.7")).collect();
    for stream in &mut held {
        assert_eq!(status(stream), "HTTP/1.1 101");
    }
    assert_eq!(status(&mut through("203.0.113.7")), "HTTP/1.1 429");
    assert_eq!(status(&mut through("198.51.100.1, 203.0.113.8")), "HTTP/1.1 101");
    // An untrusted peer (127.0.0.2) names no one: counted as itself.
    let mut direct: Vec<_> = (0..9)
        .map(|_| {
            let mut stream = tcp(addr, source(2), None);
            stream.write_all(upgrade_request("/ws", "X-Forwarded-For: 192.0.2.99\r\n").as_bytes()).unwrap();
            stream
        })
        .collect();
    let statuses: Vec<String> = direct.iter_mut().map(status).collect();
    assert_eq!(statuses.iter().filter(|s| *s == "HTTP/1.1 429").count(), 1, "{statuses:?}");
    // Pairing sees the client too: its request's remoteIp, its bound.
    let device = Device::new();
    let (mut ws, challenge) = upgrade_with(tcp(addr, None, None), &[("X-Forwarded-For", "203.0.113.9")]);
    let res = hello(&mut ws, device.connect(&challenge, "node", Some(TOKEN), None));
    assert_eq!(res["error"]["code"], "NOT_PAIRED", "{res}");
    let mut op = operator(addr);
    request(&mut op, "p", "node.pair.list", json!({}));
    assert_eq!(recv_res(&mut op, "p")["payload"]["pending"][0]["remoteIp"], "203.0.113.9");
}

/// Item 8: control frames and pre-connect frames count against the
/// message rate; flooding closes 1008.
#[test]
fn a_pong_flood_before_connect_is_counted_and_closed() {
    let mut config = config();
    config.message_rate_per_sec = 50.0;
    config.message_burst = 50;
    config.flood_close_after = Duration::from_millis(500);
    let gw = start(config);
    let mut ws = ws(gw.local_addr());
    let pongs: Vec<u8> = client_frame(0x8a, b"").repeat(200);
    let started = Instant::now();
    let close = loop {
        assert!(started.elapsed() < Duration::from_secs(5), "not closed");
        if ws.get_mut().write_all(&pongs).is_err() {
            break None;
        }
        ws.get_mut().set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        match ws.read() {
            Ok(Message::Close(frame)) => break frame,
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => break None,
        }
    };
    if close.is_some() {
        assert_eq!(close_code(&close), 1008);
    }
    assert!(gw.metrics().errors(ErrorType::RateLimit) > 0);
}

/// Item 11: close codes RFC 6455 forbids are protocol errors.
#[test]
fn forbidden_close_codes_are_counted() {
    let gw = start(config());
    for forbidden in [999u16, 1005, 1006, 5000] {
        let mut ws = operator(gw.local_addr());
        ws.get_mut().write_all(&client_frame(0x88, &forbidden.to_be_bytes())).unwrap();
        assert_eq!(close_code(&recv_close(&mut ws)), 1002, "{forbidden}");
    }
    assert!(wait_for(Duration::from_secs(2), || gw.metrics().errors(ErrorType::Protocol) >= 4));
}

/// Item 12: while shutdown drains, new connections get 503, not a refusal.
#[test]
fn new_connections_get_503_while_shutdown_drains() {
    let mut config = config();
    config.shutdown_timeout = Duration::from_secs(3);
    let gw = start(config);
    let addr = gw.local_addr();
    // A client that never answers the close keeps the drain going.
    let deaf = upgrade(tcp(addr, None, None)).0;
    let mut op = operator(addr);
    let stopping = thread::spawn(move || gw.shutdown());
    recv_event(&mut op, "shutdown");
    let answer = http(addr, &upgrade_request("/", ""));
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    drop(deaf);
    stopping.join().unwrap();
}

/// Item 13: obs-text in an unrelated header, an absolute-form target.
#[test]
fn lenient_http_the_rfc_allows() {
    let gw = start(config());
    let addr = gw.local_addr();
    let mut stream = tcp(addr, None, None);
    let mut request = upgrade_request("http://gateway.example/ws", "").into_bytes();
    let at = request.len() - 2;
    request.splice(at..at, b"User-Agent: caf\xe9\r\nCookie: a=\xff\r\n".iter().copied());
    stream.write_all(&request).unwrap();
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 101");
}

/// Item 14: ids and labels with control or invisible characters.
#[test]
fn invisible_characters_are_refused_in_ids_and_labels() {
    let gw = start(config());
    for (id, name) in [("a\u{202e}b", "ok"), ("ok", "x\u{200b}y"), ("\u{feff}n", "ok"), ("n", "line\u{2028}break")] {
        let mut ws = ws(gw.local_addr());
        let mut params = connect_params("node", id, &[]);
        params["client"]["displayName"] = json!(name);
        let res = hello(&mut ws, params);
        assert_eq!(code(&res), "INVALID_REQUEST", "{id:?} {name:?}: {res}");
    }
}

/// Item 15: an invoke dropped because its operator left is recorded.
#[test]
fn an_invoke_whose_operator_left_is_recorded() {
    let gw = start(config());
    let addr = gw.local_addr();
    let mut node = node(addr, "pi", &["echo"]);
    let mut op = operator(addr);
    request(&mut op, "1", "node.invoke", json!({"nodeId": "pi", "command": "echo"}));
    recv_event(&mut node, "node.invoke.request");
    drop(op);
    assert!(wait_for(Duration::from_secs(5), || gw.metrics().invokes(InvokeOutcome::Abandoned) == 1));
}
