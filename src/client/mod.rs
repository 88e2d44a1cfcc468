//! The client side of the binary: the WebSocket client and its `connect`,
//! the node agent (`goclaw node`) with its program runner and system
//! figures, and the operator commands (`goclaw nodes`, `invoke`, `watch`).
//! Never imports the gateway: it speaks to one only over the wire, so a
//! gateway-only audit can skip this folder.

pub mod agent;
pub mod conn;
pub mod endpoint;
pub mod error;
pub mod exec;
pub mod operator;
pub mod sysinfo;
