"""The training stage before the notebooks (fer_lib.scheduler): what it plans, and how a failing job ends it."""

import json
from dataclasses import asdict

import pytest

from fer_lib import pipeline, scheduler
from fer_lib.experiment import Experiment, get_profile


def test_the_plan_is_every_distinct_configuration_for_every_seed(tmp_path):
    experiment = Experiment(get_profile("demo"), tmp_path, tmp_path, progress=False)
    baselines, fusions = scheduler.plan(experiment)
    assert [job.seed for job in baselines] == [0, 1]  # the demo trains one baseline per seed
    configurations = {(job.weighting, job.w, job.variant) for job in fusions}
    # Fig. 4's w = 1 is the confidence-only ablation, so five distinct models of the paper per seed; then the
    # calibrated weighting and the coordinate branch (the learned gate is fitted afterwards, not trained)
    paper = {("both", 0.6), ("both", 0.0), ("confidence", 1.0), ("none", 1.0), ("agreement", 0.6)}
    assert configurations == {(*pair, None) for pair in paper} | {("calibrated", 0.6, None), ("both", 0.6, "coords")}
    assert len(fusions) == 14 and [job.seed for job in fusions[:7]] == [0] * 7


def test_one_baseline_serves_every_seed_unless_the_profile_asks_for_one_each(tmp_path):
    shared = Experiment(get_profile("demo", {"baseline_per_seed": "false", "seed_offset": "7"}), tmp_path, tmp_path, progress=False)
    assert shared.baseline_seeds == [7] and shared.baseline_seed(8) == 7
    each = Experiment(get_profile("demo", {"seed_offset": "7"}), tmp_path, tmp_path, progress=False)
    assert each.baseline_seeds == [7, 8] and each.baseline_seed(8) == 8
    assert each.baseline_dir_for(7).name == "baseline" and each.baseline_dir_for(8).name == "baseline_seed8"
    checkpoint = Experiment(get_profile("demo"), tmp_path, tmp_path, tmp_path / "epoch59_acc0.9205.pth", progress=False)
    assert checkpoint.baseline_seeds == [0]  # a given checkpoint is the baseline of every seed


def test_a_failing_job_stops_the_stage_and_names_its_log(tmp_path):
    profile = get_profile("smoke", {"seeds": "1"})
    root = pipeline.ensure_data(profile, None, tmp_path)
    experiment = Experiment(profile, root, tmp_path, progress=False)
    folder = experiment.baseline_dir_for(0)
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({**asdict(experiment.baseline_config(0)), "width": 8}))  # another run's folder
    with pytest.raises(SystemExit, match=r"training baseline seed 0 failed \(ValueError: .*another configuration.*logs/baseline_seed0.log"):
        scheduler.train_all(experiment, workers=1, progress=False)
    assert "another configuration" in (tmp_path / "logs" / "baseline_seed0.log").read_text()
    assert not (tmp_path / "fusion").exists()  # nothing started on a baseline that failed


@pytest.mark.parametrize("visible, expected", [
    (None, ["0", "1", "0"]),
    ("4,5", ["4", "5", "4"]),  # a cluster's allocation
    ("MIG-1b2c3d4e-aaaa-bbbb-cccc-000000000001,MIG-1b2c3d4e-aaaa-bbbb-cccc-000000000002",
     ["MIG-1b2c3d4e-aaaa-bbbb-cccc-000000000001", "MIG-1b2c3d4e-aaaa-bbbb-cccc-000000000002",
      "MIG-1b2c3d4e-aaaa-bbbb-cccc-000000000001"]),
])
def test_workers_bind_to_the_gpus_the_parent_was_given(monkeypatch, visible, expected):
    import os

    import torch

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
    scheduler._init_worker(Queue(), torch.get_num_threads())
    assert os.environ["CUDA_VISIBLE_DEVICES"] == expected[1]


def test_without_a_gpu_workers_are_not_bound(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert scheduler.worker_devices(2) is None
