//! Soak (issue "Hostile world"): 1,000 clients connect, invoke and
//! disconnect in churn against the binary for GOCLAW_SOAK_SECONDS (default
//! 600), while the gateway's RSS, threads and open descriptors are sampled
//! every 10 s. At the end every request has had exactly one answer, and
//! threads and descriptors are back within 10 % of the baseline (taken
//! after a short warm-up churn; see `soak_build`).
//!
//! It soaks both builds in turn (issue 11, item 17), each named in the
//! output: the static musl build that ships, whose RSS must also be back
//! within 10 %, and the default glibc build, whose RSS is measured and
//! reported but not held to it: glibc keeps exited threads' stacks and
//! its malloc arenas (docs/RELIABILITY.md has the figures).
//!
//!     cargo test --release -- --ignored soak --nocapture
//!
//! Ignored by default: it is long on purpose. docs/RELIABILITY.md has the
//! figures of the last full run.

mod support;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{Value, json};
use support::*;
use tungstenite::Message;

const CLIENTS: usize = 1000;
/// Nodes that stay for the whole run; every operator invokes them.
const STABLE_NODES: usize = 20;
/// One client in this many is a node that comes and goes.
const NODE_EVERY: usize = 10;
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
const WARM_UP: Duration = Duration::from_secs(20);
/// The gateway's rate limiter forgets a source idle this long (60 s), plus
/// its sweep.
const IDLE_FORGOTTEN: Duration = Duration::from_secs(62);

/// What the clients saw, shared by all of them.
#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    answered: AtomicU64,
    sessions: AtomicU64,
    /// Answers by outcome: "ok" or the error code.
    outcomes: Mutex<BTreeMap<String, u64>>,
    /// Anything a client did not expect (the test fails on the first).
    problems: Mutex<Vec<String>>,
}

impl Tally {
    fn problem(&self, what: String) {
        self.problems.lock().push(what);
    }
}

/// A small pseudo-random sequence per client (xorshift): churn patterns
/// differ between clients, and a run can be repeated.
struct Dice(u64);

impl Dice {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }

    fn pause(&mut self, from_ms: u64, to_ms: u64) {
        thread::sleep(Duration::from_millis(from_ms + self.next(to_ms - from_ms)));
    }
}

/// Client `n` connects from its own loopback address, like a device would.
fn source(n: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 1 + (n / 250) as u8, 2 + (n % 250) as u8))
}

fn connect(addr: SocketAddr, n: usize, role: &str, id: &str, commands: &[&str]) -> Result<Client, String> {
    let mut ws = upgrade(tcp(addr, Some(source(n)), None)).0;
    let res = hello(&mut ws, connect_params(role, id, commands));
    if res["ok"] != true {
        return Err(format!("{id}: connect refused: {res}"));
    }
    Ok(ws)
}

/// Answers every invoke request with its params until the connection ends
/// or `until` passes (then it leaves, abruptly or with a close).
fn serve_node(ws: &mut Client, until: Option<Instant>, tally: &Tally) {
    let _ = ws.get_mut().set_read_timeout(Some(Duration::from_millis(200)));
    while until.is_none_or(|t| Instant::now() < t) {
        let text = match ws.read() {
            Ok(Message::Text(text)) => text,
            Ok(_) => continue,
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return,
        };
        let frame: Value = serde_json::from_str(&text).unwrap_or_default();
        if frame["event"] == "node.invoke.request" {
            let result = json!({"id": frame["payload"]["id"], "ok": true, "payload": params_of(&frame)});
            let reply = json!({"type": "req", "id": "r", "method": "node.invoke.result", "params": result});
            if ws.send(Message::text(reply.to_string())).is_err() {
                return;
            }
        } else if frame["type"] == "res" && frame["ok"] != true {
            tally.problem(format!("node result refused: {frame}"));
        }
    }
}

/// A node that stays connected, keeping count of nothing but problems.
fn stable_node(addr: SocketAddr, i: usize, stop: Arc<AtomicBool>, tally: Arc<Tally>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut ws = connect(addr, CLIENTS + i, "node", &format!("stable-{i}"), &["echo"]).unwrap();
        while !stop.load(Relaxed) {
            serve_node(&mut ws, Some(Instant::now() + Duration::from_secs(1)), &tally);
        }
        let _ = ws.close(None);
    })
}

