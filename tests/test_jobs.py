"""The training stage as a job list: jobs in the scheduler's order, each after its baseline, run one
at a time anywhere; and the sbatch script of docs/CLUSTERS.md submits them as two arrays."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import submitit
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


@pytest.fixture(scope="module", params=[1, 2])
def pool_run(request, tmp_path_factory):
    """The smoke profile's models trained by the default pool in 1 or 2 workers, and that number.
    A CPU's sums depend on its thread count, so tasks of K runs side by side compare with K workers:
    each landmark-branch run on the same share of the cores."""
    run_dir = tmp_path_factory.mktemp("pool") / "run"
    profile = get_profile("smoke", {"seeds": "1"})
    experiment = Experiment(profile, pipeline.ensure_data(profile, None, run_dir), run_dir)
    experiment.progress = False
    scheduler.train_all(experiment, workers=request.param, progress=False)
    return run_dir, request.param


@pytest.mark.slow
def test_the_local_launcher_trains_the_same_models_as_the_pool_byte_for_byte(
    pool_run, tmp_path, capsys
):
    pool_dir, runs_per_gpu = pool_run
    profile = get_profile("smoke", {"seeds": "1"})
    run_dir = tmp_path / "local"
    experiment = Experiment(profile, pipeline.ensure_data(profile, None, run_dir), run_dir)
    experiment.progress = False
    jobs.write_jobs(experiment, run_dir / "jobs.json")
    launch.launch(run_dir / "jobs.json", "local", runs_per_gpu=runs_per_gpu)
    if runs_per_gpu > 1:  # the 10 runs as 5 tasks of 2 side by side
        out = capsys.readouterr().out
        assert "5 landmark-branch task(s), up to 2 runs each side by side" in out
    tables = sorted(p.relative_to(pool_dir) for p in pool_dir.rglob("predictions_*.csv"))
    assert len(tables) == 10 * 3  # every landmark-branch run's three heads
    for table in tables:
        assert (run_dir / table).read_bytes() == (pool_dir / table).read_bytes()
    weights = [
        torch.load(f / "baseline" / "best.pt", weights_only=True) for f in (pool_dir, run_dir)
    ]
    first, second = (w["model_state_dict"] for w in weights)
    assert all(torch.equal(first[key], second[key]) for key in first)


@pytest.mark.parametrize("runs_per_gpu", [1, 2])
def test_the_debug_launcher_runs_every_job_of_the_list_and_the_stage_then_reuses_them(
    tmp_path, runs_per_gpu
):
    profile = get_profile("smoke", {"seeds": "1", "w_grid": "0.6"})
    run_dir = tmp_path / "run"
    experiment = Experiment(profile, pipeline.ensure_data(profile, None, run_dir), run_dir)
    experiment.progress = False
    jobs.write_jobs(experiment, run_dir / "jobs.json")
    seconds = launch.launch(run_dir / "jobs.json", "debug", runs_per_gpu=runs_per_gpu)
    listed = json.loads((run_dir / "jobs.json").read_text())["jobs"]
    assert sorted(seconds) == [entry["index"] for entry in listed]
    assert all(scheduler.is_finished(experiment, jobs.job_of(entry)) for entry in listed)
    assert scheduler.train_all(experiment, workers=1, progress=False) == {}  # nothing left to train


class _Executor:
    """submitit's executor as the launcher sees it: records each array's packs of indices."""

    def __init__(self):
        self.arrays = []

    def map_array(self, function, paths, packs):
        self.arrays.append(list(packs))
        return [_Task(len(pack)) for pack in packs]


class _Task:
    job_id = "7_0"

    def __init__(self, size):
        self.size = size

    def result(self):
        return [1.0] * self.size


def test_runs_are_packed_per_task_gpu_and_baselines_stay_one_per_task(
    job_list, monkeypatch, capsys
):
    executor = _Executor()
    monkeypatch.setattr(launch, "executor_for", lambda *_: executor)
    total = len(json.loads(job_list.read_text())["jobs"])  # 1 baseline, then the runs
    seconds = launch.launch(job_list, "local", runs_per_gpu=4)
    assert executor.arrays[0] == [[0]]
    assert executor.arrays[1] == launch.packs(list(range(1, total)), 4)
    assert [len(p) for p in executor.arrays[1]] == [4] * ((total - 1) // 4) + (
        [(total - 1) % 4] if (total - 1) % 4 else []
    )
    assert sorted(seconds) == list(range(total))
    # two GPUs per task: four runs on each
    launch.launch(job_list, "local", launch.LaunchOptions(gpus=2), runs_per_gpu=4)
    assert executor.arrays[3] == [list(range(1, 9)), list(range(9, total))]
    assert "up to 8 runs each side by side" in capsys.readouterr().out


def test_packs_split_the_indices_in_order_the_last_shorter():
    assert launch.packs([1, 2, 3, 4, 5, 6, 7], 3) == [[1, 2, 3], [4, 5, 6], [7]]
    assert launch.packs([1, 2], 1) == [[1], [2]]
    assert launch.packs([], 2) == []


def test_auto_packs_a_task_by_the_recorded_peak_and_the_given_gpu_memory(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(scheduler, "_on_gpus", lambda: False)  # a login node
    options = launch.LaunchOptions(cpus=8)
    assert launch.runs_per_task_gpu(3, tmp_path, None, options) == 3
    assert launch.runs_per_task_gpu("auto", tmp_path, 17.0, options) == 1
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "no GPU here" in out and "--gpu-memory-gb" in out
    (tmp_path / "baseline").mkdir()
    (tmp_path / "baseline" / scheduler.MEMORY_FILE).write_text('{"peak_reserved_gib": 5.0}')
    options.gpu_memory_gb = 80
    # 72 GiB // (5 + 1) = 12 fit, but the task has 8 CPUs for its GPU
    assert launch.runs_per_task_gpu("auto", tmp_path, None, options) == 8
    assert launch.runs_per_task_gpu("auto", tmp_path, 17.0, options) == 4  # 72 // 18
    assert "runs per GPU: 4 (a run's peak 17.0 GiB, given" in capsys.readouterr().out


def test_a_pack_finishes_its_other_jobs_then_names_the_failed_one_and_its_log(tmp_path):
    profile = get_profile("smoke", {"seeds": "1", "w_grid": "0.6"})
    run_dir = tmp_path / "run"
    experiment = Experiment(profile, pipeline.ensure_data(profile, None, run_dir), run_dir)
    path = run_dir / "jobs.json"
    listed = jobs.write_jobs(experiment, path)
    record = json.loads(path.read_text())
    broken = len(listed)  # a run no weighting names: fails as soon as it starts
    entry = {"index": broken, "weighting": "nonsense", "w": 0.6, "variant": None, "after": []}
    record["jobs"].append({**listed[-1], **entry})
    path.write_text(json.dumps(record))
    with pytest.raises(launch.PackFailed) as failure:
        launch.run_pack(path, [0, broken])
    line = str(failure.value)
    log = run_dir / "logs" / "fusion_nonsense_w0.60_seed0.log"
    assert line.count("\n") == 0
    assert line.startswith(f"job {broken} (fusion nonsense w=0.60 seed 0) failed (ValueError: ")
    assert line.endswith(f"its log: {log}") and "Traceback" in log.read_text()
    assert scheduler.is_finished(experiment, scheduler.Job(0))  # the baseline beside it finished
    # the stage's line for it, from submitit's local and SLURM executors' traceback text
    error = submitit.core.utils.FailedJobError(
        f"Job (task=0) failed during processing with trace:\n----\nTraceback (most recent call "
        f"last):\n  File ...\nfer_lib.run.launch.PackFailed: {line}\n----\nYou can check full "
        "logs with ...\n  - a.err\n  - a.out"
    )
    assert launch._task_failure(_Task(2), [0, broken], error) == f"task 7_0: {line}"
    assert launch._task_failure(_Task(2), [0, broken], failure.value) == f"task 7_0: {line}"
