import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from fer_lib.data import landmarks, tensors
from fer_lib.data.heatmaps import render_heatmaps
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


@pytest.mark.parametrize("mix", ["upstream", "flip_or_noise"])
def test_a_share_of_a_batch_is_augmented_as_those_rows_of_the_whole_batch(mix):
    """A rank augments only its share of a global batch and gets exactly the rows the whole batch
    would have, leaving the generator where the whole batch leaves it: the next batches do not
    depend on the number of ranks either."""
    images = torch.randn(10, 3, 16, 16)
    generator = torch.Generator().manual_seed(3)
    whole = tensors.augment_arm(images, generator, mix)
    after = torch.rand(4, generator=generator)
    for part in (slice(0, 4), slice(4, 10), slice(3, 3)):
        generator = torch.Generator().manual_seed(3)
        share = tensors.augment_arm(images[part], generator, mix, part=part, batch_size=10)
        assert torch.equal(share, whole[part]), part
        assert torch.equal(torch.rand(4, generator=generator), after)
    assert not torch.equal(whole, images)  # the batch was augmented


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


def test_normalise_applies_each_channels_statistics_on_any_image_shape():
    # a 2x5 image (neither side 3): channel c of every pixel is (x / 255 - mean_c) / std_c, by hand
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    images = torch.arange(2 * 3 * 2 * 5, dtype=torch.uint8).reshape(2, 3, 2, 5) * 4
    normalised = tensors.normalise(images)
    for b in range(2):
        for c in range(3):
            expected = (images[b, c].double() / 255 - mean[c]) / std[c]
            torch.testing.assert_close(normalised[b, c].double(), expected, atol=1e-6, rtol=0)


def test_stratified_split_sizes_per_class():
    # per class: 1 sample -> training only; 2 -> one held out; 5 at 10% -> one (the floor); 40 at
    # 10% -> 4
    labels = np.repeat(np.arange(4), [1, 2, 5, 40])
    train, val = tensors.stratified_split(labels, 0.1, seed=0)
    assert np.bincount(labels[val], minlength=4).tolist() == [0, 1, 1, 4]
    assert np.bincount(labels[train], minlength=4).tolist() == [1, 1, 4, 36]
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(len(labels)))
    for fraction in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match=r"validation fraction must be in \(0, 1\)"):
            tensors.stratified_split(labels, fraction, seed=0)


def _split(soft: bool) -> tensors.SplitTensors:
    n = 4
    return tensors.SplitTensors(
        names=[f"img{i}" for i in range(n)],
        images=torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 2, 2).clone(),
        points=torch.arange(n * 5 * 2, dtype=torch.float32).view(n, 5, 2),
        labels=torch.tensor([3, 1, 0, 2]),
        landmark_set="manual5",
        classes=("a", "b", "c", "d"),
        soft=torch.eye(4)[[3, 1, 0, 2]] * 0.5 + 0.125 if soft else None,
    )


@pytest.mark.parametrize("soft", [False, True])
def test_a_subset_keeps_every_field_of_the_samples_it_names(soft):
    split = _split(soft)
    part = split.subset([2, 0])
    assert part.names == ["img2", "img0"] and len(part) == 2 and part.input_size == 2
    assert len(split.subset([])) == 0 and split.subset([]).labels.shape == (
        0,
    )  # an empty selection
    assert part.images[:, 0, 0, 0].tolist() == [2, 0]
    torch.testing.assert_close(part.points, split.points[[2, 0]], atol=0, rtol=0)
    assert part.labels.tolist() == [0, 3]
    assert (part.landmark_set, part.classes) == ("manual5", ("a", "b", "c", "d"))
    if soft:
        torch.testing.assert_close(part.soft, split.soft[[2, 0]], atol=0, rtol=0)
        # the loss's targets: the soft labels where the data set has them
        torch.testing.assert_close(part.targets(torch.tensor([1])), split.soft[[0]], atol=0, rtol=0)
    else:
        assert part.soft is None and part.targets(torch.tensor([1, 0])).tolist() == [3, 0]


