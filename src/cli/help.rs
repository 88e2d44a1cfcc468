//! The help texts: `goclaw --help` and each command's `--help`. Text only.

use crate::client::operator::{REFUSED_ATTEMPTS, REFUSED_WAIT_BUDGET, RETRY_JITTER};

pub fn top() -> String {
    format!(
        "goclaw {} — a small WebSocket gateway between nodes and operators\n\n\
         usage:\n  goclaw serve [FLAGS]   run the gateway (goclaw serve --help lists the flags)\n  \
         goclaw node [FLAGS]    connect this machine to a gateway (goclaw or OpenClaw) as a node\n  \
         goclaw nodes           list the connected nodes\n  \
         goclaw nodes pending | approve REQUEST | reject REQUEST | remove NODE\n                         \
         pairing: the devices and nodes waiting for approval, and deciding\n  \
         goclaw invoke NODE COMMAND [PARAMS_JSON]\n                         run a command on a node and print its result\n  \
         goclaw watch           print nodes connecting and leaving until interrupted\n  \
         goclaw healthcheck     probe a running gateway's /healthz (exit 0 or 1)\n  \
         goclaw --version       print the version\n  goclaw --help          print this text\n\n\
         Each command takes --help. nodes, invoke and watch exit 0 on success, 1 for an error\n\
         answer, 2 for bad usage, 3 when no gateway is reachable, 4 when it still refuses the\n\
         connection for now (rate limited, at capacity, restarting) after bounded retries, or\n\
         when this machine's device waits for approval on the gateway.\n",
        env!("CARGO_PKG_VERSION")
    )
}

pub fn healthcheck() -> String {
    "usage: goclaw healthcheck [--url http://HOST:PORT/PATH]\n\n\
     Probes the gateway's /healthz (default: http://127.0.0.1:18790/healthz, or the port of\n\
     GOCLAW_METRICS_LISTEN) and exits 0 if it answers 200, 1 otherwise. For Docker's\n\
     HEALTHCHECK and for scripts; needs no shell and no curl.\n"
        .to_string()
}

const CONNECTION_HELP: &str = "  --url URL            the gateway, ws:// or wss:// (variable GOCLAW_URL; default:\n                       \
     ws://127.0.0.1:18789/ws; wss:// without a port is 443)\n  \
     --token TOKEN        its token (variable GOCLAW_TOKEN)\n  \
     --token-file PATH    read the token from a file (variable GOCLAW_TOKEN_FILE; $CREDENTIALS_DIRECTORY/token\n                       is used when present)\n  \
     --ca-file PATH       wss://: trust the CA certificates in this PEM file instead of the system's\n                       \
     (variable GOCLAW_CA_FILE)\n  \
     --pin-sha256 HEX     wss://: trust the gateway's certificate by its SHA-256 fingerprint, as\n                       \
     `openssl x509 -noout -fingerprint -sha256 -in CERT` prints it (variable\n                       \
     GOCLAW_PIN_SHA256); alone, it is the whole check (self-signed gateways)\n  \
     --state-dir DIR      where this machine's device key and device tokens are kept (variable\n                       \
     GOCLAW_STATE_DIR; default: $STATE_DIRECTORY, $XDG_STATE_HOME/goclaw or\n                       \
     ~/.local/state/goclaw)\n";

pub fn node() -> String {
    format!(
        "usage: goclaw node [FLAGS]\n\n\
         Connects this machine to a gateway as a node: goclaw, or a real OpenClaw gateway. It signs\n\
         with an Ed25519 device key made on first start in DIR/node/device.json (0600; kept; the\n\
         gateway's node id is its device id) and keeps the device token the gateway issues.\n\
         A gateway that has not approved this device yet refuses it: the log says what to run on\n\
         the gateway (goclaw nodes approve REQUEST, or openclaw devices approve REQUEST), and the\n\
         node retries until then. It answers system.which, system.run (only the programs listed\n\
         with --exec, by path: no shell; anything else is refused SYSTEM_RUN_DENIED), device.status,\n\
         system.info, echo, and each --exec NAME. An OpenClaw gateway forwards only system.which and\n\
         system.run from a Linux node unless its config allows more. Reconnects when the gateway\n\
         goes away or stays silent for two tick intervals (exponential backoff with jitter, 1 s\n\
         to 30 s; after a graceful shutdown, when the gateway said it would be back). SIGINT or\n\
         SIGTERM: closes and exits 0. A device key that exists but cannot be read: exit 1.\n\n\
         {CONNECTION_HELP}  \
         --id ID              how the node names itself (client.instanceId; default: the host name)\n  \
         --display-name NAME  the name operators see (default: the id)\n  \
         --exec NAME=PROGRAM  expose PROGRAM as command NAME; repeatable (variable GOCLAW_EXEC: comma-separated).\n                       \
         It gets the params as JSON on stdin; its stdout, JSON, is the result\n                       \
         (at most 256 KiB); a non-zero exit is an error. No shell, no arguments.\n                       \
         system.run may run PROGRAM too, with arguments.\n  \
         --exec-timeout DUR   longest a program may run (default: 30s; the invoke's timeout may be shorter)\n  \
         --log-level LEVEL    error, warn, info, debug or trace (default: info)\n"
    )
}

