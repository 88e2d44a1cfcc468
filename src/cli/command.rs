//! What the command line asks for: one [`Command`] with everything it needs,
//! validated. Data only.

use std::time::Duration;

use crate::client::agent::NodeConfig;
use crate::client::operator::Operator;
use crate::client::pairing::PairingAction;
use crate::gateway::config::Config;

/// What the command line asks for.
pub enum Command {
    /// Run the gateway.
    Serve(Box<Config>),
    /// Print this text on stdout and exit 0.
    Help(String),
    /// Print the version on stdout and exit 0.
    Version,
    /// Probe a health URL; exit 0 if it answers 200, else 1.
    Healthcheck {
        /// `http://HOST:PORT/PATH` to probe.
        url: String,
    },
    /// Run the built-in node agent.
    Node(Box<NodeConfig>),
    /// List the connected nodes.
    Nodes {
        /// The gateway, and this client's device.
        operator: Operator,
        /// JSON instead of a table.
        json: bool,
    },
    /// List, approve, reject pairing requests; remove a node.
    Pairing {
        /// The gateway, and this client's device.
        operator: Operator,
        /// What to do.
        action: PairingAction,
        /// JSON instead of a table (`pending`).
        json: bool,
    },
    /// Invoke a command on a node and print its result.
    Invoke {
        /// The gateway, and this client's device.
        operator: Operator,
        /// The node: its id, instance id, display name or an id prefix.
        node: String,
        /// The command.
        command: String,
        /// Its params.
        params: serde_json::Value,
        /// How long the node may take.
        timeout: Duration,
        /// Print `{"ok":...}` as JSON instead of the bare payload.
        json: bool,
    },
    /// Print presence events until interrupted.
    Watch {
        /// The gateway, and this client's device.
        operator: Operator,
        /// JSON lines instead of text.
        json: bool,
    },
}
