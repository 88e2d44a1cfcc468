//! One connection's threads, from accept to close: starting them, their
//! guard, and the life of the connection: the handshake of `handshake.rs`
//! on a handshake thread, then the request loop of `session.rs` on a
//! thread of its own, over the socket of `transport.rs`.
//!
//! A connection has one thread at a time: the handshake thread starts the
//! session thread as its last act for that connection, then waits briefly
//! for another connection to greet (`greeters.rs`) or ends. The thread a
//! connection is on is the only reader of its socket and never waits for
//! another client: everything it sends to others goes through their
//! non-blocking outboxes. The [`ConnGuard`] passes from the first thread to
//! the second and releases the slot and every registry entry on the way
//! out, on a panic too. Nothing a client sends is unwrapped.

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use log::{Level, info, log};
use tungstenite::protocol::{Role as WsRole, WebSocket};
use uuid::Uuid;

use crate::gateway::greeters::{Handshake, Next};
use crate::gateway::handshake::{self, Who};
use crate::gateway::limits::{Meter, Rate};
use crate::gateway::outbox::Outbox;
use crate::gateway::peer::Conn;
use crate::gateway::send::Answer;
use crate::gateway::session::Session;
use crate::gateway::state::Shared;
use crate::gateway::transport::{End, Transport, Ws, close_for_shutdown};
use crate::wire::frame::{ErrorCode, Role};
use crate::wire::net;

/// Stack reserved for each of a connection's threads. The deepest path
/// (serde parsing `connect` params in a debug build, about 46 KiB) stays
/// well below it; only the pages actually touched count towards memory.
pub const CONN_STACK_BYTES: usize = 128 * 1024;

/// Starts the handshake of an accepted connection whose slot is taken, on
/// a waiting handshake thread or a new one.
///
/// # Errors
/// No thread was waiting and none could be started; the slot is released
/// and the caller gets the connection back to refuse it.
pub fn spawn(
    shared: &Arc<Shared>,
    stream: TcpStream,
    addr: SocketAddr,
    accepted: Instant,
    counted: Option<IpAddr>,
) -> Result<(), Arc<Conn>> {
    let id = Uuid::new_v4();
    let key = shared.next_key();
    let conn = Arc::new(Conn::new(id, key, addr, accepted, Outbox::new(stream, shared.queue_limit_bytes)));
    if let Some(ip) = counted {
        conn.set_counted(ip);
    }
    shared.hub.add(conn.clone());
    let guard = ConnGuard {
        shared: shared.clone(),
        conn: conn.clone(),
        running: false,
        who: Who::default(),
        end: End::new(Level::Error, "ended without a reason"),
    };
    let Err(handshake) = shared.greeters.offer(Box::new(move || greet(guard))) else { return Ok(()) };
    let greeter = shared.clone();
    let spawned = thread::Builder::new()
        .name("handshake".into())
        .stack_size(CONN_STACK_BYTES)
        .spawn(move || handshakes(&greeter, handshake));
    match spawned {
        Ok(handle) => {
            shared.threads.insert(handle);
            Ok(())
        }
        // The closure, and with it the guard, was dropped: slot and hub entry are released.
        Err(_) => Err(conn),
    }
}

/// A handshake thread: the handshake it was started for, then those given
/// to it while it waits, until none comes for `greeters::IDLE`.
fn handshakes(shared: &Shared, first: Handshake) {
    let _reported = shared.threads.report_on_exit();
    let mut handshake = first;
    loop {
        handshake();
        handshake = match shared.greeters.next() {
            Next::Job(next) => next,
            // It held no connection when it ended: shutdown does not count it.
            Next::Idle => return shared.threads.ending_idle(),
            Next::End => return,
        };
    }
}

