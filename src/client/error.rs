//! The one error type of the client side, mapped to the exit codes of the
//! client commands (SPEC §2): the gateway answered with an error (1), bad
//! usage found only once connected (2), could not talk to the gateway or
//! it closed the connection (3), it refused the connection for now or this
//! client's device waits for approval (4), and this client's own device
//! identity cannot be read (1).

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
    /// The gateway answered with an error.
    Gateway {
        /// goclaw's precise reason (`details.code`) when there is one, else
        /// the top-level code (`NODE_NOT_FOUND`, `AUTH_TOKEN_MISMATCH`, ...);
        /// a node's own error code for a node's error.
        code: String,
        /// Its message.
        message: String,
    },
    /// The gateway refused `connect` because this client's device is not
    /// approved yet (`NOT_PAIRED` / `PAIRING_REQUIRED`): someone must
    /// approve request `request_id` on the gateway. Worth retrying later.
    PairingPending {
        /// The pending request to approve.
        request_id: String,
        /// This client's device id.
        device_id: String,
    },
    /// The command line named something the gateway's answer makes
    /// ambiguous or impossible (a node name matching two nodes): usage.
    Usage(String),
    /// This client's device identity or stored tokens cannot be read or
    /// written (a file that exists but cannot be used is never replaced).
    State(String),
}

impl ClientError {
    /// The one line that says how to approve a pending device, on either
    /// kind of gateway (goclaw cannot tell which it talks to for sure).
    pub fn approval_hint(request_id: &str) -> String {
        format!(
            "approve it on the gateway: `goclaw nodes approve {request_id}` (goclaw), or \
             `openclaw devices approve {request_id}` (OpenClaw; 2026.9.6 then also wants `openclaw nodes approve` \
             for a node's commands)"
        )
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Connection(why) | ClientError::Usage(why) | ClientError::State(why) => write!(f, "{why}"),
            ClientError::Closed(code, reason) if reason.is_empty() => {
                write!(f, "the gateway closed the connection ({code})")
            }
            ClientError::Closed(code, reason) => write!(f, "the gateway closed the connection ({code} {reason})"),
            ClientError::RefusedForNow { message, .. } => write!(f, "{message}"),
            ClientError::Gateway { code, message } => write!(f, "{code}: {message}"),
            ClientError::PairingPending { request_id, device_id } => write!(
                f,
                "this device ({}) is waiting for approval (request {request_id}); {}",
                device_id.get(..12).unwrap_or(device_id),
                ClientError::approval_hint(request_id)
            ),
        }
    }
}

impl std::error::Error for ClientError {}
