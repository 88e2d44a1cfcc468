//! The metrics listener (SPEC §6): `GET /metrics`, `/healthz`, `/readyz` on
//! `--metrics-listen`, never on the WebSocket port. Owns its listener, its
//! accept thread and at most [`MAX_CONNECTIONS`] connection threads, each
//! reading one request head within [`READ_TIMEOUT`]; tiny_http writes the
//! answers. Why not tiny_http's `Server`: docs/AUDIT.md, "The metrics
//! listener".

use std::io::{self, Cursor, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use log::{debug, warn};
use tiny_http::{HTTPVersion, Header, Response, StatusCode};

use crate::ops::metrics::{self, Metrics};
use crate::util::{ConnThreads, Slots};
use crate::wire::http::{self, HandshakeError, Refusal};
use crate::wire::net::{self, ACCEPT_ERROR_PAUSE};

/// Most metrics connections served at once. Prometheus and a health probe
/// need one each; the rest is headroom.
pub const MAX_CONNECTIONS: usize = 4;
/// Time from accept to a complete request head (the seed's read timeout).
pub const READ_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the accept thread waits for an idle connection's slot to free.
const ROOM_WAIT: Duration = Duration::from_millis(100);
/// Longest a response write may block (the seed's write timeout). One
/// request per connection, so the seed's 60 s idle timeout never applies.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(15);

/// Whether the gateway is ready: true from start until shutdown begins.
#[derive(Debug)]
pub struct Readiness(AtomicBool);

impl Default for Readiness {
    fn default() -> Self {
        Readiness(AtomicBool::new(true))
    }
}

impl Readiness {
    /// True until [`Readiness::set_draining`].
    pub fn is_ready(&self) -> bool {
        self.0.load(SeqCst)
    }

    /// Turns `/readyz` to 503 for good.
    pub fn set_draining(&self) {
        self.0.store(false, SeqCst);
    }
}

/// All the listener sees of the gateway: its metrics and its readiness.
#[derive(Debug, Clone)]
pub struct HealthView {
    /// What `/metrics` renders.
    pub metrics: Arc<Metrics>,
    /// What `/readyz` reports.
    pub readiness: Arc<Readiness>,
}

/// The running metrics listener.
#[derive(Debug)]
pub struct StatusServer {
    addr: SocketAddr,
    /// A clone of the accept thread's listener, to stop it.
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    conns: Arc<Conns>,
    accept: Option<JoinHandle<()>>,
}

/// Connection slots, thread handles and sockets (to cut them at stop, or
/// to make room).
#[derive(Debug)]
struct Conns {
    slots: Slots,
    threads: ConnThreads,
    sockets: parking_lot::Mutex<Vec<Held>>,
}

/// One served connection, as the accept thread sees it.
#[derive(Debug)]
struct Held {
    key: u64,
    stream: Arc<TcpStream>,
    accepted: Instant,
    /// Still reading its request head (an idle or slow client, if old).
    reading: Arc<AtomicBool>,
}

impl StatusServer {
    /// Starts serving on `listener`.
    ///
    /// # Errors
    /// The accept thread could not be started.
    pub fn start(view: HealthView, listener: TcpListener) -> io::Result<StatusServer> {
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Conns {
            slots: Slots::new(MAX_CONNECTIONS),
            threads: ConnThreads::default(),
            sockets: parking_lot::Mutex::new(Vec::new()),
        });
        let (stop_flag, accept_conns) = (stop.clone(), conns.clone());
        let clone = listener.try_clone()?;
        let accept = thread::Builder::new()
            .name("metrics".into())
            .spawn(move || accept_loop(&view, &listener, &stop_flag, &accept_conns))?;
        Ok(StatusServer { addr, listener: clone, stop, conns, accept: Some(accept) })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, cuts open connections and joins every thread.
    pub fn stop(&mut self) {
        self.stop.store(true, SeqCst);
        if let Some(accept) = self.accept.take() {
            net::stop_accepting(&self.listener);
            let _ = accept.join();
        }
        for held in self.conns.sockets.lock().iter() {
            net::cut(&held.stream);
        }
        self.conns.threads.join_all();
    }
}

impl Drop for StatusServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(view: &HealthView, listener: &TcpListener, stop: &AtomicBool, conns: &Arc<Conns>) {
    let mut next_key = 0u64;
    loop {
        let accepted = listener.accept();
        if stop.load(SeqCst) {
            return;
        }
        conns.threads.reap();
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                warn!(error:% = e; "metrics listener: accept failed");
                thread::sleep(ACCEPT_ERROR_PAUSE);
                continue;
            }
        };
        if !conns.slots.try_acquire() && !conns.make_room() {
            view.metrics.refused(Refusal::AtCapacity);
            http::refuse_now(&stream, Refusal::AtCapacity);
            continue;
        }
        next_key += 1;
        let key = next_key;
        let stream = Arc::new(stream);
        let reading = Arc::new(AtomicBool::new(true));
        let held = Held { key, stream: stream.clone(), accepted: Instant::now(), reading: reading.clone() };
        conns.sockets.lock().push(held);
        let (view, owned) = (view.clone(), conns.clone());
        let spawned = thread::Builder::new().name("metrics-conn".into()).spawn(move || {
            let _guard = SlotGuard { conns: &owned, key };
            serve(&view, &stream, &reading);
        });
        match spawned {
            Ok(handle) => conns.threads.insert(handle),
            Err(e) => {
                // The closure never ran, so its guard never existed.
                conns.release(key);
                warn!(error:% = e; "metrics listener: cannot start a connection thread");
            }
        }
    }
}

