"""The CUDA path's choices, checked on the CPU: bf16 autocast (``FER_PRECISION=bf16``),
collectives on the process group's device, the feature cache's key, the population mean, and the
host reads of a training loop."""

import json
import sys

import numpy as np
import pytest
import torch
import torch.distributed as dist

from fer_lib import models, training
from fer_lib.data import tensors
from fer_lib.data.rafdb import load_rafdb
from fer_lib.evaluation import explain
from fer_lib.runtime import distributed, precision
from tests.conftest import write_tiny_rafdb

SIZE = 128


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    root = write_tiny_rafdb(tmp_path_factory.mktemp("rafdb") / "basic", n_per_class=2)
    return tensors.split_tensors(load_rafdb(root).split("train"), SIZE, progress=False)


@pytest.fixture
def bf16(monkeypatch):
    monkeypatch.setenv(precision.ENV, "bf16")


def _models():
    torch.manual_seed(0)
    baseline = models.ARMNet(SIZE, width=4).eval()
    return baseline, models.FusionModel(
        baseline, width=2, batch_norm=True, init_from_baseline=False
    ).eval()


def test_the_cpu_path_follows_amx_unless_forced_and_the_switch_runs_the_cuda_path(monkeypatch):
    """Which path a CPU takes is set here, not read off the machine the suite runs on."""
    cpu = torch.device("cpu")
    monkeypatch.delenv(precision.ENV, raising=False)
    monkeypatch.delenv("FER_CPU_BF16", raising=False)
    for amx, path in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda amx=amx: amx)
        assert precision.cpu_path() == path and precision.name(cpu) == path
    # a GPU with bf16 units (A100, H100) runs bf16; a V100 or T4 (emulated bf16) runs fp32
    for native, path in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(
            torch.cuda, "is_bf16_supported", lambda including_emulation=True, n=native: n
        )
        assert precision.name("cuda") == path
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    for forced, path in (("1", "bf16"), ("0", "fp32")):  # whatever the CPU has (AMX, above)
        monkeypatch.setenv("FER_CPU_BF16", forced)
        assert precision.cpu_path() == path and precision.name(cpu) == path
    monkeypatch.setenv(precision.ENV, "bf16")  # the CUDA path's precision on a CPU without AMX
    assert precision.name(cpu) == "bf16"
    with precision.autocast(cpu):
        assert (
            torch.nn.functional.linear(torch.ones(1, 2), torch.ones(3, 2)).dtype == torch.bfloat16
        )
        with precision.full(cpu):  # the frozen network's passes, inside an autocast region
            assert (
                torch.nn.functional.linear(torch.ones(1, 2), torch.ones(3, 2)).dtype
                == torch.float32
            )
    monkeypatch.setenv(precision.ENV, "fp32")
    monkeypatch.setenv("FER_CPU_BF16", "1")
    assert precision.name(cpu) == precision.name("cuda") == "fp32"
    monkeypatch.setenv(precision.ENV, "half")
    with pytest.raises(ValueError, match="FER_PRECISION"):
        precision.mode()


@pytest.mark.parametrize("forced", ["0", "1"])
def test_the_frozen_networks_predictions_do_not_depend_on_the_precision_path(
    split, monkeypatch, forced
):
    """Table 6's baseline is the checkpoint's own accuracy on every machine: its logits,
    its feature cache and the fusion model's RGB branch are the same bits on the bf16 path
    (AMX, CUDA) as on the fp32 path."""
    baseline, model = _models()
    images = tensors.normalise(split.images[:8])
    monkeypatch.delenv(precision.ENV, raising=False)
    monkeypatch.setenv("FER_CPU_BF16", "0")
    with torch.no_grad():
        reference = baseline(images)
    cache_fp32 = training.rgb_feature_cache(baseline, split, flips=(False,), progress=False)
    monkeypatch.setenv("FER_CPU_BF16", forced)
    assert torch.equal(training.baseline_logits(baseline, split.images[:8]), reference)
    cache = training.rgb_feature_cache(baseline, split, flips=(False,), progress=False)
    assert torch.equal(cache, cache_fp32)
    heatmaps = training.landmark_inputs(
        split, torch.arange(8), None, training.FusionConfig(width=2), "cpu"
    )
    with torch.no_grad(), precision.autocast("cpu"):
        direct = model(images, heatmaps)
    assert torch.equal(direct.rgb_logits, baseline.head_from_per_image(cache[0, :8]))


def test_under_autocast_the_heads_and_eq2_run_in_fp32_from_the_bf16_features(bf16, split):
    baseline, model = _models()
    heatmaps = training.landmark_inputs(
        split, torch.arange(8), None, training.FusionConfig(width=2), "cpu"
    )
    with torch.no_grad(), precision.autocast("cpu"):
        rgb = baseline.forward_per_image(tensors.normalise(split.images[:8]))
        landmark = model.landmark_per_image(heatmaps)
        inside = model.forward_per_image_maps(rgb, landmark)
        baseline_logits = baseline.head_from_per_image(rgb)
    assert rgb.dtype == landmark.dtype == torch.bfloat16  # the trunks ran in bf16
    with torch.no_grad():
        outside = model.forward_per_image_maps(rgb.float(), landmark.float())
    for got, expected in zip(inside, outside):
        assert got.dtype == torch.float32 and torch.equal(got, expected)
    # the baseline's own head and the fusion run's RGB head
    assert torch.equal(baseline_logits, inside.rgb_logits)


