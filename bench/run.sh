#!/usr/bin/env bash
# make bench: every benchmark, printing its table.  Numbers are compared as
# ratios measured side by side in one run (absolute times drift on shared hosts).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
export NODE_PATH="$root/.deps/node_modules"
export CORTEXD="${CORTEXD:-$root/build/cortexd}"
export TESTS_DIR="$root/tests"
export MINI_AGENT="${MINI_AGENT:-$root/build/mini-agent}"
export CORTEX_CLAUDE_DIR="${CORTEX_CLAUDE_DIR:-$root/.deps/node_modules/@anthropic-ai/claude-code}"
export CORTEX_TEST_TMP="${CORTEX_TEST_TMP:-$root/build/bench-tmp}"
# The machine's default image (make image) and the store every bench daemon shares.
export CORTEX_DEFAULT_IMAGE="${CORTEX_DEFAULT_IMAGE:-/var/cache/cortex/images/default}"
export CORTEX_IMAGE_STORE="${CORTEX_IMAGE_STORE:-/var/cache/cortex/store}"
mkdir -p "$CORTEX_TEST_TMP"
"$root/build/bench_config" "$CORTEX_TEST_TMP"
"$root/build/bench_guard" | tee "$root/build/bench-guard.txt"
# Issue 16: store put/get, SQLite vs a real etcd; cross-node invalidation over a 3-member etcd.
"$root/build/bench_store" "$(cd "$CORTEX_TEST_TMP" && pwd)" | tee "$root/build/bench-store.txt"
node "$root/bench/invalidate.js"
node "$root/bench/owner.js" # one owner per session: the 307 hop, failover time
"$root/build/egress_bench" | tee "$root/build/bench-egress.txt"
node "$root/bench/ttft.js"
node "$root/bench/latency.js"
node "$root/bench/settings.js"
node "$root/bench/config_change.js"
node "$root/bench/gateway.js"
# Issue 13: text deltas to a client through cortexd vs through nginx (apt's,
# run by the bench) proxying a Node ws flood of the same frames.
node "$root/bench/flood.js"
# Issue 14 point 2: 1 reading + 100 non-reading clients on one session: cortexd RSS, reader turn time, close codes.
node "$root/bench/slow_clients.js"
# Issue 12: TTFT through ws-agent's forwarder and the gateway's socket vs the
# gateway's TCP port; sandbox create with vs without a network namespace.
BENCH_GW_NETNS=1 node "$root/bench/gateway.js"
"$root/build/bench_sandbox_image" "$(cd "$CORTEX_TEST_TMP" && pwd)" | tee "$root/build/bench-sandbox-image.txt"
node "$root/bench/images.js"
# Issue 13 goal 3: a burst of 50 creates with the mini-agent -> creates/s to a hot agent.
node "$root/bench/create_burst.js"
# Issue 13 goal 2: N sessions sending at once (real Claude Code, then the mini-agent) vs the same agents run directly.
node "$root/bench/concurrency.js"
BUILD="$root/build" bash "$root/bench/clone_bench.sh"
# Issue 16 point 4: upgrade restart (SIGHUP) with 20 sessions mid-turn: time unreachable, frames lost (0).
node "$root/bench/upgrade.js"
# Issue 15 point 1: files API list/read/write latency (awake and asleep) and watch latency.
node "$root/bench/files.js"
# Issue 15 point 5: the dashboard's first contentful paint in headless Chromium.
node "$root/bench/dashboard_paint.js"
# Issue 15 point 2: exec start -> first output through cortexd (WebSocket, pty, POST) vs sandbox_exec directly.
node "$root/bench/exec.js"
