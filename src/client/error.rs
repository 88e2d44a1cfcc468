//! The one error type of the client side, mapped to the exit codes of the
//! client commands: could not talk to the gateway (3), the gateway closed
//! the connection, the gateway answered with an error (1), or it refused
//! the connection for now (4).

use std::fmt;
use std::time::Duration;

/// Why a client call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientError {
    /// The gateway could not be reached, refused the upgrade, or the
    /// connection broke.
    Connection(String),
    /// The gateway closed the connection with this code and reason.
    Closed(u16, String),
    /// The gateway refused the upgrade for now: HTTP 429 (this address is
    /// over `--rate-limit`) or 503 (at `--max-connections`, or shutting
    /// down). Not the client's fault; worth retrying after `retry_after`.
    RefusedForNow {
        /// What happened, for the user.
        message: String,
        /// The answer's `Retry-After`, if it had one.
        retry_after: Option<Duration>,
    },
    /// The gateway answered the request with an error.
    Gateway {
        /// The protocol's error code (`NODE_NOT_FOUND`, ...).
        code: String,
        /// Its message.
        message: String,
    },
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Connection(why) => write!(f, "{why}"),
            ClientError::Closed(code, reason) if reason.is_empty() => {
                write!(f, "the gateway closed the connection ({code})")
            }
            ClientError::Closed(code, reason) => write!(f, "the gateway closed the connection ({code} {reason})"),
            ClientError::RefusedForNow { message, .. } => write!(f, "{message}"),
            ClientError::Gateway { code, message } => write!(f, "{code}: {message}"),
        }
    }
}

impl std::error::Error for ClientError {}
