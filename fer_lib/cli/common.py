"""Shared pieces of the command line: argument types that reject a bad value in one line, the table
form every command's options are written in (``add_command``) and the options several commands
share, the device a command runs on, and the summary it prints."""

# Import policy of the command line (fer_lib/cli/*): a handler imports torch, pandas, ipykernel and
# the library modules that pull them in (fer_lib.io, models, training, runtime.devices and
# .distributed, apps.*, report.*, run.pipeline) inside itself; every other import sits at the top.
# Why (2026-12-06, 2 shared CPU cores, 5 runs each): `python -m fer_lib --help` takes 0.39-0.55 s
# so, 5.3-6.7 s with them at the top (`python -X importtime`: torch alone 3.5 s of 5.1 s).

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from fer_lib.data.affectnet import CLASS_ORDERS
from fer_lib.data.ferplus import LABEL_MODES
from fer_lib.data.layouts import LAYOUT_NAMES, DataSetError, detect_layout
from fer_lib.data.rafdb import CLASSES
from fer_lib.evaluation.metrics import summary
from fer_lib.run.profiles import PROFILES
from fer_lib.settings import valid_input_sizes, valid_widths


class Parser(argparse.ArgumentParser):
    """An argument error is one line (what is wrong and what is allowed) and exit code 2, before any
    work."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


REQUIRED = object()  # the default of an option that must be given

SWITCH = argparse.BooleanOptionalAction  # --name / --no-name


def add_options(parser, *options) -> None:
    """Add each option, written as (spec, help) with spec (flags, kind=None, default=None, other
    keywords of add_argument): flags are "--name" (or a positional's "name"); kind is a type (a
    function of the text), a tuple of choices or an action ("store_true", "append", SWITCH); a
    default of REQUIRED makes the option required."""
    for spec, help in options:
        flags, kind, default, keywords = (*spec, None, None, None)[:4]
        keywords = dict(help=help, **(keywords or {}))
        if isinstance(kind, tuple):
            keywords["choices"] = kind
        elif isinstance(kind, str) or kind is SWITCH:
            keywords["action"] = kind
        elif kind is not None:
            keywords["type"] = kind
        if default is REQUIRED:
            keywords["required"] = True
        elif default is not None:  # else argparse's (False for store_true)
            keywords["default"] = default
        parser.add_argument(flags, **keywords)


def refuse(message: str) -> int:
    """A problem the parser cannot see: one line on stderr, and exit code 2 (as an argument
    error)."""
    print(message, file=sys.stderr)
    return 2


def add_command(commands, name: str, func, help: str, *options) -> Parser:
    """The subcommand ``name`` with its ``options`` (as ``add_options`` takes them), run by
    ``func``."""
    parser = commands.add_parser(name, help=help)
    add_options(parser, *options)
    parser.set_defaults(func=func)
    return parser


def at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a whole number of at least {low}, got {text!r}"
            ) from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


def between(low: float, high: float, *, open_ends: bool = False):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        inside = low < value < high if open_ends else low <= value <= high
        if not inside:
            raise argparse.ArgumentTypeError(
                f"must lie {'strictly ' if open_ends else ''}between {low:g} and {high:g}, got "
                f"{value:g}"
            )
        return value

    return parse


def existing(text: str) -> Path:
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text}: no such file or folder")
    return path


def foreign_layout(path: Path) -> str | None:
    """The name of ``path``'s layout where it is a data set to convert into RAF-DB's first; None
    for RAF-DB's layout, photos, or a folder no reader knows (its reader says what is wrong)."""
    try:
        layout = detect_layout(path)
    except DataSetError:
        return None
    return None if layout in ("rafdb", "photos") else LAYOUT_NAMES[layout]


def data_folder(text: str) -> Path:
    """A data set the training commands read: RAF-DB's layout. Another layout is refused, saying how
    to convert it."""
    path = existing(text)
    if layout := foreign_layout(path):
        raise argparse.ArgumentTypeError(
            f"{text} is {layout}: convert it into RAF-DB's layout first, "
            f"`python -m fer_lib convert-data {text} OUT`, and pass OUT"
        )
    return path


def one_of(valid, message: str):
    """A whole number among ``valid``; ``message`` says what is refused, with {} for the list and
    {} for the value."""

    def parse(text: str) -> int:
        value = at_least(1)(text)
        if value not in valid:
            raise argparse.ArgumentTypeError(message.format(", ".join(map(str, valid)), value))
        return value

    return parse


def width_of(network: str):
    return one_of(valid_widths(network), "ARM needs one of the widths {}, got {}")


def input_size_arg(text: str) -> int:
    return one_of(valid_input_sizes(), "the networks take one of {} (the paper: 224), got {}")(text)


def fold_arg(text: str) -> int | str:
    return "all" if text == "all" else at_least(0)(text)


