import warnings

import numpy as np
import pytest
import sklearn.metrics as skm

from fer_lib.data.rafdb import paper_results
from fer_lib.evaluation import metrics

LABELS = list(range(7))


@pytest.mark.parametrize("seed", range(5))
def test_agrees_with_scikit_learn_on_random_cases(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 200))
    y_true = rng.integers(0, 7, n)
    scores = rng.normal(size=(n, 7))
    y_pred = scores.argmax(1)

    np.testing.assert_allclose(
        metrics.per_class_accuracy(y_true, y_pred),
        skm.recall_score(y_true, y_pred, labels=LABELS, average=None, zero_division=np.nan),
    )
    assert metrics.overall_accuracy(y_true, y_pred) == pytest.approx(
        skm.accuracy_score(y_true, y_pred)
    )
    assert metrics.average_accuracy(y_true, y_pred) == pytest.approx(
        skm.balanced_accuracy_score(y_true, y_pred)
    )
    np.testing.assert_array_equal(
        metrics.confusion_matrix(y_true, y_pred),
        skm.confusion_matrix(y_true, y_pred, labels=LABELS),
    )
    for k in (1, 2, 3, 6):
        expected = skm.top_k_accuracy_score(y_true, scores, k=k, labels=LABELS)
        assert metrics.topk_accuracy(y_true, scores, k) == pytest.approx(expected)


def test_absent_class_is_nan_and_left_out_of_the_average():
    y_true = np.array([0, 0, 1, 1, 1, 3])
    y_pred = np.array([0, 1, 1, 1, 0, 3])
    per_class = metrics.per_class_accuracy(y_true, y_pred)
    np.testing.assert_allclose(per_class[[0, 1, 3]], [0.5, 2 / 3, 1.0])
    assert np.isnan(per_class[[2, 4, 5, 6]]).all()
    assert metrics.average_accuracy(y_true, y_pred) == pytest.approx((0.5 + 2 / 3 + 1.0) / 3)
    assert metrics.average_accuracy(y_true, y_pred) == pytest.approx(
        skm.balanced_accuracy_score(y_true, y_pred)
    )


def test_handmade_confusion_matrix_and_topk():
    y_true = np.array([0, 1, 2, 2])
    scores = np.array(
        [
            [0.9, 0.1, 0.0],  # true 0: rank 1
            [0.5, 0.3, 0.2],  # true 1: rank 2
            [0.5, 0.3, 0.2],  # true 2: rank 3
            [0.1, 0.1, 0.8],  # true 2: rank 1
        ]
    )
    assert metrics.topk_accuracy(y_true, scores, 1) == 0.5
    assert metrics.topk_accuracy(y_true, scores, 2) == 0.75
    assert metrics.topk_accuracy(y_true, scores, 3) == 1.0
    matrix = metrics.confusion_matrix(y_true, scores.argmax(1), num_classes=3)
    np.testing.assert_array_equal(matrix, [[1, 0, 0], [1, 0, 0], [1, 0, 1]])


def test_top1_equals_argmax_accuracy_under_ties():
    scores = np.zeros((4, 7))  # an untrained model's constant logits: argmax picks class 0
    y_true = np.array([0, 1, 0, 6])
    assert (
        metrics.topk_accuracy(y_true, scores, 1)
        == metrics.overall_accuracy(y_true, scores.argmax(1))
        == 0.5
    )
    assert metrics.topk_accuracy(y_true, scores, 2) == 0.75  # classes 0 and 1


def test_contingency_reproduces_table2_and_uses_the_paper_keys():
    table2 = paper_results()["table2_contingency_test"]
    both, rgb_only, landmark_only, neither = (table2[k] for k in table2)
    rgb = np.repeat([True, True, False, False], [both, rgb_only, landmark_only, neither])
    landmark = np.repeat([True, False, True, False], [both, rgb_only, landmark_only, neither])
    assert metrics.contingency_2x2(rgb, landmark) == table2
    assert rgb.mean() == pytest.approx(0.92, abs=0.005)  # the paper's "RGB alone 0.92"
    assert landmark.mean() == pytest.approx(0.68, abs=0.005)
    assert metrics.contingency_2x2([True], [False], names=("a", "b")) == {
        "a_correct_b_correct": 0,
        "a_correct_b_wrong": 1,
        "a_wrong_b_correct": 0,
        "a_wrong_b_wrong": 0,
    }


def test_summary_has_the_table6_keys():
    table6 = paper_results()["table6_overall"]["baseline"]
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 7, 50)
    scores = rng.normal(size=(50, 7))
    result = metrics.summary(y_true, scores)
    assert set(result) == set(table6) | {"per_class"}
    assert len(result["per_class"]) == 7
    assert result["oa_top1"] <= result["oa_top2"] <= result["oa_top3"]
    assert result["aa"] == pytest.approx(skm.balanced_accuracy_score(y_true, scores.argmax(1)))


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="0..6"):
        metrics.per_class_accuracy([0, 7], [0, 1])
    with pytest.raises(ValueError, match="length"):
        metrics.confusion_matrix([0, 1], [0])
    with pytest.raises(ValueError, match="k must be"):
        metrics.topk_accuracy([0], np.zeros((1, 7)), 8)
    with pytest.raises(ValueError, match="score rows"):
        metrics.topk_accuracy([0, 1], np.zeros((1, 7)), 1)


