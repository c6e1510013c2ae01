"""Calibrate the demo: generate a synthetic set with given knobs and sizes, then measure the linear
probes, the RGB baseline and one landmark branch (both weighting, w = 0.6) against
SYNTHETIC_DATA.md's targets.

    .venv/bin/python benchmarks/calibrate_demo.py --out /tmp/calib --train 4000 --test 3068 \
        --knob label_noise=0.02 --baseline-epochs 8 --landmark-width 8 --fusion-epochs 4

Prints one line per stage with its wall time; the numbers are validation and test accuracies.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    from fer_lib import training
    from fer_lib.data import tensors
    from fer_lib.data.rafdb import load_rafdb
    from fer_lib.data.synthetic import (
        SyntheticKnobs,
        demo_dataset_is_complete,
        generate_demo_dataset,
    )
    from fer_lib.evaluation import metrics, probes

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--train", type=int, default=4000)
    parser.add_argument("--test", type=int, default=3068)
    parser.add_argument(
        "--knob", action="append", default=[], help="KEY=VALUE of SyntheticKnobs (JSON value)"
    )
    parser.add_argument("--input-size", type=int, default=128)
    parser.add_argument("--baseline-width", type=int, default=16)
    parser.add_argument("--baseline-epochs", type=int, default=8)
    parser.add_argument("--landmark-width", type=int, default=2)
    parser.add_argument("--fusion-epochs", type=int, default=3)
    parser.add_argument("--fusion-batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument(
        "--sigma",
        type=float,
        default=None,
        help="heatmap sigma in px (default: 1.5 at 224, scaled)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-probes", action="store_true")
    parser.add_argument("--skip-global", action="store_true")
    args = parser.parse_args()

    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.knob)}
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
    knobs = dataclasses.replace(SyntheticKnobs(), **overrides)
    root = args.out / "basic"
    clock = time.perf_counter()
    if not demo_dataset_is_complete(root, args.train, args.test, 0, knobs):
        generate_demo_dataset(root, args.train, args.test, seed=0, knobs=knobs, progress=False)
    print(f"data: {time.perf_counter() - clock:.0f} s ({overrides})", flush=True)

    rafdb = load_rafdb(root)
    train, test = (
        tensors.split_tensors(
            rafdb.split(s), args.input_size, cache_dir=args.out / "cache", progress=False
        )
        for s in ("train", "test")
    )
    y_train, y_test = train.labels.numpy(), test.labels.numpy()
    majority = float((y_test == np.bincount(y_train).argmax()).mean())
    print(f"majority class rate (test): {majority:.3f}", flush=True)
    if not args.skip_probes:
        clock = time.perf_counter()
        hog = probes.linear_probe(
            "hog",
            probes.hog_features(train.images.numpy()),
            y_train,
            probes.hog_features(test.images.numpy()),
            y_test,
        )
        coords = probes.linear_probe(
            "coords",
            probes.coordinate_features(train.points.numpy(), args.input_size),
            y_train,
            probes.coordinate_features(test.points.numpy(), args.input_size),
            y_test,
        )
        print(
            f"probes: HOG {hog.test_accuracy:.3f} (C {hog.c}), coordinates "
            f"{coords.test_accuracy:.3f} (C {coords.c}); {time.perf_counter() - clock:.0f} s",
            flush=True,
        )
    if not args.skip_global:
        clock = time.perf_counter()
        stats = probes.global_statistics(rafdb)
        is_train = rafdb.splits == "train"
        shortcut = probes.linear_probe(
            "global",
            stats[is_train],
            rafdb.labels[is_train],
            stats[~is_train],
            rafdb.labels[~is_train],
        )
        print(
            f"global statistics probe: {shortcut.test_accuracy:.3f} (majority {majority:.3f}); "
            f"{time.perf_counter() - clock:.0f} s",
            flush=True,
        )

    clock = time.perf_counter()
    config = training.BaselineConfig(
        input_size=args.input_size,
        width=args.baseline_width,
        epochs=args.baseline_epochs,
        batch_size=64,
        seed=args.seed,
    )
    baseline = training.train_baseline(
        train, config, args.out / f"baseline_s{args.seed}", progress=False
    )
    rgb_test = training.baseline_logits(baseline, test.images, 64).argmax(1).numpy()
    history = [
        round(h["val_accuracy"], 3)
        for h in json.loads(
            json.dumps(
                torch.load(args.out / f"baseline_s{args.seed}" / "last.pt", weights_only=True)[
                    "history"
                ]
            )
        )
    ]
    print(
        f"baseline: test {float((rgb_test == y_test).mean()):.3f}; val per epoch {history}; "
        f"{time.perf_counter() - clock:.0f} s",
        flush=True,
    )

    clock = time.perf_counter()
    caches = {
        name: training.rgb_feature_cache(baseline, split, flips=flips, progress=False)
        for name, split, flips in (("train", train, (False, True)), ("test", test, (False,)))
    }
    print(f"feature caches: {time.perf_counter() - clock:.0f} s", flush=True)
    clock = time.perf_counter()
    fusion = training.FusionConfig(
        weighting="both",
        w_disagree=0.6,
        width=args.landmark_width,
        epochs=args.fusion_epochs,
        batch_size=args.fusion_batch,
        heatmap_sigma=args.sigma,
        lr=args.lr,
        seed=args.seed,
    )
    run = args.out / (
        f"fusion_w{args.landmark_width}_e{args.fusion_epochs}_sigma{args.sigma}_lr{args.lr}"
        f"_b{args.fusion_batch}_s{args.seed}"
    )
    model = training.train_fusion(baseline, train, caches["train"], fusion, run, progress=False)
    predictions = training.predict_fusion(model, test, caches["test"], fusion)
    rgb_ok, lm_ok = predictions.rgb.argmax(1) == y_test, predictions.landmark.argmax(1) == y_test
    fused_ok = predictions.fused.argmax(1) == y_test
    per_class = metrics.summary(y_test, predictions.rgb)["per_class"]
    import pandas as pd

    hist = pd.read_csv(run / "history.csv")
    print(
        f"fusion: rgb {rgb_ok.mean():.3f} landmark {lm_ok.mean():.3f} fused "
        f"{fused_ok.mean():.3f}; rgb wrong & landmark right {(~rgb_ok & lm_ok).mean():.3f}, both "
        f"wrong {(~rgb_ok & ~lm_ok).mean():.3f}; rgb per class "
        f"{np.round(per_class, 2).tolist()}; landmark val per epoch "
        f"{hist['val_landmark_accuracy'].round(3).tolist()}; {time.perf_counter() - clock:.0f} s",
        flush=True,
    )


if __name__ == "__main__":
    main()
