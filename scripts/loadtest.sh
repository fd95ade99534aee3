#!/usr/bin/env bash
# `make loadtest`: serve a model (default: the shipped one) on a free loopback port, run the k6
# script against it (VUS=32 DURATION=30s P99_MS=250 by default) and print k6's summary.
# k6's exit code is the result: 99 when a threshold (p99 latency, error rate) fails.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${MODEL:-src/sentiment_api/models/default}
PORT=${PORT:-8097}
BIN=.venv/bin
SENTIMENT_LOG_LEVEL=warning "$BIN/sentiment-api" serve --model "$MODEL" --port "$PORT" &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 120); do
  curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break
  sleep 0.5
done
"$BIN/k6" run --quiet -e BASE_URL="http://127.0.0.1:$PORT" -e VUS="${VUS:-32}" \
  -e DURATION="${DURATION:-30s}" -e P99_MS="${P99_MS:-250}" deploy/loadtest/k6.js
