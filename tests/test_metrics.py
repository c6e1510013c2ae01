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
