import numpy as np
import pytest

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
