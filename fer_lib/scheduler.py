"""Train every model of a profile before the notebooks read them, spread over worker processes.

The baselines and the landmark-branch runs of a profile are independent trainings, except that each
landmark-branch run needs its seed's frozen baseline. ``train_all`` trains the baselines first, and starts
each seed's landmark-branch runs as soon as its baseline is done, in ``workers`` processes: one per GPU, or,
on the CPU, the cores split between them. Two single-thread processes train 1.4-1.6x more models per minute
than one process with two threads on a 2-core CPU (benchmarks/README.md, "Training the demo's models in
parallel"). The notebooks then find every model finished and only evaluate and explain.

Each job writes its output to ``<run>/logs/<job>.log``. The terminal shows one bar for the whole stage,
weighted by each job's expected cost and moved by the epochs the running jobs have finished (their
``history.csv``), with the model and epoch of each running job, the time left, and a line per finished model.
"""

from __future__ import annotations

import contextlib
import os
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

# Cost of one epoch relative to a baseline epoch over the same images (CPU and paper-size measurements in
# benchmarks/README.md both give about 0.65 for a landmark-branch epoch from the frozen-feature cache).
FUSION_EPOCH_COST = 0.65
COORDS_EPOCH_COST = 0.03  # the coordinate branch: an MLP on 74 numbers instead of a CNN on heatmaps


def epoch_cost(job: Job) -> float:
    """A landmark-branch epoch's cost in baseline epochs (for the progress bar's weights)."""
    return COORDS_EPOCH_COST if job.variant == "coords" else FUSION_EPOCH_COST


@dataclass(frozen=True)
class Job:
    """One training: a baseline (``weighting`` None) or one landmark-branch run."""

    seed: int
    weighting: str | None = None
    w: float = 1.0
    variant: str | None = None  # a design ablation or the coordinate branch (experiment.VARIANTS)

    @property
    def name(self) -> str:
        if self.weighting is None:
            return f"baseline seed {self.seed}"
        return f"fusion {self.weighting} w={self.w:.2f} seed {self.seed}" + (f" ({self.variant})" if self.variant else "")

    @property
    def slug(self) -> str:
        from fer_lib.experiment import fusion_run_name

        if self.weighting is None:
            return f"baseline_seed{self.seed}"
        return "fusion_" + fusion_run_name(self.weighting, self.w, self.seed, self.variant)


def default_workers(jobs: int) -> int:
    """One worker per visible GPU; on the CPU, one single-thread worker per core (at most 8: each holds the
    decoded images)."""
    import torch

    if torch.cuda.is_available():
        return max(1, min(torch.cuda.device_count(), jobs))
    return max(1, min(os.cpu_count() or 1, jobs, 8))


def worker_devices(workers: int) -> list[str] | None:
    """The ``CUDA_VISIBLE_DEVICES`` entry each worker binds to, round-robin over the visible GPUs: the parent's own
    entries where it restricts them (a cluster's ``4,5``, MIG UUIDs), else the indices; None without a GPU."""
    import torch

    if not torch.cuda.is_available():
        return None
    gpus = torch.cuda.device_count()
    # CUDA reads the list up to its first invalid entry, so the first device_count() entries are the visible GPUs
    entries = [entry.strip() for entry in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if entry.strip()][:gpus]
    if len(entries) < gpus:
        entries = [str(k) for k in range(gpus)]
    return [entries[k % gpus] for k in range(workers)]


_WORKER: dict = {}


def _init_worker(devices, threads: int) -> None:
    """Bind this worker to one GPU (before CUDA starts) and to its share of the CPU threads."""
    if devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(devices.get())
    import torch

    torch.set_num_threads(threads)


def _run_job(job: Job, experiment_args: tuple, log_path: Path) -> float:
    """Train one job in this worker (reusing what is finished); returns its wall time in seconds."""
    from fer_lib.experiment import Experiment

    clock = time.perf_counter()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        key = experiment_args
        if _WORKER.get("key") != key:  # the decoded images are loaded once per worker
            profile, data_root, run_dir, checkpoint, pretrained = experiment_args
            _WORKER.update(key=key, experiment=Experiment(profile, data_root, run_dir, checkpoint, pretrained=pretrained, progress=False))
        experiment = _WORKER["experiment"]
        try:
            if job.weighting is None:
                experiment.baseline_for(job.seed)
                experiment.rgb_cache("train", job.seed)
                experiment.rgb_cache("test", job.seed)
            else:
                experiment.fusion_run(job.weighting, job.w, job.seed, job.variant)
        except Exception:
            traceback.print_exc()  # into the job's log; the stage reports the error's one line
            raise
    return time.perf_counter() - clock


