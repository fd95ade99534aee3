#!/usr/bin/env bash
# One server setting's values against each other at ordinary load, in alternating rounds
# (BENCHMARKS.md: the event loop, "Overload, after the fix"; spinning, issue 11).
#
#   SETTING=EVENT_LOOP VALUES="uvloop asyncio" bash scripts/compare_settings.sh [MODEL_DIR]
#   SETTING=SPIN VALUES="never while_running always" bash scripts/compare_settings.sh
#
# For each round, each value: the server (one worker, default settings but SENTIMENT_$SETTING), 5 s
# of warm-up, then wrk pinned to core 1 for $DURATION at 32 connections and at 1; one line per run,
# with the CPU seconds the server's processes used per request, and then per second of idling
# ($IDLE seconds with no requests: what spinning threads burn).
# Needs wrk, taskset and curl, and the project's .venv.
# Environment: SETTING=EVENT_LOOP VALUES="uvloop asyncio" ROUNDS=2 DURATION=15s IDLE=10 PORT=8131.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh

MODEL=${1:-src/sentiment_api/models/default}
SETTING=${SETTING:-EVENT_LOOP}
VALUES=${VALUES:-"uvloop asyncio"}
ROUNDS=${ROUNDS:-2}
IDLE=${IDLE:-10}
DURATION=${DURATION:-15s}
PORT=${PORT:-8131}
DATA=${DATA:-../shared/data/nlp_data.xlsx}
BIN=${VENV:-.venv}/bin
URL="http://127.0.0.1:${PORT}"
OUT=$(mktemp -d)

require wrk:wrk taskset:util-linux curl:curl pstree:psmisc
require_venv "$BIN" python sentiment-api
server=
trap 'stop_server "$server"; rm -rf "$OUT"' EXIT

# cpu_seconds PID: user + system CPU seconds of PID and its descendants so far
cpu_seconds() {
  local pids
  pids=$(pstree -p -T "$1" | grep -o '([0-9]*)' | tr -d '()')
  # shellcheck disable=SC2086
  (for pid in $pids; do cut -d' ' -f14,15 "/proc/$pid/stat" 2>/dev/null; done) |
    awk -v hz="$(getconf CLK_TCK)" '{ticks += $1 + $2} END {printf "%.2f", ticks / hz}'
}

"$BIN/python" - "$DATA" "$OUT/bodies.lua" <<'PY'
import json, sys
import pandas as pd

tweets = pd.read_excel(sys.argv[1], sheet_name="Train")["tweet_text"].dropna().astype(str)
with open(sys.argv[2], "w") as out:
    out.write("bodies = {\n")
    for tweet in [t for t in tweets if t.strip()][:1000]:
        out.write("  %s,\n" % json.dumps(json.dumps({"text": tweet})))
    out.write('}\ncounter = 0\nwrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n')
    out.write('request = function()\n  counter = counter + 1\n')
    out.write('  return wrk.format(nil, "/predict", nil, bodies[(counter % #bodies) + 1])\nend\n')
PY

echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-); load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq "$ROUNDS"); do
  for value in $VALUES; do
    env "SENTIMENT_$SETTING=$value" SENTIMENT_LOG_LEVEL=warning "$BIN/sentiment-api" serve --model "$MODEL" \
      --port "$PORT" >"$OUT/server.log" 2>&1 &
    server=$!
    wait_ready "$URL/readyz" 120 "$server" || { tail -n 20 "$OUT/server.log" >&2; exit 1; }
    sleep 2
    for connections in 32 1; do
      taskset -c 1 wrk -t1 -c"$connections" -d5s -s "$OUT/bodies.lua" "$URL" >/dev/null
      before=$(cpu_seconds "$server")
      result=$(taskset -c 1 wrk -t1 -c"$connections" -d"$DURATION" --latency -s "$OUT/bodies.lua" "$URL")
      used=$(awk -v a="$before" -v b="$(cpu_seconds "$server")" 'BEGIN {print b - a}')
      requests=$(awk '/requests in/ {print $1}' <<<"$result")
      echo "round $round $SETTING=$value, $connections connections: $(awk '/Requests\/sec/ {print $2}' <<<"$result") requests/s," \
        "p50 $(awk '$1 == "50%" {print $2}' <<<"$result"), p99 $(awk '$1 == "99%" {print $2}' <<<"$result")," \
        "$(awk -v u="$used" -v n="$requests" 'BEGIN {printf "%.2f", 1000 * u / n}') CPU ms per request" \
        "$(grep -E 'Non-2xx|Socket errors' <<<"$result" | tr '\n' ' ')"
    done
    before=$(cpu_seconds "$server")
    sleep "$IDLE"
    echo "round $round $SETTING=$value, idle: $(awk -v a="$before" -v b="$(cpu_seconds "$server")" -v s="$IDLE" \
      'BEGIN {printf "%.3f", (b - a) / s}') CPU seconds per second"
    stop_server "$server"
    server=
  done
done
