"""Seconds per training epoch of the baseline and of the landmark branch at the demo's sizes, and a
digest of the weights they end with: to check that a change to the training loops costs nothing on
the CPU and computes the same numbers (run it before and after, e.g. with PYTHONPATH pointing at the
older checkout).

    python benchmarks/bench_epoch.py [--train 600] [--epochs 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from pathlib import Path

import torch


def digest(state: dict) -> str:
    sha = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        sha.update(name.encode())
        sha.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return sha.hexdigest()[:16]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=600, help="synthetic training images (128 px)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import pandas as pd

    import fer_lib
    from fer_lib import training
    from fer_lib.data import tensors
    from fer_lib.data.rafdb import load_rafdb
    from fer_lib.data.synthetic import generate_demo_dataset

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        root = generate_demo_dataset(
            scratch / "basic", args.train, 14, seed=0, progress=False, workers=1
        )
        split = tensors.split_tensors(load_rafdb(root).split("train"), 128, progress=False)
        device = torch.device("cpu")
        baseline_config = training.BaselineConfig(
            input_size=128, width=16, epochs=args.epochs, batch_size=64, seed=0
        )
        clock = time.perf_counter()
        baseline = training.train_baseline(
            split, baseline_config, scratch / "baseline", device=device, progress=False
        )
        baseline_wall = time.perf_counter() - clock
        cache = training.rgb_feature_cache(baseline, split, progress=False)
        fusion_config = training.FusionConfig(
            width=8, batch_norm=True, epochs=args.epochs, batch_size=32, select="val_loss", seed=0
        )
        clock = time.perf_counter()
        training.train_fusion(
            baseline, split, cache, fusion_config, scratch / "fusion", device=device, progress=False
        )
        fusion_wall = time.perf_counter() - clock
        for name, wall in (("baseline", baseline_wall), ("fusion", fusion_wall)):
            history = pd.read_csv(scratch / name / "history.csv")
            weights = torch.load(scratch / name / "last.pt", weights_only=True)["model"]
            epochs = ", ".join(f"{s:.2f}" for s in history["seconds"])
            print(
                f"{name}: epochs {epochs} s; run {wall:.1f} s; weights {digest(weights)}; history "
                f"{hashlib.sha256(history.drop(columns='seconds').to_csv().encode()).hexdigest()[:16]}"
            )
    print(f"fer_lib from {Path(fer_lib.__file__).parent}")


if __name__ == "__main__":
    main()
