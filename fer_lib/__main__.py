"""Command line: ``python -m fer_lib <command>``.

check-data ROOT [--json] [--no-decode]     name the layout found (RAF-DB, AffectNet, FERPlus, CK+), validate it, counts
convert-data SRC OUT [--classes 7|8] ...   AffectNet, FERPlus or CK+ into RAF-DB's layout (with its class list)
demo-data OUT --train N --test M --seed S [--layout L]
                                           write the synthetic set in RAF-DB's (or AffectNet's, FERPlus's, CK+'s) layout
train-baseline --data ROOT --run-dir DIR   train ResNet18 + ARM (the ARM recipe)
train-fusion --data ROOT --baseline CKPT --run-dir DIR
                                           train the landmark branch + fusion (frozen baseline)
evaluate --data ROOT --baseline CKPT [--fusion CKPT] --out DIR
                                           predictions on the test set and the paper's metrics
evaluate --checkpoint RUN [RUN...] --data ROOT [ROOT...] --out DIR [--paired]
                                           cross-dataset: each model on each data set's test split (shared classes);
                                           --paired: the i-th model on the i-th set (CK+'s folds), with the mean
run-all [--profile P] [--data ROOT] [--set KEY=VALUE] [--seed-offset N] [--workers N] [--cross-data OTHER...]
                                           what ./run_all.sh runs: every table and figure
compare-runs RUN_DIR RUN_DIR --out DIR     do two runs give the same verdicts? (seed_stability.md)
plan RUN_DIR [--effect E] [--test-images N]
                                           seeds a finished run's variance components need to resolve an effect
install-kernel [--prefix DIR]              register this environment as the Jupyter kernel "fer-lib"
import-images SRC OUT [--test-fraction F]  face photos (class folders, RAF-DB mirror, or a CSV) into RAF-DB's layout
predict PATH... --baseline CKPT [--fusion CKPT] --out DIR
                                           every face of every photo: both branches' probabilities and Grad-CAM++
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def _fold(text: str) -> int | str:
    return "all" if text == "all" else _at_least(0)(text)


def _layout_options(args: argparse.Namespace, fold: int | None = None) -> dict:
    """The options of the other layouts' readers (fer_lib.data.datasets.reader_for), from the command line."""
    fold = fold if fold is not None else (0 if args.fold == "all" else args.fold)
    return {
        "classes": args.classes,
        "label_mode": args.label_mode,
        "class_order": args.class_order,
        "folds": args.folds,
        "fold": fold,
        "first_neutral": not args.no_first_neutral,
    }


def _check_data(args: argparse.Namespace) -> int:
    from fer_lib.data.datasets import check_layout

    started = time.perf_counter()
    report = check_layout(
        args.root, decode_images=not args.no_decode, progress=not args.json, **_layout_options(args)
    )
    if args.json:
        print(json.dumps(report.to_json()))
        return 0 if report.ok else 1
    # nothing counted: the problem alone, not a table of zeros
    if report.errors and report.read_nothing:
        for problem in report.errors:
            print(f"error: {problem}", file=sys.stderr)
        return 1
    print(
        f"{report.layout} copy: {report.root}"
        if report.layout == "RAF-DB"
        else f"{report.layout}: {report.root}"
    )
    print(report.table())
    for warning in report.warnings[:5]:
        print(f"warning: {warning}")
    if len(report.warnings) > 5:
        print(f"warning: ... {len(report.warnings) - 5} more warnings of this kind")
    if report.ok:
        print(f"OK: no problem found ({time.perf_counter() - started:.1f} s)")
        return 0
    for problem in report.errors:
        print(f"error: {problem}", file=sys.stderr)
    print(
        f"FAILED: {len(report.errors)} problem(s); fix them and run check-data again.",
        file=sys.stderr,
    )
    return 1


def _demo_data(args: argparse.Namespace) -> int:
    from fer_lib.data.demo_layouts import WRITERS
    from fer_lib.data.synthetic import generate_demo_dataset

    started = time.perf_counter()
    if args.layout == "rafdb":
        root = generate_demo_dataset(args.out, args.train, args.test, seed=args.seed)
    else:
        root = WRITERS[args.layout](args.out, args.train, args.test, seed=args.seed)
    print(
        f"wrote {args.train} train + {args.test} test synthetic images to {root} in {time.perf_counter() - started:.1f} s"
        + (
            ""
            if args.layout == "rafdb"
            else f" ({args.layout} layout; next: python -m fer_lib check-data {root})"
        )
    )
    return 0


def _convert_data(args: argparse.Namespace) -> int:
    from fer_lib.data.datasets import reader_for
    from fer_lib.data.layouts import DataSetError, convert, detect_layout

    layout = detect_layout(args.src)
    if layout in ("rafdb", "photos"):
        what = (
            "already in RAF-DB's layout: use it as it is"
            if layout == "rafdb"
            else f"a folder of photos: use `python -m fer_lib import-images {args.src} {args.out}`"
        )
        raise DataSetError([f"{args.src}: {what}"])
    if args.fold == "all" and layout != "ckplus":
        raise DataSetError(
            [f"{args.src}: --fold all is for CK+'s subject-wise folds; this is another layout"]
        )
    # CK+'s protocol runs every fold: --fold all writes one copy per fold, OUT/fold_00, OUT/fold_01, ...
    targets = (
        [(k, args.out / f"fold_{k:02d}") for k in range(args.folds)]
        if args.fold == "all"
        else [(None, args.out)]
    )
    for fold, out in targets:
        counts = convert(
            reader_for(layout, args.src, **_layout_options(args, fold)), out, workers=args.workers
        )
        print(
            f"{counts['layout']}: {counts['rows']} usable row(s); converted {counts['converted']} ({counts['train']} "
            f"train, {counts['test']} test) into {out} with {len(counts['classes'])} classes ({', '.join(counts['classes'])})"
        )
        for reason, count in counts["excluded"].items():
            print(f"excluded by the protocol: {count} row(s): {reason}")
        if counts["not converted"]:
            print(
                f"not converted: {counts['not converted']} image(s), listed with the reason in {out / 'conversion_report.csv'}"
            )
    if args.fold == "all":
        print(
            f"next: `./run_all.sh --profile paper --data {args.out}` runs the report on every fold, then the mean "
            f"over the folds (or train each fold_NN yourself, then `python -m fer_lib evaluate --paired ...`)"
        )
    else:
        print(f"next: python -m fer_lib check-data {args.out}")
    return 0