/// Cleans up after a connection however it ends, unwinding included:
/// registries, pending invokes, presence, socket, slot. It passes from the
/// handshake thread to the session thread.
struct ConnGuard {
    shared: Arc<Shared>,
    conn: Arc<Conn>,
    /// False until its handshake runs: a guard dropped by a failed spawn
    /// only releases what it holds.
    running: bool,
    /// Who the client turned out to be; set by the handshake.
    who: Who,
    end: End,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let shared = &self.shared;
        if thread::panicking() {
            self.end = End::new(Level::Error, "panic in connection thread");
        }
        let departure = shared.hub.remove(&self.conn, self.who.node_id.as_deref());
        if let Some(node_id) = &departure.node_gone {
            shared.presence(node_id, "disconnected");
        }
        for pending in departure.failed {
            shared.answer(pending, Answer::Gateway(ErrorCode::NodeDisconnected, "node disconnected"));
        }
        for pending in departure.abandoned {
            shared.abandon(pending);
        }
        if let Some(ip) = self.conn.counted().filter(|_| !self.who.authenticated) {
            shared.preauth.leave(ip);
        }
        let active = shared.slots.release();
        if !self.running {
            return;
        }
        // FIN now, even while other threads still hold this connection.
        self.conn.out.cut();
        let end = &self.end;
        let client_ip = self.conn.forwarded_ip().map(|ip| ip.to_string());
        log!(target: "goclaw::conn", end.level,
            conn_id:% = self.conn.id, addr:% = self.conn.addr, client_ip = client_ip.as_deref(),
            role = self.who.role.map(Role::as_str), node_id = self.who.node_id.as_deref(),
            reason = end.reason, code = end.server_code, client_code = end.client_code,
            error = end.detail.as_deref(),
            duration_ms = self.conn.accepted.elapsed().as_millis() as u64, active = active;
            "client disconnected");
    }
}

/// A connection's handshake, then the hand-over to its session thread.
fn greet(mut guard: ConnGuard) {
    guard.running = true;
    let shared = guard.shared.clone();
    let conn = guard.conn.clone();
    match handshake(&shared, &conn, &mut guard) {
        Ok(client) => hand_over(&shared, Box::new(Greeted { guard, client })),
        Err(end) => guard.end = end,
    }
}

/// A client that completed `connect`.
struct Client {
    ws: Ws,
    role: Role,
    node_id: Option<String>,
    /// Has counted every frame since the upgrade (SPEC §5).
    meter: Meter,
}

/// What the session thread takes over, in one box: starting the thread
/// then moves a pointer, and the thread's first frames stay small.
struct Greeted {
    guard: ConnGuard,
    client: Client,
}

/// From accept to `hello-ok`; returns the client, or how the connection
/// ended.
#[inline(never)]
fn handshake(shared: &Arc<Shared>, conn: &Arc<Conn>, guard: &mut ConnGuard) -> Result<Client, End> {
    let deadline = conn.accepted + shared.config.handshake_timeout;
    let (tail, peer) = handshake::upgrade(shared, conn, deadline)?;
    // Every frame counts from here on, pre-connect frames included (SPEC §5).
    let rate = Rate::new(shared.config.message_rate_per_sec, shared.config.message_burst);
    let mut meter = Meter::new(rate, shared.config.flood_close_after, Instant::now());
    let transport =
        Transport { shared: shared.clone(), conn: conn.clone(), deadline, timer: net::ReadTimer::default() };
    let mut ws = WebSocket::from_partially_read(transport, tail, WsRole::Server, Some(shared.ws_config));
    if shared.hub.mark_upgraded(conn).is_err() {
        return Err(close_for_shutdown(shared, conn, &mut ws));
    }
    let (role, node_id) = handshake::join(shared, conn, &mut ws, &mut guard.who, &mut meter, peer)?;
    let client_ip = conn.forwarded_ip().map(|ip| ip.to_string());
    info!(target: "goclaw::conn", conn_id:% = conn.id, addr:% = conn.addr, client_ip = client_ip.as_deref(),
        role = role.as_str(), node_id = node_id.as_deref(), active = shared.slots.active(); "client connected");
    Ok(Client { ws, role, node_id, meter })
}

/// Starts the request loop on a fresh thread. The handshake runs deep
/// (HTTP parsing, `Sec-WebSocket-Accept`, JSON, a device signature, two
/// log sinks: about 10 KiB of stack in a release build, 46 KiB in a debug
/// one), and stack pages stay resident once touched; on its own thread, an
/// idle connection keeps only what its request loop has touched
/// (docs/BENCHMARKS.md).
fn hand_over(shared: &Arc<Shared>, mut greeted: Box<Greeted>) {
    // What the guard reports if the session thread cannot start: it is
    // then dropped with the closure, here.
    greeted.guard.end = End::new(Level::Error, "no thread for the session");
    let mut name = String::from("conn-");
    name.push_str(&greeted.guard.conn.id.simple().to_string()[..8]);
    let spawned = thread::Builder::new().name(name).stack_size(CONN_STACK_BYTES).spawn(move || serve(greeted));
    if let Ok(handle) = spawned {
        shared.threads.insert(handle);
    }
}

