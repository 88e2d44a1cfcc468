//! The registries: every live connection, the connected clients, nodes by
//! id, operators, and pending invokes with their deadlines.
//!
//! Plain data behind one `parking_lot` mutex; nothing here blocks or touches
//! a socket. Callers take what they need under the lock and write to sockets
//! after releasing it. A pending invoke is answered by whoever removes it
//! from the map (result, timeout, node gone, shutdown): that is the
//! exactly-one-response guarantee.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use uuid::Uuid;

use crate::gateway::node::{self, NodeInfo};
use crate::gateway::peer::Conn;
use crate::ops::metrics::Metrics;
use crate::util::shrink_if_sparse;
use crate::wire::frame::{ErrorCode, Failure};
use crate::wire::params::Invoke;

/// Most invokes one operator may have waiting at once.
pub const MAX_PENDING_PER_CONN: usize = 256;
/// Most invokes waiting in the whole gateway.
pub const MAX_PENDING_TOTAL: usize = 4096;

/// An invoke waiting for its node. Whoever takes it out of the hub answers
/// it (or, if its operator left, records it): `Shared::answer` and
/// `Shared::abandon` mark it settled, and a debug build checks on drop that
/// none was forgotten.
#[derive(Debug)]
pub struct Pending {
    /// The invoke id sent to the node.
    pub id: Uuid,
    /// Who asked; the answer goes there.
    pub operator: Arc<Conn>,
    /// Raw JSON of the operator's request id.
    pub request_id: Box<str>,
    /// The node asked.
    pub node_id: Box<str>,
    /// The node's connection key: a replacement node cannot answer.
    pub node_key: u64,
    /// The command.
    pub command: Box<str>,
    /// When it was routed.
    pub started: Instant,
    /// When it times out.
    pub deadline: Instant,
    /// Answered or recorded; set by whoever settles it.
    pub settled: bool,
}

impl Drop for Pending {
    fn drop(&mut self) {
        // Exactly one response per invoke (docs/AUDIT.md): a pending invoke
        // dropped without an answer is a bug in the caller that took it.
        debug_assert!(self.settled || std::thread::panicking(), "invoke {} dropped unanswered", self.id);
    }
}

/// The gateway is shutting down: nothing new may register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Draining;

/// Why a node could not join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinError {
    /// The gateway is shutting down.
    Draining,
    /// A node with this id is connected and proved another identity.
    Taken,
}

/// A node connection displaced by a new one with the same id.
#[derive(Debug)]
pub struct Replaced {
    /// The old connection, to be closed with 4000.
    pub old: Arc<Conn>,
    /// Its invokes, to be answered `NODE_DISCONNECTED`.
    pub failed: Vec<Pending>,
}

/// What a departing connection leaves behind.
#[derive(Debug, Default)]
pub struct Departure {
    /// The node id, when this connection was the registered node (operators
    /// get a `presence: disconnected`).
    pub node_gone: Option<String>,
    /// Its invokes, to be answered `NODE_DISCONNECTED`.
    pub failed: Vec<Pending>,
    /// Its own invokes (as an operator): nobody is left to answer; recorded.
    pub abandoned: Vec<Pending>,
}

/// The registries.
#[derive(Debug)]
pub struct Hub {
    metrics: Arc<Metrics>,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    draining: bool,
    /// Every connection with a thread, handshaking or not: the shutdown cut.
    all: HashMap<u64, Arc<Conn>>,
    /// `connect` not done yet, in accept order (keys grow): the ones to cut
    /// first when the gateway is full.
    waiting: BTreeMap<u64, Arc<Conn>>,
    /// Upgraded to WebSocket, `connect` not done yet.
    upgraded: HashMap<u64, Arc<Conn>>,
    /// Clients past `connect`: pings, ticks, the shutdown event.
    clients: HashMap<u64, Arc<Conn>>,
    operators: HashMap<u64, Arc<Conn>>,
    nodes: HashMap<String, NodeEntry>,
    pending: HashMap<Uuid, Pending>,
    /// `pending` ordered by deadline, for the heartbeat.
    deadlines: BTreeSet<(Instant, Uuid)>,
}