def test_grad_cam_reports_the_evaluated_probabilities_under_bf16(bf16, split):
    _, model = _models()
    cache = training.rgb_feature_cache(model.baseline, split, flips=(False,), progress=False)
    config = training.FusionConfig(width=2, eval_batch_size=4)
    evaluated = training.predict_fusion(model, split, cache, config)
    explained = explain.explain(model, split, cache, config, [2, 9, 13])
    assert np.allclose(
        explained.fused_probabilities, evaluated.fused[[2, 9, 13]], atol=1e-5, rtol=0
    )


class _Reduced(Exception):
    pass


def test_epoch_statistics_are_reduced_on_the_process_groups_gpu_under_nccl(monkeypatch):
    from torch._subclasses.fake_tensor import FakeTensorMode

    reduced = []

    def nccl_all_reduce(tensor, *args, **kwargs):
        if tensor.device.type != "cuda":  # what NCCL answers for a CPU tensor
            raise RuntimeError(f"No backend type associated with device type {tensor.device.type}")
        reduced.append(tensor.device)
        raise _Reduced  # a fake tensor holds no numbers to read back

    monkeypatch.setattr(distributed, "active", lambda: True)
    monkeypatch.setattr(dist, "get_backend", lambda *args: "nccl")
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    monkeypatch.setattr(dist, "all_reduce", nccl_all_reduce)
    assert distributed.collective_device() == torch.device("cuda", 1)
    with FakeTensorMode(), pytest.raises(_Reduced):  # fake tensors: a "cuda" tensor without a GPU
        distributed.all_sum(12, 7, 3.5)
    assert reduced == [torch.device("cuda", 1)]
    monkeypatch.setattr(dist, "get_backend", lambda *args: "gloo")
    assert distributed.collective_device() == torch.device("cpu")


def test_the_frozen_feature_cache_is_fp32_in_every_precision_and_another_devices_is_recomputed(
    split, tmp_path, monkeypatch, capsys
):
    baseline, _ = _models()
    monkeypatch.setenv(precision.ENV, "fp32")
    fp32 = training.rgb_feature_cache(
        baseline, split, flips=(False,), cache_dir=tmp_path, progress=True
    )
    capsys.readouterr()
    # the trained trunks' path changes; the frozen network's does not
    monkeypatch.setenv(precision.ENV, "bf16")
    reused = training.rgb_feature_cache(
        baseline, split, flips=(False,), cache_dir=tmp_path, progress=True
    )
    assert "reusing frozen RGB features" in capsys.readouterr().out
    assert torch.equal(reused, fp32)
    (saved,) = tmp_path.glob("rgb_cache_*.pt")
    assert saved.name.endswith("_cpu_fp32.pt")
    saved.rename(saved.with_name(saved.name.replace("_cpu_", "_cuda_")))  # made on a GPU
    recomputed = training.rgb_feature_cache(
        baseline, split, flips=(False,), cache_dir=tmp_path, progress=False
    )
    said = capsys.readouterr().out
    assert "recomputing frozen RGB features on cpu in fp32" in said
    assert "another device or precision" in said
    assert torch.equal(recomputed, fp32)
    assert sorted(p.name.split("_", 3)[-1] for p in tmp_path.glob("rgb_cache_*.pt")) == [
        "cpu_fp32.pt",
        "cuda_fp32.pt",
    ]


def test_the_population_mean_is_computed_as_the_feature_cache_computes_its_maps(
    bf16, split, tmp_path
):
    config = training.BaselineConfig(
        input_size=SIZE, width=4, epochs=1, batch_size=8, eval_batch_size=4, val_fraction=0.3
    )
    model = training.train_baseline(
        split, config, tmp_path, device=torch.device("cpu"), progress=False
    )
    names = json.loads((tmp_path / "split.json").read_text())["train"]
    fit = split.subset([split.names.index(name) for name in names])
    maps = training.rgb_feature_cache(
        model, fit, flips=(False,), batch_size=config.eval_batch_size, progress=False
    )[0]
    assert torch.allclose(
        model.arm.population_mean, maps.double().mean(0).float(), atol=1e-6, rtol=0
    )
    stored = torch.load(tmp_path / "best.pt", weights_only=True)["population_means"][
        "arm.population_mean"
    ]
    assert torch.equal(stored, model.arm.population_mean)


