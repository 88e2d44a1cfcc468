//! goclaw's benchmark: one command, one table.
//!
//!     cargo run --release --example bench                 # the full run (a few minutes)
//!     cargo run --release --example bench -- --quick      # a smoke run (seconds)
//!
//! It builds the release `goclaw` binary and the `echo` example as the
//! gateway is installed (static, for this machine's musl target, without
//! the client side's TLS; the size of the TLS build and the glibc build of
//! `cargo build --release` are measured too, for reference), starts them as subprocesses, drives them with real
//! WebSocket clients, and in the same run measures a raw-TCP
//! request/response baseline (a std-only echo server, `echo --raw`, linked
//! like the gateway), so latency and CPU figures also come as ratios to raw
//! TCP. The same std-only server, one thread per connection, gives the
//! floor for memory per connection and for accept-plus-spawn CPU. Server CPU is the server process's utime+stime
//! from /proc/PID/stat over a phase, divided by the work done in it. Memory
//! per connection is ΔRSS of the gateway / N after N authenticated idle
//! nodes, plus its Δthreads / N times the kernel stack of one thread
//! (measured: ΔKernelStack of /proc/meminfo over 4,000 parked threads).
//! Every row names the build it measured. What each row means:
//! docs/BENCHMARKS.md.
//!
//! Options: --connections N (idle nodes for the memory row, default 5000),
//! --burst N (nodes that come and go for the after-burst row, default 400),
//! --hold N (connections held two ping periods, default 10000),
//! --round-trips N (per latency run, default 50000), --invokes N (default
//! 30000), --seconds S (throughput run, default 5), --quick.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

const TOKEN: &str = "bench-token";
const MESSAGE_BYTES: usize = 64;
/// /proc/PID/stat counts CPU in clock ticks of 1/100 s (USER_HZ).
const MICROS_PER_TICK: f64 = 10_000.0;

struct Options {
    connections: usize,
    burst: usize,
    hold: usize,
    round_trips: usize,
    invokes: usize,
    seconds: u64,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = parse_options(&args);
    raise_fd_limit();
    let (shipped, with_tls, native) = build();
    let mut table = Table::default();
    eprintln!("bench: measuring {} (and {} for reference)", shipped.label, native.label);
    println!("Measured build: {}. Reference rows: {}.\n", shipped.label, native.label);

    size_row(&mut table, &shipped);
    size_row(&mut table, &with_tls);
    size_row(&mut table, &native);
    startup_rows(&mut table, &shipped);
    idle_rss_row(&mut table, &native);
    let kernel_stack = kernel_stack_per_thread_kib();
    eprintln!("bench: kernel stack per thread: {kernel_stack:.1} KiB");
    memory_rows(&mut table, &shipped, options.connections, kernel_stack);
    after_event_row(&mut table, &shipped, options.connections, kernel_stack);
    memory_rows(&mut table, &native, options.connections, kernel_stack);
    burst_row(&mut table, &shipped, options.burst);
    burst_row(&mut table, &native, options.burst);
    hold_row(&mut table, &shipped, options.hold);
    let raw = latency_rows(&mut table, &shipped, &options);
    invoke_rows(&mut table, &shipped, &options, raw);
    table.print();
}

fn parse_options(args: &[String]) -> Options {
    let mut options =
        Options { connections: 5000, burst: 400, hold: 10_000, round_trips: 50_000, invokes: 30_000, seconds: 5 };
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let mut value = || args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| usage(flag));
        match flag.as_str() {
            "--connections" => options.connections = value(),
            "--burst" => options.burst = value(),
            "--hold" => options.hold = value(),
            "--round-trips" => options.round_trips = value(),
            "--invokes" => options.invokes = value(),
            "--seconds" => options.seconds = value() as u64,
            "--quick" => {
                options =
                    Options { connections: 500, burst: 400, hold: 1000, round_trips: 3000, invokes: 2000, seconds: 1 };
            }
            _ => usage(flag),
        }
    }
    options
}

fn usage(flag: &str) -> ! {
    eprintln!("bench: bad option {flag}; see the comment at the top of examples/bench.rs");
    std::process::exit(2)
}

fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// The binaries of one build under test.
struct Bins {
    goclaw: std::path::PathBuf,
    echo: std::path::PathBuf,
    label: String,
    /// Built with the `tls` feature (the client side's `wss://`).
    tls: bool,
}

