"""The training stage as separate jobs, for a cluster scheduler: jobs (write the list) and run-job
(run one of them)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fer_lib.cli.common import REQUIRED, add_command, at_least, existing, profile_options
from fer_lib.run.profiles import get_profile, parse_assignments


def _jobs(args: argparse.Namespace) -> int:
    from fer_lib.run import jobs, pipeline
    from fer_lib.run.experiment import Experiment

    profile = get_profile(args.profile, parse_assignments(args.set))
    run_dir = args.run_dir or pipeline.run_dir_for(profile)
    has_weights = bool(args.baseline_checkpoint or args.pretrained)
    # as run-all prepares it: checked first, the synthetic set generated here, once
    data_root = pipeline.prepare_data(profile, args.data, run_dir, [], has_weights)
    experiment = Experiment(
        profile, data_root, run_dir, args.baseline_checkpoint, pretrained=args.pretrained
    )
    out = args.out or run_dir / "jobs.json"
    listed = jobs.write_jobs(experiment, out)
    baselines = sum(job["kind"] == "baseline" for job in listed)
    print(
        f"{out}: {len(listed)} job(s): 0..{baselines - 1} the baseline(s), {baselines}.."
        f"{len(listed) - 1} the landmark-branch runs (each after its seed's baseline); run one "
        f"with `python -m fer_lib run-job {out} --index K`"
    )
    return 0


def _run_job(args: argparse.Namespace) -> int:
    from fer_lib.run import jobs

    job, seconds = jobs.run_job(args.jobs, args.index)
    print(f"job {args.index} ({job.name}): done in {seconds:.0f} s")
    return 0


def add_parsers(commands) -> None:
    add_command(
        commands,
        "jobs",
        _jobs,
        "write a profile's trainings as a list of jobs (JSON) for a cluster's scheduler",
        *profile_options(existing),
        (("--data", existing), "as run-all's --data"),
        (("--out", Path), "default: RUN_DIR/jobs.json"),
    )
    add_command(
        commands,
        "run-job",
        _run_job,
        "run job K of a job list (what a cluster task runs)",
        (("jobs", existing), "the list `jobs` wrote"),
        (("--index", at_least(0), REQUIRED), "K, e.g. $SLURM_ARRAY_TASK_ID"),
    )
