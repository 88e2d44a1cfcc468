//! One connection as every thread sees it: its id, address, write side
//! (the outbox, which owns the socket) and the few flags other threads
//! read. Shared by `Arc`; nothing here blocks.

use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::Instant;

use uuid::Uuid;

use crate::gateway::outbox::Outbox;

/// One connection, shared by its own thread and everyone who writes to it.
#[derive(Debug)]
pub struct Conn {
    /// The `connId` in every log line about it.
    pub id: Uuid,
    /// Process-unique number, the key in every map.
    pub key: u64,
    /// The peer's address.
    pub addr: SocketAddr,
    /// When its TCP connection was accepted: the handshake deadline counts
    /// from here.
    pub accepted: Instant,
    /// The write side; also owns the socket.
    pub out: Outbox,
    /// Invokes this connection (an operator) is waiting for. Only changed
    /// under the hub lock.
    pub pending: AtomicUsize,
    /// The device it proved, once `connect` verified one.
    device: OnceLock<Box<str>>,
    /// The address its per-address limits count it under, once counted:
    /// the peer's at accept, or, behind a trusted proxy, the client the
    /// proxy names, once the upgrade request is read.
    counted: OnceLock<IpAddr>,
    /// Its `hello-ok` has been sent: from then on the shutdown path may send
    /// it the `shutdown` event (which must not precede `hello-ok`).
    greeted: AtomicBool,
    /// Who sends the `shutdown` event and close 1001 claims this first, so
    /// they go out exactly once whether the shutdown path or the
    /// connection's own thread gets there first.
    shutdown_claimed: AtomicBool,
}

impl Conn {
    /// A connection around its socket.
    pub fn new(id: Uuid, key: u64, addr: SocketAddr, accepted: Instant, out: Outbox) -> Conn {
        Conn {
            id,
            key,
            addr,
            accepted,
            out,
            pending: AtomicUsize::new(0),
            greeted: AtomicBool::new(false),
            shutdown_claimed: AtomicBool::new(false),
            device: OnceLock::new(),
            counted: OnceLock::new(),
        }
    }

    /// Records the address its limits count it under (once).
    pub fn set_counted(&self, ip: IpAddr) {
        let _ = self.counted.set(ip);
    }

    /// The address its limits count it under, if they have counted it.
    pub fn counted(&self) -> Option<IpAddr> {
        self.counted.get().copied()
    }

    /// The client's address: the one a trusted proxy named, else the peer's.
    pub fn client_ip(&self) -> IpAddr {
        self.counted().unwrap_or(self.addr.ip()).to_canonical()
    }

    /// The address a trusted proxy named for its client, if not the peer's.
    pub fn forwarded_ip(&self) -> Option<IpAddr> {
        Some(self.client_ip()).filter(|ip| *ip != self.addr.ip().to_canonical())
    }

    /// Records the device this connection proved (once).
    pub fn set_device(&self, device_id: &str) {
        let _ = self.device.set(device_id.into());
    }

    /// The device this connection proved, if any.
    pub fn device(&self) -> Option<&str> {
        self.device.get().map(|d| &**d)
    }

    /// Records that `hello-ok` went out.
    pub fn mark_greeted(&self) {
        self.greeted.store(true, SeqCst);
    }

    /// Whether `hello-ok` went out.
    pub fn is_greeted(&self) -> bool {
        self.greeted.load(SeqCst)
    }

    /// True for the one caller that may send the shutdown notice.
    pub fn claim_shutdown(&self) -> bool {
        !self.shutdown_claimed.swap(true, SeqCst)
    }
}
