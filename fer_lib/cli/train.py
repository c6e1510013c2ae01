"""Training commands: train-baseline, train-fusion and fit-gate."""

from __future__ import annotations

import argparse
from pathlib import Path

from fer_lib.cli.common import (
    add_checkpoint_options,
    at_least,
    between,
    common_parent,
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


def _train_fusion(args: argparse.Namespace) -> int:
    from fer_lib import models, training
    from fer_lib.runtime import distributed

    device = run_device(args.device)
    baseline = load_baseline(args.baseline, args.input_size).to(device)
    config = recipe(training.FusionConfig, args)
    train, test = distributed.main_first(
        lambda: training.load_splits(
            args.data,
            baseline.input_size,
            landmark_set=config.landmark_set,
            cache_dir=args.run_dir / "cache",
        )
    )
    # before any feature is computed
    models.check_classes(baseline.classes, train.classes, str(args.baseline))
    flips = (False, True) if config.flip else (False,)
    train_cache = distributed.main_first(
        lambda: training.rgb_feature_cache(
            baseline, train, flips=flips, cache_dir=args.run_dir / "cache"
        )
    )
    if args.holdout is None and distributed.is_main():
        print(
            "note: no --holdout: the validation images are drawn here, and a baseline trained on "
            "them (the ARM authors' checkpoint saw every training image) looks better on them than "
            "on new images; the epoch kept and a calibrated temperature lean on it"
        )
    model = training.train_fusion(
        baseline, train, train_cache, config, args.run_dir, device=device, holdout=args.holdout
    )
    if distributed.is_main():  # under torchrun, rank 0 evaluates and writes
        save_fusion_test(model, baseline, test, config, args.run_dir)
    return 0


def _fit_gate(args: argparse.Namespace) -> int:
    from fer_lib import models, training

    device = run_device(args.device)
    baseline = load_baseline(args.baseline, args.input_size).to(device)
    if not (args.base_run / "best.pt").is_file() or not (args.base_run / "split.json").is_file():
        raise FileNotFoundError(
            f"{args.base_run}: no best.pt and split.json; pass the folder of a finished "
            "train-fusion run"
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
    save_fusion_test(model, baseline, test, config, args.run_dir)
    return 0


def _add_train_baseline(commands) -> None:
    base = BaselineConfig()  # every default below comes from the recipe
    common = common_parent()
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
        "--input-size", type=input_size_arg, default=base.input_size, help="(default: %(default)s)"
    )
    baseline.add_argument(
        "--width",
        type=width_of("resnet"),
        default=base.width,
        help="ResNet18 base width (%(default)s: the standard network)",
    )
    _add_schedule_options(baseline, base, "the ARM recipe's")
    baseline.add_argument("--lr", type=float, default=base.lr)
    baseline.add_argument("--weight-decay", type=float, default=base.weight_decay)
    baseline.add_argument(
        "--pretrained",
        type=existing,
        default=base.pretrained,
        help="torchvision's ResNet18 ImageNet weights (resnet18-f37072fd.pth)",
    )
    baseline.add_argument(
        "--augmentation",
        default=base.augmentation,
        choices=AUGMENTATIONS,
        help="upstream (the default): the ARM authors' mix (half untouched, a quarter flipped, a "
        "quarter noised); flip_or_noise: every image altered",
    )
    baseline.add_argument(
        "--ema",
        type=between(0, 1, open_ends=True),
        default=base.ema,
        help="keep a moving average of the weights with this decay per step (default: off, the ARM "
        "recipe)",
    )
    baseline.set_defaults(func=_train_baseline)


def _add_train_fusion(commands) -> None:
    fused = FusionConfig()  # every default below comes from the recipe
    common = common_parent()
    fusion = commands.add_parser(
        "train-fusion",
        parents=[common],
        help="train the landmark branch + fusion (baseline frozen)",
    )
    add_checkpoint_options(fusion, "baseline checkpoint (the ARM authors' file or ours)")
    fusion.add_argument("--run-dir", type=Path, required=True)
    _add_fusion_model_options(fusion, fused)
    _add_schedule_options(fusion, fused, "Table 4's")
    fusion.add_argument("--landmark-set", default=fused.landmark_set, choices=LANDMARK_SETS)
    fusion.add_argument(
        "--sigma",
        dest="heatmap_sigma",
        type=between(0.1, 50),
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
        "--select",
        default=fused.select,
        choices=SELECTIONS,
        help="the epoch kept: val_loss (the default), the lowest validation loss of eq. 3 (both "
        "heads), or val_fused_accuracy, the best fused validation accuracy",
    )
    fusion.set_defaults(func=_train_fusion)


def _add_schedule_options(parser, recipe: BaselineConfig | FusionConfig, source: str) -> None:
    """The training schedule's options that both recipes have, named as their fields."""
    parser.add_argument("--epochs", type=at_least(1), default=recipe.epochs)
    parser.add_argument(
        "--batch-size",
        type=at_least(2),
        default=recipe.batch_size,
        help="at least 2 (BatchNorm); default %(default)s",
    )
    parser.add_argument(
        "--val-fraction", type=between(0, 1, open_ends=True), default=recipe.val_fraction
    )
    parser.add_argument(
        "--lr-schedule",
        default=recipe.lr_schedule,
        choices=LR_SCHEDULES,
        help=f"exponential (the default): {source} ExponentialLR(0.9); cosine: to zero",
    )


def _add_fusion_model_options(fusion: argparse.ArgumentParser, fused: FusionConfig) -> None:
    """The options of the fusion model itself (its weighting and its landmark branch), named as
    FusionConfig's fields."""
    fusion.add_argument(
        "--weighting",
        default=fused.weighting,
        choices=TRAINED_WEIGHTINGS,
        help="what scales F_landmark (default: %(default)s, the proposed method); calibrated: "
        "both, with the landmark head temperature-scaled on the validation split",
    )
    fusion.add_argument(
        "--landmark-input",
        default=fused.landmark_input,
        choices=LANDMARK_INPUTS,
        help="heatmaps (the default): the landmark CNN of Table 1; coords: an MLP on the aligned "
        "coordinates",
    )
    fusion.add_argument(
        "--w",
        dest="w_disagree",
        type=between(0, 1),
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
        type=width_of("landmark"),
        default=fused.width,
        help="landmark CNN base width (%(default)s: Table 1)",
    )
    fusion.add_argument(
        "--batch-norm",
        action=argparse.BooleanOptionalAction,
        default=fused.batch_norm,
        help="BatchNorm in the landmark CNN (default: off, as Table 1 prints it; the CPU demo uses "
        "it)",
    )
    fusion.add_argument(
        "--holdout",
        type=existing,
        default=None,
        metavar="SPLIT_JSON",
        help="the split.json of the baseline's run folder: validate on the images it never trained "
        "on (without it, the run draws its own split, and a checkpoint trained on every image, "
        "like the ARM authors', has seen them all)",
    )


def _add_fit_gate(commands) -> None:
    common = common_parent()
    gate = commands.add_parser(
        "fit-gate",
        parents=[common],
        help="the learned weighting: a gate fitted on a trained fusion run's validation split",
    )
    add_checkpoint_options(gate, "the baseline the fusion run was trained with")
    gate.add_argument(
        "--base-run",
        type=existing,
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


def add_parsers(commands) -> None:
    _add_train_baseline(commands)
    _add_train_fusion(commands)
    _add_fit_gate(commands)
