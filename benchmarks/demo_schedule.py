"""How many epochs does the demo need? A baseline and the proposed landmark branch at given epochs
and schedule.

    .venv/bin/python benchmarks/demo_schedule.py --seed 0 --set baseline_epochs=6 --set
    fusion_epochs=2 \
        --set lr_schedule=cosine --out /tmp/sched_a

Trains, on the demo's data, one baseline and one landmark-branch run (the paper's weighting, w =
0.6) with the demo profile changed by ``--set`` (as ``./run_all.sh --set`` takes them), one thread,
and prints the kept epoch and its validation accuracy (what a choice may look at) beside the test OA
(the quality targets only). Results: benchmarks/README.md, "The demo's training stage".
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    import pandas as pd
    import torch

    from fer_lib.run.experiment import Experiment
    from fer_lib.run.profiles import get_profile, parse_assignments

    torch.set_num_threads(args.threads)
    profile = get_profile(
        "demo", {**parse_assignments(args.set), "seed_offset": str(args.seed), "seeds": "1"}
    )
    experiment = Experiment(
        profile, ROOT / "runs" / "demo" / "data" / "basic", args.out, progress=False
    )
    experiment.cache_dir = ROOT / "runs" / "demo" / "cache"  # the decoded images
    clock = time.perf_counter()
    baseline = experiment.baselines.predictions(args.seed)
    history = pd.read_csv(experiment.baselines.folder(args.seed) / "history.csv")
    kept = history.loc[history["val_accuracy"].idxmax()]
    row = {
        "settings": " ".join(args.set),
        "seed": args.seed,
        "baseline epoch kept": int(kept["epoch"]),
        "baseline val acc": round(float(kept["val_accuracy"]), 4),
        "RGB test OA": round(float((baseline["predicted"] == baseline["label"]).mean()), 4),
        "baseline seconds": round(time.perf_counter() - clock, 1),
    }
    # the baseline's figures first: the landmark branch takes a while longer
    print(json.dumps(row), flush=True)
    clock = time.perf_counter()
    run = experiment.fusion.run("both", 0.6, args.seed)
    p = run.predictions
    kept = run.history.loc[run.history["val_loss"].idxmin()]
    row.update(
        {
            "fusion epoch kept": int(kept["epoch"]),
            "fusion val loss": round(float(kept["val_loss"]), 4),
            "landmark val acc": round(float(kept["val_landmark_accuracy"]), 4),
            "landmark-only test OA": round(float((p.landmark.argmax(1) == p.labels).mean()), 4),
            "fused test OA": round(float((p.fused.argmax(1) == p.labels).mean()), 4),
            "fusion seconds": round(time.perf_counter() - clock, 1),
        }
    )
    print(json.dumps(row))


if __name__ == "__main__":
    main()
