"""The training stage submitted through submitit (``run-all --launcher slurm``): the baselines as
one job array, the landmark-branch runs as a second array that starts when the first has ended well
(SLURM's ``afterok``), then the notebooks on the finished models.

Each task runs entries of the run's job list (``fer_lib.run.jobs``): a baseline task one, a
landmark-branch task a pack of ``runs_per_gpu`` per GPU side by side, each in its own process bound
to one of the task's GPUs (``run_pack``), so that runs needing a few GB of a large GPU share it.
Tasks are checkpointable: a preempted or timed-out task is requeued by submitit and runs its
entries again, each resuming from its ``last.pt`` or reusing its finished model, as any rerun does.
``--launcher local`` runs the same tasks as processes of this machine and ``debug`` in this process
(submitit's local and debug executors), which is how they are tested here.
"""

from __future__ import annotations

import dataclasses
import os
from concurrent.futures import wait
from pathlib import Path

import submitit

from fer_lib.io import relative
from fer_lib.run import jobs, scheduler

LAUNCHERS = ("slurm", "local", "debug")


@dataclasses.dataclass
class LaunchOptions:
    """What each task asks of the scheduler (submitit's parameters; SLURM's ignored elsewhere)."""

    partition: str | None = None
    gpus: int = 1
    cpus: int = 8
    mem_gb: float = 32
    timeout_min: int = 12 * 60
    setup: tuple[str, ...] = ()  # shell lines before each task (module load, conda activate ...)
    parallelism: int = 64  # tasks of an array running at once
    # a task's GPU memory, for --runs-per-gpu auto where the submitting machine has no GPU
    gpu_memory_gb: float | None = None


class PackFailed(RuntimeError):
    """A job of a task's pack failed; its message is the one line the stage reports."""


class ListedJobs(submitit.helpers.Checkpointable):
    """One task: jobs ``indices`` of the list at ``path``, one here, several as a pack
    (``run_pack``); returns each one's seconds. On preemption or timeout submitit requeues it with
    the same arguments; each job then resumes from its ``last.pt``, a finished one is reused."""

    def __call__(self, path: str, indices: list[int]) -> list[float]:
        if len(indices) == 1:
            return [jobs.run_job(Path(path), indices[0])[1]]
        return run_pack(Path(path), indices)


