"""The what-if of one face and the landmark jitter study (tiny random networks on a hand-made RAF-DB
copy): an unedited face is the evaluation's answer, an edit touches one branch only, the study's
first level is the evaluation, its tables count right."""

import dataclasses

import numpy as np
import pytest
import torch

from fer_lib import models, training
from fer_lib.apps import whatif
from fer_lib.data import landmarks, tensors
from fer_lib.data.rafdb import load_rafdb
from tests.conftest import write_tiny_rafdb

SIZE = 128


def _fusion(split, cache, **config):
    torch.manual_seed(1)
    baseline = models.ARMNet(SIZE, width=4).eval()
    config = training.FusionConfig(width=2, eval_batch_size=4, **config)
    model = models.FusionModel.from_config(baseline, config).eval()
    # a random fusion layer: the baseline-copy init gives F_landmark no say in the fused output
    torch.nn.init.normal_(model.fusion.weight, std=0.5)
    # a head that reads its feature loudly: a random one barely moves with the points
    torch.nn.init.normal_(model.landmark_head.weight, std=5.0)
    cache = training.rgb_feature_cache(baseline, split, flips=(False,), progress=False)
    return model, cache, config


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = write_tiny_rafdb(tmp_path_factory.mktemp("rafdb") / "basic", n_per_class=2)
    split = tensors.split_tensors(load_rafdb(root).split("test"), SIZE, progress=False)
    model, cache, config = _fusion(split, None)
    return model, split, cache, config


def test_an_unedited_face_is_the_evaluations_answer_in_its_own_test_batch(tiny):
    model, split, cache, config = tiny
    evaluated = training.predict_fusion(model, split, cache, config)
    for index in (0, 5, len(split) - 1):  # the first, a middle and the last (short) test batch
        answer = whatif.FaceWhatIf(model, split, cache, config, index).answer()
        np.testing.assert_allclose(answer.fused, evaluated.fused[index], atol=1e-6)
        np.testing.assert_allclose(answer.landmark, evaluated.landmark[index], atol=1e-6)
        np.testing.assert_allclose(answer.rgb, evaluated.rgb[index], atol=1e-6)
        assert answer.factor == pytest.approx(evaluated.weight[index], abs=1e-6)
        assert answer.predicted() == split.classes[int(evaluated.fused[index].argmax())]


def test_moving_points_changes_the_landmark_head_and_nothing_of_the_rgb_head(tiny):
    model, split, cache, config = tiny
    face = whatif.FaceWhatIf(model, split, cache, config, 5)
    before = face.answer()
    # the face's own points, drawn again alone: the evaluation's answer up to the rounding of a
    # batch of one (bf16 on the AMX path)
    again = np.abs(face.answer(face.points.clone()).landmark - before.landmark).max()
    assert again < 1e-3
    moved = face.points.clone()
    moved[whatif.region_points(split.landmark_set, "mouth")] += torch.tensor([0.0, -12.0])
    after = face.answer(moved)
    assert np.abs(after.landmark - before.landmark).max() > 10 * max(again, 1e-5)
    assert not np.array_equal(after.heatmap, before.heatmap)
    assert np.array_equal(after.rgb, before.rgb)  # bit for bit: the RGB branch never ran
    assert np.abs(after.fused - before.fused).max() > 0
    assert after.confidence == pytest.approx(after.landmark.max())


def test_hiding_a_region_changes_the_rgb_head_and_nothing_of_the_landmark_head(tiny):
    model, split, cache, config = tiny
    face = whatif.FaceWhatIf(model, split, cache, config, 2)
    before = face.answer()
    # the face's own image through the frozen network alone: the cached features' answer
    np.testing.assert_allclose(face.answer(image=face.image).rgb, before.rgb, atol=1e-5)
    box = whatif.region_box(face.points, "eyes", split.landmark_set, SIZE)
    after = face.answer(image=whatif.hide(face.image, box))
    assert np.abs(after.rgb - before.rgb).max() > 1e-5
    assert np.array_equal(after.landmark, before.landmark)


def test_the_edited_face_is_explained_by_its_own_fused_class(tiny):
    model, split, cache, config = tiny
    face = whatif.FaceWhatIf(model, split, cache, config, 3)
    moved = face.points + 5.0
    rgb_cam, landmark_cam, explained = face.gradcam(moved)
    assert rgb_cam.shape == landmark_cam.shape == (SIZE, SIZE)
    assert face.classes[explained] == face.answer(moved).predicted()
    assert 0 <= rgb_cam.min() and rgb_cam.max() <= 1


