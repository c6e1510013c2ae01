"""Grad-CAM++ on both branches (tiny random networks at 128 px) and the example
pickers (hand-made tables)."""

import numpy as np
import pytest
import torch

from fer_lib import models, training
from fer_lib.data import tensors
from fer_lib.data.rafdb import CLASSES, CLASSES_8, load_rafdb
from fer_lib.evaluation import explain
from tests.conftest import write_tiny_rafdb

SIZE = 128


def predictions(labels, fused, rgb, landmark, confidence):
    """FusionPredictions whose argmaxes are the given classes, the fused head
    with the given confidence."""
    n = len(labels)

    def probabilities(classes, top):
        p = np.full((n, 7), 0.0)
        p[np.arange(n), classes] = top
        rest = (1 - np.asarray(top)) / 6
        return p + (p == 0) * np.asarray(rest)[:, None]

    return training.FusionPredictions(
        names=[f"test_{i:04d}.jpg" for i in range(n)],
        labels=np.asarray(labels),
        fused=probabilities(fused, confidence),
        rgb=probabilities(rgb, [0.9] * n),
        landmark=probabilities(landmark, [0.9] * n),
        weight=np.ones(n),
    )


# index:           0  1  2  3  4  5  6  7
LABELS = np.array([0, 0, 0, 1, 1, 2, 3, 3])
FUSED = np.array([0, 0, 4, 1, 0, 5, 3, 3])
RGB = np.array([0, 1, 4, 1, 1, 2, 2, 3])
LANDMARK = np.array([1, 0, 0, 1, 1, 5, 3, 3])
CONFIDENCE = np.array([0.5, 0.8, 0.9, 0.6, 0.7, 0.95, 0.4, 0.4])


def test_per_class_picks_the_most_confident_right_and_wrong_images():
    p = predictions(LABELS, FUSED, RGB, LANDMARK, CONFIDENCE)
    right = explain.pick_per_class(p, correct=True)
    # class 0: images 0 (0.5) and 1 (0.8) are right -> 1; class 3: a tie (6, 7) -> the earlier one;
    # class 2: none right
    assert right["index"].tolist() == [1, 3, 6]
    assert right["group"].tolist() == [CLASSES[0], CLASSES[1], CLASSES[3]]
    wrong = explain.pick_per_class(p, correct=False)
    assert wrong["index"].tolist() == [2, 4, 5]
    assert wrong.loc[0, "label"] == CLASSES[0] and wrong.loc[0, "fused"] == CLASSES[4]
    assert explain.pick_per_class(p, correct=True, per_class=2)["index"].tolist() == [1, 0, 3, 6, 7]


def test_cases_pick_the_right_images_and_count_them():
    p = predictions(LABELS, FUSED, RGB, LANDMARK, CONFIDENCE)
    picked = explain.pick_cases(p, per_case=2)
    by_case = {case: group["index"].tolist() for case, group in picked.groupby("group", sort=False)}
    assert by_case == {
        "landmark right, RGB wrong, fused right": [
            1,
            6,
        ],  # RGB wrong at 1 and 6, landmark right, fused right
        "all three right": [3, 7],
        "fused wrong, landmark right": [2, 4],  # 2 (0.9) before 4 (0.7)
        "fused wrong, RGB right (fusion broke it)": [
            5,
            4,
        ],  # image 2 is out: its RGB prediction is wrong
    }
    counts = explain.case_counts(p).set_index("case")["images"]
    assert counts["RGB and landmark wrong, fused right"] == 0
    assert (
        counts["all three right"] == 2 and counts["fused wrong, RGB right (fusion broke it)"] == 2
    )


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = write_tiny_rafdb(tmp_path_factory.mktemp("rafdb") / "basic", n_per_class=2)
    split = tensors.split_tensors(load_rafdb(root).split("test"), SIZE, progress=False)
    torch.manual_seed(0)
    baseline = models.ARMNet(SIZE, width=4).eval()
    # a random fusion layer: the baseline-copy init would give F_landmark zero
    # weight, hence zero landmark CAMs
    model = models.FusionModel(baseline, width=2, batch_norm=True, init_from_baseline=False).eval()
    cache = training.rgb_feature_cache(baseline, split, flips=(False,), progress=False)
    config = training.FusionConfig(width=2, eval_batch_size=4)
    return model, split, cache, config


