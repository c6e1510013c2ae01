#!/usr/bin/env bash
# Regenerate every table and figure, or run the tests. Creates the environment when it is missing.
#
#   ./run_all.sh                          demo profile: synthetic RAF-DB, everything end to end
#   ./run_all.sh --profile paper --data /path/to/RAF-DB/basic [--baseline-checkpoint epoch59_acc0.9205.pth]
#   ./run_all.sh test [pytest args]       the test suite
set -euo pipefail
cd "$(dirname "$0")"

VENV=${FER_VENV:-.venv}
PYTHON=${PYTHON:-python3}

ensure_env() {
    # Reinstall when pyproject.toml changed since the last install (its hash is the stamp).
    local stamp="$VENV/.fer_lib-install-stamp"
    local want
    want=$(sha256sum pyproject.toml | cut -d' ' -f1)
    if [[ -x "$VENV/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        return
    fi
    echo "==> creating the environment in $VENV (first run only; a few minutes)" >&2
    local log="$VENV/install.log"
    "$PYTHON" -m venv "$VENV"
    if ! { "$VENV/bin/python" -m pip install --upgrade pip &&
           "$VENV/bin/python" -m pip install -e ".[dev]"; } > "$log" 2>&1; then
        tail -n 30 "$log" >&2
        echo "run_all.sh: installing the environment failed; the full log is $log" >&2
        exit 1
    fi
    echo "$want" > "$stamp"
}

ensure_env
export MPLBACKEND=Agg

if [[ "${1:-}" == "test" ]]; then
    shift
    exec "$VENV/bin/python" -m pytest "$@"
fi

exec "$VENV/bin/python" -m fer_lib run-all "$@"
