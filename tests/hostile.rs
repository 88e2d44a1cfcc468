//! Hostile clients (issue "Hostile world"): every case bounded, loopback
//! only, self-stopping. Slowloris stages, framing errors and the 30
//! non-reading clients live in http.rs and safety.rs; this file adds memory
//! under size attacks, adversarial JSON, floods from many addresses,
//! pending-invoke bounds, node-id storms, frozen and killed client
//! processes, and a torture run that checks nothing is lost and every
//! resource returns to its baseline.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use goclaw::{ErrorType, InvokeOutcome};
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use support::*;
use tungstenite::Message;

/// Sends raw bytes after `connect` and waits for the connection to end.
fn attack(addr: SocketAddr, bytes: &[u8]) -> Client {
    attack_from(addr, None, bytes)
}

/// `attack` from a given loopback source address.
fn attack_from(addr: SocketAddr, from: Option<IpAddr>, bytes: &[u8]) -> Client {
    let mut ws = operator_from(addr, from);
    let _ = ws.get_mut().write_all(bytes);
    ws
}

#[test]
fn size_attacks_never_grow_memory_past_the_limit_per_connection() {
    const LIMIT: usize = 256 * 1024;
    let limit = LIMIT.to_string();
    let gateway = serve_binary(&["--max-message-size", &limit, "--rate-limit", "1000", "--rate-burst", "1000"]);
    let addr = gateway.addr;
    // Anonymous memory: what the gateway allocates. The whole RSS would
    // also count the binary's own code, paged in on first use (debug
    // build: 128-384 KiB here, varying from run to run), which has
    // nothing to do with what a client sends.
    let rss = || gateway.anon_kib() as usize * 1024;
    let baseline = rss();

    // Headers far over the limit, with no body: refused on the header.
    let mut header = vec![0x81, 0xff];
    header.extend_from_slice(&(1u64 << 62).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    let mut huge: Vec<Client> = (0..20).map(|_| attack(addr, &header)).collect();
    for ws in &mut huge {
        assert_eq!(close_code(&recv_close(ws)), 1009);
    }
    let after_headers = rss().saturating_sub(baseline);
    println!("size: anonymous RSS +{} KiB after refusing 20 headers announcing 2^62 bytes", after_headers / 1024);
    assert!(after_headers < 2 * LIMIT, "{after_headers} bytes more after refusing 2^62-byte headers");

    // Withheld bodies: each announces the limit and sends most of it; the
    // gateway holds what arrived, never more than the limit.
    let mut withheld = Vec::new();
    let mut frame_start = vec![0x81, 0xff];
    frame_start.extend_from_slice(&(LIMIT as u64).to_be_bytes());
    frame_start.extend_from_slice(&[0, 0, 0, 0]);
    for _ in 0..20 {
        let mut ws = operator(addr);
        ws.get_mut().write_all(&frame_start).unwrap();
        ws.get_mut().write_all(&vec![b'x'; LIMIT - 1024]).unwrap();
        withheld.push(ws);
    }
    assert!(wait_for(Duration::from_secs(5), || rss() > baseline + 10 * LIMIT), "bodies not buffered?");
    let grown = rss().saturating_sub(baseline);
    println!(
        "size: anonymous RSS +{} KiB for 20 connections holding {} KiB of a {} KiB frame each",
        grown / 1024,
        (LIMIT - 1024) / 1024,
        LIMIT / 1024
    );
    assert!(grown <= 20 * (LIMIT + 64 * 1024), "grew {grown} bytes for 20 connections of at most {LIMIT}");

    // Fragments that sum past the limit: 1009 at the fragment that crosses it.
    let mut fragments = Vec::new();
    for _ in 0..4 {
        fragments.extend(client_frame(if fragments.is_empty() { 0x01 } else { 0x00 }, &vec![b'y'; LIMIT / 3]));
    }
    let mut chunky = attack(addr, &fragments);
    assert_eq!(close_code(&recv_close(&mut chunky)), 1009);
    drop(withheld);
}

#[test]
fn slowloris_costs_one_thread_and_little_memory_each() {
    const HELD: usize = 200;
    let gateway = serve_binary(&["--handshake-timeout", "20s", "--rate-limit", "1000", "--rate-burst", "1000"]);
    let addr = gateway.addr;
    let (threads, fds, rss) = gateway.resources();
    // Every stage that holds a connection open before `connect`, in turn.
    let mut streams = Vec::new();
    let mut upgraded = Vec::new();
    for i in 0..HELD {
        match i % 4 {
            0 => streams.push(tcp(addr, source(i), None)),
            1 => {
                let mut stream = tcp(addr, source(i), None);
                stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
                streams.push(stream);
            }
            2 => upgraded.push(upgrade(tcp(addr, source(i), None)).0),
            _ => {
                let mut ws = upgrade(tcp(addr, source(i), None)).0;
                ws.get_mut().write_all(&[0x81]).unwrap();
                upgraded.push(ws);
            }
        }
    }
    assert!(wait_for(Duration::from_secs(5), || gateway.resources().0 == threads + HELD), "one thread each");
    let (_, held_fds, held_rss) = gateway.resources();
    assert_eq!(held_fds, fds + HELD, "one descriptor each");
    let each = (held_rss.saturating_sub(rss) * 1024) as usize / HELD;
    println!("slowloris: {each} bytes of RSS per held connection");
    assert!(each < goclaw::CONN_STACK_BYTES, "{each} bytes per connection, more than its thread's stack");
    drop((streams, upgraded));
    assert!(wait_for(Duration::from_secs(5), || gateway.resources().0 == threads), "threads back to baseline");
}

#[test]
fn adversarial_json_gets_an_answer_and_the_connection_stays_usable() {
    let gw = start(config());
    let mut op = operator(gw.local_addr());
    let long_method = "m".repeat(100_000);
    let wide = format!("[{}0]", "0,".repeat(100_000));
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    // (frame, expected code or None for ok, echoed id)
    let cases: Vec<(String, Option<&str>, Value)> = vec![
        (json!({"type": "req", "id": "m", "method": long_method}).to_string(), Some("UNKNOWN_METHOD"), json!("m")),
        (format!(r#"{{"type":"req","id":"w","method":"health","params":{wide}}}"#), None, json!("w")),
        (format!(r#"{{"type":"req","id":"d","method":"health","params":{deep}}}"#), None, json!("d")),
        (r#"{"type":"req","id":"n\u0000ul","method":"health"}"#.into(), None, json!("n\u{0}ul")),
        (r#"{"type":"req","id":"num","method":"node.invoke","params":{"nodeId":"x","command":"y","timeoutMs":1e999}}"#.into(), Some("INVALID_REQUEST"), json!("num")),
        (r#"{"type":"req","id":"big","method":"node.invoke","params":{"nodeId":"x","command":"y","timeoutMs":18446744073709551616}}"#.into(), Some("INVALID_REQUEST"), json!("big")),
        (r#"{"type":"req","id":"t","method":"node.invoke","params":"not an object"}"#.into(), Some("INVALID_REQUEST"), json!("t")),
        (r#"{"type":"req","id":"k","method":"node.invoke","params":{"nodeId":"a","nodeId":"b","command":"c"}}"#.into(), Some("INVALID_REQUEST"), json!("k")),
        (format!(r#"{{"type":"req","id":"{}","method":"health"}}"#, "i".repeat(5000)), Some("INVALID_REQUEST"), Value::Null),
        ("\u{0}\u{0}\u{0}".into(), Some("INVALID_REQUEST"), Value::Null),
    ];
    for (frame, code, id) in cases {
        op.send(Message::text(frame.clone())).unwrap();
        let res = recv(&mut op);
        let short = &frame[..frame.len().min(80)];
        assert_eq!(res["id"], id, "{short}: {res}");
        match code {
            Some(code) => assert_eq!(res["error"]["details"]["code"], code, "{short}: {res}"),
            None => assert_eq!(res["ok"], true, "{short}: {res}"),
        }
        assert!(res.to_string().len() < 1000, "the answer does not echo the input: {short}");
    }
    // A connect with 100k commands is refused before it is materialized.
    let mut ws = ws(gw.local_addr());
    let mut params = connect_params("node", "many", &[]);
    params["commands"] = serde_json::from_str(&format!("[{}\"c\"]", "\"c\",".repeat(100_000))).unwrap();
    let res = hello(&mut ws, params);
    assert_eq!(res["error"]["details"]["code"], "INVALID_REQUEST", "{res}");
    request(&mut op, "still", "health", json!(null));
    assert_eq!(recv_res(&mut op, "still")["ok"], true);
}

#[test]
fn connection_floods_from_many_addresses_stay_bounded() {
    let mut config = config();
    config.rate_limit_per_sec = 0.1;
    config.rate_burst = 2;
    config.max_connections = 300;
    config.handshake_timeout = Duration::from_millis(500);
    let gw = start(config);
    let addr = gw.local_addr();
    let mut statuses = std::collections::BTreeMap::new();
    for last in 2..=250u8 {
        let from = IpAddr::V4(Ipv4Addr::new(127, 0, 0, last));
        for _ in 0..3 {
            let mut stream = tcp(addr, Some(from), None);
            stream.write_all(upgrade_request("/", "").as_bytes()).unwrap();
            let mut head = [0u8; 12];
            stream.read_exact(&mut head).unwrap();
            *statuses.entry(String::from_utf8_lossy(&head[9..12]).into_owned()).or_insert(0) += 1;
        }
    }
    // Every attempt got an answer: two upgrades per address, the third 429.
    assert_eq!(statuses.get("101"), Some(&498), "{statuses:?}");
    assert_eq!(statuses.get("429"), Some(&249), "{statuses:?}");
    assert_eq!(gw.metrics().errors(ErrorType::RateLimit), 249);
    assert_eq!(gw.rate_limited_sources(), 249);
    // The upgraded ones never sent connect: gone at the handshake deadline.
    assert!(wait_for(Duration::from_secs(5), || gw.active_connections() == 0));
    // A legitimate client on another address is served throughout.
    let mut op = operator(addr);
    request(&mut op, "h", "health", json!(null));
    assert_eq!(recv_res(&mut op, "h")["ok"], true);
}

/// A node that reads everything and answers nothing; shut the returned
/// socket down to make it go away.
fn silent_node(addr: SocketAddr, id: &str) -> (thread::JoinHandle<usize>, std::net::TcpStream) {
    let mut ws = node(addr, id, &["wait"]);
    let handle = ws.get_ref().try_clone().unwrap();
    let reader = thread::spawn(move || {
        let mut routed = 0;
        while let Ok(message) = ws.read() {
            if let Message::Text(text) = message {
                routed += usize::from(text.contains("node.invoke.request"));
            }
        }
        routed
    });
    (reader, handle)
}

/// The next response, whatever its id, skipping events.
fn next_response(ws: &mut Client) -> Value {
    loop {
        let frame = recv(ws);
        if frame["type"] == "res" {
            return frame;
        }
    }
}

/// A `health` round trip: the connection's earlier requests are all handled.
fn sync(ws: &mut Client) {
    request(ws, "sync", "health", json!(null));
    assert_eq!(recv_res(ws, "sync")["ok"], true);
}

#[test]
fn pending_invokes_are_bounded_per_connection_and_in_total() {
    let gw = start(config());
    let addr = gw.local_addr();
    let (node, node_socket) = silent_node(addr, "silent");
    let invoke = json!({"nodeId": "silent", "command": "wait", "timeoutMs": 600_000});
    // One operator: 256 wait, the rest are refused at once.
    let mut first = operator(addr);
    for i in 0..300 {
        request(&mut first, &format!("a{i}"), "node.invoke", invoke.clone());
    }
    for i in 256..300 {
        let res = recv_res(&mut first, &format!("a{i}"));
        assert_eq!(res["error"]["details"]["code"], "RATE_LIMITED", "{res}");
        assert!(res["error"]["message"].as_str().unwrap().contains("this connection"), "{res}");
    }
    // Fifteen more fill the gateway's 4096; then everybody is refused.
    let mut others: Vec<Client> = (0..15).map(|_| operator(addr)).collect();
    for (n, op) in others.iter_mut().enumerate() {
        for i in 0..256 {
            request(op, &format!("b{n}-{i}"), "node.invoke", invoke.clone());
        }
        sync(op);
    }
    let mut last = operator(addr);
    request(&mut last, "over", "node.invoke", invoke.clone());
    let res = recv_res(&mut last, "over");
    assert_eq!(res["error"]["details"]["code"], "RATE_LIMITED", "{res}");
    assert!(res["error"]["message"].as_str().unwrap().contains("in the gateway"), "{res}");
    // The node goes: every pending invoke is answered once, NODE_DISCONNECTED.
    node_socket.shutdown(std::net::Shutdown::Both).unwrap();
    assert_eq!(node.join().unwrap(), 4096, "the node saw every routed invoke");
    let mut answered = 0;
    for (prefix, op) in
        others.iter_mut().enumerate().map(|(n, op)| (format!("b{n}-"), op)).chain([("a".into(), &mut first)])
    {
        // Answers come in the order the hub finds them, not request order.
        let ids: std::collections::BTreeSet<String> = (0..256)
            .map(|_| {
                let res = next_response(op);
                assert_eq!(res["error"]["details"]["code"], "NODE_DISCONNECTED", "{res}");
                res["id"].as_str().unwrap().to_string()
            })
            .collect();
        let expected: std::collections::BTreeSet<String> = (0..256).map(|i| format!("{prefix}{i}")).collect();
        assert_eq!(ids, expected, "each pending invoke answered exactly once");
        answered += ids.len();
        sync(op);
    }
    assert_eq!(answered, 4096);
    assert_eq!(gw.metrics().invokes(InvokeOutcome::Disconnected), 4096);
}

#[test]
fn a_node_id_storm_leaves_one_node_and_no_leaks() {
    let gw = start(config());
    let addr = gw.local_addr();
    let mut op = operator(addr);
    // Fifty connections claim the same id in a row; half answer the 4000
    // close, half never read again.
    let mut storm = Vec::new();
    for i in 0..50 {
        storm.push((i % 2 == 0, node(addr, "dup", &["echo"])));
    }
    let (_, mut survivor) = storm.pop().unwrap();
    for (polite, ws) in &mut storm {
        if *polite {
            assert_eq!(close_code(&recv_close(ws)), 4000);
        }
    }
    request(&mut op, "l", "node.list", json!(null));
    let nodes = recv_res(&mut op, "l")["payload"]["nodes"].clone();
    assert_eq!(nodes.as_array().map(Vec::len), Some(1), "{nodes}");
    assert_eq!(gw.metrics().nodes_connected(), 1);
    // The deaf ones are cut after the close-reply wait; only op and survivor remain.
    assert!(wait_for(Duration::from_secs(5), || gw.active_connections() == 2), "{}", gw.active_connections());
    request(&mut op, "i", "node.invoke", json!({"nodeId": "dup", "command": "echo"}));
    let routed = recv_event(&mut survivor, "node.invoke.request");
    request(&mut survivor, "r", "node.invoke.result", json!({"id": routed["payload"]["id"], "ok": true}));
    assert_eq!(recv_res(&mut op, "i")["ok"], true);
}

/// Set in a child process started by `client_process`: the address to
/// connect to as a node, which then answers pings until it is stopped.
const CHILD_ADDR: &str = "GOCLAW_TEST_CHILD_ADDR";

/// Not a test of its own: the body of a client process (see
/// `client_process`). Without the variable it returns at once.
#[test]
fn child_client_process() {
    let Ok(addr) = std::env::var(CHILD_ADDR) else { return };
    let mut ws = node(addr.parse().unwrap(), "child", &["echo"]);
    println!("child ready");
    std::io::stdout().flush().unwrap();
    // Reading drives tungstenite's answers to the gateway's pings.
    while ws.read().is_ok() {}
}

/// Starts this test binary again as a client process connected to `addr`
/// as node "child", and waits until it is connected.
fn client_process(addr: SocketAddr) -> std::process::Child {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["child_client_process", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ADDR, addr.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    if stdout.lines().map_while(Result::ok).any(|line| line.contains("child ready")) {
        return child;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the client process did not connect");
}

#[test]
fn a_frozen_client_process_is_dropped_at_the_pong_deadline() {
    let mut config = config();
    config.pong_wait = Duration::from_millis(1000);
    config.ping_period = Duration::from_millis(300);
    let gw = start(config);
    let mut child = client_process(gw.local_addr());
    // Alive and answering pings for two pong waits.
    thread::sleep(Duration::from_millis(2000));
    assert_eq!(gw.metrics().nodes_connected(), 1, "a live client must not be dropped");
    // Frozen mid-conversation: no FIN, no pongs.
    signal_child(&child, Signal::SIGSTOP);
    let frozen = Instant::now();
    assert!(wait_for(Duration::from_secs(5), || gw.metrics().nodes_connected() == 0));
    let took = frozen.elapsed();
    println!("frozen: dropped {took:?} after SIGSTOP (pong wait 1 s)");
    assert!(took < Duration::from_millis(1800), "dropped after {took:?}");
    assert!(gw.metrics().errors(ErrorType::Timeout) >= 1);
    signal_child(&child, Signal::SIGKILL);
    child.wait().unwrap();
    assert!(wait_for(Duration::from_secs(5), || gw.active_connections() == 0));
}

#[test]
fn a_killed_client_process_is_cleaned_up_at_once() {
    let gw = start(config());
    let mut op = operator(gw.local_addr());
    let mut child = client_process(gw.local_addr());
    request(&mut op, "i", "node.invoke", json!({"nodeId": "child", "command": "echo", "timeoutMs": 60_000}));
    // The child reads the request but never answers; then it is killed.
    thread::sleep(Duration::from_millis(100));
    signal_child(&child, Signal::SIGKILL);
    child.wait().unwrap();
    let killed = Instant::now();
    let res = recv_res(&mut op, "i");
    assert_eq!(res["error"]["details"]["code"], "NODE_DISCONNECTED", "{res}");
    assert!(killed.elapsed() < Duration::from_secs(1));
    assert!(wait_for(Duration::from_secs(2), || gw.active_connections() == 1));
}

/// Set in the child that runs `vanish_scenario_in_netns`.
const IN_NETNS: &str = "GOCLAW_TEST_IN_NETNS";

/// Sets the namespace's loopback link up or down, as `ip link set lo up`
/// would, without needing iproute2 on the machine.
fn set_loopback(up: bool) {
    use nix::libc;
    use std::os::fd::AsRawFd;
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (to, from) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *to = *from as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS and SIOCSIFFLAGS read and write the flags field
    // of the ifreq we own, on a socket we own.
    unsafe {
        assert_eq!(libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request), 0, "SIOCGIFFLAGS");
        let flags = request.ifr_ifru.ifru_flags;
        let up_flag = libc::IFF_UP as libc::c_short;
        request.ifr_ifru.ifru_flags = if up { flags | up_flag } else { flags & !up_flag };
        assert_eq!(libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &request), 0, "SIOCSIFFLAGS");
    }
}

/// Not a test of its own: runs in a private network namespace (see the
/// next test). Clients vanish without FIN or RST when the namespace's only
/// link goes down; the gateway must notice at the pong deadline, answer
/// the node's pending invoke, and shut down without waiting on them.
#[test]
fn vanish_scenario_in_netns() {
    if std::env::var_os(IN_NETNS).is_none() {
        return;
    }
    set_loopback(true);
    let mut config = config();
    config.pong_wait = Duration::from_millis(1000);
    config.ping_period = Duration::from_millis(300);
    config.write_wait = Duration::from_millis(1000);
    let gw = start(config);
    let addr = gw.local_addr();
    let mut op = operator(addr);
    let mut node = node(addr, "gone", &["wait"]);
    request(&mut op, "i", "node.invoke", json!({"nodeId": "gone", "command": "wait", "timeoutMs": 60_000}));
    recv_event(&mut node, "node.invoke.request");
    // The cable is pulled: both clients keep their sockets, nothing more
    // gets through in either direction.
    set_loopback(false);
    let vanished = Instant::now();
    assert!(wait_for(Duration::from_secs(8), || gw.active_connections() == 0), "vanished clients still held");
    let took = vanished.elapsed();
    assert!(took < Duration::from_millis(4500), "cut after {took:?}");
    assert!(gw.metrics().errors(ErrorType::Timeout) >= 2, "both cut at the pong deadline");
    // The pending invoke went with whichever side was cut first (answered
    // NODE_DISCONNECTED, or dropped with its operator): nothing is left
    // for shutdown to answer or cut, and shutdown does not wait on the
    // unreachable listen address.
    let stopping = Instant::now();
    let report = gw.shutdown();
    assert!(stopping.elapsed() < Duration::from_secs(2), "shutdown took {:?}", stopping.elapsed());
    assert_eq!((report.unavailable, report.cut), (0, 0), "{report:?}");
    println!("vanish ok: cut {took:?} after the link went down");
    drop((op, node));
}

#[test]
fn clients_that_vanish_without_fin_are_cut_at_the_pong_deadline() {
    // A user and network namespace of our own: no root needed, and the
    // host's loopback is untouched.
    let mut child = Command::new("unshare")
        .args(["--user", "--map-root-user", "--net", "--"])
        .arg(std::env::current_exe().unwrap())
        .args(["vanish_scenario_in_netns", "--exact", "--nocapture", "--test-threads=1"])
        .env(IN_NETNS, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("unshare (util-linux)");
    // A hung shutdown must fail the test, not hang it.
    let until = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() && Instant::now() < until {
        thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success() && stdout.contains("vanish ok"), "{stdout}\n{stderr}");
    println!("{}", stdout.lines().find(|l| l.contains("vanish ok")).unwrap_or_default());
}

/// Everything at once against the binary, around a well-behaved node and
/// operator: every one of their requests gets exactly one answer, the
/// gateway never panics, and its connection gauge, threads and open
/// descriptors return to their baseline once the attackers are gone.
#[test]
fn torture_run_loses_nothing_and_returns_to_baseline() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let mut gateway = serve_binary(&[
        "--handshake-timeout",
        "2s",
        "--pong-wait",
        "3s",
        "--ping-period",
        "1s",
        "--write-wait",
        "2s",
        "--max-message-size",
        "65536",
        "--rate-limit",
        "1000",
        "--rate-burst",
        "1000",
        "--message-rate",
        "500",
        "--message-burst",
        "500",
        "--tick-interval",
        "500ms",
    ]);
    let addr = gateway.addr;
    let mut good_node = node(addr, "good-node", &["echo"]);
    let node_socket = good_node.get_ref().try_clone().unwrap();
    let answering = thread::spawn(move || {
        while let Ok(message) = good_node.read() {
            let Message::Text(text) = message else { continue };
            let frame: Value = serde_json::from_str(&text).unwrap();
            if frame["event"] == "node.invoke.request" {
                let result = json!({"id": frame["payload"]["id"], "ok": true, "payload": params_of(&frame)});
                request(&mut good_node, "r", "node.invoke.result", result);
            }
        }
    });
    let mut good_op = operator(addr);
    thread::sleep(Duration::from_millis(1500)); // threads of the set-up joined, timers running
    let baseline = gateway.resources();

    // The well-behaved operator: one invoke at a time, at most 250 a second,
    // every answer checked.
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, answered) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let good = {
        let (stop, sent, answered) = (stop.clone(), sent.clone(), answered.clone());
        thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let id = format!("g{i}");
                request(
                    &mut good_op,
                    &id,
                    "node.invoke",
                    json!({"nodeId": "good-node", "command": "echo", "params": i}),
                );
                sent.fetch_add(1, Ordering::Relaxed);
                let res = recv_res(&mut good_op, &id);
                assert_eq!((res["ok"].clone(), invoke_payload(&res)), (json!(true), json!(i)), "{res}");
                answered.fetch_add(1, Ordering::Relaxed);
                i += 1;
                // Well within --message-rate for the node and the operator.
                thread::sleep(Duration::from_millis(4));
            }
            good_op
        })
    };

    let mut attacks: Vec<thread::JoinHandle<()>> = Vec::new();
    // Connection flood from a hundred addresses.
    attacks.push(thread::spawn(move || {
        for last in 2..=101u8 {
            for _ in 0..3 {
                let mut stream = tcp(addr, Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))), None);
                let _ = stream.write_all(upgrade_request("/", "").as_bytes());
                let _ = stream.read(&mut [0u8; 64]);
            }
        }
    }));
    // A message flood on one connection.
    attacks.push(thread::spawn(move || {
        let mut ws = operator_from(addr, source(400));
        let mut limited = 0;
        for i in 0..2000 {
            request(&mut ws, &format!("f{i}"), "health", json!(null));
            if recv_res(&mut ws, &format!("f{i}"))["error"]["details"]["code"] == "RATE_LIMITED" {
                limited += 1;
            }
        }
        assert!(limited > 0);
    }));
    // Invokes with long timeouts at a node that never answers, then leaves.
    attacks.push(thread::spawn(move || {
        let (mute, mute_socket) = silent_node(addr, "mute");
        let mut ws = operator_from(addr, source(401));
        for i in 0..300 {
            request(
                &mut ws,
                &format!("p{i}"),
                "node.invoke",
                json!({"nodeId": "mute", "command": "wait", "timeoutMs": 600_000}),
            );
        }
        request(&mut ws, "sync", "health", json!(null));
        // The 44 over the per-connection bound are refused at once, before
        // the health answer; the 256 waiting end when the node leaves.
        let mut codes = Vec::new();
        loop {
            let res = next_response(&mut ws);
            if res["id"] == "sync" {
                break;
            }
            codes.push(res["error"]["details"]["code"].clone());
        }
        mute_socket.shutdown(std::net::Shutdown::Both).unwrap();
        mute.join().unwrap();
        codes.extend((0..256).map(|_| next_response(&mut ws)["error"]["details"]["code"].clone()));
        assert_eq!(codes.iter().filter(|c| *c == "RATE_LIMITED").count(), 44);
        assert_eq!(codes.iter().filter(|c| *c == "NODE_DISCONNECTED").count(), 256);
    }));
    // A node-id storm, deaf to the 4000 closes.
    attacks.push(thread::spawn(move || {
        // Each attack comes from addresses of its own: the per-source bound
        // on unauthenticated connections (SPEC §5) would otherwise refuse
        // the ones that happen to handshake at the same instant.
        let storm: Vec<Client> = (0..20).map(|i| node_from(addr, source(100 + i), "storm", &["echo"])).collect();
        thread::sleep(Duration::from_secs(3));
        drop(storm);
    }));
    // Clients that flood and never read.
    for i in 0..10 {
        attacks.push(thread::spawn(move || {
            let mut ws = upgrade(tcp(addr, source(200 + i), Some(4096))).0;
            hello(&mut ws, connect_params("operator", "staller", &[]));
            let request =
                client_frame(0x81, json!({"type": "req", "id": "s", "method": "health"}).to_string().as_bytes());
            let burst: Vec<u8> = request.iter().copied().cycle().take(request.len() * 3000).collect();
            let _ = ws.get_mut().set_write_timeout(Some(Duration::from_secs(5)));
            let _ = ws.get_mut().write_all(&burst);
            thread::sleep(Duration::from_secs(4));
        }));
    }
    // Slowloris, framing garbage, malformed JSON.
    attacks.push(thread::spawn(move || {
        let silent: Vec<_> = (0..10).map(|i| tcp(addr, source(i), None)).collect();
        let mut partial: Vec<_> = (0..5).map(|i| tcp(addr, source(10 + i), None)).collect();
        for stream in &mut partial {
            let _ = stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n");
        }
        thread::sleep(Duration::from_secs(3));
        drop((silent, partial));
    }));
    attacks.push(thread::spawn(move || {
        let mut huge_header = vec![0x81, 0xff];
        huge_header.extend_from_slice(&(1u64 << 62).to_be_bytes());
        let garbage: Vec<Vec<u8>> = vec![
            vec![0x81, 0x02, b'h', b'i'],
            client_frame(0x83, b"x"),
            client_frame(0x81, &[0xff, 0xfe]),
            client_frame(0x82, b"binary"),
            client_frame(0x09, b"fragmented ping"),
            huge_header,
        ];
        for (i, bytes) in garbage.iter().cycle().take(30).enumerate() {
            let mut ws = attack_from(addr, source(300 + i), bytes);
            let _ = ws.read();
        }
    }));
    attacks.push(thread::spawn(move || {
        let mut ws = operator_from(addr, source(402));
        let frames = ["{", "[]", "null", r#"{"type":"req"}"#, r#"{"type":"req","id":"x","method":5}"#, "\u{0}"];
        for frame in frames.iter().cycle().take(200) {
            ws.send(Message::text(*frame)).unwrap();
            assert_eq!(next_response(&mut ws)["error"]["details"]["code"], "INVALID_REQUEST");
        }
    }));
    // A client process frozen mid-conversation, another killed.
    attacks.push(thread::spawn(move || {
        let mut frozen = client_process(addr);
        signal_child(&frozen, Signal::SIGSTOP);
        thread::sleep(Duration::from_secs(5));
        signal_child(&frozen, Signal::SIGKILL);
        frozen.wait().unwrap();
    }));
    for attack in attacks {
        attack.join().unwrap();
    }
    thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let _good_op = good.join().unwrap();
    assert!(answered.load(Ordering::Relaxed) > 100, "the good operator was starved");
    assert_eq!(sent.load(Ordering::Relaxed), answered.load(Ordering::Relaxed), "a request went unanswered");

    // Back to baseline: the two good clients, the same threads and descriptors.
    let connected = || metric(gateway.metrics, "goclaw_connected_clients");
    let settled = wait_for(Duration::from_secs(15), || {
        connected().as_deref() == Some("2") && {
            let (threads, fds, _) = gateway.resources();
            threads == baseline.0 && fds == baseline.1
        }
    });
    let now = gateway.resources();
    println!(
        "torture: {} well-behaved invokes, all answered; (threads, fds, RSS KiB) baseline {baseline:?}, after {now:?}",
        answered.load(Ordering::Relaxed)
    );
    assert!(settled, "baseline {baseline:?} (threads, fds, RSS KiB), now {now:?}, connected {:?}", connected());
    node_socket.shutdown(std::net::Shutdown::Both).unwrap();
    answering.join().unwrap();
    gateway.signal(Signal::SIGTERM);
    assert_eq!(gateway.wait(Duration::from_secs(10)), 0);
    assert!(!gateway.drain_panicked(), "the gateway panicked");
}
