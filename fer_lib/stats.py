"""How sure is a difference between two models evaluated on the same test images?

- ``mcnemar_exact``: exact McNemar test on paired per-image correctness. Under the null the discordant
  images (one model right, the other wrong) split 50/50, so the p-value is a two-sided binomial test on
  the discordant counts.
- ``paired_bootstrap``: a seeded paired bootstrap of the OA and AA differences. Test images are
  resampled with replacement, the same draw for both models. It returns the observed difference and a
  percentile interval. A resample is drawn as multinomial counts of (class, hit A, hit B) cells, which is
  the same distribution as drawing image indices and costs nothing per image.
- ``paired_bootstrap_correct``: the same on per-image correctness given as numbers in [0, 1] (booleans, or
  each image's fraction of seeds that got it right).
- ``seed_pooled_interval``: the interval of the seed-averaged difference of two training methods, with the
  spread between seeds added to the test-set sampling: the interval every verdict reads.

Resamples are drawn class by class, keeping each class's number of test images, as the test set's class
sizes are fixed by design (RAF-DB's test split, and the synthetic set's copy of its proportions).
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
    cells = _cells(labels, correct_a, correct_b)
    observed = _observed_difference(cells, metric, num_classes)
    differences = _resampled_differences(cells, metric, resamples, seed, num_classes)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(differences, [tail, 100 - tail])
    return BootstrapResult(metric, observed, float(low), float(high), resamples)


def _cells(labels: np.ndarray, correct_a: np.ndarray, correct_b: np.ndarray) -> tuple[np.ndarray, ...]:
    """(class, a's hit, b's hit) of each distinct cell, and how many images fall in it. A resample's OA and AA depend
    only on how many draws land in each cell, and those counts are multinomial: drawing them is the same bootstrap
    as drawing image indices, in O(cells) per resample."""
    cells, members = np.unique(np.stack([np.asarray(labels, dtype=float), correct_a, correct_b], 1), axis=0, return_inverse=True)
    return cells[:, 0].astype(int), cells[:, 1], cells[:, 2], np.bincount(members.ravel(), minlength=len(cells))


def _difference(cells: tuple[np.ndarray, ...], counts: np.ndarray, metric: str, num_classes: int) -> np.ndarray:
    """metric(B) - metric(A) for each row of ``counts`` (R, K) over the cells."""
    cell_class, hits_a, hits_b, _ = cells
    return _cell_accuracy(counts, cell_class, hits_b, metric, num_classes) - _cell_accuracy(counts, cell_class, hits_a, metric, num_classes)


def _observed_difference(cells: tuple[np.ndarray, ...], metric: str, num_classes: int) -> float:
    return float(_difference(cells, cells[3][None].astype(float), metric, num_classes)[0])


def _resampled_differences(cells: tuple[np.ndarray, ...], metric: str, resamples: int, seed: int, num_classes: int) -> np.ndarray:
    """metric(B) - metric(A) over resamples drawn class by class: each class keeps its number of test images
    (the test set's class sizes are fixed by design), and its images are drawn with replacement."""
    cell_class, cell_counts = cells[0], cells[3]
    rng = np.random.default_rng(seed)
    counts = np.zeros((resamples, len(cell_class)))
    for k in np.unique(cell_class):
        members = np.flatnonzero(cell_class == k)
        size = int(cell_counts[members].sum())
        counts[:, members] = rng.multinomial(size, cell_counts[members] / size, size=resamples)
    return _difference(cells, counts, metric, num_classes)


def seed_pooled_interval(
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
    """Interval of the seed-averaged difference metric(B) - metric(A) of two training methods, both sources of
    chance counted: which test images were drawn, and which training seeds.

    ``correct_a`` and ``correct_b`` are (S, N) per-seed correctness, paired seed by seed (A may repeat one model,
    such as a frozen baseline). The interval is normal: the difference of the seed-averaged accuracies
    +- z * sqrt(v_test + s^2 / S), with v_test the class-stratified bootstrap variance of that difference (each
    image counted by its fraction of seeds right) and s the standard deviation of the S per-seed differences.
    Without the seed term, two seeds of nearly identical models give intervals of a few tenths of a point, and
    a verdict flips with the next pair of seeds.
    """
    from scipy.stats import norm

    labels = np.asarray(labels)
    correct_a, correct_b = np.atleast_2d(np.asarray(correct_a, dtype=float)), np.atleast_2d(np.asarray(correct_b, dtype=float))
    if correct_a.shape != correct_b.shape or correct_a.shape[1] != len(labels):
        raise ValueError(f"per-seed correctness must pair up over the {len(labels)} images, got {correct_a.shape} and {correct_b.shape}")
    per_seed = [_observed_difference(_cells(labels, a, b), metric, num_classes) for a, b in zip(correct_a, correct_b)]
    test_variance = float(np.var(_resampled_differences(_cells(labels, correct_a.mean(0), correct_b.mean(0)), metric, resamples, seed, num_classes)))
    seed_variance = float(np.var(per_seed, ddof=1)) / len(per_seed) if len(per_seed) > 1 else 0.0
    difference = float(np.mean(per_seed))  # OA and AA are linear in per-image correctness: the mean over seeds is the pooled difference
    half = float(norm.ppf(0.5 + confidence / 2)) * np.sqrt(test_variance + seed_variance)
    return BootstrapResult(metric, difference, difference - half, difference + half, resamples)
