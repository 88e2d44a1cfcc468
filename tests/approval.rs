//! Pairing from the command line against goclaw (the binary): a node and an
//! operator that reach the gateway through a proxy (`X-Forwarded-For`, so
//! never approved silently) wait for approval; `goclaw nodes pending`,
//! `approve`, `reject` and `remove` decide, from the gateway's own host.

mod clients;
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use clients::*;
use serde_json::Value;
use support::{Background, READ_LIMIT, TOKEN, serve_binary, wait_for};

fn url(addr: SocketAddr) -> String {
    format!("ws://{addr}/ws")
}

/// A command from the gateway's host (loopback, no proxy: its operator
/// device approved silently).
fn local(scratch: &Scratch, addr: SocketAddr, args: &[&str]) -> (Option<i32>, String, String) {
    let url = url(addr);
    let mut all = args.to_vec();
    all.extend_from_slice(&["--url", &url, "--token", TOKEN]);
    let output = scratch.goclaw("local", &all, &[]);
    (output.status.code(), stdout(&output), stderr(&output))
}

/// The pending rows (`goclaw nodes pending --json`).
fn pending(scratch: &Scratch, addr: SocketAddr) -> Vec<Value> {
    let (code, out, err) = local(scratch, addr, &["nodes", "pending", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    serde_json::from_str::<Value>(&out).unwrap().as_array().unwrap().clone()
}

#[test]
fn a_remote_node_waits_is_approved_and_gets_in_by_itself_then_is_removed() {
    let scratch = Scratch::new("approval-node");
    let gateway = serve_binary(&["--state-dir", &scratch.path("gw")]);
    let proxy = forwarded(gateway.addr);
    let (proxied, state) = (url(proxy.addr), scratch.path("remote"));
    let node = Background::start(&[
        "node",
        "--url",
        &proxied,
        "--token",
        TOKEN,
        "--id",
        "far-pi",
        "--state-dir",
        &state,
        "--display-name",
        "Far",
    ]);
    // One line, naming the request and what to run on either gateway.
    let line = node.line("waits for approval", READ_LIMIT);
    let request = line.split("request_id=").nth(1).unwrap().split_whitespace().next().unwrap().to_string();
    assert!(line.contains(&format!("goclaw nodes approve {request}")), "{line}");
    assert!(line.contains(&format!("openclaw devices approve {request}")), "{line}");

    let rows = pending(&scratch, gateway.addr);
    let row = rows.iter().find(|r| r["requestId"] == request.as_str()).expect("pending row");
    let device: Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{state}/node/device.json")).unwrap()).unwrap();
    assert_eq!(row["deviceId"], device["deviceId"]);
    let (code, table, _) = local(&scratch, gateway.addr, &["nodes", "pending"]);
    assert_eq!(code, Some(0));
    assert!(table.starts_with("REQUEST") && table.contains(&request) && table.contains("Far"), "{table}");
    let (_, listed, _) = local(&scratch, gateway.addr, &["nodes", "--json"]);
    assert_eq!(listed.trim(), "[]", "not in before approval");

    let (code, out, err) = local(&scratch, gateway.addr, &["nodes", "approve", &request]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with(&format!("approved request {request}")), "{out}");
    node.line("connected to the gateway", Duration::from_secs(40));
    let (code, out, err) = local(&scratch, gateway.addr, &["invoke", "Far", "echo", "7"]);
    assert_eq!((code, out.trim()), (Some(0), "7"), "{err}");

    // Removed: its connection closes (4001), and it must be approved again.
    let (code, out, err) = local(&scratch, gateway.addr, &["nodes", "remove", "far-pi"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("removed node "), "{out}");
    node.line("removed this device", READ_LIMIT);
    let again = node.line("waits for approval", Duration::from_secs(40));
    let second = again.split("request_id=").nth(1).unwrap().split_whitespace().next().unwrap().to_string();
    assert_ne!(second, request);
    let (code, out, err) = local(&scratch, gateway.addr, &["nodes", "reject", &second]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with(&format!("rejected request {second}")), "{out}");
    assert!(pending(&scratch, gateway.addr).iter().all(|r| r["requestId"] != second.as_str()));
    // An unknown request: the gateway's error, exit 1.
    let (code, _, err) = local(&scratch, gateway.addr, &["nodes", "approve", "no-such-request"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("unknown requestId"), "{err}");
}

#[test]
fn a_remote_operator_exits_4_until_its_device_is_approved() {
    let scratch = Scratch::new("approval-operator");
    let gateway = serve_binary(&["--state-dir", &scratch.path("gw")]);
    let proxy = forwarded(gateway.addr);
    let remote = |args: &[&str]| {
        let url = url(proxy.addr);
        let mut all = args.to_vec();
        all.extend_from_slice(&["--url", &url, "--token", TOKEN]);
        scratch.goclaw("remote", &all, &[])
    };
    let output = remote(&["nodes"]);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(4), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("waiting for approval") && err.contains("goclaw nodes approve"), "{err}");
    let request = err.split("request ").nth(1).unwrap().split(')').next().unwrap().to_string();
    // Asking again is the same request, still exit 4.
    let output = remote(&["invoke", "x", "echo"]);
    assert_eq!(output.status.code(), Some(4));
    assert!(stderr(&output).contains(&request), "{}", stderr(&output));

    let row = pending(&scratch, gateway.addr).into_iter().find(|r| r["requestId"] == request.as_str()).unwrap();
    assert_eq!((row["role"].as_str(), row["kind"].as_str()), (Some("operator"), Some("device")), "{row}");
    let (code, _, err) = local(&scratch, gateway.addr, &["nodes", "approve", &request]);
    assert_eq!(code, Some(0), "{err}");
    assert!(wait_for(READ_LIMIT, || remote(&["nodes"]).status.code() == Some(0)));
    assert_eq!(stdout(&remote(&["nodes", "--json"])).trim(), "[]");
}

#[test]
fn with_local_auto_approve_off_the_gateways_host_still_decides() {
    // Even a local device waits; the host's operator gets in without one
    // (the shared token on loopback) and approves a node.
    let scratch = Scratch::new("approval-strict");
    let gateway = serve_binary(&["--state-dir", &scratch.path("gw"), "--local-auto-approve", "false"]);
    let state = scratch.path("near");
    let url = url(gateway.addr);
    let node = Background::start(&["node", "--url", &url, "--token", TOKEN, "--id", "near", "--state-dir", &state]);
    let line = node.line("waits for approval", READ_LIMIT);
    let request = line.split("request_id=").nth(1).unwrap().split_whitespace().next().unwrap().to_string();
    let (code, _, err) = local(&scratch, gateway.addr, &["nodes", "approve", &request]);
    assert_eq!(code, Some(0), "{err}");
    node.line("connected to the gateway", Duration::from_secs(40));
    let (code, out, _) = local(&scratch, gateway.addr, &["invoke", "near", "echo", "1"]);
    assert_eq!((code, out.trim()), (Some(0), "1"));
}
