//! The client side of the protocol, for `goclaw node`, `nodes`, `invoke`
//! and `watch`: a blocking WebSocket client over the transport (plain or
//! TLS), the upgrade, the `connect` handshake, and one request at a time.
//! Reads top to bottom as the handshake a client must do; never imports
//! the gateway.

use std::fmt;
use std::io::ErrorKind;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocket, WebSocketConfig};
use tungstenite::{Error as WsError, Message};

use crate::client::endpoint::Endpoint;
use crate::client::error::ClientError;
use crate::client::hello::Hello;
use crate::client::transport::{self, Transport};
use crate::client::trust::TlsSettings;
use crate::wire::auth::Token;
use crate::wire::{accept_key, http};

/// Largest message the client reads: the gateway's default limit, which
/// node results pass through.
const MAX_MESSAGE_BYTES: usize = 512 * 1024;
/// Time for TCP connect, TLS, upgrade and `connect`.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a close handshake may take when a client leaves.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

fn broken(e: &WsError) -> ClientError {
    ClientError::Connection(format!("connection to the gateway lost: {e}"))
}

/// The gateway a client command talks to, and how.
#[derive(Debug, Clone)]
pub struct Target {
    /// Where it listens.
    pub endpoint: Endpoint,
    /// Its shared token, if it has one.
    pub token: Option<Token>,
    /// How its certificate is trusted (`wss://`).
    pub tls: TlsSettings,
}

/// A connected, greeted client.
pub struct Client {
    ws: WebSocket<Transport>,
    next_id: u64,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").field("next_id", &self.next_id).finish_non_exhaustive()
    }
}

impl Client {
    /// Connects (TCP, TLS for `wss://`), upgrades, answers the challenge
    /// with `hello`'s `connect` and returns the client and the `hello-ok`
    /// payload; all within `timeout`.
    ///
    /// # Errors
    /// [`ClientError::Connection`] if the gateway cannot be reached or does
    /// not upgrade; [`ClientError::RefusedForNow`] for 429 and 503;
    /// [`ClientError::Gateway`] or [`ClientError::PairingPending`] if it
    /// refuses `connect`.
    pub fn connect(target: &Target, hello: &Hello<'_>, timeout: Duration) -> Result<(Client, Value), ClientError> {
        let endpoint = &target.endpoint;
        let deadline = Instant::now() + timeout;
        let mut stream = transport::open(endpoint, &target.tls, deadline, timeout)?;
        let cannot =
            |e: std::io::Error| ClientError::Connection(format!("cannot reach the gateway at {endpoint}: {e}"));

        // RFC 6455 §4.1: 16 random bytes as the key; the answer must carry
        // their SHA-1 with the protocol's GUID.
        let key = accept_key::base64(uuid::Uuid::new_v4().as_bytes());
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nUser-Agent: goclaw/{}\r\n\r\n",
            endpoint.path,
            endpoint.authority(),
            env!("CARGO_PKG_VERSION")
        );
        std::io::Write::write_all(&mut stream, request.as_bytes()).map_err(cannot)?;
        std::io::Write::flush(&mut stream).map_err(cannot)?;
        let expected = accept_key::accept_key(&key);
        let ((status, reason, retry_after), tail) =
            http::read_head_from(&mut stream, |head| http::check_response(head, &expected)).map_err(|e| match e {
                http::HandshakeError::Refused(_) => {
                    ClientError::Connection(format!("{endpoint} did not answer with a valid WebSocket upgrade"))
                }
                http::HandshakeError::Timeout => too_slow(endpoint),
                http::HandshakeError::Closed => {
                    ClientError::Connection(format!("{endpoint} closed the connection before upgrading"))
                }
            })?;
        if status != 101 {
            let message = format!("{endpoint} refused the upgrade: HTTP {status} {reason}");
            return Err(match status {
                429 | 503 => ClientError::RefusedForNow { message, retry_after },
                _ => ClientError::Connection(message),
            });
        }
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_MESSAGE_BYTES))
            .max_frame_size(Some(MAX_MESSAGE_BYTES));
        let ws = WebSocket::from_partially_read(stream, tail, Role::Client, Some(config));
        let mut client = Client { ws, next_id: 1 };

        let challenge = client.read_until(deadline)?.ok_or_else(|| too_slow(endpoint))?;
        if challenge["event"] != "connect.challenge" {
            return Err(ClientError::Connection(format!("{endpoint} did not send connect.challenge first")));
        }
        let params = hello.params(&challenge).map_err(|why| ClientError::Connection(format!("{endpoint}: {why}")))?;
        let hello = client.request_until("connect", params, deadline)?;
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
                return Err(gateway_error(&frame["error"]));
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
            self.ws.get_mut().set_deadline(deadline);
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
    pub fn close(self) {
        self.close_with(1000, "");
    }

    /// Leaves with a close handshake with this code and reason, waiting at
    /// most two seconds.
    pub fn close_with(mut self, code: u16, reason: &str) {
        let frame = CloseFrame { code: CloseCode::from(code), reason: reason.to_string().into() };
        if self.ws.close(Some(frame)).is_err() {
            return;
        }
        let until = Instant::now() + CLOSE_WAIT;
        while self.read_until(until).is_ok_and(|frame| frame.is_some()) {}
    }
}

