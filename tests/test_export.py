"""Model folders (safetensors + config.json + model card) and ONNX export: a loaded model predicts
the same bytes as the run it came from, and a graph matches PyTorch at any batch size."""

from __future__ import annotations

import json
import struct
from dataclasses import asdict

import numpy as np
import pytest
import torch

from fer_lib import models, training
from fer_lib.apps import export
from fer_lib.data.rafdb import CLASSES_8
from fer_lib.io import save_json
from fer_lib.models import ARMNet, CheckpointError, FusionModel
from fer_lib.models.folders import CONFIG_FILE, WEIGHTS_FILE
from fer_lib.settings import FusionConfig

SIZE = 128


def small_fusion(seed: int = 0, **config) -> tuple[FusionModel, FusionConfig]:
    """A small trained-looking fusion model with both population means estimated."""
    torch.manual_seed(seed)
    baseline = ARMNet(SIZE, width=16).eval()
    fused = FusionConfig(width=8, **config)
    model = FusionModel.from_config(baseline, fused).eval()
    with torch.no_grad():  # weights that are not their initial values
        for parameter in model.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    model.landmark_cnn.to(memory_format=models.landmark_memory_format(fused, "cpu"))
    model.estimate_population_means([(torch.randn(6, 3, SIZE, SIZE), torch.rand(6, 1, SIZE, SIZE))])
    return model.set_affinity("fixed"), fused


def _inputs(count: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(count, 3, SIZE, SIZE, generator=generator)
    return images, torch.rand(count, 1, SIZE, SIZE, generator=generator)


def test_a_saved_fusion_model_loads_back_to_the_same_outputs_bit_for_bit(tmp_path):
    model, config = small_fusion()
    model.save_pretrained(tmp_path, config, provenance={"run": "test"})
    loaded = FusionModel.from_pretrained(tmp_path)
    images, heatmaps = _inputs(5)
    for ours, theirs in zip(model(images, heatmaps), loaded(images, heatmaps)):
        assert torch.equal(ours, theirs)
    assert loaded.arm.affinity == "fixed" and loaded.baseline.arm.affinity == "fixed"
    assert loaded.config == config
    record = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert record["architecture"] == "FusionModel" and record["provenance"] == {"run": "test"}
    assert record["baseline"] == {
        "classes": list(model.baseline.classes),
        "input_size": SIZE,
        "width": 16,
    }


def test_the_weights_file_is_safetensors_with_the_population_means_and_no_pickle(tmp_path):
    model, config = small_fusion()
    model.save_pretrained(tmp_path, config)
    raw = (tmp_path / WEIGHTS_FILE).read_bytes()
    header_size = struct.unpack("<Q", raw[:8])[0]  # the safetensors layout: a JSON header first
    header = json.loads(raw[8 : 8 + header_size])
    assert b"\x80\x04" not in raw[:2] and "arm.population_mean" in header
    assert "baseline.arm.population_mean" in header
    assert set(header) - {"__metadata__"} == set(model.state_dict()) | {
        "arm.population_mean",
        "baseline.arm.population_mean",
    }


def test_an_eight_class_baseline_keeps_its_class_order(tmp_path):
    torch.manual_seed(0)
    baseline = ARMNet(SIZE, num_classes=8, width=16).eval()
    baseline.classes = tuple(reversed(CLASSES_8))
    baseline.estimate_population_mean([torch.randn(4, 3, SIZE, SIZE)])
    baseline.save_pretrained(tmp_path)
    loaded = ARMNet.from_pretrained(tmp_path)
    assert loaded.classes == tuple(reversed(CLASSES_8))
    images = _inputs(3)[0]
    assert torch.equal(loaded(images), baseline.set_affinity("fixed")(images))


def test_each_broken_folder_is_one_error_naming_the_file(tmp_path):
    model, config = small_fusion()
    model.save_pretrained(tmp_path, config)
    with pytest.raises(CheckpointError, match="holds a model of class FusionModel, not ARMNet"):
        ARMNet.from_pretrained(tmp_path)
    (tmp_path / WEIGHTS_FILE).write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match=f"{WEIGHTS_FILE}: not a readable safetensors"):
        FusionModel.from_pretrained(tmp_path)
    (tmp_path / CONFIG_FILE).write_text("{")
    with pytest.raises(CheckpointError, match=f"{CONFIG_FILE}: not JSON"):
        FusionModel.from_pretrained(tmp_path)
    (tmp_path / CONFIG_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=f"{CONFIG_FILE}: no such file"):
        FusionModel.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a model folder"):
        FusionModel.from_pretrained(tmp_path / "missing")


@pytest.mark.parametrize("fusion", [True, False], ids=["fusion", "baseline"])
def test_an_onnx_graph_matches_pytorch_and_gives_each_image_the_same_output_at_any_batch(
    tmp_path, fusion
):
    model, _ = small_fusion()
    network = model if fusion else model.baseline
    path = export.export_onnx(network, tmp_path / "model.onnx")
    generator = torch.Generator().manual_seed(2)
    images = torch.randint(0, 256, (64, 3, SIZE, SIZE), generator=generator).float()
    heatmaps = torch.rand(64, 1, SIZE, SIZE, generator=generator) if fusion else None
    parity = export.onnx_parity(network, path, images, heatmaps)
    assert parity["images"] == 64
    assert parity["max |onnx - torch|"] <= export.PARITY_TOLERANCE
    assert parity["max |batch 1 - whole batch|"] <= 1e-6


