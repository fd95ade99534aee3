# shellcheck shell=bash
# Shell helpers for the scripts that start or check a server (deploy/build_image.sh,
# deploy/loadtest/run_k6.sh, bench/server/wrk.sh): system packages checked up front, a server waited
# for with a deadline, and stopped (kill, then wait) however the script ends.

# require COMMAND:PACKAGE...: exit 1 with one line naming the apt-get command for whatever is missing.
require() {
  local pair missing=() packages=()
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 && continue
    missing+=("${pair%%:*}")
    packages+=("${pair#*:}")
  done
  if ((${#missing[@]})); then
    echo "missing ${missing[*]}: apt-get install -y ${packages[*]}" >&2
    exit 1
  fi
}

# require_venv BIN PROGRAM...: exit 1 naming `make install` when the virtual environment lacks one.
require_venv() {
  local bin=$1 program
  shift
  for program in "$@"; do
    [[ -x $bin/$program ]] || {
      echo "missing $bin/$program: run \`make install\` (or set VENV to an environment with the dev extra)" >&2
      exit 1
    }
  done
}

# wait_ready URL SECONDS [PID]: until URL answers 2xx; return 1 if PID exits first or time runs out.
wait_ready() {
  local url=$1 seconds=$2 pid=${3:-}
  local deadline=$((SECONDS + seconds))
  until curl -sf --max-time 2 "$url" >/dev/null; do
    if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
      echo "the server exited before $url answered" >&2
      return 1
    fi
    if ((SECONDS >= deadline)); then
      echo "$url did not answer within $seconds s" >&2
      return 1
    fi
    sleep 0.5
  done
}

# stop_server PID: SIGTERM, SIGKILL if it is still there after 30 s, then reap it. Meant for an EXIT
# trap, so a failing command under `set -e` does not leave the server running.
stop_server() {
  local pid=$1
  [[ -n $pid ]] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 60); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
