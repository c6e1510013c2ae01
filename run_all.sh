#!/usr/bin/env bash
# Regenerate every table and figure, or run the tests. Creates the environment when it is missing.
#
#   ./run_all.sh                          demo profile: synthetic RAF-DB, everything end to end
#   ./run_all.sh --profile paper --data /path/to/RAF-DB/basic [--baseline-checkpoint epoch59_acc0.9205.pth]
#   ./run_all.sh test [pytest args]       the test suite
#   ./run_all.sh lab [jupyter lab args]   explore: JupyterLab on notebooks/, with this environment as kernel "fer-lib"
#
# FER_PYTHON=/path/to/python: an environment of your own (a conda env, a cluster module), used as it is: nothing
# is installed and .venv is not made (install the project into it first: pip install -e ".[dev]").
set -euo pipefail
cd "$(dirname "$0")"

VENV=${FER_VENV:-.venv}
PYTHON=${PYTHON:-python3}

# Bytecode goes to the environment's own cache, written on first import, rather than compiled for every
# installed file by pip: a first install takes about a minute less, and the source tree stays clean even
# where PYTHONDONTWRITEBYTECODE is set (with it set and no cache, every import would compile again).
case "$VENV" in /*) ;; *) VENV="$PWD/$VENV" ;; esac
export PYTHONPYCACHEPREFIX="$VENV/pycache"
unset PYTHONDONTWRITEBYTECODE

ensure_env() {
    [[ -n "${FER_PYTHON:-}" ]] && return  # the given environment, as it is
    # $1: "" for the report, "dev" for the tests. Reinstalls when pyproject.toml changed since the last
    # install (its hash is the stamp) or when the tests need the dev extras a report-only install lacks.
    local extras=$1 stamp="$VENV/.fer_lib-install-stamp" want have=""
    want=$(sha256sum pyproject.toml | cut -d' ' -f1)
    [[ -x "$VENV/bin/python" && -f "$stamp" ]] && have=$(cat "$stamp")
    if [[ "$have" == "$want dev" || "$have" == "$want${extras:+ $extras}" ]]; then
        return
    fi
    local log="$VENV/install.log" target="."
    [[ -n "$extras" ]] && target=".[$extras]"
    if [[ "$have" == "$want" ]]; then
        echo "==> adding the $extras extras to $VENV" >&2
    else
        echo "==> creating the environment in $VENV (first run only; a few minutes)" >&2
        "$PYTHON" -m venv "$VENV"
    fi
    if ! { "$VENV/bin/python" -m pip install --upgrade pip &&
           "$VENV/bin/python" -m pip install --no-compile -e "$target"; } > "$log" 2>&1; then
        tail -n 30 "$log" >&2
        echo "run_all.sh: installing the environment failed; the full log is $log" >&2
        exit 1
    fi
    echo "$want${extras:+ $extras}" > "$stamp"
}

RUN_PYTHON="$VENV/bin/python"
if [[ -n "${FER_PYTHON:-}" ]]; then
    RUN_PYTHON=$FER_PYTHON
    unset PYTHONPYCACHEPREFIX
    if ! (cd / && "$RUN_PYTHON" -c "import importlib.metadata as m; m.version('fer_lib')") 2>/dev/null; then
        echo "run_all.sh: FER_PYTHON=$FER_PYTHON has no fer_lib installed: install the project into it first" \
             "(pip install -e \".[dev]\", or pip install --no-index --find-links WHEELHOUSE -e \".[dev]\" offline)" >&2
        exit 1
    fi
fi

if [[ "${1:-}" == "lab" ]]; then
    shift
    ensure_env ""
    "$RUN_PYTHON" -m fer_lib install-kernel
    exec "$RUN_PYTHON" -m jupyterlab notebooks "$@"  # figures inline: no headless MPLBACKEND here
fi

export MPLBACKEND=Agg

if [[ "${1:-}" == "test" ]]; then
    shift
    ensure_env dev
    exec "$RUN_PYTHON" -m pytest "$@"
fi

ensure_env ""
exec "$RUN_PYTHON" -m fer_lib run-all "$@"
