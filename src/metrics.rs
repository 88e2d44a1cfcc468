//! The gateway's counters and gauges (SPEC §6), as lock-free atomics.
//!
//! Every label value is an enum variant with a fixed name, so no label can
//! come from client input, and every series exists (at 0) from the start.
//! Counting is one relaxed atomic add: cheap enough for the per-message path.
//! This module only counts; exporting is the job of the `/metrics` endpoint.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Direction of a WebSocket message, seen from the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From a client to the gateway.
    In,
    /// From the gateway to a client.
    Out,
}

impl Direction {
    /// Both directions, in label order.
    pub const ALL: [Direction; 2] = [Direction::In, Direction::Out];

    /// The `direction` label value.
    pub fn label(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }
}

/// Kind of a WebSocket message, for `goclaw_messages_total{type}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsgType {
    /// A protocol request frame.
    Req,
    /// A protocol response frame.
    Res,
    /// A protocol event frame.
    Event,
    /// A WebSocket ping.
    Ping,
    /// A WebSocket pong.
    Pong,
    /// A WebSocket close frame.
    Close,
    /// A binary frame (not part of the protocol).
    Binary,
    /// A text frame that is not a valid protocol frame.
    Invalid,
}

impl MsgType {
    /// Every kind, in label order.
    pub const ALL: [MsgType; 8] = [
        MsgType::Req,
        MsgType::Res,
        MsgType::Event,
        MsgType::Ping,
        MsgType::Pong,
        MsgType::Close,
        MsgType::Binary,
        MsgType::Invalid,
    ];

    /// The `type` label value.
    pub fn label(self) -> &'static str {
        match self {
            MsgType::Req => "req",
            MsgType::Res => "res",
            MsgType::Event => "event",
            MsgType::Ping => "ping",
            MsgType::Pong => "pong",
            MsgType::Close => "close",
            MsgType::Binary => "binary",
            MsgType::Invalid => "invalid",
        }
    }
}

/// Kind of error, for `goclaw_errors_total{type}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    /// Wrong or missing token, forbidden origin.
    Auth,
    /// Malformed HTTP, WebSocket framing or protocol frame.
    Protocol,
    /// A connection refused by the per-IP limiter, or a request refused by
    /// the per-connection limiter.
    RateLimit,
    /// A message or frame over `--max-message-size`.
    TooLarge,
    /// Handshake deadline, pong deadline or write deadline passed.
    Timeout,
    /// An upgrade refused at `--max-connections` (or no thread available).
    Capacity,
    /// A socket error: reset, broken pipe, accept failure.
    Io,
}

impl ErrorType {
    /// Every kind, in label order.
    pub const ALL: [ErrorType; 7] = [
        ErrorType::Auth,
        ErrorType::Protocol,
        ErrorType::RateLimit,
        ErrorType::TooLarge,
        ErrorType::Timeout,
        ErrorType::Capacity,
        ErrorType::Io,
    ];

    /// The `type` label value.
    pub fn label(self) -> &'static str {
        match self {
            ErrorType::Auth => "auth",
            ErrorType::Protocol => "protocol",
            ErrorType::RateLimit => "rate_limit",
            ErrorType::TooLarge => "too_large",
            ErrorType::Timeout => "timeout",
            ErrorType::Capacity => "capacity",
            ErrorType::Io => "io",
        }
    }
}

/// How a `node.invoke` ended, for `goclaw_invoke_duration_seconds{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvokeOutcome {
    /// The node answered `ok: true`.
    Ok,
    /// The node answered with an error.
    Error,
    /// No answer within `timeoutMs`.
    Timeout,
    /// The node disconnected or was replaced first.
    Disconnected,
    /// The gateway shut down first.
    Unavailable,
}

impl InvokeOutcome {
    /// Every outcome, in label order.
    pub const ALL: [InvokeOutcome; 5] = [
        InvokeOutcome::Ok,
        InvokeOutcome::Error,
        InvokeOutcome::Timeout,
        InvokeOutcome::Disconnected,
        InvokeOutcome::Unavailable,
    ];

    /// The `outcome` label value.
    pub fn label(self) -> &'static str {
        match self {
            InvokeOutcome::Ok => "ok",
            InvokeOutcome::Error => "error",
            InvokeOutcome::Timeout => "timeout",
            InvokeOutcome::Disconnected => "disconnected",
            InvokeOutcome::Unavailable => "unavailable",
        }
    }
}

/// All counters and gauges. One instance per gateway, shared by `Arc`.
#[derive(Debug, Default)]
pub struct Metrics {
    messages: [[AtomicU64; MsgType::ALL.len()]; Direction::ALL.len()],
    errors: [AtomicU64; ErrorType::ALL.len()],
    connected_clients: AtomicI64,
    nodes_connected: AtomicI64,
    invokes: [AtomicU64; InvokeOutcome::ALL.len()],
    invoke_micros: [AtomicU64; InvokeOutcome::ALL.len()],
}

impl Metrics {
    /// Counts one message.
    pub fn message(&self, direction: Direction, kind: MsgType) {
        self.messages[direction as usize][kind as usize].fetch_add(1, Relaxed);
    }

    /// Counts one error.
    pub fn error(&self, kind: ErrorType) {
        self.errors[kind as usize].fetch_add(1, Relaxed);
    }

    /// Records how long an invoke took and how it ended.
    pub fn invoke(&self, outcome: InvokeOutcome, took: Duration) {
        self.invokes[outcome as usize].fetch_add(1, Relaxed);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.invoke_micros[outcome as usize].fetch_add(micros, Relaxed);
    }

    /// Moves the authenticated-clients gauge by `delta`.
    pub(crate) fn add_clients(&self, delta: i64) {
        self.connected_clients.fetch_add(delta, Relaxed);
    }

    /// Moves the connected-nodes gauge by `delta`.
    pub(crate) fn add_nodes(&self, delta: i64) {
        self.nodes_connected.fetch_add(delta, Relaxed);
    }

    /// Messages counted so far in one series.
    pub fn messages(&self, direction: Direction, kind: MsgType) -> u64 {
        self.messages[direction as usize][kind as usize].load(Relaxed)
    }

    /// Errors counted so far in one series.
    pub fn errors(&self, kind: ErrorType) -> u64 {
        self.errors[kind as usize].load(Relaxed)
    }

    /// Invokes that ended with `outcome` so far.
    pub fn invokes(&self, outcome: InvokeOutcome) -> u64 {
        self.invokes[outcome as usize].load(Relaxed)
    }

    /// Clients that completed `connect` and are still connected.
    pub fn connected_clients(&self) -> i64 {
        self.connected_clients.load(Relaxed)
    }

    /// Nodes currently connected.
    pub fn nodes_connected(&self) -> i64 {
        self.nodes_connected.load(Relaxed)
    }
}
