//! The byte stream a client's WebSocket runs over: a TCP connection to the
//! gateway, plain (`ws://`) or TLS (`wss://`, with the `tls` feature), its
//! reads bounded by an absolute deadline on the socket underneath. Opens
//! the connection and completes the TLS handshake; never speaks HTTP or
//! the protocol.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::client::endpoint::Endpoint;
use crate::client::error::ClientError;
use crate::client::trust::TlsSettings;
use crate::wire::net;

/// A socket whose reads are bounded by an absolute deadline: a gateway
/// trickling a frame byte by byte cannot stretch a read past it (a
/// per-read socket timeout would restart with every byte). Writes are
/// bounded by the socket's write timeout.
pub struct Deadlined {
    stream: TcpStream,
    /// Reads after this fail with `TimedOut`.
    pub deadline: Instant,
    timer: net::ReadTimer,
}

impl Deadlined {
    /// Wraps a connected socket; reads end at `deadline`.
    pub fn new(stream: TcpStream, deadline: Instant) -> Deadlined {
        Deadlined { stream, deadline, timer: net::ReadTimer::default() }
    }
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

/// The stream under the WebSocket: plain, or TLS over the same deadlined
/// socket (so the TLS handshake and every TLS read keep the deadline).
pub enum Transport {
    /// `ws://`.
    Plain(Deadlined),
    /// `wss://`.
    #[cfg(feature = "tls")]
    Tls(Box<crate::client::tls::TlsStream<Deadlined>>),
}

impl Transport {
    /// Moves the read deadline.
    pub fn set_deadline(&mut self, deadline: Instant) {
        self.socket().deadline = deadline;
    }

    fn socket(&mut self) -> &mut Deadlined {
        match self {
            Transport::Plain(socket) => socket,
            #[cfg(feature = "tls")]
            Transport::Tls(tls) => &mut tls.sock,
        }
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(socket) => socket.read(buf),
            #[cfg(feature = "tls")]
            Transport::Tls(tls) => tls.read(buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(socket) => socket.write(buf),
            #[cfg(feature = "tls")]
            Transport::Tls(tls) => tls.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(socket) => socket.flush(),
            #[cfg(feature = "tls")]
            Transport::Tls(tls) => tls.flush(),
        }
    }
}

/// Connects to `endpoint` (TCP, then TLS for `wss://`), all before
/// `deadline`; writes time out after `timeout`.
///
/// # Errors
/// [`ClientError::Connection`]: cannot resolve, connect, or complete the
/// TLS handshake (the certificate's problem said in a sentence).
pub fn open(
    endpoint: &Endpoint,
    tls: &TlsSettings,
    deadline: Instant,
    timeout: Duration,
) -> Result<Transport, ClientError> {
    let stream = tcp_connect(endpoint, timeout)?;
    let cannot = |e: io::Error| ClientError::Connection(format!("cannot reach the gateway at {endpoint}: {e}"));
    stream.set_nodelay(true).map_err(cannot)?;
    stream.set_write_timeout(Some(timeout)).map_err(cannot)?;
    let socket = Deadlined::new(stream, deadline);
    if !endpoint.tls {
        return Ok(Transport::Plain(socket));
    }
    #[cfg(feature = "tls")]
    {
        let stream = crate::client::tls::connect(socket, &endpoint.host, tls)
            .map_err(|e| ClientError::Connection(format!("{endpoint}: {e}")))?;
        Ok(Transport::Tls(Box::new(stream)))
    }
    #[cfg(not(feature = "tls"))]
    {
        // Endpoint::parse refuses wss:// in such a build; kept for clarity.
        let _ = tls;
        Err(ClientError::Connection(format!("{endpoint}: this goclaw was built without TLS")))
    }
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
