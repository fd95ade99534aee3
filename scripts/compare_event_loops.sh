#!/usr/bin/env bash
# The server on uvloop against asyncio at ordinary load (BENCHMARKS.md, "Overload, after the fix").
#
#   bash scripts/compare_event_loops.sh [MODEL_DIR]
#
# For each round, each loop: the server (one worker, default settings, SENTIMENT_EVENT_LOOP), 5 s of
# warm-up, then wrk pinned to core 1 for $DURATION at 32 connections and at 1; one line per run.
# Needs wrk, taskset and curl, and the project's .venv. Environment: ROUNDS=2 DURATION=15s PORT=8131.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh

MODEL=${1:-src/sentiment_api/models/default}
ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-15s}
PORT=${PORT:-8131}
DATA=${DATA:-../shared/data/nlp_data.xlsx}
BIN=${VENV:-.venv}/bin
URL="http://127.0.0.1:${PORT}"
OUT=$(mktemp -d)

require wrk:wrk taskset:util-linux curl:curl
require_venv "$BIN" python sentiment-api
server=
trap 'stop_server "$server"; rm -rf "$OUT"' EXIT

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
  for loop in uvloop asyncio; do
    SENTIMENT_EVENT_LOOP=$loop SENTIMENT_LOG_LEVEL=warning "$BIN/sentiment-api" serve --model "$MODEL" \
      --port "$PORT" >"$OUT/server.log" 2>&1 &
    server=$!
    wait_ready "$URL/readyz" 120 "$server" || { tail -n 20 "$OUT/server.log" >&2; exit 1; }
    sleep 2
    for connections in 32 1; do
      taskset -c 1 wrk -t1 -c"$connections" -d5s -s "$OUT/bodies.lua" "$URL" >/dev/null
      result=$(taskset -c 1 wrk -t1 -c"$connections" -d"$DURATION" --latency -s "$OUT/bodies.lua" "$URL")
      echo "round $round $loop, $connections connections: $(awk '/Requests\/sec/ {print $2}' <<<"$result") requests/s," \
        "p50 $(awk '$1 == "50%" {print $2}' <<<"$result"), p99 $(awk '$1 == "99%" {print $2}' <<<"$result")" \
        "$(grep -E 'Non-2xx|Socket errors' <<<"$result" | tr '\n' ' ')"
    done
    stop_server "$server"
    server=
  done
done
