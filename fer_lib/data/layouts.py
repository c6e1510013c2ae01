"""Data sets beyond RAF-DB: which layout a folder holds, and the conversion of a copy into RAF-DB's
layout.

Design. Every command after ``check-data`` reads one layout, RAF-DB's (``fer_lib.data.rafdb``).
AffectNet (both releases), FERPlus and CK+ are therefore *converted* once into that layout (``python
-m fer_lib convert-data SRC OUT``), never read by the training code directly:
- a face's 68 iBUG points give RAF-DB's 5 manual points and the project's 37 automatic ones through
  the same mapping ``import-images`` uses (``landmarks.manual5_from_ibug68``,
  ``auto37_from_ibug68``). AffectNet and CK+ ship their 68 points; FERPlus's 48x48 faces go through
  the project's detector (``faces.detect_faces``) on an upsampled copy, and faces it cannot find are
  listed in ``conversion_report.csv``, never dropped silently;
- the converted copy carries ``classes.json``: its class list, layout, protocol and the rows the
  protocol excluded, by reason. Classes are RAF-DB's 7 in RAF-DB's order, plus Contempt as an 8th
  where it is kept, so a label means the same class in every converted set and cross-dataset
  evaluation maps classes by name;
- ``sources.csv`` says where every converted image came from (file, row, the data set's own label
  code).

Conversion streams: each reader yields one sample at a time (AffectNet's 280,000-row CSV is read row
by row), a worker pool decodes, crops, aligns and writes, and the label file grows in a temporary
file renamed at the end, so neither the decoded set nor its annotations are ever held in memory at
once.

The readers (``fer_lib.data.affectnet``, ``ferplus``, ``ckplus``; found for a folder by
``fer_lib.data.datasets``) check with the same policy as RAF-DB's: every problem names the file, the
row and what to do; nothing is skipped silently.
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from fer_lib.data import landmarks, rafdb
from fer_lib.data.synthetic import warp_aligned

# The layouts check-data recognises, and how it names them.
LAYOUT_NAMES = {
    "rafdb": "RAF-DB",
    "affectnet": "AffectNet (CSV release)",
    "affectnet-npy": "AffectNet (numpy release)",
    "ferplus": "FERPlus",
    "ckplus": "CK+",
    "photos": "a folder of photos",
}
# a face box (or the landmarks' box) widened by this share of its size on every side
CROP_MARGIN = 0.25
SOURCES_FILE = "sources.csv"
REPORT_FILE = "conversion_report.csv"
SOFT_LABELS_FILE = "soft_labels.csv"  # FERPlus's probability mode: one row per converted image


class DataSetError(rafdb.RafDbError):
    """A copy of a data set that cannot be used; ``problems`` lists every reason found."""

    def __init__(self, problems: list[str], layout: str = "data set", root: Path | None = None):
        self.problems = list(problems)
        shown = "\n  ".join(self.problems[:20])
        more = f"\n  ... and {len(self.problems) - 20} more" if len(self.problems) > 20 else ""
        where = f" in {root}" if root else ""
        ValueError.__init__(
            self, f"{len(self.problems)} problem(s) with the {layout} copy{where}:\n  {shown}{more}"
        )


def class_index(classes: tuple[str, ...]) -> dict[str, int]:
    return {name: k for k, name in enumerate(classes)}


def project_classes(with_contempt: bool) -> tuple[str, ...]:
    """The class list of a converted set: RAF-DB's 7 in RAF-DB's order, then
    Contempt when it is kept."""
    return rafdb.CLASSES_8 if with_contempt else rafdb.CLASSES


def detect_layout(path: str | os.PathLike) -> str:
    """The key (``LAYOUT_NAMES``) of the layout ``path`` holds; DataSetError saying what was looked
    for if none."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataSetError([f"{path}: no such file or folder"])
    if path.is_file():
        if path.name in ("fer2013.csv", "fer2013new.csv"):
            return "ferplus"
        raise DataSetError(
            [
                f"{path}: a file; pass the folder of a data set (RAF-DB's basic/, AffectNet's, "
                "FERPlus's folder holding fer2013.csv and fer2013new.csv, or CK+'s)"
            ]
        )
    if (path / "EmoLabel").is_dir() or (path / "basic" / "EmoLabel").is_dir():
        return "rafdb"
    if (path / "train_set").is_dir() or (path / "val_set").is_dir():
        return "affectnet-npy"
    if (path / "Manually_Annotated_Images").is_dir() or any(
        (path / d).is_dir() for d in AFFECTNET_LIST_DIRS
    ):
        return "affectnet"
    if (path / "fer2013.csv").exists() or (path / "fer2013new.csv").exists():
        return "ferplus"
    if (path / "cohn-kanade-images").is_dir():
        return "ckplus"
    if _holds_photos(path):
        return "photos"
    raise DataSetError(
        [
            f"{path}: no known layout. Looked for RAF-DB (EmoLabel/), AffectNet "
            "(Manually_Annotated_Images/ with training.csv and validation.csv, or train_set/ "
            "and val_set/), FERPlus (fer2013.csv and fer2013new.csv), CK+ (cohn-kanade-images/, "
            "Emotion/, Landmarks/) and class folders of photos"
        ]
    )


