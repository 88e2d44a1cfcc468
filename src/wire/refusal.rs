//! The HTTP refusals of both listening sockets: each reason a request is
//! answered without an upgrade, its status line, short text body and
//! headers. Pure: no I/O.

use std::time::Duration;

/// Why an HTTP request is refused. Each maps to a status, a short text body
/// and an error metric; the client is at fault unless noted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 400: malformed request or upgrade headers.
    BadRequest(&'static str),
    /// 404: path other than `/` or `/ws`.
    NotFound,
    /// 405: an upgrade with a method other than GET.
    MethodNotAllowed,
    /// 426: a plain HTTP request, or an unsupported WebSocket version.
    UpgradeRequired,
    /// 403: `Origin` not in `--allowed-origin`.
    Forbidden,
    /// 431: request head over `MAX_HEAD_BYTES` or `MAX_HEADERS` (`wire::http`).
    TooLarge,
    /// 429: the source IP is over `--rate-limit`; retry after this long.
    RateLimited(Duration),
    /// 503: at `--max-connections`, or no thread could be started. The
    /// gateway's limit, not the client's fault.
    AtCapacity,
    /// 503: the gateway is shutting down.
    ShuttingDown,
}

impl Refusal {
    /// The complete HTTP response, `Connection: close`.
    pub fn response(self) -> String {
        let (status, body, extra) = match self {
            Refusal::BadRequest(why) => ("400 Bad Request", why, String::new()),
            Refusal::NotFound => ("404 Not Found", "not found: WebSocket endpoints are / and /ws", String::new()),
            Refusal::MethodNotAllowed => ("405 Method Not Allowed", "use GET to upgrade", "Allow: GET\r\n".into()),
            Refusal::UpgradeRequired => (
                "426 Upgrade Required",
                "this is a WebSocket endpoint (version 13)",
                "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n".into(),
            ),
            Refusal::Forbidden => ("403 Forbidden", "origin not allowed", String::new()),
            Refusal::TooLarge => ("431 Request Header Fields Too Large", "request head too large", String::new()),
            Refusal::RateLimited(wait) => (
                "429 Too Many Requests",
                "too many connections from your address",
                format!("Retry-After: {}\r\n", (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)),
            ),
            Refusal::AtCapacity => ("503 Service Unavailable", "gateway at capacity", "Retry-After: 1\r\n".into()),
            Refusal::ShuttingDown => ("503 Service Unavailable", "gateway shutting down", "Retry-After: 5\r\n".into()),
        };
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\
             Connection: close\r\n{extra}\r\n{body}\n",
            body.len() + 1
        )
    }
}
