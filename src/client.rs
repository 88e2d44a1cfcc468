//! The client side of protocol v3, for `goclaw node`, `nodes`, `invoke` and
//! `watch`: a blocking WebSocket client over a `TcpStream` (the upgrade
//! request is written here, as the server parses its own: no `http`
//! crate), the `connect` handshake, and one request at a time. These are
//! the reference clients of the protocol, so this file reads top to bottom
//! as the handshake a client must do.

use std::fmt;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocket, WebSocketConfig};
use tungstenite::{Error as WsError, Message};

// The gateway's default limit, which node results pass through.
use crate::config::{DEFAULT_MAX_MESSAGE_BYTES, Token};
use crate::http::{self, Refusal};
use crate::net;
use crate::protocol::PROTOCOL_VERSION;
use crate::sha1;

/// Time for TCP connect, upgrade and `connect`.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a close handshake may take when a client leaves.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Where a gateway listens: `ws://HOST[:PORT][/PATH]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// Port (80 when the URL gives none, as RFC 6455 says).
    pub port: u16,
    /// Request path (`/ws` when the URL gives none).
    pub path: String,
}

impl Endpoint {
    /// Parses a `ws://` URL.
    ///
    /// # Errors
    /// One line saying what is wrong with it.
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let Some(rest) = url.strip_prefix("ws://") else {
            if url.starts_with("wss://") {
                return Err(format!(
                    "{url:?}: goclaw speaks plain ws://; put TLS in front of the gateway (a proxy or an SSH tunnel)"
                ));
            }
            return Err(format!("{url:?}: expected ws://HOST:PORT/PATH"));
        };
        let (authority, path) = match rest.find('/') {
            Some(at) => rest.split_at(at),
            None => (rest, "/ws"),
        };
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => {
                let (host, after) = v6.split_once(']').ok_or_else(|| format!("{url:?}: unclosed [ in the host"))?;
                (host, after.strip_prefix(':'))
            }
            None => match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            },
        };
        if host.is_empty() || host.contains(['@', ' ']) {
            return Err(format!("{url:?}: expected ws://HOST:PORT/PATH"));
        }
        let port = match port {
            Some(port) => port.parse().map_err(|_| format!("{url:?}: invalid port {port:?}"))?,
            None => 80,
        };
        if !path.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!("{url:?}: the path must be plain ASCII without spaces"));
        }
        Ok(Endpoint { host: host.to_string(), port, path: path.to_string() })
    }

    /// The `Host` header value.
    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ws://{}{}", self.authority(), self.path)
    }
}

/// Why a client call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientError {
    /// The gateway could not be reached, refused the upgrade, or the
    /// connection broke.
    Connection(String),
    /// The gateway closed the connection with this code and reason.
    Closed(u16, String),
    /// The gateway answered the request with an error.
    Gateway {
        /// The protocol's error code (`NODE_NOT_FOUND`, ...).
        code: String,
        /// Its message.
        message: String,
    },
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Connection(why) => write!(f, "{why}"),
            ClientError::Closed(code, reason) if reason.is_empty() => {
                write!(f, "the gateway closed the connection ({code})")
            }
            ClientError::Closed(code, reason) => write!(f, "the gateway closed the connection ({code} {reason})"),
            ClientError::Gateway { code, message } => write!(f, "{code}: {message}"),
        }
    }
}

impl std::error::Error for ClientError {}

fn broken(e: &WsError) -> ClientError {
    ClientError::Connection(format!("connection to the gateway lost: {e}"))
}

/// Who a client says it is in `connect`.
#[derive(Debug, Clone)]
pub struct Identity {
    /// `node` or `operator`.
    pub role: &'static str,
    /// The client id (for a node, its node id).
    pub id: String,
    /// A human-readable name.
    pub display_name: String,
    /// The commands a node answers (empty for operators).
    pub commands: Vec<String>,
    /// The gateway's token, if it has one.
    pub token: Option<Token>,
}

impl Identity {
    /// The `connect` params (SPEC §4.1).
    fn connect_params(&self) -> Value {
        let mut params = json!({
            "minProtocol": PROTOCOL_VERSION, "maxProtocol": PROTOCOL_VERSION,
            "client": {
                "id": self.id, "displayName": self.display_name, "version": env!("CARGO_PKG_VERSION"),
                "platform": std::env::consts::OS, "mode": self.role,
            },
            "role": self.role,
            "commands": self.commands,
        });
        if let Some(token) = &self.token {
            params["auth"] = json!({ "token": token.secret() });
        }
        params
    }
}

/// A connected, greeted client.
pub struct Client {
    ws: WebSocket<Deadlined>,
    next_id: u64,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").field("next_id", &self.next_id).finish_non_exhaustive()
    }
}

