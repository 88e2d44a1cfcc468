//! The `goclaw` binary as a user runs it: command line, exit codes, signals.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::json;
use support::*;

fn goclaw(args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command.args(args).env_clear().env("HOME", std::env::temp_dir());
    command
}

/// Runs to completion; returns (status, stdout, stderr).
fn run(args: &[&str]) -> (i32, String, String) {
    let out = goclaw(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_and_version() {
    let (code, out, _) = run(&["--version"]);
    assert_eq!((code, out.trim()), (0, format!("goclaw {}", env!("CARGO_PKG_VERSION")).as_str()));
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("goclaw serve"), "{out}");
    let (code, out, _) = run(&["serve", "--help"]);
    assert_eq!(code, 0);
    for flag in ["--listen", "--pong-wait", "--allowed-origin", "GOCLAW_"] {
        assert!(out.contains(flag), "{flag} missing from:\n{out}");
    }
}

#[test]
fn bad_input_exits_2_with_one_line_naming_the_flag() {
    let cases: &[(&[&str], &str)] = &[
        (&["serve", "--pong-wait", "60"], "--pong-wait"),
        (&["serve", "--ping-period", "2m"], "--ping-period"),
        (&["serve", "--max-connections", "lots"], "--max-connections"),
        (&["serve", "--listen", "0.0.0.0:0"], "token"),
        (&["serve", "--listen", ":0"], "token"),
        (&["serve", "--listen", ":http"], "--listen"),
        (&["serve", "--pong-wait", "1m30"], "--pong-wait"),
        (&["serve", "--token-file", "/nonexistent/token"], "--token-file"),
        (&["serve", "--frobnicate"], "--frobnicate"),
        (&["serve", "--allowed-origin", "example.com"], "--allowed-origin"),
        (&["bogus"], "bogus"),
        (&[], "missing command"),
    ];
    for (args, needle) in cases {
        let (code, out, err) = run(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?}: {out}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("goclaw: ") && err.contains(needle), "{args:?}: {err}");
    }
    let (code, _, err) = run(&["serve", "--listen", "0.0.0.0:0"]);
    assert_eq!(code, 2);
    assert!(err.contains("refusing to listen on 0.0.0.0:0 without a token"), "{err}");
}

#[test]
fn a_bare_port_listens_on_every_interface_and_durations_compound() {
    let mut gateway =
        Running::start(serve_command(BIN, ":0", &["--pong-wait", "1m30s", "--shutdown-timeout", "1s500ms"]));
    assert!(gateway.addr.ip().is_unspecified() && gateway.addr.is_ipv4(), "{}", gateway.addr);
    let mut op = operator(std::net::SocketAddr::from(([127, 0, 0, 1], gateway.addr.port())));
    request(&mut op, "h", "health", json!(null));
    assert_eq!(recv_res(&mut op, "h")["ok"], true);
    gateway.signal(Signal::SIGTERM);
    assert_eq!(gateway.wait(Duration::from_secs(5)), 0);
}

#[test]
fn a_port_in_use_exits_1_with_one_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, _, err) = run(&["serve", "--listen", &addr, "--metrics-listen", "127.0.0.1:0"]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let last = err.trim_end();
    assert!(last.starts_with("goclaw: cannot listen on") && last.contains(&addr), "{err}");
}

