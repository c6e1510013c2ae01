"""Cross-dataset evaluation: a model trained on one data set, tested on another's test split.

The two class lists are matched by name (every converted set names its classes as RAF-DB does, plus
Contempt; ``fer_lib.data.layouts``). Only the classes both sets have are scored:
- a model output the test set has no class for (Contempt, for an 8-class model on RAF-DB) is dropped
  and the remaining probabilities are renormalised, so the prediction is the most probable *shared*
  class;
- a test image whose class the model does not know (Contempt, for a 7-class model on AffectNet-8) is
  left out and counted.
Both are said in the result's ``notes``. OA, AA and the confusion matrix are over the shared
classes, in the test set's order.

``evaluate --checkpoint RUN --data OTHER`` scores any checkpoints on any data sets; ``run_results``
scores a report run's proposed model (every seed, head by head) on its own test split and on each
data set the run was given to test on (``run_all.sh --cross-data``), for notebook 09. Every number
is computed from saved prediction tables.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fer_lib import training
from fer_lib.data import tensors
from fer_lib.data.rafdb import RafDb, load_rafdb, read_classes, resolve_root
from fer_lib.evaluation.metrics import average_accuracy, confusion_matrix
from fer_lib.io import relative, save_json
from fer_lib.models import CheckpointError
from fer_lib.run.fusion_runs import read_fusion_predictions
from fer_lib.settings import PAPER_W, PAPER_WEIGHTING

CROSS_DIR = "cross"  # in a run folder: its models' predictions on other data sets' test splits
# the proposed model's heads, as the cross-dataset tables name them
HEADS = (
    ("rgb", "RGB (the baseline)"),
    ("landmark", "landmark only"),
    ("fused", "fused (proposed)"),
)
HOW_TO = (
    "No other data set was given to test on. Given one or more (RAF-DB's layout, or AffectNet, "
    "FERPlus or CK+ converted with `python -m fer_lib convert-data SRC OUT`), this section tests "
    "the run's proposed model, every seed and head (RGB, landmark only, fused), on each one's "
    "test split: OA, AA and the confusion matrix over the classes the two data sets share, in a "
    "table 'trained on A, tested on B' beside the run's own test split. An 8-class model's "
    "Contempt output is dropped on a 7-class set, and a 7-class model's missing Contempt images "
    "left out; each table row says so. Give them with `./run_all.sh ... --cross-data OTHER "
    "[OTHER ...]` (the notebook parameter CROSS_DATA, paths separated by ';'); `python -m "
    "fer_lib evaluate --checkpoint RUN ... --data OTHER ...` scores any trained checkpoints the "
    "same way."
)


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
    model: str | None = None  # which model or head, where the trained-on name does not say it
    seed: int | None = None  # its training seed, in a report run

    def row(self) -> dict:
        which = {k: v for k, v in (("model", self.model), ("seed", self.seed)) if v is not None}
        return {
            "trained on": self.trained_on,
            "tested on": self.tested_on,
            **which,
            "classes": len(self.shared),
            "test images": self.images,
            "OA": self.oa,
            "AA": self.aa,
            "notes": "; ".join(self.notes),
        }

    def file_stem(self) -> str:
        """The pair as a file name: ``an8_rgb_on_affectnet`` for "an8 (rgb)" on "affectnet"."""
        return slug(f"{self.trained_on}_on_{self.tested_on}")

    def confusion_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            self.confusion, index=pd.Index(self.shared, name="true"), columns=list(self.shared)
        )


def slug(text: str) -> str:
    """``text`` as a file name: runs of anything but letters, digits, '.', '+' and '-' become one
    '_'."""
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_")


def map_classes(model_classes, data_classes, labels: np.ndarray, probabilities: np.ndarray):
    """(labels, probabilities, kept rows, shared classes, notes) restricted to the classes both
    lists hold.

    ``labels`` index ``data_classes``; ``probabilities`` (N, len(model_classes)) index
    ``model_classes``. The returned labels and probability columns both index the shared classes, in
    ``data_classes``' order.
    """
    model_classes, data_classes = tuple(model_classes), tuple(data_classes)
    if probabilities.shape[1] != len(model_classes):
        raise ValueError(
            f"{probabilities.shape[1]} probabilities per image for {len(model_classes)} model "
            "classes"
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
            f"model output(s) {', '.join(unused)} dropped (the test set has no such class); "
            f"probabilities renormalised over the {len(shared)} shared classes"
        )
    columns = probabilities[:, [model_classes.index(c) for c in shared]]
    columns = columns / np.clip(columns.sum(1, keepdims=True), 1e-12, None)
    to_shared = np.array([shared.index(c) if c in shared else -1 for c in data_classes])
    mapped = to_shared[labels]
    kept = mapped >= 0
    for k, name in enumerate(data_classes):
        if to_shared[k] < 0 and (labels == k).any():
            notes.append(
                f"{int((labels == k).sum())} test image(s) of {name} left out (the model has no "
                "such class)"
            )
    return mapped[kept], columns[kept], kept, shared, notes


def cross_result(
    trained_on: str,
    tested_on: str,
    model_classes,
    data_classes,
    labels: np.ndarray,
    probabilities: np.ndarray,
    *,
    model: str | None = None,
    seed: int | None = None,
) -> CrossResult:
    """OA, AA and the confusion matrix of a model on another data set's test images, over the
    shared classes."""
    y, p, _, shared, notes = map_classes(
        model_classes, data_classes, np.asarray(labels), np.asarray(probabilities)
    )
    predicted, k = p.argmax(1), len(shared)
    oa, aa = float((predicted == y).mean()), average_accuracy(y, predicted, k)
    confusion = confusion_matrix(y, predicted, k)
    return CrossResult(trained_on, tested_on, shared, oa, aa, confusion, len(y), notes, model, seed)


def cross_table(results: list[CrossResult]) -> pd.DataFrame:
    """ "Trained on A, tested on B": one row per pair, the OA as a matrix in
    ``attrs['oa_matrix']``."""
    frame = pd.DataFrame([r.row() for r in results])
    frame.attrs["oa_matrix"] = frame.pivot(index="trained on", columns="tested on", values="OA")
    return frame


def with_fold_summary(table: pd.DataFrame) -> pd.DataFrame:
    """The table of paired runs (one model per fold, on its own fold's test split) with two more
    rows: the mean over the folds and their standard deviation (OA and AA; the folds' images
    counted once)."""
    summary = [
        {
            "trained on": label,
            "tested on": "",
            "classes": table["classes"].iloc[0],
            "test images": int(table["test images"].sum()),
            "OA": statistic(table["OA"]),
            "AA": statistic(table["AA"]),
            "notes": "",
        }
        for label, statistic in (
            (f"mean over {len(table)} folds", pd.Series.mean),
            ("sd over the folds", lambda column: column.std(ddof=1)),
        )
    ]
    out = pd.concat([table, pd.DataFrame(summary)], ignore_index=True)
    out.attrs = table.attrs
    return out


def name_of(path: Path) -> str:
    """A short name for a data set or run folder in tables: the folder's name (its parent's for
    basic/ or best.pt)."""
    path = Path(path)
    if path.name in ("basic", "best.pt", "last.pt"):
        path = path.parent
    return path.name


def data_name(root: Path) -> str:
    """A data set as the tables name it: its folder, what it is and its class count."""
    classes, info = read_classes(resolve_root(root))
    return f"{name_of(root)}: {info.get('layout', 'RAF-DB')}, {len(classes)} classes"


def data_cache(cache_dir: Path, root: Path) -> Path:
    """The cache folder of one data set's test split under ``cache_dir``: image names repeat between
    data sets (``test_00001.jpg`` of a converted AffectNet-8 is not that of its AffectNet-7), and
    the frozen-feature cache is keyed on the names, so each data set gets a folder of its own."""
    return Path(cache_dir) / hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:12]


def decode_test_split(
    test: RafDb, input_size: int, landmark_set: str, cache_dir: Path
) -> tensors.SplitTensors:
    """A data set's test split (``RafDb.split("test")``) at a model's input size, decoded once into
    its ``data_cache`` folder under ``cache_dir``."""
    return tensors.split_tensors(
        test,
        input_size,
        landmark_set=landmark_set,
        cache_dir=data_cache(cache_dir, test.root),
        progress=False,
    )


def predict_heads(
    baseline, fusion, config, split: tensors.SplitTensors, *, batch_size: int, cache_dir: Path
) -> training.FusionPredictions | np.ndarray:
    """A model's test probabilities on ``split``, over the model's classes: a baseline alone
    gives its (N, classes) probabilities (test batches of ``batch_size``), a fused model its
    three heads (its config's test batch). The models are on their device; ``cache_dir``: the
    split's own (``data_cache``)."""
    if fusion is None:
        return training.baseline_logits(baseline, split.images, batch_size).softmax(1).numpy()
    cache = training.rgb_feature_cache(
        baseline, split, flips=(False,), cache_dir=cache_dir, progress=False
    )
    return training.predict_fusion(fusion, split, cache, config)


def _run_predictions(experiment, root: Path, seed: int) -> training.FusionPredictions:
    """The proposed model of one seed on another data set's test split, head by head: computed once
    into ``<run>/cross/<data set>_seed<S>/`` (columns: the model's classes; labels: the data set's)
    and read back from there, as a rerun reads it. Recomputed when the model's checkpoint or the
    test split changed."""
    model, config = experiment.fusion.model(seed=seed)
    checkpoint = experiment.fusion.folder(PAPER_WEIGHTING, PAPER_W, seed) / "best.pt"
    test = load_rafdb(root).split("test")
    cache_dir = data_cache(Path(experiment.cache_dir) / CROSS_DIR, test.root)
    stamp = {
        # what the tables' labels index; p_<class>: the model's
        "label classes": list(test.classes),
        "model": [checkpoint.stat().st_size, checkpoint.stat().st_mtime_ns],
        "test split": hashlib.sha256(
            "\n".join(test.names).encode() + np.asarray(test.labels).tobytes()
        ).hexdigest()[:16],
    }
    folder = Path(experiment.run_dir) / CROSS_DIR / f"{name_of(root)}_{cache_dir.name}_seed{seed}"
    key = folder / "key.json"
    if key.exists() and json.loads(key.read_text()) == stamp:
        print(f"seed {seed} on {name_of(root)}: reusing {relative(folder)}")
    else:
        split = decode_test_split(
            test, model.baseline.input_size, config.landmark_set, cache_dir.parent
        )
        batch = config.eval_batch_size
        with torch.no_grad():
            predictions = predict_heads(
                model.baseline, model, config, split, batch_size=batch, cache_dir=cache_dir
            )
        training.save_fusion_predictions(predictions, folder)
        save_json(stamp, key)
    return read_fusion_predictions(folder)


def _run_data_name(experiment) -> str:
    """The run's own data set as the tables name it: the profile's synthetic set (under the run
    folder) by what it is, another by ``data_name``."""
    root, run_dir = Path(experiment.data_root).resolve(), Path(experiment.run_dir).resolve()
    if experiment.profile.synthetic and root.is_relative_to(run_dir):
        return f"synthetic RAF-DB (the profile's), {len(experiment.classes)} classes"
    return data_name(root)


def run_results(experiment) -> list[CrossResult]:
    """A report run's proposed model (confidence x agreement, w = ``PAPER_W``), each seed and head,
    on the run's own test split and on each data set of ``experiment.cross_data``, over the classes
    each pair shares; from saved predictions (the run's own, and ``<run>/cross/``). Empty when the
    run was given no other data set."""
    if not experiment.cross_data:
        return []
    trained_on = _run_data_name(experiment)
    results = []
    for root in [experiment.data_root, *experiment.cross_data]:
        own = Path(root) == Path(experiment.data_root)
        tested_on = f"{trained_on} (its own test split)" if own else data_name(root)
        data_classes = read_classes(resolve_root(root))[0]
        for seed in experiment.seeds:
            predictions = (
                experiment.fusion.run(seed=seed).predictions
                if own
                else _run_predictions(experiment, root, seed)
            )
            args = (trained_on, tested_on, predictions.classes, data_classes, predictions.labels)
            results += [
                cross_result(*args, getattr(predictions, head), model=name, seed=seed)
                for head, name in HEADS
            ]
    return results


def run_rows(results: list[CrossResult]) -> pd.DataFrame:
    """A report run's results one row per pair, head and seed."""
    return pd.DataFrame([r.row() for r in results])


def run_table(results: list[CrossResult]) -> pd.DataFrame:
    """ "Trained on A, tested on B" of a report run: per pair and head, OA and AA as mean and sd
    over the seeds, the shared classes and test images, and what the class mapping did
    (``notes``)."""

    def sd(values: pd.Series) -> float:
        return values.std(ddof=1) if len(values) > 1 else 0.0

    grouped = run_rows(results).groupby(["trained on", "tested on", "model"], sort=False)
    table = grouped.agg(
        seeds=("seed", "size"),
        classes=("classes", "first"),
        images=("test images", "first"),
        OA=("OA", "mean"),
        OA_sd=("OA", sd),
        AA=("AA", "mean"),
        AA_sd=("AA", sd),
        notes=("notes", "first"),
    )
    names = {"images": "test images", "OA_sd": "OA sd", "AA_sd": "AA sd"}
    return table.reset_index().rename(columns=names)


def confusion_picks(results: list[CrossResult]) -> dict[str, CrossResult]:
    """The results whose confusion matrices the report shows, by file name: the fused head of the
    first seed, one per data set tested on."""
    picks = {}
    for result in results:
        if result.model == dict(HEADS)["fused"]:
            picks.setdefault(f"cross_confusion_{slug(result.tested_on)[:60]}", result)
    return picks
