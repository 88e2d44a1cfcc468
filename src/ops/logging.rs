//! Logging (SPEC §6): the `log` facade with structured key-values, to the
//! console (stderr) and to `STATE_DIR/logs/goclaw.log` as JSON lines,
//! rotated. The file has its own writer thread behind a bounded queue, so
//! a thread that logs never waits for the disk; never logs payloads or the
//! token. Why it is built this way: docs/AUDIT.md, "Logging".

use std::fmt::{self, Write as _};
use std::fs;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::SystemTime;

use log::kv::{self, Key, Value, VisitSource};
use log::{Level, LevelFilter, Log, Metadata, Record, SetLoggerError};
use simplelog::{ColorChoice, ConfigBuilder, TermLogger, TerminalMode};

use crate::ops::log_file::{JsonLog, LogLimits, write_lines};
use crate::wire::frame::push_json_str;
use crate::wire::text::for_log;

/// Lines waiting for the writer thread. Past it, lines are dropped (and
/// counted) rather than making a connection thread wait for the disk.
const QUEUE_LINES: usize = 4096;

/// The JSON log file of the installed logger, set once by [`init`] when the
/// file is open; the logger itself is process-wide, so is its path.
static FILE_PATH: OnceLock<PathBuf> = OnceLock::new();

/// The installed logger's handle: [`Logs::finish`] flushes and closes the
/// file at shutdown.
#[derive(Debug)]
pub struct Logs {
    writer: Option<(SyncSender<Vec<u8>>, JoinHandle<()>)>,
}

impl Logs {
    /// Writes out every queued line, closes the file and joins the writer.
    pub fn finish(mut self) {
        log::logger().flush();
        if let Some((queue, writer)) = self.writer.take() {
            // The logger keeps its own sender; a final empty line is the
            // writer's signal to flush and stop.
            let _ = queue.send(Vec::new());
            let _ = writer.join();
        }
    }
}

/// Installs the logger: console at `level`, and the JSON file in
/// `STATE_DIR/logs` when `state_dir` is given and writable.
///
/// # Errors
/// A logger was already installed.
pub fn init(level: LevelFilter, state_dir: Option<&Path>, limits: LogLimits) -> Result<Logs, SetLoggerError> {
    let journald = under_journald();
    let console = console(level, journald);
    let mut problem = None;
    let file = match state_dir.map(|dir| dir.join("logs")) {
        Some(dir) => match JsonLog::open(&dir, limits) {
            Ok(log) => Some(log),
            Err(e) => {
                problem = Some(format!("cannot write logs to {}: {e}; logging to the console only", dir.display()));
                None
            }
        },
        None => None,
    };
    let mut logs = Logs { writer: None };
    let mut sink = None;
    let mut file_path = None;
    if let Some(json) = file {
        // Absolute in the startup line, whatever --state-dir said.
        let path = fs::canonicalize(json.path()).unwrap_or_else(|_| json.path().to_path_buf());
        let (queue, lines) = sync_channel(QUEUE_LINES);
        let dropped = Arc::new(AtomicU64::new(0));
        let writer_dropped = dropped.clone();
        match thread::Builder::new().name("log-writer".into()).spawn(move || write_lines(json, &lines, &writer_dropped))
        {
            Ok(writer) => {
                sink = Some(FileSink { queue: queue.clone(), dropped });
                logs.writer = Some((queue, writer));
                file_path = Some(path);
            }
            Err(e) => problem = Some(format!("cannot start the log writer: {e}; logging to the console only")),
        }
    }
    log::set_boxed_logger(Box::new(Logger { console, journald, file: sink }))?;
    log::set_max_level(level);
    if let Some(path) = file_path {
        let _ = FILE_PATH.set(path);
    }
    if let Some(problem) = problem {
        log::warn!(target: "goclaw::logging", "{problem}");
    }
    Ok(logs)
}

/// Whether stderr goes to journald: systemd sets `JOURNAL_STREAM` for a
/// service whose output it collects. Then console lines carry no timestamp
/// (journald adds its own) and start with their syslog priority.
pub fn under_journald() -> bool {
    std::env::var_os("JOURNAL_STREAM").is_some()
}

/// Where the installed logger writes the JSON log file, for the startup
/// line: its path, or `none` (no state directory, or one that could not be
/// written).
pub fn file_or_none() -> String {
    FILE_PATH.get().map_or_else(|| "none".to_string(), |path| path.display().to_string())
}

