#!/usr/bin/env bash
# The README's TLS proxy recipe, run for real: Debian's nginx with
# deploy/nginx-goclaw.conf (only its ports and file paths changed)
# terminating TLS in front of the release goclaw, a throwaway CA and server
# certificate made with openssl, and a node connecting over wss:// through
# it. Checks that:
#   0. the direct control: a node on loopback straight to the gateway is
#      approved silently (--local-auto-approve), so what follows is the
#      proxy's doing;
#   a. a node through the proxy is NOT approved silently, although nginx
#      reaches goclaw from 127.0.0.1 with the shared token: the proxy's
#      X-Forwarded-For marks it remote (SPEC 4.4); it waits in the pending list;
#   b. once approved, it attaches (goclaw nodes lists it);
#   c. goclaw invoke reaches it through the proxy and gets its answer;
#   d. an operator through the proxy (trusting the certificate by
#      --pin-sha256 alone) waits for approval too, then its invoke works;
#   and that the proxy serves only /ws (404 elsewhere, goclaw's 426 there).
# The node is `goclaw node` given only what goclaw-node.service gives it.
#
#   bash tests/interop/tls_proxy.sh [target/release/goclaw]
#
# Installs nginx and openssl with apt-get if they are missing. Runs as root
# (CI) or as any user: nginx gets a pid file, logs and temp paths of its own
# in a temporary directory. Listens on 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/../.."

GOCLAW=$(realpath "${1:-target/release/goclaw}")
CONF=deploy/nginx-goclaw.conf
TOKEN=tls-proxy-test-token

need=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v curl >/dev/null 2>&1 || need+=(curl ca-certificates)
if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # RUNLEVEL=1: the package's own nginx.service is not started.
    RUNLEVEL=1 apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

WORK=$(mktemp -d /tmp/goclaw-tls-proxy.XXXXXX)
pids=()
cleanup() {
    local status=$?
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [ "$status" -ne 0 ]; then
        for log in gateway.log nginx-error.log node-direct.log node.log; do
            [ -s "$WORK/$log" ] && { echo "--- $log (last 20 lines)"; tail -n 20 "$WORK/$log"; }
        done
    fi
    [ -n "${TLS_PROXY_KEEP:-}" ] && echo "kept $WORK" || rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }
# wait_for SECONDS DESCRIPTION COMMAND...: polls every 0.2 s, bounded.
wait_for() {
    local tries=$(($1 * 5)) what=$2
    shift 2
    for ((i = 0; i < tries; i++)); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.2
    done
    fail "$what (waited $((tries / 5)) s)"
}
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# ---- a throwaway CA and a server certificate for 127.0.0.1 and localhost
openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -days 2 \
    -subj "/CN=goclaw test CA" -keyout "$WORK/ca.key" -out "$WORK/ca.pem" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -subj "/CN=localhost" \
    -keyout "$WORK/server.key" -out "$WORK/server.csr" 2>/dev/null
printf '%s\n' 'basicConstraints=critical,CA:FALSE' 'keyUsage=critical,digitalSignature' \
    'extendedKeyUsage=serverAuth' 'subjectAltName=IP:127.0.0.1,DNS:localhost' > "$WORK/server.ext"
openssl x509 -req -in "$WORK/server.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" -CAcreateserial \
    -days 2 -extfile "$WORK/server.ext" -out "$WORK/server.pem" 2>/dev/null
ok "CA and server certificate (SAN 127.0.0.1, localhost) made with $(openssl version | cut -d' ' -f1-2)"

# ---- the gateway, on loopback, plain ws://, local auto-approval left on (the default),
# trusting the proxy's X-Forwarded-For for its per-address limits, as the README's unit does.
# Port 0: the gateway picks free ports itself and names them in its first line.
"$GOCLAW" serve --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --trusted-proxy 127.0.0.1 \
    --token "$TOKEN" --state-dir "$WORK/gateway" > "$WORK/gateway.log" 2>&1 &
