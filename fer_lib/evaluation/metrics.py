"""Evaluation metrics of the paper (section 5): per-class accuracy, overall top-k and average
accuracy, the confusion matrix and Table 2's RGB x landmark contingency table.

Pure numpy on label arrays (0-based class ids) and score arrays (N, C) of logits or probabilities;
torch CPU tensors work too (anything ``np.asarray`` takes). Key names follow the paper's numbers
in fer_lib/resources/paper_results.json.

Conventions:
- per-class accuracy is the recall of each class (Table 5); a class absent from ``y_true`` gets NaN.
- average accuracy (AA) is the mean per-class accuracy over the classes present in ``y_true`` (Table
  6); it is the unweighted mean, not the overall accuracy (the mistake DAN's authors corrected,
  ARM_NOTES.md).
- the class count: RAF-DB's 7 unless ``num_classes`` gives the data set's own (8 with Contempt for a
  converted AffectNet); ``summary`` takes it from the scores' columns.
- top-k ranks classes by descending score, ties broken towards the lower class id (as ``argmax``
  does), so top-1 always equals the accuracy of ``scores.argmax(1)``.
"""

from __future__ import annotations

import numpy as np

from fer_lib.data.rafdb import NUM_CLASSES


def _labels(y: np.ndarray, num_classes: int, name: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of class ids, got shape {y.shape}")
    if y.size and (not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"{name} must hold integer class ids in 0..{num_classes - 1}")
    return y.astype(np.int64)


def confusion_matrix(
    y_true: np.ndarray, y_pred: np.ndarray, num_classes: int = NUM_CLASSES
) -> np.ndarray:
    """(C, C) counts: rows are true classes, columns predicted classes."""
    y_true, y_pred = _labels(y_true, num_classes, "y_true"), _labels(y_pred, num_classes, "y_pred")
    if y_true.shape != y_pred.shape:
        raise ValueError(
            f"y_true and y_pred differ in length: {y_true.shape[0]} vs {y_pred.shape[0]}"
        )
    counts = np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def per_class_accuracy(
    y_true: np.ndarray, y_pred: np.ndarray, num_classes: int = NUM_CLASSES
) -> np.ndarray:
    """(C,) recall per class; NaN for a class with no sample in ``y_true``."""
    matrix = confusion_matrix(y_true, y_pred, num_classes)
    support = matrix.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(matrix) / support, np.nan)


def overall_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of correct predictions."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim != 1 or y_true.size == 0:
        raise ValueError(
            f"need two non-empty label arrays of one length, got {y_true.shape} and {y_pred.shape}"
        )
    return float(np.mean(y_true == y_pred))


def average_accuracy(
    y_true: np.ndarray, y_pred: np.ndarray, num_classes: int = NUM_CLASSES
) -> float:
    """Mean per-class accuracy over the classes present in ``y_true`` (balanced accuracy)."""
    return float(np.nanmean(per_class_accuracy(y_true, y_pred, num_classes)))


def topk_accuracy(y_true: np.ndarray, scores: np.ndarray, k: int) -> float:
    """Fraction of samples whose true class is among the k highest scores (scores: (N, C))."""
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must be (N, C), got shape {scores.shape}")
    y_true = _labels(y_true, scores.shape[1], "y_true")
    if y_true.shape[0] != scores.shape[0] or y_true.size == 0:
        raise ValueError(
            f"{y_true.shape[0]} labels for {scores.shape[0]} score rows (need equal, non-zero)"
        )
    if not 1 <= k <= scores.shape[1]:
        raise ValueError(f"k must be in 1..{scores.shape[1]}, got {k}")
    # (N, k); stable: ties go to the lower class id
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float(np.mean((top == y_true[:, None]).any(axis=1)))


def contingency_2x2(
    correct_a: np.ndarray, correct_b: np.ndarray, names: tuple[str, str] = ("rgb", "landmark")
) -> dict[str, int]:
    """Table 2: counts of (a right/wrong) x (b right/wrong) from two boolean arrays of per-sample
    correctness. Keys are ``{a}_correct_{b}_correct``, ``{a}_correct_{b}_wrong``,
    ``{a}_wrong_{b}_correct``, ``{a}_wrong_{b}_wrong``, with a = rgb and b = landmark by default
    (paper_results.json's names)."""
    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(
            f"need two 1-D correctness arrays of one length, got {a.shape} and {b.shape}"
        )
    name_a, name_b = names
    return {
        f"{name_a}_correct_{name_b}_correct": int(np.sum(a & b)),
        f"{name_a}_correct_{name_b}_wrong": int(np.sum(a & ~b)),
        f"{name_a}_wrong_{name_b}_correct": int(np.sum(~a & b)),
        f"{name_a}_wrong_{name_b}_wrong": int(np.sum(~a & ~b)),
    }


def summary(
    y_true: np.ndarray, scores: np.ndarray, num_classes: int | None = None
) -> dict[str, float | list[float]]:
    """Tables 5 and 6 for one model: oa_top1, oa_top2, oa_top3, aa and per_class (a list;
    NaN = absent class). ``num_classes``: the data set's class count; by default the
    scores' columns, one per class."""
    scores = np.asarray(scores)
    if scores.ndim != 2 or scores.shape[1] != (num_classes or scores.shape[1]):
        raise ValueError(f"scores must be (N, {num_classes or 'C'}), got shape {scores.shape}")
    num_classes = scores.shape[1]
    y_pred = scores.argmax(axis=1)
    result: dict[str, float | list[float]] = {
        f"oa_top{k}": topk_accuracy(y_true, scores, k) for k in (1, 2, 3) if k <= num_classes
    }
    result["aa"] = average_accuracy(y_true, y_pred, num_classes)
    result["per_class"] = per_class_accuracy(y_true, y_pred, num_classes).tolist()
    return result