/// Builds the gateway and the echo example three times: static for this
/// machine's musl target without TLS (the gateway as the README and the
/// Dockerfile install it: it never opens a TLS connection), the same with
/// TLS (what `goclaw node` boards install; only its size is measured), and
/// `cargo build --release` for the default target, for reference. Without
/// a musl standard library (and no way to add one) the default build
/// stands in, and the table says so. Returns (shipped, with TLS, native).
fn build() -> (Bins, Bins, Bins) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let me = std::env::current_exe().expect("own path");
    let target_dir = me.ancestors().nth(3).expect("target dir").to_path_buf();
    let cargo_build = |target: Option<&str>, tls: bool| {
        let mut command = Command::new(&cargo);
        command.args(["build", "--release", "--locked", "--bin", "goclaw", "--example", "echo"]);
        if let Some(target) = target {
            command.args(["--target", target]);
        }
        if !tls {
            command.arg("--no-default-features");
        }
        command.status().is_ok_and(|s| s.success())
    };
    eprintln!("bench: building the release binary and the echo example");
    assert!(cargo_build(None, true), "build failed");
    let host = Command::new("rustc")
        .arg("-vV")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|text| text.lines().find_map(|l| l.strip_prefix("host: ")).map(str::to_string))
        .unwrap_or_default();
    let native = Bins {
        goclaw: target_dir.join("release/goclaw"),
        echo: target_dir.join("release/examples/echo"),
        label: format!("{host} (dynamic, cargo build --release)"),
        tls: true,
    };
    let musl = host.replace("-gnu", "-musl");
    let have_musl = musl.contains("musl")
        && (cargo_build(Some(&musl), true)
            || (Command::new("rustup").args(["target", "add", &musl]).status().is_ok_and(|s| s.success())
                && cargo_build(Some(&musl), true)));
    if !have_musl {
        eprintln!("bench: no standard library for {musl}; measuring the default build instead");
        let label = format!("{} — static musl target unavailable here", native.label);
        let stand_in =
            |tls| Bins { goclaw: native.goclaw.clone(), echo: native.echo.clone(), label: label.clone(), tls };
        return (stand_in(true), stand_in(true), native);
    }
    let dir = target_dir.join(&musl).join("release");
    // The next build replaces the binary: keep the TLS one beside it.
    let with_tls = dir.join("goclaw-with-tls");
    std::fs::copy(dir.join("goclaw"), &with_tls).expect("copy the TLS build");
    assert!(cargo_build(Some(&musl), false), "build without TLS failed");
    let node = Bins {
        goclaw: with_tls,
        echo: dir.join("examples/echo"),
        label: format!("{musl} (static, with TLS: goclaw node)"),
        tls: true,
    };
    let shipped = Bins {
        goclaw: dir.join("goclaw"),
        echo: dir.join("examples/echo"),
        label: format!("{musl} (static, no TLS: the gateway as installed)"),
        tls: false,
    };
    (shipped, node, native)
}

// ---------- measuring a process ----------

/// utime + stime of a process, in microseconds.
fn cpu_micros(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of proc(5); `rest` starts at field 3.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 * MICROS_PER_TICK
}

fn status_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap()
}

fn kernel_stack_kib() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").expect("meminfo");
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("KernelStack:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map(|d| d.count()).unwrap_or(0)
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// A server under test, killed when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
    metrics: Option<SocketAddr>,
}

