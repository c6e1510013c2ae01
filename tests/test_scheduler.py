"""The training stage before the notebooks (fer_lib.run.scheduler): what it plans, and how a failing
job ends it."""

import json
import os
from dataclasses import asdict

import pytest
import torch

from fer_lib.run import pipeline, scheduler
from fer_lib.run.experiment import Experiment
from fer_lib.run.profiles import get_profile


def test_the_plan_is_every_distinct_configuration_for_every_seed(tmp_path):
    experiment = Experiment(get_profile("demo"), tmp_path, tmp_path, progress=False)
    baselines, fusions = scheduler.plan(experiment)
    assert [job.seed for job in baselines] == [0]  # the demo's seeds share one frozen baseline
    configurations = {(job.weighting, job.w, job.variant) for job in fusions}
    # Fig. 4's w = 1 is the confidence-only ablation, so five distinct models of the paper per seed;
    # then the calibrated weighting and the coordinate branch (the learned gate is fitted
    # afterwards, not trained)
    paper = {("both", 0.6), ("both", 0.0), ("confidence", 1.0), ("none", 1.0), ("agreement", 0.6)}
    assert configurations == {(*pair, None) for pair in paper} | {
        ("calibrated", 0.6, None),
        ("both", 0.6, "coords"),
    }
    seeds = get_profile("demo").seeds  # 3: fewer give no method-level verdict
    assert len(fusions) == 7 * seeds and [job.seed for job in fusions[:7]] == [0] * 7


def test_one_baseline_serves_every_seed_unless_the_profile_asks_for_one_each(tmp_path):
    shared = Experiment(
        get_profile("demo", {"seed_offset": "7"}),
        tmp_path,
        tmp_path,
        progress=False,
    )
    assert shared.baselines.seeds == [7] and shared.baselines.seed(8) == 7
    each = Experiment(
        get_profile("demo", {"baseline_per_seed": "true", "seed_offset": "7"}),
        tmp_path,
        tmp_path,
        progress=False,
    )
    seeds = get_profile("demo").seeds
    assert each.baselines.seeds == list(range(7, 7 + seeds)) and each.baselines.seed(8) == 8
    assert (
        each.baselines.folder(7).name == "baseline"
        and each.baselines.folder(8).name == "baseline_seed8"
    )
    checkpoint = Experiment(
        get_profile("demo"), tmp_path, tmp_path, tmp_path / "epoch59_acc0.9205.pth", progress=False
    )
    assert checkpoint.baselines.seeds == [0]  # a given checkpoint is the baseline of every seed


def test_a_failing_job_stops_the_stage_and_names_its_log(tmp_path):
    profile = get_profile("smoke", {"seeds": "1"})
    root = pipeline.ensure_data(profile, None, tmp_path)
    experiment = Experiment(profile, root, tmp_path, progress=False)
    folder = experiment.baselines.folder(0)
    folder.mkdir()
    # another run's folder
    (folder / "config.json").write_text(
        json.dumps({**asdict(experiment.baselines.config(0)), "width": 8})
    )
    with pytest.raises(
        SystemExit,
        match=(
            r"training baseline seed 0 failed \(ValueError: .*another "
            r"configuration.*logs/baseline_seed0.log"
        ),
    ):
        scheduler.train_all(experiment, workers=1, progress=False)
    assert "another configuration" in (tmp_path / "logs" / "baseline_seed0.log").read_text()
    assert not (tmp_path / "fusion").exists()  # nothing started on a baseline that failed


def _simulate(workers, baseline_epoch, fusion_epoch, coords_epoch, fixed, seeds=2, runs_per_seed=6):
    """A demo-like stage played out with true costs, as the pool runs it: when it ends."""
    epoch = {"baseline": baseline_epoch, "fusion": fusion_epoch, "coords": coords_epoch}
    jobs = [("baseline", s, 10) for s in range(seeds)]
    runs = {s: [("fusion", s, 4)] * runs_per_seed + [("coords", s, 4)] for s in range(seeds)}
    queue, free = list(jobs), [0.0] * workers
    while queue:
        # released runs in the order released
        queue.sort(key=lambda job: job[3] if len(job) > 3 else 0.0)
        kind, seed, epochs, *release = queue.pop(0)
        worker = min(range(workers), key=free.__getitem__)
        start = max([free[worker], *release])
        free[worker] = start + epochs * epoch[kind] + fixed[kind]
        if kind == "baseline":
            queue += [(*run, free[worker]) for run in runs[seed]]
    return max(free)


