"""Data-parallel training (fer_lib.runtime.distributed): two CPU processes (gloo) compute what one
process computes with the same global batch, ARM's batch term and BatchNorm included; the
evaluations during training are sharded, each image computed once."""

import dataclasses
import json
import os
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fer_lib import models, training
from fer_lib.data import tensors
from fer_lib.data.rafdb import load_rafdb
from fer_lib.runtime import distributed, precision
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
    """Both trainings in this process (one rank of a group, or alone):
    baseline, then fusion on it."""
    torch.set_num_threads(1)
    # AdaBelief's first steps are about lr * sign(gradient) for every entry well above its eps
    # (1e-16 in Table 4), so a rounding-level difference in a near-zero entry would move a weight by
    # the whole learning rate. Compared with eps 1e-3, where small entries' steps follow their
    # gradients, rounding stays at rounding scale.
    training.ADABELIEF = {**training.ADABELIEF, "eps": 1e-3}
    split = tensors.split_tensors(load_rafdb(root).split("train"), SIZE, progress=False)
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
    # 21 images to fit in batches of 20: a last batch of one image
    training.train_fusion(
        frozen,
        split,
        cache,
        dataclasses.replace(fusion_config, batch_size=20, epochs=1),
        os.path.join(out, "fusion_one_left"),
        device=torch.device("cpu"),
        progress=False,
        population_means=False,
    )
    del baseline


