"""Landmark conventions, the paper's 5-point affine alignment, and flips.

Coordinates are (x, y) in pixels with pixel centres at integer positions (pixel (0, 0) spans
[-0.5, 0.5]), which is how RAF-DB's annotation files are written.

Landmark sets:
- ``manual5``: RAF-DB's manual points, in file order: left eye centre, right eye centre, nose tip,
  left mouth corner, right mouth corner ("left" = smaller x in the image).
- ``auto37``: RAF-DB's 37 automatic points. The project defines them as a subset of the common
  68-point iBUG/300-W layout (``AUTO37_FROM_IBUG68``), so a 68-point detector can produce the same
  set. The subset is closed under mirroring, which makes horizontal flips exact.

Alignment (paper, section 4.4): the affine map sending the left eye to (25, 35), the right eye to
(75, 35) and the mouth centre to (50, 75) on the 100x100 aligned canvas; ``scale_points`` then
carries canvas coordinates to the network's input size as an image resize does.
"""

from __future__ import annotations

import numpy as np

from fer_lib.settings import LANDMARK_SETS

ALIGNED_SIZE = 100  # RAF-DB's aligned images are 100x100
# left eye, right eye, mouth centre
ALIGN_TARGETS = np.array([[25.0, 35.0], [75.0, 35.0], [50.0, 75.0]])

MANUAL5_FLIP = np.array([1, 0, 2, 4, 3])

# 0-based indices into the iBUG 68-point layout (jaw 0-16, brows 17-26, nose 27-35, eyes 36-47,
# mouth 48-67). Chosen to keep what carries expression: brows, both eyelids, the mouth outline and
# its opening, plus a coarse jaw and the nose base as a rigid reference.
AUTO37_FROM_IBUG68 = np.array(
    [0, 4, 8, 12, 16]  # jaw: ends, cheeks, chin
    + [17, 19, 21, 22, 24, 26]  # brows: outer, middle, inner (image-left brow, then image-right)
    + [30, 31, 33, 35]  # nose tip, nostril wings, base
    + list(range(36, 48))  # both eyes, 6 points each
    + [48, 50, 51, 52, 54, 56, 57, 58]  # outer lip: corners, upper lip peaks and centre, lower lip
    + [62, 66]  # inner lip centres (mouth opening)
)
assert len(AUTO37_FROM_IBUG68) == 37

# Mirror partner of each iBUG-68 point (image flipped left-right).
IBUG68_FLIP = np.array(
    list(range(16, -1, -1))  # jaw
    + list(range(26, 16, -1))  # brows
    + [27, 28, 29, 30]  # nose bridge
    + [35, 34, 33, 32, 31]  # nose base
    + [45, 44, 43, 42, 47, 46]  # image-left eye -> image-right eye
    + [39, 38, 37, 36, 41, 40]
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]  # outer lip
    + [64, 63, 62, 61, 60, 67, 66, 65]  # inner lip
)


def manual5_from_ibug68(points68: np.ndarray) -> np.ndarray:
    """RAF-DB's 5 manual points from (..., 68, 2) iBUG points: eye centres (means of each eye's 6
    points), nose tip, mouth corners; import-images and every converter use this one mapping."""
    p = np.asarray(points68, dtype=np.float64)
    eyes = [p[..., 36:42, :].mean(-2), p[..., 42:48, :].mean(-2)]
    return np.stack([*eyes, p[..., 30, :], p[..., 48, :], p[..., 54, :]], axis=-2)


def auto37_from_ibug68(points68: np.ndarray) -> np.ndarray:
    """The project's 37 automatic points from (..., 68, 2) iBUG points (``AUTO37_FROM_IBUG68``)."""
    return np.asarray(points68, dtype=np.float64)[..., AUTO37_FROM_IBUG68, :]


def _subset_flip(subset: np.ndarray) -> np.ndarray:
    position = {int(k): i for i, k in enumerate(subset)}
    return np.array([position[int(IBUG68_FLIP[k])] for k in subset])


AUTO37_FLIP = _subset_flip(AUTO37_FROM_IBUG68)
BOTH_FLIP = np.concatenate([AUTO37_FLIP, 37 + MANUAL5_FLIP])


def flip_permutation(landmark_set: str) -> np.ndarray:
    """Index map that swaps left/right partners for a landmark set after a horizontal flip."""
    return {"auto37": AUTO37_FLIP, "manual5": MANUAL5_FLIP, "both": BOTH_FLIP}[
        check_landmark_set(landmark_set)
    ]


def check_landmark_set(landmark_set: str) -> str:
    if landmark_set not in LANDMARK_SETS:
        raise ValueError(f"landmark set {landmark_set!r} is not one of {LANDMARK_SETS}")
    return landmark_set


