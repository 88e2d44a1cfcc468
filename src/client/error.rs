//! The one error type of the client side, mapped to the exit codes of the
//! client commands: could not talk to the gateway (3), the gateway closed
//! the connection, or the gateway answered with an error (1).

use std::fmt;

/// Why a client call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientError {
    /// The gateway could not be reached, refused the upgrade, or the
    /// connection broke.
    Connection(String),
    /// The gateway closed the connection with this code and reason.
    Closed(u16, String),
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
            ClientError::Gateway { code, message } => write!(f, "{code}: {message}"),
        }
    }
}

impl std::error::Error for ClientError {}
