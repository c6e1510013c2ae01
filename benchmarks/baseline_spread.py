"""How much a demo baseline's test OA moves between training seeds, for a given recipe.

Trains the demo profile's baseline once per seed, two seeds at a time in single-thread processes (as
the training stage of ``./run_all.sh`` does), on the data of a finished demo run, and prints each
seed's test OA and validation curve, then their mean and sd:

    .venv/bin/python benchmarks/baseline_spread.py --seeds 0 1 100 101 --ema 0.99 --out /tmp/spread
    .venv/bin/python benchmarks/baseline_spread.py --seeds 0 1 100 101 --ema none --lr-gamma 0.8
    --out /tmp/spread

Results and the machine: benchmarks/README.md, "The demo baseline's spread between seeds".
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def train_one(args: argparse.Namespace) -> None:
    import pandas as pd
    import torch

    torch.set_num_threads(1)
    from fer_lib import training
    from fer_lib.run.experiment import Experiment
    from fer_lib.run.pipeline import ensure_data, run_dir_for
    from fer_lib.run.profiles import get_profile

    training.LR_GAMMA = args.lr_gamma
    profile = get_profile("demo")
    run_dir = run_dir_for(profile)
    experiment = Experiment(profile, ensure_data(profile, None, run_dir), run_dir, progress=False)
    config = experiment.baselines.config()
    config.seed, config.ema = args.one, None if args.ema == "none" else float(args.ema)
    folder = args.out / f"seed{args.one}_gamma{args.lr_gamma}_ema{args.ema}"
    clock = time.perf_counter()
    model = training.train_baseline(experiment.train, config, folder, progress=False)
    seconds = time.perf_counter() - clock
    accuracy = float(
        (
            training.baseline_logits(model, experiment.test.images, 64).argmax(1)
            == experiment.test.labels
        )
        .float()
        .mean()
    )
    curve = pd.read_csv(folder / "history.csv")["val_accuracy"].round(3).tolist()
    print(f"{args.one} {accuracy:.4f} {seconds:.0f} {curve}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 100, 101])
    parser.add_argument(
        "--ema", default="0.99", help="decay per step of the weights' moving average, or none"
    )
    parser.add_argument(
        "--lr-gamma",
        type=float,
        default=0.9,
        help="ExponentialLR factor per epoch (the ARM recipe: 0.9)",
    )
    parser.add_argument("--out", type=Path, required=True)
    # a worker: train this seed
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        return train_one(args)
    results = []
    for pair in (args.seeds[k : k + 2] for k in range(0, len(args.seeds), 2)):
        command = [
            sys.executable,
            __file__,
            "--ema",
            args.ema,
            "--lr-gamma",
            str(args.lr_gamma),
            "--out",
            str(args.out),
        ]
        workers = [
            subprocess.Popen([*command, "--one", str(seed)], stdout=subprocess.PIPE, text=True)
            for seed in pair
        ]
        for worker in workers:
            line = worker.communicate()[0].strip().splitlines()[-1]
            print(line, flush=True)
            results.append(float(line.split()[1]))
    print(
        f"test OA over {len(results)} seeds: mean {np.mean(results):.4f}, sd "
        f"{np.std(results, ddof=1):.4f}, range {min(results):.4f}-{max(results):.4f}"
    )


if __name__ == "__main__":
    main()
