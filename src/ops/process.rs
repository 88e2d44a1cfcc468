//! The process figures a thread-per-connection server is judged by, read
//! from `/proc/self` at scrape time: resident and virtual memory, threads,
//! open and maximum file descriptors, CPU time, start time.
//!
//! Linux only (the gateway's platform). Every read is fallible and a missing
//! figure is simply left out of the scrape; nothing here panics.

use std::fs;
use std::sync::OnceLock;

/// One reading of the process figures. `None` where `/proc` did not tell.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessStats {
    /// Resident set size, bytes.
    pub resident_bytes: Option<u64>,
    /// Virtual memory size, bytes.
    pub virtual_bytes: Option<u64>,
    /// OS threads.
    pub threads: Option<u64>,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
    /// Soft limit on open file descriptors.
    pub max_fds: Option<u64>,
    /// User plus system CPU time, seconds.
    pub cpu_seconds: Option<f64>,
    /// Start time, seconds since the Unix epoch.
    pub start_time_seconds: Option<f64>,
}

/// Clock ticks per second in `/proc/*/stat` (`USER_HZ`). The kernel fixes it
/// at 100 for the `/proc` ABI on every architecture goclaw targets (x86_64,
/// aarch64, armv7), whatever the internal `HZ`.
const TICKS_PER_SECOND: f64 = 100.0;

impl ProcessStats {
    /// Reads the figures of the calling process.
    pub fn read() -> ProcessStats {
        let mut stats = ProcessStats::default();
        if let Ok(stat) = fs::read_to_string("/proc/self/stat") {
            stats.apply_stat(&stat, boot_time_seconds());
        }
        if let Ok(status) = fs::read_to_string("/proc/self/status") {
            stats.resident_bytes = status_kib(&status, "VmRSS:").map(|kib| kib * 1024);
        }
        stats.open_fds = fs::read_dir("/proc/self/fd").ok().map(|dir| dir.count() as u64);
        if let Ok(limits) = fs::read_to_string("/proc/self/limits") {
            stats.max_fds = max_open_files(&limits);
        }
        stats
    }

    /// Fills in what `/proc/self/stat` says (proc(5): fields 14, 15, 20, 22, 23).
    fn apply_stat(&mut self, stat: &str, boot_time: Option<u64>) {
        // The command name (field 2) may contain spaces and parentheses; the
        // fields we want follow its last ')'.
        let Some(rest) = stat.rfind(')').and_then(|i| stat.get(i + 1..)) else { return };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // `rest` starts at field 3 (state), so field N is fields[N - 3].
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
        if let (Some(utime), Some(stime)) = (field(14), field(15)) {
            self.cpu_seconds = Some((utime + stime) as f64 / TICKS_PER_SECOND);
        }
        self.threads = field(20);
        if let (Some(start_ticks), Some(boot)) = (field(22), boot_time) {
            self.start_time_seconds = Some(boot as f64 + start_ticks as f64 / TICKS_PER_SECOND);
        }
        self.virtual_bytes = field(23);
    }
}

/// System boot time from `/proc/stat` (`btime`), seconds since the epoch.
/// It never changes, so `/proc/stat` (a long file) is read at the first
/// scrape only.
fn boot_time_seconds() -> Option<u64> {
    static BOOT_TIME: OnceLock<Option<u64>> = OnceLock::new();
    *BOOT_TIME.get_or_init(|| {
        let stat = fs::read_to_string("/proc/stat").ok()?;
        stat.lines().find_map(|line| line.strip_prefix("btime ")).and_then(|v| v.trim().parse().ok())
    })
}

/// The first number after `key` on the line that starts with it: a
/// `Key:   123 kB` line of `/proc/self/status` or `/proc/meminfo`, a limit
/// of `/proc/self/limits`.
pub(crate) fn status_kib(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with(key))?;
    line.get(key.len()..)?.split_whitespace().next()?.parse().ok()
}

/// The soft limit of the `Max open files` line of `/proc/self/limits`.
fn max_open_files(limits: &str) -> Option<u64> {
    status_kib(limits, "Max open files")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_a_hostile_command_name() {
        // pid (comm) state ppid ... : comm may hold spaces and ')'.
        let stat = "42 (a) b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 7 0 1000 123456 300 \
                    18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let mut stats = ProcessStats::default();
        stats.apply_stat(stat, Some(1_700_000_000));
        assert_eq!(stats.cpu_seconds, Some(3.0));
        assert_eq!(stats.threads, Some(7));
        assert_eq!(stats.start_time_seconds, Some(1_700_000_010.0));
        assert_eq!(stats.virtual_bytes, Some(123_456));
        let mut garbage = ProcessStats::default();
        garbage.apply_stat("no parenthesis", None);
        assert_eq!(garbage, ProcessStats::default());
    }

    #[test]
    fn parses_status_and_limits() {
        assert_eq!(status_kib("Name:\tx\nVmRSS:\t    1536 kB\n", "VmRSS:"), Some(1536));
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(max_open_files(limits), Some(1024));
    }

    #[test]
    fn reads_this_process() {
        let stats = ProcessStats::read();
        assert!(stats.resident_bytes.unwrap() > 0);
        assert!(stats.threads.unwrap() >= 1);
        assert!(stats.open_fds.unwrap() >= 3);
        assert!(stats.start_time_seconds.unwrap() > 1_600_000_000.0);
    }
}