/// Releases a metrics connection's slot and socket however its thread ends.
struct SlotGuard<'a> {
    conns: &'a Conns,
    key: u64,
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        self.conns.release(self.key);
        self.conns.threads.finished();
    }
}

impl Conns {
    /// Gives back a connection's slot and forgets its socket.
    fn release(&self, key: u64) {
        self.sockets.lock().retain(|held| held.key != key);
        self.slots.release();
    }

    /// Every slot is taken: cuts the oldest connection still reading its
    /// request head (an idle or slow client: a real probe sends its request
    /// at once, and one being answered is never cut), and takes its slot
    /// once its thread lets go. So idle sockets, even ones reopened as soon
    /// as they are cut, cannot keep `/healthz` from being answered (SPEC §6).
    /// False if none qualifies or the slot did not free.
    fn make_room(&self) -> bool {
        let idle = {
            let sockets = self.sockets.lock();
            sockets
                .iter()
                .filter(|held| held.reading.load(SeqCst))
                .min_by_key(|held| held.accepted)
                .map(|held| held.stream.clone())
        };
        let Some(idle) = idle else { return false };
        net::cut(&idle);
        self.slots.acquire_before(Instant::now() + ROOM_WAIT)
    }
}

/// A parsed request line: method and path.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RequestLine {
    method: String,
    path: String,
}

/// Serves one request on one connection.
fn serve(view: &HealthView, stream: &TcpStream, reading: &AtomicBool) {
    if stream.set_write_timeout(Some(WRITE_TIMEOUT)).is_err() {
        return;
    }
    let deadline = Instant::now() + READ_TIMEOUT;
    let head = http::read_head(stream, deadline, parse_request_line);
    reading.store(false, SeqCst);
    let (status, content_type, body, head_only) = match head {
        Ok((line, _)) => {
            let head_only = line.method == "HEAD";
            let (status, content_type, body) = route(view, &line);
            (status, content_type, body, head_only)
        }
        Err(HandshakeError::Refused(refusal)) => {
            let _ = net::write_all(stream, refusal.response().as_bytes());
            return;
        }
        Err(HandshakeError::Timeout | HandshakeError::Closed) => {
            debug!("metrics listener: request not received in time");
            return;
        }
    };
    let len = body.len();
    let mut response = Response::new(StatusCode(status), Vec::new(), Cursor::new(body), Some(len), None)
        // Content-Length, never chunked: the body is already complete.
        .with_chunked_threshold(usize::MAX);
    let allow = if status == 405 { Some(("Allow", "GET, HEAD")) } else { None };
    let headers = [("Content-Type", content_type), ("Connection", "close"), ("Cache-Control", "no-store")];
    for (name, value) in headers.into_iter().chain(allow) {
        if let Ok(header) = Header::from_bytes(name.as_bytes(), value.as_bytes()) {
            response.add_header(header);
        }
    }
    let mut writer = stream;
    let _ = response.raw_print(&mut writer, HTTPVersion(1, 1), &[], head_only, None);
    let _ = writer.flush();
    let _ = stream.shutdown(Shutdown::Write);
}

