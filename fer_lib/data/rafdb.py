"""Reader and validator for RAF-DB (basic) in its original on-disk layout.

The layout (see README): ``EmoLabel/list_patition_label.txt`` (sic),
``Image/aligned/*_aligned.jpg``, ``Image/original/*.jpg``, ``Annotation/manual/*_manu_attri.txt`` (5
points + gender, race, age rows) and ``Annotation/auto/*_auto_attri.txt`` (37 points). The synthetic
demo set is written in the same layout and read by the same code.

Policy: tabs or spaces and CRLF line endings are accepted; anything else (a bad number, a wrong row
count, a label outside 1..7, a listed file that is missing, an unreadable JPEG) is an error naming
the file and line. No sample is ever skipped silently: ``load_rafdb`` raises ``RafDbError`` listing
every problem, ``check_rafdb`` returns them all.

Other data sets (AffectNet, FERPlus, CK+) are converted into this same layout
(``fer_lib.data.layouts``). A converted copy carries ``classes.json``: its class list (RAF-DB's 7 in
RAF-DB's order, plus Contempt as an 8th where kept), its layout and protocol. The label file then
numbers classes 1..K in that list's order. Without the file a copy is RAF-DB itself: 7 classes,
RAF-DB's own numbering.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

CLASSES = ("Surprise", "Fear", "Disgust", "Happiness", "Sadness", "Anger", "Neutral")
NUM_CLASSES = len(CLASSES)
CONTEMPT = "Contempt"  # the 8th class of AffectNet-8, FERPlus and CK+; RAF-DB has none
CLASSES_8 = CLASSES + (CONTEMPT,)
# a converted copy's class list, layout and protocol (absent: RAF-DB itself)
CLASSES_FILE = "classes.json"
# FERPlus's probability mode: a soft label per image, trained on instead of the hard one
SOFT_LABELS_FILE = "soft_labels.csv"
SPLITS = ("train", "test")

# sic; RAF-DB's own README also spells it as below
LABEL_FILE = Path("EmoLabel") / "list_patition_label.txt"
LABEL_FILE_OTHER_SPELLING = Path("EmoLabel") / "list_partition_label.txt"
ALIGNED_DIR = Path("Image") / "aligned"
ORIGINAL_DIR = Path("Image") / "original"
MANUAL_DIR = Path("Annotation") / "manual"
AUTO_DIR = Path("Annotation") / "auto"
BOUNDINGBOX_DIR = Path("Annotation") / "boundingbox"
LAYOUT_DIRS = (LABEL_FILE.parent, ORIGINAL_DIR, ALIGNED_DIR, MANUAL_DIR, AUTO_DIR, BOUNDINGBOX_DIR)


ATTRIBUTE_RANGES = {"gender": 3, "race": 3, "age": 5}  # valid codes are 0..n-1
ATTRIBUTE_NAMES = tuple(ATTRIBUTE_RANGES)
# written by import-images, where a face's gender, race and age are not known
UNKNOWN_ATTRIBUTE = -1


def progress_bar(items, desc: str, unit: str, progress: bool, **options):
    """A transient progress bar over ``items`` (none unless ``progress``)."""
    return tqdm(
        items, desc=desc, unit=unit, disable=not progress, leave=False, mininterval=0.5, **options
    )


def paper_results() -> dict:
    """The numbers the paper reports (a copy of shared/paper/paper_results.json)."""
    text = resources.files("fer_lib").joinpath("resources/paper_results.json").read_text()
    return json.loads(text)


class RafDbError(ValueError):
    """A data set copy that cannot be used; ``problems`` lists every reason found."""

    hint = "\nRun `python -m fer_lib check-data ROOT` for the full list."

    def __init__(self, problems: list[str], root: Path | None = None, layout: str = "RAF-DB"):
        self.problems = list(problems)
        shown = "\n  ".join(self.problems[:20])
        more = f"\n  ... and {len(self.problems) - 20} more" if len(self.problems) > 20 else ""
        where = f" in {root}" if root else ""
        super().__init__(
            f"{len(self.problems)} problem(s) with the {layout} copy{where}:\n  {shown}{more}"
            + self.hint
        )


def resolve_root(path: str | os.PathLike) -> Path:
    """The folder holding EmoLabel/, Image/ and Annotation/; its parent
    (holding basic/) is accepted."""
    path = Path(path).expanduser()
    for candidate in (path, path / "basic"):
        if (candidate / "EmoLabel").is_dir():
            return candidate
    if not path.exists():
        raise RafDbError([f"{path}: no such folder. Pass RAF-DB's basic/ folder (or its parent)."])
    raise RafDbError(
        [
            f"{path}: neither it nor {path / 'basic'} holds EmoLabel/. Pass RAF-DB's basic/ "
            "folder, the one holding EmoLabel/, Image/ and Annotation/; a folder of class "
            f"folders of photos becomes one with `python -m fer_lib import-images {path} OUT`."
        ]
    )


def aligned_name(name: str) -> str:
    return f"{Path(name).stem}_aligned.jpg"


def manual_name(name: str) -> str:
    return f"{Path(name).stem}_manu_attri.txt"


def auto_name(name: str) -> str:
    return f"{Path(name).stem}_auto_attri.txt"


def write_annotations(
    root: Path, name: str, manual5: np.ndarray, attributes, auto37: np.ndarray, box
) -> None:
    """A sample's annotation files in RAF-DB's format ("x<TAB>y" rows, original-image pixels): 5
    manual points and gender/race/age codes, 37 automatic points, the face's bounding box."""

    def points(rows: np.ndarray) -> str:
        return "".join(f"{x:.2f}\t{y:.2f}\n" for x, y in rows)

    root = Path(root)
    (root / MANUAL_DIR / manual_name(name)).write_text(
        points(manual5) + "".join(f"{code}\n" for code in attributes)
    )
    (root / AUTO_DIR / auto_name(name)).write_text(points(auto37))
    (root / BOUNDINGBOX_DIR / f"{Path(name).stem}_boundingbox.txt").write_text(
        "{:.2f} {:.2f} {:.2f} {:.2f}\n".format(*box)
    )


