//! The client side of the binary: the transport (plain or TLS) and the
//! WebSocket client with its `connect` (the envelope every gateway accepts,
//! `hello`; the device identity that signs it, `state`, `dial`), the node
//! agent (`goclaw node`) with its commands, program runner and system
//! figures, and the operator commands (`goclaw nodes`, `invoke`, `watch`,
//! `nodes pending|approve|reject|remove`). Never imports the gateway: it
//! speaks to one only over the wire, so a gateway-only audit can skip this
//! folder.

pub mod agent;
pub mod commands;
pub mod conn;
pub mod dial;
pub mod endpoint;
pub mod error;
pub mod exec;
pub mod hello;
pub mod listing;
pub mod operator;
pub mod pairing;
pub mod run;
pub mod state;
pub mod sysinfo;
#[cfg(feature = "tls")]
pub mod tls;
pub mod transport;
pub mod trust;
