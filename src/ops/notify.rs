//! systemd's notify protocol (sd_notify(3)): `READY=1`, `STATUS=`,
//! `WATCHDOG=1`, `STOPPING=1`, as one datagram to `$NOTIFY_SOCKET` over
//! std's `UnixDatagram`. Best effort and non-blocking: a full receiver
//! drops the message rather than stalling the heartbeat; without
//! `$NOTIFY_SOCKET` nothing is sent.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Where to tell systemd about our state, if anywhere.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`, `$WATCHDOG_USEC` and `$WATCHDOG_PID`.
    pub fn from_env() -> Notifier {
        let var = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
        Notifier::new(var("NOTIFY_SOCKET").as_deref(), var("WATCHDOG_USEC").as_deref(), var("WATCHDOG_PID").as_deref())
    }

    /// A notifier for these values of the three variables; unusable values
    /// mean "not under systemd" rather than an error.
    pub fn new(socket: Option<&str>, watchdog_usec: Option<&str>, watchdog_pid: Option<&str>) -> Notifier {
        let target = socket.and_then(|path| {
            let datagram = UnixDatagram::unbound().ok()?;
            // A full receive queue must not stall the heartbeat: drop the
            // message instead (the next watchdog ping comes soon enough).
            datagram.set_nonblocking(true).ok()?;
            Some((datagram, address(path).ok()?))
        });
        // The watchdog is ours only if WATCHDOG_PID is unset or names us.
        let ours = watchdog_pid.is_none_or(|pid| pid.parse() == Ok(std::process::id()));
        let watchdog = watchdog_usec
            .and_then(|usec| usec.parse::<u64>().ok())
            .filter(|&usec| usec > 0 && ours && target.is_some())
            // sd_watchdog_enabled(3): ping at half the interval.
            .map(|usec| Duration::from_micros(usec / 2));
        Notifier { target, watchdog }
    }

    /// How often the heartbeat must send `WATCHDOG=1`, if systemd asked.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Sends `state` (newline-separated `KEY=VALUE` lines). Best effort.
    pub fn notify(&self, state: &str) {
        if let Some((socket, addr)) = &self.target {
            let _ = socket.send_to_addr(state.as_bytes(), addr);
        }
    }
}

/// `$NOTIFY_SOCKET` as an address: a filesystem path, or `@name` for the
/// abstract namespace.
fn address(socket: &str) -> io::Result<SocketAddr> {
    match socket.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes()),
        None if socket.starts_with('/') => SocketAddr::from_pathname(socket),
        None => Err(io::Error::new(io::ErrorKind::InvalidInput, "NOTIFY_SOCKET is neither a path nor @name")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_path_and_to_an_abstract_name() {
        let dir = std::env::temp_dir().join(format!("goclaw-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let by_path = UnixDatagram::bind(&path).unwrap();
        let name = format!("goclaw-notify-test-{}", std::process::id());
        let by_name = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
        for (socket, receiver) in [(path.to_str().unwrap().to_string(), &by_path), (format!("@{name}"), &by_name)] {
            let notifier = Notifier::new(Some(&socket), Some("2000000"), None);
            assert_eq!(notifier.watchdog_interval(), Some(Duration::from_secs(1)));
            notifier.notify("READY=1\nSTATUS=ok");
            let mut buf = [0u8; 64];
            let n = receiver.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"READY=1\nSTATUS=ok");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_full_receiver_never_blocks_the_sender() {
        let name = format!("goclaw-notify-full-{}", std::process::id());
        let _receiver = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
        let notifier = Notifier::new(Some(&format!("@{name}")), None, None);
        let started = std::time::Instant::now();
        for _ in 0..10_000 {
            notifier.notify("WATCHDOG=1");
        }
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn nothing_without_a_socket_or_for_another_pid() {
        let none = Notifier::new(None, Some("1000000"), None);
        assert_eq!(none.watchdog_interval(), None);
        none.notify("READY=1");
        let other = Notifier::new(Some("@x"), Some("1000000"), Some("1"));
        assert_eq!(other.watchdog_interval(), None);
        assert!(Notifier::new(Some("relative"), None, None).target.is_none());
    }
}