/// One churning client until `stop`: a node that serves for a few seconds
/// and leaves, or an operator that invokes a few times and leaves.
fn churn(addr: SocketAddr, n: usize, stop: &AtomicBool, tally: &Tally) {
    let mut dice = Dice(0x9e37_79b9_7f4a_7c15 ^ ((n as u64 + 1) * 0x2545_f491_4f6c_dd1d));
    dice.pause(0, 10_000); // spread the first connects over ten seconds
    while !stop.load(Relaxed) {
        tally.sessions.fetch_add(1, Relaxed);
        if n.is_multiple_of(NODE_EVERY) {
            let Ok(mut ws) = connect(addr, n, "node", &format!("churn-{n}"), &["echo"]).map_err(|e| tally.problem(e))
            else {
                return;
            };
            let stay = Duration::from_millis(2000 + dice.next(4000));
            serve_node(&mut ws, Some(Instant::now() + stay), tally);
            leave(ws, &mut dice);
        } else {
            let Ok(mut ws) = connect(addr, n, "operator", &format!("op-{n}"), &[]).map_err(|e| tally.problem(e)) else {
                return;
            };
            for i in 0..1 + dice.next(8) {
                // Mostly a stable node; sometimes a churning one, which may
                // be gone (NODE_NOT_FOUND) or leave mid-invoke
                // (NODE_DISCONNECTED): an answer all the same.
                let node = if dice.next(5) == 0 {
                    format!("churn-{}", dice.next((CLIENTS / NODE_EVERY) as u64) * NODE_EVERY as u64)
                } else {
                    format!("stable-{}", dice.next(STABLE_NODES as u64))
                };
                invoke(&mut ws, &node, &format!("{n}.{i}"), tally);
                dice.pause(100, 1000);
                if stop.load(Relaxed) {
                    break;
                }
            }
            leave(ws, &mut dice);
        }
        dice.pause(0, 1000);
    }
}

/// Sends one invoke and reads until its answer; any other response is a
/// duplicate or a stray, and a problem.
fn invoke(ws: &mut Client, node: &str, id: &str, tally: &Tally) {
    let params = json!({"nodeId": node, "command": "echo", "params": id, "timeoutMs": 10_000});
    request(ws, id, "node.invoke", params);
    tally.sent.fetch_add(1, Relaxed);
    loop {
        let frame = match ws.read() {
            Ok(Message::Text(text)) => serde_json::from_str::<Value>(&text).unwrap_or_default(),
            Ok(_) => continue,
            Err(e) => return tally.problem(format!("{id}: connection lost waiting for the answer: {e}")),
        };
        if frame["type"] == "event" {
            continue;
        }
        if frame["type"] != "res" || frame["id"] != id {
            return tally.problem(format!("{id}: unexpected frame {frame}"));
        }
        let outcome = if frame["ok"] == true {
            if invoke_payload(&frame) != id {
                tally.problem(format!("{id}: wrong payload {frame}"));
            }
            "ok".to_string()
        } else {
            frame["error"]["details"]["code"].as_str().unwrap_or("?").to_string()
        };
        if !["ok", "NODE_NOT_FOUND", "NODE_DISCONNECTED"].contains(&outcome.as_str()) {
            tally.problem(format!("{id}: {frame}"));
        }
        *tally.outcomes.lock().entry(outcome).or_default() += 1;
        tally.answered.fetch_add(1, Relaxed);
        return;
    }
}

/// Leaves like a real client would: mostly with a close handshake,
/// sometimes by dropping the connection.
fn leave(mut ws: Client, dice: &mut Dice) {
    if dice.next(3) == 0 {
        return; // dropped: FIN without a close frame
    }
    let _ = ws.close(None);
    let until = Instant::now() + Duration::from_secs(5);
    while ws.read().is_ok() && Instant::now() < until {}
}

/// One build to soak.
struct Build {
    /// Which build, as every figure printed names it.
    label: String,
    path: String,
    /// Whether its RSS must come back within 10 % of the baseline.
    gives_memory_back: bool,
}