@pytest.fixture
def host_reads(monkeypatch):
    """Counts the reads of a tensor's value on the host (each a wait for the GPU there) made by
    fer_lib's own code."""
    reads = []
    for method in ("item", "tolist", "__int__", "__float__", "__bool__"):
        original = getattr(torch.Tensor, method)

        def counted(self, *args, _original=original, _method=method, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if "fer_lib" in caller:
                reads.append(
                    f"{_method} in {caller.rsplit('/', 1)[-1]}:{sys._getframe(1).f_lineno}"
                )
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, method, counted)
    return reads


@pytest.mark.parametrize("run", ["baseline", "fusion"])
def test_a_training_epoch_reads_the_device_a_fixed_number_of_times_whatever_its_steps(
    split, tmp_path, host_reads, run
):
    """Counts, losses, points, labels and flips stay on the device during an epoch:
    the reads do not grow with the number of steps (a read per step would make the GPU
    wait for the host every step)."""
    counts = []
    for batch_size in (4, 8):  # about 4 and 2 training steps per epoch
        host_reads.clear()
        folder = tmp_path / f"{run}_{batch_size}"
        if run == "baseline":
            training.train_baseline(
                split,
                training.BaselineConfig(
                    input_size=SIZE, width=4, epochs=1, batch_size=batch_size, val_fraction=0.3
                ),
                folder,
                device=torch.device("cpu"),
                progress=False,
            )
        else:
            baseline, _ = _models()
            cache = training.rgb_feature_cache(baseline, split, progress=False)
            training.train_fusion(
                baseline,
                split,
                cache,
                training.FusionConfig(width=2, epochs=1, batch_size=batch_size, val_fraction=0.3),
                folder,
                device=torch.device("cpu"),
                progress=False,
            )
        counts.append(list(host_reads))
    assert len(counts[0]) == len(counts[1]), counts


def test_the_landmark_population_mean_is_computed_as_the_evaluation_computes_its_maps(bf16, split):
    """Under bf16 autocast the landmark ARM's population mean (what a single photo is predicted
    with) is the mean of the landmark maps as the evaluation computes them, in bf16, not of an fp32
    pass the evaluation never makes."""
    baseline, model = _models()
    config = training.FusionConfig(width=2)
    cache = training.rgb_feature_cache(baseline, split, flips=(False,), progress=False)
    training.estimate_population_means(model, split, cache, config, batch_size=8)
    with torch.no_grad(), precision.autocast("cpu"):
        maps = torch.cat(
            [
                model.landmark_per_image(
                    training.landmark_inputs(split, index, None, config, "cpu")
                )
                for index in torch.arange(len(split)).split(8)
            ]
        )
    assert maps.dtype == torch.bfloat16
    expected = maps.double().mean(0).float()
    assert torch.allclose(model.arm.population_mean, expected, atol=1e-6, rtol=0)


def test_a_landmark_branch_run_needs_no_training_image_beyond_the_feature_cache(split, tmp_path):
    """A run reads the frozen network's cache, the points and the labels: given a split without
    pixels it trains and predicts as with them (no per-run copy of the training images)."""
    baseline, _ = _models()
    config = training.FusionConfig(width=2, epochs=1, batch_size=8, val_fraction=0.3)
    cache = training.rgb_feature_cache(baseline, split, flips=(False, True), progress=False)
    pixelless = split.subset(range(len(split)), images=False)
    assert pixelless.images.numel() == 0 and pixelless.input_size == split.input_size
    assert torch.equal(pixelless.points, split.points) and pixelless.names == split.names
    runs = {}
    for name, given in (("pixels", split), ("none", pixelless)):
        model = training.train_fusion(
            baseline, given, cache, config, tmp_path / name, device=torch.device("cpu"),
            progress=False, population_means=False,
        )  # fmt: skip
        runs[name] = training.predict_fusion(model, given, cache[:1], config).fused
    assert np.array_equal(runs["pixels"], runs["none"])


def test_every_evaluation_pass_chooses_cudnns_kernels_the_same_way(split, monkeypatch):
    """Training turns cuDNN's benchmark mode on; the test predictions, the population means and
    Grad-CAM's recomputed maps all run with it off and deterministic kernels, then restore it."""
    cudnn = torch.backends.cudnn
    monkeypatch.setattr(cudnn, "benchmark", True)
    monkeypatch.setattr(cudnn, "deterministic", False)
    baseline, model = _models()
    config = training.FusionConfig(width=2)
    cache = training.rgb_feature_cache(baseline, split, flips=(False,), progress=False)
    seen = []
    original = model.landmark_per_image

    def recorded(landmarks):
        seen.append((cudnn.benchmark, cudnn.deterministic))
        return original(landmarks)

    monkeypatch.setattr(model, "landmark_per_image", recorded)
    training.fusion_outputs(model, split, cache, config)
    training.estimate_population_means(model, split, cache, config, batch_size=8)
    explain.evaluated_maps(model, split, cache, config, np.arange(3))
    assert seen and set(seen) == {(False, True)}
    assert (cudnn.benchmark, cudnn.deterministic) == (True, False)
