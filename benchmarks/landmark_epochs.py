"""Is the demo's landmark branch short of its linear probe for lack of training, or for its input?

Trains the landmark branch + fusion of the demo profile (the paper's weighting, w = 0.6) on the data
and baselines of a finished demo run, once per seed, branch and epoch count: the heatmap CNN of
Table 1 and the coordinate MLP (``landmark_input="coords"``), each with the demo's recipe but for
the number of epochs (the kept epoch is still chosen on the validation split). Prints and writes
each run's test OA of the landmark-only head and of the fused model, beside the linear probe on the
coordinates the run's own report computed:

    .venv/bin/python benchmarks/landmark_epochs.py --seeds 0 1 --epochs 4 10 --out
    /tmp/landmark_epochs

Results and the machine: benchmarks/README.md, "The landmark branch against its probe".
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import pandas as pd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, nargs="+", default=[4, 10])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    from fer_lib import training
    from fer_lib.evaluation import probes
    from fer_lib.run.experiment import Experiment
    from fer_lib.run.pipeline import ensure_data, run_dir_for
    from fer_lib.run.profiles import get_profile

    torch.set_num_threads(args.threads)
    profile = get_profile("demo")
    run_dir = run_dir_for(profile)
    experiment = Experiment(profile, ensure_data(profile, None, run_dir), run_dir, progress=False)
    probe = (
        probes.probe_table(experiment.train, experiment.test, experiment.cache_dir)
        .set_index("model")
        .loc["linear probe, coordinates (aligned landmarks)", "test OA"]
    )
    rows = []
    for seed in args.seeds:
        for variant in (None, "coords"):
            for epochs in args.epochs:
                config = dataclasses.replace(
                    experiment.fusion.config("both", 0.6, seed, variant), epochs=epochs
                )
                folder = args.out / f"{variant or 'heatmaps'}_epochs{epochs}_seed{seed}"
                clock = time.perf_counter()
                model = training.train_fusion(
                    experiment.baselines.model(seed),
                    experiment.train,
                    experiment.baselines.rgb_cache("train", seed),
                    config,
                    folder,
                    progress=False,
                )
                p = training.predict_fusion(
                    model, experiment.test, experiment.baselines.rgb_cache("test", seed), config
                )
                kept = int(
                    torch.load(folder / "best.pt", map_location="cpu", weights_only=True)["epoch"]
                )
                rows.append(
                    {
                        "branch": variant or "heatmaps",
                        "epochs": epochs,
                        "seed": seed,
                        "epoch kept": kept,
                        "landmark-only test OA": float((p.landmark.argmax(1) == p.labels).mean()),
                        "fused test OA": float((p.fused.argmax(1) == p.labels).mean()),
                        "seconds": round(time.perf_counter() - clock, 1),
                    }
                )
                print(rows[-1], flush=True)
    frame = pd.DataFrame(rows)
    summary = (
        frame.groupby(["branch", "epochs"], sort=False)[["landmark-only test OA", "fused test OA"]]
        .mean()
        .reset_index()
    )
    summary["coordinate probe"] = probe
    args.out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out / "landmark_epochs.csv", index=False)
    text = (
        frame.to_markdown(index=False, floatfmt=".4f")
        + "\n\nMean over seeds:\n\n"
        + summary.to_markdown(index=False, floatfmt=".4f")
        + "\n"
    )
    (args.out / "landmark_epochs.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