def test_topk_breaks_ties_towards_the_lower_class_id_at_every_k():
    # integer scores in 0..2: many ties, of every length, at every rank. The reference ranks each
    # row by
    # (-score, class id) in a plain loop: the documented convention, whatever sort numpy uses by
    # default
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 3, (400, 7)).astype(float)
    y_true = rng.integers(0, 7, 400)
    ranked = [sorted(range(7), key=lambda c, row=row: (-row[c], c)) for row in scores]
    for k in range(1, 8):
        expected = np.mean([label in order[:k] for label, order in zip(y_true, ranked)])
        assert metrics.topk_accuracy(y_true, scores, k) == expected
    assert metrics.topk_accuracy(y_true, scores, 1) == metrics.overall_accuracy(
        y_true, scores.argmax(1)
    )


def test_an_eight_class_data_set_is_scored_on_its_own_eight_classes():
    # AffectNet with Contempt: class 7 exists. By hand: class 7 has 2 samples, 1 right; classes 0
    # and 1 all right
    y_true = np.array([0, 1, 7, 7])
    y_pred = np.array([0, 1, 7, 0])
    per_class = metrics.per_class_accuracy(y_true, y_pred, num_classes=8)
    np.testing.assert_array_equal(per_class[[0, 1, 7]], [1.0, 1.0, 0.5])
    assert np.isnan(per_class[2:7]).all()
    assert metrics.average_accuracy(y_true, y_pred, num_classes=8) == pytest.approx(2.5 / 3)
    scores = np.eye(8)[y_pred]  # one-hot on the predictions
    result = metrics.summary(y_true, scores)
    assert result["aa"] == pytest.approx(2.5 / 3)
    assert len(result["per_class"]) == 8 and result["per_class"][7] == 0.5
    assert metrics.summary(y_true, scores, num_classes=8)["oa_top1"] == 0.75


def test_summary_reports_every_topk_up_to_the_class_count():
    # three classes: top-3 is always right, top-2 here misses only the second sample (its class
    # ranks third)
    y_true = np.array([0, 2])
    scores = np.array([[0.9, 0.05, 0.05], [0.6, 0.3, 0.1]])
    result = metrics.summary(y_true, scores)
    assert (result["oa_top1"], result["oa_top2"], result["oa_top3"]) == (0.5, 0.5, 1.0)
    two = metrics.summary(np.array([1]), np.array([[0.7, 0.3]]))
    assert (two["oa_top1"], two["oa_top2"]) == (0.0, 1.0) and "oa_top3" not in two


def test_an_absent_class_gives_nan_without_a_numpy_warning():

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        per_class = metrics.per_class_accuracy([0, 1], [0, 0])
    np.testing.assert_array_equal(per_class[:2], [1.0, 0.0])
    assert np.isnan(per_class[2:]).all()


def test_one_sample_has_an_overall_accuracy():
    assert metrics.overall_accuracy(np.array([3]), np.array([3])) == 1.0
    assert metrics.overall_accuracy(np.array([3]), np.array([2])) == 0.0


def test_contingency_counts_zero_one_correctness_as_booleans():
    # 0/1 integers (a mean of them is the accuracy): by hand 1 both, 1 a only, 1 b only, 2 neither
    counts = metrics.contingency_2x2([1, 1, 0, 0, 0], [1, 0, 1, 0, 0])
    assert list(counts.values()) == [1, 1, 1, 2]
    assert metrics.contingency_2x2([1, 0], [True, True])["rgb_wrong_landmark_correct"] == 1
    # 0.0/1.0 floats (correctness as a float mask), on either side
    right = np.array([1.0, 1.0, 0.0, 0.0, 0.0])
    assert list(metrics.contingency_2x2(right, right[[0, 2, 1, 3, 4]]).values()) == [1, 1, 1, 2]
    assert list(metrics.contingency_2x2(right > 0, right[[0, 2, 1, 3, 4]]).values()) == [1, 1, 1, 2]
    assert list(metrics.contingency_2x2(right, right[[0, 2, 1, 3, 4]] > 0).values()) == [1, 1, 1, 2]


def test_each_refusal_names_what_is_wrong():
    with pytest.raises(ValueError, match="y_true must be a 1-D array"):
        metrics.confusion_matrix(np.zeros((2, 2), int), np.zeros((2, 2), int))
    with pytest.raises(ValueError, match="y_true must hold integer class ids in 0..6"):
        metrics.confusion_matrix([0.0, 1.0], [0, 1])  # float labels, in range
    with pytest.raises(ValueError, match="y_pred must hold integer class ids in 0..6"):
        metrics.confusion_matrix([0, 1], [0, 7])
    with pytest.raises(ValueError, match="y_true must hold integer class ids in 0..2"):
        metrics.topk_accuracy([3], np.zeros((1, 3)), 1)
    with pytest.raises(ValueError, match=r"scores must be \(N, C\), got shape \(7,\)"):
        metrics.topk_accuracy([0], np.zeros(7), 1)
    with pytest.raises(ValueError, match="2 labels for 1 score rows"):
        metrics.topk_accuracy([0, 1], np.zeros((1, 7)), 1)
    for a, b in (
        (np.zeros((2, 2), int), np.zeros((2, 2), int)),  # 2-D
        (np.array([0, 1, 2]), np.array([0])),  # lengths differ (one would broadcast)
        (np.array([], int), np.array([], int)),  # empty
    ):
        with pytest.raises(ValueError, match="need two non-empty label arrays of one length"):
            metrics.overall_accuracy(a, b)
    with pytest.raises(ValueError, match="need two 1-D correctness arrays of one length"):
        metrics.contingency_2x2(np.ones((2, 2), bool), np.ones((2, 2), bool))
    with pytest.raises(ValueError, match=r"scores must be \(N, C\), got shape \(7,\)"):
        metrics.summary([0], np.zeros(7))
    with pytest.raises(ValueError, match=r"scores must be \(N, 8\), got shape \(1, 7\)"):
        metrics.summary([0], np.zeros((1, 7)), num_classes=8)
