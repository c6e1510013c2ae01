"""Training commands: train-baseline, train-fusion and fit-gate."""

from __future__ import annotations

import argparse
from pathlib import Path

from fer_lib.cli.common import (
    REQUIRED,
    SWITCH,
    TRAINING_OPTIONS,
    add_command,
    at_least,
    between,
    checkpoint_options,
    existing,
    input_size_arg,
    load_baseline,
    print_summary,
    recipe,
    run_device,
    save_fusion_test,
    width_of,
)
from fer_lib.settings import (
    AUGMENTATIONS,
    LANDMARK_INPUTS,
    LANDMARK_SETS,
    LR_SCHEDULES,
    SELECTIONS,
    TRAINED_WEIGHTINGS,
    BaselineConfig,
    FusionConfig,
)


def _train_baseline(args: argparse.Namespace) -> int:
    from fer_lib import training
    from fer_lib.runtime import distributed

    config = recipe(training.BaselineConfig, args)
    device = run_device(args.device)
    # one rank decodes
    train, test = distributed.main_first(
        lambda: training.load_splits(args.data, config.input_size, cache_dir=args.run_dir / "cache")
    )
    model = training.train_baseline(train, config, args.run_dir, device=device)
    if not distributed.is_main():  # under torchrun, rank 0 evaluates and writes
        return 0
    probabilities = training.save_baseline_predictions(
        model, test, config.eval_batch_size, args.run_dir / "predictions_test.csv"
    )
    print_summary("baseline, test set", test.labels.numpy(), probabilities, test.classes)
    print(f"best checkpoint: {args.run_dir / 'best.pt'}")
    return 0


def _fusion_data(args: argparse.Namespace, baseline, landmark_set: str, flips=(False,)):
    """The splits, their classes checked against the baseline's, and the training split's frozen
    RGB features (one rank decodes and computes first)."""
    from fer_lib import models, training
    from fer_lib.runtime.distributed import main_first

    cache = args.run_dir / "cache"
    train, test = main_first(
        lambda: training.load_splits(
            args.data, baseline.input_size, landmark_set=landmark_set, cache_dir=cache
        )
    )
    # before any feature is computed
    models.check_classes(baseline.classes, train.classes, str(args.baseline))
    features = main_first(
        lambda: training.rgb_feature_cache(baseline, train, flips=flips, cache_dir=cache)
    )
    return train, test, features


def _train_fusion(args: argparse.Namespace) -> int:
    from fer_lib import training
    from fer_lib.runtime import distributed

    device = run_device(args.device)
    baseline = load_baseline(args.baseline, args.input_size).to(device)
    config = recipe(training.FusionConfig, args)
    flips = (False, True) if config.flip else (False,)
    train, test, features = _fusion_data(args, baseline, config.landmark_set, flips)
    if args.holdout is None and distributed.is_main():
        print(
            "note: no --holdout: the validation images are drawn here, and a baseline trained on "
            "them (the ARM authors' checkpoint saw every training image) looks better on them than "
            "on new images; the epoch kept and a calibrated temperature lean on it"
        )
    model = training.train_fusion(
        baseline, train, features, config, args.run_dir, device=device, holdout=args.holdout
    )
    if distributed.is_main():  # under torchrun, rank 0 evaluates and writes
        save_fusion_test(model, baseline, test, config, args.run_dir)
    return 0


def _fit_gate(args: argparse.Namespace) -> int:
    from fer_lib import training

    device = run_device(args.device)
    baseline = load_baseline(args.baseline, args.input_size).to(device)
    if not (args.base_run / "best.pt").is_file() or not (args.base_run / "split.json").is_file():
        raise FileNotFoundError(
            f"{args.base_run}: no best.pt and split.json; pass the folder of a finished "
            "train-fusion run"
        )
    _, base_config = training.load_fusion_checkpoint(args.base_run / "best.pt", baseline)
    train, test, features = _fusion_data(args, baseline, base_config.landmark_set)
    model, config = training.fit_gate(
        args.base_run, baseline, train, features, args.run_dir, device=device
    )
    save_fusion_test(model, baseline, test, config, args.run_dir)
    return 0


def add_parsers(commands) -> None:
    # every default below comes from the recipes
    _add_train_baseline(commands, BaselineConfig())
    _add_train_fusion(commands, FusionConfig())
    add_command(
        commands,
        "fit-gate",
        _fit_gate,
        "the learned weighting: a gate fitted on a trained fusion run's validation split",
        *TRAINING_OPTIONS,
        *checkpoint_options("the baseline the fusion run was trained with"),
        (
            ("--base-run", existing, REQUIRED),
            "a train-fusion run folder (its best.pt and split.json)",
        ),
        (("--run-dir", Path, REQUIRED), "where the gated model and its test predictions go"),
    )


