//! `goclaw node` as a device, through a real gateway (the binary): its key
//! made once (0600) and kept across restarts, the device token it keeps and
//! presents, a key that cannot be read stopping it, `system.which` and
//! `system.run` (a listed program runs, anything else is refused as the
//! real node host refuses it), and operators naming a node by instance id,
//! display name or id prefix.

mod clients;
mod support;

use std::time::Duration;

use clients::*;
use serde_json::Value;
use support::{Background, READ_LIMIT, TOKEN, serve_binary, wait_for};

fn url(addr: std::net::SocketAddr) -> String {
    format!("ws://{addr}/ws")
}

fn node(scratch: &Scratch, addr: std::net::SocketAddr, id: &str, extra: &[&str]) -> Background {
    let (url, state) = (url(addr), scratch.path(id));
    let mut args = vec!["node", "--url", &url, "--id", id, "--state-dir", &state];
    args.extend_from_slice(extra);
    Background::start(&args)
}

/// `goclaw nodes --json`.
fn nodes(scratch: &Scratch, addr: std::net::SocketAddr) -> Vec<Value> {
    let output = scratch.goclaw("op", &["nodes", "--json", "--url", &url(addr), "--token", TOKEN], &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    serde_json::from_str::<Value>(&stdout(&output)).unwrap().as_array().unwrap().clone()
}

fn key_file(scratch: &Scratch, id: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(format!("{}/node/device.json", scratch.path(id))).unwrap()).unwrap()
}

fn mode(path: &str) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn the_key_is_made_once_kept_and_its_device_token_stands_in_for_the_shared_one() {
    let scratch = Scratch::new("agent-key");
    let gateway = serve_binary(&["--state-dir", &scratch.path("gw")]);
    let addr = gateway.addr;
    let mut first = node(&scratch, addr, "box-k", &["--token", TOKEN]);
    let line = first.line("node device identity", READ_LIMIT);
    first.line("connected to the gateway", READ_LIMIT);
    let key = key_file(&scratch, "box-k");
    let device = key["deviceId"].as_str().unwrap().to_string();
    assert!(line.contains(&device), "{line}");
    assert_eq!(mode(&format!("{}/node/device.json", scratch.path("box-k"))), 0o600);
    assert_eq!(mode(&format!("{}/node", scratch.path("box-k"))), 0o700);
    let listed = nodes(&scratch, addr);
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0]["nodeId"].as_str(), listed[0]["instanceId"].as_str()), (Some(&*device), Some("box-k")));
    // The gateway issued a device token; it is kept, 0600, for this URL.
    let tokens_path = format!("{}/node/device-tokens.json", scratch.path("box-k"));
    let tokens = std::fs::read_to_string(&tokens_path).unwrap();
    assert!(tokens.contains(&url(addr)) && tokens.contains("\"role\": \"node\""), "{tokens}");
    assert_eq!(mode(&tokens_path), 0o600);
    first.child.kill().unwrap();
    first.wait(READ_LIMIT);

    // Restarted with the shared token: the same device, and the token it
    // presents beside the shared one is kept, not replaced by a new one.
    let second = node(&scratch, addr, "box-k", &["--token", TOKEN]);
    second.line("connected to the gateway", READ_LIMIT);
    assert_eq!(key_file(&scratch, "box-k")["deviceId"], device.as_str());
    assert_eq!(std::fs::read_to_string(&tokens_path).unwrap(), tokens);
    assert!(wait_for(READ_LIMIT, || nodes(&scratch, addr).len() == 1));
    drop(second);

    // Without the shared token: the device token alone lets it in.
    let third = node(&scratch, addr, "box-k", &[]);
    third.line("connected to the gateway", READ_LIMIT);
    assert_eq!(nodes(&scratch, addr)[0]["nodeId"], device.as_str());
    drop(third);

    // A device token the gateway does not know is refused, forgotten, and
    // the node keeps trying (with nothing left to present).
    let stale = tokens.replacen("\"token\": \"", "\"token\": \"stale-", 1);
    std::fs::write(&tokens_path, stale).unwrap();
    let fourth = node(&scratch, addr, "box-k", &[]);
    fourth.line("refused this device's stored token", READ_LIMIT);
    fourth.line("the gateway refused connect", READ_LIMIT);
    assert!(!std::fs::read_to_string(&tokens_path).unwrap().contains("stale-"));
}