def _holds_photos(path: Path, depth: int = 2) -> bool:
    """Whether class folders (or train/ and test/ holding them) under ``path`` hold image
    files; a bounded look (the first 200 entries of each folder), so a folder of anything
    else is not taken for photos."""
    # data.faces loads torch and pandas (via data.tensors and io): 5.6 s (2 busy cores) at
    # `python -m fer_lib --help`, which imports this module
    from fer_lib.data.faces import IMAGE_SUFFIXES

    for entry in islice(path.iterdir(), 200):
        if entry.is_dir() and depth > 0:
            if any(
                p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                for p in islice(entry.iterdir(), 200)
            ):
                return True
            if entry.name.lower() in ("train", "test") and _holds_photos(entry, depth - 1):
                return True
    return False


AFFECTNET_LIST_DIRS = (
    "Manually_Annotated_file_lists",
    "Manually_Annotated_file_lists/Manually_Annotated_file_lists",
)


# -----------------------------------------------------------------------------------------------
# samples


@dataclass
class Sample:
    """One image to convert: where its pixels come from and what is known about its face.

    Exactly one of ``path`` (an image file) or ``pixels`` (an 8-bit grey array, FERPlus) is set.
    ``points68`` (the image's pixels) is None where the face must be detected; ``box`` (x, y, width,
    height) is the data set's face box, None where the crop follows the landmarks.
    """

    split: str  # "train" or "test"
    label: int  # index into the reader's class list
    source: str  # file (and row) it came from, for sources.csv and messages
    code: str  # the data set's own label (code or votes), for sources.csv
    path: str | None = None
    pixels: np.ndarray | None = None
    points68: np.ndarray | None = None
    box: tuple[float, float, float, float] | None = None
    upsample: int = 1  # FERPlus's 48x48 faces are enlarged this much before detection
    # FERPlus's probability mode: the soft label over the class list
    soft: tuple[float, ...] | None = None


@dataclass
class Counts:
    """Per-split, per-class counts and excluded rows by reason, filled while
    a reader streams its rows."""

    classes: tuple[str, ...]
    train: list[int] = field(default_factory=list)
    test: list[int] = field(default_factory=list)
    excluded: dict[str, int] = field(default_factory=dict)

    def __post_init__(self):
        self.train = self.train or [0] * len(self.classes)
        self.test = self.test or [0] * len(self.classes)

    def add(self, split: str, label: int) -> None:
        getattr(self, split)[label] += 1

    def exclude(self, reason: str) -> None:
        self.excluded[reason] = self.excluded.get(reason, 0) + 1

    def check_report(
        self, root: Path, problems: list, layout: str, protocol: list[str]
    ) -> rafdb.CheckReport:
        """What ``check-data`` prints for a reader that streamed its rows into these counts."""
        return rafdb.CheckReport(
            root, self.train, self.test, problems, [], self.classes, layout, self.excluded, protocol
        )


class Decoder:
    """Decodes images on a few threads (PIL releases the GIL while decoding), as check-data does for
    RAF-DB, in bounded batches so a streamed reader stays streamed; problems go to ``problems``.
    Does nothing when not ``enabled``. Use as a context manager: leaving it decodes what is left."""

    BATCH = 256

    def __init__(self, enabled: bool, problems: list[str]):
        self.enabled, self.problems, self.batch = enabled, problems, []
        self.pool = ThreadPoolExecutor(max_workers=4) if enabled else None

    def add(self, path: Path, where: str = "") -> None:
        if self.enabled:
            self.batch.append((Path(path), where))
            if len(self.batch) >= self.BATCH:
                self.flush()

    def flush(self) -> None:
        found = (
            self.pool.map(rafdb.decode_problem, [path for path, _ in self.batch])
            if self.batch
            else []
        )
        for (_, where), problem in zip(self.batch, found):
            if problem:
                self.problems.append(f"{where}: {problem}" if where else problem)
        self.batch = []

    def __enter__(self) -> "Decoder":
        return self

    def __exit__(self, *error) -> None:
        if self.pool is not None:
            if not error[0]:
                self.flush()
            self.pool.shutdown()


