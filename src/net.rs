//! Socket calls with the gateway's timing rules; the only module that talks
//! to the OS about a client socket.
//!
//! Reads take an absolute deadline and recompute the socket timeout before
//! every call, so a client that trickles one byte at a time cannot stretch a
//! deadline (ureq's `stream.rs` does the same). Sends from shared threads are
//! non-blocking (`MSG_DONTWAIT`) and never wait on a client.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Instant;

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

/// Reads into `buf`, failing with `TimedOut` once `deadline` has passed.
///
/// # Errors
/// `TimedOut` at the deadline; any socket error as is. `Ok(0)` is end of
/// stream.
pub fn read_before(stream: &TcpStream, buf: &mut [u8], deadline: Instant) -> io::Result<usize> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(ErrorKind::TimedOut.into());
    }
    stream.set_read_timeout(Some(left))?;
    let mut reader = stream;
    match reader.read(buf) {
        // SO_RCVTIMEO expiry surfaces as EAGAIN on Unix; it means the deadline passed.
        Err(e) if e.kind() == ErrorKind::WouldBlock => Err(ErrorKind::TimedOut.into()),
        other => other,
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

/// Ends the connection in both directions; wakes a thread blocked reading
/// it. Errors (already closed) are irrelevant here.
pub fn cut(stream: &TcpStream) {
    let _ = stream.shutdown(Shutdown::Both);
}