def split_of(name: str) -> str | None:
    prefix = name.split("_", 1)[0]
    return prefix if prefix in SPLITS else None


@dataclass
class RafDb:
    """All samples of one RAF-DB copy, as parallel arrays (index i is one image)."""

    root: Path
    names: list[str]
    splits: np.ndarray  # (N,) str, "train" or "test"
    labels: np.ndarray  # (N,) int64, 0-based: index into CLASSES
    manual5: np.ndarray  # (N, 5, 2) float64, original-image pixels
    attributes: np.ndarray  # (N, 3) int64: gender, race, age
    auto37: np.ndarray  # (N, 37, 2) float64, original-image pixels
    warnings: list[str] = field(default_factory=list)
    # what labels index: RAF-DB's 7, or a converted copy's (classes.json)
    classes: tuple[str, ...] = CLASSES
    # (N, K) float soft labels (soft_labels.csv), or None: the hard labels are the targets
    soft: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, index) -> "RafDb":
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        arrays = {key: getattr(self, key)[index] for key in SAMPLE_ARRAYS}
        soft = None if self.soft is None else self.soft[index]
        return replace(self, names=[self.names[i] for i in index], soft=soft, **arrays)

    def split(self, name: str) -> "RafDb":
        if name not in SPLITS:
            raise ValueError(f"split {name!r} is not one of {SPLITS}")
        return self.subset(self.splits == name)

    def aligned_path(self, i: int) -> Path:
        return self.root / ALIGNED_DIR / aligned_name(self.names[i])

    def original_path(self, i: int) -> Path:
        return self.root / ORIGINAL_DIR / self.names[i]

    def class_counts(self, split: str | None = None) -> list[int]:
        labels = self.labels if split is None else self.labels[self.splits == split]
        return np.bincount(labels, minlength=len(self.classes)).tolist()

    def landmarks(self, landmark_set: str = "auto37") -> np.ndarray:
        """(N, K, 2) original-image landmarks of a set: auto37, manual5 or both (37 then 5)."""
        if landmark_set == "both":
            return np.concatenate([self.auto37, self.manual5], axis=1)
        if landmark_set in ("auto37", "manual5"):
            return getattr(self, landmark_set)
        raise ValueError(
            f"landmark set {landmark_set!r} is not one of ('auto37', 'manual5', 'both')"
        )


# RafDb's per-sample arrays (besides names and soft), as subset() and the cache index them
SAMPLE_ARRAYS = ("splits", "labels", "manual5", "attributes", "auto37")


