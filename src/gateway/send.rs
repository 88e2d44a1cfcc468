//! The policy around every send to a client: counting it, putting a
//! backlogged connection on the heartbeat's flush list, cutting a slow
//! consumer, and the protocol answers built on that (responses, the one
//! answer of each invoke, presence). Never blocks: every write is an outbox
//! send.

use std::sync::Arc;
use std::time::Instant;

use log::{info, warn};

use crate::gateway::hub::Pending;
use crate::gateway::outbox::{SendError, Sent};
use crate::gateway::payload::{self, Presence};
use crate::gateway::peer::Conn;
use crate::gateway::state::{CLOSE_REPLY_WAIT, Shared};
use crate::ops::metrics::{Direction, ErrorType, InvokeOutcome, MsgType};
use crate::util::{millis, unix_ms};
use crate::wire::frame::{self, Detail, ErrorCode, Failure, NodeError};
use crate::wire::params::Outcome;
use crate::wire::ws::{DataFrame, OP_TEXT};

/// How an invoke is answered.
#[derive(Debug, Clone, Copy)]
pub enum Answer<'a> {
    /// What the node answered: its payload (wrapped as OpenClaw does) or its
    /// own error (`UNAVAILABLE` with `details.nodeError`).
    Node(&'a Outcome<'a>),
    /// The gateway's error: `TIMEOUT`, `NODE_DISCONNECTED` or `UNAVAILABLE`.
    Gateway(ErrorCode, &'static str),
}

impl Shared {
    /// Sends a complete frame. False if the connection is closing or gone.
    pub fn send(&self, conn: &Arc<Conn>, frame: &[u8], kind: MsgType) -> bool {
        self.settle(conn, conn.out.send(frame), kind)
    }

    /// Sends a broadcast event (`tick`, `presence`, ...): the connection's
    /// next `seq` is appended.
    pub fn send_event(&self, conn: &Arc<Conn>, prefix: &[u8]) -> bool {
        self.settle(conn, conn.out.send_event(prefix), MsgType::Event)
    }

    /// Sends an event meant for this connection only, without `seq` (SPEC
    /// §4: `connect.challenge`, `*.resolved` to the node concerned).
    pub fn send_to(&self, conn: &Arc<Conn>, event: &str, payload: &str) -> bool {
        let mut frame = DataFrame::text();
        frame.body().extend_from_slice(&frame::event_prefix(event, payload));
        frame.body().push(b'}');
        self.send(conn, frame.finish(), MsgType::Event)
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
            Err(SendError::TooLarge) => {
                warn!(conn_id:% = conn.id, limit_bytes = self.queue_limit_bytes; "a frame larger than the queue was not sent");
                false
            }
            Err(SendError::Closing | SendError::Dead) => false,
        }
    }

    /// Whether a frame whose text is `frame`'s fits the `maxPayload`
    /// announced in `hello-ok` (SPEC §5: nothing sent is larger).
    pub fn fits(&self, frame: &DataFrame) -> bool {
        frame.len() <= self.config.max_message_bytes
    }

    /// Sends a success response, or `TOO_LARGE` if it would not fit.
    pub fn respond_ok(&self, conn: &Arc<Conn>, id: &str, payload: &str) -> bool {
        let mut frame = DataFrame::with_capacity(OP_TEXT, payload.len() + 64);
        frame::write_ok(frame.body(), id, payload);
        if !self.fits(&frame) {
            return self.respond_error(conn, Some(id), &too_large());
        }
        self.send(conn, frame.finish(), MsgType::Res)
    }

    /// Sends an error response; `id` is raw JSON (`null` when unknown).
    pub fn respond_error(&self, conn: &Arc<Conn>, id: Option<&str>, failure: &Failure) -> bool {
        let mut frame = DataFrame::text();
        frame::write_error(frame.body(), id, failure);
        self.send(conn, frame.finish(), MsgType::Res)
    }

    /// Answers a pending invoke (its one response), records its outcome and
    /// writes its audit line.
    pub fn answer(&self, mut pending: Pending, answer: Answer<'_>) {
        let id = Some(&*pending.request_id);
        let (frame, outcome) = match answer {
            Answer::Node(Outcome::Err { code, message }) => {
                let node_error = NodeError { code: code.to_string(), message: message.to_string() };
                let failure =
                    Failure::new(ErrorCode::NodeError, "node returned an error").with(Detail::Node { node_error });
                (error_frame(id, &failure), InvokeOutcome::Error)
            }
            Answer::Node(result) => {
                let answer = [Forms::Both, Forms::PayloadOnly].into_iter().find_map(|forms| {
                    let mut frame = DataFrame::with_capacity(OP_TEXT, 256);
                    write_invoke_ok(
                        frame.body(),
                        &pending.request_id,
                        &pending.node_id,
                        &pending.command,
                        result,
                        forms,
                    );
                    self.fits(&frame).then_some(frame)
                });
                match answer {
                    Some(frame) => (frame, InvokeOutcome::Ok),
                    None => (error_frame(id, &too_large()), InvokeOutcome::Error),
                }
            }
            Answer::Gateway(code, message) => {
                let outcome = match code {
                    ErrorCode::Timeout => InvokeOutcome::Timeout,
                    ErrorCode::Unavailable => InvokeOutcome::Unavailable,
                    _ => InvokeOutcome::Disconnected,
                };
                (error_frame(id, &Failure::new(code, message)), outcome)
            }
        };
        let mut frame = frame;
        self.send(&pending.operator, frame.finish(), MsgType::Res);
        self.record(&mut pending, outcome);
    }

    /// Records an invoke whose operator left before it was answered: nobody
    /// is left to answer, but it is counted and audited all the same.
    pub fn abandon(&self, mut pending: Pending) {
        self.record(&mut pending, InvokeOutcome::Abandoned);
    }

    fn record(&self, pending: &mut Pending, outcome: InvokeOutcome) {
        let took = pending.started.elapsed();
        self.metrics.invoke(outcome, took);
        pending.settled = true;
        info!(target: "goclaw::audit", invoke_id:% = pending.id, conn_id:% = pending.operator.id,
            device_id = pending.operator.device(), node_id = &*pending.node_id, command = &*pending.command,
            outcome = outcome.label(), duration_ms = millis(took); "invoke");
    }

    /// Tells every operator that a node connected or disconnected.
    pub fn presence(&self, node_id: &str, state: &'static str) {
        let presence = payload::encode(&Presence { node_id, state, ts: unix_ms() });
        self.broadcast_to_operators(&frame::event_prefix("presence", &presence));
    }

    /// Sends a broadcast event to every operator.
    pub fn broadcast_to_operators(&self, prefix: &[u8]) {
        for operator in self.hub.operators() {
            self.send_event(&operator, prefix);
        }
    }
}

