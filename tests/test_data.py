import numpy as np
import pytest
import torch

from fer_lib.data import tensors
from fer_lib.data.rafdb import load_rafdb


def test_split_tensors_shapes_and_cache(tiny_rafdb, tmp_path):
    rafdb = load_rafdb(tiny_rafdb)
    first = tensors.split_tensors(rafdb, 32, cache_dir=tmp_path / "cache", progress=False)
    assert first.images.shape == (14, 3, 32, 32) and first.images.dtype == torch.uint8
    assert first.points.shape == (14, 37, 2) and first.labels.tolist() == rafdb.labels.tolist()
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1
    again = tensors.split_tensors(rafdb, 32, cache_dir=tmp_path / "cache", progress=False)
    assert torch.equal(first.images, again.images)
    both = tensors.split_tensors(rafdb, 32, landmark_set="both", progress=False)
    assert both.points.shape == (14, 42, 2)


def test_manual_eyes_align_to_the_scaled_targets(tiny_rafdb):
    split = tensors.split_tensors(
        load_rafdb(tiny_rafdb), 224, landmark_set="manual5", progress=False
    )
    np.testing.assert_allclose(
        split.points[:, 0].numpy(),
        np.broadcast_to([(25.5 * 2.24) - 0.5, 35.5 * 2.24 - 0.5], (14, 2)),
        atol=1e-4,
    )


def test_flipped_heatmap_is_the_mirror_of_the_heatmap():
    points = torch.tensor(np.random.default_rng(0).uniform(5, 58, (3, 37, 2)), dtype=torch.float32)
    flip = torch.tensor([True, False, True])
    heat = tensors.heatmaps_for(points, 64)
    flipped = tensors.heatmaps_for(points, 64, flip=flip)
    torch.testing.assert_close(flipped[0], heat[0].flip(-1), atol=1e-5, rtol=0)
    torch.testing.assert_close(flipped[1], heat[1])


def test_augment_arm_is_seeded_and_erases():
    images = torch.randn(32, 3, 40, 40)
    a = tensors.augment_arm(images, torch.Generator().manual_seed(1))
    b = tensors.augment_arm(images, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    zeros = (a == 0).all(dim=1).flatten(1).sum(1)  # erased pixels per image
    assert (zeros > 0).sum() >= 5  # about half the images get an erased box
    assert zeros.max() <= 0.1 * 40 * 40 + 40  # box area within scale 0.1 (plus rounding)


@pytest.mark.parametrize("mix, untouched", [("upstream", 0.5), ("flip_or_noise", 0.0)])
def test_augment_arm_mix(mix, untouched):
    """The ARM authors' mix leaves half the images as they are and flips or noises a quarter
    each; the demo's alters every image. Erasing is switched off here by comparing only
    images without a zeroed box."""
    images = torch.randn(4000, 1, 8, 8)
    out = tensors.augment_arm(images, torch.Generator().manual_seed(2), mix)
    erased = (out == 0).flatten(1).any(1)
    same = (out == images).flatten(1).all(1)[~erased]
    flipped = (out == images.flip(-1)).flatten(1).all(1)[~erased]
    assert abs(same.float().mean().item() - untouched) < 0.03
    assert abs(flipped.float().mean().item() - (0.25 if mix == "upstream" else 0.5)) < 0.03
    with pytest.raises(ValueError, match="upstream"):
        tensors.augment_arm(images, torch.Generator(), "mixup")


def test_stratified_split_holds_out_every_class():
    labels = np.repeat(np.arange(7), [50, 10, 20, 100, 40, 20, 60])
    train, val = tensors.stratified_split(labels, 0.1, seed=3)
    assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == len(labels)
    assert set(labels[val]) == set(range(7))
    assert abs(np.bincount(labels[val])[3] - 10) <= 1
    train2, val2 = tensors.stratified_split(labels, 0.1, seed=3)
    assert np.array_equal(val, val2)
    with pytest.raises(ValueError):
        tensors.stratified_split(labels, 1.5, seed=0)


def test_normalise_scales_to_unit_range_then_standardises_with_imagenet_statistics():
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)  # torchvision's ImageNet statistics
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    # RGB rows
    pixels = torch.tensor([[255, 0, 128], [0, 64, 255], [7, 200, 31]], dtype=torch.uint8)
    images = pixels.T.reshape(1, 3, 3, 1)  # one 3x1 image of those three pixels
    normalised = tensors.normalise(images)
    # by hand, the red of the white first pixel: (255 / 255 - 0.485) / 0.229
    assert float(normalised[0, 0, 0, 0]) == pytest.approx((1 - 0.485) / 0.229, abs=1e-6)
    expected = (images.double() / 255 - mean.double()) / std.double()
    torch.testing.assert_close(normalised.double(), expected, atol=1e-6, rtol=0)
    assert normalised.dtype == torch.float32
