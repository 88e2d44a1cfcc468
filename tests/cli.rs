//! The binary in all three roles against a live gateway: `goclaw node` as a
//! node, `goclaw nodes`, `invoke` and `watch` as operators; every exit code
//! they document, and a node that survives its gateway restarting. Every
//! process signs with a device key of its own (the node's in its own state
//! directory, the operators' under this test process's HOME); a node is
//! listed under its device id and named here by its instance id (`--id`).

mod support;

use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::{Value, json};
use support::*;

fn url(addr: SocketAddr) -> String {
    format!("ws://{addr}/ws")
}

/// This test process's scratch folder (the operators' HOME, the nodes' and
/// gateways' state directories).
fn scratch(name: &str) -> String {
    // Under target/ (cargo's scratch for integration tests), not /tmp.
    let dir =
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-test-{}", std::process::id())).join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir.to_str().unwrap().to_string()
}

/// `goclaw serve` with a state directory of its own (its pairing store).
fn gateway(name: &str, extra: &[&str]) -> Running {
    let state = scratch(&format!("gw-{name}"));
    let mut args = vec!["--state-dir", &state];
    args.extend_from_slice(extra);
    serve_binary(&args)
}

/// Runs `goclaw ARGS` to completion with a clean environment plus `env`;
/// HOME is this test process's, so operators sign with one device key.
fn goclaw(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BIN);
    command.args(args).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default()).env("HOME", scratch("home"));
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `goclaw nodes --json` against `addr`: the listed nodes' instance ids
/// (`goclaw node --id`); each node id is a device id.
fn listed(addr: SocketAddr) -> Vec<String> {
    let output = goclaw(&["nodes", "--json", "--url", &url(addr), "--token", TOKEN], &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let nodes: Value = serde_json::from_str(&stdout(&output)).unwrap();
    let nodes = nodes.as_array().unwrap();
    for node in nodes {
        let id = node["nodeId"].as_str().unwrap();
        assert!(id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()), "not a device id: {node}");
    }
    nodes.iter().map(|n| n["instanceId"].as_str().unwrap().to_string()).collect()
}

/// The device id (node id) of the node listed with instance id `instance`.
fn device_of(addr: SocketAddr, instance: &str) -> String {
    let output = goclaw(&["nodes", "--json", "--url", &url(addr), "--token", TOKEN], &[]);
    let nodes: Value = serde_json::from_str(&stdout(&output)).unwrap();
    let node = nodes.as_array().unwrap().iter().find(|n| n["instanceId"] == instance).expect("listed");
    node["nodeId"].as_str().unwrap().to_string()
}

fn start_node(addr: SocketAddr, id: &str, extra: &[&str]) -> Background {
    let url = url(addr);
    let state = scratch(&format!("node-{id}"));
    let mut args = vec!["node", "--url", &url, "--token", TOKEN, "--id", id, "--state-dir", &state];
    args.extend_from_slice(extra);
    let node = Background::start(&args);
    node.line("connected to the gateway", READ_LIMIT);
    node
}

