"""Landmark heatmaps: the landmark branch's input (paper, section 4.4).

A heatmap is a grayscale image with the landmarks drawn as white points on black. The paper does not
state the point shape; the default here is a small isotropic gaussian, sigma = 1.5 px at 224x224
(scaled with the size), peak 1.0. ``shape="square"`` draws hard-edged square dots instead.

Both shapes are separable, so a batch renders as one batched matrix product per image,
``H = clamp(Gy^T @ Gx, max=1)`` with ``Gy`` (K, H) and ``Gx`` (K, W): no per-point Python loop, and it
runs wherever the tensors live (CPU or GPU).

Points that fall outside the canvas (centre outside [-0.5, size - 0.5]) or are NaN are dropped (they
draw nothing); a gaussian whose centre is inside but near the border is cut at the border.
"""

from __future__ import annotations

import numpy as np
import torch

HEATMAP_SHAPES = ("gaussian", "square")
DEFAULT_SIGMA_AT_224 = 1.5


def default_sigma(size: int) -> float:
    return DEFAULT_SIGMA_AT_224 * size / 224


def _profiles(coords: torch.Tensor, valid: torch.Tensor, size: int, shape: str, radius: float) -> torch.Tensor:
    """(B, K, size) 1-D profiles along one axis for coordinates (B, K)."""
    grid = torch.arange(size, dtype=coords.dtype, device=coords.device)
    distance = grid.view(1, 1, -1) - coords.unsqueeze(-1)
    if shape == "gaussian":
        exponent = -0.5 * (distance / radius) ** 2
        # cut at 5 sigma: exp of large negative numbers yields denormals, which are ~10x slower on CPUs
        profile = torch.where(exponent > -12.5, exponent.exp(), 0.0)
    else:
        profile = (distance.abs() <= radius).to(coords.dtype)
    return profile * valid.unsqueeze(-1)


def render_heatmaps(
    points: torch.Tensor | np.ndarray,
    size: int | tuple[int, int] = 224,
    *,
    shape: str = "gaussian",
    sigma: float | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Render landmark points (B, K, 2) in pixel coordinates as heatmaps (B, 1, H, W) in [0, 1].

    Args:
        points: (x, y) per landmark, in the heatmap's own pixel coordinates (pixel centres at integers).
        size: output size, an int for square maps or (height, width).
        shape: "gaussian" (default) or "square".
        sigma: gaussian sigma, or half-width of a square dot, in pixels; default 1.5 px at 224, scaled.
        device: where to render; default: where ``points`` is (CPU for numpy input).
    """
    if shape not in HEATMAP_SHAPES:
        raise ValueError(f"heatmap shape {shape!r} is not one of {HEATMAP_SHAPES}")
    height, width = (size, size) if isinstance(size, int) else size
    if sigma is None:
        sigma = default_sigma(min(height, width))
    if sigma <= 0:
        raise ValueError(f"heatmap sigma must be positive, got {sigma}")
    points = torch.as_tensor(points, dtype=dtype, device=device)
    if points.ndim == 2:
        points = points.unsqueeze(0)
    if points.ndim != 3 or points.shape[-1] != 2:
        raise ValueError(f"points must be (B, K, 2), got shape {tuple(points.shape)}")
    x, y = points[..., 0], points[..., 1]
    valid = (x >= -0.5) & (x <= width - 0.5) & (y >= -0.5) & (y <= height - 0.5)  # NaN compares False
    x, y = torch.nan_to_num(x), torch.nan_to_num(y)
    valid = valid.to(dtype)
    gx = _profiles(x, valid, width, shape, sigma)  # (B, K, W)
    gy = _profiles(y, torch.ones_like(valid), height, shape, sigma)  # (B, K, H)
    heat = torch.bmm(gy.transpose(1, 2), gx)  # (B, H, W): sum over points of outer products
    return heat.clamp_(max=1.0).unsqueeze(1)
