//! The heartbeat's wake-up: anyone with new work for the heartbeat (output
//! to flush, an earlier invoke deadline, a close to enforce, shutdown)
//! wakes it without waiting for its next timer. A mutex-guarded flag and a
//! condition variable; never held across anything else.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

/// Wakes the heartbeat thread early: new output to flush, an invoke deadline
/// earlier than its next wake, a close to enforce, or shutdown.
#[derive(Debug)]
pub struct Waker {
    notified: Mutex<bool>,
    cv: Condvar,
    stop: AtomicBool,
    base: Instant,
    /// The heartbeat's next planned wake, in ms since `base`.
    next_wake_ms: AtomicU64,
}

impl Default for Waker {
    fn default() -> Self {
        Waker {
            notified: Mutex::new(false),
            cv: Condvar::new(),
            stop: AtomicBool::new(false),
            base: Instant::now(),
            next_wake_ms: AtomicU64::new(0),
        }
    }
}

impl Waker {
    /// Wakes the heartbeat now.
    pub fn wake(&self) {
        *self.notified.lock() = true;
        self.cv.notify_one();
    }

    /// Wakes the heartbeat if `at` is before its planned wake, or if it is
    /// between two sleeps and may already have planned past `at`.
    pub fn wake_by(&self, at: Instant) {
        let at_ms = u64::try_from(at.saturating_duration_since(self.base).as_millis()).unwrap_or(u64::MAX);
        let planned = self.next_wake_ms.load(SeqCst);
        if planned == 0 || at_ms < planned {
            self.wake();
        }
    }

    /// Asks the heartbeat to stop.
    pub fn stop(&self) {
        self.stop.store(true, SeqCst);
        self.wake();
    }

    /// Whether the heartbeat was asked to stop.
    pub fn stopped(&self) -> bool {
        self.stop.load(SeqCst)
    }

    /// Sleeps until `at` or an earlier wake.
    pub fn sleep_until(&self, at: Instant) {
        // At least 1: 0 means "awake" to wake_by.
        let at_ms = u64::try_from(at.saturating_duration_since(self.base).as_millis()).unwrap_or(u64::MAX).max(1);
        self.next_wake_ms.store(at_ms, SeqCst);
        let mut notified = self.notified.lock();
        if !*notified {
            let _ = self.cv.wait_until(&mut notified, at);
        }
        *notified = false;
        self.next_wake_ms.store(0, SeqCst);
    }
}
