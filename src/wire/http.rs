//! The HTTP side of the WebSocket port (SPEC §3): reading the upgrade request
//! under the handshake deadline, deciding between 101 and a refusal, and the
//! short replies sent before any upgrade.
//!
//! The request head is bounded ([`MAX_HEAD_BYTES`], [`MAX_HEADERS`]) and read
//! into a heap buffer that is freed once the upgrade is done. [`check_request`]
//! is a pure function of the bytes read, so it can be fuzzed.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, TcpStream};
use std::time::{Duration, Instant};

pub use crate::wire::refusal::Refusal;
use crate::wire::{accept_key, net};

/// Largest request head accepted (request line and headers), in bytes.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Most headers accepted in a request.
pub const MAX_HEADERS: usize = 32;
/// First allocation for the request head; typical upgrades fit.
const INITIAL_HEAD_BYTES: usize = 1024;
/// Most `X-Forwarded-For` addresses kept: the nearest hops.
pub const MAX_FORWARDED: usize = 8;

/// A request that may be upgraded.
#[derive(Debug, PartialEq, Eq)]
pub struct Upgrade {
    /// The `Sec-WebSocket-Accept` value to answer with.
    pub accept: String,
    /// The request came through a proxy: it carries `Forwarded`,
    /// `X-Forwarded-For` or `X-Real-IP` (SPEC §4.4: never local then).
    pub forwarded: bool,
    /// The addresses `X-Forwarded-For` lists, in order (or `X-Real-IP`'s
    /// when there is none), at most [`MAX_FORWARDED`]; only a trusted
    /// proxy's are believed (`gateway::config::TrustedProxies`).
    pub forwarded_for: Vec<IpAddr>,
    /// Bytes of the request head; anything after belongs to the WebSocket.
    pub head_len: usize,
}

/// How reading the upgrade request ended, short of success.
#[derive(Debug)]
pub enum HandshakeError {
    /// Answer with this HTTP refusal.
    Refused(Refusal),
    /// The handshake deadline passed (slowloris).
    Timeout,
    /// The client went away or the socket failed.
    Closed,
}

/// Reads the upgrade request until it is complete, refused, or the
/// deadline. Returns the upgrade and the bytes that followed the head.
///
/// # Errors
/// See [`HandshakeError`].
pub fn read_upgrade(
    stream: &TcpStream,
    deadline: Instant,
    allowed_origins: &[String],
) -> Result<(Upgrade, Vec<u8>), HandshakeError> {
    read_head(stream, deadline, |head| {
        Ok(check_request(head, allowed_origins)?.map(|upgrade| {
            let len = upgrade.head_len;
            (upgrade, len)
        }))
    })
}

/// Reads a request head of at most [`MAX_HEAD_BYTES`] before `deadline`.
/// `check` decides on the bytes read so far: `Ok(None)` to read more,
/// `Ok(Some((value, head_len)))` when complete. Returns the value and the
/// bytes after the head. The buffer is on the heap and freed on return.
///
/// # Errors
/// See [`HandshakeError`].
#[inline(never)]
pub fn read_head<T>(
    stream: &TcpStream,
    deadline: Instant,
    check: impl Fn(&[u8]) -> Result<Option<(T, usize)>, Refusal>,
) -> Result<(T, Vec<u8>), HandshakeError> {
    read_head_from(&mut Deadlined { stream, deadline, timer: net::ReadTimer::default() }, check)
}

/// A socket whose every read ends by `deadline` (`TimedOut` then).
struct Deadlined<'a> {
    stream: &'a TcpStream,
    deadline: Instant,
    timer: net::ReadTimer,
}

impl Read for Deadlined<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.timer.read(self.stream, buf, self.deadline)
    }
}

/// [`read_head`] through any reader that bounds its own reads in time (the
/// gateway's deadline socket, or the client's transport, plain or TLS,
/// whose socket reads carry the deadline), so `TimedOut` (or `WouldBlock`)
/// from it is the deadline. Same bounds as [`read_head`].
///
/// # Errors
/// See [`HandshakeError`].
pub fn read_head_from<R: Read, T>(
    reader: &mut R,
    check: impl Fn(&[u8]) -> Result<Option<(T, usize)>, Refusal>,
) -> Result<(T, Vec<u8>), HandshakeError> {
    let mut buf = vec![0u8; INITIAL_HEAD_BYTES];
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            if buf.len() >= MAX_HEAD_BYTES {
                return Err(HandshakeError::Refused(Refusal::TooLarge));
            }
            buf.resize((buf.len() * 2).min(MAX_HEAD_BYTES), 0);
        }
        let n = match reader.read(&mut buf[filled..]) {
            Ok(0) => return Err(HandshakeError::Closed),
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => {
                return Err(HandshakeError::Timeout);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return Err(HandshakeError::Closed),
        };
        filled += n;
        if let Some((value, head_len)) = check(&buf[..filled]).map_err(HandshakeError::Refused)? {
            let tail = buf.get(head_len..filled).unwrap_or_default().to_vec();
            return Ok((value, tail));
        }
    }
}

