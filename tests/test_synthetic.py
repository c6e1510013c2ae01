"""The synthetic RAF-DB: layout, determinism, class proportions, geometry,
and the absence of shortcuts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from fer_lib.data import rafdb, synthetic
from fer_lib.data.landmarks import (
    ALIGN_TARGETS,
    align_points,
    alignment_anchors,
    apply_affine,
    similarity_from_points,
)
from fer_lib.run.profiles import get_profile

N_TRAIN, N_TEST = 50, 14  # 64 tasks: enough to take the multiprocessing path when workers > 1


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return synthetic.generate_demo_dataset(
        tmp_path_factory.mktemp("demo"), N_TRAIN, N_TEST, seed=0, progress=False, workers=1
    )


@pytest.fixture(scope="module")
def balanced_samples() -> list[synthetic.SyntheticSample]:
    """30 rendered samples per class (in memory): chance is 1/7, so any shortcut stands out."""
    labels = np.tile(np.arange(rafdb.NUM_CLASSES), 30)
    return [synthetic.render_sample(5, "train", i, int(label)) for i, label in enumerate(labels)]


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_layout_round_trip(demo):
    report = rafdb.check_rafdb(demo, progress=False)
    assert report.errors == [] and report.warnings == []
    assert sum(report.train) == N_TRAIN and sum(report.test) == N_TEST
    assert report.train == synthetic.class_counts_for(N_TRAIN, "train")
    assert min(report.train) >= 1 and min(report.test) >= 1
    data = rafdb.load_rafdb(demo, require_original=True)
    assert len(data) == N_TRAIN + N_TEST
    assert data.names[0] == "train_00001.jpg" and data.names[-1] == f"test_{N_TEST:04d}.jpg"
    # name order only
    assert data.names == sorted(data.names, key=lambda n: (n.startswith("test"), n))
    assert (
        np.isin(data.attributes[:, 0], [0, 1, 2]).all()
        and np.isin(data.attributes[:, 2], range(5)).all()
    )
    sizes = set()
    for i in range(0, len(data), 7):
        with (
            Image.open(data.aligned_path(i)) as aligned,
            Image.open(data.original_path(i)) as original,
        ):
            assert aligned.size == (100, 100) and aligned.mode == "RGB"
            sizes.add(original.size)
        box = (
            (demo / rafdb.BOUNDINGBOX_DIR / f"{Path(data.names[i]).stem}_boundingbox.txt")
            .read_text()
            .split()
        )
        assert len(box) == 4
    assert len(sizes) > 1  # original sizes vary
    assert "\t" in (demo / rafdb.AUTO_DIR / rafdb.auto_name(data.names[0])).read_text()


def test_marker_says_complete_only_for_matching_settings(demo, tmp_path):
    assert synthetic.demo_dataset_is_complete(demo, N_TRAIN, N_TEST, 0)
    assert not synthetic.demo_dataset_is_complete(demo, N_TRAIN + 1, N_TEST, 0)
    assert not synthetic.demo_dataset_is_complete(demo, N_TRAIN, N_TEST, 1)
    assert not synthetic.demo_dataset_is_complete(
        demo, N_TRAIN, N_TEST, 0, knobs=synthetic.SyntheticKnobs(label_noise=0.0)
    )
    assert not synthetic.demo_dataset_is_complete(tmp_path, N_TRAIN, N_TEST, 0)


def test_interrupted_run_is_not_complete_and_real_data_is_not_overwritten(tmp_path):
    root = synthetic.generate_demo_dataset(
        tmp_path / "a", 7, 7, seed=0, progress=False, knobs=synthetic.SyntheticKnobs()
    )
    (root / synthetic.PARTIAL_FILE).write_text("")  # as if a rerun had started
    assert not synthetic.demo_dataset_is_complete(root, 7, 7, 0)
    real = tmp_path / "real"
    (real / rafdb.LABEL_FILE.parent).mkdir(parents=True)
    (real / rafdb.LABEL_FILE).write_text("train_00001.jpg 1\n")
    with pytest.raises(FileExistsError):
        synthetic.generate_demo_dataset(real, 7, 7, progress=False)
    assert (real / rafdb.LABEL_FILE).read_text() == "train_00001.jpg 1\n"


def test_deterministic_whatever_the_worker_count(demo, tmp_path):
    again = synthetic.generate_demo_dataset(
        tmp_path / "again", N_TRAIN, N_TEST, seed=0, progress=False, workers=2
    )
    first, second = _files(demo), _files(again)
    assert first.keys() == second.keys()
    assert first == second
    other = synthetic.generate_demo_dataset(
        tmp_path / "other", N_TRAIN, N_TEST, seed=1, progress=False, workers=1
    )
    third = _files(other)
    for name in (
        str(rafdb.LABEL_FILE),
        "Image/original/train_00001.jpg",
        "Annotation/auto/test_0001_auto_attri.txt",
    ):
        assert first[name] != third[name], name


def test_class_counts_follow_table3():
    paper = rafdb.paper_results()["table3_class_counts"]
    assert synthetic.class_counts_for(12271, "train") == paper["train"]
    assert synthetic.class_counts_for(3068, "test") == paper["test"]
    for split in ("train", "test"):
        share = np.array(paper[split]) / sum(paper[split])
        for n in list(range(0, 60)) + [999, 3000, 12345]:
            counts = np.array(synthetic.class_counts_for(n, split))
            assert counts.sum() == n and (counts >= 0).all()
            if n >= 7:
                assert (counts >= 1).all()
            if n >= 100:
                assert np.abs(counts - n * share).max() < 1
    labels = synthetic.split_labels(300, "train", seed=3)
    assert np.bincount(labels, minlength=7).tolist() == synthetic.class_counts_for(300, "train")
    assert (np.diff(labels) != 0).sum() > 100  # shuffled, not grouped by class
    assert not np.array_equal(labels, synthetic.split_labels(300, "train", seed=4))


def test_aligned_image_puts_the_eyes_on_the_targets(demo):
    """RAF-DB's similarity lands the eyes near the paper's affine targets; detector eyes agree with
    the manual ones."""
    data = rafdb.load_rafdb(demo)
    anchors = alignment_anchors(data.manual5)
    similarity_error = np.array(
        [
            np.abs(apply_affine(similarity_from_points(a, ALIGN_TARGETS), a) - ALIGN_TARGETS).max()
            for a in anchors
        ]
    )
    assert np.median(similarity_error) < 2.0 and similarity_error.max() < 6.0
    # auto37 rows 15-26
    auto_eyes = align_points(data.auto37[:, 15:27].reshape(-1, 2, 6, 2).mean(2), data.manual5)
    eye_error = np.abs(auto_eyes - ALIGN_TARGETS[:2]).max(axis=(1, 2))
    assert np.median(eye_error) < 2.0 and eye_error.max() < 8.0


@pytest.mark.parametrize("scale", [1.0, 7.0])  # upsampling, and the box-reduce path for large faces
def test_warp_follows_the_pixel_centre_convention(scale):
    manual = (
        np.array([[50.0, 40.0], [70.0, 40.0], [60.0, 50.0], [52.0, 56.0], [68.0, 56.0]]) * scale
    )
    spot = np.array([60.3, 41.6]) * scale  # a smooth blob centred here (pixel centres at integers)
    ys, xs = np.indices((int(90 * scale), int(120 * scale)))
    blob = 255 * np.exp(-((xs - spot[0]) ** 2 + (ys - spot[1]) ** 2) / (2 * (1.5 * scale) ** 2))
    image = Image.fromarray(blob.astype(np.uint8)).convert("RGB")
    aligned = np.asarray(synthetic.warp_aligned(image, manual))[..., 0].astype(np.float64)
    expected = apply_affine(
        similarity_from_points(alignment_anchors(manual), ALIGN_TARGETS), spot[None]
    )[0]
    ys, xs = np.indices(aligned.shape)
    centroid = np.array([(xs * aligned).sum(), (ys * aligned).sum()]) / aligned.sum()
    # measured < 0.01; a half-pixel slip gives 0.18 or more
    assert np.abs(centroid - expected).max() < 0.05


def test_landmarks_lie_inside_the_original_image(demo):
    data = rafdb.load_rafdb(demo)
    for i in range(len(data)):
        with Image.open(data.original_path(i)) as image:
            width, height = image.size
        points = np.concatenate([data.manual5[i], data.auto37[i]])
        assert (
            (points >= -0.5).all()
            and (points[:, 0] <= width - 0.5).all()
            and (points[:, 1] <= height - 0.5).all()
        )
        assert (
            data.manual5[i, 0, 0] < data.manual5[i, 1, 0]
            and data.manual5[i, 3, 0] < data.manual5[i, 4, 0]
        )


def test_scene_does_not_depend_on_the_label():
    for index in range(5):
        samples = [
            synthetic.render_sample(0, "test", index, label) for label in range(rafdb.NUM_CLASSES)
        ]
        first = samples[0]
        iod = np.linalg.norm(first.manual5[1] - first.manual5[0])
        for other in samples[1:]:
            assert other.original.size == first.original.size
            assert other.attributes == first.attributes and other.jpeg_quality == first.jpeg_quality
            assert other.conditions == first.conditions
            # the nose stays put
            assert np.linalg.norm(other.manual5[2] - first.manual5[2]) < 0.1 * iod


def test_expressions_move_the_landmarks():
    knobs = synthetic.SyntheticKnobs(
        label_noise=0.0, weak_fraction=0.0, detector_jitter=0.0, idle_au_sd=0.0
    )

    def aligned(label: int, index: int) -> np.ndarray:
        sample = synthetic.render_sample(0, "train", index, label, knobs)
        return align_points(sample.auto37, sample.manual5)

    for index in range(3):
        neutral, happy, surprise = aligned(6, index), aligned(3, index), aligned(0, index)
        # mouth corners (auto37 rows 27 and 31) rise relative to the upper
        # lip centre (row 29) in a smile
        assert (happy[[27, 31], 1] - happy[29, 1]).mean() < (
            neutral[[27, 31], 1] - neutral[29, 1]
        ).mean() - 1
        assert surprise[5:11, 1].mean() < neutral[5:11, 1].mean() - 2  # brows up
        assert surprise[36, 1] - surprise[35, 1] > neutral[36, 1] - neutral[35, 1] + 3  # mouth open


def _global_statistics(sample: synthetic.SyntheticSample) -> np.ndarray:
    pixels = np.asarray(sample.original, dtype=np.float32)
    iod = np.linalg.norm(sample.manual5[1] - sample.manual5[0])
    centre = sample.manual5.mean(0)
    height, width = pixels.shape[:2]
    return np.concatenate(
        [
            pixels.mean((0, 1)),
            pixels.std((0, 1)),
            [
                iod,
                *centre,
                iod / min(width, height),
                centre[0] / width,
                centre[1] / height,
                width,
                height,
                sample.jpeg_quality,
            ],
        ]
    )


def _cv_accuracy(features: np.ndarray, labels: np.ndarray) -> float:
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    return float(cross_val_score(model, features, labels, cv=5).mean())


def test_no_global_image_shortcut(balanced_samples):
    """A linear classifier on image statistics, face size and position
    must stay near chance (1/7)."""
    labels = np.array([s.label for s in balanced_samples])
    features = np.stack([_global_statistics(s) for s in balanced_samples])
    assert _cv_accuracy(features, labels) < 1 / 7 + 0.1


def test_no_global_image_shortcut_with_the_demo_knobs():
    """The demo's own difficulty settings keep the check: its labels show only in the faces."""
    knobs = get_profile("demo").synthetic_knobs()
    labels = np.tile(np.arange(rafdb.NUM_CLASSES), 30)
    samples = [
        synthetic.render_sample(6, "train", i, int(label), knobs) for i, label in enumerate(labels)
    ]
    features = np.stack([_global_statistics(s) for s in samples])
    assert _cv_accuracy(features, labels) < 1 / 7 + 0.1


def test_landmarks_carry_the_expression(balanced_samples):
    """The same classifier on aligned landmarks is far above chance (the
    landmark branch has signal)."""
    labels = np.array([s.label for s in balanced_samples])
    features = np.stack([align_points(s.auto37, s.manual5).ravel() for s in balanced_samples])
    # chance 0.14; without expressions it measures ~0.15
    assert _cv_accuracy(features, labels) > 0.35
