#!/usr/bin/env bash
# The paper profile's stages on one GPU at 224 px, on a RAF-DB-sized synthetic set (12,271 train / 3,068 test),
# and the whole profile's time estimated from them; under 10 minutes on one H100. Results in DIR/gpu_check.md.
#
#   benchmarks/gpu_check.sh [--out DIR]          default DIR: ${OUT:-/tmp/gpu_check}
#   benchmarks/gpu_check.sh --small [--out DIR]  the same stages on a tiny set (seconds, any CPU: the test)
#
# Uses the project's .venv when there is one, else python3 with this checkout on PYTHONPATH (a GPU machine
# with torch, torchvision and the project's other dependencies installed).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$([[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3)}
small="" out="${OUT:-/tmp}/gpu_check"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --small) small="--small"; shift ;;
        --out) out="$2"; shift 2 ;;
        *) echo "gpu_check.sh: unknown argument $1 (expected --small, --out DIR)" >&2; exit 2 ;;
    esac
done
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "$PYTHON" benchmarks/gpu_check.py $small --out "$out"
