#!/usr/bin/env bash
# Mutation testing of one science module, as measured in benchmarks/README.md ("Mutation testing of the science").
#
#   benchmarks/mutation.sh MODULE [MUTMUT_RUN_ARGS...]
#
# MODULE: metrics, stats, data, landmarks, heatmaps, models, training, verdicts or rafdb. The tree is copied
# (without .git and mutants/) to ${MUTATION_DIR:-${TMPDIR:-/tmp}/fer_mutation}/MODULE, [tool.mutmut] there is set
# to mutate that module alone and to select that module's own test files, and `mutmut run` is started there with
# one worker under nice, capped at ${MUTATION_CAP:-1500} s. For models, training and verdicts only the functions that
# compute the science are run (the globs below); any further arguments replace that selection
# (e.g. the names of the survivors, to rerun them after new tests). Results stay in the copy:
#   cd "$dir" && mutmut results; mutmut show NAME
# The copy is reused between calls (mutmut keeps its state in mutants/); remove it to start afresh.
# MUTATION_TIMEOUT_MULTIPLIER (default 2.0, pyproject.toml) re-judges the timed-out mutants with a longer limit: on a
# loaded machine a mutant the tests pass can run past 2x its tests' measured time.
set -euo pipefail

module=${1:?usage: benchmarks/mutation.sh MODULE [MUTMUT_RUN_ARGS...]}
shift
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
dir=${MUTATION_DIR:-${TMPDIR:-/tmp}/fer_mutation}/$module

case $module in
    metrics) target="fer_lib/evaluation/metrics.py" tests="tests/test_metrics.py" ;;
    stats) target="fer_lib/evaluation/stats.py" tests="tests/test_stats.py" ;;
    data) target="fer_lib/data/tensors.py" tests="tests/test_data.py" ;;
    landmarks) target="fer_lib/data/landmarks.py" tests="tests/test_landmarks.py" ;;
    heatmaps) target="fer_lib/data/heatmaps.py" tests="tests/test_heatmaps.py" ;;
    models) target="fer_lib/models/arm.py fer_lib/models/landmark.py fer_lib/models/fusion.py"
            tests="tests/test_models.py tests/test_future_work.py" ;;
    training) target="fer_lib/training.py" tests="tests/test_training.py tests/test_future_work.py" ;;
    verdicts) target="fer_lib/report/verdicts.py" tests="tests/test_stats.py tests/test_headroom.py tests/test_settings.py" ;;
    rafdb) target="fer_lib/data/rafdb.py" tests="tests/test_rafdb.py" ;;
    *) echo "unknown module: $module" >&2; exit 2 ;;
esac
# A test left out of the run for its cost (37 s, against a second or less for the others): MUTATION_FULL=1 keeps it,
# to rerun the survivors against the whole file.
deselect=""
case $module in
    stats | verdicts) deselect="tests/test_stats.py::test_one_error_rate_for_the_whole_table_in_its_worst_case" ;;
esac
if [ "${MUTATION_FULL:-0}" = 1 ]; then deselect=""; fi

