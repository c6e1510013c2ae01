import numpy as np
import pytest
from numpy.linalg import lstsq

from fer_lib.data import landmarks


def random_manual5(rng, n):
    base = np.array([[40.0, 50.0], [90.0, 52.0], [65.0, 75.0], [45.0, 100.0], [85.0, 101.0]])
    return base + rng.normal(0, 4, (n, 5, 2))


def test_anchor_points_land_on_targets():
    rng = np.random.default_rng(0)
    manual = random_manual5(rng, 50)
    aligned = landmarks.apply_affine(
        landmarks.alignment_matrix(manual), landmarks.alignment_anchors(manual)
    )
    np.testing.assert_allclose(
        aligned, np.broadcast_to(landmarks.ALIGN_TARGETS, aligned.shape), atol=1e-6
    )


def test_known_affine_is_recovered():
    rng = np.random.default_rng(1)
    truth = np.array([[1.3, -0.2, 7.0], [0.4, 0.9, -3.0]])
    src = rng.uniform(0, 100, (3, 2))
    dst = landmarks.apply_affine(truth, src)
    np.testing.assert_allclose(landmarks.affine_from_points(src, dst), truth, atol=1e-9)
    other = rng.uniform(0, 100, (10, 2))
    np.testing.assert_allclose(
        landmarks.apply_affine(landmarks.affine_from_points(src, dst), other),
        landmarks.apply_affine(truth, other),
        atol=1e-8,
    )


def test_collinear_points_are_refused():
    with pytest.raises(ValueError, match="collinear"):
        landmarks.affine_from_points(
            np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]]), landmarks.ALIGN_TARGETS
        )


def test_align_points_scales_to_input_size():
    rng = np.random.default_rng(2)
    manual = random_manual5(rng, 3)
    at_224 = landmarks.align_points(landmarks.alignment_anchors(manual), manual, size=224)
    np.testing.assert_allclose(
        at_224,
        np.broadcast_to((landmarks.ALIGN_TARGETS + 0.5) * 2.24 - 0.5, at_224.shape),
        atol=1e-6,
    )
    # size 100 is the canvas itself
    np.testing.assert_allclose(
        landmarks.align_points(manual, manual, size=100),
        landmarks.apply_affine(landmarks.alignment_matrix(manual), manual),
    )


def test_scale_points_matches_pixel_centres():
    # the centre of a 100-pixel image stays the centre of the 224-pixel
    # image; corners map to corners
    np.testing.assert_allclose(
        landmarks.scale_points(np.array([[49.5, 49.5]]), 100, 224), [[111.5, 111.5]]
    )
    np.testing.assert_allclose(
        landmarks.scale_points(np.array([[-0.5, 99.5]]), 100, 224), [[-0.5, 223.5]]
    )


@pytest.mark.parametrize("landmark_set", ["auto37", "manual5", "both"])
def test_flip_permutation_is_an_involution(landmark_set):
    perm = landmarks.flip_permutation(landmark_set)
    assert sorted(perm) == list(range(len(perm)))
    np.testing.assert_array_equal(perm[perm], np.arange(len(perm)))


def test_auto37_flip_follows_ibug_mirror():
    for i, k in enumerate(landmarks.AUTO37_FROM_IBUG68):
        assert landmarks.AUTO37_FROM_IBUG68[landmarks.AUTO37_FLIP[i]] == landmarks.IBUG68_FLIP[k]
    np.testing.assert_array_equal(landmarks.IBUG68_FLIP[landmarks.IBUG68_FLIP], np.arange(68))


def test_flip_keeps_left_eye_left():
    manual = np.array([[30.0, 40.0], [70.0, 41.0], [50.0, 60.0], [35.0, 80.0], [65.0, 81.0]])
    flipped = landmarks.flip_points(manual, width=100, landmark_set="manual5")
    # the flipped image's left eye is the mirror of the original right eye, and has the smaller x
    np.testing.assert_allclose(flipped[0], [99 - 70.0, 41.0])
    np.testing.assert_allclose(flipped[3], [99 - 65.0, 81.0])
    assert flipped[0, 0] < flipped[1, 0] and flipped[3, 0] < flipped[4, 0]
    np.testing.assert_allclose(landmarks.flip_points(flipped, 100, "manual5"), manual)


