"""The evaluate command: a baseline (and a fusion model) on a test set, or trained runs across data
sets."""

from __future__ import annotations

import argparse
from pathlib import Path

from fer_lib.cli.common import (
    DEVICE,
    REQUIRED,
    SEED,
    add_command,
    at_least,
    data_folder,
    existing,
    input_size_arg,
    load_baseline,
    print_summary,
    refuse,
    run_device,
    save_fusion_test,
)
from fer_lib.data.rafdb import load_rafdb
from fer_lib.settings import AFFINITY_MODES, BaselineConfig


def _evaluate(args: argparse.Namespace) -> int:
    from fer_lib import models, training
    from fer_lib.apps.predict import load_model_folder

    if args.checkpoint:
        return _evaluate_across(args)
    if (args.baseline is None) == (args.model is None) or len(args.data) != 1:
        return refuse(
            "evaluate: pass --baseline CKPT (or --model FOLDER) and one --data ROOT (or "
            "--checkpoint RUN ... --data ROOT ... to evaluate across data sets)"
        )
    device = run_device(args.device)
    if args.model is not None:
        baseline, model, config = load_model_folder(args.model, device)
    else:
        baseline, model, config = (
            load_baseline(args.baseline, args.input_size).to(device),
            None,
            None,
        )
        if args.fusion:
            model, config = training.load_fusion_checkpoint(args.fusion, baseline)
    fused = model is not None
    if fused:
        config.eval_batch_size = args.batch_size
        model.to(device)
    train, test = training.load_splits(
        args.data[0],
        baseline.input_size,
        landmark_set=config.landmark_set if fused else "auto37",
        cache_dir=args.out / "cache",
    )
    models.check_classes(baseline.classes, test.classes, str(args.baseline or args.model))
    if args.affinity == "fixed":  # means over the training set, never the test set
        cache = training.rgb_feature_cache(
            baseline, train, flips=(False,), cache_dir=args.out / "cache"
        )
        training.estimate_population_means(model if fused else baseline, train, cache, config)
    baseline.set_affinity(args.affinity)
    title = f"test set, batch {args.batch_size}, affinity {args.affinity}"
    if fused:
        save_fusion_test(model.set_affinity(args.affinity), baseline, test, config, args.out, title)
    else:
        probabilities = training.save_baseline_predictions(
            baseline, test, args.batch_size, args.out / "predictions_rgb.csv"
        )
        print_summary(f"baseline, {title}", test.labels.numpy(), probabilities, test.classes)
    print(f"predictions written to {args.out}")
    return 0


def _model_for_across(checkpoint: Path, args: argparse.Namespace, device):
    """(baseline, fusion model or None, fusion config or None) of a --checkpoint, on ``device``: a
    baseline run (or its file), or a fusion run, which needs --baseline (the baseline it was trained
    with)."""
    import torch

    from fer_lib import training
    from fer_lib.apps.predict import load_model_folder
    from fer_lib.models import CheckpointError

    if (checkpoint / "config.json").is_file():  # a model folder (`export`)
        return load_model_folder(checkpoint, device)
    path = checkpoint / "best.pt" if checkpoint.is_dir() else checkpoint
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # not a plain checkpoint: load_arm_checkpoint names the problem
        state = None
    if not (isinstance(state, dict) and "model" in state and "config" in state):
        return load_baseline(path, args.input_size).to(device), None, None
    if args.baseline is None:  # a fusion run's checkpoint
        raise CheckpointError(
            f"{path} is a fusion run: pass --baseline, the baseline checkpoint it was trained with"
        )
    baseline = load_baseline(args.baseline, args.input_size)
    fusion, config = training.load_fusion_checkpoint(path, baseline)
    config.eval_batch_size = args.batch_size
    return baseline.to(device), fusion.to(device), config


def _report_across(result, split, probabilities, classes, out: Path) -> None:
    """Print one cross-dataset result and write its predictions and confusion matrix."""
    from fer_lib import training
    from fer_lib.io import save_csv

    frame = training.prediction_frame(split.names, split.labels.numpy(), probabilities, classes)
    columns = {
        "label": "label (test set's class list)",
        "predicted": "predicted (model's class list)",
    }
    save_csv(frame.rename(columns=columns), out / f"predictions_{result.file_stem()}.csv")
    save_csv(result.confusion_frame().reset_index(), out / f"confusion_{result.file_stem()}.csv")
    print(
        f"trained on {result.trained_on}, tested on {result.tested_on}: OA {result.oa:.4f}, AA "
        f"{result.aa:.4f} over {len(result.shared)} shared classes, {result.images} test images"
    )
    for note in result.notes:
        print(f"  note: {note}")
    confusion = result.confusion_frame().to_string().replace("\n", "\n    ")
    print(f"  confusion (rows: true, columns: predicted):\n    {confusion}")