#[test]
fn variables_and_systemd_credentials_configure_it() {
    let dir = std::env::temp_dir().join(format!("goclaw-creds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("token"), format!("{TOKEN}\n")).unwrap();
    let mut command = goclaw(&["serve"]);
    command
        .env("GOCLAW_LISTEN", "127.0.0.1:0")
        .env("GOCLAW_METRICS_LISTEN", "127.0.0.1:0")
        .env("GOCLAW_TICK_INTERVAL", "100ms")
        .env("CREDENTIALS_DIRECTORY", &dir);
    let running = Running::start(command);
    let mut op = operator(running.addr); // authenticates with TOKEN
    let first = recv_event(&mut op, "tick");
    let second = recv_event(&mut op, "tick");
    let gap = second["payload"]["ts"].as_u64().unwrap() - first["payload"]["ts"].as_u64().unwrap();
    assert!((50..2000).contains(&gap), "{gap} ms between ticks");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sigterm_and_sigint_deliver_the_event_and_close_1001_to_every_client_then_exit_0() {
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        let mut running = serve_binary(&[]);
        let mut clients: Vec<Client> = (0..10)
            .map(|i| if i % 2 == 0 { node(running.addr, &format!("n{i}"), &[]) } else { operator(running.addr) })
            .collect();
        running.signal(signal);
        for ws in &mut clients {
            let event = recv_event(ws, "shutdown");
            assert_eq!(event["payload"]["restartExpectedMs"], 5000);
            assert_eq!(close_code(&recv_close(ws)), 1001, "{signal}");
        }
        assert_eq!(running.wait(Duration::from_secs(10)), 0, "{signal}");
        let done = running.wait_line("shutdown complete");
        assert!(done.contains("notified=10") && done.contains("cut=0"), "{done}");
    }
}

#[test]
fn a_second_signal_exits_130_at_once() {
    let mut running = serve_binary(&["--shutdown-timeout", "60s"]);
    // A client that never reads keeps the graceful shutdown waiting.
    let _deaf = operator(running.addr);
    running.signal(Signal::SIGTERM);
    running.wait_line("shutting down");
    let started = Instant::now();
    running.signal(Signal::SIGINT);
    assert_eq!(running.wait(Duration::from_secs(5)), 130);
    assert!(started.elapsed() < Duration::from_secs(2));
}

fn threads_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find_map(|l| l.strip_prefix("Threads:")).unwrap().trim().parse().unwrap()
}

#[test]
fn a_slowloris_on_the_metrics_port_costs_at_most_four_threads() {
    let running = serve_binary(&[]);
    let pid = running.child.id();
    let before = threads_of(pid);
    let silent: Vec<_> = (0..50).map(|_| tcp(running.metrics, None, None)).collect();
    // The accept loop is sequential: once it has answered this one, it has
    // dealt with all fifty before it, each in place of an older one.
    let answer = http(running.metrics, "GET /healthz HTTP/1.1\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let during = threads_of(pid);
    assert!(during <= before + 4, "{before} threads before, {during} with 50 silent metrics connections");
    drop(silent);
    assert!(wait_for(Duration::from_secs(5), || http(running.metrics, "GET /healthz HTTP/1.1\r\n\r\n")
        .starts_with("HTTP/1.1 200")));
}

#[test]
fn an_independent_client_can_do_a_full_round_trip_against_the_binary() {
    let running = serve_binary(&[]);
    let mut node = node(running.addr, "pi", &["echo"]);
    let mut op = operator(running.addr);
    request(&mut op, "1", "node.invoke", json!({"nodeId": "pi", "command": "echo", "params": {"x": 1}}));
    let routed = recv_event(&mut node, "node.invoke.request");
    request(
        &mut node,
        "r",
        "node.invoke.result",
        json!({"id": routed["payload"]["id"], "ok": true, "payload": {"y": 2}}),
    );
    assert_eq!(invoke_payload(&recv_res(&mut op, "1")), json!({"y": 2}));
}

/// Datagrams the binary sent to our notify socket within `limit`, until
/// `done` says enough.
fn notifications(
    socket: &std::os::unix::net::UnixDatagram,
    limit: Duration,
    done: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let until = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while !done(&got) {
        let left = until.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "only got {got:?}");
        socket.set_read_timeout(Some(left)).unwrap();
        if let Ok(n) = socket.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    got
}

#[test]
fn tells_systemd_ready_status_watchdog_and_stopping() {
    let dir = std::env::temp_dir().join(format!("goclaw-sd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify");
    let _ = std::fs::remove_file(&path);
    let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    let mut command = serve_command(BIN, "127.0.0.1:0", &["--shutdown-timeout", "500ms"]);
    // A watchdog of 300 ms: the heartbeat must ping every 150 ms.
    command.env("NOTIFY_SOCKET", &path).env("WATCHDOG_USEC", "300000");
    let mut running = Running::start(command);

    let first = notifications(&socket, READ_LIMIT, |got| !got.is_empty());
    assert!(first[0].starts_with("READY=1\nSTATUS=listening on 127.0.0.1:"), "{first:?}");
    let started = Instant::now();
    let pings = notifications(&socket, READ_LIMIT, |got| got.iter().filter(|m| *m == "WATCHDOG=1").count() >= 4);
    assert!(started.elapsed() < Duration::from_secs(2), "four pings took {:?}", started.elapsed());
    assert!(pings.iter().all(|m| m == "WATCHDOG=1"), "{pings:?}");

    let _op = operator(running.addr);
    let status = notifications(&socket, READ_LIMIT, |got| got.iter().any(|m| m.starts_with("STATUS=1 connections")));
    assert!(status.iter().any(|m| m == "STATUS=1 connections, 1 clients, 0 nodes"), "{status:?}");

    running.signal(Signal::SIGTERM);
    let stopping = notifications(&socket, READ_LIMIT, |got| got.iter().any(|m| m.starts_with("STOPPING=1")));
    assert!(stopping.iter().any(|m| m == "STOPPING=1\nSTATUS=shutting down, 1 connections"), "{stopping:?}");
    assert_eq!(running.wait(Duration::from_secs(10)), 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn healthcheck_exits_0_against_a_live_gateway_and_1_against_a_dead_port() {
    let running = serve_binary(&[]);
    let url = format!("http://{}/healthz", running.metrics);
    let (code, out, err) = run(&["healthcheck", "--url", &url]);
    assert_eq!((code, out.as_str(), err.as_str()), (0, "", ""));
    // The default URL follows GOCLAW_METRICS_LISTEN, with 0.0.0.0 probed on loopback.
    let listen = format!("0.0.0.0:{}", running.metrics.port());
    let out = goclaw(&["healthcheck"]).env("GOCLAW_METRICS_LISTEN", &listen).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    // A path that is not 200 is unhealthy too.
    let (code, _, err) = run(&["healthcheck", "--url", &format!("http://{}/nope", running.metrics)]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("404"), "{err}");
    drop(running);

    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let (code, _, err) = run(&["healthcheck", "--url", &format!("http://{dead}/healthz")]);
    assert_eq!(code, 1);
    assert!(err.starts_with("goclaw: unhealthy:") && err.lines().count() == 1, "{err}");
    let (code, _, err) = run(&["healthcheck", "--url", "https://example.com/healthz"]);
    assert_eq!(code, 2, "{err}");
}
