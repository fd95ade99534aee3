#!/usr/bin/env bash
# `make loadtest`: serve a model (default: the shipped one) on loopback port $PORT (8097), run the k6
# script beside this file against it (VUS=32 DURATION=30s P99_MS=250 by default) and print k6's
# summary. The bodies are the reference test tweets (tweets.json here, made by make_tweets.py), or
# TWEETS=FILE (JSON list or one per line). k6's exit code is the result: 99 when a threshold (p99
# latency, error rate) fails.
#
#   bash deploy/loadtest/run_k6.sh
#
# Needs curl (apt-get install -y curl) and the project's .venv with the dev extra, which has k6
# (`make install`; VENV=DIR uses another environment). The server is stopped however the script ends.
set -euo pipefail
cd "$(dirname "$0")/../.."
source deploy/common.sh
MODEL=${MODEL:-src/sentiment_api/models/default}
PORT=${PORT:-8097}
BIN=${VENV:-.venv}/bin
require curl:curl
require_venv "$BIN" sentiment-api k6
SENTIMENT_LOG_LEVEL=warning "$BIN/sentiment-api" serve --model "$MODEL" --port "$PORT" &
server=$!
trap 'stop_server "$server"' EXIT
wait_ready "http://127.0.0.1:$PORT/readyz" 120 "$server"
tweets=${TWEETS:+$(realpath "$TWEETS")}  # k6 reads a relative path from the script's directory
"$BIN/k6" run --quiet -e BASE_URL="http://127.0.0.1:$PORT" -e VUS="${VUS:-32}" \
  -e DURATION="${DURATION:-30s}" -e P99_MS="${P99_MS:-250}" -e TWEETS="$tweets" deploy/loadtest/k6.js