def flip_points(points: np.ndarray, width: float, landmark_set: str) -> np.ndarray:
    """Landmarks of the horizontally flipped image (``width`` pixels wide): x mirrored AND
    left/right partners swapped, so index 0 of ``manual5`` is still the left eye."""
    points = np.asarray(points, dtype=np.float64)
    flipped = points.copy()
    flipped[..., 0] = (width - 1) - points[..., 0]
    return flipped[..., flip_permutation(landmark_set), :]


def alignment_anchors(manual5: np.ndarray) -> np.ndarray:
    """(..., 3, 2) anchors from (..., 5, 2) manual points: left eye, right eye, mouth centre."""
    manual5 = np.asarray(manual5, dtype=np.float64)
    mouth_centre = (manual5[..., 3, :] + manual5[..., 4, :]) / 2
    return np.stack([manual5[..., 0, :], manual5[..., 1, :], mouth_centre], axis=-2)


def affine_from_points(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Exact affine map(s) (..., 2, 3) sending three source points to three destination points;
    ValueError when the source points are collinear (no unique affine map)."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.broadcast_to(np.asarray(dst, dtype=np.float64), src.shape)
    homogeneous = np.concatenate([src, np.ones(src.shape[:-1] + (1,))], axis=-1)  # (..., 3, 3)
    det = np.linalg.det(homogeneous)
    scale = np.abs(src - src.mean(axis=-2, keepdims=True)).max(axis=(-2, -1)) + 1e-12
    if np.any(np.abs(det) < 1e-9 * scale**2):
        raise ValueError(
            "alignment points are collinear (eyes and mouth centre on one line): no affine map"
        )
    # homogeneous @ A^T = dst  ->  A^T = solve(homogeneous, dst)
    return np.swapaxes(np.linalg.solve(homogeneous, dst), -1, -2)


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply (..., 2, 3) affine map(s) to (..., K, 2) points."""
    matrix = np.asarray(matrix, dtype=np.float64)
    points = np.asarray(points, dtype=np.float64)
    return points @ np.swapaxes(matrix[..., :, :2], -1, -2) + matrix[..., None, :, 2]


def alignment_matrix(manual5: np.ndarray) -> np.ndarray:
    """The paper's affine map(s) from original-image pixels to the 100x100 aligned canvas."""
    return affine_from_points(alignment_anchors(manual5), ALIGN_TARGETS)


def align_points(points: np.ndarray, manual5: np.ndarray, size: int = ALIGNED_SIZE) -> np.ndarray:
    """Map original-image landmarks onto the aligned canvas, then to a ``size`` x ``size`` input."""
    aligned = apply_affine(alignment_matrix(manual5), points)
    return scale_points(aligned, ALIGNED_SIZE, size)


def scale_points(points: np.ndarray, from_size: float, to_size: float) -> np.ndarray:
    """Carry points through an image resize from ``from_size`` to ``to_size`` pixels, with the
    pixel-centre convention of bilinear resizing (align_corners=False)."""
    factor = to_size / from_size
    return (np.asarray(points, dtype=np.float64) + 0.5) * factor - 0.5


def similarity_from_points(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, shift) as a (2, 3) matrix, src -> dst:
    how RAF-DB's own aligned images were made; unlike the paper's affine map it cannot shear."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    src_c, dst_c = src - src.mean(0), dst - dst.mean(0)
    # complex-number form: dst_c = z * src_c with z = a + ib
    s = src_c[:, 0] + 1j * src_c[:, 1]
    d = dst_c[:, 0] + 1j * dst_c[:, 1]
    z = np.vdot(s, d) / np.vdot(s, s).real
    a, b = z.real, z.imag
    linear = np.array([[a, -b], [b, a]])
    shift = dst.mean(0) - linear @ src.mean(0)
    return np.concatenate([linear, shift[:, None]], axis=1)


def affine_vs_similarity(points: np.ndarray, manual5: np.ndarray) -> np.ndarray:
    """Mean distance (px on the 100x100 canvas) per image between the paper's affine mapping of
    ``points`` (N, K, 2) and a RAF-DB-style similarity from the same anchors: small values mean the
    affine-mapped landmarks sit on RAF-DB's aligned faces."""
    anchors = alignment_anchors(manual5)
    affine = apply_affine(alignment_matrix(manual5), points)
    similarity = np.stack([similarity_from_points(a, ALIGN_TARGETS) for a in anchors])
    return np.linalg.norm(affine - apply_affine(similarity, points), axis=-1).mean(axis=-1)
