//! Connecting as this client's device: the `connect` of `client::hello`
//! with the device token this gateway issued before (per gateway URL and
//! role), the new one kept from `hello-ok`, and a token the gateway refuses
//! forgotten and the connect tried once more without it. Shared by the node
//! agent and the operator commands.

use std::time::Duration;

use log::warn;

use crate::client::conn::{Client, Target};
use crate::client::error::ClientError;
use crate::client::hello::{ClientRole, Hello, Welcome};
use crate::client::state::DeviceState;

/// Connects one kind of client to one gateway, as one device.
#[derive(Debug)]
pub struct Dialer {
    /// The gateway.
    pub target: Target,
    /// Node or operator.
    pub role: ClientRole,
    /// `client.instanceId`.
    pub instance_id: Option<String>,
    /// `client.displayName`.
    pub display_name: Option<String>,
    /// A node's commands.
    pub commands: Vec<String>,
    /// The device that signs, if there is one.
    pub device: Option<DeviceState>,
}

impl Dialer {
    /// Connects (signed if `signed` and there is a device) and returns the
    /// client and what `hello-ok` said. A device token in `hello-ok` is
    /// stored; a refused stored token is forgotten and the connect tried
    /// once more without it.
    ///
    /// # Errors
    /// As [`Client::connect`].
    pub fn dial(&mut self, timeout: Duration, signed: bool) -> Result<(Client, Welcome), ClientError> {
        let gateway = self.target.endpoint.to_string();
        let role = self.role.as_str();
        let shared = self.target.token.is_some();
        for _attempt in 0..2 {
            let device = self.device.as_ref().filter(|_| signed);
            let stored = device.and_then(|d| d.token(&gateway, role));
            let hello = Hello {
                role: self.role,
                instance_id: self.instance_id.as_deref(),
                display_name: self.display_name.as_deref(),
                commands: &self.commands,
                shared: self.target.token.as_ref(),
                device_token: stored.as_ref(),
                device: device.map(DeviceState::key),
            };
            match Client::connect(&self.target, &hello, timeout) {
                Ok((client, hello_ok)) => {
                    let welcome = Welcome::read(&hello_ok);
                    if let (Some(token), Some(device)) =
                        (&welcome.device_token, self.device.as_mut().filter(|_| signed))
                        && let Err(e) = device.store_token(&gateway, role, token.secret())
                    {
                        warn!(error:% = e; "cannot keep the device token the gateway issued; the shared token stays needed");
                    }
                    return Ok((client, welcome));
                }
                Err(ClientError::Gateway { code, message }) if stored.is_some() && refuses_token(&code, shared) => {
                    warn!(url:% = self.target.endpoint, code = code.as_str();
                        "the gateway refused this device's stored token; forgetting it");
                    if let Some(device) = self.device.as_mut() {
                        device.clear_token(&gateway, role)?;
                    }
                    if !shared {
                        // Nothing else to present: the refusal stands.
                        return Err(ClientError::Gateway { code, message });
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(ClientError::Connection(format!("{}: the gateway refused every token presented", self.target.endpoint)))
    }
}

/// Whether a `connect` refusal is about the stored device token: OpenClaw
/// says so (`AUTH_DEVICE_TOKEN_MISMATCH`); otherwise a token refusal when
/// the stored token was the only one presented.
fn refuses_token(code: &str, shared: bool) -> bool {
    code == "AUTH_DEVICE_TOKEN_MISMATCH"
        || (!shared && matches!(code, "UNAUTHORIZED" | "AUTH_TOKEN_MISMATCH" | "AUTH_UNAUTHORIZED"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_refusals_are_about_the_stored_token() {
        assert!(refuses_token("AUTH_DEVICE_TOKEN_MISMATCH", true));
        assert!(refuses_token("UNAUTHORIZED", false));
        assert!(refuses_token("AUTH_TOKEN_MISMATCH", false));
        // With a shared token too, a token refusal may be the shared one's.
        assert!(!refuses_token("UNAUTHORIZED", true));
        assert!(!refuses_token("PAIRING_REQUIRED", false));
    }
}