#[derive(Debug)]
struct NodeEntry {
    conn: Arc<Conn>,
    info: Arc<NodeInfo>,
}

impl Inner {
    fn take_pending(&mut self, id: Uuid) -> Option<Pending> {
        let pending = self.pending.remove(&id)?;
        self.deadlines.remove(&(pending.deadline, id));
        pending.operator.pending.fetch_sub(1, Relaxed);
        Some(pending)
    }

    fn take_pending_where(&mut self, keep: impl Fn(&Pending) -> bool) -> Vec<Pending> {
        let ids: Vec<Uuid> = self.pending.iter().filter(|(_, p)| !keep(p)).map(|(id, _)| *id).collect();
        ids.into_iter().filter_map(|id| self.take_pending(id)).collect()
    }
}

impl Hub {
    /// Empty registries.
    pub fn new(metrics: Arc<Metrics>) -> Hub {
        Hub { metrics, inner: Mutex::new(Inner::default()) }
    }

    /// Registers a connection as soon as its thread exists.
    pub fn add(&self, conn: Arc<Conn>) {
        let mut inner = self.inner.lock();
        inner.waiting.insert(conn.key, conn.clone());
        inner.all.insert(conn.key, conn);
    }

    /// The connection that has gone longest without completing `connect`,
    /// if it was accepted before `before`.
    pub fn oldest_waiting(&self, before: Instant) -> Option<Arc<Conn>> {
        let inner = self.inner.lock();
        inner.waiting.values().next().filter(|conn| conn.accepted < before).cloned()
    }

    /// Removes a connection from every registry. `node_id` is its node id if
    /// it connected as a node.
    pub fn remove(&self, conn: &Conn, node_id: Option<&str>) -> Departure {
        let mut inner = self.inner.lock();
        inner.all.remove(&conn.key);
        inner.waiting.remove(&conn.key);
        inner.upgraded.remove(&conn.key);
        if inner.clients.remove(&conn.key).is_some() {
            self.metrics.add_clients(-1);
        }
        let mut departure = Departure::default();
        if inner.operators.remove(&conn.key).is_some() {
            departure.abandoned = inner.take_pending_where(|p| p.operator.key != conn.key);
        }
        if let Some(node_id) = node_id
            && inner.nodes.get(node_id).is_some_and(|n| n.conn.key == conn.key)
        {
            inner.nodes.remove(node_id);
            self.metrics.add_nodes(-1);
            departure.node_gone = Some(node_id.to_string());
            departure.failed = inner.take_pending_where(|p| p.node_key != conn.key);
        }
        departure
    }

    /// Records that a connection finished the HTTP upgrade, so a shutdown
    /// from now on sends it the `shutdown` event and a close frame.
    ///
    /// # Errors
    /// [`Draining`] once shutdown has begun: the caller closes by itself.
    pub fn mark_upgraded(&self, conn: &Arc<Conn>) -> Result<(), Draining> {
        let mut inner = self.inner.lock();
        if inner.draining {
            return Err(Draining);
        }
        inner.upgraded.insert(conn.key, conn.clone());
        Ok(())
    }

    /// Registers an operator that completed `connect`.
    ///
    /// # Errors
    /// [`Draining`] once shutdown has begun.
    pub fn join_operator(&self, conn: &Arc<Conn>) -> Result<(), Draining> {
        let mut inner = self.inner.lock();
        if inner.draining {
            return Err(Draining);
        }
        inner.waiting.remove(&conn.key);
        inner.upgraded.remove(&conn.key);
        inner.clients.insert(conn.key, conn.clone());
        inner.operators.insert(conn.key, conn.clone());
        self.metrics.add_clients(1);
        Ok(())
    }