def test_the_coordinate_branch_reads_moved_points_too(tiny):
    _, split, _, _ = tiny
    model, cache, config = _fusion(split, None, landmark_input="coords")
    face = whatif.FaceWhatIf(model, split, cache, config, 1)
    before, after = face.answer(), face.answer(face.points + 8.0)
    assert before.heatmap is None
    assert np.abs(after.landmark - before.landmark).max() > 1e-5
    assert np.array_equal(after.rgb, before.rgb)
    with pytest.raises(ValueError, match="reads coordinates"):
        face.gradcam()


def test_regions_are_the_landmark_sets_own_points():
    eyes = whatif.region_points("auto37", "eyes")
    assert landmarks.AUTO37_FROM_IBUG68[eyes].tolist() == list(range(36, 48))
    mouth = whatif.region_points("auto37", "mouth")
    assert set(landmarks.AUTO37_FROM_IBUG68[mouth]) <= set(range(48, 68)) and len(mouth) == 10
    assert whatif.region_points("manual5", "mouth").tolist() == [3, 4]
    assert whatif.region_points("both", "eyes").tolist() == [*eyes.tolist(), 37, 38]
    with pytest.raises(ValueError, match="region 'ears' is not one of"):
        whatif.region_points("auto37", "ears")
    points = torch.zeros(5, 2)
    with pytest.raises(ValueError, match="has no point of the brows"):
        whatif.region_box(points, "brows", "manual5", SIZE)


def test_a_region_box_holds_its_points_and_stays_on_the_canvas():
    points = torch.tensor([[10.0, 40.0], [30.0, 44.0], [1.0, 127.0], [60.0, 60.0], [90.0, 60.0]])
    top, left, bottom, right = whatif.region_box(points, "mouth", "manual5", SIZE, margin=0.1)
    # the mouth corners (60, 60) and (90, 60), 12.8 px around them
    assert (top, left, bottom, right) == (47, 47, 73, 103)
    top, left, bottom, right = whatif.region_box(points, "eyes", "manual5", SIZE, margin=0.2)
    assert top == 14 and left == 0 and bottom == 70 and right == 56


def test_hide_fills_the_box_as_training_erases_or_with_the_faces_mean():
    image = torch.arange(3 * 8 * 8, dtype=torch.int64).reshape(3, 8, 8).to(torch.uint8)
    hidden = whatif.hide(image, (2, 1, 5, 4))
    erased = torch.tensor([round(255 * m) for m in tensors.IMAGENET_MEAN], dtype=torch.uint8)
    assert torch.equal(hidden[:, 2:5, 1:4], erased[:, None, None].expand(3, 3, 3))
    # normalised, the filled pixels are (almost) training's erasing value 0
    assert tensors.normalise(hidden[None])[0, :, 3, 2].abs().max() < 0.5 / 255 / 0.224
    outside = torch.ones(8, 8, dtype=torch.bool)
    outside[2:5, 1:4] = False
    assert torch.equal(hidden[:, outside], image[:, outside])
    mean = whatif.hide(image, (0, 0, 1, 1), whatif.FILLS[1])
    assert mean[:, 0, 0].tolist() == image.float().mean(dim=(1, 2)).round().int().tolist()
    with pytest.raises(ValueError, match="fill 'noise' is not one of"):
        whatif.hide(image, (0, 0, 1, 1), "noise")


def test_class_means_and_moving_toward_them():
    split = tensors.SplitTensors(
        names=["a", "b", "c"],
        images=torch.zeros(3, 3, 4, 4, dtype=torch.uint8),
        points=torch.tensor([[[0.0, 0.0]], [[2.0, 4.0]], [[9.0, 9.0]]]),
        labels=torch.tensor([0, 0, 2]),
        landmark_set="manual5",
        classes=("x", "y", "z"),
    )
    means = whatif.class_mean_points(split)
    assert means[0].tolist() == [[1.0, 2.0]] and means[2].tolist() == [[9.0, 9.0]]
    assert torch.isnan(means[1]).all()
    start = torch.tensor([[3.0, 3.0]])
    assert torch.equal(whatif.toward(start, means[2], 0.0), start)
    assert torch.equal(whatif.toward(start, means[2], 1.0), means[2])
    assert whatif.toward(start, means[2], 0.5).tolist() == [[6.0, 6.0]]
    with pytest.raises(ValueError, match="no training image"):
        whatif.toward(start, means[1], 0.5)