def test_coordinates_are_scaled_to_plus_minus_one_and_mirrored_where_flipped():
    size = 10
    xy = [[0.0, 5.0], [9.0, 2.5], [4.0, 4.0], [1.0, 8.0], [7.0, 8.0]]  # eyes, nose, mouth corners
    points = torch.tensor([xy, xy])
    coords = tensors.coordinates_for(points, size, torch.tensor([False, True]), "manual5")
    # by hand: v * 2 / 10 - 1; flipped, the partners swap (eyes, mouth corners) and x -> 9 - x
    plain = [-1.0, 0.0, 0.8, -0.5, -0.2, -0.2, -0.8, 0.6, 0.4, 0.6]
    mirrored = [-1.0, -0.5, 0.8, 0.0, 0.0, -0.2, -0.6, 0.6, 0.6, 0.6]
    assert coords.shape == (2, 10)
    torch.testing.assert_close(coords[0], torch.tensor(plain), atol=1e-6, rtol=0)
    torch.testing.assert_close(coords[1], torch.tensor(mirrored), atol=1e-6, rtol=0)
    torch.testing.assert_close(
        tensors.coordinates_for(points, size, landmark_set="manual5")[1], coords[0], atol=0, rtol=0
    )
    # the default set is auto37: its permutation mirrors 37 points
    points37 = torch.rand(2, 37, 2, generator=torch.Generator().manual_seed(0)) * 9
    torch.testing.assert_close(
        tensors.coordinates_for(points37, size, torch.tensor([True, False])),
        tensors.coordinates_for(points37, size, torch.tensor([True, False]), "auto37"),
    )


def test_there_is_no_device_generator_on_the_cpu():
    assert tensors.device_generator(torch.Generator().manual_seed(0), "cpu") is None
    assert tensors.device_generator(torch.Generator().manual_seed(0), torch.device("cpu")) is None


def test_split_tensors_hold_the_decoded_pixels_and_every_field_and_reuse_the_cache(
    tiny_rafdb, tmp_path
):

    rafdb = load_rafdb(tiny_rafdb)
    classes = ("a", "b", "c", "d", "e", "f", "g")  # a converted copy's own class names
    rafdb = dataclasses.replace(rafdb, soft=np.full((len(rafdb), 7), 1 / 7), classes=classes)
    first = tensors.split_tensors(rafdb, 48, cache_dir=tmp_path / "cache", progress=False)
    for i in (0, 5, 13):
        # PIL's own decode, converted to RGB and resized bilinearly, is what the network sees
        with Image.open(rafdb.aligned_path(i)) as image:
            expected = np.asarray(image.convert("RGB").resize((48, 48), Image.BILINEAR))
        np.testing.assert_array_equal(first.images[i].permute(1, 2, 0).numpy(), expected)
    assert first.names == list(rafdb.names) and first.landmark_set == "auto37"
    assert first.classes == classes
    torch.testing.assert_close(first.soft, torch.full((14, 7), 1 / 7), atol=0, rtol=0)
    # the second call reads the cache alone: the JPEGs can be gone
    for i in range(len(rafdb)):
        rafdb.aligned_path(i).unlink()
    again = tensors.split_tensors(rafdb, 48, cache_dir=tmp_path / "cache", progress=False)
    assert torch.equal(first.images, again.images)


def test_a_greyscale_image_is_read_as_three_equal_channels(tmp_path):

    grey = np.arange(64, dtype=np.uint8).reshape(8, 8) * 3
    Image.fromarray(grey, mode="L").save(tmp_path / "grey.png")
    images = tensors.load_images([tmp_path / "grey.png"], 8, progress=False)
    assert images.shape == (1, 8, 8, 3) and images.dtype == np.uint8
    for channel in range(3):
        np.testing.assert_array_equal(images[0, ..., channel], grey)


