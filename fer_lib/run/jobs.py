"""A profile's trainings as a list of independent jobs, for a cluster without submitit: ``python -m
fer_lib jobs`` writes the list (JSON), and ``python -m fer_lib run-job JOBS --index K`` runs one of
them, wherever the scheduler puts it.

Job K trains what the training stage of ``run-all`` would (``fer_lib.run.scheduler``): the
baselines first, then every landmark-branch run, each after its seed's baseline (``after``). A job
is idempotent: a finished model is reused, checkpoints are written atomically, and a job stopped
part-way resumes from its ``last.pt``. ``docs/CLUSTERS.md`` submits the list as two ``sbatch``
arrays; afterwards ``run-all`` with the same options finds every model trained and runs the
notebooks.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from fer_lib.io import save_json
from fer_lib.run.experiment import Experiment
from fer_lib.run.profiles import SettingsError, get_profile
from fer_lib.run.scheduler import Job, arguments_of, is_finished, plan, train_job

FORMAT = "fer_lib-jobs/1"


def write_jobs(experiment: Experiment, path: Path) -> list[dict]:
    """The experiment's jobs, and what recreates it, as JSON at ``path``."""
    baselines, fusions = plan(experiment)
    index_of_baseline = {job.seed: k for k, job in enumerate(baselines)}
    jobs = [
        {"index": k, "kind": "baseline", "seed": job.seed, "after": []}
        for k, job in enumerate(baselines)
    ]
    for job in fusions:
        parent = index_of_baseline.get(experiment.baselines.seed(job.seed))
        after = [] if parent is None else [parent]
        jobs.append({"index": len(jobs), "kind": "fusion", **asdict(job), "after": after})
    paths = {
        "data": experiment.data_root,
        "run_dir": experiment.run_dir,
        "baseline_checkpoint": experiment.baseline_checkpoint,
        "pretrained": experiment.pretrained,
    }
    record = {
        "format": FORMAT,
        "profile": experiment.profile.name,
        "settings": experiment.profile.overrides(),
        **{key: None if p is None else str(Path(p).resolve()) for key, p in paths.items()},
        "jobs": jobs,
    }
    save_json(record, path)
    return jobs


def read_jobs(path: Path) -> dict:
    """A job list, checked: one SettingsError naming the file and what is wrong."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise SettingsError(
            f"{path}: not a readable job list ({error}); write one with `jobs`"
        ) from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise SettingsError(f"{path}: not a job list of this project (format {FORMAT!r} expected)")
    return record


def experiment_of(record: dict) -> Experiment:
    settings = {key: str(value) for key, value in record["settings"].items()}
    return Experiment(
        get_profile(record["profile"], settings),
        record["data"],
        record["run_dir"],
        record["baseline_checkpoint"],
        pretrained=record["pretrained"],
        progress=False,
    )


def job_of(entry: dict) -> Job:
    if entry["kind"] == "baseline":
        return Job(entry["seed"])
    return Job(entry["seed"], entry["weighting"], entry["w"], entry["variant"])


def run_job(path: Path, index: int, threads: int = 0) -> tuple[Job, float]:
    """Run job ``index`` of the list at ``path`` here (its output in ``job_log``) on ``threads`` CPU
    threads (0: torch's default); refuses, naming them, while the jobs it needs are not finished.
    Returns the job and its seconds."""
    record = read_jobs(path)
    jobs = record["jobs"]
    if not 0 <= index < len(jobs):
        raise SettingsError(f"{path} has jobs 0..{len(jobs) - 1}; --index {index} is not one")
    experiment = experiment_of(record)
    waiting = [k for k in jobs[index]["after"] if not is_finished(experiment, job_of(jobs[k]))]
    if waiting:
        names = ", ".join(job_of(jobs[k]).name for k in waiting)
        raise SettingsError(
            f"job {index} needs job(s) {waiting} ({names}) finished first: submit it after them "
            "(sbatch --dependency=afterok)"
        )
    job = job_of(jobs[index])
    return job, train_job(job, arguments_of(experiment), job_log(record, index), threads=threads)


def job_log(record: dict, index: int) -> Path:
    """Where job ``index`` of a job list writes its output: ``<run>/logs/<job>.log``."""
    return Path(record["run_dir"]) / "logs" / f"{job_of(record['jobs'][index]).slug}.log"
