//! A stop request that interrupts sleeps: set once by the signal handler,
//! read by the node agent's loops and the operator's `watch`. Holds no
//! other state and never blocks except in [`Stop::wait`] and [`Stop::sleep`].

use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// A stop request that interrupts sleeps (SIGINT and SIGTERM set it).
#[derive(Debug, Default)]
pub struct Stop {
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl Stop {
    /// Asks everything waiting on this to stop.
    pub fn set(&self) {
        *self.stopped.lock() = true;
        self.wake.notify_all();
    }

    /// Whether a stop was asked for.
    pub fn is_set(&self) -> bool {
        *self.stopped.lock()
    }

    /// Waits until a stop is asked for.
    pub fn wait(&self) {
        let mut stopped = self.stopped.lock();
        while !*stopped {
            self.wake.wait(&mut stopped);
        }
    }

    /// Sleeps for `duration` unless a stop comes first; true if it did.
    pub fn sleep(&self, duration: Duration) -> bool {
        let until = Instant::now() + duration;
        let mut stopped = self.stopped.lock();
        while !*stopped && !self.wake.wait_until(&mut stopped, until).timed_out() {}
        *stopped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::thread;

    #[test]
    fn stop_interrupts_a_sleep() {
        let stop = Arc::new(Stop::default());
        let setter = stop.clone();
        let started = Instant::now();
        let handle = thread::spawn(move || {
            thread::sleep(Duration::from_millis(50));
            setter.set();
        });
        assert!(stop.sleep(Duration::from_secs(10)));
        assert!(started.elapsed() < Duration::from_secs(5));
        handle.join().unwrap();
        assert!(stop.sleep(Duration::from_secs(10)), "stays stopped");
    }
}