impl Client {
    /// Connects, upgrades, answers the challenge with `connect` and returns
    /// the client and the `hello-ok` payload; all within `timeout`.
    ///
    /// # Errors
    /// [`ClientError::Connection`] if the gateway cannot be reached or does
    /// not upgrade; [`ClientError::Gateway`] if it refuses `connect`.
    pub fn connect(
        endpoint: &Endpoint,
        identity: &Identity,
        timeout: Duration,
    ) -> Result<(Client, Value), ClientError> {
        let deadline = Instant::now() + timeout;
        let stream = tcp_connect(endpoint, timeout)?;
        let cannot =
            |e: std::io::Error| ClientError::Connection(format!("cannot reach the gateway at {endpoint}: {e}"));
        stream.set_nodelay(true).map_err(cannot)?;
        stream.set_write_timeout(Some(timeout)).map_err(cannot)?;

        // RFC 6455 §4.1: 16 random bytes as the key; the answer must carry
        // their SHA-1 with the protocol's GUID.
        let key = sha1::base64(uuid::Uuid::new_v4().as_bytes());
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nUser-Agent: goclaw/{}\r\n\r\n",
            endpoint.path,
            endpoint.authority(),
            env!("CARGO_PKG_VERSION")
        );
        net::write_all(&stream, request.as_bytes()).map_err(cannot)?;
        let expected = sha1::accept_key(&key);
        let ((status, reason), tail) = http::read_head(&stream, deadline, |head| upgrade_response(head, &expected))
            .map_err(|e| match e {
                http::HandshakeError::Refused(_) => {
                    ClientError::Connection(format!("{endpoint} did not answer with a valid WebSocket upgrade"))
                }
                other => ClientError::Connection(format!("no upgrade from {endpoint}: {other:?}")),
            })?;
        if status != 101 {
            return Err(ClientError::Connection(format!("{endpoint} refused the upgrade: HTTP {status} {reason}")));
        }
        let config = WebSocketConfig::default()
            .max_message_size(Some(DEFAULT_MAX_MESSAGE_BYTES))
            .max_frame_size(Some(DEFAULT_MAX_MESSAGE_BYTES));
        let stream = Deadlined { stream, deadline, timer: net::ReadTimer::default() };
        let ws = WebSocket::from_partially_read(stream, tail, Role::Client, Some(config));
        let mut client = Client { ws, next_id: 1 };

        let challenge = client.read_until(deadline)?.ok_or_else(|| too_slow(endpoint))?;
        if challenge["event"] != "connect.challenge" {
            return Err(ClientError::Connection(format!("{endpoint} did not send connect.challenge first")));
        }
        let hello = client.request_until("connect", identity.connect_params(), deadline)?;
        Ok((client, hello))
    }

    /// Sends one request and waits (at most `timeout`) for its answer,
    /// skipping the events that arrive meanwhile.
    ///
    /// # Errors
    /// [`ClientError::Gateway`] for an error answer, else a connection
    /// problem (a timeout included).
    pub fn request(&mut self, method: &str, params: Value, timeout: Duration) -> Result<Value, ClientError> {
        self.request_until(method, params, Instant::now() + timeout)
    }

    fn request_until(&mut self, method: &str, params: Value, deadline: Instant) -> Result<Value, ClientError> {
        let id = self.next_id.to_string();
        self.next_id += 1;
        self.send(&json!({"type": "req", "id": id, "method": method, "params": params}))?;
        loop {
            let Some(frame) = self.read_until(deadline)? else {
                return Err(ClientError::Connection(format!("no answer to {method} in time")));
            };
            if frame["type"] == "res" && frame["id"] == id.as_str() {
                if frame["ok"] == true {
                    return Ok(frame["payload"].clone());
                }
                let error = &frame["error"];
                let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
                return Err(ClientError::Gateway { code: text(&error["code"]), message: text(&error["message"]) });
            }
        }
    }

    /// Sends a frame.
    ///
    /// # Errors
    /// The connection broke.
    pub fn send(&mut self, frame: &Value) -> Result<(), ClientError> {
        self.ws.send(Message::text(frame.to_string())).map_err(|e| broken(&e))
    }

    /// The next frame, or `None` if `deadline` passes first. Pings are
    /// answered while reading.
    ///
    /// # Errors
    /// The gateway closed the connection or it broke; a frame that is not
    /// a JSON object.
    pub fn read_until(&mut self, deadline: Instant) -> Result<Option<Value>, ClientError> {
        loop {
            if Instant::now() >= deadline {
                return Ok(None);
            }
            self.ws.get_mut().deadline = deadline;
            match self.ws.read() {
                Ok(Message::Text(text)) => {
                    return match serde_json::from_str::<Value>(&text) {
                        Ok(frame) if frame.is_object() => Ok(Some(frame)),
                        _ => Err(ClientError::Connection("the gateway sent a frame that is not a JSON object".into())),
                    };
                }
                Ok(Message::Close(frame)) => {
                    let (code, reason) = frame.map_or((1005, String::new()), |f| (f.code.into(), f.reason.to_string()));
                    // Answer it and let the server close the TCP connection.
                    let _ = self.ws.flush();
                    return Err(ClientError::Closed(code, reason));
                }
                Ok(_) => {}
                // The deadline (a partly read frame stays buffered for the
                // next call), or a signal (SIGINT for a stop) interrupting the read.
                Err(WsError::Io(e)) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
                Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => {
                    return Err(ClientError::Connection("the gateway closed the connection".into()));
                }
                Err(e) => return Err(broken(&e)),
            }
        }
    }

    /// Leaves with a close handshake (1000), waiting at most two seconds.
    pub fn close(mut self) {
        let normal = CloseFrame { code: CloseCode::Normal, reason: "".into() };
        if self.ws.close(Some(normal)).is_err() {
            return;
        }
        let until = Instant::now() + CLOSE_WAIT;
        while self.read_until(until).is_ok_and(|frame| frame.is_some()) {}
    }
}