def _crop_box(
    box: tuple[float, float, float, float] | None, points: np.ndarray, size: tuple[int, int]
) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the face crop: the box (or the points' box) widened by
    CROP_MARGIN, kept inside the image."""
    if box is None:
        x, y = points.min(0)
        w, h = points.max(0) - points.min(0)
    else:
        x, y, w, h = box
    left, top = x - CROP_MARGIN * w, y - CROP_MARGIN * h
    right, bottom = x + (1 + CROP_MARGIN) * w, y + (1 + CROP_MARGIN) * h
    left, top = max(0, int(np.floor(left))), max(0, int(np.floor(top)))
    right, bottom = min(size[0], int(np.ceil(right))), min(size[1], int(np.ceil(bottom)))
    return left, top, right, bottom


def convert_one(task: tuple[str, str, Sample]) -> dict:
    """Decode, crop, align and write one sample as RAF-DB sample ``name`` under ``out``; returns
    what happened. Runs in worker processes: everything it needs travels in ``task``."""
    out, name, sample = task
    out = Path(out)
    try:
        if sample.pixels is not None:
            image = Image.fromarray(sample.pixels).convert("RGB")
        else:
            # torch and pandas through data.faces: see _holds_photos
            from fer_lib.data.faces import load_photo

            image = load_photo(sample.path)
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        return {
            "source": sample.source,
            "name": "",
            "status": "unreadable",
            "reason": f"{type(error).__name__}: {error}",
        }
    points = sample.points68
    if sample.upsample > 1:
        image = image.resize(
            (image.width * sample.upsample, image.height * sample.upsample),
            Image.Resampling.BICUBIC,
        )
    if points is None:
        # torch and pandas through data.faces: see _holds_photos
        from fer_lib.data.faces import detect_faces

        faces = detect_faces(image)
        if not faces:
            return {
                "source": sample.source,
                "name": "",
                "status": "no face",
                "reason": (
                    f"dlib's detector found no face (image enlarged {sample.upsample}x, then up "
                    "to 2x more)"
                ),
            }
        points, box = faces[0].points68, None
    else:
        points, box = np.asarray(points, dtype=np.float64), sample.box
    left, top, right, bottom = _crop_box(box, points, image.size)
    if right - left < 8 or bottom - top < 8:
        return {
            "source": sample.source,
            "name": "",
            "status": "no face",
            "reason": "face box or landmarks outside the image",
        }
    crop = image.crop((left, top, right, bottom))
    points = points - [left, top]
    manual5 = landmarks.manual5_from_ibug68(points)
    try:
        aligned = warp_aligned(crop, manual5)
    except (ValueError, np.linalg.LinAlgError) as error:
        return {
            "source": sample.source,
            "name": "",
            "status": "bad landmarks",
            "reason": str(error),
        }
    crop.save(out / rafdb.ORIGINAL_DIR / name, quality=95)
    aligned.save(out / rafdb.ALIGNED_DIR / rafdb.aligned_name(name), quality=95)
    face_box = (*points.min(0), *points.max(0))
    rafdb.write_annotations(
        out,
        name,
        manual5,
        [rafdb.UNKNOWN_ATTRIBUTE] * 3,
        landmarks.auto37_from_ibug68(points),
        face_box,
    )
    return {"source": sample.source, "name": name, "status": "converted", "reason": ""}


def _numbered_tasks(
    out: Path, samples: Iterable[Sample], counters: dict
) -> Iterator[tuple[str, str, Sample]]:
    for sample in samples:
        counters[sample.split] += 1
        # AffectNet's 280,000 training images need six digits
        width = 6 if sample.split == "train" else 5
        yield str(out), f"{sample.split}_{counters[sample.split]:0{width}d}.jpg", sample


class _ConversionFiles:
    """The files a conversion appends to row by row (streaming): the label file (a partial file
    until ``convert`` renames it into place, last), ``sources.csv``, ``conversion_report.csv`` and,
    once a sample carries soft labels, ``soft_labels.csv``; with the counts of what was converted
    and what was not."""

    def __init__(self, out: Path, classes: tuple[str, ...]):
        self.out, self.classes = out, classes
        self.label_partial = out / f".{rafdb.LABEL_FILE.name}.partial"
        self.done = {"converted": 0, "train": 0, "test": 0}
        self.problems: list[dict] = []
        self.labels = open(self.label_partial, "w", encoding="utf-8")
        self.sources_handle = open(out / SOURCES_FILE, "w", newline="", encoding="utf-8")
        self.report_handle = open(out / REPORT_FILE, "w", newline="", encoding="utf-8")
        self.soft_handle = None
        self.sources = csv.writer(self.sources_handle)
        self.sources.writerow(["name", "split", "class", "source", "source label"])
        self.rejected = csv.writer(self.report_handle)
        self.rejected.writerow(["source", "status", "reason"])

    def record(self, result: dict, sample: Sample) -> None:
        """One sample's outcome: its rows if it was converted, a report row if not."""
        if result["status"] != "converted":
            self.rejected.writerow([sample.source, result["status"], result["reason"]])
            self.problems.append(result)
            return
        self.labels.write(f"{result['name']} {sample.label + 1}\n")
        if sample.soft is not None:
            if self.soft_handle is None:
                self.soft_handle = open(self.out / SOFT_LABELS_FILE, "w", encoding="utf-8")
                self.soft_handle.write(",".join(["name", *self.classes]) + "\n")
            row = [result["name"], *(f"{v:.4f}" for v in sample.soft)]
            self.soft_handle.write(",".join(row) + "\n")
        label = self.classes[sample.label]
        self.sources.writerow([result["name"], sample.split, label, sample.source, sample.code])
        self.done["converted"] += 1
        self.done[sample.split] += 1

    def __enter__(self) -> _ConversionFiles:
        return self

    def __exit__(self, *exc_info) -> None:
        for handle in (self.labels, self.sources_handle, self.report_handle, self.soft_handle):
            if handle is not None:
                handle.close()


def _converted(
    tasks: Iterator[tuple[str, str, Sample]], workers: int
) -> Iterator[tuple[tuple[str, str, Sample], dict]]:
    """Each task with its ``convert_one`` result, in task order, in this process or a pool."""
    if workers <= 1:
        for task in tasks:
            yield task, convert_one(task)
        return
    # bounded batches: Pool.imap would read the whole generator ahead, holding every sample in
    # memory
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        for batch in _batches(tasks, 64 * workers):
            yield from zip(batch, pool.imap(convert_one, batch, chunksize=8))


def convert(
    reader, out: str | os.PathLike, *, workers: int | None = None, progress: bool = True
) -> dict:
    """Convert the copy ``reader`` reads into RAF-DB's layout under ``out`` (an empty or new
    folder).

    The reader's check runs first (images not decoded) and a broken copy is refused before anything
    is written. Returns counts for the command to print. Images that cannot be converted (no face
    found, unreadable) are listed in ``conversion_report.csv`` with the reason.
    """
    report = reader.check(decode_images=False, progress=progress)
    if not report.ok:
        raise DataSetError(report.errors, report.layout, reader.root)
    out = Path(out)
    if (out / rafdb.LABEL_FILE).exists() or (out / rafdb.CLASSES_FILE).exists():
        raise DataSetError(
            [f"{out} already holds a data set ({rafdb.LABEL_FILE}); choose an empty folder"]
        )
    rafdb.make_layout_dirs(out)
    total = sum(report.train) + sum(report.test)
    tasks = _numbered_tasks(out, reader.samples(), {"train": 0, "test": 0})
    workers = min(os.cpu_count() or 1, 8) if workers is None else workers
    with _ConversionFiles(out, reader.classes) as files:
        bar = tqdm(total=total, desc=f"convert {report.layout}", unit="img", disable=not progress)
        for task, result in _converted(tasks, workers):
            files.record(result, task[2])
            bar.update()
        bar.close()
    info = {
        "layout": report.layout,
        "classes": list(reader.classes),
        "protocol": reader.protocol(),
        "excluded": {**report.excluded, **_counted(files.problems)},
        "source": reader.root.name,
    }
    (out / rafdb.CLASSES_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    os.replace(files.label_partial, out / rafdb.LABEL_FILE)
    return {
        "layout": report.layout,
        "rows": total,
        **files.done,
        "not converted": len(files.problems),
        "excluded": report.excluded,
        "classes": reader.classes,
    }


def _batches(items: Iterator, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _counted(problems: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for problem in problems:
        reason = f"not converted: {problem['status']} (listed in {REPORT_FILE})"
        counts[reason] = counts.get(reason, 0) + 1
    return counts


def parse_points68(text: str) -> np.ndarray | None:
    """(68, 2) points from 136 numbers in one string (separated by semicolons, commas or spaces), or
    None when they are not 136 finite numbers."""
    parts = text.replace(";", " ").replace(",", " ").split()
    try:
        values = np.array([float(p) for p in parts], dtype=np.float64)
    except ValueError:
        return None
    if values.size != 136 or not np.isfinite(values).all():
        return None
    return values.reshape(68, 2)