/// The builds to soak: $GOCLAW_SOAK_BIN alone if set (held to the 10 %),
/// else the static musl build that ships (built now, adding the target
/// with rustup if needed) and the default glibc build of this machine.
fn soak_builds() -> Vec<Build> {
    if let Ok(path) = std::env::var("GOCLAW_SOAK_BIN") {
        return vec![Build { label: format!("GOCLAW_SOAK_BIN={path}"), path, gives_memory_back: true }];
    }
    let target_dir =
        std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| format!("{}/target", env!("CARGO_MANIFEST_DIR")));
    let build = |target: Option<&str>| {
        let mut command = Command::new(env!("CARGO"));
        command.args(["build", "--release", "--locked", "--bin", "goclaw"]);
        if let Some(target) = target {
            // The static build as the README installs the gateway: without
            // the client side's TLS.
            command.args(["--target", target, "--no-default-features"]);
        }
        command.status().is_ok_and(|s| s.success())
    };
    let mut builds = Vec::new();
    let musl = format!("{}-unknown-linux-musl", std::env::consts::ARCH);
    let add_target = || Command::new("rustup").args(["target", "add", &musl]).status().is_ok_and(|s| s.success());
    if build(Some(&musl)) || (add_target() && build(Some(&musl))) {
        let path = format!("{target_dir}/{musl}/release/goclaw");
        builds.push(Build { label: format!("{musl} (static, no TLS: as installed)"), path, gives_memory_back: true });
    } else {
        println!("no standard library for {musl}: the static build is not soaked");
    }
    assert!(build(None), "cargo build --release failed");
    // glibc keeps up to 40 MiB of exited threads' stacks for reuse
    // (glibc.pthread.stack_cache_size) and does not give back free memory
    // inside its heaps without malloc_trim(3), which only unsafe FFI could
    // call: after a burst its RSS stays high. Measured, reported, not held.
    let glibc = cfg!(target_env = "gnu");
    let label = format!("{}-unknown-linux-{} (dynamic)", std::env::consts::ARCH, if glibc { "gnu" } else { "musl" });
    builds.push(Build { label, path: format!("{target_dir}/release/goclaw"), gives_memory_back: !glibc });
    builds
}

fn soak_seconds() -> u64 {
    std::env::var("GOCLAW_SOAK_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(600)
}

/// One sample: seconds into the phase, connected clients, threads, open
/// descriptors, RSS KiB.
type Sample = (u64, u64, usize, usize, u64);

/// Runs the churning clients for `duration`, printing a sample every 10 s.
fn churn_phase(gateway: &Running, duration: Duration, tally: &Arc<Tally>, panicked: &mut bool) -> Vec<Sample> {
    let addr = gateway.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|n| {
            let (stop, tally) = (stop.clone(), tally.clone());
            thread::Builder::new().stack_size(256 * 1024).spawn(move || churn(addr, n, &stop, &tally)).unwrap()
        })
        .collect();
    println!(
        "{:>6} {:>8} {:>8} {:>6} {:>9} {:>9} {:>9} {:>8}",
        "t (s)", "clients", "threads", "fds", "RSS KiB", "sessions", "invokes", "answered"
    );
    let started = Instant::now();
    let mut samples = Vec::new();
    while started.elapsed() < duration && tally.problems.lock().is_empty() {
        thread::sleep(SAMPLE_EVERY.min(duration.saturating_sub(started.elapsed())));
        // Drain the gateway's stderr as we go (it would pile up in memory).
        *panicked |= gateway.drain_panicked();
        let (threads, fds, rss) = gateway.resources();
        let sample = (started.elapsed().as_secs(), connected(gateway).unwrap_or(0), threads, fds, rss);
        println!(
            "{:>6} {:>8} {:>8} {:>6} {:>9} {:>9} {:>9} {:>8}",
            sample.0,
            sample.1,
            threads,
            fds,
            rss,
            tally.sessions.load(Relaxed),
            tally.sent.load(Relaxed),
            tally.answered.load(Relaxed)
        );
        samples.push(sample);
    }
    stop.store(true, Relaxed);
    for client in clients {
        client.join().unwrap();
    }
    samples
}

#[test]
#[ignore = "long: cargo test --release -- --ignored soak"]
fn soak() {
    let duration = Duration::from_secs(soak_seconds());
    let builds = soak_builds();
    let figures: Vec<Figures> = builds.iter().map(|build| soak_build(build, duration)).collect();
    println!("\nmemory given back after {duration:?} of churn, by build:");
    for (build, f) in builds.iter().zip(&figures) {
        println!(
            "  {}: RSS cold {} KiB, baseline {} KiB, churning {}-{} KiB, end {} KiB ({:+.1} % of the baseline, \
             {:+.1} % of cold); threads {} -> {}, fds {} -> {}",
            build.label,
            f.cold.2,
            f.baseline.2,
            f.churn_rss.0,
            f.churn_rss.1,
            f.end.2,
            percent(f.end.2, f.baseline.2),
            percent(f.end.2, f.cold.2),
            f.baseline.0,
            f.end.0,
            f.baseline.1,
            f.end.1
        );
    }
    for (build, f) in builds.iter().zip(&figures) {
        let what = if build.gives_memory_back { "threads, fds, RSS KiB" } else { "threads, fds" };
        assert!(
            f.settled,
            "{}: not back within 10 % of the baseline {:?} ({what}): {:?}",
            build.label, f.baseline, f.end
        );
    }
}

/// Threads, open descriptors, RSS KiB.
type Resources = (usize, usize, u64);