pids+=($!)
wait_for 10 "the gateway says where it listens" grep -q "listening addr=" "$WORK/gateway.log"
GW_PORT=$(sed -n 's/.*listening addr=127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$WORK/gateway.log")
METRICS_PORT=$(sed -n 's/.* metrics_addr=127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$WORK/gateway.log")
wait_for 10 "the gateway is ready" "$GOCLAW" healthcheck --url "http://127.0.0.1:$METRICS_PORT/readyz"
GW_URL="ws://127.0.0.1:$GW_PORT/ws"

# ---- nginx with deploy/nginx-goclaw.conf: only ports and paths replaced,
# each replacement checked to apply exactly once so the test follows the file.
render() { # TLS_PORT
python3 - "$CONF" "$WORK/goclaw.conf" <<EOF
import sys
text = open(sys.argv[1]).read()
for old, new in [
    ("listen 443 ssl;", "listen 127.0.0.1:$1 ssl;"),
    ("listen [::]:443 ssl;", "# (IPv6 listener left out of the test: loopback IPv4 only)"),
    ("/etc/letsencrypt/live/gateway.example.org/fullchain.pem", "$WORK/server.pem"),
    ("/etc/letsencrypt/live/gateway.example.org/privkey.pem", "$WORK/server.key"),
    ("proxy_pass http://127.0.0.1:18789;", "proxy_pass http://127.0.0.1:$GW_PORT;"),
]:
    if text.count(old) != 1:
        sys.exit(f"{sys.argv[1]}: expected {old!r} exactly once, found it {text.count(old)} times")
    text = text.replace(old, new)
open(sys.argv[2], "w").write(text)
EOF
}
# The README shows the file without its comments: every line it shows must be in it.
python3 - "$CONF" README.md <<'PY'
import re, sys
conf = {line.strip() for line in open(sys.argv[1])}
blocks = re.findall(r"```nginx\n(.*?)```", open(sys.argv[2]).read(), re.S)
if len(blocks) != 1:
    sys.exit(f"{sys.argv[2]}: expected one nginx block, found {len(blocks)}")
missing = [l.strip() for l in blocks[0].splitlines() if l.strip() and l.strip() not in conf]
if missing:
    sys.exit(f"{sys.argv[2]}: lines of its nginx block not in {sys.argv[1]}: {missing}")
PY
mkdir -p "$WORK/nginx"
cat > "$WORK/nginx.conf" <<EOF
# What Debian's /etc/nginx/nginx.conf provides around conf.d/*.conf, minus
# what needs root: its own pid file, logs and temp paths.
worker_processes 1;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log notice;
events { worker_connections 64; }
http {
    access_log $WORK/nginx-access.log;
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    include $WORK/goclaw.conf;
}
EOF
# nginx needs a port number: a free one now may be taken by the time nginx
# binds it (other tests run beside this one), so try up to three.
for attempt in 1 2 3; do
    TLS_PORT=$(free_port)
    render "$TLS_PORT"
    "$NGINX" -t -q -p "$WORK" -c "$WORK/nginx.conf" -e "$WORK/nginx-error.log" \
        || { cat "$WORK/nginx-error.log"; fail "nginx -t refuses the configuration"; }
    "$NGINX" -p "$WORK" -c "$WORK/nginx.conf" -e "$WORK/nginx-error.log" &
    nginx_pid=$!
    pids+=("$nginx_pid")
    https() { curl -sS -o /dev/null -w '%{http_code}' --cacert "$WORK/ca.pem" "https://127.0.0.1:$TLS_PORT$1"; }
    up() { https / || ! kill -0 "$nginx_pid"; }
    wait_for 10 "nginx answers on 127.0.0.1:$TLS_PORT" up
    if kill -0 "$nginx_pid" 2>/dev/null; then break; fi
    wait "$nginx_pid" || true
    grep -q "Address already in use" "$WORK/nginx-error.log" && [ "$attempt" -lt 3 ] || fail "nginx did not start"
    echo "port $TLS_PORT was taken; another"
done
WSS_URL="wss://127.0.0.1:$TLS_PORT/ws"
ok "$("$NGINX" -v 2>&1 | cut -d' ' -f3) up with $CONF: $WSS_URL -> $GW_URL"
[ "$(https /)" = 404 ] || fail "GET / through the proxy: expected 404, got $(https /)"
[ "$(https /ws)" = 426 ] || fail "GET /ws (no upgrade) through the proxy: expected goclaw's 426, got $(https /ws)"
ok "the proxy serves /ws only (/ is 404; /ws without an upgrade reaches goclaw: 426)"

op() { # an operator command on the gateway's host, straight to it on loopback
    "$GOCLAW" "$@" --url "$GW_URL" --token "$TOKEN" --state-dir "$WORK/cli"
}
pending_json() { op nodes pending --json; }
approve() { op nodes approve "$1"; }
start_node() { # NAME URL
    # What goclaw-node.service gives the agent: no flags, only its
    # environment (the GOCLAW_* lines of /etc/goclaw/node.env), the token
    # as a credential and $STATE_DIRECTORY for its device key.
    mkdir -p "$WORK/$1-credentials"
    printf '%s\n' "$TOKEN" > "$WORK/$1-credentials/token"
    local tls=()
    case "$2" in wss://*) tls=("GOCLAW_CA_FILE=$WORK/ca.pem") ;; esac
    env -i PATH=/usr/bin:/bin "GOCLAW_URL=$2" "${tls[@]}" "GOCLAW_ID=$1" \
        "CREDENTIALS_DIRECTORY=$WORK/$1-credentials" "STATE_DIRECTORY=$WORK/$1" \
        "$GOCLAW" node > "$WORK/$1.log" 2>&1 &
    pids+=($!)
}
node_id() { # NAME: its device id (made on first start), which is its node id
    python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["deviceId"])' "$WORK/$1/node/device.json"
}
CONNECTED="connected to the gateway"
REFUSED="waits for approval"

# ---- 0. control: the same kind of node, straight to the gateway on loopback
start_node node-direct "$GW_URL"
wait_for 10 "a node on loopback is approved silently" grep -q "$CONNECTED" "$WORK/node-direct.log"
ok "control: a node straight to the gateway on loopback is approved silently"

# ---- a. through the proxy: pending, not approved
start_node node "$WSS_URL"
wait_for 10 "the node through the proxy gets an answer to connect" grep -Eq "$REFUSED|$CONNECTED" "$WORK/node.log"
grep -q "$CONNECTED" "$WORK/node.log" \
    && fail "the node through the proxy was approved silently, as if local: does the proxy still send X-Forwarded-For?"
NODE_ID=$(node_id node)
has_pending() { pending_json | python3 -c 'import json, sys; sys.exit(not any(p.get("nodeId") == sys.argv[1] for p in json.load(sys.stdin)))' "$NODE_ID"; }
wait_for 5 "the node's request is in the pending list" has_pending
REQUEST_ID=$(pending_json | python3 -c 'import json, sys; print([p["requestId"] for p in json.load(sys.stdin) if p.get("nodeId") == sys.argv[1]][0])' "$NODE_ID")
grep -q "$CONNECTED" "$WORK/node.log" && fail "the node through the proxy got in before approval"
ok "a: through the proxy the node is NOT approved silently: NOT_PAIRED, pending request $REQUEST_ID"

# ---- b. approved, it attaches
approve "$REQUEST_ID" > /dev/null
wait_for 15 "the approved node attaches through the proxy" grep -q "$CONNECTED" "$WORK/node.log"
op nodes --json | python3 -c 'import json, sys; sys.exit(not any(n["nodeId"] == sys.argv[1] for n in json.load(sys.stdin)))' "$NODE_ID" \
    || fail "goclaw nodes does not list $NODE_ID"
ok "b: after approval the node attaches through the proxy and goclaw nodes lists it"

# ---- c. an invoke reaches it through the proxy
answer=$(op invoke "$NODE_ID" echo '{"via":"nginx"}' --timeout 10s)
[ "$answer" = '{"via":"nginx"}' ] || fail "unexpected invoke answer: $answer"
ok "c: goclaw invoke ${NODE_ID:0:12}… echo '{\"via\":\"nginx\"}' -> $answer"

# ---- d. an operator through the proxy, trusting the certificate by its pin alone
PIN=$(openssl x509 -noout -fingerprint -sha256 -in "$WORK/server.pem" | cut -d= -f2)
remote_op() { "$GOCLAW" "$@" --url "$WSS_URL" --pin-sha256 "$PIN" --token "$TOKEN" --state-dir "$WORK/remote-cli"; }
set +e
remote_op nodes --json > "$WORK/remote-op.out" 2>&1
status=$?
set -e
[ "$status" = 4 ] || fail "an operator through the proxy: expected exit 4 (waits for approval), got $status: $(cat "$WORK/remote-op.out")"
OP_DEVICE=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["deviceId"])' "$WORK/remote-cli/cli/device.json")
OP_REQUEST=$(pending_json | python3 -c 'import json, sys; print([p["requestId"] for p in json.load(sys.stdin) if p.get("deviceId") == sys.argv[1] and p.get("role") == "operator"][0])' "$OP_DEVICE")
approve "$OP_REQUEST" > /dev/null
remote_op nodes --json | python3 -c 'import json, sys; sys.exit(not any(n["nodeId"] == sys.argv[1] for n in json.load(sys.stdin)))' "$NODE_ID" \
    || fail "the approved operator through the proxy does not see $NODE_ID"
answer=$(remote_op invoke "$NODE_ID" echo '{"via":"nginx, both ways"}' --timeout 10s)
[ "$answer" = '{"via":"nginx, both ways"}' ] || fail "unexpected invoke answer through the proxy: $answer"
ok "d: an operator through the proxy (--pin-sha256) waits for approval too (exit 4); approved, its invoke crosses the proxy twice -> $answer"

grep "device approved (local)" "$WORK/gateway.log" | grep -q "$NODE_ID" \
    && fail "the gateway's log says it approved the proxied node as local"
grep -q "device approved request_id=$REQUEST_ID" "$WORK/gateway.log" \
    || fail "the gateway's log has no approval of $REQUEST_ID"
ok "the gateway's log: the proxied node approved by request $REQUEST_ID, never as local"
echo "tls proxy recipe: all checks passed"
