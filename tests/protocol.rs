//! Wire protocol v3 (SPEC §4) against the real gateway, over real sockets.

mod support;

use std::time::Duration;

use goclaw::InvokeOutcome;
use serde_json::{Value, json};
use support::*;

#[test]
fn challenge_then_hello_ok() {
    let gw = start(config());
    let (mut ws, challenge) = upgrade(tcp(gw.local_addr(), None, None));
    assert_eq!(challenge["type"], "event");
    // A targeted event: no seq (SPEC §4).
    assert!(challenge.get("seq").is_none(), "{challenge}");
    assert_eq!(challenge["payload"]["nonce"].as_str().unwrap().len(), 36);
    assert!(challenge["payload"]["ts"].as_u64().unwrap() > 1_600_000_000_000);

    let res = hello(&mut ws, connect_params("node", "pi", &["echo"]));
    assert_eq!(res["ok"], true, "{res}");
    let payload = &res["payload"];
    assert_eq!(payload["type"], "hello-ok");
    assert_eq!(payload["protocol"], 3);
    assert_eq!(payload["server"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(payload["server"]["connId"].as_str().unwrap().len(), 36);
    assert_eq!(payload["policy"]["maxPayload"], 524_288);
    assert_eq!(payload["policy"]["tickIntervalMs"], 60_000);
    assert_eq!(payload["policy"]["pingIntervalMs"], 4_000);
    assert!(payload["policy"]["maxBufferedBytes"].as_u64().unwrap() >= 524_288);
    assert_eq!(payload["auth"], json!({"role": "node", "scopes": []}));
    assert!(payload["snapshot"].is_object());
    let methods = payload["features"]["methods"].as_array().unwrap();
    for method in ["node.invoke", "node.describe", "node.event", "node.runnerInventory.update"] {
        assert!(methods.contains(&json!(method)), "{method}");
    }
    let events = payload["features"]["events"].as_array().unwrap();
    assert!(events.contains(&json!("presence")));
}

#[test]
fn connect_failures_answer_then_close_1008() {
    let gw = start(config());
    let addr = gw.local_addr();
    let mut wrong = connect_params("node", "n", &[]);
    wrong["auth"]["token"] = json!("wrong");
    let mut missing = connect_params("operator", "o", &[]);
    missing.as_object_mut().unwrap().remove("auth");
    let mut old = connect_params("node", "n", &[]);
    old["minProtocol"] = json!(1);
    old["maxProtocol"] = json!(2);
    let mut anonymous_node = connect_params("node", "n", &[]);
    anonymous_node["client"].as_object_mut().unwrap().remove("id");
    let cases = [
        (json!({"type": "req", "id": "1", "method": "connect", "params": wrong}), "UNAUTHORIZED", Some("1")),
        (json!({"type": "req", "id": "2", "method": "connect", "params": missing}), "UNAUTHORIZED", Some("2")),
        (json!({"type": "req", "id": "3", "method": "connect", "params": old}), "PROTOCOL_MISMATCH", Some("3")),
        (json!({"type": "req", "id": "4", "method": "health"}), "INVALID_REQUEST", Some("4")),
        (json!({"type": "req", "id": "5", "method": "connect"}), "INVALID_REQUEST", Some("5")),
        (
            json!({"type": "req", "id": "6", "method": "connect", "params": anonymous_node}),
            "INVALID_REQUEST",
            Some("6"),
        ),
        (json!({"hello": "there"}), "INVALID_REQUEST", None),
    ];
    for (frame, code, id) in cases {
        let mut ws = ws(addr);
        send(&mut ws, &frame);
        let res = recv(&mut ws);
        assert_eq!(res["ok"], false, "{frame}: {res}");
        assert_eq!(res["error"]["details"]["code"], code, "{frame}: {res}");
        assert_eq!(res["id"].as_str(), id, "{frame}: {res}");
        // The real gateway's answer to a mismatch, which makes a 2026.9.6
        // node host fall back to v3 (OPENCLAW.md §3): close 1002.
        let want = if code == "PROTOCOL_MISMATCH" { 1002 } else { 1008 };
        assert_eq!(close_code(&recv_close(&mut ws)), want, "{frame}");
    }
    let errors = gw.metrics();
    assert_eq!(errors.errors(goclaw::ErrorType::Auth), 2);
}

#[test]
fn no_token_configured_means_no_auth_on_loopback() {
    let mut config = config();
    config.token = None;
    let gw = start(config);
    let mut ws = ws(gw.local_addr());
    let mut params = connect_params("operator", "o", &[]);
    params["auth"]["token"] = json!("anything");
    assert_eq!(hello(&mut ws, params)["ok"], true);
}

#[test]
fn requests_after_connect() {
    let gw = start(config());
    let addr = gw.local_addr();
    let mut node = node(addr, "pi", &["echo", "device.status"]);
    let mut op = operator(addr);

    request(&mut op, "h", "health", json!(null));
    let health = recv_res(&mut op, "h");
    assert_eq!(health["payload"]["status"], "ok");
    assert_eq!(health["payload"]["connections"], 2);
    assert_eq!(health["payload"]["nodes"], 1);
    assert!(health["payload"]["uptimeMs"].is_u64());

    request(&mut op, "l", "node.list", json!({}));
    let list = recv_res(&mut op, "l");
    let nodes = list["payload"]["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0]["nodeId"], "pi");
    assert_eq!(nodes[0]["displayName"], "pi display");
    assert_eq!(nodes[0]["platform"], "test");
    assert_eq!(nodes[0]["version"], "1.2.3");
    assert_eq!(nodes[0]["commands"], json!(["device.status", "echo"]));
    assert!(nodes[0]["connectedAtMs"].is_u64());

    // (is the node asking, method, expected error code)
    let refusals = [
        (true, "node.list", "FORBIDDEN"),
        (true, "node.invoke", "FORBIDDEN"),
        (false, "node.invoke.result", "FORBIDDEN"),
        (false, "connect", "INVALID_REQUEST"),
        (false, "no.such.method", "UNKNOWN_METHOD"),
        (true, "health2", "UNKNOWN_METHOD"),
    ];
    for (from_node, method, code) in refusals {
        let ws = if from_node { &mut node } else { &mut op };
        request(ws, "x", method, json!({}));
        let res = recv_res(ws, "x");
        assert_eq!(res["error"]["details"]["code"], code, "{method}: {res}");
    }
}

#[test]
fn malformed_frames_get_invalid_request_and_the_connection_stays_usable() {
    let gw = start(config());
    let mut op = operator(gw.local_addr());
    let long_id = "i".repeat(200);
    let cases: Vec<(String, Value)> = vec![
        ("not json".into(), Value::Null),
        ("[1,2,3]".into(), Value::Null),
        (r#"{"type":"req","id":"a1"}"#.into(), json!("a1")),
        (r#"{"type":"event","id":"a2","method":"health"}"#.into(), json!("a2")),
        (r#"{"id":"a3","method":"health"}"#.into(), json!("a3")),
        (r#"{"type":"req","id":7,"method":"health"}"#.into(), json!(7)),
        (r#"{"type":"req","id":"a4","id":"a5","method":"health"}"#.into(), Value::Null),
        (format!(r#"{{"type":"req","id":"{long_id}","method":"health"}}"#), Value::Null),
        ("{\"type\":\"req\",\"id\":\"a6\",\"method\":\"node.invoke\",\"params\":{\"nodeId\":\"x\\u0000\",\"command\":\"c\"}}".into(), json!("a6")),
        (r#"{"type":"req","id":"a7","method":"node.invoke","params":{"nodeId":"x","command":"c","timeoutMs":1e400}}"#.into(), json!("a7")),
        (format!(r#"{{"type":"req","id":"a8","method":"health","params":{}{}}}"#, "[".repeat(50_000), "]".repeat(50_000)), Value::Null),
    ];
    for (frame, id) in cases {
        op.send(tungstenite::Message::text(frame.clone())).unwrap();
        let res = recv(&mut op);
        let short = &frame[..frame.len().min(60)];
        if id == Value::Null && frame.contains("a8") {
            // Deep nesting in params is skipped, not parsed: the request is valid.
            assert_eq!(res["ok"], true, "{short}: {res}");
            continue;
        }
        assert_eq!(res["ok"], false, "{short}: {res}");
        assert_eq!(res["error"]["details"]["code"], "INVALID_REQUEST", "{short}: {res}");
        assert_eq!(res["id"], id, "{short}: {res}");
    }
    request(&mut op, "ok", "health", json!(null));
    assert_eq!(recv_res(&mut op, "ok")["ok"], true);
}

/// Answers the next invoke request on `node` with `result` params (minus id).
fn answer(node: &mut Client, mut result: Value) -> Value {
    let request = recv_event(node, "node.invoke.request");
    result["id"] = request["payload"]["id"].clone();
    request_result(node, result);
    request
}

fn request_result(node: &mut Client, params: Value) {
    request(node, "r", "node.invoke.result", params);
    let ack = recv_res(node, "r");
    assert_eq!(ack["ok"], true, "{ack}");
    assert_eq!(ack["payload"], json!({"ok": true}));
}

#[test]
fn invoke_round_trips() {
    let gw = start(config());
    let addr = gw.local_addr();
    let mut node = node(addr, "pi", &["echo"]);
    let mut op = operator(addr);

    request(&mut op, "1", "node.invoke", json!({"nodeId": "pi", "command": "echo", "params": {"a": [1, "x"]}}));
    let routed = answer(&mut node, json!({"nodeId": "pi", "ok": true, "payload": {"b": 2}}));
    let payload = &routed["payload"];
    assert_eq!(payload["nodeId"], "pi");
    assert_eq!(payload["command"], "echo");
    // paramsJSON only, as the real gateway sends it; no seq on a targeted event.
    assert!(payload.get("params").is_none() && routed.get("seq").is_none(), "{routed}");
    assert_eq!(params_of(&routed), json!({"a": [1, "x"]}));
    assert_eq!(payload["timeoutMs"], 30_000);
    assert!(payload["idempotencyKey"].as_str().is_some_and(|k| !k.is_empty()), "{routed}");
    let res = recv_res(&mut op, "1");
    assert_eq!(res["ok"], true);
    assert_eq!(res["payload"], json!({"ok": true, "nodeId": "pi", "command": "echo", "payload": {"b": 2}}));

    // payloadJSON is forwarded as the node sent it, and parsed as `payload`
    // beside it, as the real gateway answers (the real CLIs print `payload`).
    request(&mut op, "2", "node.invoke", json!({"nodeId": "pi", "command": "echo", "idempotencyKey": "k2"}));
    let routed = answer(&mut node, json!({"ok": true, "payloadJSON": "{\"c\":[3]}"}));
    assert_eq!((params_of(&routed), routed["payload"]["idempotencyKey"].clone()), (Value::Null, json!("k2")));
    let res = recv_res(&mut op, "2");
    assert_eq!(
        (res["payload"]["payloadJSON"].clone(), res["payload"]["payload"].clone()),
        (json!("{\"c\":[3]}"), json!({"c": [3]}))
    );

    // The node's own error comes back as UNAVAILABLE with details.nodeError.
    request(&mut op, "3", "node.invoke", json!({"nodeId": "pi", "command": "echo"}));
    answer(&mut node, json!({"ok": false, "error": {"code": "E_BUSY", "message": "try later"}}));
    let res = recv_res(&mut op, "3");
    assert_eq!(res["error"]["code"], "UNAVAILABLE");
    assert_eq!(res["error"]["details"]["nodeError"], json!({"code": "E_BUSY", "message": "try later"}));

    // Routing errors.
    request(&mut op, "4", "node.invoke", json!({"nodeId": "nobody", "command": "echo"}));
    assert_eq!(recv_res(&mut op, "4")["error"]["details"]["code"], "NODE_NOT_FOUND");
    request(&mut op, "5", "node.invoke", json!({"nodeId": "pi", "command": "reboot"}));
    assert_eq!(recv_res(&mut op, "5")["error"]["details"]["code"], "UNKNOWN_COMMAND");
    request(&mut op, "6", "node.invoke", json!({"nodeId": "pi", "command": "echo", "timeoutMs": 600_001}));
    assert_eq!(recv_res(&mut op, "6")["error"]["details"]["code"], "INVALID_REQUEST");

    // A malformed result is refused and the invoke stays pending.
    request(&mut op, "7", "node.invoke", json!({"nodeId": "pi", "command": "echo"}));
    let routed = recv_event(&mut node, "node.invoke.request");
    let id = routed["payload"]["id"].clone();
    request(&mut node, "bad", "node.invoke.result", json!({"id": id, "ok": true, "payloadJSON": "{"}));
    assert_eq!(recv_res(&mut node, "bad")["error"]["details"]["code"], "INVALID_REQUEST");
    request(&mut node, "bad2", "node.invoke.result", json!({"id": id, "nodeId": "other", "ok": true}));
    assert_eq!(recv_res(&mut node, "bad2")["error"]["details"]["code"], "INVALID_REQUEST");
    request_result(&mut node, json!({"id": id, "ok": true}));
    assert_eq!(invoke_payload(&recv_res(&mut op, "7")), Value::Null);

    assert_eq!(gw.metrics().invokes(InvokeOutcome::Ok), 3);
    assert_eq!(gw.metrics().invokes(InvokeOutcome::Error), 1);
}

#[test]
fn an_operator_can_pipeline_invokes() {
    let gw = start(config());
    let addr = gw.local_addr();
    let mut node = node(addr, "pi", &["echo"]);
    let mut op = operator(addr);
    for i in 0..20 {
        request(&mut op, &format!("p{i}"), "node.invoke", json!({"nodeId": "pi", "command": "echo", "params": i}));
    }
    // Answer in reverse order: responses follow the node, not the requests.
    let mut routed: Vec<Value> = (0..20).map(|_| recv_event(&mut node, "node.invoke.request")).collect();
    routed.reverse();
    for request in &routed {
        let id = request["payload"]["id"].clone();
        request_result(&mut node, json!({"id": id, "ok": true, "payload": params_of(request)}));
    }
    for i in 0..20 {
        let res = recv_res(&mut op, &format!("p{}", 19 - i));
        assert_eq!(invoke_payload(&res), json!(19 - i));
    }
}

#[test]
fn every_invoke_gets_one_answer_on_timeout_and_disconnect() {
    let gw = start(config());
    let addr = gw.local_addr();
    let mut node = node(addr, "slow", &["wait"]);
    let mut op = operator(addr);

    request(&mut op, "t", "node.invoke", json!({"nodeId": "slow", "command": "wait", "timeoutMs": 200}));
    let routed = recv_event(&mut node, "node.invoke.request");
    let res = recv_res(&mut op, "t");
    assert_eq!(res["error"]["details"]["code"], "TIMEOUT", "{res}");
    // The late result is dropped; the node still gets its ack, the operator nothing more.
    request_result(&mut node, json!({"id": routed["payload"]["id"], "ok": true}));

    request(&mut op, "d", "node.invoke", json!({"nodeId": "slow", "command": "wait", "timeoutMs": 60_000}));
    recv_event(&mut node, "node.invoke.request");
    drop(node);
    let res = recv_res(&mut op, "d");
    assert_eq!(res["error"]["details"]["code"], "NODE_DISCONNECTED", "{res}");

    request(&mut op, "after", "health", json!(null));
    assert_eq!(recv_res(&mut op, "after")["ok"], true);
    assert_eq!(gw.metrics().invokes(InvokeOutcome::Timeout), 1);
    assert_eq!(gw.metrics().invokes(InvokeOutcome::Disconnected), 1);
}

#[test]
fn a_node_is_invokable_as_soon_as_it_has_its_hello_ok() {
    let gw = start(config());
    let addr = gw.local_addr();
    let mut op = operator(addr);
    // Repeated: registering after hello-ok would lose this race now and then.
    for i in 0..50 {
        let id = format!("fresh{i}");
        let mut node = node(addr, &id, &["echo"]);
        request(&mut op, &id, "node.invoke", json!({"nodeId": id, "command": "echo", "params": i}));
        answer(&mut node, json!({"ok": true, "payload": i}));
        assert_eq!(invoke_payload(&recv_res(&mut op, &id)), i, "invoke {i}");
    }
}

#[test]
fn a_node_with_a_taken_id_replaces_the_old_one() {
    let gw = start(config());
    let addr = gw.local_addr();
    let mut first = node(addr, "dup", &["echo"]);
    let mut op = operator(addr);
    request(&mut op, "1", "node.invoke", json!({"nodeId": "dup", "command": "echo"}));
    recv_event(&mut first, "node.invoke.request");

    let mut second = node(addr, "dup", &["echo"]);
    assert_eq!(recv_res(&mut op, "1")["error"]["details"]["code"], "NODE_DISCONNECTED");
    let close = recv_close(&mut first);
    assert_eq!(close_code(&close), 4000);
    assert_eq!(close.unwrap().reason.as_str(), "replaced");

    request(&mut op, "2", "node.invoke", json!({"nodeId": "dup", "command": "echo"}));
    answer(&mut second, json!({"ok": true, "payload": "second"}));
    assert_eq!(invoke_payload(&recv_res(&mut op, "2")), "second");
    assert!(wait_for(Duration::from_secs(5), || gw.metrics().nodes_connected() == 1));
}

#[test]
fn operators_see_presence_and_everyone_gets_ticks_in_seq_order() {
    let mut config = config();
    config.tick_interval = Duration::from_millis(50);
    let gw = start(config);
    let addr = gw.local_addr();
    let mut op = operator(addr);
    let node = node(addr, "p1", &[]);
    let connected = recv_event(&mut op, "presence");
    assert_eq!(connected["payload"]["nodeId"], "p1");
    assert_eq!(connected["payload"]["state"], "connected");
    drop(node);
    let gone = recv_event(&mut op, "presence");
    assert_eq!(gone["payload"]["state"], "disconnected");

    let mut last_seq = gone["seq"].as_u64().unwrap();
    for _ in 0..5 {
        let frame = recv(&mut op);
        assert_eq!(frame["type"], "event");
        let seq = frame["seq"].as_u64().unwrap();
        assert_eq!(seq, last_seq + 1, "{frame}");
        last_seq = seq;
        if frame["event"] == "tick" {
            assert!(frame["payload"]["ts"].is_u64());
        }
    }
}
