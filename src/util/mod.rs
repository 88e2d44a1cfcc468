//! Small helpers both sides of the binary (gateway, client) and the
//! operations code reach without reaching into each other: the clock in
//! Unix milliseconds, the stop request, map shrinking, thread bookkeeping,
//! durable file writes and the error of a bad flag. Nothing here knows about the protocol or a
//! socket.

mod clock;
mod config_error;
pub mod durable;
mod maps;
mod stop;
mod threads;

pub use clock::{millis, unix_ms};
pub use config_error::ConfigError;
pub use maps::shrink_if_sparse;
pub use stop::Stop;
pub use threads::{ConnThreads, Slots};