#[test]
fn a_key_that_cannot_be_read_stops_the_node_and_is_kept() {
    let scratch = Scratch::new("agent-corrupt");
    let dir = format!("{}/node", scratch.path("box-c"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = format!("{dir}/device.json");
    std::fs::write(&path, "{\"version\":1,").unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let mut node = node(&scratch, "127.0.0.1:9".parse().unwrap(), "box-c", &[]);
    assert_eq!(node.wait(READ_LIMIT), Some(1));
    let line = node.line(&path, Duration::from_secs(1));
    assert!(line.contains("not a usable device key") && line.contains("not replaced"), "{line}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"version\":1,");
    // Without any state directory a node has nowhere to keep its key: usage.
    let output = scratch.goclaw("op", &["node", "--url", "ws://127.0.0.1:9/ws"], &[("HOME", "")]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("--state-dir"), "{}", stderr(&output));
}

#[test]
fn system_which_and_system_run_answer_as_the_real_node_host_does() {
    let scratch = Scratch::new("agent-run");
    let gateway = serve_binary(&["--state-dir", &scratch.path("gw")]);
    let addr = gateway.addr;
    let uname = std::fs::canonicalize("/bin/uname").unwrap_or_else(|_| "/usr/bin/uname".into());
    let listed = format!("uname={}", uname.display());
    let agent = node(&scratch, addr, "box-r", &["--token", TOKEN, "--exec", &listed]);
    agent.line("connected to the gateway", READ_LIMIT);
    let invoke = |command: &str, params: &str| {
        scratch.goclaw("op", &["invoke", "box-r", command, params, "--url", &url(addr), "--token", TOKEN], &[])
    };
    let output = invoke("system.which", r#"{"bins":["sh","no-such-goclaw-bin"]}"#);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let which: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert!(which["bins"]["sh"].as_str().unwrap().ends_with("/sh"), "{which}");
    assert_eq!(which["bins"].as_object().unwrap().len(), 1, "{which}");
    let output = invoke("system.which", "{}");
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).starts_with("INVALID_REQUEST: INVALID_REQUEST: bins required"), "{}", stderr(&output));

    // A listed program, by bare name (through PATH) and by path, with arguments.
    for argv in [r#"["uname","-s"]"#.to_string(), format!(r#"["{}","-s"]"#, uname.display())] {
        let output = invoke("system.run", &format!(r#"{{"command":{argv}}}"#));
        assert_eq!(output.status.code(), Some(0), "{argv}: {}", stderr(&output));
        let run: Value = serde_json::from_str(&stdout(&output)).unwrap();
        assert_eq!(run["stdout"], "Linux\n", "{run}");
        assert_eq!((run["exitCode"].as_i64(), run["success"].as_bool()), (Some(0), Some(true)), "{run}");
        assert_eq!((run["timedOut"].as_bool(), run["stderr"].as_str()), (Some(false), Some("")), "{run}");
    }
    // Anything else: refused by the node, as the real node host refuses.
    for params in [r#"{"command":["/bin/ls","/"]}"#, r#"{"command":["sh","-c","uname"]}"#] {
        let output = invoke("system.run", params);
        assert_eq!(output.status.code(), Some(1), "{params}");
        let err = stderr(&output);
        assert!(err.starts_with("UNAVAILABLE: SYSTEM_RUN_DENIED: approval required"), "{params}: {err}");
    }
    let output = invoke("system.run", r#"{"command":[]}"#);
    assert!(stderr(&output).starts_with("INVALID_REQUEST: command required"), "{}", stderr(&output));
}

#[test]
fn operators_name_a_node_by_instance_id_display_name_or_id_prefix() {
    let scratch = Scratch::new("agent-names");
    let gateway = serve_binary(&["--state-dir", &scratch.path("gw")]);
    let addr = gateway.addr;
    let a = node(&scratch, addr, "box-a", &["--token", TOKEN, "--display-name", "Kitchen"]);
    let b = node(&scratch, addr, "box-b", &["--token", TOKEN, "--display-name", "twin"]);
    let c = node(&scratch, addr, "box-c", &["--token", TOKEN, "--display-name", "twin"]);
    for agent in [&a, &b, &c] {
        agent.line("connected to the gateway", READ_LIMIT);
    }
    let listed = nodes(&scratch, addr);
    let id_of = |instance: &str| {
        listed.iter().find(|n| n["instanceId"] == instance).unwrap()["nodeId"].as_str().unwrap().to_string()
    };
    let echo = |node: &str| {
        let output = scratch.goclaw(
            "op",
            &["invoke", node, "echo", &format!(r#""{node}""#), "--url", &url(addr), "--token", TOKEN],
            &[],
        );
        (output.status.code(), stdout(&output), stderr(&output))
    };
    let kitchen = id_of("box-a");
    for name in [kitchen.as_str(), &kitchen[..8], "box-a", "Kitchen", "box-b"] {
        let (code, out, err) = echo(name);
        assert_eq!(code, Some(0), "{name}: {err}");
        assert_eq!(out.trim(), format!(r#""{name}""#));
    }
    // Two nodes answer to "twin": usage, naming both.
    let (code, _, err) = echo("twin");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("matches 2 nodes") && err.contains(&id_of("box-b")[..12]), "{err}");
    // No node answers to it: the gateway says so.
    let (code, _, err) = echo("nobody");
    assert_eq!(code, Some(1));
    assert!(err.starts_with("NODE_NOT_FOUND: "), "{err}");
}

#[test]
fn a_gateway_silent_for_two_tick_intervals_is_left_with_4000_and_the_node_comes_back() {
    use tungstenite::Message;
    // A gateway that greets with a 1 s tick interval, then says nothing.
    let scratch = Scratch::new("agent-silent");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let node = node(&scratch, addr, "box-s", &[]);
    let mut connections = Vec::new();
    for _ in 0..2 {
        let (stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(READ_LIMIT)).unwrap();
        let mut ws = tungstenite::accept(stream).unwrap();
        let challenge = r#"{"type":"event","event":"connect.challenge","payload":{"nonce":"n","ts":1}}"#;
        ws.send(Message::text(challenge)).unwrap();
        let connect: Value = serde_json::from_str(ws.read().unwrap().to_text().unwrap()).unwrap();
        assert_eq!(connect["params"]["client"]["id"], "node-host");
        let hello = serde_json::json!({"type": "res", "id": connect["id"], "ok": true,
            "payload": {"type": "hello-ok", "protocol": 3, "policy": {"tickIntervalMs": 1000}}});
        ws.send(Message::text(hello.to_string())).unwrap();
        let started = std::time::Instant::now();
        let close = loop {
            match ws.read().unwrap() {
                Message::Close(frame) => break frame.unwrap(),
                _ => continue,
            }
        };
        assert_eq!((u16::from(close.code), close.reason.as_str()), (4000, "tick timeout"));
        let silent = started.elapsed();
        assert!(silent >= Duration::from_secs(2) && silent < Duration::from_secs(4), "{silent:?}");
        connections.push(ws);
    }
    node.line("two tick intervals", READ_LIMIT);
}
