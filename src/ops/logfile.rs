//! The JSON log file, `STATE_DIR/logs/goclaw.log`: whole lines appended
//! by one writer thread in batches, rotated by size into gzip backups,
//! pruned by age. Every call into file-rotate (which panics when files
//! vanish under it) is guarded and the file reopened. Never called from a
//! connection thread: they only queue lines (`ops::logging`).

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::Receiver;
use std::thread;
use std::time::{Duration, Instant};

use file_rotate::compression::Compression;
use file_rotate::suffix::AppendCount;
use file_rotate::{ContentLimit, FileRotate};

/// Name of the log file inside `STATE_DIR/logs`.
pub const LOG_FILE_NAME: &str = "goclaw.log";
/// Pause between two batches of the writer thread.
const BATCH_PAUSE: Duration = Duration::from_millis(20);
/// Largest batch written at once; whole lines only.
const BATCH_BYTES: usize = 64 * 1024;
/// The batch buffer kept between bursts of lines.
const BATCH_KEEP_BYTES: usize = 16 * 1024;
/// How often the writer checks for backups past their age.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Rotation limits of the log file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimits {
    /// Rotate once the file passes this size (whole lines are kept together).
    pub max_file_bytes: usize,
    /// Rotated files kept, gzip-compressed.
    pub backups: usize,
    /// Rotated files older than this (by modification time) are deleted.
    pub max_age: Duration,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits { max_file_bytes: 10 * 1000 * 1000, backups: 3, max_age: Duration::from_secs(28 * 24 * 3600) }
    }
}

/// The writer thread: lines from the queue into the file until an empty
/// line (the shutdown signal) or the queue closes.
///
/// It takes what is queued in batches and pauses between them, so a burst
/// of connections costs one wake-up and one write per [`BATCH_PAUSE`]
/// rather than a futex wake and a context switch per line.
pub fn write_lines(mut json: JsonLog, lines: &Receiver<Vec<u8>>, dropped: &AtomicU64) {
    let mut batch = Vec::with_capacity(BATCH_KEEP_BYTES);
    let mut stopping = false;
    while !stopping {
        // Block for the first line, then take whatever else is waiting.
        let Ok(first) = lines.recv() else { break };
        let mut next = Some(first);
        while let Some(line) = next {
            if line.is_empty() {
                stopping = true;
                break;
            }
            batch.extend_from_slice(&line);
            next = if batch.len() < BATCH_BYTES { lines.try_recv().ok() } else { None };
        }
        let lost = dropped.swap(0, Relaxed);
        if lost > 0 {
            let note = format!(
                "{{\"time\":\"{}\",\"level\":\"warn\",\"msg\":\"log lines dropped: the log file could not keep up\",\
                 \"target\":\"goclaw::logging\",\"dropped\":{lost}}}\n",
                chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            );
            batch.extend_from_slice(note.as_bytes());
        }
        if let Err(e) = json.write_line(&batch) {
            log::warn!(target: "goclaw::logging", error:% = e; "cannot write the log file any more; logging to the console only");
            // Returning drops the queue's receiver: from now on the loggers'
            // try_send fails quietly and finish() has nobody to wait for.
            return;
        }
        batch.clear();
        // A burst of lines (400 clients leaving at once) grows the buffer
        // past BATCH_BYTES; give that back, or it stays resident.
        batch.shrink_to(BATCH_KEEP_BYTES);
        if !stopping {
            thread::sleep(BATCH_PAUSE);
        }
    }
    json.flush();
}

/// The JSON log file: appends whole lines, rotates and prunes. Owned by the
/// writer thread (or a test).
pub struct JsonLog {
    path: PathBuf,
    limits: LogLimits,
    file: Option<FileRotate<AppendCount>>,
    last_prune: Instant,
}

impl fmt::Debug for JsonLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonLog").field("path", &self.path).field("limits", &self.limits).finish_non_exhaustive()
    }
}

impl JsonLog {
    /// Opens (or creates) `dir/goclaw.log` for appending and prunes backups
    /// past their age.
    ///
    /// # Errors
    /// The directory cannot be created or the file cannot be opened for
    /// writing.
    pub fn open(dir: &Path, limits: LogLimits) -> io::Result<JsonLog> {
        fs::create_dir_all(dir)?;
        let path = dir.join(LOG_FILE_NAME);
        // Proves the file is writable before file-rotate (which panics) sees it.
        OpenOptions::new().create(true).append(true).open(&path)?;
        let mut log = JsonLog { path, limits, file: None, last_prune: Instant::now() };
        log.prune();
        log.reopen()?;
        Ok(log)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends whole lines (each ending in `\n`), rotating first if the file
    /// is full. A failure reopens the file and tries once more.
    ///
    /// # Errors
    /// The file cannot be written even after reopening it.
    pub fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        if line.is_empty() {
            return Ok(());
        }
        if self.last_prune.elapsed() >= PRUNE_EVERY {
            self.prune();
        }
        if self.try_write(line).is_ok() {
            return Ok(());
        }
        self.reopen()?;
        self.try_write(line)
    }

    /// Flushes what was written.
    pub fn flush(&mut self) {
        if let Some(file) = self.file.as_mut() {
            let _ = catch_unwind(AssertUnwindSafe(|| file.flush()));
        }
    }

    /// Deletes rotated files older than the age limit, then rescans.
    pub fn prune(&mut self) {
        self.last_prune = Instant::now();
        let (Some(dir), Some(name)) = (self.path.parent(), self.path.file_name()) else { return };
        let prefix = format!("{}.", name.to_string_lossy());
        let Ok(entries) = fs::read_dir(dir) else { return };
        let mut removed = false;
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let is_backup = file_name.to_string_lossy().strip_prefix(&prefix).is_some_and(|suffix| {
                let number = suffix.strip_suffix(".gz").unwrap_or(suffix);
                !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit())
            });
            let age = entry.metadata().and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok());
            if is_backup && age.is_some_and(|age| age > self.limits.max_age) {
                removed |= fs::remove_file(entry.path()).is_ok();
            }
        }
        if removed && self.file.is_some() {
            // file-rotate remembers which backups exist; let it look again.
            let _ = self.reopen();
        }
    }

    fn try_write(&mut self, line: &[u8]) -> io::Result<()> {
        let file = self.file.as_mut().ok_or_else(|| io::Error::other("log file not open"))?;
        match catch_unwind(AssertUnwindSafe(|| file.write_all(line))) {
            Ok(result) => result,
            Err(_) => Err(io::Error::other("file-rotate panicked")),
        }
    }

    fn reopen(&mut self) -> io::Result<()> {
        self.file = None;
        let (path, limits) = (self.path.clone(), self.limits);
        let opened = catch_unwind(move || {
            FileRotate::new(
                path,
                AppendCount::new(limits.backups),
                ContentLimit::BytesSurpassed(limits.max_file_bytes.max(1)),
                // Every rotated file is compressed at once.
                Compression::OnRotate(0),
                None,
            )
        });
        self.file = Some(opened.map_err(|_| io::Error::other("cannot open the log file for rotation"))?);
        Ok(())
    }
}