def test_jitter_is_seeded_and_in_pixels_of_the_aligned_face():
    points = torch.zeros(4, 37, 2)
    noise = whatif.jitter_noise(points, 3)
    assert torch.equal(noise, whatif.jitter_noise(points, 3))
    assert not torch.equal(noise, whatif.jitter_noise(points, 4))
    moved = whatif.jittered(points, 2.0, 200, noise)  # 2 px of the 100 px face = 4 px at 200
    assert torch.allclose(moved, 4.0 * noise)
    assert torch.equal(whatif.jittered(points, 0.0, 200, noise), points)


def test_the_jitter_studys_first_level_is_the_evaluation(tiny):
    model, split, cache, config = tiny
    study = whatif.jitter_study(model, split, cache, config, sigmas=(0.0, 8.0), seed=0)
    evaluated = training.predict_fusion(model, split, cache, config)
    assert study["fused"][0].tolist() == evaluated.fused.argmax(1).tolist()
    assert study["landmark"][0].tolist() == evaluated.landmark.argmax(1).tolist()
    assert study["rgb"].tolist() == evaluated.rgb.argmax(1).tolist()
    assert study["sigmas"].tolist() == [0.0, 8.0] and int(study["seed"]) == 0


def test_each_jitter_level_is_the_test_set_evaluated_with_its_seeds_noise(tiny):
    _, split, _, _ = tiny
    # the coordinate branch: a random one answers to its points (a random heatmap CNN barely does)
    model, cache, config = _fusion(split, None, landmark_input="coords")
    sigmas = (0.0, 8.0, 30.0)
    study = whatif.jitter_study(model, split, cache, config, sigmas=sigmas, seed=5)
    noise = whatif.jitter_noise(split.points, 5)
    for level, sigma in enumerate(sigmas):
        moved = dataclasses.replace(split, points=whatif.jittered(split.points, sigma, SIZE, noise))
        evaluated = training.predict_fusion(model, moved, cache, config)
        assert study["landmark"][level].tolist() == evaluated.landmark.argmax(1).tolist()
        assert study["fused"][level].tolist() == evaluated.fused.argmax(1).tolist()
    assert not torch.equal(study["landmark"][2], study["landmark"][0])


def test_the_jitter_table_counts_right_answers_per_level_and_selection():
    study = {
        "sigmas": torch.tensor([0.0, 4.0]),
        "fused": torch.tensor([[0, 1, 2, 0], [0, 1, 0, 0]]),
        "landmark": torch.tensor([[0, 1, 1, 1], [2, 2, 2, 2]]),
        "rgb": torch.tensor([0, 0, 2, 3]),
        "labels": torch.tensor([0, 1, 2, 3]),
    }
    table = whatif.jitter_table({("m", 7): study})
    assert table["fused OA"].tolist() == [0.75, 0.5]
    assert table["landmark OA"].tolist() == [0.5, 0.25]
    assert table["RGB OA"].tolist() == [0.75, 0.75]
    assert table["seed"].tolist() == [7, 7] and table["images"].tolist() == [4, 4]
    chosen = whatif.jitter_table({("m", 7): study}, index=[2, 3])
    assert chosen["fused OA"].tolist() == [0.5, 0.0] and chosen["RGB OA"].tolist() == [1.0, 1.0]
    two = whatif.jitter_table({("m", 7): study, ("m", 8): {**study, "rgb": study["labels"]}})
    summary = whatif.jitter_summary(two)
    assert summary["RGB OA"].tolist() == [0.875, 0.875] and summary["seeds"].tolist() == [2, 2]
    assert summary["fused - RGB"].tolist() == [-0.125, -0.375]


def test_a_saved_study_is_read_back_until_its_model_changes(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"sigmas": torch.tensor([0.0])}

    path = tmp_path / "jitter.pt"
    whatif.saved_jitter_study(path, 11, compute)
    whatif.saved_jitter_study(path, 11, compute)
    assert len(calls) == 1
    assert int(whatif.saved_jitter_study(path, 12, compute)["stamp"]) == 12 and len(calls) == 2