def read_classes(root: Path) -> tuple[tuple[str, ...], dict]:
    """A copy's class list and the rest of its ``classes.json`` (layout, protocol, excluded
    rows); RAF-DB's own 7 classes and ``{"layout": "RAF-DB"}`` where the file is absent. A
    broken file raises RafDbError."""
    path = Path(root) / CLASSES_FILE
    if not path.exists():
        return CLASSES, {"layout": "RAF-DB"}
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise RafDbError(
            [
                f"{path}: not readable JSON ({error}). Convert the data set again, or delete the "
                "file if this is RAF-DB itself."
            ]
        ) from None
    classes = info.get("classes") if isinstance(info, dict) else None
    if (
        not isinstance(classes, list)
        or len(classes) < 2
        or len(set(classes)) != len(classes)
        or not all(isinstance(c, str) and c for c in classes)
    ):
        raise RafDbError(
            [
                f"{path}: 'classes' must be a list of two or more distinct class names, got "
                f"{classes!r}. Convert the data set again."
            ]
        )
    return tuple(classes), info


def read_label_file(
    path: Path, num_classes: int = NUM_CLASSES
) -> tuple[list[str], list[int], list[str]]:
    """Names, 0-based labels and problems from ``list_patition_label.txt`` (labels
    1..``num_classes``)."""
    names, labels, problems = [], [], []
    seen: dict[str, int] = {}
    try:
        text = path.read_text()
    except FileNotFoundError:
        return (
            [],
            [],
            [
                f"{path}: missing. It lists every image and its label; restore it from RAF-DB's "
                "EmoLabel/."
            ],
        )
    except UnicodeDecodeError:
        return [], [], [f"{path}: not a text file (bad encoding)."]
    for line_no, line in enumerate(text.splitlines(), start=1):
        fields, where = line.split(), f"{path}:{line_no}"
        if not fields:
            continue
        if len(fields) != 2:
            problems.append(f"{where}: expected '<image name> <label>', got {line.strip()!r}")
            continue
        name, label_text = fields
        if split_of(name) is None or not name.endswith(".jpg"):
            problems.append(
                f"{where}: image name {name!r} is not of the form train_NNNNN.jpg or test_NNNN.jpg"
            )
            continue
        try:
            label = int(label_text)
        except ValueError:
            problems.append(f"{where}: label {label_text!r} is not an integer")
            continue
        if not 1 <= label <= num_classes:
            problems.append(f"{where}: label {label} is outside 1..{num_classes}")
        elif name in seen:
            problems.append(f"{where}: {name} is listed twice (first on line {seen[name]})")
        else:
            seen[name] = line_no
            names.append(name)
            labels.append(label - 1)
    if not names and not problems:
        problems.append(f"{path}: lists no image")
    return names, labels, problems


def _parse_points(
    path: Path, rows: list[str], n_points: int, problems: list[str]
) -> np.ndarray | None:
    before = len(problems)
    points = np.full((n_points, 2), np.nan)
    for i, row in enumerate(rows[:n_points]):
        fields = row.split()
        if len(fields) != 2:
            problems.append(f"{path}:{i + 1}: expected 'x y' (two numbers), got {row.strip()!r}")
            continue
        for j, text in enumerate(fields):
            with suppress(ValueError):  # else left NaN, reported below
                points[i, j] = float(text)
            if not math.isfinite(points[i, j]):
                problems.append(f"{path}:{i + 1}: {'xy'[j]} = {text!r} is not a finite number")
    return points if len(problems) == before else None


def _annotation_rows(
    path: Path, what: str, count: int, expected: str, problems: list[str]
) -> list[str] | None:
    """The ``count`` rows of an annotation file (trailing blank ones dropped, as harmless), or None
    with the problem named (``what``: the file's role; ``expected``: what its rows hold)."""
    try:
        rows = path.read_bytes().decode("utf-8").splitlines()
    except FileNotFoundError:
        problems.append(f"{path}: missing ({what})")
        return None
    except UnicodeDecodeError:
        problems.append(f"{path}: not a text file (bad encoding)")
        return None
    while rows and not rows[-1].strip():
        rows.pop()
    if len(rows) != count:
        problems.append(f"{path}: expected {count} rows {expected}, found {len(rows)}")
        return None
    return rows


