//! Socket calls with the gateway's timing rules; the only module that talks
//! to the OS about a client socket.
//!
//! Reads take an absolute deadline and recompute the socket timeout before
//! every call, so a client that trickles one byte at a time cannot stretch a
//! deadline (ureq's `stream.rs` does the same). Sends from shared threads are
//! non-blocking (`MSG_DONTWAIT`) and never wait on a client.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, send, setsockopt, sockopt};

/// Kernel send buffer asked for on every client socket (Linux doubles it
/// for bookkeeping). Fixed rather than autotuned: autotuning lets the kernel
/// absorb up to `tcp_wmem` max (4 MiB by default) for a client that never
/// reads, which both pins that memory and hides the stall from the write
/// deadline. 64 KiB moves control-plane traffic at well over 10 MB/s.
pub const SEND_BUFFER_BYTES: usize = 64 * 1024;

/// Sets the per-socket options every client connection gets at accept:
/// no Nagle delay for small frames, a bounded kernel send buffer, and a
/// write timeout for the few blocking writes before the upgrade.
///
/// # Errors
/// The socket is already gone.
pub fn configure(stream: &TcpStream, write_wait: std::time::Duration) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(write_wait))?;
    setsockopt(stream, sockopt::SndBuf, &SEND_BUFFER_BYTES).map_err(io::Error::from)
}

/// Pause after an `accept()` error such as EMFILE, so a full descriptor
/// table does not turn an accept loop (the gateway's, the metrics listener's)
/// into a busy loop.
pub const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// How long [`stop_accepting`]'s fallback waits to connect.
const WAKE_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How far a read may outlast its deadline: the socket timeout is only
/// rewritten when it would overshoot by more than this.
const TIMEOUT_SLACK: Duration = Duration::from_millis(10);

/// Reads against an absolute deadline, rewriting the socket's read timeout
/// only when needed. After each message the deadline moves forward by the
/// same amount the timeout already covers, so the common read costs no
/// `setsockopt`; a partial read (a trickling client) shortens the timeout to
/// what is left, and a timeout that fired early is simply retried.
#[derive(Debug, Default)]
pub struct ReadTimer {
    /// The `SO_RCVTIMEO` last set on the socket, if any.
    timeout: Option<Duration>,
}

impl ReadTimer {
    /// Reads into `buf`, failing with `TimedOut` once `deadline` has passed.
    ///
    /// # Errors
    /// `TimedOut` at the deadline; any socket error as is. `Ok(0)` is end of
    /// stream.
    pub fn read(&mut self, stream: &TcpStream, buf: &mut [u8], deadline: Instant) -> io::Result<usize> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ErrorKind::TimedOut.into());
            }
            if self.timeout.is_none_or(|set| set > left + TIMEOUT_SLACK) {
                stream.set_read_timeout(Some(left))?;
                self.timeout = Some(left);
            }
            let mut reader = stream;
            match reader.read(buf) {
                // SO_RCVTIMEO expiry surfaces as EAGAIN on Unix. Before the
                // deadline it only means the timeout was shorter than the time
                // left (set for an earlier, tighter deadline): go round again.
                // At the deadline the timeout set is still the right one for
                // a caller that polls with the same period: keep it.
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if Instant::now() < deadline {
                        self.timeout = None;
                    }
                    continue;
                }
                other => return other,
            }
        }
    }
}

/// Sends as much of `buf` as the socket takes right now, without blocking.
/// `Ok(0)` means the send buffer is full.
///
/// # Errors
/// A broken connection (`EPIPE`, `ECONNRESET`, ...).
pub fn send_now(stream: &TcpStream, buf: &[u8]) -> io::Result<usize> {
    if buf.is_empty() {
        return Ok(0);
    }
    loop {
        // MSG_NOSIGNAL: a peer that went away is an error here, never SIGPIPE.
        match send(stream.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL) {
            Ok(n) => return Ok(n),
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => return Ok(0),
            Err(errno) => return Err(io::Error::from(errno)),
        }
    }
}

/// Blocking write of a whole buffer, bounded by the socket's write timeout
/// (`--write-wait`, set at accept). Only a connection's own thread calls
/// this, and only before the upgrade completes.
///
/// # Errors
/// Timeout or a broken connection.
pub fn write_all(stream: &TcpStream, buf: &[u8]) -> io::Result<()> {
    let mut writer = stream;
    writer.write_all(buf)
}

/// Makes the socket's close abortive (`SO_LINGER` 0): data the kernel
/// still holds is dropped and the peer gets a reset, instead of an orphaned
/// socket keeping its send buffer for a peer that never reads. Errors
/// (already closed) are irrelevant here.
pub fn discard_on_close(stream: &TcpStream) {
    let _ = setsockopt(stream, sockopt::Linger, &nix::libc::linger { l_onoff: 1, l_linger: 0 });
}

/// Ends the connection in both directions; wakes a thread blocked reading
/// it. Errors (already closed) are irrelevant here.
pub fn cut(stream: &TcpStream) {
    let _ = stream.shutdown(Shutdown::Both);
}

/// Makes a thread blocked in `accept()` on `listener` (or on a clone of it)
/// return, and every later `accept()` fail: the listening socket is shut
/// down. On Linux that works whatever the network's state; connecting to
/// ourselves, the usual trick, hangs shutdown when the listen address has
/// become unreachable (interface down, address gone). Elsewhere, where
/// shutdown(2) does not wake `accept()`, that connection is the fallback.
pub fn stop_accepting(listener: &TcpListener) {
    let woken = cfg!(target_os = "linux")
        && nix::sys::socket::shutdown(listener.as_raw_fd(), nix::sys::socket::Shutdown::Both).is_ok();
    if !woken && let Ok(local) = listener.local_addr() {
        let _ = TcpStream::connect_timeout(&loopback(local), WAKE_CONNECT_TIMEOUT);
    }
}

/// Where to connect to reach a listener bound to `addr`.
pub fn loopback(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::thread;

    #[test]
    fn a_timeout_left_from_a_tighter_deadline_does_not_end_a_later_read_early() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let mut timer = ReadTimer::default();
        let mut buf = [0u8; 8];
        // A read against a 50 ms deadline leaves a 50 ms socket timeout behind.
        client.write_all(b"a").unwrap();
        assert_eq!(timer.read(&server, &mut buf, Instant::now() + Duration::from_millis(50)).unwrap(), 1);
        // A longer deadline does not rewrite it, but the early expiry is retried.
        let writer = thread::spawn(move || {
            thread::sleep(Duration::from_millis(150));
            client.write_all(b"b").unwrap();
            client
        });
        let started = Instant::now();
        assert_eq!(timer.read(&server, &mut buf, Instant::now() + Duration::from_secs(2)).unwrap(), 1);
        assert!(started.elapsed() >= Duration::from_millis(140));
        let _client = writer.join().unwrap();
        // And the deadline itself still holds.
        let err = timer.read(&server, &mut buf, Instant::now() + Duration::from_millis(30)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TimedOut);
    }
}
