#!/bin/bash
# `make fuzz`: run each libFuzzer target of BUILD (default build-fuzz) for
# FUZZ_SECONDS (default 60), seeded with its committed corpus
# tests/fuzz/corpus/<name>/ (read only: new inputs go to BUILD/fuzz-out/<name>/corpus),
# one at a time, under nice.  Prints per target: execs/s, cov and ft
# (libFuzzer's edge and feature coverage at the end), the corpus it grew to,
# and crashes; a crash, leak, UB report or timeout fails the run and its
# reproducer's path is printed (replay it with BUILD-asan's fuzz_<name> FILE,
# or BUILD/fuzz_<name> FILE).
# FUZZ_TARGETS="a b" runs only those; FUZZ_NICE (15) the niceness.
set -uo pipefail
build=${BUILD:-build-fuzz}
secs=${FUZZ_SECONDS:-60}
src=$(cd "$(dirname "$0")" && pwd)
out="$build/fuzz-out"
targets=${FUZZ_TARGETS:-$(cd "$src" && ls fuzz_*.c | sed 's/^fuzz_//; s/\.c$//')}
rc=0
rows=()
for t in $targets; do
	bin="$build/fuzz_$t"
	[ -x "$bin" ] || { echo "fuzz: $bin missing (make fuzz builds it)"; exit 2; }
	mkdir -p "$out/$t/corpus" "$out/$t/crashes"
	log="$out/$t/log"
	echo "fuzz: $t for ${secs}s"
	# the scratch corpus first: libFuzzer writes what it finds into the first dir
	nice -n "${FUZZ_NICE:-15}" "$bin" -max_total_time="$secs" -timeout=25 -rss_limit_mb=2048 \
		-print_final_stats=1 -artifact_prefix="$out/$t/crashes/" \
		"$out/$t/corpus" "$src/corpus/$t" >"$log" 2>&1
	code=$?
	last=$(grep -E '^#[0-9]+' "$log" | tail -1)
	cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
	ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
	corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9]*[a-zA-Z]*\).*/\1/p' <<<"$last")
	eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
	runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
	crashes=$(ls "$out/$t/crashes" | wc -l)
	rows+=("$(printf '%-16s %10s %12s %7s %7s %12s %8s' "$t" "${eps:-?}" "${runs:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$crashes")")
	if [ "$code" -ne 0 ] || [ "$crashes" -ne 0 ]; then
		rc=1
		echo "fuzz: $t FAILED (exit $code); its log: $log"
		grep -E 'ERROR: |runtime error|Test unit written to' "$log" | head -5
		ls -1 "$out/$t/crashes" | sed "s|^|  reproducer: $out/$t/crashes/|"
	fi
done
echo
echo "fuzz: ${secs}s per target ($build, $(clang --version | head -1))"
printf '%-16s %10s %12s %7s %7s %12s %8s\n' target "execs/s" execs cov ft corpus crashes
printf '%s\n' "${rows[@]}"
exit $rc
