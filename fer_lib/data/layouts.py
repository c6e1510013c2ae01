"""Data sets beyond RAF-DB: which layout a folder holds, and the conversion of a copy into RAF-DB's
layout, which every command after ``check-data`` reads.

AffectNet (both releases), FERPlus and CK+ are converted once (``python -m fer_lib convert-data SRC
OUT``), never read by the training code directly:
- a face's 68 iBUG points give RAF-DB's 5 manual points and the 37 automatic ones by the mapping
  ``import-images`` uses. AffectNet and CK+ ship their 68 points; FERPlus's 48x48 faces go through
  the detector (``faces.detect_faces``) on an upsampled copy, and the faces it misses are listed in
  ``conversion_report.csv``, never dropped silently;
- ``classes.json`` holds the copy's class list (RAF-DB's 7 in RAF-DB's order, plus Contempt where
  kept, so a label means the same class in every converted set), layout, protocol and the rows the
  protocol excluded, by reason; ``sources.csv`` says where every image came from.

Conversion streams: readers yield one sample at a time, a worker pool decodes, crops, aligns and
writes, and the label file grows in a temporary file renamed at the end. The readers
(``affectnet``, ``ferplus``, ``ckplus``; picked by ``datasets``) check as RAF-DB's does: every
problem names the file, the row and what to do; nothing is skipped silently.
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
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
SOFT_LABELS_FILE = rafdb.SOFT_LABELS_FILE


class DataSetError(rafdb.RafDbError):
    """A copy of a data set that cannot be used; ``problems`` lists every reason found."""

    hint = ""

    def __init__(self, problems: list[str], layout: str = "data set", root: Path | None = None):
        super().__init__(problems, root, layout)


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
    markers = {  # the first layout with one of these present (a trailing / marks a folder)
        "rafdb": ("EmoLabel/", "basic/EmoLabel/"),
        "affectnet-npy": ("train_set/", "val_set/"),
        "affectnet": ("Manually_Annotated_Images/", *(d + "/" for d in AFFECTNET_LIST_DIRS)),
        "ferplus": ("fer2013.csv", "fer2013new.csv"),
        "ckplus": ("cohn-kanade-images/",),
    }
    for layout, names in markers.items():
        if any((path / n).is_dir() if n.endswith("/") else (path / n).exists() for n in names):
            return layout
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
    """Whether class folders (or train/ and test/ holding them) under ``path`` hold image files;
    a bounded look (200 entries a folder), so a folder of anything else is not taken for photos."""
    # imported here: data.faces loads torch and pandas, 5.6 s at `python -m fer_lib --help`
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
# readers


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
    soft: tuple[float, ...] | None = None  # FERPlus's probability mode: over the class list


class Counts:
    """Per-split, per-class counts and excluded rows by reason, filled while a reader streams."""

    def __init__(self, classes: tuple[str, ...]):
        self.excluded: dict[str, int] = {}
        self.train, self.test = [0] * len(classes), [0] * len(classes)

    def add(self, split: str, label: int) -> None:
        getattr(self, split)[label] += 1

    def exclude(self, reason: str) -> None:
        self.excluded[reason] = self.excluded.get(reason, 0) + 1


def decode(images: Iterator[tuple[str, str]], problems: list[str], enabled: bool) -> None:
    """Read every (path, where) of ``images`` and, if ``enabled``, decode the files on a few threads
    (PIL releases the GIL), as check-data does for RAF-DB, in bounded batches so a streamed reader
    stays streamed; a file's problem goes to ``problems``, after its ``where`` if any."""
    if not enabled:  # the reader's walk alone
        for _ in images:
            pass
        return
    with ThreadPoolExecutor(max_workers=4) as pool:
        for batch in iter(lambda: list(islice(images, 256)), []):
            found = pool.map(rafdb.decode_problem, [Path(p) for p, _ in batch])
            for (_, where), problem in zip(batch, found):
                if problem:
                    problems.append(f"{where}: {problem}" if where else problem)


