//! Shared test harness: starts the real gateway in-process on 127.0.0.1:0
//! with short durations, and speaks to it with a real WebSocket client
//! (tungstenite's client side: its own handshake, masking and framing).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::OwnedFd;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use goclaw::{Config, Gateway, Token};
use serde_json::{Value, json};
use tungstenite::protocol::CloseFrame;
use tungstenite::{Message, WebSocket};

pub type Client = WebSocket<TcpStream>;

/// How long any single read in a test may block before the test fails.
pub const READ_LIMIT: Duration = Duration::from_secs(10);
pub const TOKEN: &str = "test-token";

/// A config for tests: loopback port 0, a token, short durations, limits
/// high enough that only the test that wants a limit hits it.
pub fn config() -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        metrics_listen: "127.0.0.1:0".parse().unwrap(),
        token: Some(Token::new("--token", TOKEN.into()).unwrap()),
        pong_wait: Duration::from_secs(5),
        ping_period: Duration::from_secs(4),
        handshake_timeout: Duration::from_secs(5),
        tick_interval: Duration::from_secs(60),
        shutdown_timeout: Duration::from_secs(2),
        rate_limit_per_sec: 10_000.0,
        rate_burst: 10_000,
        message_rate_per_sec: 10_000.0,
        message_burst: 10_000,
        // Most tests' nodes are plain WebSocket clients that cannot sign.
        allow_token_nodes: true,
        max_unauthenticated_per_source: 1024,
        ..Config::default()
    }
}

pub fn start(config: Config) -> Gateway {
    Gateway::start(config).expect("gateway starts")
}

/// A TCP connection to `addr`, optionally from a given local address and
/// with a small receive buffer (to make a client that never reads stall fast).
pub fn tcp(addr: SocketAddr, from: Option<IpAddr>, rcvbuf: Option<usize>) -> TcpStream {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, bind, connect, setsockopt, socket, sockopt};
    let fd: OwnedFd = socket(AddressFamily::Inet, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).unwrap();
    if let Some(size) = rcvbuf {
        setsockopt(&fd, sockopt::RcvBuf, &size).unwrap();
    }
    if let Some(IpAddr::V4(ip)) = from {
        bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(std::net::SocketAddrV4::new(ip, 0))).unwrap();
    }
    let SocketAddr::V4(target) = addr else { panic!("tests use IPv4") };
    connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(target)).unwrap();
    let stream = TcpStream::from(fd);
    stream.set_read_timeout(Some(READ_LIMIT)).unwrap();
    stream
}

/// Upgrades a TCP connection; returns the client and the challenge event.
pub fn upgrade(stream: TcpStream) -> (Client, Value) {
    let url = format!("ws://{}/ws", stream.peer_addr().unwrap());
    let (mut ws, response) = tungstenite::client::client(url, stream).expect("upgrade");
    assert_eq!(response.status(), 101);
    let challenge = recv(&mut ws);
    assert_eq!(challenge["event"], "connect.challenge", "{challenge}");
    (ws, challenge)
}

/// An upgraded client that has not sent `connect` yet.
pub fn ws(addr: SocketAddr) -> Client {
    upgrade(tcp(addr, None, None)).0
}

pub fn connect_params(role: &str, id: &str, commands: &[&str]) -> Value {
    json!({
        "minProtocol": 3, "maxProtocol": 3,
        "client": {"id": id, "displayName": format!("{id} display"), "version": "1.2.3", "platform": "test", "mode": role},
        "role": role, "commands": commands, "auth": {"token": TOKEN}
    })
}

/// The params of a `node.invoke.request` event, as the node reads them
/// (`paramsJSON`, SPEC §4.2).
pub fn params_of(event: &Value) -> Value {
    serde_json::from_str(event["payload"]["paramsJSON"].as_str().expect("paramsJSON")).expect("paramsJSON is JSON")
}

/// The node's payload in a `node.invoke` answer (`{ok, nodeId, command,
/// payload}`).
pub fn invoke_payload(res: &Value) -> Value {
    res["payload"]["payload"].clone()
}

/// A distinct loopback source address, so tests that hold many
/// connections before `connect` stay under the per-source bound.
pub fn source(i: usize) -> Option<IpAddr> {
    Some(IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 1 + (i / 250) as u8, 1 + (i % 250) as u8)))
}

