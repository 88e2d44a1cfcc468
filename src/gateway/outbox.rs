//! One connection's write side: every frame to a client goes through its
//! [`Outbox`], whoever sends it (its own thread, a node's thread routing a
//! result, the heartbeat, the shutdown path).
//!
//! A send never blocks. The frame is written with one non-blocking syscall
//! while the outbox lock is held (so frames never interleave); what the
//! kernel does not take is queued, up to a bound, and flushed later by the
//! heartbeat thread. A queue that makes no progress for `--write-wait`, or
//! that would grow past its bound, marks the client a slow consumer: it is
//! cut, never waited for. No other lock is ever taken while this one is held.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::wire::net;
use crate::wire::ws::{DataFrame, OP_CLOSE, OP_TEXT, close_frame};

/// A drained queue bigger than this is freed rather than kept for reuse, so a
/// burst of output does not pin memory for the rest of a connection's life.
const KEEP_QUEUE_BYTES: usize = 16 * 1024;

/// Why a frame was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// A close frame is already queued; RFC 6455 §5.5.1 forbids data after it.
    Closing,
    /// The connection was cut (slow consumer, write error, or ended).
    Dead,
    /// The queue would pass its bound: the client is not reading. The
    /// connection has been cut.
    Overflow,
    /// The frame alone is larger than the queue's bound: it was not sent
    /// (a caller's bug; the connection is left as it was).
    TooLarge,
}

/// What became of a frame that was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// The kernel took the whole frame.
    Done,
    /// Part of it is queued. `list` is true when the connection is not yet on
    /// the flush list: the caller must put it there. It stays listed until a
    /// [`Outbox::flush`] returns `Empty` or `Dead`.
    Queued {
        /// The caller must add the connection to the flush list.
        list: bool,
    },
}

/// Result of one flush attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// Nothing left to send.
    Empty,
    /// Data is still queued; try again later.
    Pending,
    /// The queue made no progress for the write deadline; cut the connection.
    Stalled,
    /// The connection is already cut.
    Dead,
}

/// The write handle of one connection.
#[derive(Debug)]
pub struct Outbox {
    stream: TcpStream,
    limit_bytes: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Bytes not yet taken by the kernel: `queue[head..]`.
    queue: Vec<u8>,
    head: usize,
    /// Last event sequence number sent (SPEC §4: per connection, from 1).
    seq: u64,
    dead: bool,
    /// On the heartbeat's flush list.
    listed: bool,
    /// The code of the close frame queued (by us or by tungstenite), if
    /// any: once set, nothing but that frame goes out.
    close_code: Option<u16>,
    /// When the queue last made progress (or became non-empty).
    progress_at: Option<Instant>,
}

impl State {
    fn queued(&self) -> usize {
        self.queue.len() - self.head
    }
}

impl Outbox {
    /// Wraps the connection's socket. `limit_bytes` bounds the queue, a
    /// first frame included; a frame that fits it is always accepted into an
    /// empty queue.
    pub fn new(stream: TcpStream, limit_bytes: usize) -> Outbox {
        Outbox { stream, limit_bytes, state: Mutex::new(State::default()) }
    }

    /// The socket, for its owner thread's reads.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Sends one complete frame.
    ///
    /// # Errors
    /// See [`SendError`]; `Overflow` has already cut the connection.
    pub fn send(&self, frame: &[u8]) -> Result<Sent, SendError> {
        let mut state = self.state.lock();
        self.check_open(&state)?;
        self.push(&mut state, frame)
    }

    /// Sends an event. `prefix` is the event object without its closing
    /// brace; the connection's next `seq` is appended under the lock, so
    /// sequence numbers reach the wire in order.
    ///
    /// # Errors
    /// See [`SendError`].
    pub fn send_event(&self, prefix: &[u8]) -> Result<Sent, SendError> {
        let mut state = self.state.lock();
        self.check_open(&state)?;
        state.seq += 1;
        let mut frame = DataFrame::with_capacity(OP_TEXT, prefix.len() + 32);
        frame.body().extend_from_slice(prefix);
        let _ = write!(frame.body(), ",\"seq\":{}}}", state.seq);
        self.push(&mut state, frame.finish())
    }