def test_the_time_left_is_within_a_quarter_of_the_truth_after_the_first_baseline_epoch():
    # true costs off the priors by 20-30%: a fusion epoch 0.5 baseline epochs
    # (prior 0.65), other fixed parts
    fixed = {"baseline": 14.0, "fusion": 5.0, "coords": 1.0}
    end = _simulate(2, 20.0, 10.0, 0.5, fixed)
    clock = scheduler.StageClock(workers=2)
    # nothing measured yet
    assert clock.left([("baseline", 0, 10, 0, 5.0), ("baseline", 1, 10, 0, 5.0)], []) is None
    clock.observe_epochs("baseline", [20.0, 20.0])  # both baselines' first epoch, at t = 20
    queued = [(kind, s, 4) for s in (0, 1) for kind in ["fusion"] * 6 + ["coords"]]
    left = clock.left([("baseline", 0, 10, 1, 0.0), ("baseline", 1, 10, 1, 0.0)], queued)
    assert abs(left / (end - 20.0) - 1) < 0.25, (left, end - 20.0)
    # once every kind has been measured and a job of each has finished, the estimate is the truth
    clock.observe_epochs("fusion", [10.0] * 4)
    clock.observe_epochs("coords", [0.5] * 4)
    for kind, epoch in (("baseline", 20.0), ("fusion", 10.0), ("coords", 0.5)):
        clock.observe_job(kind, 4 * epoch + fixed[kind], [epoch] * 4)
    t = 234.0  # both baselines done at 214; two runs of seed 0 started then, 2 epochs in
    running = [("fusion", 0, 4, 2, 0.0), ("fusion", 0, 4, 2, 0.0)]
    queued = [(kind, s, 4) for s, n in ((0, 4), (1, 6)) for kind in ["fusion"] * n + ["coords"]]
    assert clock.left(running, queued) == pytest.approx(end - t)


def test_the_time_left_waits_for_a_runs_baseline():
    clock = scheduler.StageClock(workers=2)
    clock.observe_epochs("baseline", [10.0])
    clock.observe_job("baseline", 110.0, [10.0] * 10)  # a fixed part of 10 s
    clock.observe_epochs("fusion", [5.0])
    clock.observe_job("fusion", 25.0, [5.0] * 4)  # 5 s
    # one worker idle, the other 50 s from the end of seed 1's baseline: its run cannot start before
    left = clock.left([("baseline", 1, 10, 6, 0.0)], [("fusion", 1, 4)])
    assert left == 4 * 10.0 + 10.0 + 25.0
    assert scheduler.format_left(
        left
    ) == "about 1:15 left" and "first epoch" in scheduler.format_left(None)


@pytest.mark.parametrize(
    "visible, expected",
    [
        (None, ["0", "1", "0"]),
        ("4,5", ["4", "5", "4"]),  # a cluster's allocation
        (
            "MIG-1b2c3d4e-aaaa-bbbb-cccc-000000000001,MIG-1b2c3d4e-aaaa-bbbb-cccc-000000000002",
            [
                "MIG-1b2c3d4e-aaaa-bbbb-cccc-000000000001",
                "MIG-1b2c3d4e-aaaa-bbbb-cccc-000000000002",
                "MIG-1b2c3d4e-aaaa-bbbb-cccc-000000000001",
            ],
        ),
    ],
)
def test_workers_bind_to_the_gpus_the_parent_was_given(monkeypatch, visible, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible or "")
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert scheduler.worker_devices(3) == expected

    class Queue:
        def get(self):
            return expected[1]

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible or "")  # restored after the test
    scheduler._init_worker(Queue())
    assert os.environ["CUDA_VISIBLE_DEVICES"] == expected[1]


def test_without_a_gpu_workers_are_not_bound(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert scheduler.worker_devices(2) is None


def test_baselines_split_the_cores_among_themselves_and_the_runs_take_a_share_each():
    shared, run = scheduler.Job(0), scheduler.Job(0, "both", 0.6)
    assert scheduler.job_threads(shared, workers=2, baselines_to_train=1, cores=2) == 2
    assert scheduler.job_threads(shared, workers=2, baselines_to_train=2, cores=2) == 1
    assert scheduler.job_threads(shared, workers=4, baselines_to_train=0, cores=8) == 2
    assert scheduler.job_threads(run, workers=2, baselines_to_train=1, cores=2) == 1
    assert scheduler.job_threads(run, workers=3, baselines_to_train=1, cores=2) == 1


def test_the_time_left_prices_single_thread_runs_from_a_baseline_on_two_threads():
    # the truth: a single-thread baseline epoch of 20 s runs in 20 / thread_speedup(2) on two
    # threads; the runs (6 of 4 epochs per seed, plus a coordinate run) take one thread each on two
    # workers, at costs off the priors
    two = 20.0 / scheduler.thread_speedup(2)
    fixed = {"baseline": 20.0 / scheduler.thread_speedup(2), "fusion": 5.5, "coords": 1.0}
    runs = [(kind, 0, 4) for s in (0, 1) for kind in ["fusion"] * 6 + ["coords"]]
    end_of_baseline = 10 * two + fixed["baseline"]
    free = [end_of_baseline, end_of_baseline]
    for kind, _, epochs in runs:
        epoch = {"fusion": 13.0, "coords": 0.6}[kind]  # off the priors (11, 0.6) by up to 20%
        k = free.index(min(free))
        free[k] += epochs * epoch + fixed[kind]
    truth = max(free) - two  # after the baseline's first epoch
    clock = scheduler.StageClock(workers=2, threads={"baseline": 2, "fusion": 1, "coords": 1})
    clock.observe_epochs("baseline", [two])
    left = clock.left([("baseline", 0, 10, 1, 0.0)], runs)
    assert abs(left / truth - 1) < 0.25, (left, truth)
    # priced as if the baseline had run on one thread, the runs would look 1.8x cheaper
    naive = scheduler.StageClock(workers=2)
    naive.observe_epochs("baseline", [two])
    assert naive.left([("baseline", 0, 10, 1, 0.0)], runs) < 0.8 * truth
