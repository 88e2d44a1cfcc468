//! The gateway's Prometheus metrics (SPEC §6): one registry per gateway,
//! every series created at start (so dashboards and alerts see zeros, not
//! gaps), and a handle per label combination resolved once, so counting on
//! the per-message path is one atomic add with no lock and no label lookup.
//!
//! Every label value is an enum variant with a fixed name: no label can come
//! from client input. [`Metrics::render`] produces the text exposition
//! format for `/metrics`.

use std::time::Duration;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Counter, Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::ops::process::ProcessStats;
use crate::wire::http::Refusal;

/// `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds of the invoke duration histogram, in seconds: from a
/// loopback round trip to the longest `timeoutMs` (600 s).
const INVOKE_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0];

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
    /// The operator left before the answer came; nobody was left to answer.
    Abandoned,
}

impl InvokeOutcome {
    /// Every outcome, in label order.
    pub const ALL: [InvokeOutcome; 6] = [
        InvokeOutcome::Ok,
        InvokeOutcome::Error,
        InvokeOutcome::Timeout,
        InvokeOutcome::Disconnected,
        InvokeOutcome::Unavailable,
        InvokeOutcome::Abandoned,
    ];

    /// The `outcome` label value.
    pub fn label(self) -> &'static str {
        match self {
            InvokeOutcome::Ok => "ok",
            InvokeOutcome::Error => "error",
            InvokeOutcome::Timeout => "timeout",
            InvokeOutcome::Disconnected => "disconnected",
            InvokeOutcome::Unavailable => "unavailable",
            InvokeOutcome::Abandoned => "abandoned",
        }
    }
}

/// Every metric of one gateway, registered in its own registry (tests run
/// several gateways in one process).
pub struct Metrics {
    registry: Registry,
    messages: [[IntCounter; MsgType::ALL.len()]; Direction::ALL.len()],
    errors: [IntCounter; ErrorType::ALL.len()],
    connected_clients: IntGauge,
    nodes_connected: IntGauge,
    max_connections: IntGauge,
    pairing_pending: IntGauge,
    paired_devices: IntGauge,
    invokes: [Histogram; InvokeOutcome::ALL.len()],
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Registration only fails for an invalid or duplicate name or label set;
/// every one here is a literal, registered once per fresh registry.
const STATIC_METRIC: &str = "invariant: metric names and labels are static, valid and registered once";

impl Metrics {
    /// A registry with every series of SPEC §6 present at zero.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let register = |collector: Box<dyn Collector>| registry.register(collector).expect(STATIC_METRIC);

        let messages_vec = IntCounterVec::new(
            Opts::new("goclaw_messages_total", "WebSocket messages by direction and type."),
            &["direction", "type"],
        )
        .expect(STATIC_METRIC);
        let messages = Direction::ALL.map(|direction| {
            MsgType::ALL.map(|kind| messages_vec.with_label_values(&[direction.label(), kind.label()]))
        });
        register(Box::new(messages_vec));

        let errors_vec =
            IntCounterVec::new(Opts::new("goclaw_errors_total", "Errors by type."), &["type"]).expect(STATIC_METRIC);
        let errors = ErrorType::ALL.map(|kind| errors_vec.with_label_values(&[kind.label()]));
        register(Box::new(errors_vec));

        let connected_clients =
            IntGauge::new("goclaw_connected_clients", "Clients that completed connect and are still connected.")
                .expect(STATIC_METRIC);
        register(Box::new(connected_clients.clone()));
        let nodes_connected =
            IntGauge::new("goclaw_nodes_connected", "Nodes currently connected.").expect(STATIC_METRIC);
        register(Box::new(nodes_connected.clone()));
        let max_connections = IntGauge::new(
            "goclaw_max_connections",
            "The --max-connections cap: concurrent connections admitted, one thread each.",
        )
        .expect(STATIC_METRIC);
        register(Box::new(max_connections.clone()));
        let pairing_pending =
            IntGauge::new("goclaw_pairing_pending_requests", "Device pairing requests waiting for an operator.")
                .expect(STATIC_METRIC);
        register(Box::new(pairing_pending.clone()));
        let paired_devices =
            IntGauge::new("goclaw_paired_devices", "Devices approved for at least one role.").expect(STATIC_METRIC);
        register(Box::new(paired_devices.clone()));

        let invoke_vec = prometheus::HistogramVec::new(
            HistogramOpts::new("goclaw_invoke_duration_seconds", "node.invoke duration by outcome.")
                .buckets(INVOKE_BUCKETS.to_vec()),
            &["outcome"],
        )
        .expect(STATIC_METRIC);
        let invokes = InvokeOutcome::ALL.map(|outcome| invoke_vec.with_label_values(&[outcome.label()]));
        register(Box::new(invoke_vec));

        let build_info =
            IntGaugeVec::new(Opts::new("goclaw_build_info", "Always 1; the version is in the label."), &["version"])
                .expect(STATIC_METRIC);
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        register(Box::new(build_info));
        register(Box::new(ProcessCollector::new()));

        Metrics {
            registry,
            messages,
            errors,
            connected_clients,
            nodes_connected,
            max_connections,
            pairing_pending,
            paired_devices,
            invokes,
        }
    }

    /// Counts one message.
    pub fn message(&self, direction: Direction, kind: MsgType) {
        self.messages[direction as usize][kind as usize].inc();
    }

    /// Counts one error.
    pub fn error(&self, kind: ErrorType) {
        self.errors[kind as usize].inc();
    }

