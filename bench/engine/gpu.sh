#!/usr/bin/env bash
# Measure the engine and the HTTP service on an NVIDIA GPU, and the same machine's CPU engine, in one
# run (issue 14); the figures go into BENCHMARKS.md, "GPUs".
#
#   bash bench/engine/gpu.sh [CHECKPOINT]      (make bench-gpu)
#
# Needs the repository, a Python with this project's dependencies (PYTHON=..., default .venv/bin/python,
# else python3), and for the GPU parts an NVIDIA GPU with a CUDA build of torch and/or onnxruntime-gpu
# (`pip uninstall -y onnxruntime && pip install 'sentiment-api[gpu]'`), and wrk for the HTTP parts
# (apt-get install -y wrk). A part whose runtime is missing is skipped, saying why, and the rest goes on
# (bench/engine/gpu.py says what each part measures).
#
# Environment: OUT=DIR (results.json, results.md, server logs; default runs/gpu-bench/DATE)
#   CPU_ONLY=1  skip every GPU part          QUICK=1  few tweets, short runs (checks the script itself)
#   SECONDS_PER_RUN=10  each HTTP measurement  WORKERS="1 4"  CONNECTIONS="32 256"
# One run takes about 8 minutes on an H100 machine with 16 cores; it stops any server it started.
set -euo pipefail
cd "$(dirname "$0")/../.."

OUT=${OUT:-runs/gpu-bench/$(date -u +%Y%m%dT%H%M%SZ)}
if [[ -z ${PYTHON:-} ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
mkdir -p "$OUT"

echo "== GPU"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/nvidia-smi.txt" \
    || echo "nvidia-smi found no GPU"
else
  echo "no nvidia-smi: no NVIDIA driver here; the GPU parts will be skipped" | tee "$OUT/nvidia-smi.txt"
fi

args=(--out "$OUT" --seconds "${SECONDS_PER_RUN:-10}")
[[ -n ${1:-} ]] && args+=(--checkpoint "$1")
[[ ${CPU_ONLY:-0} == 1 ]] && args+=(--cpu-only)
[[ ${QUICK:-0} == 1 ]] && args+=(--quick)
# shellcheck disable=SC2206  # word lists on purpose
[[ -n ${WORKERS:-} ]] && args+=(--workers ${WORKERS})
# shellcheck disable=SC2206
[[ -n ${CONNECTIONS:-} ]] && args+=(--connections ${CONNECTIONS})

# the package from this checkout, installed or not
PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" bench/engine/gpu.py "${args[@]}"
echo "wrote $OUT/results.json and $OUT/results.md"