/// Sends `connect` and returns the response.
pub fn hello(ws: &mut Client, params: Value) -> Value {
    send(ws, &json!({"type": "req", "id": "c1", "method": "connect", "params": params}));
    recv_res(ws, "c1")
}

pub fn node(addr: SocketAddr, id: &str, commands: &[&str]) -> Client {
    node_from(addr, None, id, commands)
}

/// `node`, from a given loopback source address.
pub fn node_from(addr: SocketAddr, from: Option<IpAddr>, id: &str, commands: &[&str]) -> Client {
    let mut ws = upgrade(tcp(addr, from, None)).0;
    let res = hello(&mut ws, connect_params("node", id, commands));
    assert_eq!(res["ok"], true, "{res}");
    ws
}

pub fn operator(addr: SocketAddr) -> Client {
    operator_from(addr, None)
}

/// `operator`, from a given loopback source address.
pub fn operator_from(addr: SocketAddr, from: Option<IpAddr>) -> Client {
    let mut ws = upgrade(tcp(addr, from, None)).0;
    let res = hello(&mut ws, connect_params("operator", "op", &[]));
    assert_eq!(res["ok"], true, "{res}");
    ws
}

pub fn send(ws: &mut Client, frame: &Value) {
    ws.send(Message::text(frame.to_string())).expect("send");
}

pub fn request(ws: &mut Client, id: &str, method: &str, params: Value) {
    send(ws, &json!({"type": "req", "id": id, "method": method, "params": params}));
}

/// The next text frame as JSON (pings are answered by tungstenite).
pub fn recv(ws: &mut Client) -> Value {
    loop {
        match ws.read().expect("read a frame") {
            Message::Text(text) => return serde_json::from_str(&text).expect("frame is JSON"),
            Message::Close(frame) => panic!("unexpected close: {frame:?}"),
            _ => {}
        }
    }
}

/// The response with this id, skipping events (ticks and pings do not
/// keep a test waiting past `READ_LIMIT`).
pub fn recv_res(ws: &mut Client, id: &str) -> Value {
    let until = Instant::now() + READ_LIMIT;
    loop {
        assert!(Instant::now() < until, "no response {id:?} within {READ_LIMIT:?}");
        let frame = recv(ws);
        if frame["type"] == "res" && frame["id"] == id {
            return frame;
        }
        assert_eq!(frame["type"], "event", "unexpected frame {frame}");
    }
}

/// The next event with this name, skipping others.
pub fn recv_event(ws: &mut Client, name: &str) -> Value {
    let until = Instant::now() + READ_LIMIT;
    loop {
        assert!(Instant::now() < until, "no {name} event within {READ_LIMIT:?}");
        let frame = recv(ws);
        if frame["type"] == "event" && frame["event"] == name {
            return frame;
        }
    }
}

/// Reads until the server's close frame, answers it as a well-behaved
/// client does, and waits for the server to close the TCP connection
/// (RFC 6455 §7.1.1: the server closes first). Returns the server's frame.
pub fn recv_close(ws: &mut Client) -> Option<CloseFrame> {
    let frame = loop {
        match ws.read() {
            Ok(Message::Close(frame)) => break frame,
            Ok(_) => {}
            Err(e) => panic!("connection ended without a close frame: {e}"),
        }
    };
    // tungstenite queued our reply; flushing sends it.
    let _ = ws.flush();
    loop {
        match ws.read() {
            Ok(_) => {}
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => break,
            Err(tungstenite::Error::Io(e)) if e.kind() != std::io::ErrorKind::WouldBlock => break,
            Err(tungstenite::Error::Protocol(_)) => break,
            Err(e) => panic!("server did not close the connection after the close handshake: {e}"),
        }
    }
    frame
}

/// Parses the server's frames straight off the socket (no replies, unlike a
/// WebSocket client) until a close frame: its code and reason. `None` at EOF.
pub fn raw_close(stream: &mut TcpStream) -> Option<(u16, String)> {
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).ok()?;
    let mut rest = &bytes[..];
    while rest.len() >= 2 {
        let opcode = rest[0] & 0x0f;
        let (len, header) = match rest[1] & 0x7f {
            126 => (usize::from(u16::from_be_bytes([rest[2], rest[3]])), 4),
            127 => (u64::from_be_bytes(rest[2..10].try_into().unwrap()) as usize, 10),
            n => (usize::from(n), 2),
        };
        let payload = &rest[header..header + len];
        if opcode == 0x8 {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            return Some((code, String::from_utf8_lossy(&payload[2..]).into_owned()));
        }
        rest = &rest[header + len..];
    }
    None
}

