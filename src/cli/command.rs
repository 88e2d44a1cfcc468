//! What the command line asks for: one [`Command`] with everything it needs,
//! validated. Data only.

use std::time::Duration;

use crate::client::agent::NodeConfig;
use crate::client::operator::Target;
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
        /// The gateway.
        target: Target,
        /// JSON instead of a table.
        json: bool,
    },
    /// Invoke a command on a node and print its result.
    Invoke {
        /// The gateway.
        target: Target,
        /// The node id.
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
        /// The gateway.
        target: Target,
        /// JSON lines instead of text.
        json: bool,
    },
}
