#!/bin/bash
# The flood side by side for two builds (docs/benchmarks.md "Streaming
# ceiling"): each run is a whole `node bench/flood.js` (cortexd against nginx,
# interleaved), the two builds alternating, RUNS times each, the load average
# printed before each; the ratios to compare are each run's cortexd / nginx.
#   bench/flood_ab.sh BEFORE_BUILD_DIR AFTER_BUILD_DIR
# with the bench env of docs/hacking.md exported (absolute paths); CORTEXD and
# MINI_AGENT are taken from each build dir (ws-agent sits next to cortexd).
# BENCH_FLOOD_* pass through (e.g. BENCH_FLOOD_SIZES=4096,65536).  Logs: $OUT.
set -u
before=$1 after=$2 runs=${RUNS:-2} out=${OUT:-/tmp}
cd "$(dirname "$0")/.."
for i in $(seq 1 "$runs"); do
	for side in before after; do
		b=$before; [ $side = after ] && b=$after
		echo "== $side run $i, load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%T)"
		CORTEXD=$b/cortexd MINI_AGENT=$b/mini-agent node bench/flood.js >"$out/flood-$side-$i.log" 2>&1
		grep -E "cortexd/nginx|CPU per frame" "$out/flood-$side-$i.log"
	done
done
echo "== end, load $(cut -d' ' -f1-3 /proc/loadavg)"
