//! The help texts: `goclaw --help` and each command's `--help`. Text only.

use crate::client::operator::{REFUSED_ATTEMPTS, REFUSED_WAIT_BUDGET, RETRY_JITTER};

pub fn top() -> String {
    format!(
        "goclaw {} — a small WebSocket gateway between nodes and operators\n\n\
         usage:\n  goclaw serve [FLAGS]   run the gateway (goclaw serve --help lists the flags)\n  \
         goclaw node [FLAGS]    connect this machine to a gateway as a node\n  \
         goclaw nodes           list the connected nodes\n  \
         goclaw invoke NODE COMMAND [PARAMS_JSON]\n                         run a command on a node and print its result\n  \
         goclaw watch           print nodes connecting and leaving until interrupted\n  \
         goclaw healthcheck     probe a running gateway's /healthz (exit 0 or 1)\n  \
         goclaw --version       print the version\n  goclaw --help          print this text\n\n\
         Each command takes --help. nodes, invoke and watch exit 0 on success, 1 for an error\n\
         answer, 2 for bad usage, 3 when no gateway is reachable, 4 when it still refuses the\n\
         connection for now (rate limited, at capacity, restarting) after bounded retries.\n",
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

const CONNECTION_HELP: &str = "  --url URL            the gateway (variable GOCLAW_URL; default: ws://127.0.0.1:18789/ws)\n  \
     --token TOKEN        its token (variable GOCLAW_TOKEN)\n  \
     --token-file PATH    read the token from a file (variable GOCLAW_TOKEN_FILE; $CREDENTIALS_DIRECTORY/token\n                       is used when present)\n";

pub fn node() -> String {
    format!(
        "usage: goclaw node [FLAGS]\n\n\
         Connects this machine to a gateway as a node and answers device.status, system.info and\n\
         echo, plus the programs listed with --exec. Reconnects when the gateway goes away\n\
         (exponential backoff with jitter, at most 30 s; after a graceful gateway shutdown, when\n\
         the gateway said it would be back). SIGINT or SIGTERM: closes and exits 0.\n\n{CONNECTION_HELP}  \
         --id ID              the node id (default: the host name)\n  \
         --display-name NAME  the name operators see (default: the id)\n  \
         --exec NAME=PROGRAM  expose PROGRAM as command NAME; repeatable (variable GOCLAW_EXEC: comma-separated).\n                       \
         It gets the params as JSON on stdin; its stdout, JSON, is the result\n                       \
         (at most 256 KiB); a non-zero exit is an error. No shell, no arguments.\n  \
         --exec-timeout DUR   longest a program may run (default: 30s; the invoke's timeout may be shorter)\n  \
         --log-level LEVEL    error, warn, info, debug or trace (default: info)\n"
    )
}

pub fn operator(command: &str) -> String {
    let (usage, what, extra) = match command {
        "invoke" => (
            "goclaw invoke NODE COMMAND [PARAMS_JSON] [FLAGS]",
            "Runs COMMAND on NODE and prints the result payload: pretty JSON on a terminal, compact\n\
             otherwise. A gateway or node error prints CODE: message on stderr and exits 1; bad usage\n\
             exits 2; no gateway to talk to exits 3; still refused for now exits 4 (see below).",
            "  --timeout DUR        how long the node may take (default: 30s, at most 600s)\n  \
             --json               print {\"ok\":true,\"payload\":...} or {\"ok\":false,\"error\":...} on stdout\n",
        ),
        "nodes" => (
            "goclaw nodes [FLAGS]",
            "Lists the connected nodes: id, name, platform, version, commands and how long ago each\n\
             connected. Exits 1 on a gateway error, 2 on bad usage, 3 if the gateway cannot be reached,\n\
             4 if it still refuses the connection for now (see below).",
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
        "When the gateway refuses the connection for now (HTTP 429: this address is over its\n\
         --rate-limit; 503: at --max-connections or restarting), it is asked again after the Retry-After\n\
         it gives, plus up to {} ms, at most {REFUSED_ATTEMPTS} attempts and {} s of waiting in all; then exit 4.\n",
        RETRY_JITTER.as_millis(),
        REFUSED_WAIT_BUDGET.as_secs()
    );
    format!("usage: {usage}\n\n{what}\n\n{CONNECTION_HELP}{extra}\n{refused}")
}