/// What one build's soak measured.
struct Figures {
    cold: Resources,
    baseline: Resources,
    end: Resources,
    /// Lowest and highest RSS sampled during the churn, KiB.
    churn_rss: (u64, u64),
    /// Back within 10 % of the baseline: threads and descriptors, and RSS
    /// for a build that gives memory back.
    settled: bool,
}

fn percent(now: u64, base: u64) -> f64 {
    (now as f64 / base as f64 - 1.0) * 100.0
}

/// Soaks one build: correctness is asserted here, memory is returned.
fn soak_build(build: &Build, duration: Duration) -> Figures {
    println!("\nsoaking {} ({}) for {duration:?}", build.label, build.path);
    let gateway = serve_binary_at(
        &build.path,
        &[
            "--max-connections",
            "2000",
            "--rate-limit",
            "50",
            "--rate-burst",
            "50",
            "--message-rate",
            "1000",
            "--message-burst",
            "1000",
            "--ping-period",
            "5s",
            "--pong-wait",
            "10s",
            "--tick-interval",
            "5s",
        ],
    );
    let addr = gateway.addr;
    let stop_nodes = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let stable: Vec<_> = (0..STABLE_NODES).map(|i| stable_node(addr, i, stop_nodes.clone(), tally.clone())).collect();
    assert!(wait_for(Duration::from_secs(10), || connected(&gateway) == Some(STABLE_NODES as u64)));
    thread::sleep(Duration::from_secs(1)); // the set-up's connection threads are joined
    let cold = gateway.resources();
    println!("{}: cold: threads {}, fds {}, RSS {} KiB", build.label, cold.0, cold.1, cold.2);

    // Warm-up: the same churn briefly, then idle until the rate limiter has
    // forgotten its sources. What the first burst costs once and keeps (the
    // log queue's ring fully touched, metric series created on first use,
    // code paths paged in) is not growth; the baseline is taken after it.
    let mut panicked = false;
    churn_phase(&gateway, WARM_UP, &tally, &mut panicked);
    assert!(wait_for(Duration::from_secs(30), || connected(&gateway) == Some(STABLE_NODES as u64)));
    thread::sleep(IDLE_FORGOTTEN);
    let baseline = gateway.resources();
    println!("{}: baseline: threads {}, fds {}, RSS {} KiB", build.label, baseline.0, baseline.1, baseline.2);

    let samples = churn_phase(&gateway, duration, &tally, &mut panicked);

    // Churn over: only the stable nodes remain, as at the baseline. Once
    // the rate limiter has forgotten the sources, the counts must be back
    // within 10 %: threads and descriptors for every build, RSS for a build
    // that gives memory back. The other is measured once the sources are
    // forgotten, the latest the first could be judged.
    let stopped = Instant::now();
    let within = |now: u64, base: u64| now.abs_diff(base) * 10 <= base;
    let settled = wait_for(IDLE_FORGOTTEN + Duration::from_secs(30), || {
        let (threads, fds, rss) = gateway.resources();
        let memory =
            if build.gives_memory_back { within(rss, baseline.2) } else { stopped.elapsed() >= IDLE_FORGOTTEN };
        connected(&gateway) == Some(STABLE_NODES as u64)
            && within(threads as u64, baseline.0 as u64)
            && within(fds as u64, baseline.1 as u64)
            && memory
    });
    let end = gateway.resources();
    println!(
        "{}: end: threads {}, fds {}, RSS {} KiB, {:?} after the churn stopped",
        build.label,
        end.0,
        end.1,
        end.2,
        stopped.elapsed()
    );
    println!("{}: outcomes: {:?}", build.label, tally.outcomes.lock());
    stop_nodes.store(true, Relaxed);
    for node in stable {
        node.join().unwrap();
    }
    panicked |= gateway.drain_panicked();
    let problems = tally.problems.lock();
    assert!(problems.is_empty(), "{}: {} problems, first: {}", build.label, problems.len(), problems[0]);
    assert_eq!(tally.sent.load(Relaxed), tally.answered.load(Relaxed), "{}: a request went unanswered", build.label);
    assert!(tally.sent.load(Relaxed) > 0);
    assert!(!panicked, "{}: the gateway panicked", build.label);
    let peak = samples.iter().map(|s| s.1).max().unwrap_or(0);
    assert!(peak > (CLIENTS / 2) as u64, "the churn never reached half its clients at once (peak {peak})");
    let rss = samples.iter().map(|s| s.4);
    let churn_rss = (rss.clone().min().unwrap_or(0), rss.max().unwrap_or(0));
    Figures { cold, baseline, end, churn_rss, settled }
}

/// The gateway's `goclaw_connected_clients` gauge.
fn connected(gateway: &Running) -> Option<u64> {
    metric(gateway.metrics, "goclaw_connected_clients").and_then(|v| v.parse().ok())
}
