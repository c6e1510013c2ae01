import numpy as np
import pytest
import torch

from fer_lib.data.heatmaps import render_heatmaps
from fer_lib.data.landmarks import flip_points


def test_brightest_pixel_sits_on_each_landmark():
    points = torch.tensor([[[30.0, 40.0]], [[200.0, 17.0]], [[0.0, 223.0]]])
    heat = render_heatmaps(points, 224)
    assert heat.shape == (3, 1, 224, 224)
    for b in range(3):
        y, x = np.unravel_index(int(heat[b, 0].argmax()), (224, 224))
        assert (x, y) == tuple(points[b, 0].int().tolist())
        assert heat[b, 0, y, x] == pytest.approx(1.0)


def test_values_are_in_unit_range_and_black_far_from_points():
    points = torch.tensor([[[50.0, 50.0], [52.0, 50.0], [150.0, 120.0]]])
    heat = render_heatmaps(points, 224, sigma=2.0)
    assert heat.min() >= 0 and heat.max() <= 1
    assert heat[0, 0, 200, 10] == 0
    assert heat[0, 0, 120, 150] == pytest.approx(1.0)


def test_non_square_size_and_subpixel_peak():
    heat = render_heatmaps(np.array([[[10.4, 5.0]]]), (20, 30))
    assert heat.shape == (1, 1, 20, 30)
    row = heat[0, 0, 5]
    assert row.argmax() == 10 and row[11] > row[9]


def test_out_of_canvas_and_nan_points_draw_nothing():
    points = torch.tensor([[[-5.0, 10.0], [10.0, 300.0], [float("nan"), 3.0], [230.0, 230.0]]])
    heat = render_heatmaps(points, 224)
    assert torch.isfinite(heat).all()
    assert heat.sum() == 0


def test_square_shape_has_hard_edges():
    heat = render_heatmaps(torch.tensor([[[20.0, 20.0]]]), 40, shape="square", sigma=2)
    assert heat[0, 0].sum() == 25  # a 5x5 white square
    assert heat[0, 0, 20, 22] == 1 and heat[0, 0, 20, 23] == 0


def test_flipped_landmarks_render_the_flipped_heatmap():
    rng = np.random.default_rng(0)
    points = rng.uniform(10, 90, (2, 37, 2))
    heat = render_heatmaps(points, 100)
    flipped = render_heatmaps(flip_points(points, 100, "auto37"), 100)
    torch.testing.assert_close(flipped, heat.flip(-1), atol=1e-5, rtol=0)


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="shape"):
        render_heatmaps(torch.zeros(1, 3, 2), shape="disk")
    with pytest.raises(ValueError, match="sigma"):
        render_heatmaps(torch.zeros(1, 3, 2), sigma=0)
    with pytest.raises(ValueError, match=r"\(B, K, 2\)"):
        render_heatmaps(torch.zeros(1, 3, 3))


@pytest.mark.parametrize("size, sigma", [(224, 1.5), (112, 0.75), (160, 1.5 * 160 / 224)])
def test_the_default_heatmap_is_the_gaussian_of_sigma_1_5_px_at_224_scaled_with_the_size(
    size, sigma
):
    # off the pixel grid, and exact in float32 (the renderer's dtype)
    centre = np.array([round(size * 0.3) + 0.25, round(size * 0.6) - 0.375])
    heat = render_heatmaps(centre[None, None], size)[0, 0].double().numpy()
    y, x = np.mgrid[0:size, 0:size]
    expected = np.exp(-((x - centre[0]) ** 2 + (y - centre[1]) ** 2) / (2 * sigma**2))
    reach = np.ceil(4 * sigma)  # the documented cut: 4 sigma around the nearest pixel
    inside = (np.abs(x - np.round(centre[0])) <= reach) & (np.abs(y - np.round(centre[1])) <= reach)
    np.testing.assert_allclose(heat, np.where(inside, expected, 0.0), atol=1e-6, rtol=0)
    explicit = render_heatmaps(centre[None, None], size, sigma=sigma)[0, 0].double().numpy()
    np.testing.assert_array_equal(heat, explicit)


def _gaussian_reference(points, height, width, sigma):
    """The documented heatmap by a slow loop: per kept point, the gaussian within 4 sigma of its
    nearest pixel, cut at the canvas; the maximum over points. A point is kept if its centre lies in
    [-0.5, size - 0.5]."""
    y, x = np.mgrid[0:height, 0:width]
    heat = np.zeros((height, width))
    reach = np.ceil(4 * sigma)
    for px, py in points:
        if not (-0.5 <= px <= width - 0.5 and -0.5 <= py <= height - 0.5):
            continue
        value = np.exp(-((x - px) ** 2 + (y - py) ** 2) / (2 * sigma**2))
        window = (np.abs(x - np.round(px)) <= reach) & (np.abs(y - np.round(py)) <= reach)
        heat = np.maximum(heat, np.where(window, value, 0.0))
    return heat


def test_points_on_and_past_the_canvas_edges_draw_as_documented():
    height, width = 40, 56
    points = [
        # left, right
        (-0.5, 4), (-0.6, 14), (width - 0.5, 24), (width - 0.4, 34), (width - 1, 14),
        # top, bottom
        (8, -0.5), (20, -0.6), (32, height - 0.5), (44, height - 0.4), (20, height - 1),
        # corners
        (0, 0), (width - 1, height - 1), (width - 1.2, 0.3), (0.3, height - 1.2),
    ]  # fmt: skip
    expected = _gaussian_reference(points, height, width, 1.0)
    for dtype, tolerance in ((torch.float32, 1e-6), (torch.float64, 1e-12)):
        heat = render_heatmaps(np.array([points]), (height, width), sigma=1.0, dtype=dtype)
        assert heat.dtype == dtype and heat.shape == (1, 1, height, width)
        np.testing.assert_allclose(heat[0, 0].numpy(), expected, atol=tolerance, rtol=0)
    assert expected[0].max() > 0 and expected[:, -1].max() > 0  # the edges are drawn on


def test_one_image_of_points_and_the_default_size():
    points = np.random.default_rng(5).uniform(20, 200, (37, 2))
    single = render_heatmaps(points)  # (K, 2): one image, at 224
    assert single.shape == (1, 1, 224, 224)
    torch.testing.assert_close(single, render_heatmaps(points[None], 224), rtol=0, atol=0)