    /// Registers a node that completed `connect`, displacing a connected
    /// node with the same id if it proved the same identity.
    ///
    /// # Errors
    /// [`JoinError::Draining`] once shutdown has begun, [`JoinError::Taken`]
    /// when the id is connected with another kind of identity.
    pub fn join_node(&self, conn: &Arc<Conn>, info: Arc<NodeInfo>) -> Result<Option<Replaced>, JoinError> {
        let mut inner = self.inner.lock();
        if inner.draining {
            return Err(JoinError::Draining);
        }
        if inner.nodes.get(&info.id).is_some_and(|old| old.info.identity != info.identity) {
            return Err(JoinError::Taken);
        }
        inner.waiting.remove(&conn.key);
        inner.upgraded.remove(&conn.key);
        inner.clients.insert(conn.key, conn.clone());
        self.metrics.add_clients(1);
        let entry = NodeEntry { conn: conn.clone(), info: info.clone() };
        match inner.nodes.insert(info.id.clone(), entry) {
            Some(old) => {
                let old_key = old.conn.key;
                let failed = inner.take_pending_where(|p| p.node_key != old_key);
                Ok(Some(Replaced { old: old.conn, failed }))
            }
            None => {
                self.metrics.add_nodes(1);
                Ok(None)
            }
        }
    }

    /// Copies the connected clients into `out` (for pings and ticks): the
    /// greeted ones, since no event may precede a client's `hello-ok`.
    pub fn clients(&self, out: &mut Vec<Arc<Conn>>) {
        out.clear();
        out.extend(self.inner.lock().clients.values().filter(|conn| conn.is_greeted()).cloned());
    }

    /// The connected operators (for broadcast events): the greeted ones. An
    /// operator is registered before its `hello-ok` goes out; an event sent
    /// to it in between would arrive first, and a real client waiting for
    /// the `connect` answer takes it for that answer.
    pub fn operators(&self) -> Vec<Arc<Conn>> {
        self.inner.lock().operators.values().filter(|conn| conn.is_greeted()).cloned().collect()
    }

    /// Every connection with a thread (for the final shutdown cut).
    pub fn all(&self) -> Vec<Arc<Conn>> {
        self.inner.lock().all.values().cloned().collect()
    }

    /// Connected clients and connected nodes.
    pub fn counts(&self) -> (usize, usize) {
        let inner = self.inner.lock();
        (inner.clients.len(), inner.nodes.len())
    }

    /// One page of the `node.list` payload, at most `max_bytes` long.
    pub fn node_list(&self, cursor: Option<&str>, limit: usize, max_bytes: usize) -> String {
        let mut infos: Vec<Arc<NodeInfo>> = self.inner.lock().nodes.values().map(|n| n.info.clone()).collect();
        node::page(&mut infos, cursor, limit, max_bytes)
    }

    /// The connections that proved `device_id` (to close when it is removed).
    pub fn device_conns(&self, device_id: &str) -> Vec<Arc<Conn>> {
        self.inner.lock().clients.values().filter(|c| c.device() == Some(device_id)).cloned().collect()
    }

    /// Whether `conn` is the registered connection of a node.
    pub fn is_node(&self, conn: &Conn) -> bool {
        self.inner.lock().nodes.values().any(|n| n.conn.key == conn.key)
    }

    /// A connected node.
    pub fn node(&self, node_id: &str) -> Option<Arc<NodeInfo>> {
        self.inner.lock().nodes.get(node_id).map(|n| n.info.clone())
    }

