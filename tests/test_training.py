"""Training engine on a tiny hand-made data set at 128 px with narrow networks (seconds, CPU)."""

import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch.nn import functional

from fer_lib import models, training
from fer_lib.data import tensors
from fer_lib.data.rafdb import load_rafdb
from fer_lib.run.experiment import Experiment
from tests.conftest import write_tiny_rafdb

SIZE = 128


@pytest.fixture(scope="module")
def tiny_split(tmp_path_factory):
    root = write_tiny_rafdb(tmp_path_factory.mktemp("rafdb") / "basic", n_per_class=3)
    return tensors.split_tensors(load_rafdb(root).split("train"), SIZE, progress=False)


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
    # wall time aside
    assert history.drop(columns="seconds").equals(
        pd.read_csv(tmp_path / "b" / "history.csv").drop(columns="seconds")
    )
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
    # the same training steps
    assert torch.equal(last["model"]["fc.weight"], raw_last["model"]["fc.weight"])
    assert not torch.equal(last["average"]["module.fc.weight"], last["model"]["fc.weight"])
    # one epoch: it is the kept one
    kept = torch.load(tmp_path / "ema" / "best.pt", weights_only=True)["model_state_dict"]
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
    heat = tensors.heatmaps_for(tiny_split.points[index], SIZE)
    with torch.no_grad():
        cached = model.forward_cached(cache[0, index], heat).fused_logits
        direct = model(tensors.normalise(tiny_split.images[index]), heat).fused_logits
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
    heat = tensors.heatmaps_for(tiny_split.points[:5], SIZE)
    with torch.no_grad():
        out = model(tensors.normalise(tiny_split.images[:5]), heat)
    torch.testing.assert_close(out.fused_logits, out.rgb_logits, atol=1e-5, rtol=0)
    random_init = models.FusionModel(baseline, width=2, init_from_baseline=False).eval()
    with torch.no_grad():
        assert not torch.allclose(
            random_init(tensors.normalise(tiny_split.images[:5]), heat).fused_logits,
            out.rgb_logits,
            atol=1e-3,
        )


@pytest.mark.parametrize("affinity", ["batch", "fixed"])
def test_batch_study_through_the_cache_equals_the_full_network(tiny_split, tmp_path, affinity):
    torch.manual_seed(3)
    baseline = models.ARMNet(SIZE, width=4).eval()
    experiment = Experiment("smoke", tmp_path, tmp_path, progress=False)
    experiment.__dict__.update(train=tiny_split, test=tiny_split)  # no decoding, no files
    experiment.baselines._models[experiment.seeds[0]] = baseline  # no training
    order = np.random.default_rng(0).permutation(len(tiny_split))
    cached = experiment.baselines.probabilities(4, order, affinity)
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


