"""Commands around the whole report: run-all (what ./run_all.sh runs), plan, compare-runs and
install-kernel."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from fer_lib.cli.common import (
    REQUIRED,
    add_command,
    add_options,
    at_least,
    between,
    foreign_layout,
    profile_options,
    refuse,
)
from fer_lib.run.profiles import SettingsError, get_profile, parse_assignments


def _run_all_device(profile: str, name: str | None):
    """The device every training of run-all uses, passed to its workers and kernels (FER_DEVICE).
    The paper profile refuses a CPU it was not asked for: a torch that lost its GPU (a driver older
    than its CUDA) would otherwise start days of training on the CPU."""
    from fer_lib.runtime.devices import (
        DEVICE_ENV,
        DeviceError,
        checked_device,
        cuda_problem,
        pick_device,
    )

    if name:
        checked_device(name)
        os.environ[DEVICE_ENV] = name
    device = pick_device()
    if profile == "paper" and device.type == "cpu" and not name:
        raise DeviceError(
            f"the paper profile trains on a GPU, and none is usable: {cuda_problem()}. Pass "
            "--device cpu to train on the CPU anyway (days), or fix the GPU"
        )
    return device


def _run_all(args: argparse.Namespace) -> int:
    from fer_lib.run.launch import LaunchOptions
    from fer_lib.run.pipeline import fold_copies, run_all, run_folds
    from fer_lib.runtime.devices import DeviceError, describe_device

    folds = fold_copies(args.data) if args.data is not None else []
    try:
        settings = parse_assignments(args.set)
        if args.seed_offset is not None:
            settings["seed_offset"] = str(args.seed_offset)
        get_profile(args.profile, settings)  # every value checked before any work starts
        data_sets = [("--data", fold) for fold in folds] or [("--data", args.data)]
        data_sets += [("--cross-data", path) for path in args.cross_data]
        weights = [
            ("--pretrained", args.pretrained),
            ("--baseline-checkpoint", args.baseline_checkpoint),
        ]
        for option, path in weights + data_sets:
            if path is not None and not path.exists():
                raise SettingsError(f"{option} {path}: no such file or folder")
        # another layout (AffectNet, FERPlus, CK+ as released) is refused before any work; a
        # converted copy runs with its own class list (classes.json), which the report follows
        for option, path in data_sets:
            if path is not None and (layout := foreign_layout(path)):
                raise SettingsError(
                    f"{option} {path} is {layout}: convert it first (`python -m fer_lib "
                    f"convert-data {path} OUT`, 8 classes, or --classes 7) and pass OUT"
                )
        device = _run_all_device(args.profile, args.device)
    except (SettingsError, DeviceError) as error:
        return refuse(f"run-all: {error}")
    print(f"device: {describe_device(device)}")
    passed = ("baseline_checkpoint", "pretrained", "run_dir", "workers", "replicate", "force")
    passed += ("cross_data", "runs_per_gpu", "run_memory_gb")
    slurm = ("partition", "gpus", "cpus", "mem_gb", "gpu_memory_gb")  # named as LaunchOptions'
    options = dict(
        {name: getattr(args, name) for name in passed},
        settings=settings,
        launcher=None if args.launcher == "pool" else args.launcher,
        launch_options=LaunchOptions(
            timeout_min=args.time_min,
            setup=tuple(args.setup),
            **{name: getattr(args, name) for name in slurm},
        ),
    )
    if folds:  # CK+ converted with --fold all: every fold, then the mean over them
        return run_folds(args.profile, folds, **options)
    return run_all(args.profile, data=args.data, **options)


def _runs_per_gpu(text: str) -> int | str:
    """--runs-per-gpu: a whole number of at least 1, or auto."""
    if text == "auto":
        return text
    try:
        return at_least(1)(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected auto or a whole number of at least 1, got {text!r}"
        ) from None


def _compare_runs(args: argparse.Namespace) -> int:
    from fer_lib.report import replication, tables

    try:
        table = replication.stability_table(args.runs)
    except FileNotFoundError as error:
        return refuse(f"compare-runs: {error}")
    tables.save_table(
        table,
        replication.STABILITY_FILE,
        args.out,
        caption="The same profile run with other training seeds (or on another CPU): headline "
        "numbers and verdicts",
    )
    print(table.to_string(index=False))
    print(replication.agreement_counts(table))
    disagreements = int(
        (table["agree"].str.startswith("no") | (table["agree"] == "conflict")).sum()
    )
    print(
        f"{disagreements} disagreement(s) (conflicting verdicts, or headline OA apart by more than "
        f"{replication.HEADLINE_TOLERANCE}); written to "
        f"{args.out / (replication.STABILITY_FILE + '.md')}"
    )
    return 1 if disagreements else 0


def _plan(args: argparse.Namespace) -> int:
    import pandas as pd

    from fer_lib.report import verdicts

    tables = args.run_dir / "tables"
    if not (tables / "significance_proposed.csv").exists():
        return refuse(
            f"plan: {args.run_dir} has no finished report (tables/significance_proposed.csv "
            "missing); run ./run_all.sh for it first"
        )
    scale = 1.0
    if args.test_images:
        scale = args.test_images / len(pd.read_csv(args.run_dir / "predictions/baseline_test.csv"))
    frame = verdicts.plan_rows(tables, args.effect, scale)
    if frame.empty:
        return refuse(
            "plan: this run has one seed: there is no seed variance to plan with; run two or more "
            "(--set seeds=2)"
        )
    print(
        f"Seeds needed to resolve a difference of {100 * args.effect:.2f} points (80% power, 5% "
        f"two-sided), from the variance components {args.run_dir.name} measured"
        + (f", at {args.test_images} test images" if args.test_images else "")
        + ":"
    )
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0


# the notebooks' kernelspec: any JupyterLab finds this environment under that name
LAB_KERNEL = "fer-lib"


def _install_kernel(args: argparse.Namespace) -> int:
    from ipykernel.kernelspec import install

    path = install(
        user=args.prefix is None,
        prefix=str(args.prefix) if args.prefix else None,
        kernel_name=LAB_KERNEL,
        display_name=f"Python ({LAB_KERNEL})",
    )
    print(f"kernel {LAB_KERNEL!r} ({sys.executable}) registered in {path}")
    return 0


def add_parsers(commands) -> None:
    _add_run_all(commands)
    add_command(
        commands,
        "plan",
        _plan,
        "how many seeds a finished run's variance components need to resolve an effect",
        (("run_dir", Path), "a finished run, e.g. runs/demo"),
        (
            ("--effect", float, 0.0026),
            "the difference to resolve, as a fraction (default 0.0026: the paper's +0.26 OA)",
        ),
        (
            ("--test-images", at_least(1), None, dict(metavar="N")),
            "plan for N test images instead of the run's own (RAF-DB's test set has 3,068)",
        ),
    )
    add_command(
        commands,
        "compare-runs",
        _compare_runs,
        "do two finished runs of a profile give the same verdicts and headline numbers?",
        (
            ("runs", Path, None, dict(nargs="+")),
            "run folders, e.g. runs/demo runs/demo-seed_offset_100",
        ),
        (("--out", Path, REQUIRED), "folder for seed_stability.{csv,md,tex} (e.g. figures/demo)"),
    )
    add_command(
        commands,
        "install-kernel",
        _install_kernel,
        f"register this environment as the Jupyter kernel {LAB_KERNEL!r} (./run_all.sh lab does "
        "it)",
        (
            ("--prefix", Path),
            "install under PREFIX/share/jupyter (default: for this user, found by any JupyterLab)",
        ),
    )


def _add_run_all(commands) -> None:
    run = add_command(
        commands,
        "run-all",
        _run_all,
        "regenerate every table and figure (what ./run_all.sh runs)",
        *profile_options(),
        (
            ("--data", Path),
            "RAF-DB basic/ folder (paper profile), a converted copy, or the folder of CK+'s "
            "per-fold copies (convert-data --fold all: every fold is run, then the mean over the "
            "folds); default: the synthetic set",
        ),
        (
            ("--cross-data", Path, [], dict(nargs="+", metavar="OTHER")),
            "other data sets (RAF-DB's layout, or converted) to test the run's models on: "
            "notebook 09's table 'trained on A, tested on B'",
        ),
        # how a run differs from its profile besides --set: other seeds, a replicate of the run
        (
            ("--seed-offset", int, None, dict(metavar="N")),
            "shift every training seed by N (same as --set seed_offset=N): another seed acts like "
            "another CPU",
        ),
        (
            ("--replicate", at_least(1), None, dict(nargs="?", const=100, metavar="OFFSET")),
            "then the same run with every seed shifted by OFFSET (default 100), and both reports "
            "compare the two runs' verdicts (<figures>/seed_stability.md)",
        ),
        (
            ("--workers", at_least(0), None, dict(metavar="N")),
            "train the profile's models in N parallel processes before the notebooks (default: "
            "--runs-per-gpu per GPU, or one per CPU core up to 8; 0: the notebooks train them one "
            "at a time)",
        ),
        (
            ("--runs-per-gpu", _runs_per_gpu, 1, dict(metavar="N|auto")),
            "without --workers, N training processes share each GPU (default 1; with --launcher, "
            "each landmark-branch task trains N runs per GPU side by side); auto: as many as fit "
            "by a run's peak memory, recorded by the runs of this run folder that trained on a GPU "
            "or given with --run-memory-gb (1 where none is known)",
        ),
        (
            ("--run-memory-gb", between(0, 4096, open_ends=True), None, dict(metavar="GB")),
            "a run's peak GPU memory for --runs-per-gpu auto (e.g. benchmarks/gpu_check's)",
        ),
        # how the training stage runs: a pool of processes here, or submitit tasks
        (
            ("--launcher", ("pool", "slurm", "local", "debug"), "pool"),
            "pool (the default): --workers processes here; slurm: the baselines as one job array "
            "and the landmark-branch runs as a second after it (submitit; docs/CLUSTERS.md); "
            "local, debug: the same tasks as processes here, or in this process",
        ),
    )
    _add_slurm_options(run)
    add_options(
        run,
        (
            ("--force", "store_true"),
            "execute every notebook, even those whose inputs (library, notebook, settings, data, "
            "models) are unchanged since they last ran",
        ),
        (
            ("--device",),
            "cpu, cuda or cuda:N for every training and notebook (default: cuda when usable; the "
            "paper profile trains on a CPU only when given --device cpu)",
        ),
    )


def _add_slurm_options(run) -> None:
    add_options(
        run.add_argument_group("with --launcher slurm, each task's request"),
        (("--partition",), None),
        (("--gpus", at_least(0), 1), "GPUs per task (default 1)"),
        (("--cpus", at_least(1), 8), "CPUs per task (default 8)"),
        (("--mem-gb", at_least(1), 32), "memory per task (default 32)"),
        (("--time-min", at_least(1), 720), "time limit per task (default 720)"),
        (
            ("--setup", "append", [], dict(metavar="LINE")),
            "a shell line run before each task, e.g. 'module load cuda' (repeatable)",
        ),
        (
            ("--gpu-memory-gb", between(0, 4096, open_ends=True), None, dict(metavar="GB")),
            "the memory of a task's GPU, for --runs-per-gpu auto where this machine has no GPU "
            "(default: this machine's smallest GPU)",
        ),
    )