pub fn operator(command: &str, sub: Option<&str>) -> String {
    let (usage, what, extra) = match (command, sub) {
        ("invoke", _) => (
            "goclaw invoke NODE COMMAND [PARAMS_JSON] [FLAGS]",
            "Runs COMMAND on NODE and prints the result payload: pretty JSON on a terminal, compact\n\
             otherwise. NODE is the node id, or the instance id (goclaw node --id) or display name of\n\
             exactly one node, or a prefix of exactly one node id. A gateway or node error prints\n\
             CODE: message on stderr and exits 1; bad usage (NODE matching several nodes too) exits 2;\n\
             no gateway to talk to exits 3; still refused for now exits 4 (see below).",
            "  --timeout DUR        how long the node may take (default: 30s, at most 600s)\n  \
             --json               print {\"ok\":true,\"payload\":...} or {\"ok\":false,\"error\":...} on stdout\n",
        ),
        ("nodes", Some("pending" | "approve" | "reject" | "remove")) => (
            "goclaw nodes pending | approve REQUEST | reject REQUEST | remove NODE [FLAGS]",
            "Pairing, on goclaw or an OpenClaw gateway. pending lists the requests waiting, from both\n\
             node.pair.list and device.pair.list (on OpenClaw a device's approval and its node's\n\
             commands are two requests; KIND says which). approve and reject decide one by its id\n\
             (node.pair.*, else device.pair.* for an id the node methods do not know). remove NODE\n\
             unpairs a node (id, instance id, display name or id prefix); on goclaw its connection\n\
             closes. Exits as goclaw nodes.",
            "  --json               pending: print the requests as JSON\n",
        ),
        ("nodes", _) => (
            "goclaw nodes [pending | approve REQUEST | reject REQUEST | remove NODE] [FLAGS]",
            "Lists the connected nodes: id (a device id's first 12 characters), name, instance id when\n\
             it differs, platform, version, commands and how long ago each connected. With a\n\
             subcommand, pairing (goclaw nodes pending --help). Exits 1 on a gateway error, 2 on bad\n\
             usage, 3 if the gateway cannot be reached, 4 if it still refuses the connection for now\n\
             or this machine's device waits for approval (see below).",
            "  --json               print the list as JSON\n",
        ),
        _ => (
            "goclaw watch [FLAGS]",
            "Prints a line each time a node connects or leaves, until interrupted (exit 0) or the\n\
             gateway goes away (exit 3); exits 4 if it still refuses the connection for now (see below).",
            "  --json               print each presence event as a JSON line\n",
        ),
    };
    let refused = format!(
        "Operator commands sign with a device key of their own (DIR/cli/device.json): OpenClaw\n\
         grants an unsigned operator no scope. A gateway that has not approved that device refuses\n\
         it (exit 4, with what to run); on loopback with the shared token goclaw serves without one.\n\n\
         When the gateway refuses the connection for now (HTTP 429: this address is over its\n\
         --rate-limit; 503: at --max-connections or restarting), it is asked again after the Retry-After\n\
         it gives, plus up to {} ms, at most {REFUSED_ATTEMPTS} attempts and {} s of waiting in all; then exit 4.\n",
        RETRY_JITTER.as_millis(),
        REFUSED_WAIT_BUDGET.as_secs()
    );
    format!("usage: {usage}\n\n{what}\n\n{CONNECTION_HELP}{extra}\n{refused}")
}