def plan(experiment) -> tuple[list[Job], list[Job]]:
    """(baseline jobs, landmark-branch jobs) of an Experiment: one baseline per baseline seed (none to train
    with a given checkpoint, but its feature caches still to build), every run of ``fusion_plan``."""
    baselines = [Job(seed) for seed in experiment.baseline_seeds]
    fusions = [Job(seed, weighting, w, variant) for weighting, w, seed, variant in experiment.fusion_plan()]
    return baselines, fusions


def train_all(experiment, *, workers: int | None = None, progress: bool = True) -> dict[str, float]:
    """Train (or reuse) every baseline and landmark-branch run of ``experiment``; returns seconds per job.

    A job that fails stops the stage with its log's path; what finished before is kept (checkpoints and
    prediction tables are written atomically), and a rerun resumes.
    """
    import torch
    from tqdm.auto import tqdm

    from fer_lib.pipeline import relative

    baselines, fusions = plan(experiment)
    workers = workers or default_workers(len(baselines) + len(fusions))
    p = experiment.profile
    # whole units (hundredths of a baseline epoch), so the bar ends exactly at its total
    cost = {job: 100 * p.baseline_epochs if job.weighting is None else round(100 * epoch_cost(job) * p.fusion_epochs) for job in baselines + fusions}
    experiment.splits  # decode the images once, here, before the workers read the cache
    experiment_args = (p, experiment.data_root, experiment.run_dir, experiment.baseline_checkpoint, experiment.pretrained)
    logs = experiment.run_dir / "logs"
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    context = get_context("spawn")
    devices = None
    if gpus:
        devices = context.Manager().Queue()
        for entry in worker_devices(workers):
            devices.put(entry)
    threads = 1 if gpus else max(1, (os.cpu_count() or 1) // workers)
    where = f"{workers} worker(s), one per GPU" if gpus else f"{workers} worker process(es) of {threads} CPU thread(s)"
    print(f"==> training {len(baselines)} baseline(s) and {len(fusions)} landmark-branch run(s) on {where}; logs in {relative(logs)}")
    seconds: dict[str, float] = {}
    bar = tqdm(total=sum(cost.values()), desc="training", disable=not progress,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining} {postfix}")
    finished_cost, shown_postfix = 0, ""

    def epochs_done(job: Job) -> int:
        """Epochs a job has finished so far: the rows of its history.csv, written after every epoch."""
        folder = experiment.baseline_dir_for(job.seed) if job.weighting is None else experiment.fusion_dir(job.weighting, job.w, job.seed, job.variant)
        try:
            return max(0, sum(1 for _ in open(folder / "history.csv", encoding="utf-8")) - 1)
        except OSError:
            return 0

    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(devices, threads)) as pool:
        running = {}

        def submit(job: Job) -> None:
            running[pool.submit(_run_job, job, experiment_args, logs / f"{job.slug}.log")] = job

        for job in baselines:
            submit(job)
        waiting = list(fusions)
        while running:
            done, _ = wait(running, timeout=2, return_when=FIRST_COMPLETED)
            for future in done:
                job = running.pop(future)
                try:
                    seconds[job.slug] = round(future.result(), 1)
                except Exception as error:  # noqa: BLE001 - reported with its log, then the stage stops
                    for other in running:
                        other.cancel()
                    bar.close()
                    raise SystemExit(f"training {job.name} failed ({type(error).__name__}: {error}); its log: {logs / (job.slug + '.log')}") from None
                finished_cost += cost[job]
                bar.write(f"    {job.name}: done in {seconds[job.slug]:.0f} s")
                if job.weighting is None:  # its seed's landmark-branch runs can start
                    ready = [f for f in waiting if experiment.baseline_seed(f.seed) == job.seed]
                    waiting = [f for f in waiting if f not in ready]
                    for fusion in ready:
                        submit(fusion)
            active = [job for future, job in running.items() if future.running()]
            total_epochs = {job: p.baseline_epochs if job.weighting is None else p.fusion_epochs for job in active}
            progress_now = {job: min(epochs_done(job), total_epochs[job]) for job in active}
            postfix = "; ".join(f"{job.name}, epoch {progress_now[job] + 1}/{total_epochs[job]}" for job in active)
            if postfix != shown_postfix:
                bar.set_postfix_str(postfix, refresh=False)
                shown_postfix = postfix
            # moved with update(), so the bar's rate and time left follow the finished epochs
            bar.update(max(0, finished_cost + sum(cost[job] * progress_now[job] // total_epochs[job] for job in active) - bar.n))
    bar.close()
    return seconds
