//! Device identity and pairing (SPEC §4.4) against the real gateway: Ed25519
//! devices signing as OpenClaw clients do, silent local approval, pairing
//! requests for everything else, device tokens, roles, removal, and the
//! store on disk.

mod support;

use serde_json::{Value, json};
use support::*;

/// A proxy in front of the gateway: never local (SPEC §4.4).
const REMOTE: &[(&str, &str)] = &[("X-Forwarded-For", "203.0.113.7")];

fn gateway() -> goclaw::Gateway {
    let mut config = config();
    config.allow_token_nodes = false;
    start(config)
}

/// `connect` as `device`, from loopback or through a proxy; the response.
fn join(
    addr: std::net::SocketAddr,
    device: &Device,
    role: &str,
    remote: bool,
    token: Option<&str>,
    device_token: Option<&str>,
) -> (Client, Value) {
    let headers = if remote { REMOTE } else { &[] };
    let (mut ws, challenge) = upgrade_with(tcp(addr, None, None), headers);
    let res = hello(&mut ws, device.connect(&challenge, role, token, device_token));
    (ws, res)
}

fn details(res: &Value) -> &Value {
    &res["error"]["details"]
}

#[test]
fn a_local_device_is_approved_silently_and_gets_a_device_token() {
    let gw = gateway();
    let addr = gw.local_addr();
    let device = Device::new();
    let (_node, res) = join(addr, &device, "node", false, Some(TOKEN), None);
    assert_eq!(res["ok"], true, "{res}");
    let auth = &res["payload"]["auth"];
    assert_eq!((auth["role"].as_str(), auth["scopes"].clone()), (Some("node"), json!([])));
    let token = auth["deviceToken"].as_str().expect("a device token").to_string();

    // The node id is the device id; two hosts that both say client.id
    // "node-host" are two nodes.
    let other = Device::new();
    let (_other, res) = join(addr, &other, "node", false, Some(TOKEN), None);
    assert_eq!(res["ok"], true, "{res}");
    let mut op = operator(addr);
    request(&mut op, "l", "node.list", json!({}));
    let list = recv_res(&mut op, "l");
    let mut ids: Vec<&str> =
        list["payload"]["nodes"].as_array().unwrap().iter().map(|n| n["nodeId"].as_str().unwrap()).collect();
    ids.sort_unstable();
    let mut want = vec![device.id(), other.id()];
    want.sort_unstable();
    assert_eq!(ids, want);
    assert!(
        list["payload"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["paired"] == true && n["clientId"] == "node-host")
    );

    // Back with its device token alone (as 2026.9.6 sends it), and in both
    // fields (as 2026.5.7 does): no new token is issued.
    for (token_field, device_field) in [(None, Some(token.as_str())), (Some(token.as_str()), Some(token.as_str()))] {
        let (_again, res) = join(addr, &device, "node", false, token_field, device_field);
        assert_eq!(res["ok"], true, "{res}");
        assert!(res["payload"]["auth"].get("deviceToken").is_none(), "{res}");
    }
    // A wrong token of either kind is refused.
    let (mut ws, res) = join(addr, &device, "node", false, Some("wrong"), Some("wrong"));
    assert_eq!(
        (res["error"]["code"].as_str(), details(&res)["code"].as_str()),
        (Some("INVALID_REQUEST"), Some("UNAUTHORIZED"))
    );
    assert_eq!(close_code(&recv_close(&mut ws)), 1008);
}