def test_flip_commutes_with_alignment_up_to_the_half_pixel_of_the_targets():
    # The targets are symmetric about x = 50, the canvas about x = 49.5 (pixel centres at integers),
    # so aligning a flipped face lands exactly 1 px right of flipping the aligned face. Augmentation
    # flips the aligned image and its aligned points together, which is exact.
    rng = np.random.default_rng(3)
    manual = random_manual5(rng, 1)[0]
    auto = rng.uniform(30, 110, (37, 2))
    width = 140
    direct = landmarks.flip_points(landmarks.align_points(auto, manual, 100), 100, "auto37")
    via_flip = landmarks.align_points(
        landmarks.flip_points(auto, width, "auto37"),
        landmarks.flip_points(manual, width, "manual5"),
        100,
    )
    np.testing.assert_allclose(
        via_flip - direct, np.broadcast_to([1.0, 0.0], direct.shape), atol=1e-9
    )


def test_similarity_is_close_to_affine_on_a_clean_face():
    src = np.array([[40.0, 50.0], [90.0, 50.0], [65.0, 90.0]])
    sim = landmarks.similarity_from_points(src, landmarks.ALIGN_TARGETS)
    np.testing.assert_allclose(landmarks.apply_affine(sim, src), landmarks.ALIGN_TARGETS, atol=1e-9)
    linear = sim[:, :2]
    assert abs(linear[0, 0] - linear[1, 1]) < 1e-12 and abs(linear[0, 1] + linear[1, 0]) < 1e-12


def test_unknown_landmark_set_is_refused():
    with pytest.raises(ValueError, match="auto37"):
        landmarks.flip_permutation("auto68")


def test_the_flip_of_a_subset_is_read_off_the_ibug_mirror():
    # the whole 68-point layout is its own subset: its flip is the mirror table itself
    np.testing.assert_array_equal(landmarks._subset_flip(np.arange(68)), landmarks.IBUG68_FLIP)
    # by hand: the jaw ends (0 <-> 16) and the nose tip (30, its own partner), listed as [16, 30, 0]
    np.testing.assert_array_equal(landmarks._subset_flip(np.array([16, 30, 0])), [2, 1, 0])


def test_manual5_and_auto37_are_read_off_the_ibug_points():
    points = np.stack(
        [np.arange(68.0), 1000 + 2 * np.arange(68.0)], axis=-1
    )  # point i at (i, 1000 + 2i)
    manual = landmarks.manual5_from_ibug68(np.stack([points, points + 1]))  # a batch of two
    # by hand: eye centres are the means of points 36-41 and 42-47 (38.5 and 44.5), nose tip 30,
    # mouth 48 and 54
    first = [[38.5, 1077.0], [44.5, 1089.0], [30.0, 1060.0], [48.0, 1096.0], [54.0, 1108.0]]
    np.testing.assert_allclose(manual, [first, np.add(first, 1)], rtol=0, atol=1e-12)
    # single-precision points are averaged in double precision
    rng = np.random.default_rng(6)
    narrow = rng.uniform(0, 200, (68, 2)).astype(np.float32)
    from_narrow = landmarks.manual5_from_ibug68(narrow)
    assert from_narrow.dtype == np.float64
    np.testing.assert_array_equal(
        from_narrow, landmarks.manual5_from_ibug68(narrow.astype(np.float64))
    )
    auto = landmarks.auto37_from_ibug68(points.astype(np.float32))
    assert auto.dtype == np.float64 and auto.shape == (37, 2)
    np.testing.assert_array_equal(auto[:, 0], landmarks.AUTO37_FROM_IBUG68)
    np.testing.assert_array_equal(auto[:, 1], 1000 + 2 * landmarks.AUTO37_FROM_IBUG68)


def _triangle(size, flatness, offset=(0.0, 0.0)):
    """Eyes ``size`` apart on a line, the mouth ``flatness * size`` off it: |det| / scale^2 = 4
    flatness."""
    return np.array([[0.0, 0.0], [size, 0.0], [size / 2, flatness * size]]) + offset


