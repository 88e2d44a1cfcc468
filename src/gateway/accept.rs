//! The accept thread: refuses what it can without a thread (per-IP rate
//! limit, unauthenticated connections per source, `--max-connections`,
//! shutdown), makes room at the cap by cutting the connection that has gone
//! longest without authenticating, and starts one thread per admitted
//! connection. Never reads from a client and never waits on one.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::thread;
use std::time::{Duration, Instant};

use log::{debug, warn};

use crate::gateway::conn;
use crate::gateway::limits::PREAUTH_RETRY;
use crate::gateway::state::Shared;
use crate::ops::metrics::ErrorType;
use crate::wire::http::{self, Refusal};
use crate::wire::net::{self, ACCEPT_ERROR_PAUSE};

/// At `--max-connections`, a connection that has not completed `connect`
/// this long after accept may be cut to make room: a real client takes
/// milliseconds, one holding a slot through the handshake timeout does not.
pub const UNAUTHENTICATED_GRACE: Duration = Duration::from_secs(1);
/// How long the accept thread waits for a cut connection's slot to free.
const ROOM_WAIT: Duration = Duration::from_millis(100);

/// Accepts until `stop` is set; while shutdown drains the clients, every
/// new connection is answered 503 (SPEC §3) rather than left unanswered.
pub fn accept_loop(shared: &Arc<Shared>, listener: &TcpListener, stop: &AtomicBool) {
    loop {
        let accepted = listener.accept();
        if stop.load(SeqCst) {
            return;
        }
        if shared.is_draining() {
            if let Ok((stream, _)) = accepted {
                shared.metrics.refused(Refusal::ShuttingDown);
                http::refuse_now(&stream, Refusal::ShuttingDown);
            }
            continue;
        }
        match accepted {
            Ok((stream, addr)) => admit(shared, stream, addr),
            Err(e) => {
                shared.metrics.error(ErrorType::Io);
                warn!(error:% = e; "accept failed");
                thread::sleep(ACCEPT_ERROR_PAUSE);
            }
        }
        shared.threads.reap();
    }
}

/// Checks an accepted connection against the limits and starts its thread.
fn admit(shared: &Arc<Shared>, stream: TcpStream, addr: SocketAddr) {
    let accepted = Instant::now();
    let refuse = |stream: &TcpStream, refusal: Refusal| {
        shared.metrics.refused(refusal);
        debug!(addr:% = addr, refusal:? = refusal; "connection refused");
        http::refuse_now(stream, refusal);
    };
    // A trusted proxy's connections are counted under the client it names,
    // once the handshake has read its request (`handshake::upgrade`).
    let counted = (!shared.config.trusted_proxies.contains(addr.ip())).then_some(addr.ip());
    if let Some(ip) = counted {
        if let Err(wait) = shared.limiter.check(ip, accepted) {
            return refuse(&stream, Refusal::RateLimited(wait));
        }
        if !shared.preauth.enter(ip) {
            return refuse(&stream, Refusal::RateLimited(PREAUTH_RETRY));
        }
    }
    let uncount = || {
        if let Some(ip) = counted {
            shared.preauth.leave(ip);
        }
    };
    if !shared.slots.try_acquire() && !make_room(shared, accepted) {
        uncount();
        return refuse(&stream, Refusal::AtCapacity);
    }
    if let Err(e) = net::configure(&stream, shared.config.write_wait) {
        shared.slots.release();
        uncount();
        debug!(addr:% = addr, error:% = e; "connection lost at accept");
        return;
    }
    if let Err(conn) = conn::spawn(shared, stream, addr, accepted, counted) {
        warn!(addr:% = addr, active = shared.slots.active(); "cannot start a connection thread");
        refuse(conn.out.stream(), Refusal::AtCapacity);
    }
}

/// Every slot is taken: cuts the connection that has gone longest without
/// completing `connect`, if it has had [`UNAUTHENTICATED_GRACE`], and takes
/// its slot once its thread lets go. So connections held open before
/// `connect` from however many addresses cannot keep authenticated clients
/// out (SPEC §5). False if none qualifies or the slot did not free in time.
fn make_room(shared: &Shared, now: Instant) -> bool {
    let Some(oldest) = now.checked_sub(UNAUTHENTICATED_GRACE).and_then(|before| shared.hub.oldest_waiting(before))
    else {
        return false;
    };
    shared.metrics.error(ErrorType::Capacity);
    debug!(conn_id:% = oldest.id, addr:% = oldest.addr; "cut before connect to make room");
    oldest.out.cut();
    shared.slots.acquire_before(Instant::now() + ROOM_WAIT)
}