fn console(level: LevelFilter, journald: bool) -> Box<TermLogger> {
    let mut config = ConfigBuilder::new();
    config
        .set_target_level(LevelFilter::Off)
        .set_thread_level(LevelFilter::Off)
        .set_location_level(LevelFilter::Off)
        // Our own lines only: dependencies log at debug about every frame.
        .add_filter_allow_str("goclaw");
    if journald {
        // journald stamps every line itself; the level comes first, after
        // the priority prefix, from `Logger::log`.
        config.set_time_level(LevelFilter::Off).set_max_level(LevelFilter::Off);
    } else {
        config.set_time_format_rfc3339();
    }
    let colours = if std::io::stderr().is_terminal() && !journald { ColorChoice::Auto } else { ColorChoice::Never };
    TermLogger::new(level, config.build(), TerminalMode::Stderr, colours)
}

/// The global logger: console now, file through the writer's queue.
struct Logger {
    console: Box<TermLogger>,
    /// Under journald: each console line starts with its priority.
    journald: bool,
    file: Option<FileSink>,
}

struct FileSink {
    queue: SyncSender<Vec<u8>>,
    dropped: Arc<AtomicU64>,
}

impl Log for Logger {
    /// Our own lines only, for both sinks: dependencies log every frame at
    /// trace (tungstenite prints the text, `connect`'s token included).
    /// The console's `add_filter_allow_str` filters only the console.
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.target().starts_with("goclaw") && self.console.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        if let Some(file) = &self.file {
            let line = json_line(record, SystemTime::now());
            if let Err(TrySendError::Full(_)) = file.queue.try_send(line) {
                file.dropped.fetch_add(1, Relaxed);
            }
        }
        let mut fields = ConsoleFields(String::new());
        let _ = record.key_values().visit(&mut fields);
        let prefix = if self.journald { journald_prefix(record.level()) } else { "" };
        if fields.0.is_empty() && prefix.is_empty() {
            return self.console.log(record);
        }
        self.console.log(
            &Record::builder()
                .metadata(record.metadata().clone())
                .args(format_args!("{prefix}{}{}", record.args(), fields.0))
                .module_path(record.module_path())
                .file(record.file())
                .line(record.line())
                .build(),
        );
    }

    fn flush(&self) {
        self.console.flush();
    }
}

/// The start of a console line under journald: its syslog priority as
/// sd-daemon(3) writes it (journald strips it and files the line under that
/// priority, so `journalctl -p warning` finds warnings), then the level.
fn journald_prefix(level: Level) -> &'static str {
    match level {
        Level::Error => "<3>[ERROR] ",
        Level::Warn => "<4>[WARN] ",
        Level::Info => "<6>[INFO] ",
        Level::Debug => "<7>[DEBUG] ",
        Level::Trace => "<7>[TRACE] ",
    }
}

/// Longest field value written to either sink, in bytes: whatever a
/// client managed to put in a field is cut there, and its control and
/// invisible characters escaped (SPEC §5).
pub const MAX_FIELD_BYTES: usize = 256;

/// What a field's value is, for both sinks.
enum FieldValue {
    /// `None`: the field does not apply; left out.
    Absent,
    /// A number or boolean, written bare in JSON.
    Bare(String),
    /// Anything else, as text.
    Text(String),
}

fn classify(value: &Value<'_>) -> FieldValue {
    if let Some(n) = value.to_u64() {
        FieldValue::Bare(n.to_string())
    } else if let Some(n) = value.to_i64() {
        FieldValue::Bare(n.to_string())
    } else if let Some(b) = value.to_bool() {
        FieldValue::Bare(b.to_string())
    } else if let Some(x) = value.to_f64().filter(|x| x.is_finite()) {
        FieldValue::Bare(x.to_string())
    } else if let Some(s) = value.to_borrowed_str() {
        FieldValue::Text(for_log(s, MAX_FIELD_BYTES))
    } else {
        match value.to_string() {
            // How `log` renders an `Option::None`.
            text if text == "None" => FieldValue::Absent,
            text => FieldValue::Text(for_log(&text, MAX_FIELD_BYTES)),
        }
    }
}

/// Collects ` key=value` pairs; text with spaces or quotes is quoted.
struct ConsoleFields(String);

