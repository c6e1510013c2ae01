"""Train every model of a profile before the notebooks read them, spread over worker processes.

The baselines and the landmark-branch runs of a profile are independent trainings, except that each
landmark-branch run needs its seed's frozen baseline. ``train_all`` trains the baselines first, and
starts each seed's landmark-branch runs as soon as its baseline is done, in ``workers`` processes:
one per GPU, or, on the CPU, the cores split between them; while the baselines train, nothing else
can, so they split the cores among themselves (one shared baseline trains on all of them). Two
single-thread processes train 1.4-1.6x more models per minute than one process with two threads on a
2-core CPU (benchmarks/README.md, "Training the demo's models in parallel"). The notebooks then find
every model finished and only evaluate and explain.

On GPUs, ``runs_per_gpu`` workers share each GPU (round-robin); ``"auto"`` chooses how many from
a run's measured peak memory (``choose_runs_per_gpu``): each job on CUDA records its peak in
``<run folder>/memory.json``, and a later stage, or a given ``--run-memory-gb``, packs by it.

Each job writes its output to ``<run>/logs/<job>.log``. The terminal shows one bar for the whole
stage, weighted by each job's expected cost and moved by the epochs the running jobs have finished
(their ``history.csv``), with the model and epoch of each running job, the time left, and a line per
finished model. The time left is the rest of the schedule priced by what each job kind has cost so
far (``StageClock``), not the bar's rate: a baseline epoch costs about twice a landmark-branch
epoch, so a rate would swing. Each estimate is kept beside the truth in
``<run>/logs/time_left.csv``.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from fer_lib.io import relative, save_csv, save_json
from fer_lib.run.experiment import Experiment
from fer_lib.run.fusion_runs import fusion_run_name
from fer_lib.runtime.devices import pick_device

# Cost of each job kind in seconds of one baseline epoch, until the stage has measured its own
# (benchmarks/README.md, "The training stage's time left"): a landmark-branch epoch from the
# frozen-feature cache, a coordinate-MLP epoch, and the fixed part of a job (a baseline's feature
# caches; a landmark-branch run's test predictions, and for the proposed model's runs alone its
# population means, about 0.4 more: "The landmark ARM's population mean, where it is used").
FUSION_EPOCH_COST = 0.55
COORDS_EPOCH_COST = 0.03  # the coordinate branch: an MLP on 74 numbers instead of a CNN on heatmaps
EPOCH_COST = {"baseline": 1.0, "fusion": FUSION_EPOCH_COST, "coords": COORDS_EPOCH_COST}
FIXED_COST = {"baseline": 1.0, "fusion": 0.15, "coords": 0.05}


def thread_speedup(threads: int) -> float:
    """How much faster a job runs on ``threads`` CPU threads than on one: 1.82x measured for the
    demo's baseline on 2 threads (benchmarks/README.md, "Training the demo's models in parallel"),
    extended as a power law."""
    return max(1, threads) ** 0.86


def job_threads(job: Job, workers: int, baselines_to_train: int, cores: int) -> int:
    """CPU threads for a job: the cores split between the workers, except that baselines,
    which every landmark-branch run waits for, split the cores among themselves (one
    shared baseline gets them all)."""
    if job.weighting is None and baselines_to_train:
        return max(1, cores // min(workers, baselines_to_train))
    return max(1, cores // workers)


@dataclass(frozen=True)
class Job:
    """One training: a baseline (``weighting`` None) or one landmark-branch run."""

    seed: int
    weighting: str | None = None
    w: float = 1.0
    variant: str | None = None  # a design ablation or the coordinate branch (fusion_runs.VARIANTS)

    @property
    def name(self) -> str:
        if self.weighting is None:
            return f"baseline seed {self.seed}"
        return f"fusion {self.weighting} w={self.w:.2f} seed {self.seed}" + (
            f" ({self.variant})" if self.variant else ""
        )

    @property
    def kind(self) -> str:
        """ "baseline", "fusion" (heatmaps and the landmark CNN) or "coords": jobs of one kind cost
        alike per epoch."""
        if self.weighting is None:
            return "baseline"
        return "coords" if self.variant == "coords" else "fusion"

    @property
    def slug(self) -> str:
        if self.weighting is None:
            return f"baseline_seed{self.seed}"
        return "fusion_" + fusion_run_name(self.weighting, self.w, self.seed, self.variant)


def _on_gpus() -> bool:
    """Whether the jobs train on GPUs: CUDA is there and ``--device``
    (FER_DEVICE) did not ask for the CPU."""
    return pick_device().type == "cuda"


def default_workers(jobs: int, runs_per_gpu: int = 1) -> int:
    """``runs_per_gpu`` workers per visible GPU; on the CPU, one single-thread worker per core (at
    most 8: each holds the decoded images)."""
    if _on_gpus():
        return max(1, min(torch.cuda.device_count() * runs_per_gpu, jobs))
    return max(1, min(os.cpu_count() or 1, jobs, 8))


MEMORY_FILE = "memory.json"
# of a GPU's memory, what packed runs may fill: the rest for fragmentation and the driver
MEMORY_SAFETY = 0.9
# per process, outside torch's allocator (what max_memory_reserved does not see): the CUDA context,
# cuDNN's and cuBLAS's handles and kernels
PROCESS_OVERHEAD_GIB = 1.0
GIB = 2**30


def record_peak_memory(folder: Path, device: torch.device) -> None:
    """A job's peak device memory since ``reset_peak_memory_stats`` into ``folder/memory.json``
    (CUDA only; nothing elsewhere, where torch does not measure it): allocated (tensors) and
    reserved (what torch's allocator holds, which ``packed_runs`` reads)."""
    if device.type != "cuda":
        return
    save_json(
        {
            "peak_allocated_gib": round(torch.cuda.max_memory_allocated(device) / GIB, 3),
            "peak_reserved_gib": round(torch.cuda.max_memory_reserved(device) / GIB, 3),
            "device": torch.cuda.get_device_name(device),
            "device_gib": round(torch.cuda.get_device_properties(device).total_memory / GIB, 3),
        },
        Path(folder) / MEMORY_FILE,
    )


def recorded_run_memory(run_dir: Path) -> float | None:
    """The largest peak (reserved, GiB) that a job of ``run_dir`` recorded (its baselines' and
    landmark-branch runs' ``memory.json``), or None where none did."""
    peaks = []
    # baselines in <run>/baseline*, landmark-branch runs in <run>/fusion/*
    found = [*Path(run_dir).glob(f"*/{MEMORY_FILE}"), *Path(run_dir).glob(f"*/*/{MEMORY_FILE}")]
    for path in found:
        try:
            peaks.append(float(json.loads(path.read_text(encoding="utf-8"))["peak_reserved_gib"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a file cut short or of another kind: not a measurement
    return max(peaks) if peaks else None


def packed_runs(run_gib: float, device_gib: float, cores_per_gpu: int) -> int:
    """How many runs of ``run_gib`` peak memory share a GPU of ``device_gib``: as many as fit in
    ``MEMORY_SAFETY`` of it with ``PROCESS_OVERHEAD_GIB`` each, at most one per CPU core of the GPU
    (each worker drives its run from one thread), at least one."""
    fit = int(device_gib * MEMORY_SAFETY // (run_gib + PROCESS_OVERHEAD_GIB))
    return max(1, min(fit, cores_per_gpu))


def choose_runs_per_gpu(asked: int | str, run_dir: Path, run_memory_gb: float | None = None) -> int:
    """The workers per GPU: ``asked`` when a number; for ``"auto"``, ``packed_by_memory`` on the
    smallest visible GPU with its share of this machine's cores. 1 without a GPU (the CPU's workers
    are per core)."""
    if not _on_gpus():
        return 1
    if asked != "auto":
        return int(asked)
    cores_per_gpu = max(1, (os.cpu_count() or 1) // torch.cuda.device_count())
    return packed_by_memory(run_dir, run_memory_gb, smallest_gpu_gib(), cores_per_gpu)


def smallest_gpu_gib() -> float | None:
    """The memory of the smallest visible GPU in GiB; None without a GPU."""
    if not _on_gpus():
        return None
    gpus = torch.cuda.device_count()
    return min(torch.cuda.get_device_properties(k).total_memory for k in range(gpus)) / GIB


def packed_by_memory(
    run_dir: Path, run_memory_gb: float | None, device_gib: float, cores_per_gpu: int
) -> int:
    """``packed_runs`` of the given ``run_memory_gb`` or else of the peak recorded in ``run_dir``,
    saying which in one line; 1 where nothing was measured."""
    figure = run_memory_gb if run_memory_gb is not None else recorded_run_memory(run_dir)
    if figure is None:
        print(
            f"==> runs per GPU: 1 (no run of {relative(run_dir)} has recorded its peak memory yet; "
            "--run-memory-gb GB gives one)"
        )
        return 1
    packed = packed_runs(figure, device_gib, cores_per_gpu)
    source = "given" if run_memory_gb is not None else "recorded"
    print(
        f"==> runs per GPU: {packed} (a run's peak {figure:.1f} GiB, {source}, + "
        f"{PROCESS_OVERHEAD_GIB:.0f} GiB per process, in {MEMORY_SAFETY:.0%} of "
        f"{device_gib:.0f} GiB)"
    )
    return packed


class StageClock:
    """The training stage's time left, from what each job kind has cost so far.

    Seconds per epoch of each kind are the median of the epochs finished in this stage
    (``history.csv``'s ``seconds``); a kind not measured yet is priced from a measured one by the
    priors above. A job's fixed part (``FIXED_COST``) is measured from finished jobs as their wall
    time less their epochs. The time left is then the schedule played forward: the running jobs'
    remainders, then the queued jobs in the pool's order, each landmark-branch run not before its
    seed's baseline, on ``workers`` workers.
    """

    def __init__(self, workers: int, threads: dict[str, int] | None = None):
        self.workers = workers
        # each kind's CPU threads: an epoch measured on some is priced for
        # another kind by thread_speedup
        self.threads = {**dict.fromkeys(EPOCH_COST, 1), **(threads or {})}
        self.epochs: dict[str, list[float]] = {kind: [] for kind in EPOCH_COST}
        self.fixed: dict[str, list[float]] = {kind: [] for kind in EPOCH_COST}

    def observe_epochs(self, kind: str, seconds: list[float]) -> None:
        self.epochs[kind] = [*self.epochs[kind], *seconds]

    def observe_job(self, kind: str, wall: float, epoch_seconds: list[float]) -> None:
        """A finished job: its fixed part is its wall time less its epochs
        (skipped for a reused job)."""
        if epoch_seconds and wall > sum(epoch_seconds):
            self.fixed[kind].append(wall - sum(epoch_seconds))

    def epoch_seconds(self, kind: str) -> float | None:
        measured = {k: float(np.median(v)) for k, v in self.epochs.items() if v}
        if kind in measured:
            return measured[kind]
        prior = EPOCH_COST
        for other in prior:  # the kind measured first, rescaled
            if other in measured:
                return measured[other] * prior[kind] / prior[other] * self._speed(other, kind)
        return None

    def fixed_seconds(self, kind: str) -> float | None:
        if self.fixed[kind]:
            return float(np.median(self.fixed[kind]))
        baseline_epoch = self.epoch_seconds("baseline")
        if baseline_epoch is None:
            return None
        return FIXED_COST[kind] * baseline_epoch * self._speed("baseline", kind)

    def _speed(self, measured: str, kind: str) -> float:
        """Seconds of ``kind`` per second of ``measured`` at equal work: their threads' speedups."""
        return thread_speedup(self.threads[measured]) / thread_speedup(self.threads[kind])

    def left(
        self, running: list[tuple[str, int, int, int, float]], queued: list[tuple[str, int, int]]
    ) -> float | None:
        """Seconds until the last job ends, or None before anything is measured.

        running: (kind, seed, epochs, epochs done, seconds since its last finished epoch or its
        start); queued: (kind, seed, epochs) in the order the pool will start them.
        """
        if self.epoch_seconds("baseline") is None:
            return None
        free, ready = [], {}
        for kind, seed, epochs, done, since in running:
            part = (epochs - done) * self.epoch_seconds(kind) + self.fixed_seconds(kind) - since
            free.append(max(0.0, part))
            if kind == "baseline":
                ready[seed] = free[-1]
        free += [0.0] * max(0, self.workers - len(free))

        def play(jobs) -> None:
            for kind, seed, epochs in jobs:
                worker = int(np.argmin(free))
                start = max(free[worker], 0.0 if kind == "baseline" else ready.get(seed, 0.0))
                free[worker] = start + epochs * self.epoch_seconds(kind) + self.fixed_seconds(kind)
                if kind == "baseline":
                    ready[seed] = free[worker]

        # baselines first (they are submitted first), then each seed's runs in
        # the order their baselines end
        play([job for job in queued if job[0] == "baseline"])
        runs = [job for job in queued if job[0] != "baseline"]
        # stable: submission order within a seed
        play(sorted(runs, key=lambda job: ready.get(job[1], 0.0)))
        return max(free)


def format_left(seconds: float | None) -> str:
    if seconds is None:
        return "time left: after the first epoch"
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"about {minutes}:{rest:02d} left"


def worker_devices(workers: int) -> list[str] | None:
    """The ``CUDA_VISIBLE_DEVICES`` entry each worker binds to, round-robin over the visible GPUs:
    the parent's own entries where it restricts them (a cluster's ``4,5``, MIG UUIDs), else the
    indices; None without a GPU."""
    if not _on_gpus():
        return None
    gpus = torch.cuda.device_count()
    # CUDA reads the list up to its first invalid entry: the first device_count() are the visible
    entries = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")
    entries = [entry.strip() for entry in entries if entry.strip()][:gpus]
    if len(entries) < gpus:
        entries = [str(k) for k in range(gpus)]
    return [entries[k % gpus] for k in range(workers)]


_WORKER: dict = {}


def _init_worker(devices) -> None:
    """Bind this worker to one GPU, before CUDA starts (each job sets its own CPU threads):
    ``devices`` is its ``CUDA_VISIBLE_DEVICES`` entry, or a queue of them to take one from."""
    if devices is not None:
        entry = devices if isinstance(devices, str) else devices.get()
        os.environ["CUDA_VISIBLE_DEVICES"] = str(entry)


def worker_pool(workers: int, device: str | None = None) -> ProcessPoolExecutor:
    """``workers`` spawned processes, each bound to one GPU before CUDA starts: ``device`` (a
    ``CUDA_VISIBLE_DEVICES`` entry) for all of them, or else round-robin over the visible GPUs
    (``worker_devices``); unbound without a GPU."""
    context = get_context("spawn")
    devices = device
    if device is None and _on_gpus():
        devices = context.Manager().Queue()
        for entry in worker_devices(workers):
            devices.put(entry)
    return ProcessPoolExecutor(
        workers, mp_context=context, initializer=_init_worker, initargs=(devices,)
    )


def arguments_of(experiment: Experiment) -> tuple:
    """What a worker rebuilds ``experiment`` from (``train_job``'s ``experiment_args``)."""
    return (
        experiment.profile,
        experiment.data_root,
        experiment.run_dir,
        experiment.baseline_checkpoint,
        experiment.pretrained,
    )


def train_job(job: Job, experiment_args: tuple, log_path: Path, threads: int = 1) -> float:
    """Train one job in this process on ``threads`` CPU threads (0: torch's default), reusing what
    is finished; returns its wall time in seconds. On CUDA a job that trained records its peak
    memory in its folder (``record_peak_memory``)."""
    if threads:
        torch.set_num_threads(threads)

    clock = time.perf_counter()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with (
        open(log_path, "a", encoding="utf-8") as log,
        contextlib.redirect_stdout(log),
        contextlib.redirect_stderr(log),
    ):
        if _WORKER.get("key") != experiment_args:  # the decoded images are loaded once per worker
            *args, pretrained = experiment_args
            experiment = Experiment(*args, pretrained=pretrained, progress=False)
            _WORKER.update(key=experiment_args, experiment=experiment)
        experiment = _WORKER["experiment"]
        folder, was_finished = job_folder(experiment, job), is_finished(experiment, job)
        # a reused job would record only what it reads
        measure = experiment.device.type == "cuda" and not (folder / MEMORY_FILE).exists()
        if measure:
            torch.cuda.reset_peak_memory_stats(experiment.device)
        try:
            if job.weighting is None:
                experiment.baselines.model(job.seed)
                experiment.baselines.rgb_cache("train", job.seed)
                experiment.baselines.rgb_cache("test", job.seed)
            else:
                experiment.fusion.run(job.weighting, job.w, job.seed, job.variant)
        except Exception:
            traceback.print_exc()  # into the job's log; the stage reports the error's one line
            raise
        if measure and not was_finished:
            record_peak_memory(folder, experiment.device)
    return time.perf_counter() - clock


def job_folder(experiment, job: Job) -> Path:
    """The run folder a job trains into."""
    if job.weighting is None:
        return experiment.baselines.folder(job.seed)
    return experiment.fusion.folder(job.weighting, job.w, job.seed, job.variant)


def plan(experiment) -> tuple[list[Job], list[Job]]:
    """(baseline jobs, landmark-branch jobs) of an Experiment: one baseline per baseline seed (none
    to train with a given checkpoint, but its feature caches still to build), every run of
    ``FusionRuns.plan``."""
    baselines = [Job(seed) for seed in experiment.baselines.seeds]
    fusions = [
        Job(seed, weighting, w, variant) for weighting, w, seed, variant in experiment.fusion.plan()
    ]
    return baselines, fusions


def is_finished(experiment, job: Job) -> bool:
    """A job whose results are on disk: a baseline's last epoch and checkpoint, a landmark-branch
    run's test predictions. A given checkpoint's feature caches are not checked here, so that job
    always goes to a worker."""
    if job.weighting is None:
        if experiment.baseline_checkpoint is not None:
            return False
        folder = experiment.baselines.folder(job.seed)
        try:
            lines = (folder / "history.csv").read_text(encoding="utf-8").strip().splitlines()
        except OSError:
            return False
        return (
            len(lines) - 1 >= experiment.profile.baseline_epochs and (folder / "best.pt").exists()
        )
    return (job_folder(experiment, job) / "predictions_fused.csv").exists()


def train_all(
    experiment,
    *,
    workers: int | None = None,
    progress: bool = True,
    runs_per_gpu: int | str = 1,
    run_memory_gb: float | None = None,
) -> dict[str, float]:
    """Train (or reuse) every baseline and landmark-branch run of ``experiment``; returns seconds
    per job. Without ``workers``: ``runs_per_gpu`` workers on each GPU (a number, or "auto":
    ``choose_runs_per_gpu`` from ``run_memory_gb`` or the peak memory recorded in the run folder).

    A job that fails stops the stage with its log's path; what finished before is kept (checkpoints
    and prediction tables are written atomically), and a rerun resumes.
    """
    baselines, fusions = plan(experiment)
    # a rerun: no images to decode, no workers to start
    if all(is_finished(experiment, job) for job in baselines + fusions):
        print(
            f"==> every model of the profile is trained ({len(baselines)} baseline(s), "
            f"{len(fusions)} landmark-branch run(s)): reusing them"
        )
        return {}
    if not workers:
        packed = choose_runs_per_gpu(runs_per_gpu, experiment.run_dir, run_memory_gb)
        workers = default_workers(len(baselines) + len(fusions), packed)
    return _Stage(experiment, baselines, fusions, workers, progress).run()


class _Stage:
    """One training stage: the jobs' threads and costs, the pool that runs them (each seed's
    landmark-branch runs once its baseline is done), the progress bar and the time left."""

    def __init__(self, experiment, baselines: list[Job], fusions: list[Job], workers, progress):
        self.experiment, self.workers = experiment, workers
        self.baselines, self.fusions, jobs = baselines, fusions, baselines + fusions
        self.gpus = torch.cuda.device_count() if _on_gpus() else 0
        self.cores = os.cpu_count() or 1
        self.to_train = [job for job in baselines if not is_finished(experiment, job)]
        self.threads_of = {
            job: 1 if self.gpus else job_threads(job, workers, len(self.to_train), self.cores)
            for job in jobs
        }
        self.cost = {job: self._cost(job) for job in jobs}
        self.logs = experiment.run_dir / "logs"
        self.clock = StageClock(workers, {job.kind: self.threads_of[job] for job in jobs})
        self.finished_epochs: dict[str, list[float]] = {kind: [] for kind in self.clock.epochs}
        self.started_at: dict[Job, float] = {}
        self.seconds: dict[str, float] = {}
        self.estimates: list[list] = []  # [seconds, epochs done, estimated seconds left]
        self.finished_cost, self.shown_postfix, self.shown_epochs = 0, "", -1
        self.progress = progress
        # Only as many jobs in the pool as it has workers: the pool marks a job running once it is
        # in its call queue, before a worker takes it, and the bar and the time left must see the
        # jobs that really run.
        self.queue = list(baselines)
        self.waiting = list(fusions)  # until their seed's baseline is done
        self.running: dict = {}

    def _cost(self, job: Job) -> int:
        """Whole units (hundredths of a single-thread baseline epoch), so the bar ends exactly at
        its total."""
        kind = job.kind
        epochs = self.epochs_of(job) * EPOCH_COST[kind]
        return round(100 * (FIXED_COST[kind] + epochs) / thread_speedup(self.threads_of[job]))

    def epochs_of(self, job: Job) -> int:
        p = self.experiment.profile
        return p.baseline_epochs if job.weighting is None else p.fusion_epochs

    def history(self, job: Job) -> tuple[list[float], float]:
        """Seconds of each epoch a job has finished (its history.csv, written after every epoch),
        and when the last one ended (time.time())."""
        path = job_folder(self.experiment, job) / "history.csv"
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
            column = lines[0].split(",").index("seconds")
            epochs = [float(line.split(",")[column]) for line in lines[1:] if line]
            return epochs, path.stat().st_mtime
        except (OSError, ValueError, IndexError):
            return [], 0.0

    def run(self) -> dict[str, float]:
        experiment = self.experiment
        _ = experiment.splits  # decode the images once, here, before the workers read the cache
        self._announce()
        self.bar = tqdm(
            total=sum(self.cost.values()),
            desc="training",
            disable=not self.progress,
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}{postfix}",
        )
        self.stage_start = time.perf_counter()
        experiment_args = arguments_of(experiment)
        with worker_pool(self.workers) as pool:
            self._fill(pool, experiment_args)
            while self.running:
                done, _ = wait(self.running, timeout=2, return_when=FIRST_COMPLETED)
                for future in done:
                    self._finish(future)
                self._fill(pool, experiment_args)
                self._show_progress()
        self._save_estimates(total=time.perf_counter() - self.stage_start)
        self.bar.close()
        return self.seconds

    def _save_estimates(self, total: float | None = None) -> None:
        """The time-left estimates beside the truth once the stage has ended (``total`` seconds)."""
        frame = pd.DataFrame(
            self.estimates, columns=["seconds", "epochs done", "estimated seconds left"]
        )
        if total is not None:
            frame["true seconds left"] = (total - frame["seconds"]).round(1)
            frame["error"] = (
                frame["estimated seconds left"] / frame["true seconds left"] - 1
            ).round(3)
        save_csv(frame, self.logs / "time_left.csv")

    def _announce(self) -> None:
        if self.gpus:
            where = f"{self.workers} worker(s) on {self.gpus} GPU(s)"
        else:
            threads = max(1, self.cores // self.workers)
            where = f"{self.workers} worker process(es) of {threads} CPU thread(s)" + "".join(
                f" (the baseline of seed {job.seed} on {self.threads_of[job]})"
                for job in self.to_train
                if self.threads_of[job] != threads
            )
        print(
            f"==> training {len(self.baselines)} baseline(s) and {len(self.fusions)} "
            f"landmark-branch run(s) on {where}; logs in {relative(self.logs)}"
        )

    def _fill(self, pool, experiment_args: tuple) -> None:
        while self.queue and len(self.running) < self.workers:
            job = self.queue.pop(0)
            log = self.logs / f"{job.slug}.log"
            future = pool.submit(train_job, job, experiment_args, log, self.threads_of[job])
            self.running[future] = job

    def _finish(self, future) -> None:
        """A job has ended: stop the stage if it failed, else count it and release its seed's
        landmark-branch runs if it was a baseline."""
        job = self.running.pop(future)
        try:
            self.seconds[job.slug] = round(future.result(), 1)
        except Exception as error:  # noqa: BLE001 - reported with its log, then the stage stops
            for other in self.running:
                other.cancel()
            self.bar.close()
            raise SystemExit(
                f"training {job.name} failed ({type(error).__name__}: {error}); its log: "
                f"{self.logs / (job.slug + '.log')}"
            ) from None
        self.finished_cost += self.cost[job]
        epoch_seconds = self.history(job)[0][: self.epochs_of(job)]
        self.finished_epochs[job.kind] += epoch_seconds
        self.clock.observe_job(job.kind, self.seconds[job.slug], epoch_seconds)
        self.bar.write(f"    {job.name}: done in {self.seconds[job.slug]:.0f} s")
        if job.weighting is None:
            seed_of = self.experiment.baselines.seed
            ready = [f for f in self.waiting if seed_of(f.seed) == job.seed]
            self.waiting = [f for f in self.waiting if f not in ready]
            self.queue += ready

    def _show_progress(self) -> None:
        """The bar moved by the finished epochs, its postfix (the time left, what each running job
        is doing), and the estimate after each finished epoch kept to check it against the truth."""
        now, wall = time.perf_counter(), time.time()
        active = [job for future, job in self.running.items() if future.running()]
        for job in active:
            self.started_at.setdefault(job, wall)
        rows = {job: self.history(job) for job in active}
        done = {job: min(len(rows[job][0]), self.epochs_of(job)) for job in active}
        self.clock.epochs = {
            kind: self.finished_epochs[kind]
            + [t for job in active if job.kind == kind for t in rows[job][0]]
            for kind in self.finished_epochs
        }
        left = self._time_left(active, rows, done, wall)
        epochs_now = sum(len(v) for v in self.clock.epochs.values())
        if epochs_now != self.shown_epochs:
            estimate = None if left is None else round(left, 1)
            self.estimates.append([round(now - self.stage_start, 1), epochs_now, estimate])
            self.shown_epochs = epochs_now
            self._save_estimates()  # as it goes, so a stage cut short keeps them
        postfix = "; ".join([format_left(left), *(self._doing(job, done[job]) for job in active)])
        if postfix != self.shown_postfix:
            self.bar.set_postfix_str(postfix, refresh=False)
            self.shown_postfix = postfix
        # moved with update(), so the bar follows the finished epochs
        partial = sum(self.cost[job] * done[job] // self.epochs_of(job) for job in active)
        self.bar.update(max(0, self.finished_cost + partial - self.bar.n))

    def _time_left(self, active: list[Job], rows: dict, done: dict, wall: float) -> float | None:
        def shape(job: Job) -> tuple[str, int, int]:  # as StageClock.left takes a job
            return job.kind, self.experiment.baselines.seed(job.seed), self.epochs_of(job)

        running = [
            (*shape(job), done[job], wall - max(self.started_at[job], rows[job][1]))
            for job in active
        ]
        pending = [job for job in self.running.values() if job not in active]
        return self.clock.left(
            running, [shape(job) for job in [*pending, *self.queue, *self.waiting]]
        )

    def _doing(self, job: Job, epochs_done: int) -> str:
        """A running job's model and epoch; past its last epoch it is selecting and predicting."""
        step = epochs_done + 1
        if step <= self.epochs_of(job):
            return f"{job.name}, epoch {step}/{self.epochs_of(job)}"
        return f"{job.name}, predicting"