/// An error answer as a [`ClientError`]: `NOT_PAIRED` with a pairing
/// request as [`ClientError::PairingPending`]; otherwise goclaw's precise
/// reason (`details.code`) when there is one, else the top-level code; a
/// node's own error (`details.nodeError`) as the node sent it.
pub fn gateway_error(error: &Value) -> ClientError {
    let text = |v: &Value| v.as_str().map(|s| s.chars().take(256).collect::<String>());
    let details = &error["details"];
    if error["code"] == "NOT_PAIRED"
        && let Some(request_id) = text(&details["requestId"]).filter(|r| !r.is_empty())
    {
        return ClientError::PairingPending { request_id, device_id: text(&details["deviceId"]).unwrap_or_default() };
    }
    let node = &details["nodeError"];
    let (code, message) = if node.is_object() {
        (text(&node["code"]), text(&node["message"]))
    } else {
        (text(&details["code"]).or_else(|| text(&error["code"])), text(&error["message"]))
    };
    ClientError::Gateway { code: code.unwrap_or_default(), message: message.unwrap_or_default() }
}

fn too_slow(endpoint: &Endpoint) -> ClientError {
    ClientError::Connection(format!("{endpoint} did not complete the handshake in time"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpStream;

    #[test]
    fn errors_keep_the_precise_reason_and_spot_a_pending_device() {
        let cases = [
            (json!({"code":"INVALID_REQUEST","message":"m","details":{"code":"UNAUTHORIZED"}}), "UNAUTHORIZED: m"),
            (json!({"code":"UNAVAILABLE","message":"node not connected"}), "UNAVAILABLE: node not connected"),
            (
                json!({"code":"UNAVAILABLE","message":"x","details":{"nodeError":{"code":"EXEC_FAILED","message":"y"}}}),
                "EXEC_FAILED: y",
            ),
        ];
        for (error, text) in cases {
            assert_eq!(gateway_error(&error).to_string(), text);
        }
        let pending = json!({"code":"NOT_PAIRED","message":"pairing required","details":{"code":"PAIRING_REQUIRED",
            "requestId":"r-1","deviceId":"0123456789abcdef"}});
        assert_eq!(
            gateway_error(&pending),
            ClientError::PairingPending { request_id: "r-1".into(), device_id: "0123456789abcdef".into() }
        );
        let text = gateway_error(&pending).to_string();
        assert!(text.contains("goclaw nodes approve r-1") && text.contains("openclaw devices approve r-1"), "{text}");
        let no_request = json!({"code":"NOT_PAIRED","message":"device identity required","details":{"code":"DEVICE_IDENTITY_REQUIRED"}});
        assert!(matches!(gateway_error(&no_request), ClientError::Gateway { .. }));
    }

    #[test]
    fn a_gateway_trickling_a_frame_cannot_stretch_a_read_past_its_deadline() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let transport = Transport::Plain(crate::client::transport::Deadlined::new(stream, Instant::now()));
        let mut client = Client { ws: WebSocket::from_raw_socket(transport, Role::Client, None), next_id: 1 };
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
}