impl<'kvs> VisitSource<'kvs> for ConsoleFields {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), kv::Error> {
        let written = match classify(&value) {
            FieldValue::Absent => Ok(()),
            FieldValue::Text(text) if text.is_empty() => Ok(()),
            FieldValue::Text(text) if text.contains([' ', '"', '=']) => write!(self.0, " {key}={text:?}"),
            FieldValue::Bare(text) | FieldValue::Text(text) => write!(self.0, " {key}={text}"),
        };
        written.map_err(|fmt::Error| kv::Error::msg("formatting a log field failed"))
    }
}

/// One record as a JSON line: `time` (RFC 3339, UTC, milliseconds), `level`,
/// `msg`, `target`, then each field as its own key.
pub fn json_line(record: &Record<'_>, now: SystemTime) -> Vec<u8> {
    let mut line = Vec::with_capacity(256);
    let time = chrono::DateTime::<chrono::Utc>::from(now).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    line.extend_from_slice(b"{\"time\":\"");
    line.extend_from_slice(time.as_bytes());
    line.extend_from_slice(b"\",\"level\":\"");
    line.extend_from_slice(record.level().as_str().to_ascii_lowercase().as_bytes());
    line.extend_from_slice(b"\",\"msg\":");
    push_json_str(&mut line, &record.args().to_string());
    line.extend_from_slice(b",\"target\":");
    push_json_str(&mut line, record.target());
    let _ = record.key_values().visit(&mut JsonFields(&mut line));
    line.extend_from_slice(b"}\n");
    line
}

struct JsonFields<'a>(&'a mut Vec<u8>);

impl<'kvs> VisitSource<'kvs> for JsonFields<'_> {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), kv::Error> {
        let value = classify(&value);
        if matches!(value, FieldValue::Absent) {
            return Ok(());
        }
        self.0.push(b',');
        push_json_str(self.0, key.as_str());
        self.0.push(b':');
        match value {
            FieldValue::Bare(text) => self.0.extend_from_slice(text.as_bytes()),
            FieldValue::Text(text) => push_json_str(self.0, &text),
            FieldValue::Absent => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn journald_priorities_follow_sd_daemon() {
        let cases = [
            (Level::Error, "<3>[ERROR] "),
            (Level::Warn, "<4>[WARN] "),
            (Level::Info, "<6>[INFO] "),
            (Level::Debug, "<7>[DEBUG] "),
            (Level::Trace, "<7>[TRACE] "),
        ];
        for (level, prefix) in cases {
            assert_eq!(journald_prefix(level), prefix);
        }
    }

    #[test]
    fn json_lines_carry_fields_as_keys() {
        use log::kv::ToValue;
        let gone: Option<u16> = None;
        let fields: &[(&str, Value<'_>)] = &[
            ("conn_id", Value::from_display(&"b5a1")),
            ("active", Value::from(3u64)),
            ("ok", Value::from(true)),
            ("node_id", Value::from("quote\"d")),
            ("gone", gone.to_value()),
        ];
        let record = Record::builder()
            .level(Level::Warn)
            .target("goclaw::conn")
            .args(format_args!("client disconnected"))
            .key_values(&fields)
            .build();
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_304_969_144);
        let line = json_line(&record, at);
        assert!(line.ends_with(b"}\n"));
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["time"], "2026-11-21T23:49:29.144Z");
        assert_eq!(v["level"], "warn");
        assert_eq!(v["msg"], "client disconnected");
        assert_eq!(v["target"], "goclaw::conn");
        assert_eq!(v["conn_id"], "b5a1");
        assert_eq!(v["active"], 3);
        assert_eq!(v["ok"], true);
        assert_eq!(v["node_id"], "quote\"d");
        assert!(v.get("gone").is_none());
    }

    #[test]
    fn client_strings_are_cut_and_escaped_in_both_sinks() {
        let long = format!("a\u{202e}b\n{}", "x".repeat(500_000));
        let fields: &[(&str, Value<'_>)] = &[("error", Value::from(long.as_str()))];
        let record = Record::builder().level(Level::Warn).target("goclaw::conn").key_values(&fields).build();
        let line = json_line(&record, SystemTime::UNIX_EPOCH);
        assert!(line.len() < 1024, "{} bytes", line.len());
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        let logged = v["error"].as_str().unwrap();
        assert!(logged.starts_with("a\\u{202e}b\\u{a}x") && !logged.contains('\u{202e}'), "{logged}");
        let mut console = ConsoleFields(String::new());
        let _ = record.key_values().visit(&mut console);
        assert!(console.0.len() < 1024 && !console.0.contains(['\n', '\u{202e}']), "{}", console.0);
    }
}
