"""The paper profile's stages on one device, at 224 px, on a RAF-DB-sized synthetic set, and the
whole profile's time estimated from them; sized for a 15-minute GPU loan.
``benchmarks/gpu_check.sh`` runs it; ``--small`` runs the same stages on a tiny set (the CPU test of
this script).

Every stage calls the library function the paper profile calls, on the paper's networks (ResNet18
width 64 + ARM, Table 1 landmark CNN width 32 without BatchNorm) with its batches (256 train, 64
test), and is timed between two ``torch.cuda.synchronize`` calls (on CUDA), with the peak device
memory it reached:
- the synthetic set generated and decoded once (CPU work, not part of the profile on RAF-DB);
- a baseline epoch (the second of two, training and validation), its run's population mean (ARM's
  batch-independent mean over the training images), ResNet18 inference of the test set as the
  validation runs it;
- the frozen-feature cache built (train, both flip states, and test) and reused (read back);
- a landmark-branch epoch from the cache (the second of two, training and validation);
- test inference of a landmark-branch run (from the feature cache, as every run of the profile does
  it).

Everything bulky (the synthetic set, decoded images, checkpoints, caches) goes to a new temporary
folder, removed at the end: every run starts fresh, and ``--out`` (the folder a lent GPU machine
sends back) receives only ``gpu_check.json``, ``gpu_check.md`` and ``gpu_check.log``. Before it
starts, the check estimates its own wall time from assumed H100 rates (``ASSUMED``); ``--budget``
(default 480 s) shrinks the synthetic set until that estimate fits, and a stage that would still
overrun the budget (predicted from the rates measured so far) is skipped and reported as skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

RAFDB_TRAIN, RAFDB_TEST = 12271, 3068  # RAF-DB's basic split
VAL_FRACTION = 0.1  # BaselineConfig/FusionConfig's validation split
# Assumed rates on one H100-class GPU (images/s; bf16 autocast, channels_last) and on its host
# (synthetic samples/s per process, decoded images/s), for the check's own time estimate and the
# budget; start-up covers imports, CUDA and cuDNN's first kernel choices. Deliberately cautious: the
# check's first run replaces them with measurements.
ASSUMED = {
    "baseline training": 1500.0,
    "resnet18 inference": 6000.0,
    "landmark-branch training": 2500.0,
    "landmark-branch inference": 8000.0,
    "synthetic samples per process": 40.0,
    "decoding": 1000.0,
    "start-up s": 40.0,
}
TARGETS_S = {
    "baseline epoch (training + validation)": 10.0,
    "landmark-branch epoch (training + validation)": 3.0,
    "test inference of a landmark-branch run (from the feature cache)": 2.0,
    "whole paper profile (estimate)": 3600.0,
}


def own_estimate(n_train: int, n_test: int, epochs: int = 2) -> dict[str, float]:
    """The check's stages in seconds at the ASSUMED rates, for
    ``n_train``/``n_test`` synthetic images."""
    a = ASSUMED
    fit, val = n_train * (1 - VAL_FRACTION), n_train * VAL_FRACTION
    processes = min(8, os.cpu_count() or 1)
    return {
        "start-up": a["start-up s"],
        "synthetic set": (n_train + n_test) / (a["synthetic samples per process"] * processes)
        + (n_train + n_test) / a["decoding"],
        "baseline": epochs * (fit / a["baseline training"] + val / a["resnet18 inference"]),
        "population mean": fit / a["resnet18 inference"],
        "resnet18 inference": n_test / a["resnet18 inference"],
        "feature cache": (2 * n_train + n_test) / a["resnet18 inference"],
        "landmark branch": epochs
        * (fit / a["landmark-branch training"] + val / a["landmark-branch inference"]),
        "test inference": 2 * n_test / a["landmark-branch inference"],
    }


def sized_for(budget: float, small: bool) -> tuple[int, int, float]:
    """(train, test images, estimated seconds): RAF-DB's sizes, shrunk in
    proportion until the estimate fits."""
    if small:
        return 56, 28, sum(own_estimate(56, 28).values())
    n_train, n_test = RAFDB_TRAIN, RAFDB_TEST
    while sum(own_estimate(n_train, n_test).values()) > budget and n_train > 512:
        n_train, n_test = int(n_train * 0.8), int(n_test * 0.8)
    return n_train, n_test, sum(own_estimate(n_train, n_test).values())


# Every module the check imports, with what to install where one is missing (the check's first
# step: a node with PyTorch alone stops here in one line, not minutes into the first stage)
REQUIRED = {
    "torch": "torch",
    "torchvision": "torchvision",
    "numpy": "numpy",
    "pandas": "pandas",
    "scipy": "scipy",
    "PIL": "pillow",
    "tqdm": "tqdm",
    "tabulate": "tabulate",
    "adabelief_pytorch": "adabelief-pytorch",
    "fer_lib.training": "this project (PYTHONPATH=. or pip install -e .)",
    "fer_lib.run.pipeline": "this project's notebooks' packages (papermill, nbconvert, ipykernel)",
}


def missing_modules() -> list[str]:
    """What ``REQUIRED`` lists that this interpreter cannot import: 'module (install ...)'."""
    import importlib

    missing = []
    for module, package in REQUIRED.items():
        try:
            importlib.import_module(module)
        except Exception as error:  # noqa: BLE001 - ImportError, or a broken install's own error
            missing.append(f"{module} (install {package}; {type(error).__name__}: {error})")
    return missing


def no_gpu() -> str | None:
    """Why the check cannot time the paper's stages on a GPU here, or None."""
    import torch

    from fer_lib.runtime.devices import cuda_problem

    if torch.cuda.is_available():
        return None
    return f"no usable CUDA device ({cuda_problem()}); --small runs the same stages on a CPU"