/// Decides on a request head: `Ok(None)` while it is incomplete.
///
/// Order: malformed (400/431), path (404), not an upgrade (426), method
/// (405), HTTP version and headers (400), WebSocket version (426), origin
/// (403).
///
/// # Errors
/// The [`Refusal`] to answer with.
#[inline(never)]
pub fn check_request(head: &[u8], allowed_origins: &[String]) -> Result<Option<Upgrade>, Refusal> {
    // On the heap: a kilobyte on a connection thread's stack would stay
    // resident for the connection's whole life.
    let mut headers = vec![httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let head_len = match request.parse(head) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Refusal::TooLarge),
        Err(_) => return Err(Refusal::BadRequest("malformed HTTP request")),
    };
    let path = request_path(request.path.unwrap_or_default());
    if path != "/" && path != "/ws" {
        return Err(Refusal::NotFound);
    }
    let mut upgrade_websocket = false;
    let mut connection_upgrade = false;
    let mut key = None;
    let mut version = None;
    let mut origin = None;
    let mut forwarded = false;
    let (mut forwarded_for, mut real_ip) = (Vec::new(), None);
    for header in request.headers.iter() {
        let name = header.name;
        if ["forwarded", "x-forwarded-for", "x-real-ip"].iter().any(|h| name.eq_ignore_ascii_case(h)) {
            forwarded = true;
            let value = std::str::from_utf8(header.value).unwrap_or_default();
            if name.eq_ignore_ascii_case("x-forwarded-for") {
                // The nearest hops are the ones a trusted proxy vouches for.
                forwarded_for.extend(value.split(',').filter_map(|ip| ip.trim().parse::<IpAddr>().ok()));
                forwarded_for.drain(..forwarded_for.len().saturating_sub(MAX_FORWARDED));
            } else if name.eq_ignore_ascii_case("x-real-ip") {
                real_ip = value.trim().parse::<IpAddr>().ok();
            }
            continue;
        }
        if !["upgrade", "connection", "sec-websocket-key", "sec-websocket-version", "origin"]
            .iter()
            .any(|h| name.eq_ignore_ascii_case(h))
        {
            // Other headers may carry obs-text (RFC 7230 §3.2.4): not ours to judge.
            continue;
        }
        let value = std::str::from_utf8(header.value).map_err(|_| Refusal::BadRequest("header is not UTF-8"))?.trim();
        if name.eq_ignore_ascii_case("upgrade") {
            upgrade_websocket |= has_token(value, "websocket");
        } else if name.eq_ignore_ascii_case("connection") {
            connection_upgrade |= has_token(value, "upgrade");
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            set_once(&mut key, value)?;
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            set_once(&mut version, value)?;
        } else if name.eq_ignore_ascii_case("origin") {
            set_once(&mut origin, value)?;
        }
    }
    if !upgrade_websocket {
        return Err(Refusal::UpgradeRequired);
    }
    if request.method != Some("GET") {
        return Err(Refusal::MethodNotAllowed);
    }
    if request.version != Some(1) {
        return Err(Refusal::BadRequest("WebSocket needs HTTP/1.1"));
    }
    if !connection_upgrade {
        return Err(Refusal::BadRequest("missing Connection: upgrade"));
    }
    if version != Some("13") {
        return Err(Refusal::UpgradeRequired);
    }
    let key = key.filter(|k| is_websocket_key(k)).ok_or(Refusal::BadRequest("missing or invalid Sec-WebSocket-Key"))?;
    if let Some(origin) = origin {
        let origin = origin.trim_end_matches('/');
        if !allowed_origins.is_empty() && !allowed_origins.iter().any(|o| o.eq_ignore_ascii_case(origin)) {
            return Err(Refusal::Forbidden);
        }
    }
    if forwarded_for.is_empty() {
        forwarded_for.extend(real_ip);
    }
    Ok(Some(Upgrade { accept: accept_key::accept_key(key), forwarded, forwarded_for, head_len }))
}

/// The path of a request target, in origin form (`/ws?x=1`) or absolute
/// form (`http://host/ws`, RFC 7230 §5.3.2), without its query.
fn request_path(target: &str) -> &str {
    let target = match target.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("ws") => {
            rest.find('/').map_or("/", |at| &rest[at..])
        }
        _ => target,
    };
    target.split_once('?').map_or(target, |(path, _)| path)
}

