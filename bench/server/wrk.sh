#!/usr/bin/env bash
# Benchmark the HTTP service with wrk the way issue 4 measures it, and write the raw results for
# BENCHMARKS.md.
#
#   bash bench/server/wrk.sh [MODEL_DIR]      (make bench-server)
#
# Needs wrk, taskset and curl (apt-get install -y wrk util-linux curl) and the project's .venv
# (`make install`; VENV=DIR uses another environment).
#
# - single-tweet POST /predict bodies drawn from the reference tweets (../shared/data/nlp_data.xlsx),
#   sent by post.lua beside this script;
# - wrk, pinned to core 1 with taskset (the server is not pinned: it has both cores, shared with wrk);
# - for each worker count in $WORKERS and each connection count in $CONNECTIONS: a warm-up, then a
#   timed run; the same for plain_server.py beside this script (no batching) as the baseline (and
#   with --exact-int8 on a CPU without VNNI); plus the engine's offline batched throughput
#   (sentiment-api bench) in the same run, for the gap between the two.
#
# Environment: WORKERS="1 2"  CONNECTIONS="1 32"  DURATION=30s  WARMUP=5s  PORT=8099  DATA=...  OUT=...
# Run it on a quiet machine: other CPU load (training jobs) makes every number meaningless.
# The server is stopped however the script ends.
set -euo pipefail
cd "$(dirname "$0")/../.."
source deploy/common.sh

MODEL=${1:-src/sentiment_api/models/default}
WORKERS=${WORKERS:-"1 2"}
CONNECTIONS=${CONNECTIONS:-"1 32"}
DURATION=${DURATION:-30s}
WARMUP=${WARMUP:-5s}
PORT=${PORT:-8099}
DATA=${DATA:-../shared/data/nlp_data.xlsx}
OUT=${OUT:-runs/load-test/$(date -u +%Y%m%dT%H%M%SZ)}
BIN=${VENV:-.venv}/bin
URL="http://127.0.0.1:${PORT}"
LUA=bench/server/post.lua

require wrk:wrk taskset:util-linux curl:curl
require_venv "$BIN" python sentiment-api
[[ -f $DATA ]] || { echo "no data file at $DATA (set DATA=...)" >&2; exit 1; }
server=
trap 'stop_server "$server"' EXIT
mkdir -p "$OUT"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" | tee "$OUT/machine.txt"
nproc >>"$OUT/machine.txt"

# 1. Bodies: 1,000 reference tweets as JSON, one a line, rotated through by post.lua.
"$BIN/python" - "$DATA" "$OUT/bodies.txt" <<'PY'
import json, sys
import pandas as pd

tweets = pd.read_excel(sys.argv[1], sheet_name="Train")["tweet_text"].dropna().astype(str)
tweets = [t for t in tweets if t.strip()][:1000]
with open(sys.argv[2], "w") as out:
    out.writelines(json.dumps({"text": tweet}) + "\n" for tweet in tweets)
print(f"{len(tweets)} bodies")
PY

# 2. The engine's offline batched throughput, measured now, on this machine, for the 85% target: the
#    Optimise issue's bench (one session of 2 threads, batches of 64).
"$BIN/sentiment-api" bench "$MODEL" --data "$DATA" --out "$OUT/bench" --threads 2 --repeats 3 \
  >"$OUT/bench.txt" 2>&1 || echo "bench failed: see $OUT/bench.txt" >&2

# load_each_connection_count NAME: for each count in $CONNECTIONS, a warm-up and then a timed run of
# wrk (pinned to core 1) against the running $server, into wrk-NAME-cCOUNT.txt.
load_each_connection_count() {
  local connections
  for connections in $CONNECTIONS; do
    taskset -c 1 wrk -t1 -c"$connections" -d"$WARMUP" -s "$LUA" "$URL" -- "$OUT/bodies.txt" statuses=0 \
      >/dev/null
    taskset -c 1 wrk -t1 -c"$connections" -d"$DURATION" --latency -s "$LUA" "$URL" -- "$OUT/bodies.txt" \
      statuses=0 | tee "$OUT/wrk-$1-c${connections}.txt"
  done
}

# 3. The server under load, for each worker count.
for workers in $WORKERS; do
  SENTIMENT_LOG_LEVEL=warning "$BIN/sentiment-api" serve --model "$MODEL" --port "$PORT" --workers "$workers" \
    >"$OUT/server-w${workers}.log" 2>&1 &
  server=$!
  wait_ready "$URL/readyz" 120 "$server" || { tail -n 20 "$OUT/server-w${workers}.log" >&2; exit 1; }
  sleep 2  # let every worker finish warming up
  load_each_connection_count "w${workers}"
  curl -s "$URL/metrics" >"$OUT/metrics-w${workers}.txt"
  stop_server "$server"
  server=
done

# 3b. The baseline: a plain FastAPI + ONNX Runtime server (no batching) on the same model.onnx; on a
#     CPU whose int8 products saturate (no VNNI), also with the exact products our engine uses there
#     ("plainexact"), so the comparison is like for like in answers as well.
plains=("plain:")
if "$BIN/python" -c 'import sys; from sentiment_api.core.devices import this_cpu; sys.exit(not this_cpu().saturates_int8)'; then
  plains+=("plainexact:--exact-int8")
fi
for plain in "${plains[@]}"; do
  name=${plain%%:*} flags=${plain#*:}
  # shellcheck disable=SC2086  # flags: empty or one option
  "$BIN/python" bench/server/plain_server.py "$MODEL" --port "$PORT" $flags >"$OUT/server-$name.log" 2>&1 &
  server=$!
  wait_ready "$URL/" 120 "$server" || { tail -n 20 "$OUT/server-$name.log" >&2; exit 1; }
  load_each_connection_count "w${name}"
  stop_server "$server"
  server=
done

# 4. One line per run: requests/s, p50, p99, errors ("plain": the baseline server).
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
