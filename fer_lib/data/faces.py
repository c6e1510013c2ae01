"""Faces in any photo, offline: detection and 68 landmarks with dlib, and the import of a folder of
face photos into RAF-DB's layout (``python -m fer_lib import-images``), which every other command
then reads unchanged.

dlib's HOG face detector and its 68-point shape predictor come from PyPI (``dlib-bin``, and
``face-recognition-models`` for the model files). The 68-point model was trained on iBUG 300-W,
whose licence allows research use only. From the 68 points this module derives RAF-DB's 5 manual
points (eye centres, nose tip, mouth corners) and the 37 automatic ones
(``landmarks.AUTO37_FROM_IBUG68``), and makes the 100x100 aligned crop with the project's own
5-point alignment (``synthetic.warp_aligned``, as the demo data is aligned).
"""

from __future__ import annotations

import csv
import importlib.util
import multiprocessing
import os
from contextlib import ExitStack
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import dlib
import numpy as np
import pandas as pd
from PIL import Image, ImageOps
from tqdm.auto import tqdm

from fer_lib.data import landmarks, rafdb
from fer_lib.data.synthetic import warp_aligned
from fer_lib.data.tensors import stratified_split
from fer_lib.io import save_csv

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# Folder names of the usual expression data sets, matched case-insensitively, to RAF-DB's classes.
CLASS_ALIASES = {
    "Surprise": ("surprise", "surprised", "surprize"),
    "Fear": ("fear", "fearful", "afraid", "scared"),
    "Disgust": ("disgust", "disgusted", "contempt_disgust"),
    "Happiness": ("happiness", "happy", "joy", "smile", "smiling"),
    "Sadness": ("sadness", "sad"),
    "Anger": ("anger", "angry", "mad"),
    "Neutral": ("neutral", "calm", "none"),
}
ALIAS_TO_CLASS = {alias: k for k, name in enumerate(rafdb.CLASSES) for alias in CLASS_ALIASES[name]}
# larger photos are detected on a reduced copy (boxes and points mapped back)
DETECTION_MAX_SIDE = 1600
# Weaker detections are taken as false ones: on scikit-image's astronaut photo saved as JPEG, the
# face scores 1.63 and the mission patch on her suit 0.07, and the patch, being larger, would be
# "the largest face".
MIN_DETECTION_SCORE = 0.3


class FaceToolsMissing(RuntimeError):
    """dlib or its model files are not installed."""


class ImportProblem(ValueError):
    """A source that cannot be imported as asked (no photos, a bad CSV line,
    a folder that holds data)."""


@lru_cache(maxsize=1)
def _models():
    # the model file is found without importing face_recognition_models, which needs setuptools'
    # pkg_resources
    spec = importlib.util.find_spec("face_recognition_models")
    models = Path(next(iter(spec.submodule_search_locations))) / "models" if spec else None
    model = models / "shape_predictor_68_face_landmarks.dat" if models else None
    if model is None or not model.is_file():
        raise FaceToolsMissing(
            "face detection needs dlib-bin and face-recognition-models (missing: "
            "face-recognition-models (its 68-point model file)); pip install dlib-bin "
            "face-recognition-models, or ./run_all.sh installs them"
        )
    return dlib.get_frontal_face_detector(), dlib.shape_predictor(str(model))


@dataclass
class Face:
    """One detected face: its box (x1, y1, x2, y2) and 68 iBUG points, in the photo's pixels."""

    box: tuple[float, float, float, float]
    points68: np.ndarray
    score: float = float("nan")  # dlib's detection score

    @property
    def area(self) -> float:
        return (self.box[2] - self.box[0]) * (self.box[3] - self.box[1])

    @property
    def manual5(self) -> np.ndarray:
        """RAF-DB's 5 manual points: left and right eye centres (image left = smaller
        x), nose tip, mouth corners."""
        return landmarks.manual5_from_ibug68(self.points68)

    @property
    def auto37(self) -> np.ndarray:
        return landmarks.auto37_from_ibug68(self.points68)