class Reader:
    """What the readers of AffectNet, FERPlus and CK+ share: the folder, the class list (``classes``
    8, with Contempt, or 7), and a check that streams the samples of ``_walk(counts, problems,
    progress)`` and decodes their image files."""

    layout = ""
    decode_where = False  # decoding problems start with the sample's source

    def __init__(self, root: Path, classes: int):
        if classes not in (7, 8):
            name = self.layout.split(" (")[0]
            raise DataSetError([f"{name} is read with 7 or 8 classes, got {classes}"])
        self.root = Path(root)
        self.classes = rafdb.CLASSES_8 if classes == 8 else rafdb.CLASSES  # Contempt last
        self.index = {name: k for k, name in enumerate(self.classes)}

    def check(
        self, *, decode_images: bool = True, progress: bool = True, **walk
    ) -> rafdb.CheckReport:
        """Every row read and checked (streamed); images decoded when ``decode_images``."""
        counts, problems = Counts(self.classes), []

        def images() -> Iterator[tuple[str, str]]:
            for sample in self._walk(counts, problems, progress, **walk):
                counts.add(sample.split, sample.label)
                if sample.path:
                    yield sample.path, sample.source if self.decode_where else ""

        decode(images(), problems, decode_images)
        train, test, excluded = counts.train, counts.test, counts.excluded
        return rafdb.CheckReport(
            self.root,
            train,
            test,
            problems,
            [],
            self.classes,
            self.layout,
            excluded,
            self.protocol(),
        )

    def samples(self) -> Iterator[Sample]:
        yield from self._walk(Counts(self.classes), [], False)


def open_csv(files: ExitStack, path: Path, columns: tuple[str, ...], problems: list, must: str):
    """(header, rows) of a CSV file whose header names every one of ``columns``, open in ``files``;
    None, with the problem noted, where it does not (``must``: what the message asks of it)."""
    # utf-8-sig: a byte-order mark, as some editors save, is not part of the header
    rows = csv.reader(files.enter_context(open(path, newline="", encoding="utf-8-sig")))
    header = [h.strip() for h in next(rows, [])]
    missing = [c for c in columns if c not in header]
    if missing:
        problems.append(f"{path}:1: missing column(s) {', '.join(missing)}; the header must {must}")
        return None
    return header, rows


# -----------------------------------------------------------------------------------------------
# conversion


