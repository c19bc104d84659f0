#!/bin/sh
# Runs the browser test inside a fresh network namespace where only `lo` exists,
# so that Chromium and sfud can only meet on 127.0.0.1. Needs root (unshare -n),
# Debian's chromium, iproute2, Node.js >= 20 with npm, and a built sfud
# (default target/debug/sfud; override with SFUD_BIN).
set -eu
here=$(cd "$(dirname "$0")" && pwd)

# npm needs the registry, so install before leaving the network.
if [ ! -d "$here/node_modules/playwright-core" ] || [ ! -d "$here/node_modules/whip-whep" ]; then
    (cd "$here" && npm ci --no-audit --no-fund)
fi

export SFUD_BIN="${SFUD_BIN:-$here/../../target/debug/sfud}"
if [ ! -x "$SFUD_BIN" ]; then
    echo "run.sh: no sfud binary at $SFUD_BIN (build it with cargo build, or set SFUD_BIN)" >&2
    exit 1
fi

cd "$here"
exec unshare -n sh -c 'ip link set lo up && exec node --test --test-concurrency=1 "$@"' sh "$@"
