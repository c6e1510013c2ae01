"""Training engine on a tiny hand-made data set at 128 px with narrow networks (seconds, CPU)."""

import numpy as np
import pandas as pd
import pytest
import torch

from fer_lib import data, models, training
from fer_lib.rafdb import load_rafdb
from tests.conftest import write_tiny_rafdb

SIZE = 128


@pytest.fixture(scope="module")
def tiny_split(tmp_path_factory):
    root = write_tiny_rafdb(tmp_path_factory.mktemp("rafdb") / "basic", n_per_class=3)
    return data.split_tensors(load_rafdb(root).split("train"), SIZE, progress=False)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def baseline_config(**overrides):
    return training.BaselineConfig(
        **{**dict(input_size=SIZE, width=4, epochs=2, batch_size=8, val_fraction=0.3), **overrides}
    )


def fusion_config(**overrides):
    return training.FusionConfig(
        **{**dict(width=2, epochs=2, batch_size=8, val_fraction=0.3), **overrides}
    )


def test_baseline_trains_saves_and_is_deterministic(tiny_split, tmp_path):
    model = training.train_baseline(tiny_split, baseline_config(), tmp_path / "a", progress=False)
    again = training.train_baseline(tiny_split, baseline_config(), tmp_path / "b", progress=False)
    assert not model.training and model.width == 4
    history = pd.read_csv(tmp_path / "a" / "history.csv")
    assert len(history) == 2 and (history["seconds"] > 0).all()
    assert history.drop(columns="seconds").equals(
        pd.read_csv(tmp_path / "b" / "history.csv").drop(columns="seconds")
    )  # wall time aside
    for key, value in model.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key
    split = (tmp_path / "a" / "split.json").read_text()
    assert "validation" in split