def _boxes(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(erased, h, w) per image: the zeroed box's rows and columns (the images are normal draws:
    only it is 0)."""
    zeros = (out == 0).all(dim=1)  # (B, H, W)
    return zeros.flatten(1).any(1), zeros.any(2).sum(1), zeros.any(1).sum(1)


def _reference_boxes(height: int, width: int, n: int, seed: int = 0):
    """The documented RandomErasing draw in a plain loop (numpy): area U(0.02, 0.1) H W, log ratio
    U(log 0.3, log 3.3), h = round(sqrt(area r)) and w = round(sqrt(area / r)), each clamped to [1,
    side]."""
    rng = np.random.default_rng(seed)
    hs, ws = [], []
    for _ in range(n):
        area = rng.uniform(0.02, 0.1) * height * width
        ratio = np.exp(rng.uniform(np.log(0.3), np.log(3.3)))
        hs.append(min(max(round(np.sqrt(area * ratio)), 1), height))
        ws.append(min(max(round(np.sqrt(area / ratio)), 1), width))
    return np.array(hs), np.array(ws)


@pytest.mark.parametrize("height, width", [(12, 30), (4, 4)])
def test_random_erasing_draws_boxes_of_the_documented_scale_and_ratio(height, width):
    n = 6000
    images = torch.randn(n, 1, height, width)
    out = tensors.augment_arm(images, torch.Generator().manual_seed(5))
    assert out.shape == images.shape
    erased, h, w = _boxes(out)
    assert (
        abs(erased.float().mean().item() - 0.5) < 0.025
    )  # p = 0.5, every drawn box at least 1 x 1
    h, w = h[erased].numpy(), w[erased].numpy()
    ref_h, ref_w = _reference_boxes(height, width, 20000)
    assert abs(h.mean() - ref_h.mean()) < 4 * ref_h.std() / np.sqrt(len(h))
    assert abs(w.mean() - ref_w.mean()) < 4 * ref_w.std() / np.sqrt(len(w))
    for low, high in ((0, 0.6), (0.6, 1.6), (1.6, 2.5), (2.5, 99)):  # the aspect ratio's spread
        share = ((h / w >= low) & (h / w < high)).mean()
        expected = ((ref_h / ref_w >= low) & (ref_h / ref_w < high)).mean()
        assert abs(share - expected) < 0.03, (low, high, share, expected)
    assert (h == 1).mean() == pytest.approx((ref_h == 1).mean(), abs=0.03)
    # where the box sits: top uniform on 0..H-h (left on 0..W-w), so boxes reach every edge and
    # never run past it
    zeros = (out[erased] == 0).all(dim=1)
    top = zeros.any(2).float().argmax(1).numpy()
    left = zeros.any(1).float().argmax(1).numpy()
    for start, size, side in ((top, h, height), (left, w, width)):
        assert (start + size <= side).all()
        touching = (start + size == side).mean()
        expected = (1 / (side - (ref_h if side == height else ref_w) + 1)).mean()
        assert abs(touching - expected) < 0.03, (touching, expected)
        assert abs((start == 0).mean() - expected) < 0.03


def test_upstream_noise_is_gaussian_of_sd_one_tenth_on_unflipped_images():
    images = torch.randn(4000, 1, 16, 16)
    out = tensors.augment_arm(images, torch.Generator().manual_seed(6), "upstream")
    kept = ~_boxes(out)[0]
    same = (out == images).flatten(1).all(1)
    flipped = (out == images.flip(-1)).flatten(1).all(1)
    residual_sd = (out - images).flatten(1).std(1)
    noisy = ~same & ~flipped & kept
    # every unerased image is exactly one of: as it was, mirrored, or itself plus N(0, 0.1^2) noise
    # (not mirrored)
    assert abs(noisy[kept].float().mean().item() - 0.25) < 0.03
    sd = residual_sd[noisy]
    assert (sd > 0.08).all() and (sd < 0.12).all() and abs(sd.mean().item() - 0.1) < 0.003


def test_flip_points_where_mirrors_as_the_numpy_flip_does_for_every_landmark_set():

    rng = np.random.default_rng(7)
    flip = torch.tensor([True, False, True])
    for landmark_set, k in (("auto37", 37), ("manual5", 5), ("both", 42)):
        points = torch.tensor(rng.uniform(0, 63, (3, k, 2)), dtype=torch.float64)
        expected = points.clone()
        for i in (0, 2):
            expected[i] = torch.from_numpy(
                landmarks.flip_points(points[i].numpy(), 64, landmark_set)
            )
        got = tensors.flip_points_where(points, 64, flip, landmark_set)
        torch.testing.assert_close(got, expected, atol=1e-12, rtol=0)
        if landmark_set == "auto37":  # the default set
            torch.testing.assert_close(tensors.flip_points_where(points, 64, flip), expected)
        # the heatmaps: drawn from those points, with the keyword arguments passed on
        torch.testing.assert_close(
            tensors.heatmaps_for(points.float(), 64, flip, landmark_set, sigma=3.0),
            render_heatmaps(expected.float(), 64, sigma=3.0),
        )


def test_split_tensors_points_are_float32_and_labels_int64(tiny_rafdb):
    split = tensors.split_tensors(load_rafdb(tiny_rafdb), 32, progress=False)
    assert split.points.dtype == torch.float32 and split.labels.dtype == torch.int64


def test_an_empty_side_of_the_split_is_still_an_integer_index():
    # one sample per class: nothing can be held out; the empty validation part must still index
    # arrays
    labels = np.arange(3)
    train, val = tensors.stratified_split(labels, 0.5, seed=0)
    assert train.tolist() == [0, 1, 2] and val.size == 0
    assert train.dtype == np.int64 and val.dtype == np.int64
    empty_train, empty_val = tensors.stratified_split(np.array([], dtype=np.int64), 0.5, seed=0)
    assert empty_train.dtype == np.int64 and empty_val.dtype == np.int64
    assert labels[val].size == 0


def test_the_normalisation_constants_are_made_once_per_device():
    tensors.imagenet_statistics.cache_clear()
    images = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    first = tensors.normalise(images)
    assert torch.equal(tensors.normalise(images), first)
    info = tensors.imagenet_statistics.cache_info()
    assert (info.misses, info.hits) == (1, 1)