def _fake_run(root, seeds=(0, 1)):
    """A finished smoke run's model files: per-seed baselines and proposed runs with their saved
    test predictions, as the training stage writes them."""
    save_json(
        {"profile": "smoke", "settings": {}, "data": "synthetic RAF-DB (140, 70)", "commit": "c"},
        root / "run_info.json",
    )
    labels = np.arange(14) % 7
    truth = {}
    for seed in seeds:
        model, config = small_fusion(seed)
        folder = root / ("baseline" if seed == seeds[0] else f"baseline_seed{seed}")
        models.save_arm_checkpoint(model.baseline, folder / "best.pt")
        run = root / "fusion" / f"both_w0.60_seed{seed}"
        training._save_fusion_best(model, {"config": asdict(config)}, run / "best.pt")
        state = torch.load(run / "best.pt", weights_only=True)
        state["population_means"] = {"arm.population_mean": model.arm.population_mean}
        torch.save(state, run / "best.pt")
        rng = np.random.default_rng(seed)
        probabilities = rng.dirichlet(np.ones(7), size=14)
        predictions = training.FusionPredictions(
            names=[f"test_{k}" for k in range(14)],
            labels=labels,
            fused=probabilities,
            landmark=probabilities[:, ::-1],
            rgb=probabilities,
            weight=np.ones(14),
            classes=model.baseline.classes,
        )
        training.save_fusion_predictions(predictions, run)
        truth[seed] = (model, float((probabilities.argmax(1) == labels).mean()))
    return truth


def test_an_exported_run_model_predicts_as_the_run_and_its_card_reads_the_saved_predictions(
    tmp_path,
):
    truth = _fake_run(tmp_path / "run")  # model files and predictions only: no data set
    run = export.load_run_model(tmp_path / "run", "proposed", seed=1)
    export.export_folder(run, tmp_path / "out")
    loaded = FusionModel.from_pretrained(tmp_path / "out")
    images, heatmaps = _inputs(4)
    for ours, theirs in zip(truth[1][0](images, heatmaps), loaded(images, heatmaps)):
        assert torch.equal(ours, theirs)
    card = (tmp_path / "out" / "README.md").read_text()
    table = export.seed_metrics(run)
    fused = table[table["head"] == "fused"].set_index("seed")["OA"]
    assert fused.to_dict() == pytest.approx({seed: oa for seed, (_, oa) in truth.items()})
    assert f"{truth[0][1]:.4f}" in card and "synthetic" in card and "seed 1" in card
    with pytest.raises(export.ExportError, match="--model takes proposed, baseline, or one of"):
        export.load_run_model(tmp_path / "run", "calibrated_w0.60")
    with pytest.raises(export.ExportError, match="not empty"):
        export.export_folder(run, tmp_path / "out")


def test_the_export_command_writes_a_folder_and_refuses_a_folder_that_is_no_run(tmp_path, capsys):
    from fer_lib.cli.main import main

    _fake_run(tmp_path / "run")
    assert (
        main(["export", str(tmp_path / "run"), "--model", "baseline", "--out", str(tmp_path / "b")])
        == 0
    )
    assert ARMNet.from_pretrained(tmp_path / "b").arm.affinity == "fixed"
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "c")]) == 1
    assert "not a finished run" in capsys.readouterr().err


def test_a_fusion_checkpoint_keeps_its_baseline_as_a_fingerprint_and_refuses_another(tmp_path):
    model, config = small_fusion()
    path = tmp_path / "best.pt"
    training._save_fusion_best(model, {"config": asdict(config)}, path)
    state = torch.load(path, weights_only=True)
    assert not any(key.startswith("baseline.") for key in state["model"])
    assert state["baseline"] == models.weights_fingerprint(model.baseline)
    torch.save(model.state_dict(), tmp_path / "whole.pt")
    assert path.stat().st_size < 0.5 * (tmp_path / "whole.pt").stat().st_size
    loaded, _ = training.load_fusion_checkpoint(path, model.baseline)
    images, heatmaps = _inputs(3)
    ours = model.set_affinity("batch")(images, heatmaps)  # no stored means: the batch's terms
    assert all(torch.equal(a, b) for a, b in zip(ours, loaded(images, heatmaps)))
    other = small_fusion(seed=1)[0].baseline
    with pytest.raises(CheckpointError, match="trained on another baseline"):
        training.load_fusion_checkpoint(path, other)
    older = (
        tmp_path / "older.pt"
    )  # a checkpoint that carries the baseline's weights loads as before
    torch.save({"model": model.state_dict(), "config": asdict(config)}, older)
    assert torch.equal(
        training.load_fusion_checkpoint(older, model.baseline)[0].fusion.weight, model.fusion.weight
    )
    with pytest.raises(CheckpointError, match=r"another baseline \(its weights differ in"):
        training.load_fusion_checkpoint(older, other)


def test_a_run_model_without_its_population_mean_is_estimated_or_refused_in_one_line(tmp_path):
    # a fusion run that stored no mean, in a run folder whose training images are gone
    _fake_run(tmp_path / "run")
    best = tmp_path / "run" / "fusion" / "both_w0.60_seed0" / "best.pt"
    state = torch.load(best, weights_only=True)
    del state["population_means"]
    torch.save(state, best)
    with pytest.raises(export.ExportError, match="training images, over which it is estimated"):
        export.load_run_model(tmp_path / "run", "proposed", seed=0)