/// Status, content type and body for a request.
fn route(view: &HealthView, line: &RequestLine) -> (u16, &'static str, Vec<u8>) {
    const TEXT: &str = "text/plain; charset=utf-8";
    let path = line.path.split_once('?').map_or(line.path.as_str(), |(path, _)| path);
    let known = matches!(path, "/metrics" | "/healthz" | "/readyz");
    if !known {
        return (404, TEXT, b"not found: try /metrics, /healthz or /readyz\n".to_vec());
    }
    if line.method != "GET" && line.method != "HEAD" {
        return (405, TEXT, b"method not allowed\n".to_vec());
    }
    match path {
        "/metrics" => match view.metrics.render() {
            Ok(body) => (200, metrics::CONTENT_TYPE, body),
            Err(e) => (500, TEXT, format!("cannot render metrics: {e}\n").into_bytes()),
        },
        "/healthz" => (200, TEXT, b"ok\n".to_vec()),
        _ if !view.readiness.is_ready() => (503, TEXT, b"draining\n".to_vec()),
        _ => (200, TEXT, b"ready\n".to_vec()),
    }
}

/// Parses a request head far enough to route it: method and path.
fn parse_request_line(head: &[u8]) -> Result<Option<(RequestLine, usize)>, Refusal> {
    let mut headers = vec![httparse::EMPTY_HEADER; http::MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(head) {
        Ok(httparse::Status::Complete(len)) => {
            let method = request.method.unwrap_or_default().to_string();
            let path = request.path.unwrap_or_default().to_string();
            Ok(Some((RequestLine { method, path }, len)))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(Refusal::TooLarge),
        Err(_) => Err(Refusal::BadRequest("malformed HTTP request")),
    }
}

/// Probes a health URL (`http://HOST:PORT/PATH`) the way `goclaw
/// healthcheck` does: one GET, `timeout` for everything, healthy on 200.
/// For Docker's `HEALTHCHECK`, where the image has no shell or curl.
///
/// # Errors
/// Why it is not healthy: a bad URL, no connection, a timeout, or the
/// status line that came back.
pub fn probe(url: &str, timeout: Duration) -> Result<(), String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| format!("{url}: only http:// URLs are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/healthz"),
    };
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| format!("{url}: {e}"))?
        .next()
        .ok_or_else(|| format!("{url}: {authority} resolves to no address"))?;
    let stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("{addr}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| e.to_string())?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    (&stream).write_all(request.as_bytes()).map_err(|e| format!("{addr}: {e}"))?;
    let mut head = Vec::new();
    (&stream).take(1024).read_to_end(&mut head).map_err(|e| format!("{addr}: {e}"))?;
    let head = String::from_utf8_lossy(&head);
    let status = head.lines().next().unwrap_or_default();
    match status.split_whitespace().nth(1) {
        Some("200") => Ok(()),
        _ => Err(format!("{url}: {}", if status.is_empty() { "no answer" } else { status })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines() {
        let line = |method: &str, path: &str| RequestLine { method: method.into(), path: path.into() };
        assert_eq!(
            parse_request_line(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Ok(Some((line("GET", "/metrics"), 34)))
        );
        assert_eq!(parse_request_line(b"GET /metr"), Ok(None));
        assert!(parse_request_line(b"\x00\r\n\r\n").is_err());
    }
}