/// Answers a refused connection from an accept thread, without blocking
/// it: reads what already arrived of the request (so closing does not turn
/// into a reset before the client reads the answer), writes the answer
/// (small, into an empty send buffer: it fits), then FIN.
pub fn refuse_now(stream: &TcpStream, refusal: Refusal) {
    if stream.set_nonblocking(true).is_err() {
        return;
    }
    let mut scratch = [0u8; 1024];
    let _ = (&*stream).read(&mut scratch);
    let _ = (&*stream).write_all(refusal.response().as_bytes());
    let _ = stream.shutdown(Shutdown::Write);
}

/// The `101 Switching Protocols` response for an accepted upgrade.
pub fn switching_protocols(upgrade: &Upgrade) -> String {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        upgrade.accept
    )
}

/// Whether a comma-separated header value contains `token` (case-insensitive).
fn has_token(value: &str, token: &str) -> bool {
    value.split(',').any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Keeps the first value of a header that must appear once.
fn set_once<'a>(slot: &mut Option<&'a str>, value: &'a str) -> Result<(), Refusal> {
    if slot.replace(value).is_some() {
        return Err(Refusal::BadRequest("duplicate WebSocket header"));
    }
    Ok(())
}

/// A key is 16 random bytes in base64: 22 characters and `==` (RFC 6455 §4.1).
fn is_websocket_key(key: &str) -> bool {
    let bytes = key.as_bytes();
    bytes.len() == 24
        && bytes.ends_with(b"==")
        && bytes[..22].iter().all(|&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// An HTTP status code, its reason phrase and its `Retry-After` (delta
/// seconds; an HTTP date is ignored).
type Status = (u16, String, Option<Duration>);

/// Decides on the server's answer head: `Ok(None)` while incomplete; the
/// status and the head's length once complete (a 101 must accept our key).
pub fn check_response(head: &[u8], expected_accept: &str) -> Result<Option<(Status, usize)>, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(head) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(Refusal::BadRequest("malformed response")),
    };
    let status = response.code.unwrap_or(0);
    let header =
        |name: &str| response.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value.trim_ascii());
    if status == 101 {
        let upgrade = header("upgrade").is_some_and(|v| v.eq_ignore_ascii_case(b"websocket"));
        if !upgrade || header("sec-websocket-accept") != Some(expected_accept.as_bytes()) {
            return Err(Refusal::BadRequest("not a WebSocket upgrade"));
        }
    }
    let retry_after = header("retry-after")
        .filter(|v| !v.is_empty() && v.iter().all(u8::is_ascii_digit))
        .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
        .map(Duration::from_secs);
    Ok(Some(((status, response.reason.unwrap_or_default().to_string(), retry_after), len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn request(path: &str, extra: &str) -> String {
        format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
             Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
    }

    #[test]
    fn upgrades() {
        for path in ["/", "/ws", "/ws?x=1", "http://gw.example/ws", "ws://gw.example:18789/?a=b", "http://gw.example"] {
            let head = request(path, "");
            let up = check_request(head.as_bytes(), &[]).unwrap().unwrap();
            assert_eq!(up.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
            assert_eq!(up.head_len, head.len());
        }
        let mut with_frame = request("/", "").into_bytes();
        with_frame.extend_from_slice(&[0x81, 0x80]);
        assert_eq!(check_request(&with_frame, &[]).unwrap().unwrap().head_len, with_frame.len() - 2);
        let partial = request("/", "");
        assert_eq!(check_request(&partial.as_bytes()[..partial.len() - 2], &[]), Ok(None));
    }

    #[test]
    fn obs_text_in_other_headers_and_forwarding_headers() {
        let mut latin1 = request("/ws", "").into_bytes();
        let at = latin1.len() - 2;
        latin1.splice(at..at, b"User-Agent: caf\xe9\r\nCookie: a=\xff\r\n".iter().copied());
        let upgrade = check_request(&latin1, &[]).unwrap().unwrap();
        assert!(!upgrade.forwarded);
        let chain: Vec<String> = (1..=10).map(|i| format!("10.0.0.{i}")).collect();
        let (xff, last8) = (format!("X-Forwarded-For: {}, junk", chain.join(",")), chain[2..].join(","));
        for (header, named) in
            [(xff.as_str(), last8.as_str()), ("Forwarded: for=10.0.0.1", ""), ("x-real-ip: ::1", "::1")]
        {
            let upgrade = check_request(request("/ws", &format!("{header}\r\n")).as_bytes(), &[]).unwrap().unwrap();
            let names: Vec<String> = upgrade.forwarded_for.iter().map(IpAddr::to_string).collect();
            assert!(upgrade.forwarded && names.join(",") == named, "{header}: {names:?}");
        }
        let bad_key = request("/ws", "").replace(KEY, "dGhlIHNhbXBsZSBub25jZQ\u{e9}=");
        assert!(check_request(bad_key.as_bytes(), &[]).is_err());
    }

    #[test]
    fn refusals() {
        let allowed = vec!["https://ok.example".to_string()];
        let cases: Vec<(String, Refusal)> = vec![
            (request("/other", ""), Refusal::NotFound),
            ("GET / HTTP/1.1\r\nHost: x\r\n\r\n".into(), Refusal::UpgradeRequired),
            ("GET /nope HTTP/1.1\r\nHost: x\r\n\r\n".into(), Refusal::NotFound),
            (request("/", "").replacen("GET", "POST", 1), Refusal::MethodNotAllowed),
            (request("/", "").replacen("HTTP/1.1", "HTTP/1.0", 1), Refusal::BadRequest("WebSocket needs HTTP/1.1")),
            (
                request("/", "").replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8"),
                Refusal::UpgradeRequired,
            ),
            (request("/", "").replace(KEY, "short"), Refusal::BadRequest("missing or invalid Sec-WebSocket-Key")),
            (request("/", &format!("Sec-WebSocket-Key: {KEY}\r\n")), Refusal::BadRequest("duplicate WebSocket header")),
            (
                request("/", "").replace("keep-alive, Upgrade", "keep-alive"),
                Refusal::BadRequest("missing Connection: upgrade"),
            ),
            (request("/", "Origin: https://evil.example\r\n"), Refusal::Forbidden),
            ("\x00\x01garbage\r\n\r\n".into(), Refusal::BadRequest("malformed HTTP request")),
            (request("/", &"X-A: b\r\n".repeat(MAX_HEADERS)), Refusal::TooLarge),
        ];
        for (head, want) in cases {
            assert_eq!(check_request(head.as_bytes(), &allowed), Err(want), "{head:?}");
        }
        let ok_origin = request("/", "Origin: https://OK.example/\r\n");
        assert!(check_request(ok_origin.as_bytes(), &allowed).unwrap().is_some());
        let any_origin = request("/", "Origin: https://evil.example\r\n");
        assert!(check_request(any_origin.as_bytes(), &[]).unwrap().is_some());
    }

    #[test]
    fn responses_are_complete() {
        let text = Refusal::RateLimited(Duration::from_millis(200)).response();
        assert!(text.starts_with("HTTP/1.1 429 Too Many Requests\r\n"), "{text}");
        assert!(text.contains("Retry-After: 1\r\n") && text.contains("Connection: close\r\n"));
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let len: usize = head.lines().find_map(|l| l.strip_prefix("Content-Length: ")).unwrap().parse().unwrap();
        assert_eq!(body.len(), len);
        assert!(Refusal::UpgradeRequired.response().contains("Upgrade: websocket\r\n"));
    }

    #[test]
    fn upgrade_answers() {
        let accept = accept_key::accept_key("dGhlIHNhbXBsZSBub25jZQ==");
        let ok = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        );
        assert_eq!(
            check_response(ok.as_bytes(), &accept),
            Ok(Some(((101, "Switching Protocols".into(), None), ok.len())))
        );
        assert_eq!(check_response(&ok.as_bytes()[..20], &accept), Ok(None));
        assert!(check_response(ok.as_bytes(), "wrong").is_err());
        let busy = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n\r\n";
        assert_eq!(check_response(busy, &accept), Ok(Some(((503, "Service Unavailable".into(), None), busy.len()))));
    }

    #[test]
    fn retry_after_is_read_from_refusals() {
        let cases: &[(&str, Option<u64>)] = &[
            ("Retry-After: 1", Some(1)),
            ("retry-after:  1000 ", Some(1000)),
            ("Retry-After: 0", Some(0)),
            ("Retry-After: Wed, 21 Oct 2026 07:28:00 GMT", None),
            ("Retry-After: -1", None),
            ("Retry-After: 1.5", None),
            ("Retry-After: +3", None),
            ("Retry-After:", None),
            ("Retry-After: 18446744073709551615", Some(u64::MAX)),
            ("Retry-After: 99999999999999999999999", None),
            ("X-Other: 1", None),
        ];
        for &(header, want) in cases {
            let head = format!("HTTP/1.1 429 Too Many Requests\r\n{header}\r\n\r\n");
            let Ok(Some(((status, _, retry_after), _))) = check_response(head.as_bytes(), "") else { panic!("{head}") };
            assert_eq!((status, retry_after), (429, want.map(Duration::from_secs)), "{header}");
        }
        // What the gateway itself sends.
        for refusal in [Refusal::RateLimited(Duration::from_millis(1500)), Refusal::AtCapacity, Refusal::ShuttingDown] {
            let text = refusal.response();
            let Ok(Some(((_, _, retry_after), _))) = check_response(text.as_bytes(), "") else { panic!("{text}") };
            assert!(retry_after.is_some_and(|wait| wait >= Duration::from_secs(1)), "{text}");
        }
    }
}
