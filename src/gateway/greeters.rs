//! Handshake threads waiting for their next connection. A connection's
//! handshake runs on a thread of its own, which hands the connection to a
//! fresh session thread when `connect` succeeds (`conn.rs`); rather than
//! end there, that thread waits a moment for the next accepted connection.
//! A stream of connections then costs one thread start each, not two:
//! starting a thread and unmapping its stack cost about as much as the
//! rest of the handshake (docs/BENCHMARKS.md). Never holds its lock while
//! a handshake runs; never keeps more than [`MAX_WAITING`] threads
//! waiting, nor any past [`IDLE`]; a waiting thread is given at most one
//! handshake.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// How long a handshake thread waits for the next connection before it
/// ends: long enough to serve a burst of connections without a thread
/// start each, short enough that the threads of a burst are gone (and
/// their stacks unmapped) right after it.
pub const IDLE: Duration = Duration::from_millis(500);
/// Most handshake threads waiting at once. A handshake takes milliseconds,
/// so a few waiting threads serve hundreds of connections a second; each
/// more would hold a kernel stack and a thread that `TasksMax` counts
/// (goclaw.service leaves room for these beside one per connection).
pub const MAX_WAITING: usize = 8;

/// One connection's handshake, to run on a handshake thread.
pub type Handshake = Box<dyn FnOnce() + Send>;

/// What a handshake thread done with its connection is told to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Next<T> {
    /// Greet this connection.
    Job(T),
    /// End: it waited and none came within [`IDLE`], or shutdown woke it.
    /// It holds no connection.
    Idle,
    /// End now, straight from its last connection, without waiting:
    /// shutdown has begun, or [`MAX_WAITING`] threads wait already.
    End,
}

/// Handshake threads that are waiting, and the handshakes given to them.
pub struct Greeters<T = Handshake> {
    state: Mutex<State<T>>,
    wake: Condvar,
}

/// Invariant: `jobs.len() <= idle`; every job has a waiting thread that
/// will take it.
struct State<T> {
    idle: usize,
    jobs: VecDeque<T>,
    stopped: bool,
}

impl<T> Default for Greeters<T> {
    fn default() -> Self {
        Greeters { state: Mutex::new(State { idle: 0, jobs: VecDeque::new(), stopped: false }), wake: Condvar::new() }
    }
}

impl<T> std::fmt::Debug for Greeters<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state.lock();
        f.debug_struct("Greeters").field("idle", &state.idle).field("given", &state.jobs.len()).finish()
    }
}

impl<T> Greeters<T> {
    /// Gives `job` to a waiting handshake thread; returns it when none is
    /// waiting (then the caller starts one).
    pub fn offer(&self, job: T) -> Result<(), T> {
        let mut state = self.state.lock();
        if state.stopped || state.jobs.len() >= state.idle {
            return Err(job);
        }
        state.jobs.push_back(job);
        self.wake.notify_one();
        Ok(())
    }

    /// Called by a handshake thread done with its connection: the next
    /// connection given to it within [`IDLE`], or the end.
    pub fn next(&self) -> Next<T> {
        let deadline = Instant::now() + IDLE;
        let mut state = self.state.lock();
        if state.stopped || state.idle >= MAX_WAITING {
            return Next::End;
        }
        state.idle += 1;
        loop {
            if let Some(job) = state.jobs.pop_front() {
                state.idle -= 1;
                return Next::Job(job);
            }
            if state.stopped || self.wake.wait_until(&mut state, deadline).timed_out() && state.jobs.is_empty() {
                state.idle -= 1;
                if state.jobs.is_empty() {
                    state.jobs.shrink_to_fit();
                }
                return Next::Idle;
            }
        }
    }

    /// Shutdown: waiting threads end now, and no job is taken any more.
    pub fn stop(&self) {
        self.state.lock().stopped = true;
        self.wake.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::thread;

    #[test]
    fn a_job_goes_to_a_waiting_thread_or_back_to_the_caller() {
        let greeters = Arc::new(Greeters::default());
        assert_eq!(greeters.offer(1), Err(1), "nobody waiting");
        let waiting = {
            let greeters = greeters.clone();
            thread::spawn(move || greeters.next())
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while greeters.state.lock().idle == 0 {
            assert!(Instant::now() < deadline);
            thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(greeters.offer(2), Ok(()));
        assert_eq!(greeters.offer(3), Err(3), "one waiting thread, one job");
        assert_eq!(waiting.join().unwrap(), Next::Job(2));
        let started = Instant::now();
        assert_eq!(greeters.next(), Next::Idle, "nothing offered");
        assert!(started.elapsed() >= IDLE);
        let state = greeters.state.lock();
        assert_eq!((state.idle, state.jobs.len()), (0, 0));
    }

    #[test]
    fn at_most_max_waiting_threads_wait() {
        let greeters = Arc::new(Greeters::<u32>::default());
        let waiting: Vec<_> = (0..MAX_WAITING)
            .map(|_| {
                let greeters = greeters.clone();
                thread::spawn(move || greeters.next())
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        while greeters.state.lock().idle < MAX_WAITING {
            assert!(Instant::now() < deadline);
            thread::sleep(Duration::from_millis(1));
        }
        let started = Instant::now();
        assert_eq!(greeters.next(), Next::End);
        assert!(started.elapsed() < IDLE, "one more waited");
        for thread in waiting {
            assert_eq!(thread.join().unwrap(), Next::Idle);
        }
    }

    #[test]
    fn stop_ends_the_wait_at_once() {
        let greeters = Arc::new(Greeters::<u32>::default());
        let waiting = {
            let greeters = greeters.clone();
            thread::spawn(move || greeters.next())
        };
        greeters.stop();
        // Idle if it was waiting when stopped, End if it came after.
        assert_ne!(waiting.join().unwrap(), Next::Job(1));
        assert_eq!(greeters.next(), Next::End, "no wait once stopped");
        assert_eq!(greeters.offer(1), Err(1));
    }
}
