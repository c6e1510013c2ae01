"""How sure is a difference between two models evaluated on the same test images?

- ``mcnemar_exact``: exact McNemar test on paired per-image correctness. Under the null the discordant
  images (one model right, the other wrong) split 50/50, so the p-value is a two-sided binomial test on
  the discordant counts.
- ``paired_bootstrap``: a seeded paired bootstrap of the OA and AA differences. Test images are
  resampled with replacement, the same draw for both models. It returns the observed difference and a
  percentile interval. A resample is drawn as multinomial counts of (class, hit A, hit B) cells, which is
  the same distribution as drawing image indices and costs nothing per image.
- ``paired_bootstrap_correct``: the same on per-image correctness given as numbers in [0, 1]. With each
  image's fraction of seeds that got it right, it gives the interval of the seed-averaged accuracy
  difference (the models of all seeds evaluated on one resample of the test set).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest

from fer_lib.rafdb import NUM_CLASSES


@dataclass(frozen=True)
class McNemarResult:
    only_a_right: int  # images model A gets right and model B wrong
    only_b_right: int
    p_value: float


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> McNemarResult:
    """Exact (binomial) McNemar test on paired boolean correctness arrays."""
    correct_a, correct_b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if correct_a.shape != correct_b.shape or correct_a.ndim != 1:
        raise ValueError(f"correctness arrays must be 1-D and the same length, got {correct_a.shape} and {correct_b.shape}")
    only_a = int((correct_a & ~correct_b).sum())
    only_b = int((~correct_a & correct_b).sum())
    p_value = 1.0 if only_a + only_b == 0 else binomtest(only_a, only_a + only_b, 0.5).pvalue
    return McNemarResult(only_a, only_b, float(p_value))


@dataclass(frozen=True)
class BootstrapResult:
    metric: str  # "oa" or "aa"
    difference: float  # observed metric(B) - metric(A)
    low: float  # percentile interval of the difference
    high: float
    resamples: int

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def _cell_accuracy(counts: np.ndarray, cell_class: np.ndarray, cell_hits: np.ndarray, metric: str, num_classes: int) -> np.ndarray:
    """OA or AA for each row of ``counts`` (R, K): how many draws fell in each cell (class, a's hit, b's hit)."""
    if metric == "oa":
        return counts @ cell_hits / counts.sum(1)
    onehot = np.eye(num_classes)[cell_class]  # (K, C)
    total = counts @ onehot  # (R, C) draws per class
    right = (counts * cell_hits) @ onehot  # (R, C)
    present = total > 0
    return (right / np.maximum(total, 1) * present).sum(1) / present.sum(1)


def paired_bootstrap(
    labels: np.ndarray,
    predicted_a: np.ndarray,
    predicted_b: np.ndarray,
    *,
    metric: str = "oa",
    resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
    num_classes: int = NUM_CLASSES,
) -> BootstrapResult:
    """Percentile interval of metric(B) - metric(A) over paired bootstrap resamples of the test images.

    ``metric`` is "oa" (overall accuracy) or "aa" (average per-class accuracy over the classes present).
    Seeded; each resample costs O(classes x distinct correctness pairs), not O(images).
    """
    labels = np.asarray(labels)
    return paired_bootstrap_correct(
        labels, np.asarray(predicted_a) == labels, np.asarray(predicted_b) == labels,
        metric=metric, resamples=resamples, confidence=confidence, seed=seed, num_classes=num_classes,
    )


def paired_bootstrap_correct(
    labels: np.ndarray,
    correct_a: np.ndarray,
    correct_b: np.ndarray,
    *,
    metric: str = "oa",
    resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
    num_classes: int = NUM_CLASSES,
) -> BootstrapResult:
    """``paired_bootstrap`` on per-image correctness (N,) in [0, 1]: booleans, or fractions of seeds right."""
    if metric not in ("oa", "aa"):
        raise ValueError(f"metric must be 'oa' or 'aa', got {metric!r}")
    labels = np.asarray(labels)
    correct_a, correct_b = np.asarray(correct_a, dtype=float), np.asarray(correct_b, dtype=float)
    if not (correct_a.shape == correct_b.shape == labels.shape) or labels.ndim != 1:
        raise ValueError(f"labels and correctness must be 1-D and the same length, got {labels.shape}, {correct_a.shape}, {correct_b.shape}")
    # A resample's OA and AA depend only on how many draws land in each (class, a's hit, b's hit) cell, and those
    # counts are multinomial: drawing them is the same bootstrap as drawing image indices, in O(cells) per resample.
    cells, members = np.unique(np.stack([labels.astype(float), correct_a, correct_b], 1), axis=0, return_inverse=True)
    cell_class, hits_a, hits_b = cells[:, 0].astype(int), cells[:, 1], cells[:, 2]
    share = np.bincount(members.ravel(), minlength=len(cells)) / len(labels)
    observed_counts = share[None] * len(labels)
    observed = float(_cell_accuracy(observed_counts, cell_class, hits_b, metric, num_classes)[0] - _cell_accuracy(observed_counts, cell_class, hits_a, metric, num_classes)[0])
    counts = np.random.default_rng(seed).multinomial(len(labels), share, size=resamples).astype(float)  # (R, K)
    differences = _cell_accuracy(counts, cell_class, hits_b, metric, num_classes) - _cell_accuracy(counts, cell_class, hits_a, metric, num_classes)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(differences, [tail, 100 - tail])
    return BootstrapResult(metric, observed, float(low), float(high), resamples)
