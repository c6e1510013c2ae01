"""The linear probes: what they compute (scikit-learn called directly, by hand) and that they give
the same numbers run to run, whatever threads the process was given."""

import json
import os
import subprocess
import sys

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from fer_lib.data.tensors import stratified_split
from fer_lib.evaluation import probes

SCRIPT = """
import json, sys
import numpy as np
from fer_lib.evaluation import probes
rng = np.random.default_rng(0)
x = rng.normal(size=(350, 40)).astype(np.float32)
y = (x[:, :7] + rng.normal(scale=2.0, size=(350, 7))).argmax(1)
model = probes.fit_probe(0.1, x[:300], y[:300])
result = probes.linear_probe("t", x[:300], y[:300], x[300:], y[300:])
print(json.dumps({"coef": model[-1].coef_.tobytes().hex(), "test": result.test_accuracy,
                  "val": result.validation_accuracy, "predicted": result.test_predicted.tolist()}))
"""


def _fit_in_process(threads: int) -> dict:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "OPENBLAS_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
    }
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_a_probe_fitted_twice_gives_identical_numbers():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 40)).astype(np.float32)
    y = (x[:, :7] + rng.normal(scale=2.0, size=(300, 7))).argmax(1)
    first, second = probes.fit_probe(0.1, x, y), probes.fit_probe(0.1, x, y)
    assert first[-1].coef_.tobytes() == second[-1].coef_.tobytes()
    # in fresh processes with one and with two BLAS/OpenMP threads: the same bytes
    assert _fit_in_process(1) == _fit_in_process(2)


def _scikit_learn_probe(c, x, y):
    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=300)).fit(x, y)


def test_a_probe_is_a_standardised_logistic_regression_with_c_chosen_on_validation():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(400, 30)).astype(np.float32) * rng.uniform(0.1, 50, 30)  # unequal scales
    y = (x[:, :7] / x[:, :7].std(0) + rng.normal(scale=1.5, size=(400, 7))).argmax(1)
    train_x, train_y, test_x, test_y = x[:300], y[:300], x[300:], y[300:]
    with threadpool_limits(limits=1):  # as the probes run: the same sums, the same bytes
        fitted = probes.fit_probe(0.1, train_x, train_y)
        direct = _scikit_learn_probe(0.1, train_x, train_y)
        np.testing.assert_array_equal(fitted[-1].coef_, direct[-1].coef_)
        # C by validation accuracy on a 10% stratified split, ties to the
        # smaller C; then refit on all
        fit, val = stratified_split(train_y, 0.1, 0)
        scores = {
            c: float(
                (
                    _scikit_learn_probe(c, train_x[fit], train_y[fit]).predict(train_x[val])
                    == train_y[val]
                ).mean()
            )
            for c in (0.01, 0.1, 1.0)
        }
        best = min(scores, key=lambda c: (-scores[c], c))
        predicted = _scikit_learn_probe(best, train_x, train_y).predict(test_x)
    result = probes.linear_probe("t", train_x, train_y, test_x, test_y)
    assert (result.c, result.validation_accuracy) == (best, scores[best])
    np.testing.assert_array_equal(result.test_predicted, predicted)
    assert result.test_accuracy == float((predicted == test_y).mean()) and result.features == 30
    assert len(set(scores.values())) > 1  # the choice of C mattered here


def test_a_probe_separates_what_is_linearly_separable_and_not_noise():
    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(7), 30)
    separable = np.eye(7)[y] * 3 + rng.normal(scale=0.3, size=(210, 7))
    noise = rng.normal(size=(210, 7))
    train, test = np.arange(210) % 3 != 0, np.arange(210) % 3 == 0
    clear = probes.linear_probe("clear", separable[train], y[train], separable[test], y[test])
    blind = probes.linear_probe("noise", noise[train], y[train], noise[test], y[test])
    assert clear.test_accuracy == 1.0
    assert blind.test_accuracy < 0.35  # chance is 1/7; 70 test images