# The functions in scope where a module also holds plumbing (progress, printing, file I/O, argument checks).
# mutmut 3 names a mutant fer_lib.MODULE.x_FUNCTION__mutmut_N (methods: xǁCLASSǁMETHOD__mutmut_N).
declare -a selection=()
case $module in
    models) selection=(
        "fer_lib.models.arm.xǁARMǁ*"                                  # the attention-rectification block
        "fer_lib.models.landmark.xǁLandmarkCNNǁ*"                          # the landmark CNN (Table 1) and its forward
        "fer_lib.models.fusion.xǁFusionModelǁlandmark_per_image*"        # the landmark branch's ARM map
        "fer_lib.models.fusion.xǁFusionModelǁlandmark_probabilities*"    # eq. 1's probabilities (temperature-scaled)
        "fer_lib.models.fusion.xǁFusionModelǁfeature_weight*"            # eq. 1-2: confidence x agreement, the variants
        "fer_lib.models.fusion.xǁFusionModelǁbatch_terms*"               # both branches' ARM batch terms
        "fer_lib.models.fusion.xǁFusionModelǁforward_per_image_maps*"    # eq. 2's fusion of the two features
        "fer_lib.models.fusion.xǁFusionModelǁloss*"                      # eq. 3
        "fer_lib.models.fusion.xǁWeightGateǁ*"                           # the learned gate
        "fer_lib.models.fusion.x_fit_temperature*"                       # the calibrated weighting's temperature
        ) ;;
    training) selection=(
        "fer_lib.training.x__lr_schedule*"          # the learning-rate schedules
        "fer_lib.training.x_validation_loss*"       # eq. 3 on the validation split, what fusion runs select on
        "fer_lib.training.x__keep_epoch*"           # which epoch is kept (best.pt), for both loops
        "fer_lib.training.x_rgb_feature_cache*"     # the frozen features per flip state
        "fer_lib.training.x_landmark_inputs*"       # the landmark inputs in the same flip state
        "fer_lib.training.x_calibrate_temperature*" # the calibrated weighting's temperature on validation
        ) ;;
    verdicts) selection=(
        "fer_lib.report.verdicts.x_significance_rows*"      # McNemar and the intervals per seed, the pooled row
        "fer_lib.report.verdicts.x__intervals_of*"          # which interval each row takes, its variance components
        "fer_lib.report.verdicts.x_pooled_result*"          # a pooled row read back as a PooledResult
        "fer_lib.report.verdicts.x_family_p_values*"        # Holm over a family
        "fer_lib.report.verdicts.x_per_seed*"               # per-seed and pooled rows
        "fer_lib.report.verdicts.x_pooled*"
        "fer_lib.report.verdicts.x__test_from_rows*"        # a claim read from its table
        "fer_lib.report.verdicts.x__p_from_interval*"
        "fer_lib.report.verdicts.x__too_few_seeds*"
        "fer_lib.report.verdicts.x_table_levels*"           # each test's share of the table's alpha
        "fer_lib.report.verdicts.x__words*"                 # the verdict words an interval says
        "fer_lib.report.verdicts.x_decide*"                 # the verdicts
        "fer_lib.report.verdicts.x_outlying_seed_note*"     # the verdict without an outlying seed
        "fer_lib.report.verdicts.x__without*"
        "fer_lib.report.verdicts.x_w_tests*"                # the paper's w against each other w
        "fer_lib.report.verdicts.x_w_verdict*"
        ) ;;
esac
if [ $# -gt 0 ]; then selection=("$@"); fi

mkdir -p "$dir"
tar -C "$root" --exclude=./.git --exclude=./mutants --exclude=./.venv --exclude=./runs --exclude=./data \
    --exclude=__pycache__ --exclude=.pytest_cache -cf - . | tar -C "$dir" -xf -  # mutants/ (mutmut's state) kept
# fer_lib.models.arm imports torchvision lazily (7 s on this machine with the torch._dynamo it loads): in the copy's
# conftest, so that mutmut's fork server loads it once instead of every mutant's worker (whose tests then time out)
printf '\nimport torchvision.models  # noqa: E402,F401 (benchmarks/mutation.sh)\n' >>"$dir/tests/conftest.py"
"$python" - "$dir/pyproject.toml" "$target" "$deselect" $tests <<'EOF'
import os, re, sys
path, target, deselect, tests = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
text = open(path).read()
mutated = ", ".join(f'"{path}"' for path in target.split())
text = re.sub(r"only_mutate = \[.*?\n\]", f"only_mutate = [{mutated}]", text, count=1, flags=re.S)
selection = ", ".join(f'"{t}"' for t in tests)
text = re.sub(r"pytest_add_cli_args_test_selection = \[.*?\n\]",
              f"pytest_add_cli_args_test_selection = [{selection}]", text, count=1, flags=re.S)
if deselect:
    text = text.replace('"no:cacheprovider"]', f'"no:cacheprovider", "--deselect", "{deselect}"]', 1)
if os.environ.get("MUTATION_TIMEOUT_MULTIPLIER"):  # mutmut then re-judges only the mutants that timed out
    text = re.sub(r"timeout_multiplier = [0-9.]+", f"timeout_multiplier = {float(os.environ['MUTATION_TIMEOUT_MULTIPLIER'])}", text)
open(path, "w").write(text)
EOF
cd "$dir"
mutmut=$(dirname "$python")/mutmut
echo "mutating $target against $tests in $dir; selection: ${selection[*]:-all}"
MPLBACKEND=Agg PYTHONPATH="$dir" timeout "${MUTATION_CAP:-1500}" \
    nice -n 5 "$mutmut" run --max-children 1 "${selection[@]}" || echo "mutmut exited with $? (124: the cap)"
