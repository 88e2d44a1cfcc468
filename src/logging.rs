//! Logging setup: the `log` facade with structured key-values, printed on
//! the console (stderr) by simplelog as `message key=value ...`.
//!
//! simplelog does not print key-values, so [`Logger`] appends them to the
//! message before handing the record over. This is the one place where log
//! sinks are wired; a file sink joins the console here. Never logs payloads
//! or the token (callers only pass ids, addresses, codes and counts).

use std::fmt::{self, Write as _};
use std::io::IsTerminal;

use log::kv::{self, Key, Value, VisitSource};
use log::{LevelFilter, Log, Metadata, Record, SetLoggerError};
use simplelog::{ColorChoice, ConfigBuilder, TermLogger, TerminalMode};

/// Installs the console logger at `level`.
///
/// Under systemd (`JOURNAL_STREAM` set) lines carry no timestamp, since
/// journald adds its own; colours only when stderr is a terminal.
///
/// # Errors
/// A logger was already installed.
pub fn init(level: LevelFilter) -> Result<(), SetLoggerError> {
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let mut config = ConfigBuilder::new();
    config
        .set_target_level(LevelFilter::Off)
        .set_thread_level(LevelFilter::Off)
        .set_location_level(LevelFilter::Off)
        // Our own lines only: dependencies log at debug about every frame.
        .add_filter_allow_str("goclaw");
    if journald {
        config.set_time_level(LevelFilter::Off);
    } else {
        config.set_time_format_rfc3339();
    }
    let colours = if std::io::stderr().is_terminal() && !journald { ColorChoice::Auto } else { ColorChoice::Never };
    let console = TermLogger::new(level, config.build(), TerminalMode::Stderr, colours);
    log::set_boxed_logger(Box::new(Logger { console }))?;
    log::set_max_level(level);
    Ok(())
}

/// Forwards records to the console with their key-values appended.
struct Logger {
    console: Box<TermLogger>,
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.console.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut fields = Fields(String::new());
        let _ = record.key_values().visit(&mut fields);
        if fields.0.is_empty() {
            return self.console.log(record);
        }
        self.console.log(
            &Record::builder()
                .metadata(record.metadata().clone())
                .args(format_args!("{}{}", record.args(), fields.0))
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

/// Collects ` key=value` pairs; values with spaces or quotes are quoted,
/// empty ones (a field that does not apply) are left out.
struct Fields(String);

impl<'kvs> VisitSource<'kvs> for Fields {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), kv::Error> {
        let text = value.to_string();
        if text.is_empty() {
            return Ok(());
        }
        let result = if text.contains([' ', '"', '=']) {
            write!(self.0, " {key}={text:?}")
        } else {
            write!(self.0, " {key}={text}")
        };
        result.map_err(|fmt::Error| kv::Error::msg("formatting a log field failed"))
    }
}
