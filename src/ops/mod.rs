//! Running the gateway in production: Prometheus metrics and process
//! figures, the `/metrics` `/healthz` `/readyz` listener, logging to the
//! console and the JSON file, and systemd's notify protocol. Knows nothing
//! of the protocol's frames; never touches a client's WebSocket.

pub mod health;
pub mod log_file;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod process;