# -- options several commands share, in add_options' form
# The options of the other layouts' readers (AffectNet, FERPlus, CK+)
LAYOUT_OPTIONS = (
    (
        ("--classes", int, 8, dict(choices=(7, 8))),
        "AffectNet, FERPlus, CK+: 8 (with Contempt, the default) or 7 (Contempt excluded)",
    ),
    (
        ("--label-mode", LABEL_MODES, "majority"),
        "FERPlus: how votes become labels (majority: FERPlus's rule)",
    ),
    (
        ("--class-order", CLASS_ORDERS, "auto"),
        "AffectNet's numpy release: its codes' class order (auto: detected from the training set)",
    ),
    (("--folds", at_least(2), 10), "CK+: subject-wise folds"),
    (
        ("--fold", fold_arg, 0),
        "CK+: the test fold (0..folds-1); convert-data takes 'all' (one copy per fold)",
    ),
    (
        ("--no-first-neutral", "store_true"),
        "CK+: do not take each sequence's first frame as Neutral",
    ),
)
WORKERS = (("--workers", at_least(1)), "processes (default: one per CPU, at most 8)")
DEVICE = (("--device",), "cpu or cuda (default: cuda when available)")
SEED = (("--seed", int, 0), None)
# what every training command takes
TRAINING_OPTIONS = (
    (
        ("--data", data_folder, REQUIRED),
        "RAF-DB basic/ folder (or a synthetic set, or a set converted by convert-data)",
    ),
    DEVICE,
    SEED,
)


def checkpoint_options(baseline_help: str) -> tuple:
    """--baseline (a checkpoint the command builds on) and --input-size (default: the
    checkpoint's)."""
    return (
        (("--baseline", existing, REQUIRED), baseline_help),
        (
            ("--input-size", input_size_arg),
            "default: the checkpoint's (224 for the authors' file)",
        ),
    )


def profile_options(path_type=Path) -> tuple:
    """What run-all and jobs share: the profile, the weights it starts from (``path_type``: how
    their paths are read), the settings it overrides and its run folder."""
    return (
        (("--profile", tuple(PROFILES), "demo"), None),
        (("--baseline-checkpoint", path_type), "the ARM authors' epoch59_acc0.9205.pth"),
        (
            ("--pretrained", path_type),
            "torchvision's resnet18-f37072fd.pth: ImageNet start for a trained baseline",
        ),
        (
            ("--set", "append", [], dict(metavar="KEY=VALUE")),
            "override a setting of the profile, e.g. --set seeds=1 --set "
            "w_grid=0.6 --set train_limit=500 (repeatable)",
        ),
        (
            ("--run-dir", Path),
            "default: runs/<profile>, or runs/<profile>-<settings> with --set",
        ),
    )


def layout_options_of(args: argparse.Namespace, fold: int | None = None) -> dict:
    """The options of the other layouts' readers (fer_lib.data.datasets.reader_for), from the
    command line."""
    return dict(
        classes=args.classes,
        label_mode=args.label_mode,
        class_order=args.class_order,
        folds=args.folds,
        fold=fold if fold is not None else (0 if args.fold == "all" else args.fold),
        first_neutral=not args.no_first_neutral,
    )


def recipe(recipe, args: argparse.Namespace):
    """A training recipe (``settings.BaselineConfig`` or ``FusionConfig``) from the command's
    options, which are named as its fields: an option the command lacks keeps the recipe's
    default."""
    given = {
        f.name: getattr(args, f.name) for f in dataclasses.fields(recipe) if hasattr(args, f.name)
    }
    if given.get("pretrained") is not None:
        given["pretrained"] = str(given["pretrained"])
    return recipe(**given)


def run_device(name: str | None):
    """The device to train on: this rank's under torchrun (the process group is joined here), else
    ``name`` or the best available."""
    import torch

    from fer_lib.runtime import distributed
    from fer_lib.runtime.devices import checked_device, describe_device, pick_device

    rank_device = distributed.init_from_environment()
    if rank_device is not None and (name is None or torch.device(name).type == rank_device.type):
        device = rank_device
    else:
        device = checked_device(name) if name else pick_device()
    if distributed.is_main():
        print(f"device: {describe_device(device)}")
    return device


def load_baseline(path: Path, input_size: int | None):
    from fer_lib.models import load_arm_checkpoint

    return load_arm_checkpoint(path, input_size=input_size)


def print_summary(title: str, labels, probabilities, classes=None) -> None:
    classes = classes or CLASSES
    result = summary(labels, probabilities, len(classes))
    per_class = ", ".join(
        f"{name} {value:.4f}" for name, value in zip(classes, result["per_class"])
    )
    print(
        f"{title}: OA top-1 {result['oa_top1']:.4f}, top-2 {result['oa_top2']:.4f}, top-3 "
        f"{result['oa_top3']:.4f}, AA {result['aa']:.4f}"
    )
    print(f"  per class: {per_class}")


def save_fusion_test(model, baseline, test, config, out: Path, title: str = "test set") -> None:
    """A fusion model's test predictions saved in ``out`` (as the notebooks save them), and each
    head's summary printed."""
    from fer_lib import training

    cache = training.rgb_feature_cache(baseline, test, flips=(False,), cache_dir=out / "cache")
    predictions = training.save_test_predictions(model, test, cache, config, out)
    for head in ("rgb", "landmark", "fused"):
        print_summary(
            f"{head}, {title}", predictions.labels, getattr(predictions, head), predictions.classes
        )