    /// Counts a refused HTTP request under its error type, if it has one
    /// (a refusal during shutdown is not an error).
    pub fn refused(&self, refusal: Refusal) {
        let kind = match refusal {
            Refusal::BadRequest(_)
            | Refusal::NotFound
            | Refusal::MethodNotAllowed
            | Refusal::UpgradeRequired
            | Refusal::TooLarge => ErrorType::Protocol,
            Refusal::Forbidden => ErrorType::Auth,
            Refusal::RateLimited(_) => ErrorType::RateLimit,
            Refusal::AtCapacity => ErrorType::Capacity,
            Refusal::ShuttingDown => return,
        };
        self.error(kind);
    }

    /// Records how long an invoke took and how it ended.
    pub fn invoke(&self, outcome: InvokeOutcome, took: Duration) {
        self.invokes[outcome as usize].observe(took.as_secs_f64());
    }

    /// Moves the authenticated-clients gauge by `delta`.
    pub(crate) fn add_clients(&self, delta: i64) {
        self.connected_clients.add(delta);
    }

    /// Moves the connected-nodes gauge by `delta`.
    pub(crate) fn add_nodes(&self, delta: i64) {
        self.nodes_connected.add(delta);
    }

    /// Sets the pairing gauges: pending requests and paired devices.
    pub fn set_pairing(&self, pending: usize, paired: usize) {
        self.pairing_pending.set(i64::try_from(pending).unwrap_or(i64::MAX));
        self.paired_devices.set(i64::try_from(paired).unwrap_or(i64::MAX));
    }

    /// Sets the `--max-connections` gauge.
    pub fn set_max_connections(&self, max: usize) {
        self.max_connections.set(i64::try_from(max).unwrap_or(i64::MAX));
    }

    /// Messages counted so far in one series.
    pub fn messages(&self, direction: Direction, kind: MsgType) -> u64 {
        self.messages[direction as usize][kind as usize].get()
    }

    /// Errors counted so far in one series.
    pub fn errors(&self, kind: ErrorType) -> u64 {
        self.errors[kind as usize].get()
    }

    /// Invokes that ended with `outcome` so far.
    pub fn invokes(&self, outcome: InvokeOutcome) -> u64 {
        self.invokes[outcome as usize].get_sample_count()
    }

    /// Nodes currently connected.
    pub fn nodes_connected(&self) -> i64 {
        self.nodes_connected.get()
    }

    /// The text exposition of every metric, process figures read now.
    ///
    /// # Errors
    /// Only if a metric family is malformed, which the static registrations
    /// above rule out; the caller answers 500.
    pub fn render(&self) -> prometheus::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(8 * 1024);
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(out)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// The conventional `process_*` metrics, read from `/proc` at each scrape.
struct ProcessCollector {
    descs: Vec<Desc>,
    resident: Gauge,
    virtual_memory: Gauge,
    threads: Gauge,
    open_fds: Gauge,
    max_fds: Gauge,
    cpu: Counter,
    /// Held while `cpu` catches up with the process's CPU time: up to four
    /// scrapes run at once, and two reading the same old value would both
    /// add the same delta.
    cpu_update: parking_lot::Mutex<()>,
    start_time: Gauge,
}

impl ProcessCollector {
    fn new() -> ProcessCollector {
        let gauge = |name: &str, help: &str| Gauge::new(name, help).expect(STATIC_METRIC);
        let collector = ProcessCollector {
            descs: Vec::new(),
            resident: gauge("process_resident_memory_bytes", "Resident memory size in bytes."),
            virtual_memory: gauge("process_virtual_memory_bytes", "Virtual memory size in bytes."),
            threads: gauge("process_threads", "Number of OS threads in the process."),
            open_fds: gauge("process_open_fds", "Number of open file descriptors."),
            max_fds: gauge("process_max_fds", "Maximum number of open file descriptors."),
            cpu: Counter::new("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.")
                .expect(STATIC_METRIC),
            cpu_update: parking_lot::Mutex::new(()),
            start_time: gauge("process_start_time_seconds", "Start time of the process since unix epoch in seconds."),
        };
        let descs = collector.parts().iter().flat_map(|c| c.desc()).cloned().collect();
        ProcessCollector { descs, ..collector }
    }

    fn parts(&self) -> [&dyn Collector; 7] {
        [
            &self.resident,
            &self.virtual_memory,
            &self.threads,
            &self.open_fds,
            &self.max_fds,
            &self.cpu,
            &self.start_time,
        ]
    }
}

impl Collector for ProcessCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let stats = ProcessStats::read();
        let gauges = [
            (&self.resident, stats.resident_bytes.map(|v| v as f64)),
            (&self.virtual_memory, stats.virtual_bytes.map(|v| v as f64)),
            (&self.threads, stats.threads.map(|v| v as f64)),
            (&self.open_fds, stats.open_fds.map(|v| v as f64)),
            (&self.max_fds, stats.max_fds.map(|v| v as f64)),
            (&self.start_time, stats.start_time_seconds),
        ];
        let mut families = Vec::new();
        for (gauge, value) in gauges {
            if let Some(value) = value {
                gauge.set(value);
                families.extend(gauge.collect());
            }
        }
        if let Some(total) = stats.cpu_seconds {
            // A counter only moves forward: add what was used since the last scrape.
            let _one_at_a_time = self.cpu_update.lock();
            let delta = total - self.cpu.get();
            if delta > 0.0 {
                self.cpu.inc_by(delta);
            }
            families.extend(self.cpu.collect());
        }
        families
    }
}