    /// Registers invoke `id` from `operator` and returns the node's
    /// connection, to which the caller sends `node.invoke.request`.
    ///
    /// # Errors
    /// `UNAVAILABLE` while draining, `NODE_NOT_FOUND`, `UNKNOWN_COMMAND`, and
    /// `RATE_LIMITED` past [`MAX_PENDING_PER_CONN`] or [`MAX_PENDING_TOTAL`].
    pub fn start_invoke(
        &self,
        id: Uuid,
        operator: &Arc<Conn>,
        invoke: &Invoke<'_>,
        request_id: &str,
        now: Instant,
    ) -> Result<Arc<Conn>, Failure> {
        let mut inner = self.inner.lock();
        if inner.draining {
            return Err(Failure::new(ErrorCode::Unavailable, "gateway is shutting down"));
        }
        let node = inner
            .nodes
            .get(invoke.node_id.as_ref())
            .ok_or_else(|| Failure::new(ErrorCode::NodeNotFound, "node not connected"))?;
        if node.info.commands.binary_search_by(|c| c.as_str().cmp(&invoke.command)).is_err() {
            return Err(Failure::new(
                ErrorCode::UnknownCommand,
                "node command not allowed: the node did not declare it",
            ));
        }
        let node_conn = node.conn.clone();
        if operator.pending.load(Relaxed) >= MAX_PENDING_PER_CONN {
            return Err(Failure::new(
                ErrorCode::RateLimited,
                format!("too many pending invokes on this connection (limit {MAX_PENDING_PER_CONN})"),
            ));
        }
        if inner.pending.len() >= MAX_PENDING_TOTAL {
            return Err(Failure::new(
                ErrorCode::RateLimited,
                format!("too many pending invokes in the gateway (limit {MAX_PENDING_TOTAL})"),
            ));
        }
        let deadline = now + Duration::from_millis(invoke.timeout_ms);
        operator.pending.fetch_add(1, Relaxed);
        inner.deadlines.insert((deadline, id));
        let pending = Pending {
            id,
            operator: operator.clone(),
            request_id: request_id.into(),
            node_id: invoke.node_id.as_ref().into(),
            node_key: node_conn.key,
            command: invoke.command.as_ref().into(),
            started: now,
            deadline,
            settled: false,
        };
        inner.pending.insert(id, pending);
        Ok(node_conn)
    }

    /// Takes the invoke `id` if it is waiting for the node on `node_key`.
    /// `None`: unknown, already answered (late), or addressed to another node.
    pub fn finish_invoke(&self, id: Uuid, node_key: u64) -> Option<Pending> {
        let mut inner = self.inner.lock();
        if inner.pending.get(&id)?.node_key != node_key {
            return None;
        }
        inner.take_pending(id)
    }

    /// Takes one invoke by id, whoever it was for (a failed send).
    pub fn cancel_invoke(&self, id: Uuid) -> Option<Pending> {
        self.inner.lock().take_pending(id)
    }

    /// Takes every invoke whose deadline is at or before `now`.
    pub fn expire(&self, now: Instant) -> Vec<Pending> {
        let mut inner = self.inner.lock();
        let mut expired = Vec::new();
        while inner.deadlines.first().is_some_and(|&(deadline, _)| deadline <= now) {
            // Popped first: an entry without its pending invoke (impossible
            // today) could otherwise stop this loop from ever ending.
            if let Some((_, id)) = inner.deadlines.pop_first() {
                expired.extend(inner.take_pending(id));
            }
        }
        expired
    }

    /// Gives back the registries' memory after a burst of connections
    /// (the heartbeat calls this once a second).
    pub fn shrink(&self) {
        let mut inner = self.inner.lock();
        let Inner { all, upgraded, clients, operators, nodes, pending, .. } = &mut *inner;
        shrink_if_sparse(all);
        shrink_if_sparse(upgraded);
        shrink_if_sparse(clients);
        shrink_if_sparse(operators);
        shrink_if_sparse(nodes);
        shrink_if_sparse(pending);
    }

    /// The earliest invoke deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.inner.lock().deadlines.first().map(|&(deadline, _)| deadline)
    }

    /// Starts shutdown: refuses new registrations and invokes from now on,
    /// and returns every WebSocket connection the shutdown path must notify
    /// (greeted clients, and upgraded ones still before `connect`) and every
    /// pending invoke. A client registered but not yet greeted notifies
    /// itself once its `hello-ok` is out (see [`Conn::claim_shutdown`]).
    pub fn drain(&self) -> (Vec<Arc<Conn>>, Vec<Pending>) {
        let mut inner = self.inner.lock();
        inner.draining = true;
        let sockets =
            inner.clients.values().filter(|conn| conn.is_greeted()).chain(inner.upgraded.values()).cloned().collect();
        let pending = inner.take_pending_where(|_| false);
        (sockets, pending)
    }
}