def parse_manual_file(path: Path, problems: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """5 points and the gender/race/age codes of a ``*_manu_attri.txt`` file, or None (problems
    filled)."""
    what = "the manual annotation of this listed image"
    rows = _annotation_rows(path, what, 8, "(5 points, then gender, race, age)", problems)
    if rows is None:
        return None
    points = _parse_points(path, rows, 5, problems)
    attributes = np.empty(3, dtype=np.int64)
    for k, (attribute, codes) in enumerate(ATTRIBUTE_RANGES.items()):
        text = rows[5 + k].strip()
        try:
            code = int(text)
        except ValueError:
            code = None  # refused: not read as UNKNOWN_ATTRIBUTE
        if code is None or not (0 <= code < codes or code == UNKNOWN_ATTRIBUTE):
            problems.append(
                f"{path}:{6 + k}: {attribute} code {text!r} is not an integer in 0..{codes - 1} "
                "(or -1, unknown)"
            )
            return None
        attributes[k] = code
    return None if points is None else (points, attributes)


def parse_auto_file(path: Path, problems: list[str]) -> np.ndarray | None:
    """The 37 points of a ``*_auto_attri.txt`` file, or None (problems filled)."""
    what = "the automatic landmarks of this listed image"
    rows = _annotation_rows(path, what, 37, "of 'x y'", problems)
    return None if rows is None else _parse_points(path, rows, 37, problems)


def _listing(folder: Path) -> set[str]:
    try:
        return {entry.name for entry in os.scandir(folder)}
    except FileNotFoundError:
        return set()


def _missing_folder_problem(root: Path, folder: Path) -> str:
    archive = (root / folder).with_suffix(".zip")
    if archive.exists():
        return (
            f"{root / folder}: missing, but {archive} exists: unzip it in place (`cd "
            f"{archive.parent} && unzip {archive.name}`)."
        )
    return f"{root / folder}: missing. RAF-DB's basic/ must hold {folder}/."


def make_layout_dirs(out: Path) -> None:
    """The empty folders of RAF-DB's layout under ``out`` (a writer then fills them)."""
    for folder in LAYOUT_DIRS:
        (Path(out) / folder).mkdir(parents=True, exist_ok=True)


def label_file(root: Path) -> Path:
    """The label file of a copy: ``list_patition_label.txt`` (sic, as shipped), or the spelling
    ``list_partition_label.txt`` that RAF-DB's README also uses."""
    if not (root / LABEL_FILE).exists() and (root / LABEL_FILE_OTHER_SPELLING).exists():
        return root / LABEL_FILE_OTHER_SPELLING
    return root / LABEL_FILE


def _read_all(root: Path, require_original: bool, progress: bool) -> tuple[RafDb | None, list[str]]:
    classes, _ = read_classes(root)
    names, labels, problems = read_label_file(label_file(root), len(classes))
    if not names:
        return None, problems

    required = [ALIGNED_DIR, MANUAL_DIR, AUTO_DIR] + ([ORIGINAL_DIR] if require_original else [])
    listings = {folder: _listing(root / folder) for folder in required}
    problems += [_missing_folder_problem(root, f) for f in required if not listings[f]]
    if not all(listings.values()):
        return None, problems

    n = len(names)
    manual5 = np.full((n, 5, 2), np.nan)
    attributes = np.full((n, 3), -1, dtype=np.int64)
    auto37 = np.full((n, 37, 2), np.nan)
    warnings = []
    for i, name in enumerate(progress_bar(names, "annotations", "img", progress)):
        if aligned_name(name) not in listings[ALIGNED_DIR]:
            problems.append(f"{root / ALIGNED_DIR / aligned_name(name)}: listed image missing")
        if require_original and name not in listings[ORIGINAL_DIR]:
            problems.append(f"{root / ORIGINAL_DIR / name}: listed image missing")
        manual = parse_manual_file(root / MANUAL_DIR / manual_name(name), problems)
        if manual is not None:
            manual5[i], attributes[i] = manual
            if manual5[i, 0, 0] > manual5[i, 1, 0]:
                warnings.append(
                    f"{root / MANUAL_DIR / manual_name(name)}: 'left eye' (row 1) lies right of "
                    "'right eye' (row 2); alignment follows the file's order"
                )
        auto = parse_auto_file(root / AUTO_DIR / auto_name(name), problems)
        if auto is not None:
            auto37[i] = auto
    splits = np.array([split_of(name) for name in names])
    labels = np.array(labels, dtype=np.int64)
    data = RafDb(root, names, splits, labels, manual5, attributes, auto37, warnings, classes)
    if (root / SOFT_LABELS_FILE).exists():
        data.soft = read_soft_labels(root / SOFT_LABELS_FILE, names, data.labels, classes, problems)
    return data, problems


def read_soft_labels(
    path: Path, names: list[str], labels: np.ndarray, classes: tuple[str, ...], problems: list[str]
) -> np.ndarray | None:
    """(N, K) soft labels in the order of ``names``, from ``soft_labels.csv`` (name, then one column
    per class); every listed image needs a row summing to 1 whose largest share is its hard label.
    None if a problem was noted."""
    row_of = {name: i for i, name in enumerate(names)}
    soft = np.full((len(names), len(classes)), np.nan)
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, [])
        if header != ["name", *classes]:
            problems.append(
                f"{path}:1: header must be name,{','.join(classes)} (the copy's classes); convert "
                "the data set again"
            )
            return None
        for line, fields in enumerate(reader, start=2):
            try:
                values = np.array([float(v) for v in fields[1:]])
            except ValueError:
                values = np.empty(0)
            i = row_of.get(fields[0] if fields else "")
            if (
                i is None
                or values.shape != (len(classes),)
                or not np.isfinite(values).all()
                or (values < 0).any()
                or abs(values.sum() - 1) > 1e-2
                or values.argmax() != labels[i]
            ):
                problems.append(
                    f"{path}:{line}: not a listed image with {len(classes)} shares summing to 1 "
                    "whose largest is its label; convert the data set again"
                )
                return None
            soft[i] = values / values.sum()
    missing = [names[i] for i in np.flatnonzero(np.isnan(soft[:, 0]))]
    if missing:
        problems.append(
            f"{path}: no soft label for {len(missing)} listed image(s), e.g. {missing[0]}; "
            "convert the data set again"
        )
        return None
    return soft


