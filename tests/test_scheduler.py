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


def test_a_gpu_holds_as_many_runs_as_fit_its_memory_with_a_margin_and_one_per_core():
    # 90% of 80 GiB in runs of 3 GiB + 1 GiB per process: 18, unless the GPU has fewer cores
    assert scheduler.packed_runs(3.0, 80.0, cores_per_gpu=32) == 18
    assert scheduler.packed_runs(3.0, 80.0, cores_per_gpu=8) == 8
    assert scheduler.packed_runs(8.0, 40.0, cores_per_gpu=16) == 4  # 36 // 9
    assert scheduler.packed_runs(8.1, 40.0, cores_per_gpu=16) == 3
    assert scheduler.packed_runs(90.0, 80.0, cores_per_gpu=16) == 1  # never none


def _memory(folder, peak):
    folder.mkdir(parents=True)
    (folder / scheduler.MEMORY_FILE).write_text(json.dumps({"peak_reserved_gib": peak}))


@pytest.fixture
def two_gpus(monkeypatch):
    """Two visible GPUs of 80 GiB and 16 cores, as the scheduler sees them."""

    class Properties:
        total_memory = 80 * scheduler.GIB

    monkeypatch.setattr(scheduler, "_on_gpus", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda _: Properties())
    monkeypatch.setattr(os, "cpu_count", lambda: 16)


def test_auto_packs_by_the_largest_peak_recorded_in_the_run_folder(tmp_path, two_gpus, capsys):
    _memory(tmp_path / "baseline", 5.0)
    _memory(tmp_path / "fusion" / "both_w0.60_seed0", 2.0)
    (tmp_path / "fusion" / "cut_short").mkdir()
    (tmp_path / "fusion" / "cut_short" / scheduler.MEMORY_FILE).write_text("{")  # not a figure
    assert scheduler.recorded_run_memory(tmp_path) == 5.0
    # 72 // 6 = 12 fit, but the GPU has 8 cores
    assert scheduler.choose_runs_per_gpu("auto", tmp_path) == 8
    assert "runs per GPU: 8 (a run's peak 5.0 GiB, recorded" in capsys.readouterr().out
    # a given figure wins over the recorded one
    assert scheduler.choose_runs_per_gpu("auto", tmp_path, run_memory_gb=17.0) == 4
    assert scheduler.choose_runs_per_gpu(3, tmp_path) == 3
    assert scheduler.default_workers(40, 4) == 8 and scheduler.default_workers(5, 4) == 5


def test_auto_falls_back_to_one_run_per_gpu_saying_so_when_nothing_was_measured(
    tmp_path, two_gpus, capsys
):
    assert scheduler.recorded_run_memory(tmp_path) is None
    assert scheduler.choose_runs_per_gpu("auto", tmp_path) == 1
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "runs per GPU: 1 (no run of" in out
    assert "--run-memory-gb" in out


def test_on_the_cpu_runs_per_gpu_changes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(scheduler, "_on_gpus", lambda: False)
    _memory(tmp_path / "baseline", 2.0)
    for asked in ("auto", 4):
        assert scheduler.choose_runs_per_gpu(asked, tmp_path, run_memory_gb=1.0) == 1
    assert capsys.readouterr().out == ""
    assert scheduler.default_workers(6, 4) == scheduler.default_workers(6)


def test_a_job_on_cuda_records_its_peak_memory_and_none_elsewhere(tmp_path, monkeypatch):
    scheduler.record_peak_memory(tmp_path, torch.device("cpu"))
    assert not (tmp_path / scheduler.MEMORY_FILE).exists()

    class Properties:
        total_memory = 80 * scheduler.GIB

    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda _: 3 * scheduler.GIB)
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda _: 3.5 * scheduler.GIB)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda _: "a GPU")
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda _: Properties())
    scheduler.record_peak_memory(tmp_path / "fusion" / "run", torch.device("cuda", 0))
    recorded = json.loads((tmp_path / "fusion" / "run" / scheduler.MEMORY_FILE).read_text())
    assert recorded == {
        "peak_allocated_gib": 3.0,
        "peak_reserved_gib": 3.5,
        "device": "a GPU",
        "device_gib": 80.0,
    }
    assert scheduler.recorded_run_memory(tmp_path) == 3.5


def test_run_all_passes_runs_per_gpu_on_and_refuses_a_bad_value_in_one_line(
    tmp_path, monkeypatch, capsys
):
    from fer_lib.cli.main import main
    from fer_lib.runtime.devices import DEVICE_ENV

    monkeypatch.delenv(DEVICE_ENV, raising=False)  # --device sets it: restored after the test
    given = {}
    monkeypatch.setattr(pipeline, "run_all", lambda profile, **options: given.update(options) or 0)
    assert main(["run-all", "--profile", "smoke", "--runs-per-gpu", "auto", "--run-memory-gb",
                 "3.5", "--gpu-memory-gb", "80", "--run-dir", str(tmp_path),
                 "--device", "cpu"]) == 0  # fmt: skip
    assert given["runs_per_gpu"] == "auto" and given["run_memory_gb"] == 3.5
    assert given["launch_options"].gpu_memory_gb == 80
    bad_values = [["--runs-per-gpu", "0"], ["--runs-per-gpu", "many"], ["--run-memory-gb", "0"]]
    for bad in [*bad_values, ["--gpu-memory-gb", "-1"]]:
        with pytest.raises(SystemExit) as exit_:
            main(["run-all", "--profile", "smoke", *bad])
        assert exit_.value.code == 2
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and bad[0] in error
