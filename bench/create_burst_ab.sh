#!/bin/bash
# Create bursts side by side (docs/benchmarks.md "Create bursts"): two builds
# alternating, RUNS times each, `node bench/create_burst.js` per run with the
# whole run's CPU (perf stat task-clock: client, cortexd, every sandbox).
#   bench/create_burst_ab.sh BEFORE_BUILD_DIR AFTER_BUILD_DIR
# with the bench env of docs/hacking.md exported (absolute paths); CORTEXD and
# MINI_AGENT are taken from each build dir.  Logs: $OUT (default /tmp).
set -u
before=$1 after=$2 runs=${RUNS:-2} out=${OUT:-/tmp}
cd "$(dirname "$0")/.."
for i in $(seq 1 "$runs"); do
	for side in before after; do
		b=$before; [ $side = after ] && b=$after
		echo "== $side run $i, load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%T)"
		CORTEXD=$b/cortexd MINI_AGENT=$b/mini-agent perf stat -x, -e task-clock \
			-o "$out/burst-$side-$i.stat" -- node bench/create_burst.js >"$out/burst-$side-$i.log" 2>&1
		grep -E "^round|best|left after|cortexd's own CPU|prepare job (total|disk)" "$out/burst-$side-$i.log"
		echo "CPU of the run (task-clock ms): $(grep task-clock "$out/burst-$side-$i.stat" | cut -d, -f1)"
	done
done
echo "== end, load $(cut -d' ' -f1-3 /proc/loadavg)"
