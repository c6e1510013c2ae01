"""How sure is a difference between two models evaluated on the same test images?

- ``mcnemar_exact``: exact McNemar test on paired per-image correctness. Under the null the discordant
  images (one model right, the other wrong) split 50/50, so the p-value is a two-sided binomial test on
  the discordant counts.
- ``paired_bootstrap``: a seeded paired bootstrap of the OA and AA differences. Test images are
  resampled with replacement, the same draw for both models, vectorised over resamples. It returns the
  observed difference and a percentile interval.
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


def _accuracy_per_resample(correct: np.ndarray, labels: np.ndarray, index: np.ndarray, metric: str, num_classes: int) -> np.ndarray:
    """OA or AA of each bootstrap resample; ``index`` is (R, N) indices into the test images."""
    hits = correct[index]  # (R, N), 0/1 or a fraction of seeds
    if metric == "oa":
        return hits.mean(axis=1)
    drawn = labels[index]  # (R, N)
    # per (resample, class) counts in one bincount over resample * num_classes + class
    cell = (drawn + num_classes * np.arange(len(index))[:, None]).ravel()
    size = len(index) * num_classes
    total = np.bincount(cell, minlength=size).reshape(-1, num_classes)  # (R, C)
    right = np.bincount(cell, weights=hits.ravel(), minlength=size).reshape(-1, num_classes)  # (R, C)
    present = total > 0
    per_class = right / np.maximum(total, 1)
    return (per_class * present).sum(1) / present.sum(1)


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
    chunk: int = 1_000,
) -> BootstrapResult:
    """Percentile interval of metric(B) - metric(A) over paired bootstrap resamples of the test images.

    ``metric`` is "oa" (overall accuracy) or "aa" (average per-class accuracy over the classes present).
    Seeded, and vectorised in chunks of resamples to bound memory.
    """
    labels = np.asarray(labels)
    return paired_bootstrap_correct(
        labels, np.asarray(predicted_a) == labels, np.asarray(predicted_b) == labels,
        metric=metric, resamples=resamples, confidence=confidence, seed=seed, num_classes=num_classes, chunk=chunk,
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
    chunk: int = 1_000,
) -> BootstrapResult:
    """``paired_bootstrap`` on per-image correctness (N,) in [0, 1]: booleans, or fractions of seeds right."""
    if metric not in ("oa", "aa"):
        raise ValueError(f"metric must be 'oa' or 'aa', got {metric!r}")
    labels = np.asarray(labels)
    correct_a, correct_b = np.asarray(correct_a, dtype=float), np.asarray(correct_b, dtype=float)
    if not (correct_a.shape == correct_b.shape == labels.shape) or labels.ndim != 1:
        raise ValueError(f"labels and correctness must be 1-D and the same length, got {labels.shape}, {correct_a.shape}, {correct_b.shape}")
    everything = np.arange(len(labels))[None]
    observed = float(_accuracy_per_resample(correct_b, labels, everything, metric, num_classes)[0] - _accuracy_per_resample(correct_a, labels, everything, metric, num_classes)[0])
    rng = np.random.default_rng(seed)
    differences = []
    for start in range(0, resamples, chunk):
        index = rng.integers(0, len(labels), size=(min(chunk, resamples - start), len(labels)))
        differences.append(_accuracy_per_resample(correct_b, labels, index, metric, num_classes) - _accuracy_per_resample(correct_a, labels, index, metric, num_classes))
    differences = np.concatenate(differences)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(differences, [tail, 100 - tail])
    return BootstrapResult(metric, observed, float(low), float(high), resamples)
