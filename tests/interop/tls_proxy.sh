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
#   and that the proxy serves only /ws (404 elsewhere, goclaw's 426 there).
#
#   bash tests/interop/tls_proxy.sh [target/release/goclaw]
#
# Installs nginx and openssl with apt-get if they are missing. Runs as root
# (CI) or as any user: nginx gets a pid file, logs and temp paths of its own
# in a temporary directory. Listens on 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/../.."

GOCLAW=$(realpath "${1:-target/release/goclaw}")
HELPER=tests/interop/tls_node.py
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

# ---- the gateway, on loopback, plain ws://, local auto-approval left on (the default)
GW_PORT=$(free_port)
METRICS_PORT=$(free_port)
TLS_PORT=$(free_port)
"$GOCLAW" serve --listen "127.0.0.1:$GW_PORT" --metrics-listen "127.0.0.1:$METRICS_PORT" \
    --token "$TOKEN" --state-dir "$WORK/gateway" > "$WORK/gateway.log" 2>&1 &
pids+=($!)
wait_for 10 "the gateway is ready" "$GOCLAW" healthcheck --url "http://127.0.0.1:$METRICS_PORT/readyz"
GW_URL="ws://127.0.0.1:$GW_PORT/ws"

# ---- nginx with deploy/nginx-goclaw.conf: only ports and paths replaced,
# each replacement checked to apply exactly once so the test follows the file.
python3 - "$CONF" "$WORK/goclaw.conf" <<EOF
import sys
text = open(sys.argv[1]).read()
for old, new in [
    ("listen 443 ssl;", "listen 127.0.0.1:$TLS_PORT ssl;"),
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
"$NGINX" -t -q -p "$WORK" -c "$WORK/nginx.conf" -e "$WORK/nginx-error.log" \
    || { cat "$WORK/nginx-error.log"; fail "nginx -t refuses the configuration"; }
"$NGINX" -p "$WORK" -c "$WORK/nginx.conf" -e "$WORK/nginx-error.log" &
pids+=($!)
WSS_URL="wss://127.0.0.1:$TLS_PORT/ws"
https() { curl -sS -o /dev/null -w '%{http_code}' --cacert "$WORK/ca.pem" "https://127.0.0.1:$TLS_PORT$1"; }
wait_for 10 "nginx answers on 127.0.0.1:$TLS_PORT" https /
ok "$("$NGINX" -v 2>&1 | cut -d' ' -f3) up with $CONF: $WSS_URL -> $GW_URL"
[ "$(https /)" = 404 ] || fail "GET / through the proxy: expected 404, got $(https /)"
[ "$(https /ws)" = 426 ] || fail "GET /ws (no upgrade) through the proxy: expected goclaw's 426, got $(https /ws)"
ok "the proxy serves /ws only (/ is 404; /ws without an upgrade reaches goclaw: 426)"

pending() { python3 "$HELPER" pending --url "$GW_URL" --token "$TOKEN"; }
start_node() { # NAME URL
    python3 "$HELPER" node --url "$2" --ca-file "$WORK/ca.pem" --token "$TOKEN" --id-file "$WORK/$1.id" \
        > "$WORK/$1.log" 2>&1 &
    pids+=($!)
}

# ---- 0. control: the same kind of node, straight to the gateway on loopback
start_node node-direct "$GW_URL"
wait_for 10 "a node on loopback is approved silently" grep -q "hello-ok" "$WORK/node-direct.log"
ok "control: a node straight to the gateway on loopback is approved silently"

# ---- a. through the proxy: pending, not approved
start_node node "$WSS_URL"
wait_for 10 "the node through the proxy gets an answer to connect" grep -Eq "refused|hello-ok" "$WORK/node.log"
grep -q "hello-ok" "$WORK/node.log" \
    && fail "the node through the proxy was approved silently, as if local: does the proxy still send X-Forwarded-For?"
grep -q "refused NOT_PAIRED PAIRING_REQUIRED" "$WORK/node.log" || fail "the node through the proxy: $(head -n 1 "$WORK/node.log")"
NODE_ID=$(cat "$WORK/node.id")
has_pending() { pending | python3 -c 'import json, sys; sys.exit(not any(p["nodeId"] == sys.argv[1] for p in json.load(sys.stdin)))' "$NODE_ID"; }
wait_for 5 "the node's request is in the pending list" has_pending
REQUEST_ID=$(pending | python3 -c 'import json, sys; print([p["requestId"] for p in json.load(sys.stdin) if p["nodeId"] == sys.argv[1]][0])' "$NODE_ID")
grep -q "hello-ok" "$WORK/node.log" && fail "the node through the proxy got in before approval"
ok "a: through the proxy the node is NOT approved silently: NOT_PAIRED, pending request $REQUEST_ID"

# ---- b. approved, it attaches
python3 "$HELPER" approve "$REQUEST_ID" --url "$GW_URL" --token "$TOKEN" > /dev/null
wait_for 15 "the approved node attaches through the proxy" grep -q "hello-ok" "$WORK/node.log"
"$GOCLAW" nodes --url "$GW_URL" --token "$TOKEN" | grep -q "$NODE_ID" || fail "goclaw nodes does not list $NODE_ID"
ok "b: after approval the node attaches through the proxy and goclaw nodes lists it"

# ---- c. an invoke reaches it through the proxy
answer=$("$GOCLAW" invoke "$NODE_ID" echo '{"via":"nginx"}' --url "$GW_URL" --token "$TOKEN" --timeout 10s)
[ "$answer" = '{"echoed":{"via":"nginx"},"via":"python-node"}' ] || fail "unexpected invoke answer: $answer"
grep -q 'invoked echo' "$WORK/node.log" || fail "the node did not see the invoke"
ok "c: goclaw invoke $NODE_ID echo -> $answer"

local_approvals=$(grep -c "device approved (local)" "$WORK/gateway.log" || true)
[ "$local_approvals" = 1 ] || fail "the gateway approved $local_approvals devices as local; only the direct control is"
ok "the gateway's log: one silent local approval (the direct control), none through the proxy"
echo "tls proxy recipe: all checks passed"
