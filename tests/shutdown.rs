//! Graceful shutdown (SPEC §7), in-process: every client gets the
//! `shutdown` event and close 1001, every pending invoke `UNAVAILABLE`,
//! stragglers are cut after the grace period, and every thread is joined.

mod support;

use std::thread;
use std::time::{Duration, Instant};

use goclaw::InvokeOutcome;
use serde_json::json;
use support::*;

/// Reads the shutdown event, then the close; returns the close code.
fn shutdown_then_close(ws: &mut Client) -> u16 {
    let event = recv_event(ws, "shutdown");
    assert_eq!(event["payload"], json!({"reason": "shutdown", "restartExpectedMs": 5000}));
    close_code(&recv_close(ws))
}

#[test]
fn every_client_gets_the_event_and_a_close_and_every_invoke_an_answer() {
    let gw = start(config());
    let addr = gw.local_addr();
    let mut nodes: Vec<Client> = (0..5).map(|i| node(addr, &format!("n{i}"), &["wait"])).collect();
    let mut operators: Vec<Client> = (0..5).map(|_| operator(addr)).collect();
    // Upgraded but not connected yet: a client too.
    let mut fresh = ws(addr);
    for (i, op) in operators.iter_mut().enumerate() {
        request(op, "inv", "node.invoke", json!({"nodeId": format!("n{i}"), "command": "wait", "timeoutMs": 60_000}));
    }
    for node in &mut nodes {
        recv_event(node, "node.invoke.request");
    }

    let stopping = thread::spawn(move || gw.shutdown());
    for op in &mut operators {
        recv_event(op, "shutdown");
        let res = recv_res(op, "inv");
        assert_eq!(res["error"]["details"]["code"], "UNAVAILABLE", "{res}");
        assert_eq!(close_code(&recv_close(op)), 1001);
    }
    for ws in nodes.iter_mut().chain([&mut fresh]) {
        assert_eq!(shutdown_then_close(ws), 1001);
    }
    let report = stopping.join().unwrap();
    assert_eq!(report.notified, 11);
    assert_eq!(report.unavailable, 5);
    assert_eq!(report.cut, 0, "every client answered the close in time");
    assert_eq!(report.joined, 11);
}

#[test]
fn clients_that_do_not_answer_are_cut_after_the_grace_period() {
    let mut config = config();
    config.shutdown_timeout = Duration::from_millis(500);
    let gw = start(config);
    let addr = gw.local_addr();
    let mut deaf = operator(addr);
    let mut polite = operator(addr);
    let mut half_open = tcp(addr, None, None); // never sends its upgrade request
    assert!(wait_for(Duration::from_secs(5), || gw.active_connections() == 3));
    let metrics_before = gw.metrics().invokes(InvokeOutcome::Unavailable);

    let started = Instant::now();
    let stopping = thread::spawn(move || gw.shutdown());
    assert_eq!(shutdown_then_close(&mut polite), 1001);
    let report = stopping.join().unwrap();
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(450) && took < Duration::from_secs(3), "{took:?}");
    assert_eq!(report.cut, 2, "{report:?}");
    assert_eq!(report.joined, 3);
    // The deaf client still finds the event and the close 1001 in its buffer.
    let (code, reason) = raw_close(deaf.get_mut()).expect("close frame delivered");
    assert_eq!((code, reason.as_str()), (1001, "server shutting down"));
    let mut rest = Vec::new();
    assert_eq!(std::io::Read::read_to_end(&mut half_open, &mut rest).unwrap_or(0), 0);
    assert_eq!(metrics_before, 0);
}

#[test]
fn shutdown_with_nobody_connected_is_immediate_and_the_port_is_freed() {
    let gw = start(config());
    let addr = gw.local_addr();
    let started = Instant::now();
    let report = gw.shutdown();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(report.joined, 0);
    assert!(std::net::TcpStream::connect(addr).is_err(), "listener closed");
}
