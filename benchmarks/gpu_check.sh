#!/usr/bin/env bash
# The paper profile's stages on one GPU at 224 px, on a RAF-DB-sized synthetic set (12,271 train / 3,068 test),
# and the whole profile's time estimated from them: sized for a 15-minute GPU loan (8 minutes by its own estimate
# on one H100-class GPU; --budget trims it). Results, a few kB: DIR/gpu_check.{md,json,log}; the data, checkpoints
# and caches go to a temporary folder that is removed at the end (so every run is a fresh one).
#
#   benchmarks/gpu_check.sh [--out DIR] [--budget SECONDS] [--scratch DIR]   default DIR: ${OUT:-/tmp}/gpu_check
#   benchmarks/gpu_check.sh --small [--out DIR]     the same stages on a tiny set (about a minute on a CPU: the test)
#
# Uses the project's .venv when there is one, else python3 with this checkout on PYTHONPATH (a GPU machine
# with torch, torchvision and the project's other dependencies installed).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$([[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3)}
args=() out="${OUT:-/tmp}/gpu_check"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --small) args+=(--small); shift ;;
        --out) out="$2"; shift 2 ;;
        --budget|--scratch) args+=("$1" "$2"); shift 2 ;;
        *) echo "gpu_check.sh: unknown argument $1 (expected --small, --out DIR, --budget SECONDS, --scratch DIR)" >&2; exit 2 ;;
    esac
done
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "$PYTHON" benchmarks/gpu_check.py "${args[@]}" --out "$out"
