//! The JSON log file (SPEC §6): valid JSON on every line with the fields as
//! keys, rotation and pruning with small thresholds, a directory that
//! vanishes or cannot be written, and what the binary leaves behind.

mod support;

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use goclaw::{JsonLog, LogLimits};
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use support::*;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("goclaw-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn line(i: usize) -> Vec<u8> {
    format!("{{\"time\":\"2026-11-21T00:00:00.000Z\",\"level\":\"info\",\"msg\":\"line {i:04} {}\"}}\n", "x".repeat(60))
        .into_bytes()
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    names
}

fn gunzip(path: &Path) -> String {
    let mut text = String::new();
    flate2::read::GzDecoder::new(fs::File::open(path).unwrap()).read_to_string(&mut text).unwrap();
    text
}

#[test]
fn rotates_into_three_compressed_backups() {
    let dir = temp_dir("rotate");
    let limits = LogLimits { max_file_bytes: 1000, ..LogLimits::default() };
    let mut log = JsonLog::open(&dir, limits).unwrap();
    for i in 0..100 {
        log.write_line(&line(i)).unwrap();
    }
    log.flush();
    assert_eq!(names(&dir), ["goclaw.log", "goclaw.log.1.gz", "goclaw.log.2.gz", "goclaw.log.3.gz"]);
    let current = fs::read_to_string(dir.join("goclaw.log")).unwrap();
    assert!(current.len() <= 1000 + 100, "{} bytes", current.len());
    // Whole lines in every file, newest in .1, each one JSON.
    let newest_backup = gunzip(&dir.join("goclaw.log.1.gz"));
    let oldest_backup = gunzip(&dir.join("goclaw.log.3.gz"));
    for text in [&current, &newest_backup, &oldest_backup] {
        for l in text.lines() {
            serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        }
    }
    assert!(current.ends_with(&String::from_utf8(line(99)).unwrap()));
    assert!(oldest_backup < newest_backup, "backups are ordered oldest .3 to newest .1");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn prunes_backups_past_their_age() {
    let dir = temp_dir("prune");
    let month_ago = SystemTime::now() - Duration::from_secs(29 * 24 * 3600);
    for (name, old) in [("goclaw.log.1.gz", false), ("goclaw.log.2.gz", true), ("goclaw.log.3.gz", true)] {
        let file = fs::File::create(dir.join(name)).unwrap();
        if old {
            file.set_modified(month_ago).unwrap();
        }
    }
    fs::write(dir.join("goclaw.log.notes"), "not a backup").unwrap();
    fs::File::create(dir.join("goclaw.log.notes")).unwrap().set_modified(month_ago).unwrap();
    let limits = LogLimits { max_file_bytes: 500, ..LogLimits::default() };
    let mut log = JsonLog::open(&dir, limits).unwrap();
    assert_eq!(names(&dir), ["goclaw.log", "goclaw.log.1.gz", "goclaw.log.notes"]);
    // Rotation carries on over the gap without tripping file-rotate.
    for i in 0..40 {
        log.write_line(&line(i)).unwrap();
    }
    assert!(names(&dir).contains(&"goclaw.log.3.gz".to_string()), "{:?}", names(&dir));
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn survives_its_directory_vanishing_and_refuses_an_unwritable_one() {
    let dir = temp_dir("vanish");
    let logs = dir.join("logs");
    let limits = LogLimits { max_file_bytes: 400, ..LogLimits::default() };
    let mut log = JsonLog::open(&logs, limits).unwrap();
    log.write_line(&line(1)).unwrap();
    fs::remove_dir_all(&logs).unwrap();
    for i in 2..30 {
        log.write_line(&line(i)).unwrap();
    }
    assert!(logs.join("goclaw.log").exists());

    let file = dir.join("a-file");
    fs::write(&file, "").unwrap();
    assert!(JsonLog::open(&file.join("logs"), LogLimits::default()).is_err());
    fs::remove_dir_all(&dir).unwrap();
}

const SECRET: &str = "s3cret-token-that-must-not-leak";

/// Runs the binary with `state_dir`, `level` and extra env, lets a few
/// clients come and go (one with a wrong token), SIGTERMs it; returns its
/// stderr.
fn run_binary(state_dir: &Path, level: &str, env: &[(&str, &str)]) -> String {
    let mut command = Command::new(BIN);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--log-level", level])
        .arg("--allow-token-nodes")
        .args(["--state-dir", state_dir.to_str().unwrap()])
        .env_clear()
        .env("GOCLAW_TOKEN", SECRET)
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    // Read the first line to find the port.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !String::from_utf8_lossy(&head).contains("listening") || !head.ends_with(b"\n") {
        assert_eq!(stderr.read(&mut byte).unwrap(), 1, "{}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let addr = head.split_whitespace().find_map(|w| w.strip_prefix("addr=")).unwrap().parse().unwrap();

    let mut wrong = ws(addr);
    let mut params = connect_params("operator", "o", &[]);
    params["auth"]["token"] = json!("wrong-token");
    hello(&mut wrong, params);
    let mut right = ws(addr);
    let mut params = connect_params("node", "logged-node", &[]);
    params["auth"]["token"] = json!(SECRET);
    assert_eq!(hello(&mut right, params)["ok"], true);
    right.close(None).unwrap();
    let _ = recv_close_quietly(&mut right);

    signal_child(&child, Signal::SIGTERM);
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    assert!(child.wait().unwrap().success());
    head + &rest
}

fn recv_close_quietly(ws: &mut Client) -> Option<()> {
    loop {
        ws.read().ok()?;
    }
}

#[test]
fn the_binary_writes_json_lines_with_fields_and_ends_with_a_clean_shutdown_line() {
    let dir = temp_dir("binary");
    let stderr = run_binary(&dir, "debug", &[]);
    let text = fs::read_to_string(dir.join("logs/goclaw.log")).unwrap();
    let lines: Vec<Value> =
        text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    for line in &lines {
        for key in ["time", "level", "msg", "target"] {
            assert!(line[key].is_string(), "{key} in {line}");
        }
        let time = line["time"].as_str().unwrap();
        assert!(time.len() == 24 && time.ends_with('Z') && time.as_bytes()[19] == b'.', "{time}");
    }
    let connected = lines.iter().find(|l| l["msg"] == "client connected").expect("a connect line");
    assert_eq!(connected["node_id"], "logged-node");
    assert_eq!(connected["role"], "node");
    assert!(connected["conn_id"].as_str().unwrap().len() == 36 && connected["addr"].is_string());
    assert!(connected["active"].is_u64());
    let refused = lines.iter().find(|l| l["reason"] == "connect refused").expect("an auth failure line");
    assert_eq!(refused["level"], "warn");
    assert_eq!(refused["code"], 1008);
    assert!(refused["error"].as_str().unwrap().contains("UNAUTHORIZED"));
    assert_eq!(lines.last().unwrap()["msg"], "shutdown complete");
    assert!(!text.contains(SECRET) && !stderr.contains(SECRET), "the token leaked");
    // The console says the same things in key=value form.
    assert!(stderr.contains("client connected") && stderr.contains("node_id=logged-node"), "{stderr}");
    // The startup line says where the file is, on both sinks.
    let file = fs::canonicalize(dir.join("logs/goclaw.log")).unwrap();
    let listening = stderr.lines().find(|l| l.contains("listening")).unwrap();
    assert!(listening.contains(&format!(" log_file={} ", file.display())), "{listening}");
    let listening = lines.iter().find(|l| l["msg"] == "listening").expect("a listening line");
    assert_eq!(listening["log_file"], file.to_str().unwrap());
    // Not under journald: no priority prefixes.
    assert!(stderr.lines().all(|l| !l.starts_with('<')), "{stderr}");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn at_trace_level_the_file_still_holds_only_our_lines_and_never_the_token() {
    let dir = temp_dir("trace");
    let stderr = run_binary(&dir, "trace", &[]);
    let text = fs::read_to_string(dir.join("logs/goclaw.log")).unwrap();
    for line in text.lines() {
        let line: Value = serde_json::from_str(line).unwrap();
        assert!(line["target"].as_str().unwrap().starts_with("goclaw"), "a dependency's line: {line}");
    }
    assert!(!text.contains(SECRET) && !stderr.contains(SECRET), "the token leaked");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_unwritable_state_dir_is_one_warning_then_console_only() {
    let dir = temp_dir("unwritable");
    let file = dir.join("not-a-dir");
    fs::write(&file, "").unwrap();
    let stderr = run_binary(&file, "debug", &[]);
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("cannot write logs")).collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    let listening = stderr.lines().find(|l| l.contains("listening")).unwrap();
    assert!(listening.contains(" log_file=none "), "{listening}");
    assert!(stderr.contains("shutdown complete"), "{stderr}");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn under_journald_console_lines_carry_no_timestamp() {
    let dir = temp_dir("journald");
    let stderr = run_binary(&dir, "debug", &[("JOURNAL_STREAM", "8:12345")]);
    let listening = stderr.lines().find(|l| l.contains("listening")).unwrap();
    assert!(listening.starts_with("<6>[INFO] listening addr="), "{listening}");
    assert!(!stderr.contains('\u{1b}'), "no colour escapes");
    fs::remove_dir_all(&dir).unwrap();
}

/// The sd-daemon(3) priority of a console line under journald, checked
/// against the level that follows it; `None` if the line has no prefix or
/// the wrong one for its level.
fn priority(line: &str) -> Option<u8> {
    let levels = [(3, "ERROR"), (4, "WARN"), (6, "INFO"), (7, "DEBUG"), (7, "TRACE")];
    levels.iter().find(|(n, level)| line.starts_with(&format!("<{n}>[{level}] "))).map(|(n, _)| *n)
}

/// `goclaw ARGS` under journald, its stderr lines through a channel.
fn spawn_journald(args: &[&str]) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(BIN)
        .args(args)
        .env_clear()
        .env("JOURNAL_STREAM", "8:12345")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, lines)
}

#[test]
fn under_journald_every_console_line_starts_with_its_priority() {
    // The gateway: info and warn (a wrong token) lines, at trace level.
    let dir = temp_dir("priorities");
    let stderr = run_binary(&dir, "trace", &[("JOURNAL_STREAM", "8:12345")]);
    let mut seen = std::collections::BTreeSet::new();
    for line in stderr.lines() {
        seen.insert(priority(line).unwrap_or_else(|| panic!("no priority or the wrong one: {line:?}")));
    }
    assert!(seen.contains(&6) && seen.contains(&4), "{stderr}");
    assert!(stderr.lines().any(|l| l.starts_with("<4>[WARN] client disconnected") && l.contains("connect refused")));
    fs::remove_dir_all(&dir).unwrap();

    // The node agent: an error (its token refused), then debug (an invoke).
    let gateway = support::start(support::config());
    let url = format!("ws://{}/ws", gateway.local_addr());
    let state = temp_dir("journald-node");
    let state = state.to_str().unwrap();
    let (mut refused, lines) =
        spawn_journald(&["node", "--url", &url, "--token", "wrong", "--id", "j1", "--state-dir", state]);
    let line = line_with(&lines, "refused", READ_LIMIT);
    assert!(line.starts_with("<3>[ERROR] the gateway refused connect"), "{line}");
    signal_child(&refused, Signal::SIGTERM);
    assert_eq!(wait_exit(&mut refused, Duration::from_secs(5)), Some(0));

    let args = ["node", "--url", &url, "--token", TOKEN, "--id", "j2", "--log-level", "debug", "--state-dir", state];
    let (mut node, lines) = spawn_journald(&args);
    let line = line_with(&lines, "connected to the gateway", READ_LIMIT);
    assert!(line.starts_with("<6>[INFO] connected to the gateway"), "{line}");
    // The node's id is its device id (its key file says which).
    let key: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(format!("{state}/node/device.json")).unwrap()).unwrap();
    let mut op = operator(gateway.local_addr());
    request(&mut op, "i", "node.invoke", json!({"nodeId": key["deviceId"], "command": "echo", "params": {}}));
    assert_eq!(recv_res(&mut op, "i")["ok"], true);
    let line = line_with(&lines, "invoke request", READ_LIMIT);
    assert!(line.starts_with("<7>[DEBUG] invoke request"), "{line}");
    signal_child(&node, Signal::SIGTERM);
    assert_eq!(wait_exit(&mut node, Duration::from_secs(5)), Some(0));
    for line in lines.try_iter() {
        assert!(priority(&line).is_some(), "{line:?}");
    }
    fs::remove_dir_all(state).unwrap();

    // The binary's own error lines: a port in use.
    let taken = gateway.local_addr().to_string();
    let (mut failed, lines) = spawn_journald(&["serve", "--listen", &taken, "--metrics-listen", "127.0.0.1:0"]);
    let line = line_with(&lines, "cannot listen", READ_LIMIT);
    assert!(line.starts_with("<3>goclaw: cannot listen on"), "{line}");
    assert_eq!(wait_exit(&mut failed, Duration::from_secs(5)), Some(1));
}
