"""Cross-dataset evaluation: a model trained on one data set, tested on another's test split.

The two class lists are matched by name (every converted set names its classes as RAF-DB does, plus Contempt;
``fer_lib.layouts``). Only the classes both sets have are scored:
- a model output the test set has no class for (Contempt, for an 8-class model on RAF-DB) is dropped and the
  remaining probabilities are renormalised, so the prediction is the most probable *shared* class;
- a test image whose class the model does not know (Contempt, for a 7-class model on AffectNet-8) is left out
  and counted.
Both are said in the result's ``notes``. OA, AA and the confusion matrix are over the shared classes, in the test
set's order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fer_lib.metrics import average_accuracy, confusion_matrix
from fer_lib.models import CheckpointError


@dataclass
class CrossResult:
    """A model's accuracy on another data set's test split, over the classes the two share."""

    trained_on: str
    tested_on: str
    shared: tuple[str, ...]
    oa: float
    aa: float
    confusion: np.ndarray  # (K, K) rows: true class, columns: predicted, over ``shared``
    images: int  # test images scored
    notes: list[str] = field(default_factory=list)

    def row(self) -> dict:
        return {
            "trained on": self.trained_on,
            "tested on": self.tested_on,
            "classes": len(self.shared),
            "test images": self.images,
            "OA": self.oa,
            "AA": self.aa,
            "notes": "; ".join(self.notes),
        }

    def confusion_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            self.confusion, index=pd.Index(self.shared, name="true"), columns=list(self.shared)
        )


def map_classes(model_classes, data_classes, labels: np.ndarray, probabilities: np.ndarray):
    """(labels, probabilities, kept rows, shared classes, notes) restricted to the classes both lists hold.

    ``labels`` index ``data_classes``; ``probabilities`` (N, len(model_classes)) index ``model_classes``. The
    returned labels and probability columns both index the shared classes, in ``data_classes``' order.
    """
    model_classes, data_classes = tuple(model_classes), tuple(data_classes)
    if probabilities.shape[1] != len(model_classes):
        raise ValueError(
            f"{probabilities.shape[1]} probabilities per image for {len(model_classes)} model classes"
        )
    shared = tuple(c for c in data_classes if c in model_classes)
    if len(shared) < 2:
        raise CheckpointError(
            f"the model's classes ({', '.join(model_classes)}) and the data set's "
            f"({', '.join(data_classes)}) share fewer than two: nothing to compare"
        )
    notes = []
    unused = [c for c in model_classes if c not in shared]
    if unused:
        notes.append(
            f"model output(s) {', '.join(unused)} dropped (the test set has no such class); probabilities "
            f"renormalised over the {len(shared)} shared classes"
        )
    columns = probabilities[:, [model_classes.index(c) for c in shared]]
    columns = columns / np.clip(columns.sum(1, keepdims=True), 1e-12, None)
    to_shared = np.array([shared.index(c) if c in shared else -1 for c in data_classes])
    mapped = to_shared[labels]
    kept = mapped >= 0
    for k, name in enumerate(data_classes):
        if to_shared[k] < 0 and (labels == k).any():
            notes.append(
                f"{int((labels == k).sum())} test image(s) of {name} left out (the model has no such class)"
            )
    return mapped[kept], columns[kept], kept, shared, notes


def cross_result(
    trained_on: str,
    tested_on: str,
    model_classes,
    data_classes,
    labels: np.ndarray,
    probabilities: np.ndarray,
) -> CrossResult:
    """OA, AA and the confusion matrix of a model on another data set's test images, over the shared classes."""
    y, p, _, shared, notes = map_classes(
        model_classes, data_classes, np.asarray(labels), np.asarray(probabilities)
    )
    predicted = p.argmax(1)
    k = len(shared)
    return CrossResult(
        trained_on,
        tested_on,
        shared,
        float((predicted == y).mean()),
        average_accuracy(y, predicted, k),
        confusion_matrix(y, predicted, k),
        len(y),
        notes,
    )


def cross_table(results: list[CrossResult]) -> pd.DataFrame:
    """ "Trained on A, tested on B": one row per pair, and the OA as a matrix in ``attrs['oa_matrix']``."""
    frame = pd.DataFrame([r.row() for r in results])
    frame.attrs["oa_matrix"] = frame.pivot(index="trained on", columns="tested on", values="OA")
    return frame


def with_fold_summary(table: pd.DataFrame) -> pd.DataFrame:
    """The table of paired runs (one model per fold, on its own fold's test split) with two more rows: the mean
    over the folds and their standard deviation (OA and AA; the folds' images counted once)."""
    summary = [
        {
            "trained on": f"mean over {len(table)} folds",
            "tested on": "",
            "classes": table["classes"].iloc[0],
            "test images": int(table["test images"].sum()),
            "OA": table["OA"].mean(),
            "AA": table["AA"].mean(),
            "notes": "",
        },
        {
            "trained on": "sd over the folds",
            "tested on": "",
            "classes": table["classes"].iloc[0],
            "test images": int(table["test images"].sum()),
            "OA": table["OA"].std(ddof=1),
            "AA": table["AA"].std(ddof=1),
            "notes": "",
        },
    ]
    out = pd.concat([table, pd.DataFrame(summary)], ignore_index=True)
    out.attrs = table.attrs
    return out


def name_of(path: Path) -> str:
    """A short name for a data set or run folder in tables: the folder's name (its parent's for basic/ or best.pt)."""
    path = Path(path)
    if path.name in ("basic", "best.pt", "last.pt"):
        path = path.parent
    return path.name