def test_cams_have_the_input_size_are_finite_and_non_negative(tiny):
    model, split, cache, config = tiny
    cams = explain.explain(model, split, cache, config, [0, 5, 9])
    for cam in (cams.rgb_cam, cams.landmark_cam):
        assert cam.shape == (3, SIZE, SIZE)
        assert np.isfinite(cam).all() and cam.min() >= 0 and cam.max() <= 1 + 1e-6
        assert (cam.reshape(3, -1).max(1) > 0).all()  # an explanation, not a blank map
    assert cams.images.shape == (3, SIZE, SIZE, 3) and cams.heatmaps.shape == (3, SIZE, SIZE)


def test_cams_move_with_the_target_class(tiny):
    model, split, cache, config = tiny
    index = np.arange(6)
    predicted = explain.explain(model, split, cache, config, index, target="predicted")
    true = explain.explain(model, split, cache, config, index, target="true")
    differs = predicted.target != true.target
    assert differs.any()
    for branch in ("rgb_cam", "landmark_cam"):
        moved = [
            not np.allclose(getattr(predicted, branch)[i], getattr(true, branch)[i], atol=1e-3)
            for i in np.flatnonzero(differs)
        ]
        assert all(moved), branch
        same = np.flatnonzero(~differs)
        assert np.allclose(getattr(predicted, branch)[same], getattr(true, branch)[same], atol=1e-5)


def test_explained_logits_are_the_evaluated_ones_and_each_cam_ignores_its_neighbours(tiny):
    model, split, cache, config = tiny
    # batch affinity, consecutive batches of 4
    evaluated = training.predict_fusion(model, split, cache, config)
    together = explain.explain(model, split, cache, config, [2, 9, 13])
    assert np.allclose(together.fused_probabilities, evaluated.fused[[2, 9, 13]], atol=1e-5)
    alone = explain.explain(model, split, cache, config, [9])
    assert np.allclose(alone.rgb_cam[0], together.rgb_cam[1], atol=1e-5)
    assert np.allclose(alone.landmark_cam[0], together.landmark_cam[1], atol=1e-5)
    assert all(p.grad is None for p in model.parameters())  # no gradient left behind


def test_fixed_affinity_needs_population_means_and_bad_indices_are_refused(tiny):
    model, split, cache, config = tiny
    with pytest.raises(RuntimeError, match="population mean"):
        explain.explain(model, split, cache, config, [0], affinity="fixed")
    with pytest.raises(IndexError, match=r"\[0, 14\)"):
        explain.explain(model, split, cache, config, [14])
    with pytest.raises(ValueError, match="target"):
        explain.explain(model, split, cache, config, [0], target="wrong")


def test_the_figure_has_four_rows_per_example(tiny):
    model, split, cache, config = tiny
    p = training.predict_fusion(model, split, cache, config)
    picked = explain.pick_per_class(p, correct=False)
    cams = explain.explain(model, split, cache, config, picked["index"])
    fig = explain.plot_explanations(cams, picked, "test")
    assert (
        len(fig.axes) == 4
        and fig.axes[0].images[0].get_array().shape[1] == len(picked) * (SIZE + 6) - 6
    )
    with pytest.raises(ValueError, match="different images"):
        explain.plot_explanations(cams, picked.iloc[::-1], "test")


def test_the_picks_follow_the_predictions_class_list_contempt_included():
    """A converted AffectNet's predictions carry 8 classes: Contempt (index 7) is picked and named
    like the others."""
    labels, fused = np.array([7, 7, 0]), np.array([7, 0, 0])
    eye = np.eye(8)[fused] * 0.9 + 0.1 / 8
    p = training.FusionPredictions(
        names=["a.jpg", "b.jpg", "c.jpg"],
        labels=labels,
        fused=eye,
        rgb=eye,
        landmark=eye,
        weight=np.ones(3),
        classes=CLASSES_8,
    )
    right = explain.pick_per_class(p, correct=True)
    assert right["group"].tolist() == ["Surprise", "Contempt"] and right["index"].tolist() == [2, 0]
    wrong = explain.pick_per_class(p, correct=False)
    assert wrong.loc[0, "label"] == "Contempt" and wrong.loc[0, "fused"] == "Surprise"
