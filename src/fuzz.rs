//! Entry points for the fuzz targets in `fuzz/` and for the corpus replay
//! below: one per parser that reads client input. Compiled only for tests
//! and for cargo-fuzz (`cfg(fuzzing)`), never into the shipped binary. Each
//! takes arbitrary bytes and must not panic; each also asserts what the
//! gateway would send back (responses echoing client data, the node list
//! entry, HTTP answers) is well formed, so an escaping bug is a finding too.

use serde_json::value::RawValue;

use crate::gateway::{Forms, NodeIdentity, NodeInfo, write_invoke_ok};
use crate::wire::frame::{ErrorCode, Failure};
use crate::wire::{connect, frame, http, params};

/// A text frame as the connection loop parses it: envelope, then the
/// params of whichever method it names.
pub fn request_frame(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match frame::parse_request(text) {
        Ok(request) => {
            assert_json(&error_response(Some(request.id)));
            match request.method.as_ref() {
                "connect" => connect_params_of(request.params),
                "node.invoke" => {
                    let _ = params::parse_invoke(request.params);
                }
                "node.invoke.result" => invoke_result_of(request.params),
                _ => {}
            }
        }
        Err(bad) => assert_json(&error_response(bad.id)),
    }
}

/// `connect` params: validation, and the node-list entry built from them.
pub fn connect_params(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(raw) = serde_json::from_str::<&RawValue>(text) else { return };
    connect_params_of(Some(raw));
}

/// `node.invoke.result` params: validation, and the response forwarded to
/// the operator.
pub fn invoke_result(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(raw) = serde_json::from_str::<&RawValue>(text) else { return };
    invoke_result_of(Some(raw));
}

/// The HTTP upgrade request: path, headers, origin; the answer either way.
pub fn upgrade_request(data: &[u8]) {
    let allowed = ["https://dash.example".to_string()];
    match http::check_request(data, &allowed) {
        Ok(Some(upgrade)) => {
            assert!(upgrade.head_len <= data.len());
            let response = http::switching_protocols(&upgrade);
            assert!(response.ends_with("\r\n\r\n") && response.matches("\r\n\r\n").count() == 1);
        }
        Ok(None) => {}
        Err(refusal) => {
            let response = refusal.response();
            assert!(response.starts_with("HTTP/1.1 ") && response.contains("\r\nConnection: close\r\n"));
        }
    }
}

fn connect_params_of(params: Option<&RawValue>) {
    if let Ok(hello) = connect::parse_connect(params) {
        let info = NodeInfo::new(hello.client.id.clone(), NodeIdentity::Token, hello, "127.0.0.1", 0);
        assert_json(info.json.as_bytes());
        assert_json(info.describe().as_bytes());
    }
}

fn invoke_result_of(params: Option<&RawValue>) {
    let Ok(result) = params::parse_result(params) else { return };
    for forms in [Forms::Both, Forms::PayloadOnly] {
        let mut out = Vec::new();
        write_invoke_ok(&mut out, r#""r1""#, "node-1", "echo", &result.outcome, forms);
        assert_json(&out);
    }
}

fn error_response(id: Option<&str>) -> Vec<u8> {
    let mut out = Vec::new();
    let failure = Failure::new(ErrorCode::InvalidRequest, "message with \"quotes\" and \u{1}");
    frame::write_error(&mut out, id, &failure);
    out
}

fn assert_json(bytes: &[u8]) {
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
        panic!("the gateway would send invalid JSON ({e}): {}", String::from_utf8_lossy(bytes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_take_anything() {
        let inputs: &[&[u8]] = &[
            b"",
            b"\xff\xfe",
            b"{",
            br#"{"type":"req","id":"1","method":"connect","params":{"minProtocol":3,"maxProtocol":3,"client":{"id":"a\"b"}}}"#,
            br#"{"type":"req","id":1e999,"method":"node.invoke.result","params":{"id":"6f1c1f0e-2a47-4c1e-9a57-1d2b7f3c9a10","ok":true,"payloadJSON":"[1]"}}"#,
            b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        ];
        for input in inputs {
            request_frame(input);
            connect_params(input);
            invoke_result(input);
            upgrade_request(input);
        }
    }

    // Replays every fuzz corpus file through its entry: the inputs the
    // fuzzers start from (and any crash they ever found, once committed)
    // keep passing in plain `cargo test`. A local `cargo fuzz run` grows the
    // corpus; those files are replayed too.
    use std::fs;
    use std::io::ErrorKind;
    use std::path::Path;

    type Entry = fn(&[u8]);

    #[test]
    fn the_fuzz_corpus_replays_without_a_panic() {
        let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        let entries: [(&str, Entry); 4] = [
            ("request_frame", request_frame),
            ("connect_params", connect_params),
            ("invoke_result", invoke_result),
            ("upgrade_request", upgrade_request),
        ];
        for (target, entry) in entries {
            let files: Vec<_> = fs::read_dir(corpus.join(target)).unwrap().map(|e| e.unwrap().path()).collect();
            assert!(files.len() >= 3, "{target}: seed corpus missing");
            for file in files {
                match fs::read(&file) {
                    Ok(input) => entry(&input),
                    // A running fuzzer minimizes its corpus under our feet.
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => panic!("{}: {e}", file.display()),
                }
            }
        }
    }
}
