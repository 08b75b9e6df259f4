#!/usr/bin/env bash
# H200 benchmark in <= 8 minutes: SD-2.1-base-shaped YONOS one step (batch 1 and 8) vs LDM-SR-100 and
# StableSR-200, random weights, bf16, compiled; one JSON in reports/bench/ (see bench/gpu_bench.py).
#   bench/gpu.sh [gpu_bench.py options]       e.g. --compile-mode max-autotune-no-cudagraphs
# PYTHON picks the interpreter (default .venv/bin/python); GPU_BENCH_TIMEOUT_S the hard limit (default 465 s:
# the script's own deadline is 450 s, this is the backstop; the JSON is rewritten after every section).
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-.venv/bin/python}"
[[ -x "$PY" ]] || PY="$(command -v python3)"
LIMIT="${GPU_BENCH_TIMEOUT_S:-465}"

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "bench/gpu.sh: no CUDA device (nvidia-smi finds none); run it on a GPU host, or '$PY bench/gpu_bench.py --tiny' for the CPU check" >&2
  exit 1
fi
nvidia-smi
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "bench/gpu.sh: $PY's torch sees no CUDA device (a CPU-only build?); install a CUDA build of torch (make setup)" >&2
  exit 1
fi

rc=0
timeout --kill-after=10s "$LIMIT" "$PY" bench/gpu_bench.py "$@" || rc=$?
if [[ $rc -eq 124 || $rc -eq 137 ]]; then
  echo "bench/gpu.sh: stopped after ${LIMIT} s; the JSON holds the sections finished before (status 'running' = cut)" >&2
fi
exit "$rc"