def _crop_box(
    box: tuple[float, float, float, float] | None, points: np.ndarray, size: tuple[int, int]
) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the face crop: the box (or the points' box) widened by
    CROP_MARGIN, kept inside the image."""
    if box is None:
        (x, y), (w, h) = points.min(0), points.max(0) - points.min(0)
    else:
        x, y, w, h = box
    left, top = (
        max(0, int(np.floor(x - CROP_MARGIN * w))),
        max(0, int(np.floor(y - CROP_MARGIN * h))),
    )
    right = min(size[0], int(np.ceil(x + (1 + CROP_MARGIN) * w)))
    bottom = min(size[1], int(np.ceil(y + (1 + CROP_MARGIN) * h)))
    return left, top, right, bottom


def convert_one(task: tuple[str, str, Sample]) -> dict:
    """Decode, crop, align and write one sample as RAF-DB sample ``name`` under ``out``; returns
    what happened. Runs in worker processes: everything it needs travels in ``task``."""
    out, name, sample = task
    out = Path(out)

    def failed(status: str, reason: str) -> dict:
        return {"source": sample.source, "name": "", "status": status, "reason": reason}

    try:
        if sample.pixels is not None:
            image = Image.fromarray(sample.pixels).convert("RGB")
        else:
            from fer_lib.data.faces import load_photo  # here: see _holds_photos

            image = load_photo(sample.path)
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        return failed("unreadable", f"{type(error).__name__}: {error}")
    if sample.upsample > 1:
        size = (image.width * sample.upsample, image.height * sample.upsample)
        image = image.resize(size, Image.Resampling.BICUBIC)
    if sample.points68 is None:
        from fer_lib.data.faces import detect_faces  # here: see _holds_photos

        faces = detect_faces(image)
        if not faces:
            return failed(
                "no face",
                f"dlib's detector found no face (image enlarged {sample.upsample}x, then up to 2x "
                "more)",
            )
        points, box = faces[0].points68, None
    else:
        points, box = np.asarray(sample.points68, dtype=np.float64), sample.box
    left, top, right, bottom = _crop_box(box, points, image.size)
    if right - left < 8 or bottom - top < 8:
        return failed("no face", "face box or landmarks outside the image")
    crop = image.crop((left, top, right, bottom))
    points = points - [left, top]
    manual5 = landmarks.manual5_from_ibug68(points)
    try:
        aligned = warp_aligned(crop, manual5)
    except (ValueError, np.linalg.LinAlgError) as error:
        return failed("bad landmarks", str(error))
    crop.save(out / rafdb.ORIGINAL_DIR / name, quality=95)
    aligned.save(out / rafdb.ALIGNED_DIR / rafdb.aligned_name(name), quality=95)
    auto37, face_box = landmarks.auto37_from_ibug68(points), (*points.min(0), *points.max(0))
    rafdb.write_annotations(out, name, manual5, [rafdb.UNKNOWN_ATTRIBUTE] * 3, auto37, face_box)
    return {"source": sample.source, "name": name, "status": "converted", "reason": ""}


def _numbered_tasks(
    out: Path, samples: Iterable[Sample], counters: dict
) -> Iterator[tuple[str, str, Sample]]:
    for sample in samples:
        counters[sample.split] += 1
        width = 6 if sample.split == "train" else 5  # AffectNet's 280,000 training images
        yield str(out), f"{sample.split}_{counters[sample.split]:0{width}d}.jpg", sample


class _ConversionFiles(ExitStack):
    """The files a conversion appends to row by row, closed on leaving: the label file (renamed
    into place last, by ``convert``), sources.csv, conversion_report.csv and, for soft labels,
    soft_labels.csv."""

    def __init__(self, out: Path, classes: tuple[str, ...]):
        super().__init__()
        self.out, self.classes = out, classes
        self.label_partial = out / f".{rafdb.LABEL_FILE.name}.partial"
        self.done = {"converted": 0, "train": 0, "test": 0}
        self.problems: list[dict] = []
        self.labels = self._open(self.label_partial)
        self.sources = csv.writer(self._open(out / SOURCES_FILE, newline=""))
        self.sources.writerow(["name", "split", "class", "source", "source label"])
        self.rejected = csv.writer(self._open(out / REPORT_FILE, newline=""))
        self.rejected.writerow(["source", "status", "reason"])
        self.soft = None

    def _open(self, path: Path, **options):
        return self.enter_context(open(path, "w", encoding="utf-8", **options))

    def record(self, result: dict, sample: Sample) -> None:
        """One sample's outcome: its rows if it was converted, a report row if not."""
        if result["status"] != "converted":
            self.rejected.writerow([sample.source, result["status"], result["reason"]])
            self.problems.append(result)
            return
        self.labels.write(f"{result['name']} {sample.label + 1}\n")
        if sample.soft is not None:
            if self.soft is None:
                self.soft = self._open(self.out / SOFT_LABELS_FILE)
                self.soft.write(",".join(["name", *self.classes]) + "\n")
            self.soft.write(",".join([result["name"], *(f"{v:.4f}" for v in sample.soft)]) + "\n")
        label = self.classes[sample.label]
        self.sources.writerow([result["name"], sample.split, label, sample.source, sample.code])
        self.done["converted"] += 1
        self.done[sample.split] += 1


def _converted(
    tasks: Iterator[tuple[str, str, Sample]], workers: int
) -> Iterator[tuple[tuple[str, str, Sample], dict]]:
    """Each task with its ``convert_one`` result, in task order, in this process or a pool."""
    if workers <= 1:
        for task in tasks:
            yield task, convert_one(task)
        return
    # bounded batches: Pool.imap would read the whole generator ahead, every sample in memory
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        for batch in iter(lambda: list(islice(tasks, 64 * workers)), []):
            yield from zip(batch, pool.imap(convert_one, batch, chunksize=8))


def convert(
    reader, out: str | os.PathLike, *, workers: int | None = None, progress: bool = True
) -> dict:
    """Convert the copy ``reader`` reads into RAF-DB's layout under ``out`` (an empty or new
    folder); returns counts for the command to print. A copy whose check (images not decoded) fails
    is refused before anything is written; images that cannot be converted (no face found,
    unreadable) are listed in ``conversion_report.csv`` with the reason."""
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
    not_converted = Counter(
        f"not converted: {problem['status']} (listed in {REPORT_FILE})"
        for problem in files.problems
    )
    info = {
        "layout": report.layout,
        "classes": list(reader.classes),
        "protocol": reader.protocol(),
        "excluded": {**report.excluded, **not_converted},
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
