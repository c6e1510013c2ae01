"""The demo's training stage, before and after a change: a baseline epoch and a landmark-branch
epoch.

    .venv/bin/python benchmarks/bench_demo_stage.py --ref 2c8fbe5 --repeats 3
    .venv/bin/python benchmarks/bench_demo_stage.py --profile # where the time goes (torch.profiler)

Each repetition runs a fresh single-thread process (as the stage's workers run) that trains, on the
demo's data,
- a baseline job cut to one epoch: the epoch (its validation pass included, as ``history.csv`` times
  it), then the rest of the job (the kept model's reload, ARM's population mean, the frozen-feature
  caches);
- a landmark-branch job (the paper's weighting, w = 0.6) cut to one epoch, then its test
  predictions, and, where the code stores the landmark ARM's population mean in some runs only, that
  pass timed apart.
From these and the profile's epochs and plan, it prices the whole stage in seconds of one worker.
With ``--ref REV`` the same runs on that commit's code (``git archive`` into a temporary folder),
alternating before/after so that the load of a shared machine hits both alike; the ratio is of
medians. Results and the machine: benchmarks/README.md, "The demo's training stage".
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def worker(args) -> None:
    """One repetition in this process: print one JSON line of seconds."""
    import torch

    torch.set_num_threads(args.threads)
    import dataclasses

    import fer_lib
    from fer_lib import training
    from fer_lib.run import scheduler
    from fer_lib.run.experiment import Experiment
    from fer_lib.run.profiles import get_profile

    profile = get_profile("demo")
    run = Path(args.scratch)
    experiment = Experiment(profile, args.data, run, progress=False)
    experiment.cache_dir = Path(args.cache)  # the decoded images, shared by every repetition
    train, test = experiment.train, experiment.test
    baselines, fusions = scheduler.plan(experiment)
    heatmap_runs = sum(job.variant != "coords" for job in fusions)
    profiler = None
    if args.profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        profiler = torch_profile(activities=[ProfilerActivity.CPU])
    out = {
        "fer_lib": str(Path(fer_lib.__file__).parent.parent),
        "threads": torch.get_num_threads(),
        "baseline_epochs": profile.baseline_epochs,
        "fusion_epochs": profile.fusion_epochs,
        "baselines": len(baselines),
        "heatmap_runs": heatmap_runs,
    }
    info = getattr(training, "cpu_path", None)
    out["path"] = info() if info else "fp32"

    def timed(name, call):
        clock = time.perf_counter()
        if profiler is not None:
            with profiler:
                result = call()
            print(f"\n== {name}: torch.profiler, top operators by self CPU time\n", file=sys.stderr)
            print(
                profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows),
                file=sys.stderr,
            )
        else:
            result = call()
        return result, time.perf_counter() - clock

    config = dataclasses.replace(experiment.baselines.config(0), epochs=1)
    model, seconds = timed(
        "baseline job, one epoch",
        lambda: training.train_baseline(train, config, run / "baseline", progress=False),
    )
    import pandas as pd

    out["baseline_epoch"] = float(pd.read_csv(run / "baseline" / "history.csv")["seconds"].iloc[0])
    (cache_train, cache_test), caches = timed(
        "feature caches",
        lambda: (
            training.rgb_feature_cache(model, train, progress=False),
            training.rgb_feature_cache(model, test, flips=(False,), progress=False),
        ),
    )
    out["baseline_fixed"] = seconds - out["baseline_epoch"] + caches
    fusion = dataclasses.replace(experiment.fusion.config("both", 0.6, 0), epochs=1)

    # Code that stores the landmark ARM's population mean only in some runs
    # (fusion_runs.PREDICTED_WITH): the job runs without it, and the pass is timed apart and priced
    # for those runs. Older code: inside every job.
    import inspect

    from fer_lib.run import fusion_runs

    predicted_with = getattr(fusion_runs, "PREDICTED_WITH", None)
    optional = "population_means" in inspect.signature(training.train_fusion).parameters
    means_apart = predicted_with is not None and optional

    def landmark_job():
        trained = training.train_fusion(
            model,
            train,
            cache_train,
            fusion,
            run / "fusion",
            progress=False,
            **({"population_means": False} if means_apart else {}),
        )
        return trained, training.predict_fusion(trained, test, cache_test, fusion)

    (trained, _), seconds = timed("landmark-branch job, one epoch", landmark_job)
    out["fusion_epoch"] = float(pd.read_csv(run / "fusion" / "history.csv")["seconds"].iloc[0])
    out["fusion_fixed"] = seconds - out["fusion_epoch"]
    out["means"], out["runs_with_means"] = 0.0, 0
    if means_apart:  # over the whole training set: the runs' fit part is 90% of it
        _, out["means"] = timed(
            "population means",
            lambda: training.estimate_population_means(trained, train, cache_train[:1], fusion),
        )
        out["runs_with_means"] = sum(
            job.variant is None and (job.weighting, job.w) == predicted_with for job in fusions
        )
    out["stage"] = (
        out["baselines"] * (out["baseline_epochs"] * out["baseline_epoch"] + out["baseline_fixed"])
        + heatmap_runs * (out["fusion_epochs"] * out["fusion_epoch"] + out["fusion_fixed"])
        + out["runs_with_means"] * out["means"]
    )
    print(json.dumps(out))


def run_once(source: Path, args, label: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench_stage_") as scratch:
        env = {**os.environ, "PYTHONPATH": str(source), "OMP_NUM_THREADS": str(args.threads)}
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--worker",
            "--scratch",
            scratch,
            "--data",
            str(args.data),
            "--cache",
            str(args.cache),
            "--threads",
            str(args.threads),
        ] + (["--profile"] if args.profile else [])
        result = subprocess.run(command, cwd=source, env=env, capture_output=True, text=True)
        if result.returncode:
            raise SystemExit(f"{label} failed:\n{result.stderr[-3000:]}")
        if args.profile:
            print(result.stderr)
        row = json.loads(result.stdout.strip().splitlines()[-1])
        return {"code": label, **row}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--ref", help="a git revision to compare with (run from a git archive of it)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads per process (the stage's workers: 1)"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="print torch.profiler's table for each part (one repetition)",
    )
    parser.add_argument("--rows", type=int, default=25)
    parser.add_argument("--data", type=Path, default=ROOT / "runs" / "demo" / "data" / "basic")
    parser.add_argument("--cache", type=Path, default=ROOT / "runs" / "demo" / "cache")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--scratch", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if not (args.data / "list_patition_label.txt").exists() and not args.data.exists():
        raise SystemExit(f"no demo data in {args.data}: run ./run_all.sh once, or pass --data")
    from tqdm import tqdm

    with tempfile.TemporaryDirectory(prefix="bench_ref_") as ref_tree:
        sources = [("after", ROOT)]
        if args.ref:
            archive = subprocess.run(
                ["git", "archive", args.ref], cwd=ROOT, capture_output=True, check=True
            ).stdout
            subprocess.run(["tar", "-x", "-C", ref_tree], input=archive, check=True)
            sources.insert(0, (f"before ({args.ref})", Path(ref_tree)))
        rows = []
        repeats = 1 if args.profile else args.repeats
        # before, after, before, after...
        for repeat in tqdm(range(repeats * len(sources)), desc="bench_demo_stage"):
            label, source = sources[repeat % len(sources)]
            rows.append({"repeat": repeat // len(sources), **run_once(source, args, label)})
            tqdm.write(json.dumps(rows[-1]))
    import pandas as pd

    frame = pd.DataFrame(rows)
    columns = ["baseline_epoch", "baseline_fixed", "fusion_epoch", "fusion_fixed", "means", "stage"]
    medians = frame.groupby("code", sort=False)[columns].median()
    medians["path"] = frame.groupby("code", sort=False)["path"].first()
    print(
        f"\n{time.strftime('%Y-%m-%d')}, {args.threads} thread(s), medians of {repeats} "
        "repetition(s), seconds:\n"
    )
    print(medians.to_markdown(floatfmt=".1f"))
    if args.ref:
        compared = [c for c in columns if c != "means"]  # older code has no pass apart
        ratio = medians.loc["after", compared].astype(float) / medians.iloc[0][compared].astype(
            float
        )
        per_repeat = frame.pivot(index="repeat", columns="code", values="stage")
        # pivot sorts its columns by name: the reference's by its label, not by position
        stage_ratios = (per_repeat["after"] / per_repeat[sources[0][0]]).round(3).tolist()
        print(
            "\nafter / before: "
            + ", ".join(f"{k} {v:.2f}" for k, v in ratio.items())
            + f"; stage per repetition {stage_ratios}"
        )


if __name__ == "__main__":
    main()