def load_photo(path: str | os.PathLike) -> Image.Image:
    """A photo as 8-bit RGB, upright: EXIF orientation applied; grayscale, RGBA (on white), palette
    and 16-bit images converted."""
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image)
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            array = np.asarray(image, dtype=np.float64)
            scale = 257.0 if array.max() > 255 else 1.0  # 16-bit range to 8 bits
            image = Image.fromarray(np.clip(array / scale, 0, 255).astype(np.uint8)).convert("RGB")
        elif image.mode in ("RGBA", "LA", "PA") or (
            image.mode == "P" and "transparency" in image.info
        ):
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image = Image.alpha_composite(background, rgba).convert("RGB")
        else:
            image = image.convert("RGB")
        image.load()
        return image


def detect_faces(
    image: Image.Image, *, max_upsample: int = 2, min_score: float = None
) -> list[Face]:
    """The faces dlib's HOG detector finds, largest first, with their 68 points and scores. A photo
    is reduced to at most DETECTION_MAX_SIDE for detection; a small one is upsampled (up to
    ``max_upsample`` times) until a face appears. Detections scoring under ``min_score`` (default
    MIN_DETECTION_SCORE) are dropped as false ones, unless nothing else was found."""
    detector, predictor = _models()
    min_score = MIN_DETECTION_SCORE if min_score is None else min_score
    scale = min(1.0, DETECTION_MAX_SIDE / max(image.size))
    small = (round(image.width * scale), round(image.height * scale))
    pixels = np.asarray(image if scale == 1.0 else image.resize(small, Image.Resampling.BILINEAR))
    boxes, scores = [], []
    for upsample in range(max_upsample + 1):
        boxes, scores, _ = detector.run(pixels, upsample, 0.0)
        if len(boxes):
            break
    kept = [(box, score) for box, score in zip(boxes, scores) if score >= min_score] or list(
        zip(boxes, scores)
    )[:1]
    faces = []
    full = np.asarray(image)
    for box, score in kept:
        x1, y1, x2, y2 = (v / scale for v in (box.left(), box.top(), box.right(), box.bottom()))
        shape = predictor(full, dlib.rectangle(round(x1), round(y1), round(x2), round(y2)))
        points = np.array([[shape.part(k).x, shape.part(k).y] for k in range(68)], dtype=np.float64)
        faces.append(Face((x1, y1, x2, y2), points, float(score)))
    return sorted(faces, key=lambda face: face.area, reverse=True)


def align(image: Image.Image, face: Face) -> Image.Image:
    """The 100x100 aligned crop of a face, made as the project aligns every image (eyes to (25, 35)
    and (75, 35), mouth centre to (50, 75), by the least-squares similarity)."""
    return warp_aligned(image, face.manual5)


def detector_quality(data: rafdb.RafDb, count: int = 200) -> pd.DataFrame:
    """How well dlib finds the faces of a data set and how far its 37 points fall from the data
    set's own, on ``count`` original images spread evenly over it: the share found (a box holding
    both annotated eye centres) and the normalised mean error of the 37 points over the inter-ocular
    distance (median and mean over images). On the synthetic set the files' points are the drawn
    face's plus the simulated detector's noise."""
    picks = np.linspace(0, len(data) - 1, min(count, len(data))).astype(int)
    found, errors = 0, []
    for i in picks:
        eyes = data.manual5[i][:2]
        detected = [
            f
            for f in detect_faces(load_photo(data.original_path(i)))
            if all(f.box[0] <= x <= f.box[2] and f.box[1] <= y <= f.box[3] for x, y in eyes)
        ]
        if detected:
            found += 1
            error = np.linalg.norm(detected[0].auto37 - data.auto37[i], axis=1).mean()
            errors.append(float(error / np.linalg.norm(eyes[1] - eyes[0])))
    row = {"images": len(picks), "faces found": found, "share found": found / len(picks)}
    row["NME of the 37 points, median"] = float(np.median(errors)) if errors else np.nan
    row["NME, mean"] = float(np.mean(errors)) if errors else np.nan
    return pd.DataFrame([row])


# -----------------------------------------------------------------------------------------------
# import


@dataclass
class Source:
    """One photo to import: its path, class index, and split when the source fixes it."""

    path: Path
    label: int | None
    split: str | None = None
    problem: str = ""


