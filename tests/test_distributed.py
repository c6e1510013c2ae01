"""Data-parallel training (fer_lib.distributed): two CPU processes (gloo) compute what one process computes with
the same global batch, ARM's batch term and BatchNorm included."""

import os

import numpy as np
import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fer_lib import data, distributed, models, training
from fer_lib.rafdb import load_rafdb
from tests.conftest import write_tiny_rafdb

SIZE = 128


def _configs():
    baseline = training.BaselineConfig(
        input_size=SIZE,
        width=4,
        epochs=2,
        batch_size=8,
        val_fraction=0.3,
        augmentation="flip_or_noise",  # the 1e-5 tolerance below was set on this mix
        seed=1,
    )
    fusion = training.FusionConfig(
        width=2, epochs=2, batch_size=8, val_fraction=0.3, batch_norm=True, seed=2
    )
    return baseline, fusion


def _train(root: str, out: str) -> None:
    """Both trainings in this process (one rank of a group, or alone): baseline, then fusion on it."""
    torch.set_num_threads(1)
    # AdaBelief's first steps are about lr * sign(gradient) for every entry well above its eps (1e-16 in Table 4), so a
    # rounding-level difference in a near-zero entry would move a weight by the whole learning rate. Compared with
    # eps 1e-3, where small entries' steps follow their gradients, rounding stays at rounding scale.
    training.ADABELIEF = {**training.ADABELIEF, "eps": 1e-3}
    split = data.split_tensors(load_rafdb(root).split("train"), SIZE, progress=False)
    baseline_config, fusion_config = _configs()
    baseline = training.train_baseline(
        split,
        baseline_config,
        os.path.join(out, "baseline"),
        device=torch.device("cpu"),
        progress=False,
    )
    torch.manual_seed(0)
    frozen = models.ARMNet(
        SIZE, width=4
    ).eval()  # a fixed baseline, so the fusion runs compare alone
    cache = training.rgb_feature_cache(frozen, split, progress=False)
    training.train_fusion(
        frozen,
        split,
        cache,
        fusion_config,
        os.path.join(out, "fusion"),
        device=torch.device("cpu"),
        progress=False,
    )
    del baseline


def _rank(rank: int, world: int, store: str, root: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        _train(root, out)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("ddp")
    root = write_tiny_rafdb(
        base / "basic", n_per_class=4
    )  # 28 images, about 20 to fit: batches of 8 split 4 + 4, and a last, uneven one
    _train(str(root), str(base / "one"))
    mp.spawn(
        _rank, args=(2, str(base / "store"), str(root), str(base / "two")), nprocs=2, join=True
    )
    return base


@pytest.mark.parametrize("run", ["baseline", "fusion"])
def test_two_processes_train_the_weights_of_one_with_the_same_global_batch(runs, run):
    one = torch.load(runs / "one" / run / "last.pt", weights_only=True)["model"]
    two = torch.load(runs / "two" / run / "last.pt", weights_only=True)["model"]
    assert one.keys() == two.keys()
    for key, value in one.items():
        if value.is_floating_point():
            assert torch.allclose(value, two[key], atol=1e-5, rtol=0), (
                key,
                (value - two[key]).abs().max(),
            )
        else:
            assert torch.equal(value, two[key]), key
    moved = [
        key for key, value in one.items() if value.is_floating_point() and "running_var" in key
    ]
    assert moved  # BatchNorm statistics are compared too


@pytest.mark.parametrize(
    "run, columns",
    [
        ("baseline", ["train_loss", "train_accuracy", "val_accuracy"]),
        (
            "fusion",
            [
                "train_loss",
                "train_fused_accuracy",
                "train_landmark_accuracy",
                "val_loss",
                "val_fused_accuracy",
            ],
        ),
    ],
)
def test_two_processes_report_the_epoch_statistics_of_one(runs, run, columns):
    one = pd.read_csv(runs / "one" / run / "history.csv")
    two = pd.read_csv(runs / "two" / run / "history.csv")
    for column in columns:
        assert np.allclose(one[column], two[column], atol=1e-5, rtol=0), (
            column,
            list(one[column]),
            list(two[column]),
        )


def test_the_share_of_each_rank_covers_the_batch_once(monkeypatch):
    for world in (1, 2, 3, 4):
        for batch in range(world, 12):
            monkeypatch.setattr(distributed, "world_size", lambda: world)
            parts = []
            for me in range(world):
                monkeypatch.setattr(distributed, "rank", lambda: me)
                parts += list(range(batch))[distributed.share(batch)]
            assert parts == list(range(batch))