class Report:
    """gpu_check.json and gpu_check.md, written again after every stage and on a failure, so that a
    check cut short still says what it measured and why it stopped."""

    def __init__(self, out: Path, header: dict):
        self.out, self.header = out, header

    def write(self, rows: list[dict], extra: dict | None = None, notes: list[str] = ()) -> dict:
        result = {**self.header, **(extra or {}), "stages": rows}
        (self.out / "gpu_check.json").write_text(json.dumps(result, indent=2) + "\n")
        title = result.get("title", "GPU check")
        lines = [f"# {title}", ""]
        if result.get("error"):
            lines += [f"**Stopped**: {result['error']}", ""]
        lines += [
            *notes,
            "| stage | seconds | images | peak memory (GiB) | target (one H100) | verdict | note |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            seconds = "skipped" if r["seconds"] is None else f"{r['seconds']:.2f}"
            memory = r["peak memory (GiB)"] if r["peak memory (GiB)"] is not None else ""
            lines.append(
                f"| {r['stage']} | {seconds} | {r['images'] or ''} | {memory} | "
                f"{r.get('target (one H100)', '')} | {r.get('verdict', '')} | {r['note']} |"
            )
        (self.out / "gpu_check.md").write_text("\n".join(lines) + "\n")
        return result


class Stages:
    """Times stages between device synchronisations, with their peak device memory; skips a stage
    that the budget cannot hold, predicting its time from the ASSUMED estimate scaled by how this
    machine compared so far."""

    def __init__(self, device, budget: float, log, report: Report | None = None):
        self.device, self.budget, self.log, self.report = device, budget, log, report
        self.started = time.perf_counter()
        self.rows: list[dict] = []
        self.slowness = 1.0  # measured / assumed, over the stages so far

    def _sync(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def run(self, name: str, assumed: float, function, *, images: int | None = None):
        """``function()`` timed as stage ``name`` (``assumed`` seconds at the
        ASSUMED rates); None when skipped."""
        import torch

        elapsed = time.perf_counter() - self.started
        predicted = assumed * self.slowness
        if elapsed + predicted > self.budget:
            self.rows.append(
                {
                    "stage": name,
                    "seconds": None,
                    "images": images,
                    "peak memory (GiB)": None,
                    "note": (
                        f"skipped: {elapsed:.0f} s spent, about {predicted:.0f} s more would "
                        f"pass the {self.budget:.0f} s budget"
                    ),
                }
            )
            self.log(f"{name}: skipped (budget)")
            self.save()
            return None
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self._sync()
        clock = time.perf_counter()
        result = function()
        self._sync()
        seconds = time.perf_counter() - clock
        peak = (
            torch.cuda.max_memory_allocated(self.device) / 2**30
            if self.device.type == "cuda"
            else None
        )
        if assumed > 0.5:  # short stages say little about the machine
            self.slowness = max(self.slowness, seconds / assumed)
        self.rows.append(
            {
                "stage": name,
                "seconds": round(seconds, 3),
                "images": images,
                "peak memory (GiB)": round(peak, 2) if peak is not None else None,
                "note": "",
            }
        )
        self.log(
            f"{name}: {seconds:.2f} s" + (f", peak {peak:.2f} GiB" if peak is not None else "")
        )
        self.save()
        return result

    def save(self, **extra) -> None:
        """The report so far."""
        if self.report is not None:
            self.report.write(self.rows, extra)

    def record(self, name: str, seconds: float | None, images: int | None, note: str) -> None:
        self.rows.append(
            {
                "stage": name,
                "seconds": None if seconds is None else round(seconds, 3),
                "images": images,
                "peak memory (GiB)": None,
                "note": note,
            }
        )
        self.log(f"{name}: {'-' if seconds is None else f'{seconds:.2f} s'} ({note})")
        self.save()

    def seconds(self, name: str) -> float | None:
        return next((row["seconds"] for row in self.rows if row["stage"] == name), None)


def whole_profile(stages: Stages, n_train: int, n_test: int, runs: int) -> float | None:
    """The paper profile on RAF-DB from the measured stages, scaled per image: one baseline (70
    epochs, its population mean, its caches), then ``runs`` landmark-branch runs of 10 epochs, each
    predicting the test set. None when a stage it needs was skipped."""
    from fer_lib.run.profiles import get_profile

    paper = get_profile("paper")
    names = [
        "baseline epoch (training + validation)",
        "population mean (training images)",
        "frozen-feature cache, built (train 2 flips + test)",
        "landmark-branch epoch (training + validation)",
        "test inference of a landmark-branch run (from the feature cache)",
    ]
    baseline_epoch, mean, cache, landmark_epoch, inference = (
        stages.seconds(name) for name in names
    )
    if None in (baseline_epoch, mean, cache, landmark_epoch, inference):
        return None
    train_scale, test_scale = RAFDB_TRAIN / n_train, RAFDB_TEST / n_test
    return (
        paper.baseline_epochs * baseline_epoch * train_scale
        + mean * train_scale
        + cache * (2 * RAFDB_TRAIN + RAFDB_TEST) / (2 * n_train + n_test)
        + runs * (paper.fusion_epochs * landmark_epoch * train_scale + inference * test_scale)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--small",
        action="store_true",
        help="a tiny set: the same stages in a minute on a CPU (the test)",
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="folder for gpu_check.{json,md,log} only"
    )
    parser.add_argument(
        "--budget", type=float, default=480.0, help="seconds the whole check may take (default 480)"
    )
    parser.add_argument(
        "--scratch",
        type=Path,
        default=None,
        help="where the temporary folder goes (default: the system's)",
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    log_file = open(args.out / "gpu_check.log", "w", encoding="utf-8")
    terminal = sys.stdout  # the stages' own prints are redirected into log()

    def log(line: str) -> None:
        print(line, file=terminal, flush=True)
        log_file.write(line + "\n")
        log_file.flush()

    report = Report(args.out, {"title": "GPU check", "small": args.small, "python": sys.executable})
    missing = missing_modules()
    if missing:
        message = f"this interpreter ({sys.executable}) cannot import: {'; '.join(missing)}"
        log(f"gpu check: stopped before the first stage: {message}")
        report.write([], {"error": message})
        log_file.close()
        sys.exit(2)
    problem = None if args.small else no_gpu()
    if problem:
        log(f"gpu check: stopped before the first stage: {problem}")
        report.write([], {"error": problem})
        log_file.close()
        sys.exit(2)
    scratch = Path(tempfile.mkdtemp(prefix="fer_gpu_check_", dir=args.scratch))
    try:
        run(args, scratch, log, report)
    except BaseException as error:  # noqa: BLE001 - what was measured is written, then re-raised
        rows = RUNNING["stages"].rows if "stages" in RUNNING else []
        text = f"{type(error).__name__}: {error}".strip()
        report.write(rows, {"error": f"failed after {len(rows)} stage(s): {text}"})
        log(f"gpu check: failed after {len(rows)} stage(s): {text}; gpu_check.json says what ran")
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        log_file.close()


RUNNING: dict = {}  # the stages of the check in progress, for its failure report


def run(args, scratch: Path, log, report: Report):
    n_train, n_test, planned = sized_for(args.budget, args.small)
    log(
        f"gpu check: {n_train} train / {n_test} test synthetic images at 224 px; own estimate "
        f"{planned:.0f} s at the assumed H100 rates, budget {args.budget:.0f} s; scratch folder "
        f"{scratch} (removed at the end)"
    )

    import contextlib

    import pandas as pd
    import torch

    from fer_lib import models, training
    from fer_lib.run.experiment import Experiment
    from fer_lib.run.pipeline import ensure_data, machine_info
    from fer_lib.run.profiles import get_profile
    from fer_lib.runtime import devices, precision

    paper = get_profile("paper")
    batch_train, batch_test = (
        ("16", "16") if args.small else (str(paper.batch_train), str(paper.batch_test))
    )
    # the paper profile's networks and recipe, on the synthetic set, one seed and one w
    profile = get_profile(
        "smoke",
        {
            "synthetic": f"{n_train},{n_test}",
            "seeds": "1",
            "w_grid": "0.6",
            "input_size": "224",
            "baseline_width": "64",
            "landmark_width": "32",
            "landmark_batch_norm": "false",
            "augmentation": "upstream",
            "baseline_per_seed": "false",
            "batch_train": batch_train,
            "batch_test": batch_test,
        },
    )
    device = devices.pick_device()
    stages = Stages(device, args.budget, log, report)
    RUNNING["stages"] = stages
    estimate = own_estimate(n_train, n_test)
    quiet = contextlib.redirect_stdout(log_file_writer(log))

    with quiet:
        data_root = stages.run(
            "synthetic set, generated (CPU)",
            estimate["synthetic set"] * 0.8,
            lambda: ensure_data(profile, None, scratch),
            images=n_train + n_test,
        )
        experiment = Experiment(profile, data_root, scratch, progress=False)
        stages.run(
            "synthetic set, decoded once (CPU)",
            estimate["synthetic set"] * 0.2,
            lambda: experiment.splits,
            images=n_train + n_test,
        )
    train, test = experiment.train, experiment.test

    config = experiment.baselines.config()
    config.epochs = 2
    folder = scratch / "baseline"
    with quiet:
        baseline = stages.run(
            "baseline run of 2 epochs (wall: set-up, both epochs, checkpoints, population mean)",
            estimate["baseline"] + estimate["population mean"],
            lambda: training.train_baseline(train, config, folder, device=device, progress=False),
            images=n_train,
        )
    if baseline is not None:
        history = pd.read_csv(folder / "history.csv")
        stages.record(
            "baseline epoch (training + validation)",
            float(history["seconds"].iloc[-1]),
            n_train,
            "the second epoch, from the run's history (the epoch ends on a host read: "
            "synchronised)",
        )
        baseline = baseline.to(device).eval()
        # again, on a copy of the kept checkpoint: as train_baseline does it at its end
        fit = train.subset(
            [
                train.names.index(name)
                for name in json.loads((folder / "split.json").read_text())["train"]
            ]
        )
        shutil.copy(folder / "best.pt", scratch / "mean.pt")
        probe = models.load_arm_checkpoint(scratch / "mean.pt")
        stages.run(
            "population mean (training images)",
            estimate["population mean"],
            lambda: training.store_population_mean(
                probe, fit, config.eval_batch_size, scratch / "mean.pt", device
            ),
            images=len(fit),
        )
        stages.run(
            "ResNet18 inference, test set (as the validation runs it)",
            estimate["resnet18 inference"],
            lambda: training.baseline_logits(baseline, test.images, config.eval_batch_size),
            images=n_test,
        )
        cache_dir = scratch / "feature_cache"
        with quiet:
            caches = stages.run(
                "frozen-feature cache, built (train 2 flips + test)",
                estimate["feature cache"],
                lambda: (
                    training.rgb_feature_cache(
                        baseline, train, flips=(False, True), cache_dir=cache_dir, progress=False
                    ),
                    training.rgb_feature_cache(
                        baseline, test, flips=(False,), cache_dir=cache_dir, progress=False
                    ),
                ),
                images=2 * n_train + n_test,
            )
            if caches is not None:
                stages.run(
                    "frozen-feature cache, reused (read back)",
                    1.0,
                    lambda: (
                        training.rgb_feature_cache(
                            baseline,
                            train,
                            flips=(False, True),
                            cache_dir=cache_dir,
                            progress=False,
                        ),
                        training.rgb_feature_cache(
                            baseline, test, flips=(False,), cache_dir=cache_dir, progress=False
                        ),
                    ),
                    images=2 * n_train + n_test,
                )
        if caches is not None:
            train_cache, test_cache = caches
            fusion = experiment.fusion.config("both", 0.6, 0)
            fusion.epochs = 2
            with quiet:
                model = stages.run(
                    "landmark-branch run of 2 epochs (wall)",
                    estimate["landmark branch"],
                    lambda: training.train_fusion(
                        baseline,
                        train,
                        train_cache,
                        fusion,
                        scratch / "fusion",
                        device=device,
                        progress=False,
                    ),
                    images=n_train,
                )
            if model is not None:
                history = pd.read_csv(scratch / "fusion" / "history.csv")
                stages.record(
                    "landmark-branch epoch (training + validation)",
                    float(history["seconds"].iloc[-1]),
                    n_train,
                    "the second epoch, from the run's history (the epoch ends on a host read: "
                    "synchronised)",
                )
                model = model.to(device)
                # warm-up: cuDNN's kernel choice for the test batches
                training.predict_fusion(model, test, test_cache, fusion)
                stages.run(
                    "test inference of a landmark-branch run (from the feature cache)",
                    estimate["test inference"] / 2,
                    lambda: training.predict_fusion(model, test, test_cache, fusion),
                    images=n_test,
                )

    runs = len(Experiment(paper, data_root, scratch, progress=False).fusion.plan())
    total = whole_profile(stages, n_train, n_test, runs)
    stages.record(
        "whole paper profile (estimate)",
        total,
        None,
        f"one 70-epoch baseline and {runs} landmark-branch runs of {paper.fusion_epochs} epochs "
        "on RAF-DB, scaled per image"
        if total is not None
        else "a stage it needs was skipped",
    )
    wall = time.perf_counter() - stages.started
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    rows = []
    for row in stages.rows:
        target = TARGETS_S.get(row["stage"])
        verdict = (
            ""
            if target is None or args.small or row["seconds"] is None
            else ("met" if row["seconds"] <= target else "missed")
        )
        rows.append(
            {**row, "target (one H100)": f"<= {target:g} s" if target else "", "verdict": verdict}
        )
    extra = {
        "title": f"GPU check: {machine_info()['gpu']} ({device}, {precision.name(device)}), "
        f"{n_train} train / {n_test} test images at 224 px",
        "machine": machine_info(),
        "device": str(device),
        "precision": precision.name(device),
        "train images": n_train,
        "test images": n_test,
        "budget (s)": args.budget,
        "own estimate (s)": round(planned, 1),
        "wall (s)": round(wall, 1),
        "landmark-branch runs in the paper profile": runs,
        "peak device memory (GiB)": round(peak, 2) if peak is not None else None,
    }
    notes = [
        f"Wall time {wall:.0f} s (own estimate {planned:.0f} s, budget {args.budget:.0f} s). Peak "
        f"device memory: {extra['peak device memory (GiB)']} GiB.",
        "",
    ]
    if args.small:
        notes += [
            "--small: a tiny set; the estimate is scaled from it and is not a measurement of the "
            "paper's sizes.",
            "",
        ]
    report.write(rows, extra, notes)
    log((args.out / "gpu_check.md").read_text())
    return stages


class log_file_writer:  # noqa: N801 - a file-like object for redirect_stdout
    """What the library prints during a stage, into the log (and not onto the
    terminal between the stage lines)."""

    def __init__(self, log):
        self.log, self.pending = log, ""

    def write(self, text: str) -> int:
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            if line.strip():
                self.log(f"    {line}")
        return len(text)

    def flush(self) -> None:
        pass


if __name__ == "__main__":
    main()