    /// Queues a close frame; nothing can be sent after it.
    ///
    /// # Errors
    /// `Closing` if a close frame was already queued; see [`SendError`].
    pub fn send_close(&self, code: u16, reason: &str) -> Result<Sent, SendError> {
        let frame = close_frame(code, reason);
        let mut state = self.state.lock();
        self.check_open(&state)?;
        state.close_code = Some(code);
        self.push(&mut state, &frame)
    }

    /// Sends frames tungstenite writes on its own (pong and close replies).
    /// After our close frame they are dropped, as RFC 6455 requires.
    pub fn send_raw(&self, bytes: &[u8]) -> Result<Sent, SendError> {
        let mut state = self.state.lock();
        self.check_open(&state)?;
        if bytes.first().is_some_and(|b| b & 0x0f == OP_CLOSE) {
            state.close_code = match bytes.get(2..4) {
                Some(&[hi, lo]) => Some(u16::from_be_bytes([hi, lo])),
                _ => Some(1005),
            };
        }
        self.push(&mut state, bytes)
    }

    /// Whether a close frame has been queued (by anyone).
    pub fn is_closing(&self) -> bool {
        let state = self.state.lock();
        state.close_code.is_some() || state.dead
    }

    /// Whether the connection was cut (by a slow-consumer check, a write
    /// error, or shutdown).
    pub fn is_dead(&self) -> bool {
        self.state.lock().dead
    }

    /// The code of the close frame queued on this connection, if any (1005
    /// when it carried none).
    pub fn close_code(&self) -> Option<u16> {
        self.state.lock().close_code
    }

    /// Tries to send what is queued, without blocking.
    pub fn flush(&self, now: Instant, write_wait: Duration) -> Flush {
        let mut state = self.state.lock();
        if state.dead || self.drain(&mut state, now).is_err() {
            state.listed = false;
            return Flush::Dead;
        }
        if state.queued() == 0 {
            state.listed = false;
            return Flush::Empty;
        }
        let stalled_for = state.progress_at.map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        if stalled_for >= write_wait { Flush::Stalled } else { Flush::Pending }
    }

    /// Cuts the connection: both directions shut down, queue dropped, every
    /// later send fails. Wakes the owner thread if it is blocked reading.
    pub fn cut(&self) {
        let mut state = self.state.lock();
        self.kill(&mut state);
    }

    /// Cuts a connection that would not take its output (a slow consumer,
    /// a client that never answered our close): like [`Outbox::cut`], and
    /// what the kernel still holds for it is discarded with a reset rather
    /// than left to a peer that advertises no window.
    pub fn abort(&self) {
        let mut state = self.state.lock();
        net::discard_on_close(&self.stream);
        self.kill(&mut state);
    }

    fn check_open(&self, state: &State) -> Result<(), SendError> {
        if state.dead {
            Err(SendError::Dead)
        } else if state.close_code.is_some() {
            Err(SendError::Closing)
        } else {
            Ok(())
        }
    }

    fn push(&self, state: &mut State, frame: &[u8]) -> Result<Sent, SendError> {
        // The bound holds for a first frame too (SPEC §5).
        if frame.len() > self.limit_bytes {
            return Err(SendError::TooLarge);
        }
        if state.queued() > 0 {
            // Opportunistic: the client may have read since the last flush.
            self.drain(state, Instant::now()).map_err(|()| SendError::Dead)?;
        }
        let mut rest = frame;
        if state.queued() == 0 {
            match net::send_now(&self.stream, frame) {
                Ok(n) if n == frame.len() => return Ok(Sent::Done),
                Ok(n) => rest = &frame[n..],
                Err(_) => {
                    self.kill(state);
                    return Err(SendError::Dead);
                }
            }
        }
        let newly_queued = state.queued() == 0;
        if state.queued() + rest.len() > self.limit_bytes {
            net::discard_on_close(&self.stream);
            self.kill(state);
            return Err(SendError::Overflow);
        }
        if newly_queued {
            state.progress_at = Some(Instant::now());
        }
        state.queue.extend_from_slice(rest);
        let list = !state.listed;
        state.listed = true;
        Ok(Sent::Queued { list })
    }