#[test]
fn a_remote_device_waits_for_approval_then_gets_in() {
    let gw = gateway();
    let addr = gw.local_addr();
    let mut op = operator(addr);
    let device = Device::new();
    let (mut ws, res) = join(addr, &device, "node", true, Some(TOKEN), None);
    assert_eq!(res["error"]["code"], "NOT_PAIRED", "{res}");
    let d = details(&res);
    assert_eq!((d["code"].as_str(), d["reason"].as_str()), (Some("PAIRING_REQUIRED"), Some("not-paired")));
    assert_eq!(
        (d["pauseReconnect"].clone(), d["recommendedNextStep"].clone()),
        (json!(false), json!("wait_then_retry"))
    );
    assert_eq!((d["deviceId"].as_str(), d["requestedRole"].as_str()), (Some(device.id().as_str()), Some("node")));
    let request_id = d["requestId"].as_str().unwrap().to_string();
    assert_eq!(close_code(&recv_close(&mut ws)), 1008);
    let announced = recv_event(&mut op, "device.pair.requested");
    assert_eq!(announced["payload"]["requestId"], request_id.as_str());
    assert!(announced["seq"].is_u64());

    // The same device again: the same request, not a new one.
    let (_ws, res) = join(addr, &device, "node", true, Some(TOKEN), None);
    assert_eq!(details(&res)["requestId"], request_id.as_str());

    request(&mut op, "p", "node.pair.list", json!({}));
    let pending = recv_res(&mut op, "p");
    let rows = pending["payload"]["pending"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{pending}");
    assert_eq!(
        (rows[0]["requestId"].as_str(), rows[0]["nodeId"].as_str()),
        (Some(request_id.as_str()), Some(device.id().as_str()))
    );
    assert_eq!(rows[0]["commands"], json!(["echo", "system.which"]));
    // Where it asked from (here the proxy's address): what an operator weighs.
    assert_eq!(rows[0]["remoteIp"], "127.0.0.1");

    request(&mut op, "a", "node.pair.approve", json!({"requestId": request_id}));
    let (mut approved, mut resolved) = (Value::Null, Value::Null);
    while approved.is_null() || resolved.is_null() {
        let frame = recv(&mut op);
        if frame["id"] == "a" {
            approved = frame;
        } else if frame["event"] == "node.pair.resolved" {
            resolved = frame;
        }
    }
    assert_eq!(approved["payload"]["node"]["nodeId"], device.id().as_str(), "{approved}");
    assert_eq!(
        (resolved["payload"]["decision"].as_str(), resolved["payload"]["requestId"].as_str()),
        (Some("approved"), Some(request_id.as_str()))
    );

    let (_node, res) = join(addr, &device, "node", true, Some(TOKEN), None);
    assert_eq!(res["ok"], true, "{res}");
    request(&mut op, "i", "node.invoke", json!({"nodeId": device.id(), "command": "echo", "params": 1}));
    assert!(recv_event(&mut op, "presence")["payload"]["nodeId"] == device.id().as_str());
}

#[test]
fn the_shared_token_alone_lets_no_one_in_from_elsewhere() {
    let gw = gateway();
    let addr = gw.local_addr();
    // A node without a device: refused unless token nodes are allowed.
    let mut ws = ws(addr);
    let res = hello(&mut ws, connect_params("node", "pi", &["echo"]));
    assert_eq!(
        (res["error"]["code"].as_str(), details(&res)["code"].as_str()),
        (Some("NOT_PAIRED"), Some("DEVICE_IDENTITY_REQUIRED"))
    );
    // An operator without a device through a proxy: refused.
    let (mut ws, _) = upgrade_with(tcp(addr, None, None), REMOTE);
    let res = hello(&mut ws, connect_params("operator", "op", &[]));
    assert_eq!(details(&res)["code"], "DEVICE_IDENTITY_REQUIRED", "{res}");
    // An operator with an unapproved device through a proxy: a request.
    let device = Device::new();
    let (_ws, res) = join(addr, &device, "operator", true, Some(TOKEN), None);
    assert_eq!(details(&res)["code"], "PAIRING_REQUIRED", "{res}");
    // A node's device asking to be an operator, even locally: a role upgrade.
    let node = Device::new();
    let (_node, res) = join(addr, &node, "node", false, Some(TOKEN), None);
    assert_eq!(res["ok"], true, "{res}");
    let (_ws, res) = join(addr, &node, "operator", false, Some(TOKEN), None);
    assert_eq!(
        (details(&res)["code"].as_str(), details(&res)["reason"].as_str()),
        (Some("PAIRING_REQUIRED"), Some("role-upgrade"))
    );
}

#[test]
fn device_checks_fail_as_openclaw_fails_them() {
    let gw = gateway();
    let addr = gw.local_addr();
    let device = Device::new();
    type Tamper = (&'static str, fn(&mut Value));
    let tamper: [Tamper; 5] = [
        ("DEVICE_AUTH_SIGNATURE_INVALID", |p| p["client"]["displayName"] = json!("x")), // not signed: accepted
        ("DEVICE_AUTH_SIGNATURE_INVALID", |p| p["role"] = json!("operator")),
        ("DEVICE_AUTH_NONCE_MISMATCH", |p| p["device"]["nonce"] = json!("6825e91d-a87f-4854-a2c3-1cefe9bc61df")),
        ("DEVICE_AUTH_SIGNATURE_EXPIRED", |p| p["device"]["signedAt"] = json!(1_000_000)),
        ("DEVICE_AUTH_DEVICE_ID_MISMATCH", |p| p["device"]["id"] = json!("0".repeat(64))),
    ];
    for (i, (code, change)) in tamper.into_iter().enumerate() {
        let (mut ws, challenge) = upgrade(tcp(addr, None, None));
        let mut params = device.connect(&challenge, "node", Some(TOKEN), None);
        change(&mut params);
        let res = hello(&mut ws, params);
        if i == 0 {
            assert_eq!(res["ok"], true, "a field outside the signature: {res}");
            continue;
        }
        assert_eq!(
            (res["error"]["code"].as_str(), details(&res)["code"].as_str()),
            (Some("INVALID_REQUEST"), Some(code)),
            "{res}"
        );
        assert_eq!(close_code(&recv_close(&mut ws)), 1008);
    }
}

#[test]
fn a_token_node_cannot_take_a_device_nodes_id() {
    let mut config = config();
    config.allow_token_nodes = true;
    let gw = start(config);
    let addr = gw.local_addr();
    let device = Device::new();
    let (_node, res) = join(addr, &device, "node", false, Some(TOKEN), None);
    assert_eq!(res["ok"], true, "{res}");
    let mut ws = ws(addr);
    let res = hello(&mut ws, connect_params("node", &device.id(), &["echo"]));
    assert_eq!(res["ok"], false, "{res}");
    assert_eq!(gw.metrics().nodes_connected(), 1);
}

#[test]
fn removing_a_device_closes_its_connection_4001() {
    let gw = gateway();
    let addr = gw.local_addr();
    let device = Device::new();
    let (mut node, res) = join(addr, &device, "node", false, Some(TOKEN), None);
    assert_eq!(res["ok"], true, "{res}");
    let mut op = operator(addr);
    request(&mut op, "d", "device.pair.list", json!({}));
    let paired = recv_res(&mut op, "d");
    assert_eq!(paired["payload"]["paired"][0]["deviceId"], device.id().as_str(), "{paired}");
    request(&mut op, "r", "device.pair.remove", json!({"deviceId": device.id()}));
    assert_eq!(recv_res(&mut op, "r")["ok"], true);
    let close = recv_close(&mut node);
    assert_eq!((close_code(&close), close.unwrap().reason.to_string()), (4001, "device removed".to_string()));
    // Its device token went with it.
    let (_ws, res) = join(addr, &device, "node", true, None, Some("anything"));
    assert_eq!(details(&res)["code"], "UNAUTHORIZED", "{res}");
    request(&mut op, "x", "device.pair.remove", json!({"deviceId": device.id()}));
    assert_eq!(recv_res(&mut op, "x")["error"]["code"], "INVALID_REQUEST");
}

#[test]
fn approvals_are_on_disk_and_a_bad_store_stops_the_start() {
    let dir = std::env::temp_dir().join(format!("goclaw-pairing-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let device = Device::new();
    {
        let mut config = config();
        config.allow_token_nodes = false;
        config.state_dir = Some(dir.clone());
        let gw = start(config);
        let (_node, res) = join(gw.local_addr(), &device, "node", false, Some(TOKEN), None);
        assert_eq!(res["ok"], true, "{res}");
        gw.shutdown();
    }
    let store = dir.join(goclaw::gateway::PAIRING_FILE);
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&store).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    // Restarted from the same directory: still approved, even from elsewhere.
    let mut config = config();
    config.allow_token_nodes = false;
    config.state_dir = Some(dir.clone());
    let gw = start(config.clone());
    let (_node, res) = join(gw.local_addr(), &device, "node", true, Some(TOKEN), None);
    assert_eq!(res["ok"], true, "{res}");
    drop(gw);
    // A torn store is refused with one line naming it, never reset.
    std::fs::write(&store, "{\"version\":1,\"paired\":[").unwrap();
    let error = goclaw::Gateway::start(config).expect_err("a corrupt store stops the start").to_string();
    assert!(error.contains("pairing.json") && !error.contains('\n'), "{error}");
    assert_eq!(std::fs::read_to_string(&store).unwrap(), "{\"version\":1,\"paired\":[");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Issue 12: the gateway process killed (SIGKILL) at any moment of a burst
/// of approvals leaves a store that loads and holds every approval an
/// operator saw acknowledged.
#[test]
fn a_killed_gateway_keeps_every_acknowledged_approval() {
    const DEVICES: usize = 4; // pending requests one source may hold
    let dir = std::env::temp_dir().join(format!("goclaw-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let state = dir.to_str().unwrap().to_string();
    let serve = || Running::start(serve_command(BIN, "127.0.0.1:0", &["--state-dir", &state]));
    let (mut devices, mut acknowledged) = (Vec::new(), Vec::new());
    for round in 0..=DEVICES {
        let mut gateway = serve();
        let addr = gateway.addr;
        // Requests the last round left pending are on disk too: clear them,
        // as one source may hold only four.
        let mut op = operator(addr);
        request(&mut op, "p", "node.pair.list", json!({}));
        for (i, row) in recv_res(&mut op, "p")["payload"]["pending"].as_array().unwrap().iter().enumerate() {
            request(&mut op, &format!("r{i}"), "node.pair.reject", json!({"requestId": row["requestId"]}));
            assert_eq!(recv_res(&mut op, &format!("r{i}"))["ok"], true);
        }
        let first = devices.len();
        devices.extend((0..DEVICES).map(|_| Device::new()));
        let requests: Vec<String> = devices[first..]
            .iter()
            .map(|d| {
                let (_ws, res) = join(addr, d, "node", true, Some(TOKEN), None);
                details(&res)["requestId"].as_str().unwrap_or_else(|| panic!("{res}")).to_string()
            })
            .collect();
        // Every approval is sent at once; the process dies after the
        // `round`-th acknowledgement, with the rest in flight.
        for (i, request_id) in requests.iter().enumerate() {
            request(&mut op, &format!("a{i}"), "node.pair.approve", json!({"requestId": request_id}));
        }
        let mut seen = 0;
        while seen < round {
            let frame = recv(&mut op);
            if let Some(i) = frame["id"].as_str().and_then(|id| id.strip_prefix('a')) {
                assert_eq!(frame["ok"], true, "{frame}");
                seen += 1;
                acknowledged.push(first + i.parse::<usize>().unwrap());
            }
        }
        gateway.signal(nix::sys::signal::Signal::SIGKILL);
        assert_eq!(gateway.wait(READ_LIMIT), -1, "killed by the signal");
    }
    // The store loads, and every acknowledged device gets in from elsewhere.
    let gateway = serve();
    for &i in &acknowledged {
        let (_ws, res) = join(gateway.addr, &devices[i], "node", true, Some(TOKEN), None);
        assert_eq!(res["ok"], true, "{res}");
    }
    assert_eq!(acknowledged.len(), DEVICES * (DEVICES + 1) / 2);
    drop(gateway);
    std::fs::remove_dir_all(&dir).unwrap();
}
