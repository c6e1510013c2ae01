"""Linear probes: what a linear model learns from the same input the networks see.

They are the branch table's reference rows. A network that does worse than a linear model on its own
input has not learned what its input allows; a linear model on global image statistics that beats
the majority class would reveal a shortcut in the data set.

- ``hog``: HOG features of the aligned images (scikit-image), the RGB branch's reference;
- ``coordinates``: the aligned landmark coordinates, the landmark branch's reference;
- ``global statistics``: mean and sd per colour channel of the original photo, its size, and the
  face's size and position from the manual points (the shortcut check of ``SYNTHETIC_DATA.md``).

Each probe is a standardised multinomial logistic regression (scikit-learn). Its regularisation is
chosen on a stratified validation split of the training set, never on the test set. Its solver runs
on one BLAS and OpenMP thread (``fit_probe``): the sums of a multithreaded matrix product are split
by the thread count, and the HOG probe's test OA moved by 0.0003 between two runs of the same
machine.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from skimage.feature import hog
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits
from torch.nn import functional

from fer_lib.data.rafdb import RafDb
from fer_lib.data.tensors import SplitTensors, stratified_split
from fer_lib.io import save_csv

C_GRID = (0.01, 0.1, 1.0)
HOG_SIDE = 64  # HOG on 64x64 grey images: 8x8 cells of 8 px


@dataclass(frozen=True)
class ProbeResult:
    name: str
    features: int
    c: float  # the regularisation chosen on the validation split
    validation_accuracy: float
    test_accuracy: float
    test_predicted: np.ndarray


def _model(c: float):
    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=300))


def fit_probe(c: float, x: np.ndarray, y: np.ndarray):
    """A probe fitted on one thread: the same numbers whatever threads the process was given."""
    with threadpool_limits(limits=1):
        return _model(c).fit(x, y)


def linear_probe(
    name: str,
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    *,
    seed: int = 0,
) -> ProbeResult:
    """Fit on the training split, C chosen on a 10% stratified validation split; refit on all."""
    fit, val = stratified_split(train_y, 0.1, seed)
    scores = {}
    # predictions too: a near-tie must not flip
    with warnings.catch_warnings(), threadpool_limits(limits=1):
        # a probe is a reference, not a tuned model
        warnings.simplefilter("ignore", ConvergenceWarning)
        for c in C_GRID:
            predicted = fit_probe(c, train_x[fit], train_y[fit]).predict(train_x[val])
            scores[c] = float((predicted == train_y[val]).mean())
        best = max(C_GRID, key=lambda c: (scores[c], -c))  # ties: the stronger regularisation
        predicted = fit_probe(best, train_x, train_y).predict(test_x)
    return ProbeResult(
        name, train_x.shape[1], best, scores[best], float((predicted == test_y).mean()), predicted
    )


def hog_features(images: np.ndarray) -> np.ndarray:
    """(N, D) HOG descriptors of uint8 images (N, 3, S, S), on grey images resized to 64x64."""
    grey = torch.as_tensor(images).float().mean(1, keepdim=True)
    grey = functional.interpolate(grey, size=(HOG_SIDE, HOG_SIDE), mode="area")[:, 0].numpy()
    return np.stack(
        [hog(g, orientations=9, pixels_per_cell=(8, 8), cells_per_block=(2, 2)) for g in grey]
    ).astype(np.float32)


def coordinate_features(points: np.ndarray, size: int) -> np.ndarray:
    """(N, 2K) aligned landmark coordinates as fractions of the canvas."""
    return (np.asarray(points, dtype=np.float32) / size).reshape(len(points), -1)


def _photo_statistics(path) -> list[float]:
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    return [*pixels.mean((0, 1)), *pixels.std((0, 1)), pixels.shape[1], pixels.shape[0]]


def global_statistics(rafdb) -> np.ndarray:
    """(N, 11) per sample: mean and sd of each channel of the original photo, its width
    and height, and the inter-ocular distance and eye-centre position from the manual
    points (relative to the photo)."""
    paths = (rafdb.original_path(i) for i in range(len(rafdb)))
    # PIL decodes without the GIL
    with ThreadPoolExecutor(max_workers=min(8, 2 * (os.cpu_count() or 1))) as pool:
        photos = np.asarray(list(pool.map(_photo_statistics, paths, chunksize=64)), np.float32)
    eyes = rafdb.manual5[:, :2]
    iod = np.linalg.norm(eyes[:, 1] - eyes[:, 0], axis=1)
    centre = eyes.mean(1)
    width, height = photos[:, 6], photos[:, 7]
    return np.column_stack(
        [photos, iod / np.minimum(width, height), centre[:, 0] / width, centre[:, 1] / height]
    ).astype(np.float32)


def probe_table(train: SplitTensors, test: SplitTensors, cache_dir: Path) -> pd.DataFrame:
    """Test accuracy of linear probes on each branch's input and of the majority class, computed
    once per data set and input size (``cache/probes_<key>.csv``) and reused."""
    key = hashlib.sha256(
        f"{train.input_size}|{HOG_SIDE}|{C_GRID}|".encode()
        + "\n".join(train.names + test.names).encode()
    ).hexdigest()[:16]
    path = cache_dir / f"probes_{key}.csv"
    if path.exists():
        print(f"reusing the linear probes in {path.name}")
        return pd.read_csv(path)
    y_train, y_test = train.labels.numpy(), test.labels.numpy()
    size = train.input_size
    probes = {
        "linear probe, HOG (aligned images)": lambda split: hog_features(split.images.numpy()),
        "linear probe, coordinates (aligned landmarks)": lambda split: coordinate_features(
            split.points.numpy(), size
        ),
    }
    results = [
        linear_probe(name, features(train), y_train, features(test), y_test)
        for name, features in probes.items()
    ]
    majority = int(np.bincount(y_train).argmax())
    rows = [
        (r.name, "RGB" if "HOG" in r.name else "landmarks", r.test_accuracy, r.features, r.c)
        for r in results
    ]
    majority_oa = float((y_test == majority).mean())
    rows.append((f"majority class ({train.classes[majority]})", "none", majority_oa, 0, np.nan))
    columns = ["model", "input", "test OA", "features", "C (chosen on validation)"]
    frame = pd.DataFrame(rows, columns=columns)
    save_csv(frame, path)
    return frame


def shortcut_table(rafdb: RafDb, cache_dir: Path) -> pd.DataFrame:
    """The no-shortcut check of SYNTHETIC_DATA.md on this data set: a linear probe on global photo
    statistics (colour, photo size, face size and position) against the majority class; the first
    should not beat the second."""
    # computed once per data set (reading every original photo is most of a notebook's time), reused
    key = hashlib.sha256(
        f"shortcut|{C_GRID}|".encode()
        + "\n".join(rafdb.names).encode()
        + np.asarray(rafdb.labels).tobytes()
    ).hexdigest()[:16]
    path = cache_dir / f"shortcut_{key}.csv"
    if path.exists():
        print(f"reusing the no-shortcut check in {path.name}")
        return pd.read_csv(path)
    stats = global_statistics(rafdb)
    is_train = rafdb.splits == "train"
    y_train, y_test = rafdb.labels[is_train], rafdb.labels[~is_train]
    result = linear_probe("global statistics", stats[is_train], y_train, stats[~is_train], y_test)
    majority = float((y_test == np.bincount(y_train).argmax()).mean())
    frame = pd.DataFrame(
        [
            {
                "linear probe on": "photo colour, photo size, face size and position",
                "features": result.features,
                "test OA": result.test_accuracy,
                "majority-class rate": majority,
                "gain over the majority class": result.test_accuracy - majority,
            }
        ]
    )
    save_csv(frame, path)
    return frame