def _device(name: str | None):
    """The device to train on: this rank's under torchrun (the process group is joined here), else ``name`` or
    the best available."""
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


def _print_summary(title: str, labels, probabilities, classes=None) -> None:
    from fer_lib.data.rafdb import CLASSES
    from fer_lib.evaluation.metrics import summary

    classes = classes or CLASSES
    result = summary(labels, probabilities, len(classes))
    per_class = ", ".join(
        f"{name} {value:.4f}" for name, value in zip(classes, result["per_class"])
    )
    print(
        f"{title}: OA top-1 {result['oa_top1']:.4f}, top-2 {result['oa_top2']:.4f}, top-3 {result['oa_top3']:.4f}, AA {result['aa']:.4f}"
    )
    print(f"  per class: {per_class}")


def _train_baseline(args: argparse.Namespace) -> int:
    from fer_lib import training
    from fer_lib.runtime import distributed

    config = _recipe(training.BaselineConfig, args)
    device = _device(args.device)
    train, test = distributed.main_first(
        lambda: training.load_splits(args.data, config.input_size, cache_dir=args.run_dir / "cache")
    )  # one rank decodes
    model = training.train_baseline(train, config, args.run_dir, device=device)
    if not distributed.is_main():  # under torchrun, rank 0 evaluates and writes
        return 0
    probabilities = (
        training.baseline_logits(model, test.images, config.eval_batch_size).softmax(1).numpy()
    )
    training.save_csv(
        training.prediction_frame(test.names, test.labels.numpy(), probabilities, test.classes),
        args.run_dir / "predictions_test.csv",
    )
    _print_summary("baseline, test set", test.labels.numpy(), probabilities, test.classes)
    print(f"best checkpoint: {args.run_dir / 'best.pt'}")
    return 0


def _recipe(recipe, args: argparse.Namespace):
    """A training recipe (``settings.BaselineConfig`` or ``FusionConfig``) from the command's options, which are
    named as its fields: an option the command lacks keeps the recipe's default."""
    import dataclasses

    given = {
        f.name: getattr(args, f.name) for f in dataclasses.fields(recipe) if hasattr(args, f.name)
    }
    if given.get("pretrained") is not None:
        given["pretrained"] = str(given["pretrained"])
    return recipe(**given)


def _load_baseline(path: Path, input_size: int | None):
    from fer_lib.models import load_arm_checkpoint

    return load_arm_checkpoint(path, input_size=input_size)


def _train_fusion(args: argparse.Namespace) -> int:
    from fer_lib import models, training
    from fer_lib.runtime import distributed

    device = _device(args.device)
    baseline = _load_baseline(args.baseline, args.input_size).to(device)
    config = _recipe(training.FusionConfig, args)
    train, test = distributed.main_first(
        lambda: training.load_splits(
            args.data,
            baseline.input_size,
            landmark_set=config.landmark_set,
            cache_dir=args.run_dir / "cache",
        )
    )
    models.check_classes(
        baseline.classes, train.classes, str(args.baseline)
    )  # before any feature is computed
    flips = (False, True) if config.flip else (False,)
    train_cache = distributed.main_first(
        lambda: training.rgb_feature_cache(
            baseline, train, flips=flips, cache_dir=args.run_dir / "cache"
        )
    )
    if args.holdout is None and distributed.is_main():
        print(
            "note: no --holdout: the validation images are drawn here, and a baseline trained on them (the ARM authors' checkpoint saw "
            "every training image) looks better on them than on new images; the epoch kept and a calibrated temperature lean on it"
        )
    model = training.train_fusion(
        baseline, train, train_cache, config, args.run_dir, device=device, holdout=args.holdout
    )
    if not distributed.is_main():  # under torchrun, rank 0 evaluates and writes
        return 0
    test_cache = training.rgb_feature_cache(
        baseline, test, flips=(False,), cache_dir=args.run_dir / "cache"
    )
    predictions = training.predict_fusion(model, test, test_cache, config)
    training.save_fusion_predictions(predictions, args.run_dir)
    for head in ("rgb", "landmark", "fused"):
        _print_summary(
            f"{head}, test set", predictions.labels, getattr(predictions, head), predictions.classes
        )
    return 0