/// The client's socket, its reads bounded by an absolute deadline: a
/// gateway trickling a frame byte by byte cannot stretch a read past it
/// (a per-read socket timeout would restart with every byte).
struct Deadlined {
    stream: TcpStream,
    deadline: Instant,
    timer: net::ReadTimer,
}

impl Read for Deadlined {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.timer.read(&self.stream, buf, self.deadline)
    }
}

impl Write for Deadlined {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&self.stream).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn too_slow(endpoint: &Endpoint) -> ClientError {
    ClientError::Connection(format!("{endpoint} did not complete the handshake in time"))
}

/// Connects to the first address of `endpoint` that answers.
fn tcp_connect(endpoint: &Endpoint, timeout: Duration) -> Result<TcpStream, ClientError> {
    let addrs = (endpoint.host.as_str(), endpoint.port)
        .to_socket_addrs()
        .map_err(|e| ClientError::Connection(format!("cannot resolve {}: {e}", endpoint.host)))?;
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(ClientError::Connection(match last {
        Some(e) => format!("cannot connect to the gateway at {endpoint}: {e}"),
        None => format!("{} resolves to no address", endpoint.host),
    }))
}

/// An HTTP status code and its reason phrase.
type Status = (u16, String);

/// Decides on the server's answer head: `Ok(None)` while incomplete; the
/// status and the head's length once complete (a 101 must accept our key).
fn upgrade_response(head: &[u8], expected_accept: &str) -> Result<Option<(Status, usize)>, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; http::MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(head) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(Refusal::BadRequest("malformed response")),
    };
    let status = response.code.unwrap_or(0);
    if status == 101 {
        let header = |name: &str| {
            response.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value.trim_ascii())
        };
        let upgrade = header("upgrade").is_some_and(|v| v.eq_ignore_ascii_case(b"websocket"));
        if !upgrade || header("sec-websocket-accept") != Some(expected_accept.as_bytes()) {
            return Err(Refusal::BadRequest("not a WebSocket upgrade"));
        }
    }
    Ok(Some(((status, response.reason.unwrap_or_default().to_string()), len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let parsed = |url: &str| Endpoint::parse(url).map(|e| (e.host, e.port, e.path));
        assert_eq!(parsed("ws://127.0.0.1:18789/ws"), Ok(("127.0.0.1".into(), 18789, "/ws".into())));
        assert_eq!(parsed("ws://gw.lan"), Ok(("gw.lan".into(), 80, "/ws".into())));
        assert_eq!(parsed("ws://[::1]:9/"), Ok(("::1".into(), 9, "/".into())));
        for bad in ["http://x", "wss://x/ws", "ws://", "ws://x:port", "ws://[::1/ws", "ws://x/a b", "ws://u@x"] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Endpoint::parse("ws://[::1]:9").unwrap().to_string(), "ws://[::1]:9/ws");
    }

    #[test]
    fn a_gateway_trickling_a_frame_cannot_stretch_a_read_past_its_deadline() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let deadlined = Deadlined { stream, deadline: Instant::now(), timer: net::ReadTimer::default() };
        let mut client = Client { ws: WebSocket::from_raw_socket(deadlined, Role::Client, None), next_id: 1 };
        // A 100-byte text frame, one byte every 20 ms: two seconds in all.
        let mut frame = vec![0x81, 100];
        frame.extend([b' '; 100]);
        let trickle = std::thread::spawn(move || {
            for byte in frame {
                if (&server).write_all(&[byte]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let started = Instant::now();
        assert_eq!(client.read_until(started + Duration::from_millis(300)), Ok(None));
        assert!(started.elapsed() < Duration::from_millis(1000), "{:?}", started.elapsed());
        drop(client);
        trickle.join().unwrap();
    }

    #[test]
    fn upgrade_answers() {
        let accept = sha1::accept_key("dGhlIHNhbXBsZSBub25jZQ==");
        let ok = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        );
        assert_eq!(upgrade_response(ok.as_bytes(), &accept), Ok(Some(((101, "Switching Protocols".into()), ok.len()))));
        assert_eq!(upgrade_response(&ok.as_bytes()[..20], &accept), Ok(None));
        assert!(upgrade_response(ok.as_bytes(), "wrong").is_err());
        let busy = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n\r\n";
        assert_eq!(upgrade_response(busy, &accept), Ok(Some(((503, "Service Unavailable".into()), busy.len()))));
    }
}