pub fn close_code(frame: &Option<CloseFrame>) -> u16 {
    frame.as_ref().map_or(1005, |f| u16::from(f.code))
}

/// Sends raw bytes and reads the whole HTTP answer until the server closes.
pub fn http(addr: SocketAddr, request: &str) -> String {
    let mut stream = tcp(addr, None, None);
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

/// A well-formed upgrade request for `path`, plus extra header lines.
pub fn upgrade_request(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// A masked client frame (RFC 6455 §5.2), with full control of its bits.
pub fn client_frame(first_byte: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x11, 0x22, 0x33, 0x44];
    let mut frame = vec![first_byte];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= 0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// The gateway binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_goclaw");

/// `goclaw serve` on ephemeral loopback ports with the test token, plus `extra`.
pub fn serve_binary(extra: &[&str]) -> Running {
    serve_binary_at(BIN, extra)
}

/// `serve_binary` for another build of the gateway (e.g. the static one).
pub fn serve_binary_at(bin: &str, extra: &[&str]) -> Running {
    Running::start(serve_command(bin, "127.0.0.1:0", extra))
}

/// `BIN serve` on `listen` and an ephemeral metrics port with the test
/// token, plus `extra`, in a clean environment whose `HOME` is the temp dir.
pub fn serve_command(bin: &str, listen: &str, extra: &[&str]) -> Command {
    let mut command = Command::new(bin);
    command
        .args(["serve", "--listen", listen, "--metrics-listen", "127.0.0.1:0", "--token", TOKEN, "--allow-token-nodes"])
        .args(extra)
        .env_clear()
        .env("HOME", std::env::temp_dir());
    command
}

/// One sample of a `/metrics` scrape, as written.
pub fn metric(metrics: SocketAddr, name: &str) -> Option<String> {
    let text = http(metrics, "GET /metrics HTTP/1.1\r\n\r\n");
    let prefix = format!("{name} ");
    text.lines().find_map(|line| line.strip_prefix(prefix.as_str())).map(str::to_string)
}

/// Sends `signal` to a child process.
pub fn signal_child(child: &Child, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).unwrap();
}

/// Polls `condition` every 10 ms until it holds or `limit` passes.
pub fn wait_for(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    condition()
}

/// A running gateway process, its address, and its stderr lines.
pub struct Running {
    pub child: Child,
    pub addr: SocketAddr,
    pub metrics: SocketAddr,
    lines: Receiver<String>,
}

impl Running {
    pub fn start(mut command: Command) -> Running {
        let mut child = command.stderr(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let unset: SocketAddr = "0.0.0.0:0".parse().unwrap();
        let mut running = Running { child, addr: unset, metrics: unset, lines };
        let line = running.wait_line("listening");
        let field = |key: &str| line.split_whitespace().find_map(|w| w.strip_prefix(key)).unwrap().parse().unwrap();
        running.addr = field("addr=");
        running.metrics = field("metrics_addr=");
        running
    }

    /// The first stderr line containing `needle`.
    pub fn wait_line(&mut self, needle: &str) -> String {
        line_with(&self.lines, needle, READ_LIMIT)
    }

    /// Reads every stderr line not consumed yet; whether one reports a panic.
    pub fn drain_panicked(&self) -> bool {
        let mut panicked = false;
        while let Ok(line) = self.lines.try_recv() {
            panicked |= line.contains("panicked");
        }
        panicked
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        signal_child(&self.child, signal);
    }

    /// Threads, open descriptors and resident KiB of the gateway process.
    pub fn resources(&self) -> (usize, usize, u64) {
        let pid = self.child.id();
        let count = |dir: String| std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let rss = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok());
        (count(format!("/proc/{pid}/task")), count(format!("/proc/{pid}/fd")), rss.unwrap_or(0))
    }

    /// Resident KiB of the gateway's anonymous memory (heap and stacks):
    /// what it allocated, without the pages of its own binary that the
    /// first use of a code path maps in (file-backed, paged in once, and
    /// several hundred KiB in a debug build).
    pub fn anon_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("RssAnon:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    /// Exit status, failing the test if the process outlives `limit`.
    pub fn wait(&mut self, limit: Duration) -> i32 {
        wait_exit(&mut self.child, limit).unwrap_or(-1)
    }
}

/// A background `goclaw` process (its environment cleared but for `PATH`)
/// and its output lines, stdout and stderr together.
pub struct Background {
    pub child: Child,
    lines: Receiver<String>,
}

impl Background {
    pub fn start(args: &[&str]) -> Background {
        let mut child = Command::new(BIN)
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        for pipe in
            [Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>, Box::new(child.stderr.take().unwrap())]
        {
            let tx = tx.clone();
            thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        Background { child, lines }
    }

    /// The first line containing `needle`, within `limit`.
    pub fn line(&self, needle: &str, limit: Duration) -> String {
        line_with(&self.lines, needle, limit)
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        signal_child(&self.child, signal);
    }

    /// Exit status, failing the test if the process outlives `limit`.
    pub fn wait(&mut self, limit: Duration) -> Option<i32> {
        wait_exit(&mut self.child, limit)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The first line from `lines` containing `needle`, failing the test if
/// none comes within `limit`.
pub fn line_with(lines: &Receiver<String>, needle: &str, limit: Duration) -> String {
    let until = Instant::now() + limit;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let line = lines.recv_timeout(left).unwrap_or_else(|_| panic!("no line with {needle:?}"));
        if line.contains(needle) {
            return line;
        }
    }
}

/// A child's exit code (`None` if a signal ended it), failing the test if
/// it outlives `limit`.
pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<i32> {
    let until = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        assert!(Instant::now() < until, "process still running after {limit:?}");
        thread::sleep(Duration::from_millis(10));
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A device with an Ed25519 identity, signing `connect` as real OpenClaw
/// clients do (the v3 payload, `signedAt` the challenge's `ts`).
pub struct Device {
    pub key: goclaw::wire::device::DeviceKey,
}

impl Device {
    pub fn new() -> Device {
        Device { key: goclaw::wire::device::DeviceKey::generate().unwrap() }
    }

    pub fn id(&self) -> String {
        self.key.device_id()
    }

    /// Signed `connect` params for `role`, answering `challenge`; `token`
    /// goes in `auth.token`, `device_token` in `auth.deviceToken`.
    pub fn connect(&self, challenge: &Value, role: &str, token: Option<&str>, device_token: Option<&str>) -> Value {
        let nonce = challenge["payload"]["nonce"].as_str().unwrap();
        let signed_at = challenge["payload"]["ts"].as_u64().unwrap();
        let (client_id, mode) = if role == "node" { ("node-host", "node") } else { ("cli", "cli") };
        let id = self.id();
        let fields = goclaw::wire::device::PayloadFields {
            device_id: &id,
            client_id,
            client_mode: mode,
            role,
            scopes: &[],
            signed_at_ms: signed_at,
            token: token.or(device_token),
            nonce,
            platform: Some("linux"),
            device_family: None,
        };
        let mut auth = serde_json::Map::new();
        if let Some(token) = token {
            auth.insert("token".into(), json!(token));
        }
        if let Some(token) = device_token {
            auth.insert("deviceToken".into(), json!(token));
        }
        json!({
            "minProtocol": 3, "maxProtocol": 3,
            "client": {"id": client_id, "displayName": format!("dev-{}", &id[..8]), "version": "2026.5.7",
                       "platform": "linux", "mode": mode},
            "role": role, "scopes": [], "caps": ["system"], "commands": ["system.which", "echo"],
            "auth": auth,
            "device": {"id": id, "publicKey": self.key.public_key_b64url(), "signature": self.key.sign_v3(&fields),
                       "signedAt": signed_at, "nonce": nonce},
        })
    }
}

/// Upgrades with extra request headers (a proxy's `X-Forwarded-For`, ...);
/// returns the client and the challenge.
pub fn upgrade_with(stream: TcpStream, headers: &[(&str, &str)]) -> (Client, Value) {
    use tungstenite::client::IntoClientRequest;
    let url = format!("ws://{}/ws", stream.peer_addr().unwrap());
    let mut request = url.into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(
            tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            tungstenite::http::HeaderValue::from_str(value).unwrap(),
        );
    }
    let (mut ws, _) = tungstenite::client::client(request, stream).expect("upgrade");
    let challenge = recv(&mut ws);
    assert_eq!(challenge["event"], "connect.challenge", "{challenge}");
    (ws, challenge)
}