def _fit_gate(args: argparse.Namespace) -> int:
    from fer_lib import models, training

    device = _device(args.device)
    baseline = _load_baseline(args.baseline, args.input_size).to(device)
    if not (args.base_run / "best.pt").is_file() or not (args.base_run / "split.json").is_file():
        raise FileNotFoundError(
            f"{args.base_run}: no best.pt and split.json; pass the folder of a finished train-fusion run"
        )
    _, base_config = training.load_fusion_checkpoint(args.base_run / "best.pt", baseline)
    train, test = training.load_splits(
        args.data,
        baseline.input_size,
        landmark_set=base_config.landmark_set,
        cache_dir=args.run_dir / "cache",
    )
    models.check_classes(baseline.classes, train.classes, str(args.baseline))
    train_cache = training.rgb_feature_cache(
        baseline, train, flips=(False,), cache_dir=args.run_dir / "cache"
    )
    model, config = training.fit_gate(
        args.base_run, baseline, train, train_cache, args.run_dir, device=device
    )
    test_cache = training.rgb_feature_cache(
        baseline, test, flips=(False,), cache_dir=args.run_dir / "cache"
    )
    predictions = training.predict_fusion(model, test, test_cache, config)
    training.save_fusion_predictions(predictions, args.run_dir)
    for head in ("rgb", "landmark", "fused"):
        _print_summary(
            f"{head}, test set", predictions.labels, getattr(predictions, head), predictions.classes
        )
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from fer_lib import models, training

    if args.checkpoint:
        return _evaluate_across(args)
    if args.baseline is None or len(args.data) != 1:
        print(
            "evaluate: pass --baseline CKPT and one --data ROOT (or --checkpoint RUN ... --data ROOT ... to evaluate "
            "across data sets)",
            file=sys.stderr,
        )
        return 2
    args.data = args.data[0]
    device = _device(args.device)
    baseline = _load_baseline(args.baseline, args.input_size).to(device)
    if args.fusion:
        model, config = training.load_fusion_checkpoint(args.fusion, baseline)
        config.eval_batch_size = args.batch_size
        landmark_set = config.landmark_set
    else:
        landmark_set = "auto37"
    train, test = training.load_splits(
        args.data, baseline.input_size, landmark_set=landmark_set, cache_dir=args.out / "cache"
    )
    models.check_classes(baseline.classes, test.classes, str(args.baseline))
    if args.affinity == "fixed":  # means over the training set, never the test set
        train_cache = training.rgb_feature_cache(
            baseline, train, flips=(False,), cache_dir=args.out / "cache"
        )
        training.estimate_population_means(
            model.to(device) if args.fusion else baseline,
            train,
            train_cache,
            config if args.fusion else None,
        )
    baseline.set_affinity(args.affinity)
    if args.fusion:
        model = model.to(device).set_affinity(args.affinity)
        test_cache = training.rgb_feature_cache(
            baseline, test, flips=(False,), cache_dir=args.out / "cache"
        )
        predictions = training.predict_fusion(model, test, test_cache, config)
        training.save_fusion_predictions(predictions, args.out)
        for head in ("rgb", "landmark", "fused"):
            _print_summary(
                f"{head}, test set, batch {args.batch_size}, affinity {args.affinity}",
                predictions.labels,
                getattr(predictions, head),
                predictions.classes,
            )
    else:
        probabilities = (
            training.baseline_logits(baseline, test.images, args.batch_size).softmax(1).numpy()
        )
        training.save_csv(
            training.prediction_frame(test.names, test.labels.numpy(), probabilities, test.classes),
            args.out / "predictions_rgb.csv",
        )
        _print_summary(
            f"baseline, test set, batch {args.batch_size}, affinity {args.affinity}",
            test.labels.numpy(),
            probabilities,
            test.classes,
        )
    print(f"predictions written to {args.out}")
    return 0


def _model_for_across(checkpoint: Path, args: argparse.Namespace):
    """(baseline, fusion model or None, fusion config or None) of a --checkpoint: a baseline run (or its file), or a
    fusion run, which needs --baseline (the baseline it was trained with)."""
    import torch

    from fer_lib import training
    from fer_lib.models import CheckpointError, load_arm_checkpoint

    path = checkpoint / "best.pt" if checkpoint.is_dir() else checkpoint
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # not a plain checkpoint: load_arm_checkpoint names the problem
        state = None
    if (
        isinstance(state, dict) and "model" in state and "config" in state
    ):  # a fusion run's checkpoint
        if args.baseline is None:
            raise CheckpointError(
                f"{path} is a fusion run: pass --baseline, the baseline checkpoint it was trained with"
            )
        baseline = load_arm_checkpoint(args.baseline, input_size=args.input_size)
        fusion, config = training.load_fusion_checkpoint(path, baseline)
        config.eval_batch_size = args.batch_size
        return baseline, fusion, config
    return load_arm_checkpoint(path, input_size=args.input_size), None, None


def _report_across(result, split, probabilities, classes, out: Path) -> None:
    """Print one cross-dataset result and write its predictions and confusion matrix."""
    from fer_lib import training
    from fer_lib.io import save_csv

    stem = result.file_stem()
    save_csv(
        training.prediction_frame(split.names, split.labels.numpy(), probabilities, classes).rename(
            columns={
                "label": "label (test set's class list)",
                "predicted": "predicted (model's class list)",
            }
        ),
        out / f"predictions_{stem}.csv",
    )
    save_csv(result.confusion_frame().reset_index(), out / f"confusion_{stem}.csv")
    print(
        f"trained on {result.trained_on}, tested on {result.tested_on}: OA {result.oa:.4f}, AA {result.aa:.4f} "
        f"over {len(result.shared)} shared classes, {result.images} test images"
    )
    for note in result.notes:
        print(f"  note: {note}")
    confusion = result.confusion_frame().to_string().replace("\n", "\n    ")
    print(f"  confusion (rows: true, columns: predicted):\n    {confusion}")