def _rank(rank: int, world: int, store: str, root: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        _train(root, out)
    finally:
        dist.destroy_process_group()


def _spawned(precision_mode: str, root, out) -> None:
    """One process, then two, training in ``precision_mode`` (set here whatever this CPU's default;
    the ranks inherit it)."""
    saved, adabelief = os.environ.get(precision.ENV), training.ADABELIEF
    os.environ[precision.ENV] = precision_mode
    try:
        # changes training.ADABELIEF: restored below
        _train(str(root), str(out / f"one_{precision_mode}"))
        mp.spawn(
            _rank,
            args=(
                2,
                str(out / f"store_{precision_mode}"),
                str(root),
                str(out / f"two_{precision_mode}"),
            ),
            nprocs=2,
            join=True,
        )
    finally:
        # later tests in this process train with the recipe's own eps
        training.ADABELIEF = adabelief
        os.environ.pop(precision.ENV, None)
        if saved is not None:
            os.environ[precision.ENV] = saved


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("ddp")
    # 28 images, about 20 to fit: batches of 8 split 4 + 4, and a last, uneven one
    root = write_tiny_rafdb(base / "basic", n_per_class=4)
    for precision_mode in ("fp32", "bf16"):
        _spawned(precision_mode, root, base)
    return base


def _weights(folder) -> dict[str, torch.Tensor]:
    return torch.load(folder / "last.pt", weights_only=True)["model"]


@pytest.mark.parametrize("run", ["baseline", "fusion"])
def test_two_processes_train_the_weights_of_one_with_the_same_global_batch(runs, run):
    one, two = _weights(runs / "one_fp32" / run), _weights(runs / "two_fp32" / run)
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


def _distance(a: dict, b: dict) -> float:
    return float(
        torch.cat([(a[k] - b[k]).flatten() for k, v in a.items() if v.is_floating_point()]).norm()
    )


@pytest.mark.parametrize("run", ["baseline", "fusion"])
def test_under_bf16_two_processes_stay_within_bf16s_own_rounding_of_one(runs, run):
    """Two epochs in bf16 amplify rounding (AdaBelief's early steps follow gradient signs), so two
    processes cannot match one to fp32's 1e-5. The tolerance is bf16's own: the two-process weights
    are no further from the one-process bf16 weights than those are from fp32 training (x1.5 for
    chance; measured 0.85-0.93 of it, and 2.3-7x with each rank's own BatchNorm statistics, the bug
    this guards against)."""
    one_bf16, two_bf16 = _weights(runs / "one_bf16" / run), _weights(runs / "two_bf16" / run)
    one_fp32 = _weights(runs / "one_fp32" / run)
    assert one_bf16.keys() == two_bf16.keys()
    for key, value in one_bf16.items():
        assert value.dtype == two_bf16[key].dtype == one_fp32[key].dtype, key  # buffers stay fp32
        if not value.is_floating_point():
            assert torch.equal(value, two_bf16[key]), key
    rounding = _distance(one_bf16, one_fp32)
    assert rounding > 0  # the bf16 runs did run in bf16
    assert _distance(two_bf16, one_bf16) <= 1.5 * rounding


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
    one = pd.read_csv(runs / "one_fp32" / run / "history.csv")
    two = pd.read_csv(runs / "two_fp32" / run / "history.csv")
    for column in columns:
        assert np.allclose(one[column], two[column], atol=1e-5, rtol=0), (
            column,
            list(one[column]),
            list(two[column]),
        )


def test_the_population_means_one_process_stores_are_stored_by_two(runs):
    """Each rank estimates the means from its block of the training images; the gathered means
    are those of one process."""
    for run in ("baseline", "fusion"):
        one = torch.load(runs / "one_fp32" / run / "best.pt", weights_only=True)
        two = torch.load(runs / "two_fp32" / run / "best.pt", weights_only=True)
        means = one["population_means"]
        assert means and means.keys() == two["population_means"].keys()
        for key, value in means.items():
            assert not torch.isnan(value).any(), key
            assert torch.allclose(value, two["population_means"][key], atol=1e-6, rtol=0), key


def test_a_last_batch_of_one_image_is_skipped_by_one_process_and_trained_by_two(runs):
    """Two ranks cannot split one image: it joins the batch before it, so no image is dropped;
    one process skips it (BatchNorm needs two)."""
    fit = len(
        json.loads((runs / "one_fp32" / "fusion_one_left" / "split.json").read_text())["train"]
    )
    assert fit % 20 == 1
    one = pd.read_csv(runs / "one_fp32" / "fusion_one_left" / "history.csv")
    two = pd.read_csv(runs / "two_fp32" / "fusion_one_left" / "history.csv")
    assert one["train_images"].tolist() == [fit - 1]
    assert two["train_images"].tolist() == [fit]


def test_two_processes_train_as_many_images_as_one(runs):
    for run in ("baseline", "fusion"):
        one = pd.read_csv(runs / "one_fp32" / run / "history.csv")
        two = pd.read_csv(runs / "two_fp32" / run / "history.csv")
        assert one["train_images"].tolist() == two["train_images"].tolist()
        assert (one["train_images"] > 0).all()


@pytest.mark.parametrize("world", [1, 2, 3, 5])
def test_an_epochs_batches_drop_no_image_under_data_parallel_training(monkeypatch, world):
    monkeypatch.setattr(distributed, "world_size", lambda: world)
    for count in range(0, 30):
        batches = distributed.epoch_batches(count, 8)
        covered = [i for batch in batches for i in range(count)[batch]]
        assert covered == list(range(len(covered)))  # in order, each once
        sizes = [batch.stop - batch.start for batch in batches]
        assert all(size >= max(2, world) for size in sizes), (count, sizes)
        if world == 1:
            # one process: only a last batch of one image is left out
            assert len(covered) == count - (count % 8 == 1)
        elif count >= 8:
            assert len(covered) == count
            # the batches of one process, but for a short last one joining the one before
            assert sizes[:-1] == [8] * (len(sizes) - 1) and sizes[-1] < 8 + world


def _evaluations(root: str) -> dict:
    """The sharded evaluations of training on the tiny training split (every rank, or one
    process), with the images each one computed counted."""
    torch.set_num_threads(1)
    split = tensors.split_tensors(load_rafdb(root).split("train"), SIZE, progress=False)
    torch.manual_seed(0)
    baseline = models.ARMNet(SIZE, width=4).eval()
    config = training.FusionConfig(width=2, weighting="calibrated", eval_batch_size=8)
    model = models.FusionModel.from_config(baseline, config).eval()
    counts = Counter()

    def counted(name, function):
        def call(*args):
            counts[name] += len(args[0])
            return function(*args)

        return call

    baseline.forward_per_image = counted("rgb maps", baseline.forward_per_image)
    baseline.register_forward_hook(lambda _, args, __: counts.update({"logits": len(args[0])}))
    model.forward_cached = counted("fusion outputs", model.forward_cached)
    model.landmark_per_image = counted("landmark maps", model.landmark_per_image)
    logits = training.baseline_logits(baseline, split.images, 8, sharded=True)
    cache = training.rgb_feature_cache(
        baseline, split, flips=(False,), batch_size=8, progress=False, sharded=True
    )
    temperature = training.calibrate_temperature(model, split, cache, config, sharded=True)
    fused = training.predict_fusion(model, split, cache, config, sharded=True).fused
    means_before = counts["landmark maps"]
    training.estimate_population_means(model, split, cache, config, batch_size=8, sharded=True)
    return {
        "logits": logits,
        "cache": cache,
        "temperature": temperature,
        "fused": torch.from_numpy(fused),
        "means": models.population_means(model),
        "counts": {**counts, "landmark maps": counts["landmark maps"] - means_before},
        "images": len(split),
    }


def _evaluation_rank(rank: int, world: int, store: str, root: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        torch.save(_evaluations(root), os.path.join(out, f"evaluations{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_validation_calibration_and_means_are_sharded_and_give_one_processs_numbers(tmp_path):
    """Each rank computes a block of the evaluation's batches (each image once over the ranks) and
    every rank ends with what one process computes."""
    root = write_tiny_rafdb(tmp_path / "basic", n_per_class=4)
    threads = torch.get_num_threads()
    try:
        one = _evaluations(str(root))
    finally:
        torch.set_num_threads(threads)
    mp.spawn(
        _evaluation_rank,
        args=(2, str(tmp_path / "store"), str(root), str(tmp_path)),
        nprocs=2,
        join=True,
    )
    ranks = [torch.load(tmp_path / f"evaluations{r}.pt", weights_only=False) for r in range(2)]
    assert set(one["counts"]) == {"rgb maps", "logits", "fusion outputs", "landmark maps"}
    for name, images in one["counts"].items():
        per_rank = [r["counts"].get(name, 0) for r in ranks]
        # one process: once per image (twice for the fusion outputs: calibration, then prediction)
        assert images == one["images"] * (2 if name == "fusion outputs" else 1), name
        assert sum(per_rank) == images and all(0 < n < images for n in per_rank), (name, per_rank)
    for r in ranks:
        assert r["temperature"] == one["temperature"] != 1.0
        for key in ("logits", "cache", "fused"):
            assert torch.equal(r[key], one[key]), key
        assert r["means"].keys() == one["means"].keys()
        for key, value in one["means"].items():
            assert torch.equal(r["means"][key], value), key


def test_the_share_of_each_rank_covers_the_batch_once(monkeypatch):
    for world in (1, 2, 3, 4):
        for batch in range(world, 12):
            monkeypatch.setattr(distributed, "world_size", lambda: world)  # noqa: B023 - used at once
            parts = []
            for me in range(world):
                monkeypatch.setattr(distributed, "rank", lambda: me)  # noqa: B023 - used at once
                parts += list(range(batch))[distributed.share(batch)]
            assert parts == list(range(batch))


def _batch_norm_rank(rank: int, world: int, store: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        conv, images = torch.nn.Conv2d(3, 4, 3), torch.randn(6, 3, 9, 9) * 3 + 1
        norm = distributed.global_batch_norm(
            torch.nn.Sequential(torch.nn.BatchNorm2d(4)), torch.device("cpu")
        )
        with torch.autocast("cpu", dtype=torch.bfloat16):
            output = norm(conv(images[distributed.share(len(images))]))
        output.float().sum().backward()
        torch.save(
            {"output": output.detach(), "weight_grad": norm[0].weight.grad, **norm[0].state_dict()},
            os.path.join(out, f"rank{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


def test_global_batch_norm_follows_autocast_as_torchs_batch_norm_does(tmp_path):
    """Under bf16 autocast (the AMX and CUDA path) the global-batch BatchNorm computes what
    torch's BatchNorm computes on the whole batch: output in bf16 (equal to one bf16
    rounding, 2^-8 relative), statistics and running buffers in fp32 (equal to fp32
    summation order), an exact count."""
    mp.spawn(
        _batch_norm_rank, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True
    )
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    torch.manual_seed(0)
    conv, images = torch.nn.Conv2d(3, 4, 3), torch.randn(6, 3, 9, 9) * 3 + 1
    norm = torch.nn.BatchNorm2d(4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = norm(conv(images))
    expected.float().sum().backward()
    output = torch.cat([r["output"] for r in ranks])
    assert output.dtype == expected.dtype == torch.bfloat16
    torch.testing.assert_close(output.float(), expected.float(), rtol=2**-8, atol=2**-8)
    for r in ranks:
        for key in ("running_mean", "running_var"):
            assert r[key].dtype == torch.float32
            torch.testing.assert_close(r[key], norm.state_dict()[key], rtol=1e-5, atol=1e-6)
        assert int(r["num_batches_tracked"]) == 1
        # DDP averages the ranks' gradients; each rank's loss is its half of the sum
    torch.testing.assert_close(
        ranks[0]["weight_grad"] + ranks[1]["weight_grad"], norm.weight.grad, rtol=2**-7, atol=2**-7
    )


def test_a_command_leaves_the_process_group_it_ran_in(tmp_path):
    import torch.distributed as dist

    from fer_lib.cli.main import main

    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        assert main(["plan", str(tmp_path)]) == 2  # any command, here one that refuses politely
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
