//! The heartbeat thread: the gateway's one timer. Pings and ticks every
//! client, times out invokes, flushes backlogged outboxes and cuts those
//! stalled past `--write-wait`, enforces close deadlines, evicts idle rate
//! buckets, joins finished connection threads, and keeps systemd's watchdog
//! and status line current.
//!
//! It serves everybody, so it never blocks on a client: every send is a
//! non-blocking outbox send, and a client that cannot take a frame is
//! queued or cut, never waited for.

use std::sync::Arc;
use std::time::{Duration, Instant};

use log::warn;

use crate::gateway::outbox::Flush;
use crate::gateway::payload::{self, Tick};
use crate::gateway::peer::Conn;
use crate::gateway::send::Answer;
use crate::gateway::state::Shared;
use crate::ops::metrics::{ErrorType, MsgType};
use crate::util::unix_ms;
use crate::wire::frame::{self, ErrorCode};
use crate::wire::ws::{OP_PING, control_frame};

/// How often a backlogged outbox is retried. Only while some client has
/// output the kernel did not take; otherwise the heartbeat sleeps until its
/// next timer.
const FLUSH_RETRY: Duration = Duration::from_millis(5);
/// Period of housekeeping: bucket eviction and thread reaping.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Runs until the gateway's waker is stopped.
pub fn run(shared: Arc<Shared>) {
    let config = &shared.config;
    let start = Instant::now();
    let mut next_ping = start + config.ping_period;
    let mut next_tick = start + config.tick_interval;
    let mut next_sweep = start + SWEEP_EVERY;
    let watchdog = shared.notifier.watchdog_interval();
    let mut next_watchdog = watchdog.map(|interval| start + interval);
    let mut reported_active = 0;
    let ping = control_frame(OP_PING, b"");
    let mut clients: Vec<Arc<Conn>> = Vec::new();
    let mut backlog: Vec<Arc<Conn>> = Vec::new();
    while !shared.waker.stopped() {
        let now = Instant::now();
        // No pings or ticks once shutdown began: only the shutdown event and
        // close frames may reach clients then.
        let live = !shared.is_draining();
        if now >= next_ping {
            next_ping = now + config.ping_period;
            if live {
                shared.hub.clients(&mut clients);
                for client in &clients {
                    shared.send(client, &ping, MsgType::Ping);
                }
            }
        }
        if now >= next_tick {
            next_tick = now + config.tick_interval;
            if live {
                let tick = frame::event_prefix("tick", &payload::encode(&Tick { ts: unix_ms() }));
                shared.hub.clients(&mut clients);
                for client in &clients {
                    shared.send_event(client, &tick);
                }
            }
        }
        clients.clear();
        for pending in shared.hub.expire(now) {
            shared.answer(pending, Answer::Gateway(ErrorCode::Timeout, "the node did not answer in time"));
        }
        flush(&shared, &mut backlog, now);
        let next_close = cut_unanswered_closes(&shared, now);
        if now >= next_sweep {
            next_sweep = now + SWEEP_EVERY;
            shared.limiter.evict_idle(now);
            shared.hub.shrink();
            shared.threads.reap();
            let active = shared.slots.active();
            if active != reported_active && live {
                reported_active = active;
                let (clients, nodes) = shared.hub.counts();
                shared.notifier.notify(&format!("STATUS={active} connections, {clients} clients, {nodes} nodes"));
            }
        }
        // Sent from this thread on purpose: if the heartbeat wedges, systemd
        // stops hearing from us and restarts the gateway.
        if let (Some(interval), Some(due)) = (watchdog, next_watchdog)
            && now >= due
        {
            shared.notifier.notify("WATCHDOG=1");
            next_watchdog = Some(now + interval);
        }

        let mut wake_at = next_ping.min(next_tick).min(next_sweep);
        if let Some(due) = next_watchdog {
            wake_at = wake_at.min(due);
        }
        if let Some(deadline) = shared.hub.next_deadline() {
            wake_at = wake_at.min(deadline);
        }
        if let Some(deadline) = next_close {
            wake_at = wake_at.min(deadline);
        }
        if !backlog.is_empty() {
            wake_at = wake_at.min(now + FLUSH_RETRY);
        }
        shared.waker.sleep_until(wake_at);
    }
}

/// Retries every backlogged outbox once; cuts those stalled past the write
/// deadline.
fn flush(shared: &Shared, backlog: &mut Vec<Arc<Conn>>, now: Instant) {
    backlog.append(&mut shared.flush_list.lock());
    let write_wait = shared.config.write_wait;
    backlog.retain(|conn| match conn.out.flush(now, write_wait) {
        Flush::Pending => true,
        Flush::Empty | Flush::Dead => false,
        Flush::Stalled => {
            shared.metrics.error(ErrorType::Timeout);
            warn!(target: "goclaw::conn", conn_id:% = conn.id, addr:% = conn.addr,
                write_wait_ms = write_wait.as_millis() as u64; "write timed out: slow consumer cut");
            conn.out.abort();
            false
        }
    });
}

/// Cuts clients that did not answer a close sent from another thread in
/// time; returns the next such deadline.
fn cut_unanswered_closes(shared: &Shared, now: Instant) -> Option<Instant> {
    let mut closing = shared.closing.lock();
    while let Some((deadline, conn)) = closing.front() {
        if *deadline > now {
            return Some(*deadline);
        }
        // Harmless if its thread already ended: the socket is shut down twice.
        conn.out.abort();
        closing.pop_front();
    }
    None
}
