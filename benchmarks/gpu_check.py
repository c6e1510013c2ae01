"""The paper profile's stages on one device, at 224 px, on a RAF-DB-sized synthetic set, and the whole profile's
time estimated from them. ``benchmarks/gpu_check.sh`` runs it; ``--small`` runs the same stages on a tiny set
(the CPU test of this script).

Stages, each timed on the paper's networks (ResNet18 width 64 + ARM, Table 1 landmark CNN width 32 without
BatchNorm) with the paper profile's batches (256 train, 64 test):
- generating the synthetic set (12,271 train / 3,068 test) and decoding it once;
- a baseline training epoch (the second of two: the first includes warm-up), augmentation on the device;
- the frozen-feature cache of the training set (both flip states) and the test set;
- a landmark-branch epoch from the cache (the second of two), heatmaps drawn on the device;
- inference of the test set through both branches;
- the peak device memory.

Targets on one H100 (issue "The paper profile, proven"): landmark-branch epoch at most 3 s, baseline epoch at most
10 s, test inference at most 2 s, the whole paper profile at most 1 hour. Writes ``gpu_check.json`` and
``gpu_check.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

TARGETS_S = {"baseline epoch": 10.0, "landmark-branch epoch": 3.0, "test inference, both branches": 2.0, "whole paper profile (estimate)": 3600.0}


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a tiny set and short runs: the same stages in seconds on a CPU")
    parser.add_argument("--out", type=Path, required=True, help="folder for the data, the runs and gpu_check.{json,md}")
    args = parser.parse_args()

    import pandas as pd
    import torch

    from fer_lib import models as M
    from fer_lib import training as T
    from fer_lib.experiment import Experiment, get_profile
    from fer_lib.pipeline import ensure_data, machine_info

    n_train, n_test = (56, 28) if args.small else (12271, 3068)  # RAF-DB's basic split
    paper = get_profile("paper")
    # the paper profile's networks and recipe, on the synthetic set, one seed and one w
    profile = get_profile("smoke", {
        "synthetic": f"{n_train},{n_test}", "seeds": "1", "w_grid": "0.6", "input_size": "224", "baseline_width": "64", "landmark_width": "32",
        "landmark_batch_norm": "false", "augmentation": "upstream", "baseline_per_seed": "false",
        "batch_train": "16" if args.small else str(paper.batch_train), "batch_test": "16" if args.small else str(paper.batch_test),
    })
    run_dir = args.out / "run"
    device = M.pick_device()
    seconds: dict[str, float] = {}

    clock = time.perf_counter()
    data_root = ensure_data(profile, None, run_dir)
    seconds["synthetic set, generated"] = time.perf_counter() - clock
    experiment = Experiment(profile, data_root, run_dir, progress=False)
    clock = time.perf_counter()
    experiment.splits
    seconds["synthetic set, decoded once"] = time.perf_counter() - clock
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.cuda.reset_peak_memory_stats(device)

    config = experiment.baseline_config()
    config.epochs = 2
    baseline = T.train_baseline(experiment.train, config, run_dir / "baseline", device=device, progress=False).to(device).eval()
    seconds["baseline epoch"] = float(pd.read_csv(run_dir / "baseline" / "history.csv")["seconds"].iloc[-1])

    clock = time.perf_counter()
    train_cache = T.rgb_feature_cache(baseline, experiment.train, flips=(False, True), progress=False)
    test_cache = T.rgb_feature_cache(baseline, experiment.test, flips=(False,), progress=False)
    _sync(device)
    seconds["frozen-feature cache, train (2 flips) + test"] = time.perf_counter() - clock

    fusion = experiment.fusion_config("both", 0.6, 0)
    fusion.epochs = 2
    model = T.train_fusion(baseline, experiment.train, train_cache, fusion, run_dir / "fusion", device=device, progress=False)
    seconds["landmark-branch epoch"] = float(pd.read_csv(run_dir / "fusion" / "history.csv")["seconds"].iloc[-1])

    model = model.to(device)
    T.predict_fusion(model, experiment.test, test_cache, fusion)  # warm-up
    _sync(device)
    clock = time.perf_counter()
    T.predict_fusion(model, experiment.test, test_cache, fusion)
    _sync(device)
    seconds["test inference, both branches"] = time.perf_counter() - clock
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None

    # the paper profile: one baseline of 70 epochs, its caches, then every distinct landmark-branch run of 10 epochs
    # for 5 seeds (the w grid, the ablation and the runs beyond the paper), each evaluated once; epoch times scale with the training set
    runs = len(Experiment(paper, data_root, run_dir, progress=False).fusion_plan())
    scale = 12271 / n_train
    estimate = (paper.baseline_epochs * seconds["baseline epoch"] * scale + seconds["frozen-feature cache, train (2 flips) + test"] * scale
                + runs * (paper.fusion_epochs * seconds["landmark-branch epoch"] * scale + seconds["test inference, both branches"] * 3068 / n_test))
    seconds["whole paper profile (estimate)"] = estimate

    rows = []
    for stage, value in seconds.items():
        target = TARGETS_S.get(stage)
        verdict = "" if target is None or args.small else ("met" if value <= target else "missed")
        rows.append({"stage": stage, "seconds": round(value, 2), "target (one H100)": f"<= {target:g} s" if target else "", "verdict": verdict})
    result = {"machine": machine_info(), "device": str(device), "small": args.small, "train images": n_train, "test images": n_test,
              "landmark-branch runs in the paper profile": runs, "peak device memory (GiB)": round(peak, 2) if peak is not None else None, "stages": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# GPU check: {result['machine']['gpu']} ({result['device']}), {n_train} train / {n_test} test images at 224 px", "",
             "| stage | seconds | target (one H100) | verdict |", "|---|---|---|---|"]
    lines += [f"| {r['stage']} | {r['seconds']:.2f} | {r['target (one H100)']} | {r['verdict']} |" for r in rows]
    lines += ["", f"Peak device memory: {result['peak device memory (GiB)']} GiB. The estimate counts {runs} landmark-branch runs "
              f"(5 seeds x the distinct configurations of Fig. 4, the ablation, the calibrated weighting, the coordinate branch, counted as a "
              f"heatmap run though it is far cheaper, and the design ablations) of {paper.fusion_epochs} epochs and one baseline of "
              f"{paper.baseline_epochs} epochs" + (", scaled from the small set (--small: not a measurement of the paper's sizes)." if args.small else ".")]
    (args.out / "gpu_check.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