    /// Sends what the kernel takes of the queue now. A write error kills the
    /// connection.
    fn drain(&self, state: &mut State, now: Instant) -> Result<(), ()> {
        if state.queued() == 0 {
            return Ok(());
        }
        match net::send_now(&self.stream, &state.queue[state.head..]) {
            Ok(0) => {}
            Ok(n) => {
                state.head += n;
                state.progress_at = Some(now);
                if state.queued() == 0 {
                    self.reset_queue(state);
                }
            }
            Err(_) => {
                self.kill(state);
                return Err(());
            }
        }
        Ok(())
    }

    fn reset_queue(&self, state: &mut State) {
        if state.queue.capacity() > KEEP_QUEUE_BYTES {
            state.queue = Vec::new();
        } else {
            state.queue.clear();
        }
        state.head = 0;
        state.progress_at = None;
    }

    fn kill(&self, state: &mut State) {
        state.dead = true;
        self.reset_queue(state);
        net::cut(&self.stream);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;

    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (server, client)
    }

    #[test]
    fn events_carry_increasing_seq_and_nothing_follows_close() {
        let (server, mut client) = pair();
        let outbox = Outbox::new(server, 1 << 20);
        let prefix = br#"{"type":"event","event":"tick","payload":{}"#;
        assert_eq!(outbox.send_event(prefix), Ok(Sent::Done));
        assert_eq!(outbox.send_event(prefix), Ok(Sent::Done));
        assert_eq!(outbox.send_close(1001, "bye"), Ok(Sent::Done));
        assert_eq!(outbox.send_event(prefix), Err(SendError::Closing));
        assert_eq!(outbox.send_raw(&close_frame(1000, "")), Err(SendError::Closing));
        outbox.cut();
        let mut wire = Vec::new();
        client.read_to_end(&mut wire).unwrap();
        let text = String::from_utf8_lossy(&wire);
        assert!(text.contains(r#""seq":1}"#) && text.contains(r#""seq":2}"#), "{text}");
        assert!(wire.ends_with(&close_frame(1001, "bye")));
    }

    #[test]
    fn a_client_that_never_reads_is_queued_then_cut() {
        let (server, _client) = pair();
        let outbox = Outbox::new(server, 64 * 1024);
        let frame = vec![b'x'; 16 * 1024];
        let mut queued = false;
        let mut result = Ok(Sent::Done);
        for _ in 0..10_000 {
            result = outbox.send(&frame);
            match result {
                Ok(Sent::Queued { .. }) => queued = true,
                Ok(Sent::Done) => {}
                Err(_) => break,
            }
        }
        assert!(queued);
        assert_eq!(result, Err(SendError::Overflow));
        assert_eq!(outbox.send(b"x"), Err(SendError::Dead));
        assert_eq!(outbox.flush(Instant::now(), Duration::from_secs(1)), Flush::Dead);
    }

    #[test]
    fn a_stalled_queue_reports_stalled_after_the_write_wait() {
        let (server, _client) = pair();
        let outbox = Outbox::new(server, 64 << 20);
        let frame = vec![b'x'; 64 * 1024];
        while outbox.send(&frame) == Ok(Sent::Done) {}
        let later = Instant::now() + Duration::from_secs(5);
        assert_eq!(outbox.flush(Instant::now(), Duration::from_secs(1)), Flush::Pending);
        assert_eq!(outbox.flush(later, Duration::from_secs(1)), Flush::Stalled);
    }
}
