"""Command line: ``python -m fer_lib <command>``.

What each command does: ``python -m fer_lib --help``; its options: ``... <command> --help``.

    check-data ROOT [--json] [--no-decode]
    convert-data SRC OUT [--classes 7|8] ...
    demo-data OUT --train N --test M --seed S [--layout L]
    import-images SRC OUT [--test-fraction F]
    train-baseline --data ROOT --run-dir DIR
    train-fusion --data ROOT --baseline CKPT --run-dir DIR
    fit-gate --data ROOT --baseline CKPT --base-run RUN_DIR --run-dir DIR
    evaluate --data ROOT --baseline CKPT [--fusion CKPT] --out DIR
    evaluate --checkpoint RUN [RUN...] --data ROOT [ROOT...] --out DIR [--paired]
    run-all [--profile P] [--data ROOT] [--set KEY=VALUE] [--seed-offset N] [--workers N]
            [--cross-data OTHER...]
    compare-runs RUN_DIR RUN_DIR --out DIR
    plan RUN_DIR [--effect E] [--test-images N]
    install-kernel [--prefix DIR]
    predict PATH... --baseline CKPT [--fusion CKPT] --out DIR
    jobs [--profile P] [--data ROOT] [--set KEY=VALUE] [--out FILE], then run-job FILE --index K
    export RUN_DIR --out DIR [--model M] [--seed S] [--format onnx]
"""

from __future__ import annotations

import argparse
import sys

from fer_lib.cli import data, evaluate, export, jobs, predict, run, train
from fer_lib.cli.common import Parser
from fer_lib.data.rafdb import RafDbError
from fer_lib.run.profiles import SettingsError


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m fer_lib", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for module in (data, train, evaluate, run, jobs, predict, export):
        module.add_parsers(commands)
    return parser


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
        # imported here: they load torch, which --help does not
        from fer_lib.data.faces import FaceToolsMissing, ImportProblem
        from fer_lib.models import CheckpointError
        from fer_lib.runtime.devices import DeviceError

        # a broken data set, a checkpoint that does not fit, an output folder that holds something
        # else (FileExistsError): its message says what and where, no traceback
        expected = (RafDbError, SettingsError, FileExistsError, FaceToolsMissing, ImportProblem)
        if not isinstance(error, (*expected, CheckpointError, DeviceError)):
            raise
        print(f"{args.command}: {error}", file=sys.stderr)
        return 1
    finally:
        _leave_process_group()
