#!/usr/bin/env bash
# cortex-run.sh — what `make run` runs: cortexd on loopback, for trying Cortex.
#
# It makes the data dir, an admin token and a config file if they are missing,
# prints a quick start, and runs cortexd in the foreground.  When no model
# provider is configured — ANTHROPIC_BASE_URL and ANTHROPIC_API_KEY unset here
# and no "provider" in the config file — it first starts the demo model
# (tests/model-server.js with MODEL_DEMO=1) on 127.0.0.1 and points cortexd's
# provider at it: every reply starts with "[demo model — not a real AI]".
# CORTEX_DEMO=0 never starts it.  A user's own ai-providers setting always
# wins over cortexd's provider, the demo included.
#
# Ctrl-C (or SIGTERM/SIGHUP to this script) stops cortexd, then the demo
# model; the demo model also exits when this script dies (its stdin is a pipe
# from here).  Exit status: cortexd's.
#
# Environment (the Makefile's run target sets the first four):
#   CORTEXD          cortexd binary              (build/cortexd)
#   CORTEX_LISTEN    host:port                   (127.0.0.1:8787)
#   CORTEX_DATA_DIR  data dir                    (.cortex)
#   IMAGE_STORE      the machine's image store   (/var/cache/cortex/store)
#   CORTEX_CONFIG    config file                 ($CORTEX_DATA_DIR/cortexd.json; made if missing)
#   CORTEXCTL        for the printed quick start (build/cortexctl)
#   NODE             node                        (node)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
CORTEXD=${CORTEXD:-build/cortexd}
LISTEN=${CORTEX_LISTEN:-127.0.0.1:8787}
DATA=${CORTEX_DATA_DIR:-.cortex}
CONFIG=${CORTEX_CONFIG:-$DATA/cortexd.json}
IMAGE_STORE=${IMAGE_STORE:-/var/cache/cortex/store}
CORTEXCTL=${CORTEXCTL:-build/cortexctl}
NODE=${NODE:-node}
DEMO_SERVER="$here/../tests/model-server.js"
URL="http://$LISTEN"

mkdir -p "$DATA" && chmod 700 "$DATA"
if [ -z "${CORTEX_ADMIN_TOKEN:-}" ] && [ ! -s "$DATA/admin.token" ]; then
	(umask 077; echo "cx_$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')" > "$DATA/admin.token")
fi
tok=${CORTEX_ADMIN_TOKEN:-$(cat "$DATA/admin.token")}
# The machine's image store, where `make image` unpacked the default image.
[ -f "$CONFIG" ] || (umask 077; echo "{\"images\":{\"dir\":\"$IMAGE_STORE\"}}" > "$CONFIG")

# Where cortexd's provider comes from: the environment, the config file, or nowhere.
provider=""
if [ -n "${ANTHROPIC_BASE_URL:-}" ] || [ -n "${ANTHROPIC_API_KEY:-}" ]; then
	provider="ANTHROPIC_BASE_URL/ANTHROPIC_API_KEY in the environment (${ANTHROPIC_BASE_URL:-https://api.anthropic.com})"
elif "$NODE" -e 'const c = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
		 process.exit(c && typeof c === "object" && "provider" in c ? 0 : 1)' "$CONFIG" 2>/dev/null; then
	provider="\"provider\" in $CONFIG"
fi

demo_pid=""
stop_demo() {
	[ -n "$demo_pid" ] || return 0
	kill -TERM "$demo_pid" 2>/dev/null || true
	wait "$demo_pid" 2>/dev/null || true
	demo_pid=""
}
if [ -z "$provider" ] && [ "${CORTEX_DEMO:-1}" != 0 ]; then
	# stdin is the lifeline (MODEL_LIFELINE): it closes when this script ends, however it ends.
	coproc DEMO { MODEL_DEMO=1 MODEL_LIFELINE=1 PORT=0 exec "$NODE" "$DEMO_SERVER"; }
	demo_pid=$DEMO_PID
	trap stop_demo EXIT
	line=""
	read -r -t 20 line <&"${DEMO[0]}" || true
	port=${line##*listening on }
	if [[ ! "$port" =~ ^[0-9]+$ ]]; then
		echo "cortex-run: the demo model did not start (got: '$line')" >&2
		exit 1
	fi
	export ANTHROPIC_BASE_URL="http://127.0.0.1:$port" ANTHROPIC_API_KEY="demo-not-a-real-key"
	cat <<EOF
================================================================================
 DEMO MODEL: no model provider is configured, so cortexd's provider is the demo
 model at $ANTHROPIC_BASE_URL (tests/model-server.js, pid $demo_pid).
 It is NOT an AI: every reply starts with "[demo model — not a real AI]" and is
 canned text, streamed through the real Claude Code agent in a real sandbox.
 To use a real provider, stop this (Ctrl-C) and do one of:
   ANTHROPIC_API_KEY=sk-ant-... make run         (ANTHROPIC_BASE_URL for another endpoint)
   add "provider":{"base_url":"https://api.anthropic.com","api_key":"sk-ant-..."} to $CONFIG
 or, per user, without a restart (wins over the demo):
   curl -X PUT -H "Authorization: Bearer USER_TOKEN" $URL/v1/settings/ai-providers/default \\
     -d '{"kind":"anthropic","base_url":"https://api.anthropic.com","api_key":"sk-ant-..."}'
================================================================================
EOF
else
	echo "model provider: ${provider:-none (CORTEX_DEMO=0): agents get no model until a user sets ai-providers}"
fi

cat <<EOF
admin token: $tok
quick start (docs in README.md):
  export CORTEX_URL=$URL CORTEX_TOKEN=$tok
  export CORTEX_TOKEN=\$($CORTEXCTL --json users create alice | sed 's/.*"token":"\\([^"]*\\)".*/\\1/')
  id=\$($CORTEXCTL sessions create --wait)
  $CORTEXCTL chat \$id          # type a line; the reply streams; Ctrl-C cancels
EOF

# cortexd in the background, so this script can stop the demo model after it.
# (A background job starts with SIGINT ignored; cortexd sets its own handler.)
cortexd_pid=""
forward() { [ -z "$cortexd_pid" ] || kill -"$1" "$cortexd_pid" 2>/dev/null || true; }
trap 'forward INT' INT
trap 'forward TERM' TERM
trap 'forward HUP' HUP
"$CORTEXD" --listen "$LISTEN" --data-dir "$DATA" --config "$CONFIG" &
cortexd_pid=$!
rc=0
while :; do
	wait "$cortexd_pid" && rc=0 || rc=$?
	# wait returns early (>128) when a trapped signal arrives; go on until cortexd is gone.
	kill -0 "$cortexd_pid" 2>/dev/null || break
done
# cortexd's own status if that last wait was cut short by a signal (127: already told).
wait "$cortexd_pid" 2>/dev/null && rc=0 || { r=$?; [ "$r" = 127 ] || rc=$r; }
stop_demo
exit "$rc"