def _evaluate_across(args: argparse.Namespace) -> int:
    """Every checkpoint on every data set's test split, over the classes each pair shares (fer_lib.apps.crossdata)."""
    from fer_lib.apps import crossdata
    from fer_lib.data.rafdb import load_rafdb
    from fer_lib.io import save_csv, save_text

    if args.paired and len(args.checkpoint) != len(args.data):
        print(
            f"evaluate: --paired takes as many --checkpoint as --data (one model per fold), got {len(args.checkpoint)} "
            f"and {len(args.data)}",
            file=sys.stderr,
        )
        return 2
    device = _device(args.device)
    tests = {root: load_rafdb(root).split("test") for root in args.data}
    results = []
    for number, checkpoint in enumerate(args.checkpoint):
        baseline, fusion, config = _model_for_across(checkpoint, args)
        baseline = baseline.to(device)
        fusion = fusion.to(device) if fusion is not None else None
        pairs = [(args.data[number], tests[args.data[number]])] if args.paired else tests.items()
        for root, test in pairs:
            landmark_set = config.landmark_set if config else "auto37"
            split = crossdata.decode_test_split(
                test, baseline.input_size, landmark_set, args.out / "cache"
            )
            predicted = crossdata.predict_heads(
                baseline,
                fusion,
                config,
                split,
                batch_size=args.batch_size,
                cache_dir=crossdata.data_cache(args.out / "cache", test.root),
            )
            if fusion is None:
                heads = {"": predicted}
            else:  # the fused model: its three heads, each scored over the shared classes
                heads = {
                    f" ({head})": getattr(predicted, head) for head in ("rgb", "landmark", "fused")
                }
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
    if (
        args.paired
    ):  # the folds of one protocol (CK+): the mean and spread over them is the reported number
        table = crossdata.with_fold_summary(table)
        mean = table.iloc[-2]
        print(
            f"mean over {len(results)} folds: OA {mean['OA']:.4f} (sd {table.iloc[-1]['OA']:.4f}), "
            f"AA {mean['AA']:.4f} (sd {table.iloc[-1]['AA']:.4f})"
        )
    save_csv(table, args.out / "cross_dataset.csv")
    save_text(
        "Trained on A, tested on B (OA over the shared classes)\n\n"
        + table.attrs["oa_matrix"].to_markdown(floatfmt=".4f")
        + "\n\n"
        + table.to_markdown(index=False, floatfmt=".4f")
        + "\n",
        args.out / "cross_dataset.md",
    )
    print(f"table written to {args.out / 'cross_dataset.md'}")
    return 0


def _run_all_device(profile: str, name: str | None):
    """The device every training of run-all uses, passed to its workers and kernels (FER_DEVICE). The paper
    profile refuses a CPU it was not asked for: a torch that lost its GPU (a driver older than its CUDA) would
    otherwise start days of training on the CPU."""
    import os

    from fer_lib.runtime.devices import (
        DEVICE_ENV,
        DeviceError,
        checked_device,
        cuda_problem,
        pick_device,
    )

    if name:
        checked_device(name)
        os.environ[DEVICE_ENV] = name
    device = pick_device()
    if profile == "paper" and device.type == "cpu" and not name:
        raise DeviceError(
            f"the paper profile trains on a GPU, and none is usable: {cuda_problem()}. Pass --device cpu to "
            "train on the CPU anyway (days), or fix the GPU"
        )
    return device


def _run_all(args: argparse.Namespace) -> int:
    from fer_lib.run.pipeline import fold_copies, run_all, run_folds
    from fer_lib.run.profiles import SettingsError, get_profile, parse_assignments
    from fer_lib.runtime.devices import DeviceError, describe_device

    folds = fold_copies(args.data) if args.data is not None else []
    try:
        settings = parse_assignments(args.set)
        if args.seed_offset is not None:
            settings["seed_offset"] = str(args.seed_offset)
        get_profile(args.profile, settings)  # every value checked before any work starts
        data_sets = [("--data", fold) for fold in folds] or [("--data", args.data)]
        data_sets += [("--cross-data", path) for path in args.cross_data]
        for option, path in [
            ("--pretrained", args.pretrained),
            ("--baseline-checkpoint", args.baseline_checkpoint),
            *data_sets,
        ]:
            if path is not None and not path.exists():
                raise SettingsError(f"{option} {path}: no such file or folder")
        for option, path in data_sets:
            if path is not None:
                _check_run_all_data(path, SettingsError, option)
        device = _run_all_device(args.profile, args.device)
    except (SettingsError, DeviceError) as error:
        print(f"run-all: {error}", file=sys.stderr)
        return 2
    print(f"device: {describe_device(device)}")
    options = dict(
        baseline_checkpoint=args.baseline_checkpoint,
        settings=settings,
        pretrained=args.pretrained,
        run_dir=args.run_dir,
        workers=args.workers,
        replicate=args.replicate,
        force=args.force,
        cross_data=args.cross_data,
    )
    if folds:  # CK+ converted with --fold all: every fold, then the mean over them
        return run_folds(args.profile, folds, **options)
    return run_all(args.profile, data=args.data, **options)


def _check_run_all_data(path: Path, error, option: str = "--data") -> None:
    """run-all reads RAF-DB's layout: another layout (AffectNet, FERPlus, CK+ as released) is refused before any
    work, saying how to convert it. A converted copy runs with its own class list (classes.json: 7, or 8 with
    Contempt), which every per-class table and figure of the report follows."""
    from fer_lib.data.layouts import LAYOUT_NAMES, DataSetError, detect_layout

    try:
        layout = detect_layout(path)
    except DataSetError:
        return  # check_data names what is wrong
    if layout not in ("rafdb", "photos"):
        raise error(
            f"{option} {path} is {LAYOUT_NAMES[layout]}: convert it first (`python -m fer_lib convert-data {path} OUT`, "
            "8 classes, or --classes 7) and pass OUT"
        )


def _compare_runs(args: argparse.Namespace) -> int:
    from fer_lib.report import replication, tables

    try:
        table = replication.stability_table(args.runs)
    except FileNotFoundError as error:
        print(f"compare-runs: {error}", file=sys.stderr)
        return 2
    tables.save_table(
        table,
        replication.STABILITY_FILE,
        args.out,
        caption="The same profile run with other training seeds (or on another CPU): headline numbers and verdicts",
    )
    print(table.to_string(index=False))
    print(replication.agreement_counts(table))
    disagreements = int(
        (table["agree"].str.startswith("no") | (table["agree"] == "conflict")).sum()
    )
    print(
        f"{disagreements} disagreement(s) (conflicting verdicts, or headline OA apart by more than {replication.HEADLINE_TOLERANCE}); "
        f"written to {args.out / (replication.STABILITY_FILE + '.md')}"
    )
    return 1 if disagreements else 0