def _evaluate_across(args: argparse.Namespace) -> int:
    """Every checkpoint on every data set's test split, over the classes each pair shares
    (fer_lib.apps.crossdata)."""
    from fer_lib.apps import crossdata
    from fer_lib.io import save_csv, save_text

    if args.paired and len(args.checkpoint) != len(args.data):
        return refuse(
            "evaluate: --paired takes as many --checkpoint as --data (one model per fold), got "
            f"{len(args.checkpoint)} and {len(args.data)}"
        )
    device = run_device(args.device)
    tests = {root: load_rafdb(root).split("test") for root in args.data}
    results = []
    for number, checkpoint in enumerate(args.checkpoint):
        baseline, fusion, config = _model_for_across(checkpoint, args, device)
        roots = [args.data[number]] if args.paired else tests  # each data set once
        for root in roots:
            landmark_set = config.landmark_set if config else "auto37"
            split = crossdata.decode_test_split(
                tests[root], baseline.input_size, landmark_set, args.out / "cache"
            )
            cache_dir = crossdata.data_cache(args.out / "cache", tests[root].root)
            predicted = crossdata.predict_heads(
                baseline, fusion, config, split, batch_size=args.batch_size, cache_dir=cache_dir
            )
            if fusion is None:
                heads = {"": predicted}
            else:  # the fused model: its three heads, each scored over the shared classes
                heads = {f" ({h})": getattr(predicted, h) for h in ("rgb", "landmark", "fused")}
            for head, probabilities in heads.items():
                result = crossdata.cross_result(
                    crossdata.name_of(checkpoint) + head,
                    crossdata.name_of(root),
                    baseline.classes,
                    split.classes,
                    split.labels.numpy(),
                    probabilities,
                )
                _report_across(result, split, probabilities, baseline.classes, args.out)
                results.append(result)
    table = crossdata.cross_table(results)
    # the folds of one protocol (CK+): the mean and spread over them is the reported number
    if args.paired:
        table = crossdata.with_fold_summary(table)
        mean = table.iloc[-2]
        print(
            f"mean over {len(results)} folds: OA {mean['OA']:.4f} (sd {table.iloc[-1]['OA']:.4f}), "
            f"AA {mean['AA']:.4f} (sd {table.iloc[-1]['AA']:.4f})"
        )
    save_csv(table, args.out / "cross_dataset.csv")
    oa_matrix = table.attrs["oa_matrix"].to_markdown(floatfmt=".4f")
    rows = table.to_markdown(index=False, floatfmt=".4f")
    save_text(
        f"Trained on A, tested on B (OA over the shared classes)\n\n{oa_matrix}\n\n{rows}\n",
        args.out / "cross_dataset.md",
    )
    print(f"table written to {args.out / 'cross_dataset.md'}")
    return 0


def add_parsers(commands) -> None:
    add_command(
        commands,
        "evaluate",
        _evaluate,
        "test-set predictions and the paper's metrics; across data sets with --checkpoint",
        (
            ("--data", data_folder, REQUIRED, dict(nargs="+")),
            "a data set in RAF-DB's layout (RAF-DB, or converted by convert-data); several with "
            "--checkpoint",
        ),
        DEVICE,
        SEED,
        (
            ("--baseline", existing),
            "the baseline checkpoint, evaluated on its own data set's classes",
        ),
        (
            ("--model", existing),
            "a model folder (`python -m fer_lib export`) instead of --baseline and --fusion",
        ),
        (
            ("--checkpoint", existing, None, dict(nargs="+", metavar="RUN")),
            "baseline or fusion run folders, model folders (`export`), or best.pt files (a fusion "
            "run with --baseline): each is tested on each --data, over the classes they share (an "
            "8-class model's Contempt is dropped on a 7-class set, and said so)",
        ),
        (
            ("--paired", "store_true"),
            "with --checkpoint: the i-th model on the i-th data set only (CK+'s folds), and the "
            "mean over them",
        ),
        (("--input-size", input_size_arg), None),
        (("--fusion", existing), "a fusion run's best.pt (default: the baseline alone)"),
        (
            ("--batch-size", at_least(1), BaselineConfig.eval_batch_size),
            "test batch size (ARM's batch term depends on it; the paper: 64)",
        ),
        (
            ("--affinity", AFFINITY_MODES, "batch"),
            "fixed: batch-independent, mean over the training set",
        ),
        (("--out", Path, REQUIRED), None),
    )
