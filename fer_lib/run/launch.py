"""The training stage submitted through submitit (``run-all --launcher slurm``): the baselines as
one job array, the landmark-branch runs as a second array that starts when the first has ended well
(SLURM's ``afterok``), then the notebooks on the finished models.

Each task runs one entry of the run's job list (``fer_lib.run.jobs``). Tasks are checkpointable:
a preempted or timed-out task is requeued by submitit and resumes from its ``last.pt``, as any
rerun does. ``--launcher local`` runs the same tasks as processes of this machine and ``debug`` in
this process (submitit's local and debug executors), which is how they are tested here.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import submitit

from fer_lib.io import relative
from fer_lib.run import jobs

LAUNCHERS = ("slurm", "local", "debug")


@dataclasses.dataclass
class LaunchOptions:
    """What each task asks of the scheduler (submitit's parameters; SLURM's ignored elsewhere)."""

    partition: str | None = None
    gpus: int = 1
    cpus: int = 8
    mem_gb: float = 32
    timeout_min: int = 12 * 60
    setup: tuple[
        str, ...
    ] = ()  # shell lines before each task (module load ..., conda activate ...)
    parallelism: int = 64  # tasks of an array running at once


class ListedJob(submitit.helpers.Checkpointable):
    """One task: job ``index`` of the list at ``path``. On preemption or timeout submitit requeues
    it with the same arguments; it then resumes from its ``last.pt``."""

    def __call__(self, path: str, index: int) -> float:
        return jobs.run_job(Path(path), index)[1]


def executor_for(cluster: str, folder: Path, options: LaunchOptions) -> submitit.AutoExecutor:
    executor = submitit.AutoExecutor(folder=str(folder / "%j"), cluster=cluster)
    parameters = {
        "timeout_min": options.timeout_min,
        "cpus_per_task": options.cpus,
        "mem_gb": options.mem_gb,
        "slurm_array_parallelism": options.parallelism,
        "slurm_setup": list(options.setup),
    }
    if cluster == "slurm":
        parameters["gpus_per_node"] = options.gpus
        if options.partition:
            parameters["slurm_partition"] = options.partition
    executor.update_parameters(**parameters)
    return executor


def launch(job_list: Path, cluster: str, options: LaunchOptions | None = None) -> dict[int, float]:
    """Every job of ``job_list`` through submitit, the landmark-branch runs after the baselines;
    waits for them and returns seconds per job index. A failed task stops the stage, naming its
    log."""
    if cluster not in LAUNCHERS:
        raise ValueError(f"launcher {cluster!r} is not one of {LAUNCHERS}")
    options = options or LaunchOptions()
    record = jobs.read_jobs(job_list)
    entries = record["jobs"]
    baselines = [e["index"] for e in entries if e["kind"] == "baseline"]
    runs = [e["index"] for e in entries if e["kind"] != "baseline"]
    folder = Path(record["run_dir"]) / "submitit"
    executor = executor_for(cluster, folder, options)
    path = str(Path(job_list).resolve())
    first = executor.map_array(ListedJob(), [path] * len(baselines), baselines)
    print(f"==> submitted {len(first)} baseline task(s) ({cluster}); logs in {relative(folder)}")
    queued = cluster == "slurm" and bool(first)  # the runs wait in SLURM's queue, not here
    if queued:
        array = first[0].job_id.split("_")[0]
        executor.update_parameters(slurm_additional_parameters={"dependency": f"afterok:{array}"})
    seconds = {} if queued else _results(first, baselines)  # the runs start after these end
    second = executor.map_array(ListedJob(), [path] * len(runs), runs)
    print(f"==> submitted {len(second)} landmark-branch task(s)")
    if queued:
        seconds = _results(first, baselines)
    return {**seconds, **_results(second, runs)}


def _results(tasks, indices) -> dict[int, float]:
    out = {}
    for task, index in zip(tasks, indices):
        try:
            out[index] = round(task.result(), 1)
        except Exception as error:  # noqa: BLE001 - one line naming the task's log, then stop
            raise SystemExit(
                f"task {index} ({task.job_id}) failed ({type(error).__name__}: "
                f"{str(error).strip().splitlines()[-1] if str(error).strip() else ''}); its log: "
                f"{task.paths.stderr}"
            ) from None
    return out