def class_of(name: str) -> int | None:
    """RAF-DB class index of a folder or label name (aliases, any case;
    RAF-DB's numbers 1..7 too)."""
    key = name.strip().lower()
    if key.isdigit() and 1 <= int(key) <= 7:
        return int(key) - 1
    return ALIAS_TO_CLASS.get(key)


def find_sources(src: Path) -> tuple[list[Source], str]:
    """The photos of ``src`` and how they were found: a CSV of ``path,label[,split]``; RAF-DB's
    mirror layout (``train/1..7`` and ``test/1..7``); or one folder per class."""
    src = Path(src)
    if src.is_file():
        return _from_csv(src), f"the list {src.name}"
    if not src.is_dir():
        raise ImportProblem(f"{src}: no such folder or CSV file")
    splits = [d for d in src.iterdir() if d.is_dir() and d.name.lower() in ("train", "test")]
    sources = [
        source
        for parent, split in [(d, d.name.lower()) for d in splits] or [(src, None)]
        for folder in sorted(d for d in parent.iterdir() if d.is_dir())
        for source in _from_class_folder(folder, split)
    ]
    if splits:
        return sources, "RAF-DB's mirror layout (train/ and test/ folders of classes)"
    if not sources:
        raise ImportProblem(
            f"{src}: no class folders with photos (expected e.g. happy/, sad/, ... or train/1..7, "
            "or a CSV of path,label)"
        )
    return sources, "one folder per class"


def _from_class_folder(folder: Path, split: str | None) -> list[Source]:
    label = class_of(folder.name)
    photos = sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    problem = (
        ""
        if label is not None
        else f"unknown class folder {folder.name!r} (expected one of "
        f"{', '.join(sorted(ALIAS_TO_CLASS))} or 1..7)"
    )
    return [Source(p, label, split, problem) for p in photos]


def _from_csv(path: Path) -> list[Source]:
    sources = []
    with open(path, newline="", encoding="utf-8") as handle:
        for number, row in enumerate(csv.reader(handle), start=1):
            if not row or (number == 1 and row[0].strip().lower() == "path"):
                continue
            if len(row) < 2:
                raise ImportProblem(
                    f"{path}:{number}: expected path,label[,split], got {','.join(row)!r}"
                )
            photo = (path.parent / row[0].strip()).resolve()
            label = class_of(row[1])
            split = row[2].strip().lower() if len(row) > 2 and row[2].strip() else None
            problem = (
                "" if label is not None else f"unknown class {row[1]!r} ({path.name} line {number})"
            )
            if split not in (None, "train", "test"):
                problem = (
                    f"unknown split {row[2]!r} ({path.name} line {number}; expected train or test)"
                )
            sources.append(Source(photo, label, split, problem))
    return sources


def _import_one(task: tuple[str, str, str]) -> dict:
    """Detect, fit, align and write one photo as RAF-DB sample ``name`` under ``out``; returns what
    happened."""
    path, out, name = task
    out = Path(out)
    result = {"image": path, "name": name}
    try:
        image = load_photo(path)
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        return result | {"status": "unreadable", "reason": f"{type(error).__name__}: {error}"}
    faces = detect_faces(image)
    if not faces:
        reason = "dlib's detector found no face (upsampled up to 2x)"
        return result | {"status": "no face", "reason": reason}
    face = faces[0]
    image.save(out / rafdb.ORIGINAL_DIR / name, quality=95)
    align(image, face).save(out / rafdb.ALIGNED_DIR / rafdb.aligned_name(name), quality=95)
    unknown = [rafdb.UNKNOWN_ATTRIBUTE] * 3  # gender, race and age are not known
    rafdb.write_annotations(out, name, face.manual5, unknown, face.auto37, face.box)
    note = f"{len(faces)} faces: kept the largest" if len(faces) > 1 else ""
    already = image.size == (landmarks.ALIGNED_SIZE, landmarks.ALIGNED_SIZE)
    imported = {"status": "imported", "reason": note, "already aligned": already}
    return result | imported | {"faces": len(faces)}