def _plan(args: argparse.Namespace) -> int:
    from fer_lib.report import verdicts

    tables = args.run_dir / "tables"
    if not (tables / "significance_proposed.csv").exists():
        print(
            f"plan: {args.run_dir} has no finished report (tables/significance_proposed.csv missing); run ./run_all.sh for it first",
            file=sys.stderr,
        )
        return 2
    scale = args.test_images / _test_images_of(args.run_dir) if args.test_images else 1.0
    frame = verdicts.plan_rows(tables, args.effect, scale)
    if frame.empty:
        print(
            "plan: this run has one seed: there is no seed variance to plan with; run two or more (--set seeds=2)",
            file=sys.stderr,
        )
        return 2
    print(
        f"Seeds needed to resolve a difference of {100 * args.effect:.2f} points (80% power, 5% two-sided), from the variance "
        f"components {args.run_dir.name} measured"
        + (f", at {args.test_images} test images" if args.test_images else "")
        + ":"
    )
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0


def _test_images_of(run_dir: Path) -> int:
    import pandas as pd

    return len(pd.read_csv(run_dir / "predictions" / "baseline_test.csv"))


class _Parser(argparse.ArgumentParser):
    """An argument error is one line (what is wrong and what is allowed) and exit code 2, before any work."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _at_least(low: int):
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


def _between(low: float, high: float, *, open_ends: bool = False):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        inside = low < value < high if open_ends else low <= value <= high
        if not inside:
            raise argparse.ArgumentTypeError(
                f"must lie {'strictly ' if open_ends else ''}between {low:g} and {high:g}, got {value:g}"
            )
        return value

    return parse


def _existing(text: str) -> Path:
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text}: no such file or folder")
    return path


def _data_folder(text: str) -> Path:
    """A data set the training commands read: RAF-DB's layout. Another layout is refused, saying how to convert it."""
    from fer_lib.data.layouts import LAYOUT_NAMES, DataSetError, detect_layout

    path = _existing(text)
    try:
        layout = detect_layout(path)
    except DataSetError:
        return path  # the reader says what is wrong with it
    if layout not in ("rafdb", "photos"):
        raise argparse.ArgumentTypeError(
            f"{text} is {LAYOUT_NAMES[layout]}: convert it into RAF-DB's layout first, "
            f"`python -m fer_lib convert-data {text} OUT`, and pass OUT"
        )
    return path


def _width(network: str):
    from fer_lib.settings import valid_widths

    valid = valid_widths(network)

    def parse(text: str) -> int:
        value = _at_least(1)(text)
        if value not in valid:
            raise argparse.ArgumentTypeError(
                f"ARM needs one of the widths {', '.join(map(str, valid))}, got {value}"
            )
        return value

    return parse


def _input_size(text: str) -> int:
    from fer_lib.settings import valid_input_sizes

    value, valid = _at_least(1)(text), valid_input_sizes()
    if value not in valid:
        raise argparse.ArgumentTypeError(
            f"the networks take one of {', '.join(map(str, valid))} (the paper: 224), got {value}"
        )
    return value