def _add_train_baseline(commands, base: BaselineConfig) -> None:
    add_command(
        commands,
        "train-baseline",
        _train_baseline,
        "train ResNet18 + ARM (the ARM recipe)",
        *TRAINING_OPTIONS,
        (("--run-dir", Path, REQUIRED), "checkpoints, history, split and predictions go here"),
        (("--input-size", input_size_arg, base.input_size), "(default: %(default)s)"),
        (
            ("--width", width_of("resnet"), base.width),
            "ResNet18 base width (%(default)s: the standard network)",
        ),
        *_schedule_options(base, "the ARM recipe's"),
        (("--lr", float, base.lr), None),
        (("--weight-decay", float, base.weight_decay), None),
        (
            ("--pretrained", existing, base.pretrained),
            "torchvision's ResNet18 ImageNet weights (resnet18-f37072fd.pth)",
        ),
        (
            ("--augmentation", AUGMENTATIONS, base.augmentation),
            "upstream (the default): the ARM authors' mix (half untouched, a quarter flipped, a "
            "quarter noised); flip_or_noise: every image altered",
        ),
        (
            ("--ema", between(0, 1, open_ends=True), base.ema),
            "keep a moving average of the weights with this decay per step (default: off, the ARM "
            "recipe)",
        ),
    )


def _add_train_fusion(commands, fused: FusionConfig) -> None:
    add_command(
        commands,
        "train-fusion",
        _train_fusion,
        "train the landmark branch + fusion (baseline frozen)",
        *TRAINING_OPTIONS,
        *checkpoint_options("baseline checkpoint (the ARM authors' file or ours)"),
        (("--run-dir", Path, REQUIRED), None),
        # the fusion model itself: its weighting and its landmark branch
        (
            ("--weighting", TRAINED_WEIGHTINGS, fused.weighting),
            "what scales F_landmark (default: %(default)s, the proposed method); calibrated: "
            "both, with the landmark head temperature-scaled on the validation split",
        ),
        (
            ("--landmark-input", LANDMARK_INPUTS, fused.landmark_input),
            "heatmaps (the default): the landmark CNN of Table 1; coords: an MLP on the aligned "
            "coordinates",
        ),
        (
            ("--w", between(0, 1), fused.w_disagree, dict(dest="w_disagree")),
            "agreement weight when the branches disagree (default: %(default)s)",
        ),
        (
            ("--weight-grad", SWITCH, fused.weight_grad),
            "let gradients flow through p_landmark (the paper is silent; default: off)",
        ),
        (
            ("--width", width_of("landmark"), fused.width),
            "landmark CNN base width (%(default)s: Table 1)",
        ),
        (
            ("--batch-norm", SWITCH, fused.batch_norm),
            "BatchNorm in the landmark CNN (default: off, as Table 1 prints it; the CPU demo uses "
            "it)",
        ),
        (
            ("--holdout", existing, None, dict(metavar="SPLIT_JSON")),
            "the split.json of the baseline's run folder: validate on the images it never trained "
            "on (without it, the run draws its own split, and a checkpoint trained on every image, "
            "like the ARM authors', has seen them all)",
        ),
        *_schedule_options(fused, "Table 4's"),
        (("--landmark-set", LANDMARK_SETS, fused.landmark_set), None),
        (
            ("--sigma", between(0.1, 50), fused.heatmap_sigma, dict(dest="heatmap_sigma")),
            "heatmap gaussian sigma in pixels (default 1.5 at 224, scaled with the input size)",
        ),
        (
            ("--flip", SWITCH, fused.flip),
            "horizontal-flip augmentation of image and heatmap together (default: on)",
        ),
        (
            ("--select", SELECTIONS, fused.select),
            "the epoch kept: val_loss (the default), the lowest validation loss of eq. 3 (both "
            "heads), or val_fused_accuracy, the best fused validation accuracy",
        ),
    )


def _schedule_options(recipe: BaselineConfig | FusionConfig, source: str) -> tuple:
    """The training schedule's options that both recipes have, named as their fields."""
    return (
        (("--epochs", at_least(1), recipe.epochs), None),
        (
            ("--batch-size", at_least(2), recipe.batch_size),
            "at least 2 (BatchNorm); default %(default)s",
        ),
        (("--val-fraction", between(0, 1, open_ends=True), recipe.val_fraction), None),
        (
            ("--lr-schedule", LR_SCHEDULES, recipe.lr_schedule),
            f"exponential (the default): {source} ExponentialLR(0.9); cosine: to zero",
        ),
    )