def _assign_splits(usable: list[Source], test_fraction: float, seed: int) -> np.ndarray:
    """Each photo's split: the one its source gives, else a stratified, seeded ``test_fraction``
    of the photos without one goes to test and the rest to train."""
    labels = np.array([s.label for s in usable])
    splits = np.array([s.split or "" for s in usable], dtype=object)
    unsplit = np.flatnonzero(splits == "")
    if len(unsplit):
        _, held = stratified_split(labels[unsplit], test_fraction, seed)
        splits[unsplit] = "train"
        splits[unsplit[held]] = "test"
    return splits


def _import_tasks(
    usable: list[Source], splits: np.ndarray, out: Path
) -> tuple[list[tuple[str, str, str]], dict[str, int]]:
    """One ``_import_one`` task per photo, named in RAF-DB's style by split, and each name's
    label."""
    counters = {"train": 0, "test": 0}
    tasks, label_of = [], {}
    for source, split in zip(usable, splits):
        counters[split] += 1
        width = 5 if split == "train" else 4
        name = f"{split}_{counters[split]:0{width}d}.jpg"
        tasks.append((str(source.path), str(out), name))
        label_of[name] = source.label
    return tasks, label_of


def _run_imports(tasks: list[tuple[str, str, str]], workers: int, progress: bool) -> list[dict]:
    """``_import_one`` on every task, in task order, in this process or a pool."""
    with ExitStack() as stack:
        if workers > 1 and len(tasks) >= 8:
            pool = stack.enter_context(multiprocessing.get_context("spawn").Pool(workers))
            found = pool.imap(_import_one, tasks, chunksize=4)
        else:
            found = map(_import_one, tasks)
        bar = tqdm(found, total=len(tasks), desc="import", unit="photo", disable=not progress)
        return list(bar)


def import_images(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    test_fraction: float = 0.2,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
) -> dict:
    """Turn the face photos of ``src`` (see ``find_sources``) into a data set in RAF-DB's layout
    under ``out``; returns counts, for the command to print. Photos without a face, unreadable files
    and unknown classes are listed in ``out/import_report.csv`` with the reason, never dropped
    silently. Where the source gives no split, a stratified, seeded ``test_fraction`` is the test
    split."""
    if not 0 < test_fraction < 1:
        raise ImportProblem(f"test fraction must be in (0, 1), got {test_fraction}")
    _models()  # fail now, not in every worker, if the face tools are missing
    sources, how = find_sources(Path(src))
    out = Path(out)
    if (out / rafdb.LABEL_FILE).exists():
        raise ImportProblem(
            f"{out} already holds a data set ({rafdb.LABEL_FILE}); choose an empty folder"
        )
    rafdb.make_layout_dirs(out)
    rejected = [
        {"image": str(s.path), "name": "", "status": "unknown class", "reason": s.problem}
        for s in sources
        if s.problem
    ]
    usable = [s for s in sources if not s.problem]
    if not usable:
        raise ImportProblem(
            f"{src}: no photo of a known class to import (see the class names in README, 'Any "
            "face photo')"
        )
    tasks, label_of = _import_tasks(usable, _assign_splits(usable, test_fraction, seed), out)
    workers = min(os.cpu_count() or 1, 8) if workers is None else workers
    results = _run_imports(tasks, workers, progress)
    imported = [r for r in results if r["status"] == "imported"]
    # names keep their split's numbering (gaps where a photo had no face)
    labels = "".join(f"{r['name']} {label_of[r['name']] + 1}\n" for r in imported)
    (out / rafdb.LABEL_FILE).write_text(labels)

    columns = ["image", "name", "status", "reason"]
    listed = [
        {k: r[k] for k in columns} for r in results if r["status"] != "imported" or r["reason"]
    ]
    save_csv(pd.DataFrame(rejected + listed, columns=columns), out / "import_report.csv")
    return {
        "found": how,
        "photos": len(sources),
        "imported": len(imported),
        "train": sum(r["name"].startswith("train") for r in imported),
        "test": sum(r["name"].startswith("test") for r in imported),
        "not imported": len(sources) - len(imported),
        "several faces": sum(r["faces"] > 1 for r in imported),
        "already aligned": sum(r["already aligned"] for r in imported),
    }
