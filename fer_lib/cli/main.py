"""Command line: ``python -m fer_lib <command>``.

check-data ROOT [--json] [--no-decode]     name the layout found (RAF-DB, AffectNet, FERPlus, CK+),
                                           validate it, counts
convert-data SRC OUT [--classes 7|8] ...   AffectNet, FERPlus or CK+ into RAF-DB's layout (with its
                                           class list)
demo-data OUT --train N --test M --seed S [--layout L]
                                           write the synthetic set in RAF-DB's (or AffectNet's,
                                           FERPlus's, CK+'s) layout
train-baseline --data ROOT --run-dir DIR   train ResNet18 + ARM (the ARM recipe)
train-fusion --data ROOT --baseline CKPT --run-dir DIR
                                           train the landmark branch + fusion (frozen baseline)
evaluate --data ROOT --baseline CKPT [--fusion CKPT] --out DIR
                                           predictions on the test set and the paper's metrics
evaluate --checkpoint RUN [RUN...] --data ROOT [ROOT...] --out DIR [--paired]
                                           cross-dataset: each model on each data set's test split
                                           (shared classes); --paired: the i-th model on the i-th
                                           set (CK+'s folds), with the mean
run-all [--profile P] [--data ROOT] [--set KEY=VALUE] [--seed-offset N] [--workers N]
        [--cross-data OTHER...]
                                           what ./run_all.sh runs: every table and figure
compare-runs RUN_DIR RUN_DIR --out DIR     do two runs give the same verdicts? (seed_stability.md)
plan RUN_DIR [--effect E] [--test-images N]
                                           seeds a finished run's variance components need to
                                           resolve an effect
install-kernel [--prefix DIR]              register this environment as the Jupyter kernel "fer-lib"
import-images SRC OUT [--test-fraction F]  face photos (class folders, RAF-DB mirror, or a CSV) into
                                           RAF-DB's layout
predict PATH... --baseline CKPT [--fusion CKPT] --out DIR
                                           every face of every photo: both branches' probabilities
                                           and Grad-CAM++
jobs [--profile P] [--data ROOT] [--set KEY=VALUE] [--out FILE]
                                           the training stage as a list of jobs for a scheduler;
run-job FILE --index K                     run one of them (docs/CLUSTERS.md)
export RUN_DIR --out DIR [--model M] [--seed S] [--format onnx]
                                           a run's model as a folder anyone can load (safetensors,
                                           model card), or an ONNX graph checked against PyTorch
"""

from __future__ import annotations

import argparse
import sys

from fer_lib.cli import data, evaluate, export, jobs, predict, run, train
from fer_lib.cli.common import Parser
from fer_lib.data.faces import FaceToolsMissing, ImportProblem
from fer_lib.data.rafdb import RafDbError
from fer_lib.run.profiles import SettingsError


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m fer_lib", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for module in (data, train, evaluate, run, jobs, predict, export):
        module.add_parsers(commands)
    return parser


def _is_data_or_checkpoint_error(error: Exception) -> bool:
    from fer_lib.models import CheckpointError
    from fer_lib.runtime.devices import DeviceError

    # FileExistsError: an output folder that holds something else (demo-data, convert-data)
    return isinstance(
        error,
        (
            RafDbError,
            CheckpointError,
            DeviceError,
            SettingsError,
            FaceToolsMissing,
            ImportProblem,
            FileExistsError,
        ),
    )


def _leave_process_group() -> None:
    """Under torchrun every rank leaves the process group it joined (NCCL warns otherwise, and a
    rank that exits first can leave the others waiting)."""
    if "torch.distributed" in sys.modules:  # never imports torch for a command that did not
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except Exception as error:
        # a broken data set or a checkpoint that does not fit: its message says what and where, no
        # traceback
        if not _is_data_or_checkpoint_error(error):
            raise
        print(f"{args.command}: {error}", file=sys.stderr)
        return 1
    finally:
        _leave_process_group()
