#!/usr/bin/env bash
# clone_bench.sh — repo_clone() (libgit2 in cortex-clone, via bench_clone)
# against `git clone` of the same URL: a 1000-file repository served by
# tests/gitserver.js on 127.0.0.1 behind basic auth.  Runs interleaved
# (libgit2, git, libgit2, ...), RUNS each, and prints the medians and their
# ratio (goal: libgit2 / git <= 1.2).
#
#   BUILD=build bash bench/clone_bench.sh     (a Release build of bench_clone)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${BUILD:-$root/build}"
runs="${RUNS:-10}"
files="${FILES:-1000}"
tmp="$(mktemp -d "${TMPDIR:-/tmp}/clone-bench-XXXXXX")"
chmod 755 "$tmp"
server_pid=""
cleanup() {
	[ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT

# A repository: $files files of ~2 KiB in 20 dirs, in 5 commits.
git="git -c user.name=b -c user.email=b@example.com -c init.defaultBranch=main"
$git init -q "$tmp/src"
(
	cd "$tmp/src"
	for c in 1 2 3 4 5; do
		for ((i = 0; i < files; i++)); do
			if (((i + c) % 5 == 0 || c == 1)); then
				d="dir$((i % 20))"
				mkdir -p "$d"
				head -c 1536 /dev/urandom | base64 > "$d/file$i.txt"
			fi
		done
		$git add -A
		$git commit -qm "commit $c"
	done
)
mkdir -p "$tmp/root"
git clone -q --bare "$tmp/src" "$tmp/root/r.git"

token="bench-$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')"
coproc SERVER { exec node "$root/tests/gitserver.js" --root "$tmp/root" --token "$token"; }
server_pid=$SERVER_PID
read -r _ port <&"${SERVER[0]}"
url="http://127.0.0.1:$port/r.git"
uid="${CLONE_UID:-65534}"

now_ms() { date +%s%N | awk '{printf "%.1f\n", $1 / 1000000}'; }
median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.1f\n", (a[NR/2]+a[NR/2+1])/2}'; }

: > "$tmp/lg2.txt"
: > "$tmp/git.txt"
for ((r = 1; r <= runs; r++)); do
	rm -rf "$tmp/ws" "$tmp/stage" "$tmp/cli"
	mkdir -p "$tmp/ws" && mkdir -m 711 "$tmp/stage"
	CLONE_TOKEN="$token" "$build/bench_clone" "$url" "$tmp/stage" "$tmp/ws" "$uid" >> "$tmp/lg2.txt"
	t0=$(now_ms)
	git -c credential.helper= clone -q "http://x-access-token:$token@127.0.0.1:$port/r.git" "$tmp/cli"
	t1=$(now_ms)
	awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f\n", b - a}' >> "$tmp/git.txt"
	n1=$(find "$tmp/ws" -type f -not -path '*/.git/*' | wc -l)
	n2=$(find "$tmp/cli" -type f -not -path '*/.git/*' | wc -l)
	[ "$n1" = "$n2" ] || { echo "file counts differ: $n1 vs $n2" >&2; exit 1; }
done
lg2=$(median < "$tmp/lg2.txt")
cli=$(median < "$tmp/git.txt")
echo "clone of $files files ($(du -sh "$tmp/root/r.git" | cut -f1) packed), $runs runs each, interleaved"
echo "  libgit2 (repo_clone):  all $(tr '\n' ' ' < "$tmp/lg2.txt")"
echo "  git clone (CLI):       all $(tr '\n' ' ' < "$tmp/git.txt")"
awk -v a="$lg2" -v b="$cli" 'BEGIN {printf "median ms: libgit2 %.1f  git %.1f  ratio %.2f (goal <= 1.2)\n", a, b, a / b}'
