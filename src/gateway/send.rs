//! The policy around every send to a client: counting it, putting a
//! backlogged connection on the heartbeat's flush list, cutting a slow
//! consumer, and the protocol answers built on that (responses, the one
//! answer of each invoke, presence). Never blocks: every write is an outbox
//! send.

use std::sync::Arc;
use std::time::Instant;

use log::warn;

use crate::gateway::hub::{Conn, Pending};
use crate::gateway::outbox::{SendError, Sent};
use crate::gateway::payload::{self, Presence};
use crate::gateway::state::{CLOSE_REPLY_WAIT, Shared};
use crate::ops::metrics::{Direction, ErrorType, InvokeOutcome, MsgType};
use crate::util::unix_ms;
use crate::wire::frame::{self, ErrorCode, Failure};
use crate::wire::ws::DataFrame;

/// How an invoke is answered.
#[derive(Debug, Clone, Copy)]
pub enum Answer<'a> {
    /// The node's payload (raw JSON).
    Ok(&'a str),
    /// The node's own error.
    NodeError {
        /// The node's code.
        code: &'a str,
        /// The node's message.
        message: &'a str,
    },
    /// The gateway's error: `TIMEOUT`, `NODE_DISCONNECTED` or `UNAVAILABLE`.
    Gateway(ErrorCode, &'a str),
}

impl Shared {
    /// Sends a complete frame. False if the connection is closing or gone.
    pub fn send(&self, conn: &Arc<Conn>, frame: &[u8], kind: MsgType) -> bool {
        self.settle(conn, conn.out.send(frame), kind)
    }

    /// Sends an event (the connection's `seq` is appended).
    pub fn send_event(&self, conn: &Arc<Conn>, prefix: &[u8]) -> bool {
        self.settle(conn, conn.out.send_event(prefix), MsgType::Event)
    }

    /// Sends a close frame from the connection's own thread.
    pub fn close(&self, conn: &Arc<Conn>, code: u16, reason: &str) -> bool {
        self.settle(conn, conn.out.send_close(code, reason), MsgType::Close)
    }

    /// Sends a close frame from another thread, and schedules a cut in case
    /// the client never answers it.
    pub fn close_from_elsewhere(&self, conn: &Arc<Conn>, code: u16, reason: &str) {
        if self.close(conn, code, reason) {
            self.closing.lock().push_back((Instant::now() + CLOSE_REPLY_WAIT, conn.clone()));
            self.waker.wake();
        }
    }

    /// Counts a send and handles its outcome; true if the frame was accepted.
    pub fn settle(&self, conn: &Arc<Conn>, result: Result<Sent, SendError>, kind: MsgType) -> bool {
        match result {
            Ok(sent) => {
                self.metrics.message(Direction::Out, kind);
                if let Sent::Queued { list: true } = sent {
                    self.flush_list.lock().push(conn.clone());
                    self.waker.wake();
                }
                true
            }
            Err(SendError::Overflow) => {
                self.metrics.error(ErrorType::Timeout);
                warn!(conn_id:% = conn.id, addr:% = conn.addr, limit_bytes = self.queue_limit_bytes;
                    "slow consumer: output queue full, connection cut");
                false
            }
            Err(SendError::Closing | SendError::Dead) => false,
        }
    }

    /// Sends a success response.
    pub fn respond_ok(&self, conn: &Arc<Conn>, id: &str, payload: &str) -> bool {
        let mut frame = DataFrame::text();
        frame::write_ok(frame.body(), id, payload);
        self.send(conn, frame.finish(), MsgType::Res)
    }

    /// Sends an error response; `id` is raw JSON (`null` when unknown).
    pub fn respond_error(&self, conn: &Arc<Conn>, id: Option<&str>, failure: &Failure) -> bool {
        let mut frame = DataFrame::text();
        frame::write_error(frame.body(), id, failure.code.as_str(), &failure.message);
        self.send(conn, frame.finish(), MsgType::Res)
    }

    /// Answers a pending invoke (its one response) and records its outcome.
    pub fn answer(&self, pending: Pending, answer: Answer<'_>) {
        let mut frame = DataFrame::text();
        let outcome = match answer {
            Answer::Ok(payload) => {
                frame::write_ok(frame.body(), &pending.request_id, payload);
                InvokeOutcome::Ok
            }
            Answer::NodeError { code, message } => {
                frame::write_error(frame.body(), Some(&pending.request_id), code, message);
                InvokeOutcome::Error
            }
            Answer::Gateway(code, message) => {
                frame::write_error(frame.body(), Some(&pending.request_id), code.as_str(), message);
                match code {
                    ErrorCode::Timeout => InvokeOutcome::Timeout,
                    ErrorCode::Unavailable => InvokeOutcome::Unavailable,
                    _ => InvokeOutcome::Disconnected,
                }
            }
        };
        self.metrics.invoke(outcome, pending.started.elapsed());
        self.send(&pending.operator, frame.finish(), MsgType::Res);
    }

    /// Tells every operator that a node connected or disconnected.
    pub fn presence(&self, node_id: &str, state: &'static str) {
        let presence = payload::encode(&Presence { node_id, state, ts: unix_ms() });
        let prefix = frame::event_prefix("presence", &presence);
        for operator in self.hub.operators() {
            self.send_event(&operator, &prefix);
        }
    }
}