impl Server {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `program`, to run on core 0 only when `pinned`.
fn command(program: &std::path::Path, pinned: bool) -> Command {
    if pinned {
        let mut c = Command::new("taskset");
        c.args(["-c", "0"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// Starts `program args`, on core 0 only when `pinned`, and reads its
/// address from the first stderr line that has `addr=`.
fn spawn(program: &std::path::Path, args: &[&str], pinned: bool) -> Server {
    let mut child =
        command(program, pinned).args(args).stderr(Stdio::piped()).stdout(Stdio::null()).spawn().expect("spawn");
    let mut stderr = child.stderr.take().expect("stderr");
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !(line.ends_with(b"\n") && String::from_utf8_lossy(&line).contains("addr=")) {
        if line.ends_with(b"\n") {
            line.clear();
        }
        assert_eq!(stderr.read(&mut byte).unwrap_or(0), 1, "server exited: {}", String::from_utf8_lossy(&line));
        line.push(byte[0]);
    }
    // Keep draining stderr so the server never blocks on a full pipe.
    thread::spawn(move || {
        let _ = std::io::copy(&mut stderr, &mut std::io::sink());
    });
    let line = String::from_utf8_lossy(&line).into_owned();
    let field = |key: &str| line.split_whitespace().find_map(|w| w.strip_prefix(key)).and_then(|v| v.parse().ok());
    Server { child, addr: field("addr=").expect("addr"), metrics: field("metrics_addr=") }
}

fn gateway(bins: &Bins, extra: &[&str], pinned: bool) -> Server {
    // Below info there is no "listening" line to read the address from:
    // then the gateway gets a port that was free a moment ago.
    let quiet = extra.contains(&"--log-level");
    let listen = if quiet { free_port() } else { "127.0.0.1:0".parse().expect("addr") };
    let listen = listen.to_string();
    let mut args = vec![
        "serve",
        "--listen",
        &listen,
        "--metrics-listen",
        "127.0.0.1:0",
        "--token",
        TOKEN,
        "--rate-limit",
        "1000000",
        "--rate-burst",
        "1000000",
        "--message-rate",
        "1000000",
        "--message-burst",
        "1000000",
        "--max-connections",
        "15000",
        // The benchmark's nodes present the shared token and no device
        // identity (the scripts and sensors case of SPEC §4.4).
        "--allow-token-nodes",
    ];
    // Logs go to a throwaway state directory, not the user's.
    let state = std::env::temp_dir().join(format!("goclaw-bench-state-{}", std::process::id()));
    let state = state.to_string_lossy().into_owned();
    args.extend_from_slice(&["--state-dir", &state]);
    if !quiet {
        // The "listening" line, one line per connect and disconnect and an
        // audit line per invoke, as in production.
        args.extend_from_slice(&["--log-level", "info"]);
    }
    args.extend_from_slice(extra);
    if quiet {
        return spawn_at(&bins.goclaw, &args, pinned, listen.parse().expect("addr"));
    }
    spawn(&bins.goclaw, &args, pinned)
}

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port")
}

/// Starts `program args` listening at `addr`, and waits until it accepts.
fn spawn_at(program: &std::path::Path, args: &[&str], pinned: bool, addr: SocketAddr) -> Server {
    let child = command(program, pinned).args(args).stderr(Stdio::null()).stdout(Stdio::null()).spawn().expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "{} never listened at {addr}", program.display());
        thread::sleep(Duration::from_millis(5));
    }
    Server { child, addr, metrics: None }
}

// ---------- clients ----------

type Ws = WebSocket<TcpStream>;

fn ws_connect(addr: SocketAddr) -> Ws {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (ws, _) = tungstenite::client::client(format!("ws://{addr}/ws"), stream).expect("upgrade");
    ws
}

fn recv_json(ws: &mut Ws) -> Value {
    loop {
        if let Message::Text(text) = ws.read().expect("read") {
            return serde_json::from_str(&text).expect("json");
        }
    }
}

fn hello(addr: SocketAddr, role: &str, id: &str, commands: &[&str]) -> Ws {
    let mut ws = ws_connect(addr);
    recv_json(&mut ws); // challenge
    let params = json!({"minProtocol": 3, "maxProtocol": 3, "role": role, "client": {"id": id},
        "commands": commands, "auth": {"token": TOKEN}});
    ws.send(Message::text(json!({"type": "req", "id": "c", "method": "connect", "params": params}).to_string()))
        .expect("send");
    let res = recv_json(&mut ws);
    assert_eq!(res["ok"], true, "{res}");
    ws
}

/// The fields a node needs from `node.invoke.request`, borrowed.
#[derive(serde::Deserialize)]
struct Event<'a> {
    #[serde(borrow)]
    event: Option<&'a str>,
    #[serde(borrow)]
    payload: Option<InvokeRequest<'a>>,
}

#[derive(serde::Deserialize)]
struct InvokeRequest<'a> {
    #[serde(borrow)]
    id: Option<&'a str>,
    /// The operator's params as a JSON string (the real gateway sends
    /// `paramsJSON` only), kept as its raw string literal.
    #[serde(borrow, rename = "paramsJSON")]
    params_json: Option<&'a serde_json::value::RawValue>,
}

/// The one field an operator checks in a response.
#[derive(serde::Deserialize)]
struct Response {
    ok: bool,
}

/// Answers every invoke request on `node` until the connection ends,
/// echoing its params: `paramsJSON` goes back as `payloadJSON`, the string
/// literal untouched. Parses like a lean real client: borrowed fields.
fn serve_node(mut node: Ws) {
    while let Ok(message) = node.read() {
        let Message::Text(text) = message else { continue };
        let Ok(frame) = serde_json::from_str::<Event<'_>>(&text) else { continue };
        let (Some("node.invoke.request"), Some(invoke)) = (frame.event, frame.payload) else { continue };
        let (Some(id), Some(params)) = (invoke.id, invoke.params_json) else { continue };
        let result = format!(
            r#"{{"type":"req","id":"r","method":"node.invoke.result","params":{{"id":"{id}","ok":true,"payloadJSON":{}}}}}"#,
            params.get()
        );
        if node.send(Message::text(result)).is_err() {
            return;
        }
    }
}

/// Sends one invoke and waits for its answer (skipping events).
fn invoke_once(op: &mut Ws, request: &str) {
    op.send(Message::text(request)).expect("send");
    loop {
        let Message::Text(text) = op.read().expect("read") else { continue };
        if text.starts_with(r#"{"type":"res""#) {
            let response: Response = serde_json::from_str(&text).expect("response");
            assert!(response.ok, "{text}");
            return;
        }
    }
}

/// Pins the calling thread to core 0, or frees it.
fn pin(on: bool) {
    use nix::sched::{CpuSet, sched_setaffinity};
    use nix::unistd::Pid;
    let mut set = CpuSet::new();
    let cores = if on { 1 } else { thread::available_parallelism().map_or(1, |n| n.get()) };
    for core in 0..cores {
        set.set(core).expect("core");
    }
    sched_setaffinity(Pid::from_raw(0), &set).expect("affinity");
}

// ---------- rows ----------

#[derive(Default)]
struct Table {
    rows: Vec<[String; 5]>,
}

