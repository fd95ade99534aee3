#!/usr/bin/env bash
# Load-test the HTTP service the way issue 4 measures it, and write the raw results for BENCHMARKS.md.
#
#   scripts/load_test.sh [MODEL_DIR]
#
# - single-tweet POST /predict bodies drawn from the reference tweets (../shared/data/nlp_data.xlsx);
# - wrk, pinned to core 1 with taskset (the server is not pinned: it has both cores, shared with wrk);
# - for each worker count in $WORKERS and each connection count in $CONNECTIONS: a warm-up, then a
#   timed run; plus the engine's offline batched throughput (sentiment-api bench, and
#   scripts/offline_streams.py with the server's batches and streams) in the same run.
#
# Environment: WORKERS="1 2"  CONNECTIONS="1 32"  DURATION=30s  WARMUP=5s  PORT=8099  DATA=...  OUT=...
# Run it on a quiet machine: other CPU load (training jobs) makes every number meaningless.
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=${1:-src/sentiment_api/models/default}
WORKERS=${WORKERS:-"1 2"}
CONNECTIONS=${CONNECTIONS:-"1 32"}
DURATION=${DURATION:-30s}
WARMUP=${WARMUP:-5s}
PORT=${PORT:-8099}
DATA=${DATA:-../shared/data/nlp_data.xlsx}
OUT=${OUT:-runs/load-test/$(date -u +%Y%m%dT%H%M%SZ)}
BIN=.venv/bin
URL="http://127.0.0.1:${PORT}"

command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }
command -v taskset >/dev/null || { echo "taskset is missing: apt-get install -y util-linux" >&2; exit 1; }
mkdir -p "$OUT"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" | tee "$OUT/machine.txt"
nproc >>"$OUT/machine.txt"

# 1. Bodies: 1,000 reference tweets as JSON, rotated through by the wrk script.
"$BIN/python" - "$DATA" "$OUT/bodies.lua" <<'PY'
import json, sys
import pandas as pd

tweets = pd.read_excel(sys.argv[1], sheet_name="Train")["tweet_text"].dropna().astype(str)
tweets = [t for t in tweets if t.strip()][:1000]
with open(sys.argv[2], "w") as out:
    out.write("bodies = {\n")
    for tweet in tweets:
        out.write("  %s,\n" % json.dumps(json.dumps({"text": tweet})))
    out.write("}\n")
    out.write("""
counter = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  counter = counter + 1
  return wrk.format(nil, "/predict", nil, bodies[(counter % #bodies) + 1])
end
""")
print(f"{len(tweets)} bodies")
PY

# 2. The engine's offline batched throughput, measured now, on this machine, for the 85% target:
#    the Optimise issue's bench (one session of 2 threads, batches of 64), and the engine fed the way
#    the server feeds it (arrival-order batches of 12 on two single-threaded streams), like for like.
"$BIN/sentiment-api" bench "$MODEL" --data "$DATA" --out "$OUT/bench" --threads 2 --repeats 3 \
  >"$OUT/bench.txt" 2>&1 || echo "bench failed: see $OUT/bench.txt" >&2
"$BIN/python" scripts/offline_streams.py "$MODEL" "$DATA" --streams 2 --threads 1 --batch 12 \
  | tee "$OUT/offline-streams.txt"

# 3. The server under load, for each worker count.
for workers in $WORKERS; do
  SENTIMENT_LOG_LEVEL=warning "$BIN/sentiment-api" serve --model "$MODEL" --port "$PORT" --workers "$workers" \
    >"$OUT/server-w${workers}.log" 2>&1 &
  server=$!
  for _ in $(seq 120); do
    curl -sf "$URL/readyz" >/dev/null && break
    sleep 0.5
  done
  sleep 2  # let every worker finish warming up
  for connections in $CONNECTIONS; do
    taskset -c 1 wrk -t1 -c"$connections" -d"$WARMUP" -s "$OUT/bodies.lua" "$URL" >/dev/null
    taskset -c 1 wrk -t1 -c"$connections" -d"$DURATION" --latency -s "$OUT/bodies.lua" "$URL" \
      | tee "$OUT/wrk-w${workers}-c${connections}.txt"
  done
  curl -s "$URL/metrics" >"$OUT/metrics-w${workers}.txt"
  kill -TERM "$server"
  wait "$server" || true
done

# 4. One line per run: requests/s, p50, p99, errors.
{
  echo "| workers | connections | requests/s | p50 | p99 | non-2xx | socket errors |"
  echo "| --- | --- | --- | --- | --- | --- | --- |"
  for file in "$OUT"/wrk-w*-c*.txt; do
    name=$(basename "$file" .txt)
    w=${name#wrk-w}; w=${w%%-c*}; c=${name##*-c}
    rps=$(awk '/Requests\/sec/ {print $2}' "$file")
    p50=$(awk '$1 == "50%" {print $2}' "$file")
    p99=$(awk '$1 == "99%" {print $2}' "$file")
    non2xx=$(awk '/Non-2xx/ {print $NF}' "$file")
    socket=$(awk -F': ' '/Socket errors/ {print $2}' "$file")
    echo "| $w | $c | $rps | $p50 | $p99 | ${non2xx:-0} | ${socket:-none} |"
  done
} | tee "$OUT/summary.md"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/machine.txt"
echo "results in $OUT (wrk pinned to core 1 with taskset; the server unpinned)"