@pytest.mark.parametrize("ema", [None, 0.9])
def test_interrupted_baseline_resumes_to_the_same_result(tiny_split, tmp_path, monkeypatch, ema):
    full = training.train_baseline(
        tiny_split, baseline_config(epochs=3, ema=ema), tmp_path / "full", progress=False
    )
    calls = {"n": 0}
    original = training.baseline_logits

    def crash_in_epoch_two(*args, **kwargs):  # validation ends each epoch: fail at the second
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(training, "baseline_logits", crash_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        training.train_baseline(
            tiny_split, baseline_config(epochs=3, ema=ema), tmp_path / "cut", progress=False
        )
    monkeypatch.setattr(training, "baseline_logits", original)
    assert len(pd.read_csv(tmp_path / "cut" / "history.csv")) == 1
    resumed = training.train_baseline(
        tiny_split, baseline_config(epochs=3, ema=ema), tmp_path / "cut", progress=False
    )
    assert (
        pd.read_csv(tmp_path / "cut" / "history.csv")
        .drop(columns="seconds")
        .equals(pd.read_csv(tmp_path / "full" / "history.csv").drop(columns="seconds"))
    )
    for key, value in full.state_dict().items():
        assert torch.allclose(value.float(), resumed.state_dict()[key].float(), atol=1e-6), key


def test_the_moving_average_is_what_an_averaged_baseline_keeps(tiny_split, tmp_path):
    raw = training.train_baseline(
        tiny_split, baseline_config(epochs=1), tmp_path / "raw", progress=False
    )
    averaged = training.train_baseline(
        tiny_split, baseline_config(epochs=1, ema=0.5), tmp_path / "ema", progress=False
    )
    last = torch.load(tmp_path / "ema" / "last.pt", weights_only=True)
    raw_last = torch.load(tmp_path / "raw" / "last.pt", weights_only=True)
    assert torch.equal(
        last["model"]["fc.weight"], raw_last["model"]["fc.weight"]
    )  # the same training steps
    assert not torch.equal(last["average"]["module.fc.weight"], last["model"]["fc.weight"])
    kept = torch.load(tmp_path / "ema" / "best.pt", weights_only=True)[
        "model_state_dict"
    ]  # one epoch: it is the kept one
    assert torch.equal(kept["fc.weight"], last["average"]["module.fc.weight"])
    assert torch.equal(averaged.fc.weight, kept["fc.weight"]) and not torch.equal(
        averaged.fc.weight, raw.fc.weight
    )


def test_another_config_in_the_same_folder_is_refused(tiny_split, tmp_path):
    training.train_baseline(tiny_split, baseline_config(epochs=1), tmp_path, progress=False)
    with pytest.raises(ValueError, match="differs in: epochs"):
        training.train_baseline(tiny_split, baseline_config(epochs=2), tmp_path, progress=False)


def test_fusion_trains_from_cache_and_leaves_the_baseline_untouched(tiny_split, tmp_path):
    torch.manual_seed(0)
    baseline = models.ARMNet(SIZE, width=4).eval()
    before = {k: v.clone() for k, v in baseline.state_dict().items()}
    cache = training.rgb_feature_cache(
        baseline, tiny_split, cache_dir=tmp_path / "cache", progress=False
    )
    assert cache.shape == (2, len(tiny_split), 25)
    assert torch.equal(
        training.rgb_feature_cache(
            baseline, tiny_split, cache_dir=tmp_path / "cache", progress=False
        ),
        cache,
    )
    model = training.train_fusion(
        baseline, tiny_split, cache, fusion_config(), tmp_path / "fusion", progress=False
    )
    for key, value in model.baseline.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert all(not p.requires_grad for p in model.baseline.parameters())
    predictions = training.predict_fusion(model, tiny_split, cache, fusion_config())
    assert predictions.fused.shape == (len(tiny_split), 7)
    np.testing.assert_allclose(predictions.fused.sum(1), 1, atol=1e-5)
    paths = training.save_fusion_predictions(predictions, tmp_path / "fusion")
    labels, probabilities = training.read_prediction_frame(paths["fused"])
    np.testing.assert_array_equal(labels, tiny_split.labels.numpy())
    np.testing.assert_allclose(probabilities, predictions.fused, atol=1e-6)


def test_a_fusion_run_stores_its_population_means_only_when_asked(tiny_split, tmp_path):
    torch.manual_seed(0)
    baseline = models.ARMNet(SIZE, width=4).eval()
    cache = training.rgb_feature_cache(baseline, tiny_split, progress=False)
    for asked in (True, False):
        folder = tmp_path / str(asked)
        model = training.train_fusion(
            baseline,
            tiny_split,
            cache,
            fusion_config(),
            folder,
            progress=False,
            population_means=asked,
        )
        stored = torch.load(folder / "best.pt", weights_only=True).get("population_means")
        assert (stored is not None) == asked
        assert torch.isnan(model.arm.population_mean).any() != asked
        reloaded, _ = training.load_fusion_checkpoint(folder / "best.pt", baseline)
        torch.testing.assert_close(
            reloaded.arm.population_mean, model.arm.population_mean, rtol=0, atol=0, equal_nan=True
        )


def test_cached_features_equal_the_uncached_forward(tiny_split):
    torch.manual_seed(1)
    baseline = models.ARMNet(SIZE, width=4).eval()
    cache = training.rgb_feature_cache(baseline, tiny_split, flips=(False,), progress=False)
    model = models.FusionModel(baseline, width=2).eval()
    index = torch.arange(6)
    heat = data.heatmaps_for(tiny_split.points[index], SIZE)
    with torch.no_grad():
        cached = model.forward_cached(cache[0, index], heat).fused_logits
        direct = model(data.normalise(tiny_split.images[index]), heat).fused_logits
    assert (cached - direct).abs().max() < 1e-4


def test_fusion_runs_are_deterministic(tiny_split, tmp_path):
    torch.manual_seed(0)
    baseline = models.ARMNet(SIZE, width=4).eval()
    cache = training.rgb_feature_cache(baseline, tiny_split, progress=False)
    runs = [
        training.train_fusion(
            baseline, tiny_split, cache, fusion_config(seed=3), tmp_path / f"r{i}", progress=False
        )
        for i in range(2)
    ]
    histories = [pd.read_csv(tmp_path / f"r{i}" / "history.csv") for i in range(2)]
    assert histories[0].drop(columns="seconds").equals(histories[1].drop(columns="seconds"))
    a, b = (training.predict_fusion(m, tiny_split, cache, fusion_config()).fused for m in runs)
    np.testing.assert_array_equal(a, b)


def test_fused_model_starts_as_the_baseline(tiny_split):
    torch.manual_seed(2)
    baseline = models.ARMNet(SIZE, width=4).eval()
    model = models.FusionModel(baseline, width=2).eval()
    heat = data.heatmaps_for(tiny_split.points[:5], SIZE)
    with torch.no_grad():
        out = model(data.normalise(tiny_split.images[:5]), heat)
    torch.testing.assert_close(out.fused_logits, out.rgb_logits, atol=1e-5, rtol=0)
    random_init = models.FusionModel(baseline, width=2, init_from_baseline=False).eval()
    with torch.no_grad():
        assert not torch.allclose(
            random_init(data.normalise(tiny_split.images[:5]), heat).fused_logits,
            out.rgb_logits,
            atol=1e-3,
        )


@pytest.mark.parametrize("affinity", ["batch", "fixed"])
def test_batch_study_through_the_cache_equals_the_full_network(tiny_split, tmp_path, affinity):
    from fer_lib.experiment import Experiment

    torch.manual_seed(3)
    baseline = models.ARMNet(SIZE, width=4).eval()
    experiment = Experiment("smoke", tmp_path, tmp_path, progress=False)
    experiment.__dict__.update(train=tiny_split, test=tiny_split)  # no decoding, no files
    experiment._baselines[experiment.seeds[0]] = baseline  # no training
    order = np.random.default_rng(0).permutation(len(tiny_split))
    cached = experiment.baseline_probabilities(4, order, affinity)
    if affinity == "fixed":
        baseline.set_affinity("fixed")
    direct = np.empty_like(cached)
    direct[order] = (
        training.baseline_logits(baseline, tiny_split.images[torch.as_tensor(order)], 4)
        .softmax(1)
        .numpy()
    )
    baseline.set_affinity("batch")
    np.testing.assert_allclose(cached, direct, atol=1e-5)


def test_a_setting_added_later_counts_as_what_older_runs_used(tmp_path):
    import dataclasses
    import json

    import pytest

    from fer_lib import training

    older = {
        k: v
        for k, v in dataclasses.asdict(training.BaselineConfig()).items()
        if k != "augmentation"
    }
    (tmp_path / "config.json").write_text(json.dumps(older))
    # runs saved before the field existed flipped or noised every image; the default has moved since
    training._check_config(tmp_path, training.BaselineConfig(augmentation="flip_or_noise"))
    with pytest.raises(ValueError, match="differs in: augmentation"):
        training._check_config(tmp_path, training.BaselineConfig())