def build_parser() -> argparse.ArgumentParser:
    from fer_lib.data.affectnet import CLASS_ORDERS
    from fer_lib.data.demo_layouts import DEMO_LAYOUTS
    from fer_lib.data.ferplus import LABEL_MODES
    from fer_lib.run.profiles import PROFILES
    from fer_lib.settings import (
        AFFINITY_MODES,
        AUGMENTATIONS,
        LANDMARK_INPUTS,
        LANDMARK_SETS,
        LR_SCHEDULES,
        SELECTIONS,
        TRAINED_WEIGHTINGS,
        BaselineConfig,
        FusionConfig,
    )

    base, fused = BaselineConfig(), FusionConfig()  # every default below comes from the recipes
    parser = _Parser(prog="python -m fer_lib", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    layout_options = _Parser(add_help=False)
    layout_options.add_argument(
        "--classes",
        type=int,
        choices=(7, 8),
        default=8,
        help="AffectNet, FERPlus, CK+: 8 (with Contempt, the default) or 7 (Contempt excluded)",
    )
    layout_options.add_argument(
        "--label-mode",
        choices=LABEL_MODES,
        default="majority",
        help="FERPlus: how votes become labels (majority: FERPlus's rule)",
    )
    layout_options.add_argument(
        "--class-order",
        choices=CLASS_ORDERS,
        default="auto",
        help="AffectNet's numpy release: its codes' class order (auto: detected from the training set)",
    )
    layout_options.add_argument(
        "--folds", type=_at_least(2), default=10, help="CK+: subject-wise folds"
    )
    layout_options.add_argument(
        "--fold",
        type=_fold,
        default=0,
        help="CK+: the test fold (0..folds-1); convert-data takes 'all' (one copy per fold)",
    )
    layout_options.add_argument(
        "--no-first-neutral",
        action="store_true",
        help="CK+: do not take each sequence's first frame as Neutral",
    )

    check = commands.add_parser(
        "check-data",
        parents=[layout_options],
        help="name the layout of a data set, validate it and print per-class counts",
    )
    check.add_argument(
        "root",
        type=_existing,
        help="RAF-DB's basic/ folder (or its parent), or AffectNet's, FERPlus's or CK+'s folder",
    )
    check.add_argument(
        "--json",
        action="store_true",
        help='print one JSON object {"layout", "classes", "train": [...], "test": [...], '
        '"excluded": {...}, "errors": [...]}',
    )
    check.add_argument(
        "--no-decode", action="store_true", help="check image files exist without decoding them"
    )
    check.set_defaults(func=_check_data)

    convert = commands.add_parser(
        "convert-data",
        parents=[layout_options],
        help="AffectNet, FERPlus or CK+ into RAF-DB's layout, with its class list (classes.json)",
    )
    convert.add_argument(
        "src",
        type=_existing,
        help="AffectNet's folder (either release), FERPlus's (fer2013.csv + fer2013new.csv) or CK+'s",
    )
    convert.add_argument("out", type=Path, help="an empty folder for the converted copy")
    convert.add_argument(
        "--workers",
        type=_at_least(1),
        default=None,
        help="processes (default: one per CPU, at most 8)",
    )
    convert.set_defaults(func=_convert_data)

    demo = commands.add_parser(
        "demo-data",
        help="write the synthetic set, in RAF-DB's layout or (--layout) another data set's",
    )
    demo.add_argument(
        "--layout",
        choices=DEMO_LAYOUTS,
        default="rafdb",
        help="the layout to write (FERPlus: 48x48 grey faces)",
    )
    demo.add_argument("out", type=Path, help="output folder (becomes the basic/ root)")
    demo.add_argument(
        "--train",
        type=_at_least(7),
        default=3000,
        help="number of training images (at least 7: one per class)",
    )
    demo.add_argument(
        "--test",
        type=_at_least(7),
        default=750,
        help="number of test images (at least 7: one per class)",
    )
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo_data)

    common = _Parser(add_help=False)
    common.add_argument(
        "--data",
        type=_data_folder,
        required=True,
        help="RAF-DB basic/ folder (or a synthetic set, or a set converted by convert-data)",
    )
    common.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    common.add_argument("--seed", type=int, default=0)

    baseline = commands.add_parser(
        "train-baseline", parents=[common], help="train ResNet18 + ARM (the ARM recipe)"
    )
    baseline.add_argument(
        "--run-dir",
        type=Path,
        required=True,
        help="checkpoints, history, split and predictions go here",
    )
    baseline.add_argument(
        "--input-size", type=_input_size, default=base.input_size, help="(default: %(default)s)"
    )
    baseline.add_argument(
        "--width",
        type=_width("resnet"),
        default=base.width,
        help="ResNet18 base width (%(default)s: the standard network)",
    )
    baseline.add_argument("--epochs", type=_at_least(1), default=base.epochs)
    baseline.add_argument(
        "--batch-size",
        type=_at_least(2),
        default=base.batch_size,
        help="at least 2 (BatchNorm); default %(default)s",
    )
    baseline.add_argument("--lr", type=float, default=base.lr)
    baseline.add_argument("--weight-decay", type=float, default=base.weight_decay)
    baseline.add_argument(
        "--val-fraction", type=_between(0, 1, open_ends=True), default=base.val_fraction
    )
    baseline.add_argument(
        "--pretrained",
        type=_existing,
        default=base.pretrained,
        help="torchvision's ResNet18 ImageNet weights (resnet18-f37072fd.pth)",
    )
    baseline.add_argument(
        "--augmentation",
        default=base.augmentation,
        choices=AUGMENTATIONS,
        help="upstream (the default): the ARM authors' mix (half untouched, a quarter flipped, a quarter "
        "noised); flip_or_noise: every image altered",
    )
    baseline.add_argument(
        "--lr-schedule",
        default=base.lr_schedule,
        choices=LR_SCHEDULES,
        help="exponential (the default): the ARM recipe's ExponentialLR(0.9); cosine: to zero",
    )
    baseline.add_argument(
        "--ema",
        type=_between(0, 1, open_ends=True),
        default=base.ema,
        help="keep a moving average of the weights with this decay per step (default: off, the ARM recipe)",
    )
    baseline.set_defaults(func=_train_baseline)

    fusion = commands.add_parser(
        "train-fusion",
        parents=[common],
        help="train the landmark branch + fusion (baseline frozen)",
    )
    fusion.add_argument(
        "--baseline",
        type=_existing,
        required=True,
        help="baseline checkpoint (the ARM authors' file or ours)",
    )
    fusion.add_argument(
        "--input-size",
        type=_input_size,
        default=None,
        help="default: the checkpoint's (224 for the authors' file)",
    )
    fusion.add_argument("--run-dir", type=Path, required=True)
    fusion.add_argument(
        "--weighting",
        default=fused.weighting,
        choices=TRAINED_WEIGHTINGS,
        help="what scales F_landmark (default: %(default)s, the proposed method); calibrated: both, with the "
        "landmark head temperature-scaled on the validation split",
    )
    fusion.add_argument(
        "--landmark-input",
        default=fused.landmark_input,
        choices=LANDMARK_INPUTS,
        help="heatmaps (the default): the landmark CNN of Table 1; coords: an MLP on the aligned coordinates",
    )
    fusion.add_argument(
        "--w",
        dest="w_disagree",
        type=_between(0, 1),
        default=fused.w_disagree,
        help="agreement weight when the branches disagree (default: %(default)s)",
    )
    fusion.add_argument(
        "--weight-grad",
        action=argparse.BooleanOptionalAction,
        default=fused.weight_grad,
        help="let gradients flow through p_landmark (the paper is silent; default: off)",
    )
    fusion.add_argument(
        "--width",
        type=_width("landmark"),
        default=fused.width,
        help="landmark CNN base width (%(default)s: Table 1)",
    )
    fusion.add_argument(
        "--batch-norm",
        action=argparse.BooleanOptionalAction,
        default=fused.batch_norm,
        help="BatchNorm in the landmark CNN (default: off, as Table 1 prints it; the CPU demo uses it)",
    )
    fusion.add_argument(
        "--holdout",
        type=_existing,
        default=None,
        metavar="SPLIT_JSON",
        help="the split.json of the baseline's run folder: validate on the images it never trained on (without it, the "
        "run draws its own split, and a checkpoint trained on every image, like the ARM authors', has seen them all)",
    )
    fusion.add_argument("--epochs", type=_at_least(1), default=fused.epochs)
    fusion.add_argument(
        "--batch-size",
        type=_at_least(2),
        default=fused.batch_size,
        help="at least 2 (BatchNorm); default %(default)s",
    )
    fusion.add_argument("--landmark-set", default=fused.landmark_set, choices=LANDMARK_SETS)
    fusion.add_argument(
        "--sigma",
        dest="heatmap_sigma",
        type=_between(0.1, 50),
        default=fused.heatmap_sigma,
        help="heatmap gaussian sigma in pixels (default 1.5 at 224, scaled with the input size)",
    )
    fusion.add_argument(
        "--flip",
        action=argparse.BooleanOptionalAction,
        default=fused.flip,
        help="horizontal-flip augmentation of image and heatmap together (default: on)",
    )
    fusion.add_argument(
        "--val-fraction", type=_between(0, 1, open_ends=True), default=fused.val_fraction
    )
    fusion.add_argument(
        "--select",
        default=fused.select,
        choices=SELECTIONS,
        help="the epoch kept: val_loss (the default), the lowest validation loss of eq. 3 (both heads), or "
        "val_fused_accuracy, the best fused validation accuracy",
    )
    fusion.add_argument(
        "--lr-schedule",
        default=fused.lr_schedule,
        choices=LR_SCHEDULES,
        help="exponential (the default): Table 4's ExponentialLR(0.9); cosine: to zero",
    )
    fusion.set_defaults(func=_train_fusion)

    gate = commands.add_parser(
        "fit-gate",
        parents=[common],
        help="the learned weighting: a gate fitted on a trained fusion run's validation split",
    )
    gate.add_argument(
        "--baseline",
        type=_existing,
        required=True,
        help="the baseline the fusion run was trained with",
    )
    gate.add_argument(
        "--input-size",
        type=_input_size,
        default=None,
        help="default: the checkpoint's (224 for the authors' file)",
    )
    gate.add_argument(
        "--base-run",
        type=_existing,
        required=True,
        help="a train-fusion run folder (its best.pt and split.json)",
    )
    gate.add_argument(
        "--run-dir",
        type=Path,
        required=True,
        help="where the gated model and its test predictions go",
    )
    gate.set_defaults(func=_fit_gate)

    evaluate = commands.add_parser(
        "evaluate",
        help="test-set predictions and the paper's metrics; across data sets with --checkpoint",
    )
    evaluate.add_argument(
        "--data",
        type=_data_folder,
        required=True,
        nargs="+",
        help="a data set in RAF-DB's layout (RAF-DB, or converted by convert-data); several with --checkpoint",
    )
    evaluate.add_argument(
        "--device", default=None, help="cpu or cuda (default: cuda when available)"
    )
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument(
        "--baseline",
        type=_existing,
        default=None,
        help="the baseline checkpoint, evaluated on its own data set's classes",
    )
    evaluate.add_argument(
        "--checkpoint",
        type=_existing,
        nargs="+",
        default=None,
        metavar="RUN",
        help="baseline or fusion run folders (or their best.pt; a fusion run with --baseline): each is tested on "
        "each --data, over the classes they share (an 8-class model's Contempt is dropped on a 7-class "
        "set, and said so)",
    )
    evaluate.add_argument(
        "--paired",
        action="store_true",
        help="with --checkpoint: the i-th model on the i-th data set only (CK+'s folds), and the mean over them",
    )
    evaluate.add_argument("--input-size", type=_input_size, default=None)
    evaluate.add_argument(
        "--fusion",
        type=_existing,
        default=None,
        help="a fusion run's best.pt (default: the baseline alone)",
    )
    evaluate.add_argument(
        "--batch-size",
        type=_at_least(1),
        default=base.eval_batch_size,
        help="test batch size (ARM's batch term depends on it; the paper: 64)",
    )
    evaluate.add_argument(
        "--affinity",
        default="batch",
        choices=AFFINITY_MODES,
        help="fixed: batch-independent, mean over the training set",
    )
    evaluate.add_argument("--out", type=Path, required=True)
    evaluate.set_defaults(func=_evaluate)

    run = commands.add_parser(
        "run-all", help="regenerate every table and figure (what ./run_all.sh runs)"
    )
    run.add_argument("--profile", default="demo", choices=tuple(PROFILES))
    run.add_argument(
        "--data",
        type=Path,
        default=None,
        help="RAF-DB basic/ folder (paper profile), a converted copy, or the folder of CK+'s per-fold copies "
        "(convert-data --fold all: every fold is run, then the mean over the folds); default: the synthetic set",
    )
    run.add_argument(
        "--baseline-checkpoint",
        type=Path,
        default=None,
        help="the ARM authors' epoch59_acc0.9205.pth",
    )
    run.add_argument(
        "--cross-data",
        type=Path,
        nargs="+",
        default=[],
        metavar="OTHER",
        help="other data sets (RAF-DB's layout, or converted) to test the run's models on: notebook 09's table "
        "'trained on A, tested on B'",
    )
    run.add_argument(
        "--pretrained",
        type=Path,
        default=None,
        help="torchvision's resnet18-f37072fd.pth: ImageNet start for a trained baseline",
    )
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting of the profile, e.g. --set seeds=1 --set w_grid=0.6 --set train_limit=500 (repeatable)",
    )
    run.add_argument(
        "--seed-offset",
        type=int,
        default=None,
        metavar="N",
        help="shift every training seed by N (same as --set seed_offset=N): another seed acts like another CPU",
    )
    run.add_argument(
        "--run-dir",
        type=Path,
        default=None,
        help="default: runs/<profile>, or runs/<profile>-<settings> with --set",
    )
    run.add_argument(
        "--replicate",
        type=_at_least(1),
        nargs="?",
        const=100,
        default=None,
        metavar="OFFSET",
        help="then the same run with every seed shifted by OFFSET (default 100), and both reports compare the two "
        "runs' verdicts (<figures>/seed_stability.md)",
    )
    run.add_argument(
        "--workers",
        type=_at_least(0),
        default=None,
        metavar="N",
        help="train the profile's models in N parallel processes before the notebooks (default: one per GPU, "
        "or per CPU core up to 8; 0: the notebooks train them one at a time)",
    )
    run.add_argument(
        "--force",
        action="store_true",
        help="execute every notebook, even those whose inputs (library, notebook, settings, data, models) are unchanged since they last ran",
    )
    run.add_argument(
        "--device",
        default=None,
        help="cpu, cuda or cuda:N for every training and notebook (default: cuda when usable; the paper profile "
        "trains on a CPU only when given --device cpu)",
    )
    run.set_defaults(func=_run_all)

    plan = commands.add_parser(
        "plan", help="how many seeds a finished run's variance components need to resolve an effect"
    )
    plan.add_argument("run_dir", type=Path, help="a finished run, e.g. runs/demo")
    plan.add_argument(
        "--effect",
        type=float,
        default=0.0026,
        help="the difference to resolve, as a fraction (default 0.0026: the paper's +0.26 OA)",
    )
    plan.add_argument(
        "--test-images",
        type=_at_least(1),
        default=None,
        metavar="N",
        help="plan for N test images instead of the run's own (RAF-DB's test set has 3,068)",
    )
    plan.set_defaults(func=_plan)

    compare = commands.add_parser(
        "compare-runs",
        help="do two finished runs of a profile give the same verdicts and headline numbers?",
    )
    compare.add_argument(
        "runs", type=Path, nargs="+", help="run folders, e.g. runs/demo runs/demo-seed_offset_100"
    )
    compare.add_argument(
        "--out",
        type=Path,
        required=True,
        help="folder for seed_stability.{csv,md,tex} (e.g. figures/demo)",
    )
    compare.set_defaults(func=_compare_runs)

    faces = commands.add_parser(
        "import-images",
        help="face photos (class folders, RAF-DB's mirror layout, or a CSV) into RAF-DB's layout",
    )
    faces.add_argument(
        "src",
        type=_existing,
        help="a folder of class folders (happy/, sad/, ...), train/1..7 + test/1..7, or a CSV path,label[,split]",
    )
    faces.add_argument("out", type=Path, help="an empty folder for the data set")
    faces.add_argument(
        "--test-fraction",
        type=_between(0.0, 1.0, open_ends=True),
        default=0.2,
        help="stratified share for the test split where SRC gives none",
    )
    faces.add_argument("--seed", type=_at_least(0), default=0)
    faces.add_argument(
        "--workers",
        type=_at_least(1),
        default=None,
        help="processes (default: one per CPU, at most 8)",
    )
    faces.set_defaults(func=_import_images)

    guess = commands.add_parser(
        "predict",
        help="what a trained model says about photos: every face, both branches, Grad-CAM++",
    )
    guess.add_argument("paths", type=_existing, nargs="+", help="photos, or folders of photos")
    guess.add_argument(
        "--baseline",
        type=_existing,
        required=True,
        help="the baseline checkpoint (best.pt of a baseline run)",
    )
    guess.add_argument(
        "--fusion",
        type=_existing,
        default=None,
        help="a fusion run's best.pt (without it: the RGB baseline alone)",
    )
    guess.add_argument(
        "--out", type=Path, required=True, help="folder for predictions.csv and the figures"
    )
    guess.add_argument(
        "--data",
        type=_existing,
        default=None,
        help="a RAF-DB copy (basic/): its training images give a baseline checkpoint that stores no population "
        "mean (the ARM authors') one, as notebook 09 does",
    )
    guess.add_argument("--device", default=None, help="cpu or cuda (default: the best available)")
    guess.set_defaults(func=_predict)

    kernel = commands.add_parser(
        "install-kernel",
        help=f"register this environment as the Jupyter kernel {LAB_KERNEL!r} (./run_all.sh lab does it)",
    )
    kernel.add_argument(
        "--prefix",
        type=Path,
        default=None,
        help="install under PREFIX/share/jupyter (default: for this user, found by any JupyterLab)",
    )
    kernel.set_defaults(func=_install_kernel)
    return parser