impl Table {
    fn row(&mut self, what: &str, measured: String, ratio: String, target: &str, met: Option<bool>) {
        let verdict = match met {
            Some(true) => "met",
            Some(false) => "NOT met",
            None => "",
        };
        eprintln!("bench: {what}: {measured}");
        self.rows.push([what.into(), measured, ratio, target.into(), verdict.into()]);
    }

    fn print(&self) {
        println!("| measure | goclaw | ratio to raw TCP | target | |");
        println!("|---|---|---|---|---|");
        for [a, b, c, d, e] in &self.rows {
            println!("| {a} | {b} | {c} | {d} | {e} |");
        }
    }
}

struct Percentiles {
    p50: Duration,
    p90: Duration,
    p99: Duration,
}

fn percentiles(mut samples: Vec<Duration>) -> Percentiles {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    Percentiles { p50: at(0.50), p90: at(0.90), p99: at(0.99) }
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn size_row(table: &mut Table, bins: &Bins) {
    let size = std::fs::metadata(&bins.goclaw).expect("binary").len();
    table.row(
        &format!("release binary, stripped: {}", bins.label),
        format!("{:.2} MiB ({size} bytes)", size as f64 / 1048576.0),
        String::new(),
        if bins.tls { "<= 3 MiB (with TLS)" } else { "<= 2 MiB (no TLS)" },
        Some(size <= if bins.tls { 3 << 20 } else { 2 << 20 }),
    );
}

/// Starts the gateway seven times: median time from spawn to READY=1, and
/// median RSS 300 ms after it.
fn start_stop(bins: &Bins) -> (Duration, u64) {
    let dir = std::env::temp_dir().join(format!("goclaw-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let path = dir.join("notify");
    let mut times = Vec::new();
    let mut rss = Vec::new();
    for _ in 0..7 {
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).expect("notify socket");
        socket.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let started = Instant::now();
        let mut child = Command::new(&bins.goclaw)
            .args(["serve", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--log-level", "warn"])
            .args(["--state-dir", &dir.to_string_lossy()])
            .env("NOTIFY_SOCKET", &path)
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let mut buf = [0u8; 256];
        let n = socket.recv(&mut buf).expect("READY=1");
        times.push(started.elapsed());
        assert!(buf[..n].starts_with(b"READY=1"));
        thread::sleep(Duration::from_millis(300));
        rss.push(status_kib(child.id(), "VmRSS:"));
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = std::fs::remove_dir_all(&dir);
    times.sort();
    rss.sort();
    (times[times.len() / 2], rss[rss.len() / 2])
}

fn startup_rows(table: &mut Table, bins: &Bins) {
    let (ready, idle) = start_stop(bins);
    table.row(
        &format!("start-up to ready (spawn to READY=1, median of 7): {}", bins.label),
        format!("{:.1} ms", ready.as_secs_f64() * 1e3),
        String::new(),
        "<= 20 ms",
        Some(ready <= Duration::from_millis(20)),
    );
    idle_row(table, bins, idle);
}

fn idle_rss_row(table: &mut Table, bins: &Bins) {
    let (_, idle) = start_stop(bins);
    idle_row(table, bins, idle);
}

fn idle_row(table: &mut Table, bins: &Bins, idle: u64) {
    table.row(
        &format!("idle RSS after start: {}", bins.label),
        format!("{:.2} MiB ({idle} KiB)", idle as f64 / 1024.0),
        String::new(),
        "<= 2 MiB",
        Some(idle <= 2048),
    );
}

/// Opens `n` authenticated node connections, each with a blocking
/// handshake, and keeps the sockets (no thread per client).
fn idle_nodes(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|i| {
            let mut ws = hello(addr, "node", &format!("idle-{i}"), &["echo"]);
            ws.flush().expect("flush");
            ws.into_inner()
        })
        .collect()
}

/// `idle_nodes` that have each sent one `node.event` (a sensor's reading)
/// and had its answer before going idle.
fn nodes_after_one_event(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let event = json!({"type": "req", "id": "e", "method": "node.event",
        "params": {"event": "reading", "payloadJSON": "{\"temperature\":21.5,\"battery\":97}"}})
    .to_string();
    (0..n)
        .map(|i| {
            let mut ws = hello(addr, "node", &format!("idle-{i}"), &["echo"]);
            ws.send(Message::text(event.as_str())).expect("send");
            assert_eq!(recv_json(&mut ws)["ok"], true);
            ws.into_inner()
        })
        .collect()
}

/// What `n` connections cost a server: KiB of RSS and threads each, µs of
/// server CPU each.
struct PerConnection {
    rss_kib: f64,
    threads: f64,
    cpu_micros: f64,
}

/// Memory and CPU of `n` connections to `server`, opened by `open`; keeps
/// them open for the caller.
fn per_connection<T>(server: &Server, n: usize, open: impl FnOnce(SocketAddr, usize) -> T) -> (PerConnection, T) {
    thread::sleep(Duration::from_millis(300));
    let pid = server.pid();
    let (rss0, threads0, cpu0) = (status_kib(pid, "VmRSS:"), threads(pid), cpu_micros(pid));
    let held = open(server.addr, n);
    let cpu1 = cpu_micros(pid);
    thread::sleep(Duration::from_millis(500));
    let (rss1, threads1) = (status_kib(pid, "VmRSS:"), threads(pid));
    let each = |a: usize, b: usize| b.saturating_sub(a) as f64 / n as f64;
    let cost = PerConnection {
        rss_kib: each(rss0 as usize, rss1 as usize),
        threads: each(threads0, threads1),
        cpu_micros: (cpu1 - cpu0) / n as f64,
    };
    (cost, held)
}

/// KiB of kernel stack per thread: ΔKernelStack of /proc/meminfo while
/// this process parks 4,000 threads, median of five rounds. The figure is
/// system-wide, so other processes starting or ending threads move it;
/// the median of rounds a few milliseconds long keeps them out, where a
/// delta over a whole memory phase of several seconds would not.
fn kernel_stack_per_thread_kib() -> f64 {
    const THREADS: usize = 4000;
    let mut rounds: Vec<f64> = (0..5)
        .map(|_| {
            let (parked, release) = (Arc::new(Barrier::new(THREADS + 1)), Arc::new(Barrier::new(THREADS + 1)));
            let before = kernel_stack_kib();
            let handles: Vec<_> = (0..THREADS)
                .map(|_| {
                    let (parked, release) = (parked.clone(), release.clone());
                    thread::Builder::new()
                        .stack_size(64 * 1024)
                        .spawn(move || {
                            parked.wait();
                            release.wait();
                        })
                        .expect("thread")
                })
                .collect();
            parked.wait();
            let during = kernel_stack_kib();
            release.wait();
            for handle in handles {
                handle.join().expect("parked thread");
            }
            during.saturating_sub(before) as f64 / THREADS as f64
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    eprintln!("bench: kernel stack rounds (KiB per thread): {rounds:?}");
    rounds[rounds.len() / 2]
}

/// The target for memory per idle authenticated connection (issue 14),
/// kernel stack included.
const CONNECTION_TARGET_KIB: f64 = 24.0;

fn memory_rows(table: &mut Table, bins: &Bins, n: usize, kernel_stack: f64) {
    // The floor: a std-only server, one thread per connection blocked in read().
    let raw = spawn(&bins.echo, &["--raw", "--listen", "127.0.0.1:0"], false);
    let (floor, sockets) = per_connection(&raw, n, |addr, n| {
        (0..n).map(|_| TcpStream::connect(addr).expect("connect")).collect::<Vec<_>>()
    });
    drop(sockets);
    drop(raw);
    let floor_kernel = floor.threads * kernel_stack;
    let floor_total = floor.rss_kib + floor_kernel;
    // Long ping and tick periods: the connections stay idle.
    let server = gateway(bins, &["--pong-wait", "10m", "--tick-interval", "10m"], false);
    let (cost, sockets) = per_connection(&server, n, idle_nodes);
    let kernel = cost.threads * kernel_stack;
    let total = cost.rss_kib + kernel;
    table.row(
        &format!("idle authenticated connection, {n} nodes, kernel stack included: {}", bins.label),
        format!(
            "{total:.1} KiB ({:.1} KiB RSS + {kernel:.1} KiB kernel stack: {:.2} threads × {kernel_stack:.1} KiB)",
            cost.rss_kib, cost.threads
        ),
        format!("{:.2}× floor", total / floor_total),
        "<= 24 KiB",
        Some(total <= CONNECTION_TARGET_KIB),
    );
    drop(sockets);
    drop(server);
    table.row(
        &format!("floor: std thread per connection blocked in read(), {n} connections: {}", bins.label),
        format!("{floor_total:.1} KiB ({:.1} KiB RSS + {floor_kernel:.1} KiB kernel stack)", floor.rss_kib),
        "1.00× floor".into(),
        "",
        None,
    );
    table.row(
        &format!("authenticated handshake, server CPU (accept to hello-ok, thread spawn included): {}", bins.label),
        format!("{:.1} µs", cost.cpu_micros),
        format!("{:.2}× floor", cost.cpu_micros / floor.cpu_micros),
        "<= 60 µs",
        Some(cost.cpu_micros <= 60.0),
    );
    table.row(
        &format!("floor: std accept + thread spawn, server CPU: {}", bins.label),
        format!("{:.1} µs", floor.cpu_micros),
        "1.00× floor".into(),
        "",
        None,
    );
}

/// What an idle connection costs once its node has sent a request: the
/// request loop has then run deeper than the read it waits in.
fn after_event_row(table: &mut Table, bins: &Bins, n: usize, kernel_stack: f64) {
    let server = gateway(bins, &["--pong-wait", "10m", "--tick-interval", "10m"], false);
    let (cost, sockets) = per_connection(&server, n, nodes_after_one_event);
    let kernel = cost.threads * kernel_stack;
    table.row(
        &format!("idle authenticated connection whose node has sent one node.event, {n} nodes: {}", bins.label),
        format!("{:.1} KiB ({:.1} KiB RSS + {kernel:.1} KiB kernel stack)", cost.rss_kib + kernel, cost.rss_kib),
        String::new(),
        "reported",
        None,
    );
    drop(sockets);
}

/// Memory given back after a burst. The baseline is the idle gateway's
/// RSS once one node has come and gone (the code of a connection's path
/// paged in, the tables at their floor size: what any gateway in service
/// has paid once); the RSS right after start is printed too. Then `n`
/// nodes connect, idle a moment and leave (sockets dropped, as devices
/// that lose power or network); RSS once the gateway is down to its own
/// threads again and its housekeeping (reaping threads, shrinking tables,
/// every second) has run twice.
fn burst_row(table: &mut Table, bins: &Bins, n: usize) {
    let server = gateway(bins, &["--pong-wait", "10m", "--tick-interval", "10m"], false);
    let pid = server.pid();
    thread::sleep(Duration::from_millis(300));
    let (threads0, cold) = (threads(pid), status_kib(pid, "VmRSS:"));
    let settle = || {
        let left = Instant::now();
        while threads(pid) > threads0 && left.elapsed() < Duration::from_secs(30) {
            thread::sleep(Duration::from_millis(50));
        }
        thread::sleep(Duration::from_millis(2100));
    };
    drop(idle_nodes(server.addr, 1));
    settle();
    let baseline = status_kib(pid, "VmRSS:");
    let sockets = idle_nodes(server.addr, n);
    thread::sleep(Duration::from_millis(500));
    let peak = status_kib(pid, "VmRSS:");
    drop(sockets);
    settle();
    let after = status_kib(pid, "VmRSS:");
    let ratio = after as f64 / baseline as f64;
    let mib = |kib: u64| kib as f64 / 1024.0;
    table.row(
        &format!("RSS after a burst of {n} nodes that come and go, against the idle RSS before it: {}", bins.label),
        format!(
            "{:.2} MiB ({after} KiB) after, {:.2} MiB ({baseline} KiB) before ({:.2} MiB, {cold} KiB, before any \
             client: {:.2}×), {:.1} MiB at the peak",
            mib(after),
            mib(baseline),
            mib(cold),
            after as f64 / cold as f64,
            mib(peak)
        ),
        format!("{ratio:.2}× before"),
        "<= 1.10× before",
        Some(ratio <= 1.10),
    );
}

/// Reads every socket without blocking and answers server pings, until
/// `stop`. Returns how many sockets the server closed.
fn answer_pings(sockets: &mut [TcpStream], stop: &AtomicBool) -> usize {
    for socket in sockets.iter() {
        socket.set_nonblocking(true).expect("nonblocking");
    }
    let mut pending: Vec<Vec<u8>> = vec![Vec::new(); sockets.len()];
    let mut closed = vec![false; sockets.len()];
    let mut buf = vec![0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        for (i, socket) in sockets.iter_mut().enumerate() {
            loop {
                match socket.read(&mut buf) {
                    Ok(0) => {
                        closed[i] = true;
                        break;
                    }
                    Ok(n) => pending[i].extend_from_slice(&buf[..n]),
                    Err(_) => break,
                }
            }
            // Server frames are unmasked: opcode, length, payload.
            while pending[i].len() >= 2 {
                let (len, header) = match pending[i][1] & 0x7f {
                    126 if pending[i].len() >= 4 => {
                        (usize::from(u16::from_be_bytes([pending[i][2], pending[i][3]])), 4)
                    }
                    126 => break,
                    127 => panic!("no huge frames expected"),
                    n => (usize::from(n), 2),
                };
                if pending[i].len() < header + len {
                    break;
                }
                let frame: Vec<u8> = pending[i].drain(..header + len).collect();
                match frame[0] & 0x0f {
                    0x9 => {
                        let _ = socket.write_all(&masked(0xA, &frame[header..]));
                    }
                    0x8 => closed[i] = true,
                    _ => {}
                }
            }
        }
        thread::sleep(Duration::from_millis(20));
    }
    closed.iter().filter(|&&c| c).count()
}

/// A client frame: final, masked.
fn masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x1b, 0x2c, 0x3d, 0x4e];
    let mut frame = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

fn hold_row(table: &mut Table, bins: &Bins, n: usize) {
    let ping = Duration::from_secs(3);
    let server = gateway(bins, &["--ping-period", "3s", "--pong-wait", "7s", "--tick-interval", "1s"], false);
    let pid = server.pid();
    let started = Instant::now();
    let mut sockets = idle_nodes(server.addr, n);
    let opened = started.elapsed();
    let stop = Arc::new(AtomicBool::new(false));
    let stopper = stop.clone();
    let hold = thread::spawn(move || {
        let closed = answer_pings(&mut sockets, &stopper);
        (closed, sockets)
    });
    thread::sleep(ping * 2 + Duration::from_secs(1));
    let (threads, fds, rss) = (threads(pid), fds(pid), status_kib(pid, "VmRSS:"));
    let connected = scrape(server.metrics.expect("metrics"), "goclaw_connected_clients");
    stop.store(true, Ordering::Relaxed);
    let (closed, sockets) = hold.join().expect("holder");
    drop(sockets);
    table.row(
        &format!("{n} connections held two ping periods (3 s), heartbeats and ticks running: {}", bins.label),
        format!(
            "{connected} still connected, {closed} dropped; opened in {:.1} s; gateway: {threads} threads, {fds} fds, {:.0} MiB RSS",
            opened.as_secs_f64(),
            rss as f64 / 1024.0
        ),
        String::new(),
        "none dropped",
        Some(closed == 0 && connected == n as f64),
    );
}

/// One sample value from a /metrics scrape.
fn scrape(addr: SocketAddr, name: &str) -> f64 {
    let mut stream = TcpStream::connect(addr).expect("metrics");
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").expect("request");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("scrape");
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(f64::NAN)
}

/// Round trips of `message` over `send`/`recv`, timing each.
fn round_trips(n: usize, mut once: impl FnMut()) -> Vec<Duration> {
    // Warm up caches, branch predictors and the server's thread.
    for _ in 0..n / 20 + 10 {
        once();
    }
    (0..n)
        .map(|_| {
            let started = Instant::now();
            once();
            started.elapsed()
        })
        .collect()
}

/// A latency run: p50/p90/p99 and server CPU per round trip.
struct Run {
    latency: Percentiles,
    cpu_micros: f64,
}

fn run_raw(bins: &Bins, n: usize, pinned: bool) -> Run {
    let server = spawn(&bins.echo, &["--raw", "--listen", "127.0.0.1:0"], pinned);
    pin(pinned);
    let mut stream = TcpStream::connect(server.addr).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let message = [7u8; MESSAGE_BYTES];
    let mut reply = [0u8; MESSAGE_BYTES];
    let cpu0 = cpu_micros(server.pid());
    let samples = round_trips(n, || {
        stream.write_all(&message).expect("write");
        stream.read_exact(&mut reply).expect("read");
    });
    let cpu = (cpu_micros(server.pid()) - cpu0) / (n + n / 20 + 10) as f64;
    pin(false);
    Run { latency: percentiles(samples), cpu_micros: cpu }
}

fn run_echo(bins: &Bins, n: usize, pinned: bool) -> Run {
    let server = spawn(&bins.echo, &["--listen", "127.0.0.1:0"], pinned);
    pin(pinned);
    // A client as lean as the raw-TCP one: the upgrade by hand, then one
    // pre-masked 64-byte text frame out and its 66-byte echo in.
    let mut stream = TcpStream::connect(server.addr).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    stream
        .write_all(
            b"GET / HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .expect("upgrade");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).expect("101");
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    let frame = masked(0x1, &[b'm'; MESSAGE_BYTES]);
    let mut reply = [0u8; 2 + MESSAGE_BYTES];
    let cpu0 = cpu_micros(server.pid());
    let samples = round_trips(n, || {
        stream.write_all(&frame).expect("send");
        stream.read_exact(&mut reply).expect("echo");
    });
    assert_eq!(&reply[..2], &[0x81, MESSAGE_BYTES as u8]);
    let cpu = (cpu_micros(server.pid()) - cpu0) / (n + n / 20 + 10) as f64;
    pin(false);
    Run { latency: percentiles(samples), cpu_micros: cpu }
}

fn run_invoke(bins: &Bins, n: usize, pinned: bool, level: &str) -> Run {
    let server = gateway(bins, &["--tick-interval", "10m", "--pong-wait", "10m", "--log-level", level], pinned);
    pin(pinned);
    let node = hello(server.addr, "node", "bench-node", &["echo"]);
    let responder = thread::spawn(move || {
        pin(pinned);
        serve_node(node);
    });
    let mut op = hello(server.addr, "operator", "bench-op", &[]);
    let request = json!({"type": "req", "id": "i", "method": "node.invoke",
        "params": {"nodeId": "bench-node", "command": "echo", "params": {"n": 1}}})
    .to_string();
    let cpu0 = cpu_micros(server.pid());
    let samples = round_trips(n, || invoke_once(&mut op, &request));
    let cpu = (cpu_micros(server.pid()) - cpu0) / (n + n / 20 + 10) as f64;
    pin(false);
    drop(op);
    drop(server);
    let _ = responder.join();
    Run { latency: percentiles(samples), cpu_micros: cpu }
}

fn latency_text(run: &Run) -> String {
    let l = &run.latency;
    format!("p50 {:.1} µs, p90 {:.1}, p99 {:.1}", micros(l.p50), micros(l.p90), micros(l.p99))
}

/// Raw TCP and echo rows; returns the pinned raw-TCP run for later ratios.
fn latency_rows(table: &mut Table, bins: &Bins, options: &Options) -> Run {
    let n = options.round_trips;
    let raw_pinned = run_raw(bins, n, true);
    let raw = run_raw(bins, n, false);
    let echo_pinned = run_echo(bins, n, true);
    let echo = run_echo(bins, n, false);
    let ratio = |a: Duration, b: Duration| format!("{:.2}×", a.as_secs_f64() / b.as_secs_f64());
    table.row(
        &format!("raw TCP, 64-byte round trip, one core: {}", bins.label),
        latency_text(&raw_pinned),
        "1.00×".into(),
        "baseline",
        None,
    );
    table.row(
        &format!("raw TCP, 64-byte round trip, unpinned: {}", bins.label),
        latency_text(&raw),
        "1.00×".into(),
        "baseline",
        None,
    );
    table.row(
        &format!("raw TCP, server CPU per round trip: {}", bins.label),
        format!("{:.2} µs", raw.cpu_micros),
        "1.00×".into(),
        "baseline",
        None,
    );
    let p50_ratio = echo_pinned.latency.p50.as_secs_f64() / raw_pinned.latency.p50.as_secs_f64();
    table.row(
        &format!("echo example, 64-byte round trip, one core: {}", bins.label),
        latency_text(&echo_pinned),
        ratio(echo_pinned.latency.p50, raw_pinned.latency.p50),
        "p50 <= 1.2× raw TCP",
        Some(p50_ratio <= 1.2),
    );
    table.row(
        &format!("echo example, 64-byte round trip, unpinned: {}", bins.label),
        latency_text(&echo),
        ratio(echo.latency.p50, raw.latency.p50),
        "",
        None,
    );
    table.row(
        &format!("echo example, server CPU per round trip: {}", bins.label),
        format!("{:.2} µs", echo.cpu_micros),
        format!("{:.2}×", echo.cpu_micros / raw.cpu_micros),
        "<= 8.6 µs",
        Some(echo.cpu_micros <= 8.6),
    );
    raw_pinned
}

fn invoke_rows(table: &mut Table, bins: &Bins, options: &Options, raw_pinned: Run) {
    let pinned = run_invoke(bins, options.invokes, true, "info");
    let unpinned = run_invoke(bins, options.invokes, false, "info");
    let quiet = run_invoke(bins, options.invokes, false, "warn");
    let ratio = pinned.latency.p50.as_secs_f64() / raw_pinned.latency.p50.as_secs_f64();
    table.row(
        &format!("node.invoke round trip (operator → gateway → node → gateway → operator), one core: {}", bins.label),
        latency_text(&pinned),
        format!("{ratio:.2}×"),
        "p50 <= 2.5× raw TCP",
        Some(ratio <= 2.5),
    );
    table.row(
        &format!("node.invoke round trip, unpinned: {}", bins.label),
        latency_text(&unpinned),
        String::new(),
        "",
        None,
    );
    table.row(
        &format!("node.invoke, server CPU per invoke: {}", bins.label),
        format!("{:.2} µs", unpinned.cpu_micros),
        String::new(),
        "<= 20 µs",
        Some(unpinned.cpu_micros <= 20.0),
    );
    table.row(
        &format!("node.invoke, server CPU per invoke at --log-level warn (no audit line): {}", bins.label),
        format!("{:.2} µs", quiet.cpu_micros),
        String::new(),
        "reported",
        None,
    );
    let (rate, cpu) = throughput(bins, options.seconds);
    table.row(
        &format!("node.invoke throughput, 8 operators × 8 nodes, unpinned: {}", bins.label),
        format!("{rate:.0} invokes/s, {cpu:.2} µs server CPU per invoke"),
        String::new(),
        "reported",
        None,
    );
}

/// 8 operators, each invoking its own node in a closed loop for `seconds`.
fn throughput(bins: &Bins, seconds: u64) -> (f64, f64) {
    let server = gateway(bins, &["--tick-interval", "10m", "--pong-wait", "10m"], false);
    let pairs = 8;
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(pairs + 1));
    let mut workers = Vec::new();
    for i in 0..pairs {
        let node = hello(server.addr, "node", &format!("tp-node-{i}"), &["echo"]);
        thread::spawn(move || serve_node(node));
        let mut op = hello(server.addr, "operator", &format!("tp-op-{i}"), &[]);
        let (done, stop, start) = (done.clone(), stop.clone(), start.clone());
        workers.push(thread::spawn(move || {
            let request = json!({"type": "req", "id": "i", "method": "node.invoke",
                "params": {"nodeId": format!("tp-node-{i}"), "command": "echo", "params": i}})
            .to_string();
            start.wait();
            while !stop.load(Ordering::Relaxed) {
                invoke_once(&mut op, &request);
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    start.wait();
    let cpu0 = cpu_micros(server.pid());
    let count0 = done.load(Ordering::Relaxed);
    let began = Instant::now();
    thread::sleep(Duration::from_secs(seconds));
    let count = done.load(Ordering::Relaxed) - count0;
    let elapsed = began.elapsed().as_secs_f64();
    let cpu = cpu_micros(server.pid()) - cpu0;
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        let _ = worker.join();
    }
    (count as f64 / elapsed, cpu / count as f64)
}
