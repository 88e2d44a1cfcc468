//! Thread bookkeeping shared by the gateway and the metrics listener:
//! connection slots that bound how many threads run, and the join handles
//! of those threads. Never blocks except in the explicit waits, and never
//! holds a lock while joining.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::thread::{self, JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use log::info;
use parking_lot::{Condvar, Mutex};

use crate::util::maps::shrink_if_sparse;

/// Counts connection threads against `--max-connections`; lets shutdown
/// wait for the count to reach zero.
#[derive(Debug)]
pub struct Slots {
    max: usize,
    active: AtomicUsize,
    idle_lock: Mutex<()>,
    idle: Condvar,
}

impl Slots {
    /// `max` slots, none in use.
    pub fn new(max: usize) -> Slots {
        Slots { max, active: AtomicUsize::new(0), idle_lock: Mutex::new(()), idle: Condvar::new() }
    }

    /// Takes a slot, unless all are in use.
    pub fn try_acquire(&self) -> bool {
        self.active.fetch_update(SeqCst, SeqCst, |n| (n < self.max).then_some(n + 1)).is_ok()
    }

    /// Takes a slot as soon as one frees, looking every millisecond until
    /// `deadline` (for a caller that has just cut a connection to make
    /// room); false if none freed by then.
    pub fn acquire_before(&self, deadline: Instant) -> bool {
        while !self.try_acquire() {
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(1));
        }
        true
    }

    /// Gives a slot back; returns how many remain in use.
    pub fn release(&self) -> usize {
        let left = self.active.fetch_sub(1, SeqCst).saturating_sub(1);
        if left == 0 {
            let _guard = self.idle_lock.lock();
            self.idle.notify_all();
        }
        left
    }

    /// Slots in use.
    pub fn active(&self) -> usize {
        self.active.load(SeqCst)
    }

    /// Waits until no slot is in use or `deadline` passes; true if idle.
    pub fn wait_idle(&self, deadline: Instant) -> bool {
        let mut guard = self.idle_lock.lock();
        while self.active() > 0 {
            if self.idle.wait_until(&mut guard, deadline).timed_out() {
                return self.active() == 0;
            }
        }
        true
    }
}

/// Join handles of connection threads, by thread. A finished thread
/// reports itself; the accept and heartbeat threads join finished threads
/// promptly, so neither handles nor exited threads' stacks pile up under
/// churn. A thread may start the next one of the same connection before
/// it ends (the handshake thread starts the session thread).
#[derive(Debug, Default)]
pub struct ConnThreads {
    inner: Mutex<ThreadsInner>,
}

#[derive(Debug, Default)]
struct ThreadsInner {
    handles: HashMap<ThreadId, JoinHandle<()>>,
    /// Threads that have finished (or are finishing).
    finished: Vec<ThreadId>,
    /// Threads that end holding no connection (a handshake thread that
    /// waited in vain for the next one): joined, but not counted by
    /// [`ConnThreads::join_all`]. Emptied as they are joined.
    idle: Vec<ThreadId>,
}

impl ConnThreads {
    /// Records a started thread.
    pub fn insert(&self, handle: JoinHandle<()>) {
        self.inner.lock().handles.insert(handle.thread().id(), handle);
    }

    /// Called by a connection thread as its last act: it is about to end.
    pub fn finished(&self) {
        self.inner.lock().finished.push(thread::current().id());
    }

    /// Called by a thread that ends holding no connection, before it
    /// reports itself finished.
    pub fn ending_idle(&self) {
        self.inner.lock().idle.push(thread::current().id());
    }

    /// Reports the calling thread finished when dropped, unwinding
    /// included: the first thing a thread's function makes, so it is the
    /// last thing dropped.
    pub fn report_on_exit(&self) -> ReportOnExit<'_> {
        ReportOnExit(self)
    }

    /// Joins the threads that have finished.
    pub fn reap(&self) {
        let done: Vec<JoinHandle<()>> = {
            let mut inner = self.inner.lock();
            let ThreadsInner { handles, finished, idle } = &mut *inner;
            let mut done = Vec::new();
            // A thread may report before its handle is recorded; keep it until then.
            finished.retain(|key| match handles.remove(key) {
                Some(handle) => {
                    done.push(handle);
                    false
                }
                None => true,
            });
            idle.retain(|key| handles.contains_key(key));
            shrink_if_sparse(handles);
            done
        };
        for handle in done {
            join(handle);
        }
    }

    /// Joins every thread, and every thread they start before they end;
    /// returns how many of them ended on a connection's work (threads
    /// that reported [`ConnThreads::ending_idle`] are not counted).
    pub fn join_all(&self) -> usize {
        let mut count = 0;
        loop {
            let handles: Vec<JoinHandle<()>> = {
                let mut inner = self.inner.lock();
                inner.finished.clear();
                inner.handles.drain().map(|(_, h)| h).collect()
            };
            if handles.is_empty() {
                return count;
            }
            for handle in handles {
                let id = handle.thread().id();
                join(handle);
                // The thread has ended, so it said by now whether it was idle.
                let mut inner = self.inner.lock();
                match inner.idle.iter().position(|&key| key == id) {
                    Some(at) => {
                        inner.idle.swap_remove(at);
                    }
                    None => count += 1,
                }
            }
        }
    }
}

/// See [`ConnThreads::report_on_exit`].
#[derive(Debug)]
pub struct ReportOnExit<'a>(&'a ConnThreads);

impl Drop for ReportOnExit<'_> {
    fn drop(&mut self) {
        self.0.finished();
    }
}

fn join(handle: JoinHandle<()>) {
    let name = handle.thread().name().unwrap_or("?").to_string();
    if handle.join().is_err() {
        // The panic message was already printed by the panic hook; the
        // connection's guards cleaned up during unwinding.
        info!(thread:% = name; "joined a connection thread that panicked");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    /// A thread that starts the next one before it ends (as a connection's
    /// handshake thread starts its session thread): both are joined,
    /// whether they are reaped as they finish or joined at shutdown.
    #[test]
    fn a_thread_handed_over_to_is_joined_too() {
        for at_shutdown in [false, true] {
            let threads = Arc::new(ConnThreads::default());
            let first = {
                let threads = threads.clone();
                thread::spawn(move || {
                    let next = threads.clone();
                    threads.insert(thread::spawn(move || next.finished()));
                    threads.finished();
                })
            };
            threads.insert(first);
            if at_shutdown {
                assert_eq!(threads.join_all(), 2);
            } else {
                let deadline = Instant::now() + Duration::from_secs(10);
                while !threads.inner.lock().handles.is_empty() || !threads.inner.lock().finished.is_empty() {
                    assert!(Instant::now() < deadline, "not reaped: {:?}", threads.inner.lock());
                    threads.reap();
                    thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
}