def _import_images(args: argparse.Namespace) -> int:
    from fer_lib.data.faces import import_images

    counts = import_images(
        args.src, args.out, test_fraction=args.test_fraction, seed=args.seed, workers=args.workers
    )
    print(
        f"found {counts['photos']} photo(s) as {counts['found']}; imported {counts['imported']} "
        f"({counts['train']} train, {counts['test']} test); not imported: {counts['not imported']}, listed with the reason "
        f"in {args.out / 'import_report.csv'}"
    )
    if counts["several faces"]:
        print(
            f"{counts['several faces']} photo(s) showed several faces: the largest was kept (import_report.csv)"
        )
    if counts["already aligned"]:
        print(
            f"{counts['already aligned']} photo(s) were already aligned 100x100 crops: aligned again from their detected points"
        )
    print(f"next: python -m fer_lib check-data {args.out}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    import pandas as pd

    from fer_lib.apps.predict import predict

    frame = predict(
        args.paths,
        args.baseline,
        args.fusion,
        args.out,
        device=_device(args.device),
        mean_data=args.data,
    )
    status = frame["status"] if len(frame) else pd.Series(dtype=str)
    faces = frame[status.str.startswith("predicted")] if len(frame) else frame
    print(
        f"{len(faces)} face(s) in {faces['image'].nunique() if len(faces) else 0} photo(s); "
        f"{int((status == 'no face').sum())} photo(s) without a face; "
        f"{int((status == 'unreadable').sum())} unreadable (listed with the reason). "
        f"Table: {args.out / 'predictions.csv'}; one figure per face in {args.out}"
    )
    return 0


LAB_KERNEL = (
    "fer-lib"  # the notebooks' kernelspec: any JupyterLab finds this environment under that name
)


def _install_kernel(args: argparse.Namespace) -> int:
    from ipykernel.kernelspec import install

    path = install(
        user=args.prefix is None,
        prefix=str(args.prefix) if args.prefix else None,
        kernel_name=LAB_KERNEL,
        display_name=f"Python ({LAB_KERNEL})",
    )
    print(f"kernel {LAB_KERNEL!r} ({sys.executable}) registered in {path}")
    return 0


def _is_data_or_checkpoint_error(error: Exception) -> bool:
    from fer_lib.data.faces import FaceToolsMissing, ImportProblem
    from fer_lib.data.rafdb import RafDbError
    from fer_lib.models import CheckpointError
    from fer_lib.run.profiles import SettingsError
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except Exception as error:
        # a broken data set or a checkpoint that does not fit: its message says what and where, no traceback
        if not _is_data_or_checkpoint_error(error):
            raise
        print(f"{args.command}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
