"""The future-work tables computed from saved predictions: headroom captured, calibration (ECE), the
models beyond the paper and their claims."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from fer_lib.data import rafdb
from fer_lib.report import tables, verdicts
from tests.conftest import pooled_result, pooled_row


def _probabilities(predicted, confidence, classes=7):
    p = np.full((len(predicted), classes), (1 - confidence) / (classes - 1))
    p[np.arange(len(predicted)), predicted] = confidence
    return p


def test_ece_is_zero_when_confidence_matches_accuracy_and_the_gap_otherwise():
    labels = np.zeros(8, dtype=int)
    predicted = np.array([0, 0, 0, 0, 0, 0, 1, 1])  # 6 of 8 right
    ece, table = tables.reliability(labels, _probabilities(predicted, 0.75))
    assert ece == pytest.approx(0.0) and table["images"].sum() == 8
    ece, _ = tables.reliability(labels, _probabilities(predicted, 0.95))
    assert ece == pytest.approx(0.2)  # confident at 0.95, right at 0.75


def test_headroom_counts_fixes_breaks_and_the_share_of_the_ceiling():
    labels = np.zeros(6, dtype=int)
    #            image:  0  1  2  3  4  5
    rgb = np.array([1, 1, 1, 0, 0, 1])  # wrong on 0, 1, 2, 5
    landmark = np.array([0, 0, 1, 1, 0, 0])  # right on 0, 1, 4, 5: ceiling = {0, 1, 5}
    fused = np.array([0, 1, 0, 1, 0, 1])  # fixes 0 (ceiling) and 2 (both wrong), breaks 3
    predictions = SimpleNamespace(
        labels=labels,
        rgb=_probabilities(rgb, 0.9),
        landmark=_probabilities(landmark, 0.9),
        fused=_probabilities(fused, 0.9),
    )
    run = SimpleNamespace(seed=4, predictions=predictions)
    (row,) = tables.headroom_rows("both", [run])
    assert (
        row["RGB wrong, landmarks right (ceiling)"],
        row["of those fixed"],
        row["both wrong, fixed"],
        row["RGB right, broken"],
    ) == (3, 1, 1, 1)
    assert row["net gain (images)"] == 1 and row["share of the ceiling"] == pytest.approx(1 / 3)
    (oracle,) = tables.headroom_rows("oracle", [run], oracle=True)
    assert oracle["net gain (images)"] == 3 and oracle["share of the ceiling"] == 1


def _future_work_claims(tmp_path, seeds: int) -> dict:
    rows = []
    for model, versus, low, high in (
        (tables.LEARNED, tables.PAPER_MODEL, -0.004, 0.005),
        (tables.CALIBRATED, tables.PAPER_MODEL, 0.001, 0.004),
        (tables.HEATMAP_BRANCH, tables.COORDS_BRANCH, -0.006, -0.001),
    ):
        for seed in range(seeds):  # per-seed rows would give other verdicts
            rows.append(
                {
                    "model": model,
                    "versus": versus,
                    "seed": seed,
                    "OA diff": (low + high) / 2 + 0.01,
                    "OA 95% low": low + 0.01,
                    "OA 95% high": high + 0.01,
                }
            )
        rows.append(
            pooled_row(
                model, versus, pooled_result((low + high) / 2, (high - low) / 2, seeds=seeds)
            )
        )
    tables.save_table(pd.DataFrame(rows), "significance_future_work", tmp_path)
    return dict(verdicts.claims(tmp_path)[["claim", "verdict"]].values)


def test_the_claims_beyond_the_paper_read_the_pooled_rows(tmp_path):
    verdict_of = _future_work_claims(tmp_path, 3)
    assert verdict_of == {
        "a learned weighting beats the paper's (OA)": "inconclusive",
        "a calibrated confidence beats the paper's weighting (OA)": "supported",
        "the heatmap CNN beats coordinates (fused OA)": "contradicted",
    }
    # two seeds: the same pooled intervals, no method-level verdict
    assert set(_future_work_claims(tmp_path, 2).values()) == {
        "inconclusive (2 seeds: per-seed only)"
    }


def test_model_rows_average_each_head_over_seeds():
    labels = np.zeros(4, dtype=int)
    runs = [
        SimpleNamespace(
            seed=s,
            predictions=SimpleNamespace(
                labels=labels,
                classes=rafdb.CLASSES,
                fused=_probabilities(np.array(f), 0.9),
                landmark=_probabilities(np.array(m), 0.9),
                weight=np.full(4, w),
            ),
        )
        for s, f, m, w in (
            (0, [0, 0, 0, 1], [0, 1, 1, 1], 0.2),
            (1, [0, 0, 1, 1], [0, 0, 1, 1], 0.4),
        )
    ]
    row = tables.model_rows({"m": runs}).iloc[0]
    assert row["oa_top1"] == pytest.approx(0.625) and row["landmark-only oa_top1"] == pytest.approx(
        0.375
    )
    assert row["mean weight on F_landmark"] == pytest.approx(0.3) and row["seeds"] == 2
