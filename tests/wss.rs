//! `wss://` (SPEC §8) with the binary: `goclaw node` and the operator
//! commands reach a goclaw gateway through a TLS-terminating relay, trusting
//! its certificate by fingerprint (`--pin-sha256`, a self-signed
//! certificate as `openssl req -x509` makes it) or by CA (`--ca-file`), and
//! say in one line what is wrong when they cannot.
#![cfg(feature = "tls")]

mod clients;
mod support;

use clients::*;
use support::{Background, READ_LIMIT, TOKEN, serve_binary};

#[test]
fn a_node_and_operators_over_wss_with_a_pinned_certificate() {
    let scratch = Scratch::new("wss-pin");
    let pki = Pki::new(&scratch.dir.join("pki"));
    let gateway = serve_binary(&["--state-dir", &scratch.path("gw")]);
    let relay = tls(gateway.addr, &pki, "self.pem", "self.key", "127.0.0.1");
    // The whole line openssl prints is accepted, as the README shows it.
    let pin = pki.fingerprint("self.pem");
    let url = format!("wss://localhost:{}", relay.addr.port());
    let state = scratch.path("node");
    let node = Background::start(&[
        "node",
        "--url",
        &url,
        "--token",
        TOKEN,
        "--pin-sha256",
        &pin,
        "--id",
        "tls-pi",
        "--state-dir",
        &state,
    ]);
    node.line("connected to the gateway", READ_LIMIT);
    let output = scratch.goclaw(
        "op",
        &["invoke", "tls-pi", "echo", "[1]", "--url", &url, "--token", TOKEN],
        &[("GOCLAW_PIN_SHA256", pin.as_str())],
    );
    assert_eq!((output.status.code(), stdout(&output).trim()), (Some(0), "[1]"), "{}", stderr(&output));

    // No trust given: the system's roots do not know it.
    let fails = |extra: &[&str]| {
        let mut args = vec!["nodes", "--url", &url, "--token", TOKEN];
        args.extend_from_slice(extra);
        let output = scratch.goclaw("op", &args, &[]);
        assert_eq!(output.status.code(), Some(3), "{extra:?}: {}", stderr(&output));
        assert_eq!(stderr(&output).lines().count(), 1, "{}", stderr(&output));
        stderr(&output)
    };
    let err = fails(&[]);
    assert!(err.contains("pass --ca-file or --pin-sha256") || err.contains("--pin-sha256 instead"), "{err}");
    let wrong = "AB:".repeat(31) + "AB";
    let err = fails(&["--pin-sha256", &wrong]);
    assert!(err.contains("certificate fingerprint mismatch: expected sha256 AB:AB"), "{err}");
    // wss:// to a plain ws:// gateway.
    let plain = format!("wss://127.0.0.1:{}/ws", gateway.addr.port());
    let output = scratch.goclaw("op", &["nodes", "--url", &plain, "--pin-sha256", &pin], &[]);
    assert_eq!(output.status.code(), Some(3));
    assert!(stderr(&output).contains("does not speak TLS"), "{}", stderr(&output));
    // A pin or CA file with a ws:// URL is a mistake in the command line.
    let ws = format!("ws://{}/ws", gateway.addr);
    let output = scratch.goclaw("op", &["nodes", "--url", &ws, "--pin-sha256", &pin], &[]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let output = scratch.goclaw("op", &["nodes", "--url", &url, "--pin-sha256", "12:34"], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("--pin-sha256"), "{}", stderr(&output));
}

#[test]
fn operators_over_wss_with_a_ca_file() {
    let scratch = Scratch::new("wss-ca");
    let pki = Pki::new(&scratch.dir.join("pki"));
    let gateway = serve_binary(&["--state-dir", &scratch.path("gw")]);
    let relay = tls(gateway.addr, &pki, "leaf.pem", "leaf.key", "127.0.0.1");
    let ca = pki.path("ca.pem");
    for host in ["localhost", "127.0.0.1"] {
        let url = format!("wss://{host}:{}/ws", relay.addr.port());
        let output = scratch.goclaw("op", &["nodes", "--json", "--url", &url, "--token", TOKEN, "--ca-file", &ca], &[]);
        assert_eq!((output.status.code(), stdout(&output).trim()), (Some(0), "[]"), "{}", stderr(&output));
    }
    // The certificate names localhost and 127.0.0.1, not this address.
    let elsewhere = tls(gateway.addr, &pki, "leaf.pem", "leaf.key", "127.0.0.2");
    let url = format!("wss://127.0.0.2:{}/ws", elsewhere.addr.port());
    let output = scratch.goclaw("op", &["nodes", "--url", &url, "--token", TOKEN, "--ca-file", &ca], &[]);
    assert_eq!(output.status.code(), Some(3));
    let err = stderr(&output);
    assert!(err.contains("certificate is not valid for 127.0.0.2; it is for localhost, 127.0.0.1"), "{err}");
    // Another CA's file.
    let other = pki.path("self.pem");
    let url = format!("wss://localhost:{}/ws", relay.addr.port());
    let output = scratch.goclaw("op", &["nodes", "--url", &url, "--token", TOKEN, "--ca-file", &other], &[]);
    assert_eq!(output.status.code(), Some(3));
    assert!(stderr(&output).contains("check --ca-file, or pass --pin-sha256"), "{}", stderr(&output));
    let output = scratch.goclaw("op", &["nodes", "--url", &url, "--ca-file", "/nonexistent/ca.pem"], &[]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
}