def load_rafdb(
    root: str | os.PathLike,
    *,
    require_original: bool = False,
    progress: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> RafDb:
    """Read a RAF-DB copy (labels and landmarks; images checked for presence, ``check_rafdb``
    decodes them); raise RafDbError naming every problem found. With ``cache_dir``, a copy read
    without problems is kept there (``annotations_<key>.npz``) and reused while every file it was
    read from keeps its name, size and time: RAF-DB's 30,000 small annotation files take seconds to
    parse, and every notebook of a run reads them."""
    root = resolve_root(root)
    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir) / f"annotations_{_annotations_key(root, require_original)}.npz"
    if cache is not None and cache.exists():
        return _read_cached(cache, root)
    data, problems = _read_all(root, require_original, progress)
    if problems:
        raise RafDbError(problems, root)
    if cache is not None:
        _write_cached(data, cache)
    return data


ANNOTATIONS_CACHE_VERSION = 1  # raise when RafDb's fields or their parsing change


def _annotations_key(root: Path, require_original: bool) -> str:
    """The files ``_read_all`` reads (labels, class list, soft labels, annotations) by name, size
    and time, and the image folders it checks names against, by name."""
    digest = hashlib.sha256(f"{ANNOTATIONS_CACHE_VERSION}|{require_original}".encode())
    statted = [Path("."), LABEL_FILE.parent, MANUAL_DIR, AUTO_DIR]
    listed = [ALIGNED_DIR] + ([ORIGINAL_DIR] if require_original else [])
    for folder in statted + listed:
        try:
            with os.scandir(root / folder) as entries:
                found = sorted((entry.name, entry) for entry in entries if entry.is_file())
        except FileNotFoundError:
            found = []
        digest.update(f"\n{folder.as_posix()}:".encode())
        for name, entry in found:
            if folder in listed:
                digest.update(f"{name}\n".encode())
            else:
                stat = entry.stat()
                digest.update(f"{name}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _write_cached(data: RafDb, path: Path) -> None:
    # fer_lib.io loads torch and pandas: 5.6 s (2 busy cores) at `python -m fer_lib --help`
    from fer_lib.io import write_atomic

    arrays = {key: getattr(data, key) for key in SAMPLE_ARRAYS}
    arrays.update(names=np.array(data.names), classes=np.array(data.classes))
    arrays["warnings"] = np.array(data.warnings, dtype=str)
    if data.soft is not None:
        arrays["soft"] = data.soft

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, write)


