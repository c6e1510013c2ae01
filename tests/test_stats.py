import numpy as np
import pytest
from scipy.stats import binomtest

from fer_lib import metrics
from fer_lib.stats import mcnemar_exact, paired_bootstrap


def test_mcnemar_matches_the_binomial_test_on_discordant_counts():
    rng = np.random.default_rng(0)
    a = rng.random(500) < 0.8
    b = np.where(rng.random(500) < 0.1, ~a, a)
    result = mcnemar_exact(a, b)
    assert result.only_a_right == int((a & ~b).sum()) and result.only_b_right == int((~a & b).sum())
    expected = binomtest(result.only_a_right, result.only_a_right + result.only_b_right, 0.5).pvalue
    assert result.p_value == pytest.approx(expected)


def test_mcnemar_extremes():
    same = np.array([True, False, True])
    assert mcnemar_exact(same, same).p_value == 1.0
    a = np.ones(20, dtype=bool)
    b = np.zeros(20, dtype=bool)
    assert mcnemar_exact(a, b).p_value == pytest.approx(2 * 0.5**20)
    with pytest.raises(ValueError):
        mcnemar_exact(np.ones(3, bool), np.ones(4, bool))


def test_bootstrap_interval_covers_a_known_difference_and_excludes_zero():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 7, 3068)
    a = np.where(rng.random(3068) < 0.80, labels, (labels + 1) % 7)
    b = np.where(rng.random(3068) < 0.90, labels, (labels + 1) % 7)
    result = paired_bootstrap(labels, a, b, metric="oa", resamples=2000, seed=0)
    assert result.difference == pytest.approx(metrics.overall_accuracy(labels, b) - metrics.overall_accuracy(labels, a))
    assert result.low < result.difference < result.high
    assert result.low < 0.10 < result.high
    assert result.excludes_zero


def test_bootstrap_of_identical_models_is_zero_and_aa_matches_metrics():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 7, 400)
    a = np.where(rng.random(400) < 0.7, labels, 0)
    same = paired_bootstrap(labels, a, a, resamples=500)
    assert same.difference == 0 and same.low == 0 and same.high == 0 and not same.excludes_zero
    b = np.where(rng.random(400) < 0.8, labels, 0)
    aa = paired_bootstrap(labels, a, b, metric="aa", resamples=500)
    expected = metrics.average_accuracy(labels, b) - metrics.average_accuracy(labels, a)
    assert aa.difference == pytest.approx(expected)


def test_bootstrap_is_seeded():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 7, 3068)
    a = np.where(rng.random(3068) < 0.92, labels, 0)
    b = np.where(rng.random(3068) < 0.92, labels, 0)
    first = paired_bootstrap(labels, a, b, seed=5, resamples=300)
    assert first == paired_bootstrap(labels, a, b, seed=5, resamples=300)
    assert first != paired_bootstrap(labels, a, b, seed=6, resamples=300)
