"""The future-work tables computed from saved predictions: headroom captured, and calibration (ECE)."""

from types import SimpleNamespace

import numpy as np
import pytest

from fer_lib import report


def _probabilities(predicted, confidence, classes=7):
    p = np.full((len(predicted), classes), (1 - confidence) / (classes - 1))
    p[np.arange(len(predicted)), predicted] = confidence
    return p


def test_ece_is_zero_when_confidence_matches_accuracy_and_the_gap_otherwise():
    labels = np.zeros(8, dtype=int)
    predicted = np.array([0, 0, 0, 0, 0, 0, 1, 1])  # 6 of 8 right
    ece, table = report.reliability(labels, _probabilities(predicted, 0.75))
    assert ece == pytest.approx(0.0) and table["images"].sum() == 8
    ece, _ = report.reliability(labels, _probabilities(predicted, 0.95))
    assert ece == pytest.approx(0.2)  # confident at 0.95, right at 0.75


def test_headroom_counts_fixes_breaks_and_the_share_of_the_ceiling():
    labels = np.zeros(6, dtype=int)
    #            image:  0  1  2  3  4  5
    rgb = np.array([1, 1, 1, 0, 0, 1])  # wrong on 0, 1, 2, 5
    landmark = np.array([0, 0, 1, 1, 0, 0])  # right on 0, 1, 4, 5: ceiling = {0, 1, 5}
    fused = np.array([0, 1, 0, 1, 0, 1])  # fixes 0 (ceiling) and 2 (both wrong), breaks 3
    predictions = SimpleNamespace(labels=labels, rgb=_probabilities(rgb, 0.9), landmark=_probabilities(landmark, 0.9), fused=_probabilities(fused, 0.9))
    run = SimpleNamespace(seed=4, predictions=predictions)
    row, = report.headroom_rows("both", [run])
    assert (row["RGB wrong, landmarks right (ceiling)"], row["of those fixed"], row["both wrong, fixed"], row["RGB right, broken"]) == (3, 1, 1, 1)
    assert row["net gain (images)"] == 1 and row["share of the ceiling"] == pytest.approx(1 / 3)
    oracle, = report.headroom_rows("oracle", [run], oracle=True)
    assert oracle["net gain (images)"] == 3 and oracle["share of the ceiling"] == 1