def test_the_collinearity_check_depends_on_the_shape_alone():
    # the check compares |det| with 1e-9 scale^2: a flatness of 1e-8 (4e-8) passes and 1e-11 (4e-11)
    # does not,
    # at any size, far from the origin too, and for each face of a batch on its own
    for size in (1e-5, 1.0, 1e4):
        landmarks.affine_from_points(_triangle(size, 1e-8), landmarks.ALIGN_TARGETS)
        with pytest.raises(ValueError, match="^alignment points are collinear"):
            landmarks.affine_from_points(_triangle(size, 1e-11), landmarks.ALIGN_TARGETS)
    for offset in ((1e6, -1e6), (1e6, 1e6), (-1e6, 0.0)):
        landmarks.affine_from_points(_triangle(1.0, 1e-2, offset), landmarks.ALIGN_TARGETS)
    batch = np.stack([_triangle(1e4, 1e-6), _triangle(1.0, 1e-6)])
    assert landmarks.affine_from_points(batch, landmarks.ALIGN_TARGETS).shape == (2, 2, 3)


def test_single_precision_landmarks_are_mapped_in_double_precision():
    rng = np.random.default_rng(4)
    manual = random_manual5(rng, 2).astype(np.float32)
    points = rng.uniform(30, 110, (2, 37, 2)).astype(np.float32)
    wide_manual, wide_points = manual.astype(np.float64), points.astype(np.float64)
    matrix = landmarks.alignment_matrix(wide_manual)
    for narrow, wide in (
        (landmarks.alignment_anchors(manual), landmarks.alignment_anchors(wide_manual)),
        (landmarks.alignment_matrix(manual), matrix),
        (landmarks.apply_affine(matrix.astype(np.float32), wide_points),
         landmarks.apply_affine(matrix.astype(np.float32).astype(np.float64), wide_points)),
        (landmarks.apply_affine(matrix, points), landmarks.apply_affine(matrix, wide_points)),
        (landmarks.align_points(points, manual, 224),
         landmarks.align_points(wide_points, wide_manual, 224)),
        (landmarks.scale_points(points, 100, 224), landmarks.scale_points(wide_points, 100, 224)),
        (landmarks.flip_points(points, 140, "auto37"),
         landmarks.flip_points(wide_points, 140, "auto37")),
        (landmarks.similarity_from_points(
            manual[0, :3], landmarks.ALIGN_TARGETS.astype(np.float32)),
         landmarks.similarity_from_points(wide_manual[0, :3], landmarks.ALIGN_TARGETS)),
    ):  # fmt: skip
        assert narrow.dtype == np.float64
        np.testing.assert_array_equal(narrow, wide)


def test_similarity_recovers_a_rotation_scale_and_shift():
    angle, scale, shift = 0.3, 1.7, np.array([5.0, -2.0])
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = np.array([[40.0, 50.0], [90.0, 52.0], [63.0, 91.0], [20.0, 5.0]])
    sim = landmarks.similarity_from_points(src, src @ rotation.T + shift)
    np.testing.assert_allclose(sim, np.column_stack([rotation, shift]), atol=1e-12)


def test_affine_vs_similarity_is_the_mean_distance_between_the_two_mappings():

    rng = np.random.default_rng(5)
    manual = random_manual5(rng, 3)
    points = rng.uniform(30, 110, (3, 37, 2))
    distances = landmarks.affine_vs_similarity(points, manual)
    for i in range(3):
        # the similarity by plain least squares on (a, b, tx, ty): x' = a x - b y + tx, y' = b x + a
        # y + ty
        eyes_mouth = np.stack([manual[i, 0], manual[i, 1], (manual[i, 3] + manual[i, 4]) / 2])
        rows = []
        for x, y in eyes_mouth:
            rows += [[x, -y, 1, 0], [y, x, 0, 1]]
        (a, b, tx, ty), *_ = lstsq(np.array(rows), landmarks.ALIGN_TARGETS.ravel(), rcond=None)
        similar = points[i] @ np.array([[a, b], [-b, a]]) + [tx, ty]
        # the exact affine map of the three anchors, solved here from its six equations
        rows = []
        for x, y in eyes_mouth:
            rows += [[x, y, 1, 0, 0, 0], [0, 0, 0, x, y, 1]]
        m = np.linalg.solve(np.array(rows), landmarks.ALIGN_TARGETS.ravel()).reshape(2, 3)
        affine = points[i] @ m[:, :2].T + m[:, 2]
        expected = np.linalg.norm(affine - similar, axis=-1).mean()
        assert distances[i] == pytest.approx(expected, rel=1e-9)
    assert distances.shape == (3,) and (distances > 0.01).all()