/// A connection's session thread, reported finished once the connection
/// has ended and been cleaned up.
fn serve(greeted: Box<Greeted>) {
    let shared = greeted.guard.shared.clone();
    let _reported = shared.threads.report_on_exit();
    session(greeted);
}

/// The request loop, until the end. The connection's state stays in its
/// box, and the guard in it cleans up when the box is dropped.
fn session(mut greeted: Box<Greeted>) {
    let (shared, conn) = (greeted.guard.shared.clone(), greeted.guard.conn.clone());
    let node_id = greeted.client.node_id.take();
    let mut session = Session::new(&shared, &conn, greeted.client.role, node_id, greeted.client.meter);
    greeted.guard.end = session.serve(&mut greeted.client.ws);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::config::Config;
    use crate::gateway::node::{NodeIdentity, NodeInfo};
    use crate::gateway::pairing::Store;
    use crate::ops::metrics::InvokeOutcome;
    use crate::wire::connect::parse_connect;
    use crate::wire::params::Invoke;
    use serde_json::value::RawValue;
    use std::net::TcpListener;

    /// A client registered but not yet sent its `hello-ok` gets no
    /// broadcast event and no tick: they would arrive before the answer
    /// to its `connect`.
    #[test]
    fn no_event_reaches_a_client_before_its_hello_ok() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let shared = Shared::new(Config::default(), listener.local_addr().unwrap(), Store::in_memory());
        let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let _peer = listener.accept().unwrap();
        let addr = stream.local_addr().unwrap();
        let operator =
            Arc::new(Conn::new(Uuid::new_v4(), shared.next_key(), addr, Instant::now(), Outbox::new(stream, 1 << 20)));
        shared.hub.add(operator.clone());
        shared.hub.join_operator(&operator).unwrap();
        let mut clients = Vec::new();
        shared.hub.clients(&mut clients);
        assert!(shared.hub.operators().is_empty() && clients.is_empty());
        operator.mark_greeted();
        shared.hub.clients(&mut clients);
        assert_eq!((shared.hub.operators().len(), clients.len()), (1, 1));
    }

    /// A panicking connection thread still leaves the registries, the slot
    /// count and the thread list clean, and answers its pending invokes.
    #[test]
    fn a_panicking_thread_cleans_up() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let store = crate::gateway::pairing::Store::in_memory();
        let shared = Arc::new(Shared::new(Config::default(), listener.local_addr().unwrap(), store));
        let socket = |shared: &Shared| {
            let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let _client = listener.accept().unwrap();
            let key = shared.next_key();
            let addr = stream.local_addr().unwrap();
            Arc::new(Conn::new(Uuid::new_v4(), key, addr, Instant::now(), Outbox::new(stream, 1 << 20)))
        };
        let operator = socket(&shared);
        shared.hub.add(operator.clone());
        shared.hub.join_operator(&operator).unwrap();

        assert!(shared.slots.try_acquire());
        let node = socket(&shared);
        shared.hub.add(node.clone());
        let params = r#"{"minProtocol":3,"maxProtocol":3,"client":{"id":"n1"},"commands":["echo"]}"#;
        let hello = parse_connect(Some(&RawValue::from_string(params.into()).unwrap())).unwrap();
        let info = Arc::new(NodeInfo::new("n1".into(), NodeIdentity::Token, hello, "127.0.0.1", 0));
        shared.hub.join_node(&node, info).unwrap();
        let invoke = Invoke {
            node_id: "n1".into(),
            command: "echo".into(),
            params: "null",
            timeout_ms: 1000,
            idempotency_key: None,
        };
        shared.hub.start_invoke(Uuid::new_v4(), &operator, &invoke, "\"r1\"", Instant::now()).unwrap();

        let guard = ConnGuard {
            shared: shared.clone(),
            conn: node.clone(),
            running: true,
            who: Who { role: Some(Role::Node), node_id: Some("n1".into()), authenticated: true },
            end: End::new(Level::Info, "test"),
        };
        let handle = thread::spawn(move || {
            let _guard = guard;
            panic!("injected");
        });
        shared.threads.insert(handle);
        assert_eq!(shared.threads.join_all(), 1);
        assert_eq!(shared.slots.active(), 0);
        assert_eq!(shared.hub.counts(), (1, 0));
        assert_eq!(shared.hub.next_deadline(), None);
        assert_eq!(shared.metrics.invokes(InvokeOutcome::Disconnected), 1);
    }
}
