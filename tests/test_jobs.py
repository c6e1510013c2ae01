"""The training stage as a job list: jobs in the scheduler's order, each after its baseline, run one
at a time anywhere; and the sbatch script of docs/CLUSTERS.md submits them as two arrays."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fer_lib.cli.main import main
from fer_lib.run import jobs, launch, pipeline, scheduler
from fer_lib.run.experiment import Experiment
from fer_lib.run.profiles import get_profile

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def job_list(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("jobs") / "run"
    command = ["jobs", "--profile", "smoke", "--set", "seeds=1", "--run-dir", str(run_dir)]
    assert main(command) == 0
    return run_dir / "jobs.json"


def test_the_list_holds_the_stages_trainings_each_after_its_baseline(job_list):
    record = json.loads(job_list.read_text())
    experiment = jobs.experiment_of(record)
    baselines, fusions = scheduler.plan(experiment)
    listed = [jobs.job_of(entry) for entry in record["jobs"]]
    assert listed == baselines + fusions
    assert [entry["index"] for entry in record["jobs"]] == list(range(len(listed)))
    assert all(entry["after"] == [0] for entry in record["jobs"][len(baselines) :])


def test_a_run_waits_for_its_baseline_and_each_job_trains_once(job_list, capsys):
    record = json.loads(job_list.read_text())
    run_dir = Path(record["run_dir"])
    assert main(["run-job", str(job_list), "--index", "1"]) == 1
    assert "needs job(s) [0] (baseline seed 0) finished first" in capsys.readouterr().err
    assert main(["run-job", str(job_list), "--index", "0"]) == 0
    assert main(["run-job", str(job_list), "--index", "1"]) == 0
    experiment = jobs.experiment_of(record)
    first = jobs.job_of(record["jobs"][1])
    assert scheduler.is_finished(experiment, first)
    best = run_dir / "fusion" / "both_w0.60_seed0" / "best.pt"
    stamp = best.stat().st_mtime_ns
    assert main(["run-job", str(job_list), "--index", "1"]) == 0  # reused, not trained again
    assert best.stat().st_mtime_ns == stamp
    assert (run_dir / "logs" / f"{first.slug}.log").is_file()
    assert main(["run-job", str(job_list), "--index", "99"]) == 1


def test_the_docs_sbatch_script_submits_the_baselines_then_the_runs_after_them(job_list, tmp_path):
    text = (ROOT / "docs" / "CLUSTERS.md").read_text()
    script = re.search(r"```bash\n(#!/usr/bin/env bash\n.*?)```", text, re.S).group(1)
    (tmp_path / "submit_jobs.sh").write_text(script)
    fake = tmp_path / "bin"
    fake.mkdir()
    # a stand-in sbatch: records its arguments, answers a job id
    (fake / "sbatch").write_text('#!/usr/bin/env bash\necho "$@" >> "$SBATCH_LOG"\necho 4242\n')
    (fake / "sbatch").chmod(0o755)
    env = {
        "PATH": f"{fake}:/usr/bin:/bin",
        "SBATCH_LOG": str(tmp_path / "calls"),
        "FER_PYTHON": sys.executable,
    }
    subprocess.run(["bash", str(tmp_path / "submit_jobs.sh"), str(job_list)], env=env, check=True)
    calls = (tmp_path / "calls").read_text().splitlines()
    total = len(json.loads(job_list.read_text())["jobs"])
    assert len(calls) == 2
    assert "--array=0-0" in calls[0] and "--dependency" not in calls[0]
    assert f"--array=1-{total - 1}" in calls[1] and "--dependency=afterok:4242" in calls[1]
    assert all(
        f"-m fer_lib run-job {job_list} --index $SLURM_ARRAY_TASK_ID" in call for call in calls
    )


@pytest.mark.slow
def test_the_local_launcher_trains_the_same_models_as_the_pool_byte_for_byte(tmp_path):
    profile = get_profile("smoke", {"seeds": "1"})
    folders = {}
    for name in ("pool", "local"):
        run_dir = tmp_path / name
        experiment = Experiment(profile, pipeline.ensure_data(profile, None, run_dir), run_dir)
        experiment.progress = False
        if name == "pool":
            scheduler.train_all(experiment, workers=1, progress=False)
        else:
            jobs.write_jobs(experiment, run_dir / "jobs.json")
            launch.launch(run_dir / "jobs.json", "local")
        folders[name] = run_dir
    tables = sorted(
        p.relative_to(folders["pool"]) for p in folders["pool"].rglob("predictions_*.csv")
    )
    assert len(tables) == 10 * 3  # every landmark-branch run's three heads
    for table in tables:
        assert (folders["local"] / table).read_bytes() == (folders["pool"] / table).read_bytes()
    weights = [torch.load(f / "baseline" / "best.pt", weights_only=True) for f in folders.values()]
    first, second = (w["model_state_dict"] for w in weights)
    assert all(torch.equal(first[key], second[key]) for key in first)


def test_the_debug_launcher_runs_every_job_of_the_list_and_the_stage_then_reuses_them(tmp_path):
    profile = get_profile("smoke", {"seeds": "1", "w_grid": "0.6"})
    run_dir = tmp_path / "run"
    experiment = Experiment(profile, pipeline.ensure_data(profile, None, run_dir), run_dir)
    experiment.progress = False
    jobs.write_jobs(experiment, run_dir / "jobs.json")
    seconds = launch.launch(run_dir / "jobs.json", "debug")
    listed = json.loads((run_dir / "jobs.json").read_text())["jobs"]
    assert sorted(seconds) == [entry["index"] for entry in listed]
    assert all(scheduler.is_finished(experiment, jobs.job_of(entry)) for entry in listed)
    assert scheduler.train_all(experiment, workers=1, progress=False) == {}  # nothing left to train