/// The error that replaces an answer larger than `maxPayload`.
fn too_large() -> Failure {
    Failure::new(ErrorCode::TooLarge, "the answer is larger than maxPayload")
}

fn error_frame(id: Option<&str>, failure: &Failure) -> DataFrame {
    let mut frame = DataFrame::text();
    frame::write_error(frame.body(), id, failure);
    frame
}

/// Which forms of a node's `payloadJSON` result `node.invoke`'s answer
/// carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forms {
    /// `payload` (the JSON the string holds) and `payloadJSON`, as the real
    /// gateway answers: the real CLIs print `payload`.
    Both,
    /// `payload` alone: the answer with both would exceed `maxPayload`.
    PayloadOnly,
}

/// `node.invoke`'s answer as OpenClaw wraps it: `{ok, nodeId, command,
/// payload}`, plus `payloadJSON` when the node sent that form. The node's
/// bytes are copied as they came, already checked strict
/// (docs/AUDIT.md, "JSON on the wire").
pub fn write_invoke_ok(
    out: &mut Vec<u8>,
    request_id: &str,
    node_id: &str,
    command: &str,
    result: &Outcome<'_>,
    forms: Forms,
) {
    out.extend_from_slice(br#"{"type":"res","id":"#);
    out.extend_from_slice(request_id.as_bytes());
    out.extend_from_slice(br#","ok":true,"payload":{"ok":true,"nodeId":"#);
    frame::push_json_str(out, node_id);
    out.extend_from_slice(br#","command":"#);
    frame::push_json_str(out, command);
    let json = match result {
        Outcome::PayloadJson(text) => text,
        Outcome::Payload(raw) => *raw,
        Outcome::Empty | Outcome::Err { .. } => "null",
    };
    out.extend_from_slice(br#","payload":"#);
    out.extend_from_slice(json.as_bytes());
    if forms == Forms::Both && matches!(result, Outcome::PayloadJson(_)) {
        out.extend_from_slice(br#","payloadJSON":"#);
        frame::push_json_str(out, json);
    }
    out.extend_from_slice(b"}}");
}