# --------------------------------------------------------------------------------------------------
# Which epoch is kept, and what it is judged by: every number of the report comes from best.pt


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the trained weights; population means are filled in
    after selection, so left out."""
    return {k: v.clone() for k, v in model.state_dict().items() if "population_mean" not in k}


def test_a_fusion_run_keeps_the_epoch_with_the_lowest_validation_loss(
    tiny_split, tmp_path, monkeypatch
):
    torch.manual_seed(0)
    baseline = models.ARMNet(SIZE, width=4).eval()
    cache = training.rgb_feature_cache(baseline, tiny_split, progress=False)
    scripted = iter([0.9, 0.4, 2.0])  # epoch 2 has the lowest loss, epoch 3 the highest
    monkeypatch.setattr(training, "validation_loss", lambda predictions: next(scripted))
    per_epoch, predict = [], training.predict_fusion

    def remember_weights(model, *args, **kwargs):  # called once per epoch, after its steps
        per_epoch.append(_weights(model))
        return predict(model, *args, **kwargs)

    monkeypatch.setattr(training, "predict_fusion", remember_weights)
    model = training.train_fusion(
        baseline, tiny_split, cache, fusion_config(epochs=3), tmp_path, progress=False
    )
    assert torch.load(tmp_path / "best.pt", weights_only=True)["epoch"] == 2
    assert not all(torch.equal(per_epoch[1][k], per_epoch[2][k]) for k in per_epoch[1])
    for key, value in per_epoch[1].items():
        assert torch.equal(model.state_dict()[key], value), key


def test_a_baseline_run_keeps_the_epoch_with_the_best_validation_accuracy(
    tiny_split, tmp_path, monkeypatch
):
    run_dir = tmp_path / "baseline"
    correct_fraction = iter([0.2, 0.8, 0.5])  # epoch 2 is the best, epoch 3 not
    per_epoch = []

    def scripted_logits(model, images, batch_size, sharded=False):
        per_epoch.append(_weights(model))
        validation = json.loads((run_dir / "split.json").read_text())["validation"]
        position = {name: i for i, name in enumerate(tiny_split.names)}
        labels = tiny_split.labels[[position[name] for name in validation]]
        assert len(labels) == len(images) >= 5
        predicted = (labels + 1) % 7  # wrong everywhere ...
        right = round(next(correct_fraction) * len(labels))
        predicted[:right] = labels[:right]  # ... but on the first `right` images
        return functional.one_hot(predicted, 7).float()

    monkeypatch.setattr(training, "baseline_logits", scripted_logits)
    model = training.train_baseline(tiny_split, baseline_config(epochs=3), run_dir, progress=False)
    assert torch.load(run_dir / "best.pt", weights_only=True)["epoch"] == 2
    assert not torch.equal(per_epoch[1]["fc.weight"], per_epoch[2]["fc.weight"])
    for key, value in per_epoch[1].items():
        assert torch.equal(model.state_dict()[key], value), key


def test_the_validation_loss_is_eq3_the_landmark_plus_the_fused_cross_entropy():
    labels = np.array([0, 2, 1])
    landmark = np.array([[0.5, 0.25, 0.25], [0.2, 0.2, 0.6], [0.1, 0.8, 0.1]])
    fused = np.array([[0.25, 0.5, 0.25], [0.1, 0.1, 0.8], [0.5, 0.25, 0.25]])
    predictions = training.FusionPredictions(
        ["a", "b", "c"], labels, fused, landmark, landmark, np.ones(3), ("x", "y", "z")
    )
    # by hand: the mean of -ln p(label) of each head, summed
    expected = (
        -(np.log(0.5) + np.log(0.6) + np.log(0.8)) / 3
        - (np.log(0.25) + np.log(0.8) + np.log(0.25)) / 3
    )
    assert training.validation_loss(predictions) == pytest.approx(expected, rel=1e-12)


def test_a_label_given_probability_zero_costs_a_finite_validation_loss():
    # a head can underflow to p = 0 on an image's label: it costs -ln(1e-12) = 27.6 nats, not an
    # infinite loss that no later epoch could beat (nor tie with)
    labels = np.array([0, 1])
    landmark = np.array([[0.0, 1.0], [0.5, 0.5]])
    fused = np.array([[0.5, 0.5], [0.5, 0.5]])
    predictions = training.FusionPredictions(
        ["a", "b"], labels, fused, landmark, fused, np.ones(2), ("x", "y")
    )
    expected = (-np.log(1e-12) - np.log(0.5)) / 2 - np.log(0.5)
    assert training.validation_loss(predictions) == pytest.approx(expected, rel=1e-12)


def test_cached_flipped_features_are_those_of_the_mirrored_images(tiny_split):
    torch.manual_seed(4)
    baseline = models.ARMNet(SIZE, width=4).eval()
    cache = training.rgb_feature_cache(baseline, tiny_split, progress=False)
    with torch.no_grad():
        mirrored = baseline.forward_per_image(tensors.normalise(tiny_split.images[:4].flip(-1)))
    torch.testing.assert_close(cache[1, :4], mirrored, atol=1e-5, rtol=0)
    assert not torch.allclose(cache[0, :4], cache[1, :4], atol=1e-3)


class _EnoughSteps(Exception):
    pass


def test_each_training_step_pairs_an_images_rgb_features_with_its_landmarks_in_the_same_flip_state(
    tiny_split, tmp_path, monkeypatch
):
    torch.manual_seed(0)
    baseline = models.ARMNet(SIZE, width=4).eval()
    n, cells = len(tiny_split), 25
    # a cache that says where each row came from: +(i + 1) / 1000 unflipped, -(i + 1) / 1000 flipped
    code = (torch.arange(n, dtype=torch.float32) + 1) / 1000
    cache = torch.stack([code, -code])[:, :, None].expand(2, n, cells).contiguous()
    asked, fed = [], []
    landmark_inputs, forward_cached = training.landmark_inputs, models.FusionModel.forward_cached

    def record_landmarks(split, index, flip, config, device):
        asked.append((split.names, index.clone(), None if flip is None else flip.clone()))
        return landmark_inputs(split, index, flip, config, device)

    def record_rgb(self, rgb, landmarks):
        fed.append(rgb.clone())
        if len(fed) == 3:  # three steps are enough
            raise _EnoughSteps
        return forward_cached(self, rgb, landmarks)

    monkeypatch.setattr(training, "landmark_inputs", record_landmarks)
    monkeypatch.setattr(models.FusionModel, "forward_cached", record_rgb)
    with pytest.raises(_EnoughSteps):
        training.train_fusion(
            baseline,
            tiny_split,
            cache,
            fusion_config(epochs=1, batch_size=6),
            tmp_path,
            progress=False,
        )
    flipped = 0
    for (names, index, flip), rgb in zip(asked, fed):
        row = torch.round(rgb[:, 0].abs() * 1000).long() - 1  # the cache row it was read from
        fit_names = [names[i] for i in index.tolist()]
        assert [tiny_split.names[i] for i in row.tolist()] == fit_names
        assert torch.equal(rgb[:, 0] < 0, flip)
        assert (rgb == rgb[:, :1]).all()
        flipped += int(flip.sum())
    assert len(fed) == 3 and 0 < flipped < 18  # both states were drawn


@pytest.mark.parametrize("schedule", ["exponential", "cosine"])
def test_the_learning_rate_follows_the_recipes_schedule(schedule):
    # by hand: the ARM recipe's lr x 0.9 per epoch; the demo's cosine lr (1 + cos(pi e / E)) / 2
    epochs, lr = 4, 0.01
    expected = {
        "exponential": [lr * 0.9**epoch for epoch in range(epochs + 1)],
        "cosine": [
            lr * (1 + math.cos(math.pi * epoch / epochs)) / 2 for epoch in range(epochs + 1)
        ],
    }[schedule]
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = training._lr_schedule(
        optimizer, training.FusionConfig(lr_schedule=schedule, epochs=epochs)
    )
    for want in expected:
        assert optimizer.param_groups[0]["lr"] == pytest.approx(want, abs=1e-12)
        optimizer.step()
        scheduler.step()


def test_a_tied_score_keeps_the_earlier_epoch(tmp_path):
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.9)
    saved = []
    history = [{"epoch": 1}]
    best = training._keep_epoch(
        tmp_path,
        (model, optimizer, scheduler, None),
        0,
        history,
        -1.0,
        0.5,
        lambda: saved.append(1),
    )
    assert best == 0.5 and saved == [1]
    history.append({"epoch": 2})  # the same score again: best.pt stays the first epoch's
    best = training._keep_epoch(
        tmp_path,
        (model, optimizer, scheduler, None),
        1,
        history,
        best,
        0.5,
        lambda: saved.append(2),
    )
    assert best == 0.5 and saved == [1]
    assert (tmp_path / "last.pt").exists() and len(pd.read_csv(tmp_path / "history.csv")) == 2


# --------------------------------------------------------------------------------------------------
# The landmark branch's input: the split's own points, at its input size, in the flip state asked


def _manual5_split(size: int = 40) -> tensors.SplitTensors:
    points = torch.tensor(  # left eye, right eye, nose, left and right mouth corner
        [
            [[12.0, 14.0], [27.0, 15.0], [20.0, 22.0], [14.0, 30.0], [26.0, 31.0]],
            [[10.0, 12.0], [29.0, 13.0], [19.0, 20.0], [13.0, 28.0], [28.0, 29.0]],
            [[11.0, 16.0], [25.0, 16.0], [17.0, 24.0], [12.0, 33.0], [24.0, 32.0]],
        ]
    )
    return tensors.SplitTensors(
        ["a", "b", "c"],
        torch.zeros(3, 3, size, size, dtype=torch.uint8),
        points,
        torch.tensor([0, 1, 2]),
        "manual5",
    )


def _mirrored_by_hand(points: torch.Tensor, size: int) -> torch.Tensor:
    # x -> (size - 1) - x, and the left/right partners swapped: the eyes (0, 1) and the mouth (3, 4)
    mirrored = points.clone()
    mirrored[:, 0] = (size - 1) - points[:, 0]
    return mirrored[[1, 0, 2, 4, 3]]


def test_the_coordinate_input_is_the_splits_points_scaled_to_its_input_size_and_mirrored_as_asked():
    split = _manual5_split(size=40)
    index, flip = torch.tensor([2, 0]), torch.tensor([True, False])
    config = training.FusionConfig(landmark_input="coords")
    got = training.landmark_inputs(split, index, flip, config, "cpu")
    expected = torch.stack(
        [_mirrored_by_hand(split.points[2], 40), split.points[0]]
    )  # by hand: [0, 40) -> [-1, 1), flattened x0, y0, x1, y1, ...
    torch.testing.assert_close(got, (expected * (2 / 40) - 1).reshape(2, 10), rtol=0, atol=1e-6)
    unflipped = training.landmark_inputs(split, index, None, config, "cpu")
    torch.testing.assert_close(
        unflipped, (split.points[[2, 0]] * (2 / 40) - 1).reshape(2, 10), rtol=0, atol=1e-6
    )


def test_the_heatmap_input_draws_the_splits_points_at_its_input_size_and_mirrored_where_asked():
    split = _manual5_split(size=40)
    index, flip = torch.tensor([2, 0]), torch.tensor([True, False])
    config = training.FusionConfig(landmark_input="heatmaps", heatmap_sigma=1.0)
    got = training.landmark_inputs(split, index, flip, config, "cpu")
    assert got.shape == (2, 1, 40, 40)
    for image, points in zip(got, [_mirrored_by_hand(split.points[2], 40), split.points[0]]):
        # by hand: each landmark's pixel is a peak of 1, its four neighbours exp(-1/2) at sigma 1,
        # and the map is 0 beyond the 4-sigma square around every landmark (a corner: 4 sqrt 2)
        for x, y in points.round().long().tolist():
            assert image[0, y, x] == pytest.approx(1.0, abs=1e-6)
            for dx, dy in [(1, 0), (-1, 0), (0, 1), (0, -1)]:
                assert image[0, y + dy, x + dx] == pytest.approx(math.exp(-0.5), abs=1e-3)
        ys, xs = torch.meshgrid(torch.arange(40.0), torch.arange(40.0), indexing="ij")
        distance = torch.stack(
            [((xs - x) ** 2 + (ys - y) ** 2).sqrt() for x, y in points.tolist()]
        ).amin(0)
        assert (image[0][distance > 4 * math.sqrt(2) + 0.01] == 0).all()


# --------------------------------------------------------------------------------------------------
# The frozen RGB features: one row per flip state, in fp32, reused only for the same inputs


def _direct_maps(baseline, images):
    with torch.no_grad():
        return baseline.eval().forward_per_image(tensors.normalise(images)).float()


def test_the_feature_cache_holds_each_flip_states_maps_of_every_image_in_fp32(tiny_split):
    torch.manual_seed(5)
    baseline = models.ARMNet(SIZE, width=4).train()  # the cache must put it in eval mode
    five = tiny_split.subset(np.arange(5))
    # three batches of 2, 2 and 1; under a bf16 autocast region the features stay fp32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cache = training.rgb_feature_cache(
            baseline, five, flips=(True, False), batch_size=2, progress=False
        )
    assert cache.shape == (2, 5, 25) and cache.dtype == torch.float32
    assert not cache.requires_grad
    reference = models.ARMNet(SIZE, width=4)
    reference.load_state_dict(baseline.state_dict())
    torch.testing.assert_close(
        cache[0], _direct_maps(reference, five.images.flip(-1)), rtol=0, atol=1e-5
    )
    torch.testing.assert_close(cache[1], _direct_maps(reference, five.images), rtol=0, atol=1e-5)
    assert not torch.allclose(cache[0], cache[1], atol=1e-3)


def test_the_feature_cache_file_is_reused_only_for_the_same_weights_images_and_flips(
    tiny_split, tmp_path, capsys
):
    torch.manual_seed(6)
    baseline = models.ARMNet(SIZE, width=4).eval()
    five, four = tiny_split.subset(np.arange(5)), tiny_split.subset(np.arange(1, 5))
    first = training.rgb_feature_cache(baseline, five, cache_dir=tmp_path, progress=False)
    (path,) = tmp_path.glob("*.pt")
    assert path.name.startswith("rgb_cache_") and path.name.endswith("_cpu_fp32.pt")
    torch.testing.assert_close(torch.load(path, weights_only=True), first, rtol=0, atol=0)
    # the same inputs: read back from the file (a marked file proves it), and said so
    torch.save(torch.full_like(first, 7.0), path)
    again = training.rgb_feature_cache(baseline, five, cache_dir=tmp_path, progress=True)
    assert (again == 7.0).all()
    assert "reusing frozen RGB features from" in capsys.readouterr().out
    # other flips, other images, other weights: each its own file
    training.rgb_feature_cache(baseline, five, flips=(False,), cache_dir=tmp_path, progress=False)
    training.rgb_feature_cache(baseline, four, cache_dir=tmp_path, progress=False)
    other = models.ARMNet(SIZE, width=4).eval()
    recomputed = training.rgb_feature_cache(other, five, cache_dir=tmp_path, progress=False)
    assert len(list(tmp_path.glob("rgb_cache_*_cpu_fp32.pt"))) == 4
    torch.testing.assert_close(recomputed[0], _direct_maps(other, five.images), rtol=0, atol=1e-5)
    # the same inputs cached on other devices: recomputed on this one, and the files named
    cuda, bf16 = (
        path.with_name(path.name.replace("_cpu_fp32", other))
        for other in ("_cuda_fp32", "_cpu_bf16")
    )
    path.rename(cuda)
    bf16.write_bytes(cuda.read_bytes())
    capsys.readouterr()
    fresh = training.rgb_feature_cache(baseline, five, cache_dir=tmp_path, progress=False)
    torch.testing.assert_close(fresh, first, rtol=0, atol=0)
    assert capsys.readouterr().out == (
        f"recomputing frozen RGB features on cpu in fp32: {bf16.name}, {cuda.name} "
        "holds them for another device or precision\n"
    )


def test_the_feature_cache_progress_bars_name_the_flip_state_and_are_cleared(tiny_split, capsys):
    torch.manual_seed(7)
    baseline = models.ARMNet(SIZE, width=4).eval()
    two = tiny_split.subset(np.arange(2))
    training.rgb_feature_cache(baseline, two, progress=False)
    assert capsys.readouterr().err == ""
    training.rgb_feature_cache(baseline, two, progress=True)
    shown = capsys.readouterr().err
    assert "RGB feature cache: " in shown and "RGB feature cache (flipped): " in shown
    assert "\n" not in shown  # each bar is cleared when its flip state is done (leave=False)