def run_pack(path: Path, indices: list[int]) -> list[float]:
    """Jobs ``indices`` of the list at ``path`` side by side, each in a process of its own (the
    training stage's workers, ``scheduler.worker_pool``) bound round-robin to this task's GPUs, the
    CPUs split between them; returns each one's seconds. When one fails, the others still finish,
    then ``PackFailed`` names it and its log."""
    # the CPUs this task may use: SLURM's allocation, where the OS reports it
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = max(1, (cpus or 1) // len(indices))
    devices = scheduler.worker_devices(len(indices)) or [None] * len(indices)
    # one pool per job: a worker killed (out of host memory) breaks only its own pool
    pools = [scheduler.worker_pool(1, device) for device in devices]
    try:
        futures = [
            pool.submit(jobs.run_job, path, index, threads) for pool, index in zip(pools, indices)
        ]
        wait(futures)
    finally:
        for pool in pools:
            pool.shutdown(wait=False, cancel_futures=True)
    failed = [(index, f.exception()) for index, f in zip(indices, futures) if f.exception()]
    if failed:
        raise PackFailed(failure_line(path, failed))
    return [future.result()[1] for future in futures]


def failure_line(path: Path, failed: list[tuple[int, BaseException]]) -> str:
    """One line for a pack's failed jobs: the first with its error and log, then how many more."""
    record = jobs.read_jobs(path)
    index, error = failed[0]
    name = jobs.job_of(record["jobs"][index]).name
    message = str(error).strip().splitlines()
    line = (
        f"job {index} ({name}) failed ({type(error).__name__}"
        + (f": {message[-1]}" if message else "")
        + f"); its log: {jobs.job_log(record, index)}"
    )
    if len(failed) > 1:
        line += f"; {len(failed) - 1} more of its pack failed: job(s) {[k for k, _ in failed[1:]]}"
    return line


def packs(indices: list[int], size: int) -> list[list[int]]:
    """``indices`` in consecutive packs of ``size`` (the last one shorter): one per task."""
    return [indices[k : k + size] for k in range(0, len(indices), size)]


def runs_per_task_gpu(
    asked: int | str, run_dir: Path, run_memory_gb: float | None, options: LaunchOptions
) -> int:
    """Landmark-branch runs per GPU of a task: ``asked`` when a number; for ``"auto"``, what the
    pool would pack (``scheduler.packed_by_memory``) on a GPU of ``options.gpu_memory_gb``, else of
    this machine's smallest, with the task's CPUs per GPU. Without either, 1, saying so."""
    if asked != "auto":
        return int(asked)
    device_gib = options.gpu_memory_gb or scheduler.smallest_gpu_gib()
    if device_gib is None:
        print(
            "==> runs per GPU: 1 (no GPU here to size the packs by; --gpu-memory-gb GB gives the "
            "memory of the tasks' GPUs)"
        )
        return 1
    cores_per_gpu = max(1, options.cpus // max(1, options.gpus))
    return scheduler.packed_by_memory(run_dir, run_memory_gb, device_gib, cores_per_gpu)


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


def launch(
    job_list: Path,
    cluster: str,
    options: LaunchOptions | None = None,
    runs_per_gpu: int | str = 1,
    run_memory_gb: float | None = None,
) -> dict[int, float]:
    """Every job of ``job_list`` through submitit, the landmark-branch runs after the baselines,
    ``runs_per_gpu`` of them per GPU of a task (a number, or "auto": ``runs_per_task_gpu``); waits
    for them and returns seconds per job index. A failed task stops the stage, naming its log."""
    if cluster not in LAUNCHERS:
        raise ValueError(f"launcher {cluster!r} is not one of {LAUNCHERS}")
    options = options or LaunchOptions()
    record = jobs.read_jobs(job_list)
    entries, run_dir = record["jobs"], Path(record["run_dir"])
    baselines = [[e["index"]] for e in entries if e["kind"] == "baseline"]
    size = runs_per_task_gpu(runs_per_gpu, run_dir, run_memory_gb, options) * max(1, options.gpus)
    runs = packs([e["index"] for e in entries if e["kind"] != "baseline"], size)
    folder = run_dir / "submitit"
    executor = executor_for(cluster, folder, options)
    path = str(Path(job_list).resolve())
    first = executor.map_array(ListedJobs(), [path] * len(baselines), baselines)
    print(f"==> submitted {len(first)} baseline task(s) ({cluster}); logs in {relative(folder)}")
    queued = cluster == "slurm" and bool(first)  # the runs wait in SLURM's queue, not here
    if queued:
        array = first[0].job_id.split("_")[0]
        executor.update_parameters(slurm_additional_parameters={"dependency": f"afterok:{array}"})
    seconds = {} if queued else _results(first, baselines)  # the runs start after these end
    second = executor.map_array(ListedJobs(), [path] * len(runs), runs)
    print(
        f"==> submitted {len(second)} landmark-branch task(s)"
        + (f", up to {size} runs each side by side" if size > 1 else "")
    )
    if queued:
        seconds = _results(first, baselines)
    return {**seconds, **_results(second, runs)}


def _results(tasks, packed: list[list[int]]) -> dict[int, float]:
    out = {}
    for task, indices in zip(tasks, packed):
        try:
            out.update(zip(indices, (round(s, 1) for s in task.result())))
        except Exception as error:  # noqa: BLE001 - one line naming the log, then stop
            raise SystemExit(_task_failure(task, indices, error)) from None
    return out


def _task_failure(task, indices: list[int], error: Exception) -> str:
    """A failed task in one line: a pack's failure names the job and its own log, anything else
    the task's log. Submitit's local and SLURM executors give the task's traceback as text, where
    the pack's line is the exception's."""
    lines = str(error).strip().splitlines()
    marker = f"{PackFailed.__name__}: "
    if isinstance(error, PackFailed):
        return f"task {task.job_id}: {lines[-1]}"
    pack = [line.split(marker, 1)[1] for line in lines if marker in line]
    if pack:
        return f"task {task.job_id}: {pack[-1]}"
    return (
        f"task {indices[0] if len(indices) == 1 else indices} ({task.job_id}) failed "
        f"({type(error).__name__}: {lines[-1] if lines else ''}); its log: {task.paths.stderr}"
    )