/// An executable script in a fresh directory.
fn script(name: &str, body: &str) -> String {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn a_node_started_from_the_binary_is_listed_and_answers() {
    let gateway = gateway("listed", &[]);
    let addr = gateway.addr;
    let params = format!("params={}", script("params", "cat"));
    let mut node = start_node(addr, "box-1", &["--display-name", "Box One", "--exec", &params]);
    assert_eq!(listed(addr), ["box-1"]);

    let output = goclaw(&["nodes"], &[("GOCLAW_URL", &url(addr)), ("GOCLAW_TOKEN", TOKEN)]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let table = stdout(&output);
    assert!(table.starts_with("ID            NAME     INSTANCE  PLATFORM"), "{table}");
    let row = table.lines().nth(1).unwrap();
    let cells: Vec<&str> = row.split("  ").map(str::trim).filter(|c| !c.is_empty()).collect();
    assert!(cells[0].len() == 12 && cells[0].bytes().all(|b| b.is_ascii_hexdigit()), "{table}");
    assert_eq!(cells[1..4], ["Box One", "box-1", "linux"], "{table}");
    assert!(row.contains("device.status,echo,params,system.info,system.run,system.which"), "{table}");

    let env = [("GOCLAW_URL", url(addr)), ("GOCLAW_TOKEN", TOKEN.to_string())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let output = goclaw(&["invoke", "box-1", "device.status"], &env);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let status: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert!(status["uptimeSeconds"].as_f64().unwrap() > 0.0, "{status}");
    assert!(status["memory"]["totalBytes"].as_u64().unwrap() > status["memory"]["availableBytes"].as_u64().unwrap());
    assert!(status["rootFilesystem"]["totalBytes"].as_u64().unwrap() > 0, "{status}");
    assert_eq!(status["loadAverage"].as_array().unwrap().len(), 3, "{status}");

    let output = goclaw(&["invoke", "box-1", "system.info", "--json"], &env);
    let answer: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(answer["payload"]["arch"], std::env::consts::ARCH);
    assert_eq!(answer["payload"]["goclawVersion"], env!("CARGO_PKG_VERSION"));

    let output = goclaw(&["invoke", "box-1", "echo", r#"{"a":[1,"x"]}"#], &env);
    assert_eq!(stdout(&output).trim(), r#"{"a":[1,"x"]}"#);
    let output = goclaw(&["invoke", "box-1", "params", r#"{"b":2}"#], &env);
    assert_eq!(stdout(&output).trim(), r#"{"b":2}"#);

    // SIGTERM: a close handshake and exit 0; the gateway lists nobody.
    node.signal(Signal::SIGTERM);
    assert_eq!(node.wait(Duration::from_secs(5)), Some(0));
    assert!(wait_for(Duration::from_secs(5), || listed(addr).is_empty()));
}

#[test]
fn every_exit_code() {
    let gateway = gateway("exit-codes", &[]);
    let addr = gateway.addr;
    let slow = format!("slow={}", script("slow", "sleep 5"));
    let fails = format!("fails={}", script("fails", "echo 'disk on fire' >&2; exit 4"));
    let _node = start_node(addr, "box-2", &["--exec", &slow, "--exec", &fails]);
    let url = url(addr);
    let with_token = |args: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend_from_slice(&["--url", &url, "--token", TOKEN]);
        goclaw(&all, &[])
    };
    // 0 for an answer.
    assert_eq!(with_token(&["invoke", "box-2", "echo"]).status.code(), Some(0));
    // 1 for an error answer, as CODE: message on stderr.
    let cases = [
        (vec!["invoke", "nobody", "echo"], "NODE_NOT_FOUND: "),
        (vec!["invoke", "box-2", "reboot"], "UNKNOWN_COMMAND: "),
        (vec!["invoke", "box-2", "slow", "--timeout", "300ms"], "TIMEOUT: "),
        (vec!["invoke", "box-2", "fails"], "EXEC_FAILED: fails failed"),
    ];
    for (args, prefix) in cases {
        let output = with_token(&args);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {}", stderr(&output));
        assert!(stderr(&output).starts_with(prefix), "{args:?}: {}", stderr(&output));
        assert_eq!(stdout(&output), "", "{args:?}");
    }
    let output = with_token(&["invoke", "box-2", "fails", "--json"]);
    let answer: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!((answer["ok"].clone(), answer["error"]["code"].clone()), (json!(false), json!("EXEC_FAILED")));
    assert!(answer["error"]["message"].as_str().unwrap().contains("disk on fire"), "{answer}");
    // A wrong token from a device the gateway has not issued a token to.
    let fresh = scratch("home-fresh");
    let output = goclaw(&["nodes", "--url", &url, "--token", "wrong"], &[("HOME", &fresh)]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).starts_with("UNAUTHORIZED: "), "{}", stderr(&output));
    // The operators' own device has one (issued at its first connect): it
    // is presented with the shared token, and stands in for a wrong one.
    let output = goclaw(&["nodes", "--url", &url, "--token", "wrong"], &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));

    // 2 for bad usage, one line on stderr.
    for args in [
        vec!["invoke", "box-2"],
        vec!["invoke", "box-2", "echo", "{not json"],
        vec!["invoke", "box-2", "echo", "--timeout", "0s"],
        vec!["nodes", "--nope"],
        vec!["nodes", "extra"],
        vec!["watch", "--url", "http://x"],
        vec!["node", "--exec", "echo=/bin/cat"],
        vec!["node", "--exec", "x=/nonexistent/program"],
    ] {
        let output = goclaw(&args, &[]);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}", stderr(&output));
        assert_eq!(stderr(&output).lines().count(), 1, "{args:?}: {}", stderr(&output));
    }

    // 3 when there is no gateway to talk to.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    for command in ["nodes", "watch"] {
        let output = goclaw(&[command, "--url", &format!("ws://{closed}/ws")], &[]);
        assert_eq!(output.status.code(), Some(3), "{command}: {}", stderr(&output));
        assert!(stderr(&output).contains("cannot connect"), "{}", stderr(&output));
    }
    let output = goclaw(&["invoke", "box-2", "echo"], &[("GOCLAW_URL", &format!("ws://{closed}/ws"))]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    // Help is not an error.
    for command in ["node", "nodes", "invoke", "watch"] {
        let output = goclaw(&[command, "--help"], &[]);
        assert_eq!(output.status.code(), Some(0));
        assert!(stdout(&output).starts_with(&format!("usage: goclaw {command}")), "{}", stdout(&output));
    }
}

#[test]
fn watch_prints_nodes_arriving_and_leaving() {
    let gateway = gateway("watch", &[]);
    let addr = gateway.addr;
    let mut watch = Background::start(&["watch", "--url", &url(addr), "--token", TOKEN]);
    // The watcher is connected once the gateway counts two clients... it
    // has no line of its own to wait for, so poll the health payload.
    assert!(wait_for(READ_LIMIT, || {
        let mut op = operator(addr);
        request(&mut op, "h", "health", json!(null));
        recv_res(&mut op, "h")["payload"]["connections"] == 2
    }));
    let mut node = start_node(addr, "box-3", &[]);
    let device = device_of(addr, "box-3");
    assert!(watch.line(&device, READ_LIMIT).contains("connected"));
    node.signal(Signal::SIGTERM);
    assert_eq!(node.wait(Duration::from_secs(5)), Some(0));
    let line = watch.line(&device, READ_LIMIT);
    assert!(line.contains("disconnected"), "{line}");
    watch.signal(Signal::SIGINT);
    assert_eq!(watch.wait(Duration::from_secs(5)), Some(0));
}

#[test]
fn a_tight_loop_of_invokes_rides_out_the_rate_limit() {
    // One new connection a second, two at once: the node and the first
    // invoke use the burst up, and later invokes are refused (429,
    // Retry-After: 1) until they ask again. Five connections need three
    // seconds of refill, so the loop cannot succeed without waiting.
    let gateway = gateway("rate", &["--rate-limit", "1", "--rate-burst", "2"]);
    let _node = start_node(gateway.addr, "box-5", &[]);
    let url = url(gateway.addr);
    for i in 0..4 {
        let params = format!(r#"{{"i":{i}}}"#);
        let output = goclaw(&["invoke", "box-5", "echo", &params, "--url", &url, "--token", TOKEN], &[]);
        assert_eq!(output.status.code(), Some(0), "invoke {i}: {}", stderr(&output));
        assert_eq!(stdout(&output).trim(), params);
    }
    // How many were refused depends on how the jitter falls (a long wait
    // can bank a token for the next one); at least one was.
    let refused = metric(gateway.metrics, r#"goclaw_errors_total{type="rate_limit"}"#).unwrap();
    assert!(refused.parse::<u32>().unwrap() >= 1, "{refused} refusals");
}

#[test]
fn a_gateway_that_refuses_for_longer_than_goclaw_waits_exits_4_at_once() {
    // One new connection per 1,000 s: the second is told to come back in
    // 1,000 s, past the 30 s goclaw waits, so it does not wait at all.
    let gateway = gateway("refused", &["--rate-limit", "0.001", "--rate-burst", "1"]);
    let url = url(gateway.addr);
    assert_eq!(goclaw(&["nodes", "--url", &url, "--token", TOKEN], &[]).status.code(), Some(0));
    let started = Instant::now();
    for command in [&["nodes"][..], &["invoke", "box", "echo"], &["watch"]] {
        let mut args = command.to_vec();
        args.extend_from_slice(&["--url", &url, "--token", TOKEN]);
        let output = goclaw(&args, &[]);
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(4), "{command:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("goclaw: ") && err.contains("HTTP 429") && err.contains("retry after 1000 s"), "{err}");
    }
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
}

#[test]
fn at_capacity_it_asks_five_times_then_exits_4() {
    // One connection at most, and it is taken: each upgrade gets 503 with
    // Retry-After: 1, five attempts over about four seconds.
    let gateway = gateway("capacity", &["--max-connections", "1"]);
    let _held = operator(gateway.addr);
    let output = goclaw(&["nodes", "--url", &url(gateway.addr), "--token", TOKEN], &[]);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(4), "{err}");
    assert!(err.contains("HTTP 503") && err.contains("still refused after 5 attempts"), "{err}");
    assert_eq!(metric(gateway.metrics, r#"goclaw_errors_total{type="capacity"}"#).as_deref(), Some("5"));
}

/// A port free now, for a gateway that must come back on the same one.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn the_node_survives_its_gateway_restarting() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let state = scratch("gw-restart");
    let serve = || Running::start(serve_command(BIN, &listen, &["--state-dir", &state]));
    let mut gateway = serve();
    let addr = gateway.addr;
    let node = start_node(addr, "box-4", &[]);
    assert_eq!(listed(addr), ["box-4"]);

    // A graceful restart: the node waits the restartExpectedMs (5 s) the
    // shutdown event announced, then comes back.
    gateway.signal(Signal::SIGTERM);
    assert_eq!(gateway.wait(Duration::from_secs(10)), 0);
    node.line("restartExpectedMs", READ_LIMIT);
    let mut gateway = serve();
    let restarted = Instant::now();
    node.line("connected to the gateway", Duration::from_secs(10));
    assert!(restarted.elapsed() < Duration::from_secs(7), "{:?}", restarted.elapsed());
    assert_eq!(listed(addr), ["box-4"]);

    // A crash: no shutdown event; the node retries with backoff and is back
    // within a few seconds of the gateway (its device approved in the
    // store, which outlives the process).
    gateway.signal(Signal::SIGKILL);
    gateway.wait(Duration::from_secs(5));
    node.line("connection to the gateway lost", READ_LIMIT);
    node.line("cannot connect to the gateway", READ_LIMIT);
    let _gateway = serve();
    let restarted = Instant::now();
    node.line("connected to the gateway", Duration::from_secs(10));
    assert!(restarted.elapsed() < Duration::from_secs(5), "{:?}", restarted.elapsed());
    assert_eq!(listed(addr), ["box-4"]);
}