def _read_cached(path: Path, root: Path) -> RafDb:
    with np.load(path, allow_pickle=False) as saved:
        names, warnings = saved["names"].tolist(), saved["warnings"].tolist()
        arrays = {key: saved[key] for key in SAMPLE_ARRAYS}
        classes = tuple(saved["classes"].tolist())
        return RafDb(
            root, names, **arrays, warnings=warnings, classes=classes, soft=saved.get("soft")
        )


def decode_problem(path: Path) -> str | None:
    """A problem line for an image file that is missing or does not decode; None when it reads."""
    try:
        with Image.open(path) as image:
            image.load()
    except FileNotFoundError:
        return (
            f"{path}: listed image missing. Restore it from the data set's archive, or remove "
            "its row."
        )
    except Exception as error:  # PIL raises several types for broken files
        return (
            f"{path}: unreadable image ({type(error).__name__}: {error}). Restore it from the "
            "data set's archive."
        )
    return None


@dataclass
class CheckReport:
    """Outcome of a check (``check_rafdb``, or another layout's reader): per-class counts in the
    order of ``classes`` and every problem found."""

    root: Path
    train: list[int]
    test: list[int]
    errors: list[str]
    warnings: list[str]
    classes: tuple[str, ...] = CLASSES
    layout: str = "RAF-DB"
    # rows left out by the protocol, by reason
    excluded: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # the layout's protocol, in words

    @classmethod
    def failed(cls, root, errors: list[str], classes=CLASSES, **extra) -> CheckReport:
        """A check that counted nothing: its problems alone."""
        return cls(Path(root), [0] * len(classes), [0] * len(classes), errors, [], classes, **extra)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def read_nothing(self) -> bool:
        """No image was counted (no label file, an unknown layout): the table would be all zeros."""
        return not (sum(self.train) + sum(self.test))

    def to_json(self) -> dict:
        keys = ("train", "test", "excluded", "errors")
        return {"layout": self.layout, "classes": list(self.classes)} | {
            key: getattr(self, key) for key in keys
        }

    def table(self) -> str:
        """Counts per class (RAF-DB itself: next to the paper's Table 3), then the rows the protocol
        excluded and the protocol's notes."""
        columns = [("train", self.train), ("test", self.test)]
        rafdb = tuple(self.classes) == CLASSES and self.layout == "RAF-DB"
        if rafdb:
            paper = paper_results()["table3_class_counts"]
            columns.insert(1, ("paper", paper["train"]))
            columns.append(("paper", paper["test"]))
        rows = [("class", [title for title, _ in columns])]
        rows += [(name, [v[k] for _, v in columns]) for k, name in enumerate(self.classes)]
        rows.append(("total", [sum(v) for _, v in columns]))
        width = max(10, *(len(name) for name in self.classes))
        lines = [f"{name:<{width}}" + "".join(f" {v:>7}" for v in values) for name, values in rows]
        if not rafdb:
            lines += [f"excluded: {n} row(s): {reason}" for reason, n in self.excluded.items()]
            return "\n".join(lines + self.notes)
        if label_file(self.root).is_file():
            lines.append(f"labels read from {label_file(self.root).relative_to(self.root)}")
        return "\n".join(lines)


def check_rafdb(
    root: str | os.PathLike, *, decode_images: bool = True, progress: bool = True
) -> CheckReport:
    """Validate a copy in one pass: label list, annotation files, image presence and (optionally)
    decoding."""
    try:
        root = resolve_root(root)
        classes, info = read_classes(root)
    except RafDbError as error:
        return CheckReport.failed(root, error.problems)
    layout = info.get("layout", "RAF-DB")
    layout = layout if layout == "RAF-DB" else f"{layout}, converted to RAF-DB's layout"
    excluded, notes = dict(info.get("excluded", {})), list(info.get("protocol", []))
    extra = dict(classes=classes, layout=layout, excluded=excluded, notes=notes)
    data, problems = _read_all(root, require_original=True, progress=progress)
    if data is None:
        return CheckReport.failed(root, problems, **extra)
    if decode_images:
        # a missing image is reported by the reader already
        paths = [data.aligned_path(i) for i in range(len(data))]
        paths = [path for path in paths if path.is_file()]
        with ThreadPoolExecutor(max_workers=4) as pool:
            found = pool.map(decode_problem, paths, chunksize=64)
            bar = progress_bar(found, "images", "img", progress, total=len(paths))
            problems += [problem for problem in bar if problem]
    train, test = data.class_counts("train"), data.class_counts("test")
    return CheckReport(root, train, test, problems, data.warnings, **extra)
