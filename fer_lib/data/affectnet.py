"""AffectNet (Mollahosseini et al., 2017) in either of its releases, read from its own files.

- The CSV release: ``Manually_Annotated_Images/<dir>/<hash>.jpg`` with ``training.csv`` and
  ``validation.csv`` (in ``Manually_Annotated_file_lists/`` or beside the images), columns
  ``subDirectory_filePath, face_x, face_y, face_width, face_height, facial_landmarks, expression,
  valence, arousal``; the landmarks are 68 iBUG points as one ``x1;y1;...`` string in the original
  image's pixels.
- The numpy release: ``train_set/`` and ``val_set/``, each with ``images/N.jpg`` (224x224 crops) and
  ``annotations/N_exp.npy``, ``N_lnd.npy`` (68 points), ``N_val.npy``, ``N_aro.npy``; no face box.

Protocol, as in every AffectNet paper: the validation set is the test split; expressions 8-10 (None,
Uncertain, No-Face) are excluded and counted; Contempt (7) is kept for AffectNet-8 (the default) and
excluded, counted, for AffectNet-7. The numpy release's class order is not the CSV release's in
every copy (repacks use alphabetical order): ``class_order="auto"`` takes the order in which Happy,
by far the largest training class, has the largest code, and says so; a copy where that does not
decide is refused, asking for ``class_order``.

Both readers stream: the CSV is read row by row, the numpy release one sample's files at a time. The
numpy reader keeps one small integer per sample (its expression code, which the class-order
detection needs before any sample is labelled), never its image or landmarks.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from fer_lib.data import rafdb
from fer_lib.data.layouts import (
    AFFECTNET_LIST_DIRS,
    Counts,
    DataSetError,
    Reader,
    Sample,
    open_csv,
    parse_points68,
)

# The CSV release's codes 0..10, named as the project names classes.
EXCLUDED_CODES = {8: "None", 9: "Uncertain", 10: "No-Face"}
CODES = (
    *("Neutral", "Happiness", "Sadness", "Surprise", "Fear", "Disgust", "Anger", "Contempt"),
    *EXCLUDED_CODES.values(),
)
# some repacks' order; codes 8-10, where present, are kept as AffectNet's (None, Uncertain, No-Face)
ALPHABETICAL = (*sorted(CODES[:8]), *CODES[8:])
CLASS_ORDERS = ("auto", "affectnet", "alphabetical")
COLUMNS = (
    "subDirectory_filePath",
    *("face_x", "face_y", "face_width", "face_height"),
    *("facial_landmarks", "expression", "valence", "arousal"),
)
BOX_COLUMNS = COLUMNS[1:5]
IMAGES_DIR = "Manually_Annotated_Images"
LIST_FILES = {"train": "training.csv", "test": "validation.csv"}
NPY_SPLITS = {"train": "train_set", "test": "val_set"}


def _label_of(
    code: int, names: tuple[str, ...], index: dict[str, int], counts: Counts
) -> int | None:
    """The project's label for a data set code, or None (counted in ``counts.excluded``) when the
    protocol drops it."""
    name = names[code]
    if code in EXCLUDED_CODES:
        counts.exclude(f"expression {code} ({name}): not an expression class (AffectNet protocol)")
        return None
    if name not in index:
        counts.exclude(
            f"expression {code} ({name}): not among the {len(index)} classes "
            f"(AffectNet-{len(index)})"
        )
        return None
    return index[name]


class AffectNetCsv(Reader):
    """The CSV release. ``classes`` 8 (AffectNet-8, the default) or 7 (Contempt excluded)."""

    layout = "AffectNet (CSV release)"
    decode_where = True

    def __init__(self, root: Path, classes: int = 8, **_):
        super().__init__(root, classes)
        # found once: named in every row's messages
        self.lists = {split: self._find_list(split) for split in LIST_FILES}

    def _find_list(self, split: str) -> Path:
        for folder in (*AFFECTNET_LIST_DIRS, "."):
            path = self.root / folder / LIST_FILES[split]
            if path.exists():
                return path
        return self.root / AFFECTNET_LIST_DIRS[0] / LIST_FILES[split]

    def _rows(self, split: str, problems: list[str]) -> Iterator[tuple[int, dict]]:
        """(line number, row) of a list file, streamed; a missing file or column goes to
        ``problems``."""
        path = self.lists[split]
        if not path.exists():
            problems.append(
                f"{path}: missing. AffectNet's CSV release ships {LIST_FILES[split]} in "
                f"{AFFECTNET_LIST_DIRS[0]}/; restore it from the archive."
            )
            return
        with ExitStack() as files:
            must = f"be {','.join(COLUMNS)}. Restore the file from AffectNet's archive."
            table = open_csv(files, path, COLUMNS, problems, must)
            if table is None:
                return
            header, rows = table
            for line, fields in enumerate(rows, start=2):
                if not fields:
                    continue
                if len(fields) != len(header):
                    problems.append(
                        f"{path}:{line}: {len(fields)} fields where the header has {len(header)}; "
                        "the row is cut or holds a stray comma. Restore it from AffectNet's "
                        "archive."
                    )
                    continue
                yield line, dict(zip(header, fields))

    def _parse(
        self, split: str, line: int, row: dict, counts: Counts, problems: list, check_files: bool
    ) -> Sample | None:
        """A Sample for one row, or None (a problem noted, or the row excluded and counted)."""
        where = f"{self.lists[split]}:{line}"
        try:
            code = int(row["expression"])
        except ValueError:
            problems.append(
                f"{where}: expression {row['expression']!r} is not a whole number 0..10"
            )
            return None
        if not 0 <= code <= 10:
            problems.append(
                f"{where}: expression {code} is outside 0..10 (AffectNet's codes); fix or remove "
                "the row"
            )
            return None
        label = _label_of(code, CODES, self.index, counts)
        if label is None:
            return None
        try:
            box = tuple(float(row[k]) for k in BOX_COLUMNS)
        except ValueError:
            problems.append(
                f"{where}: face box {[row[k] for k in BOX_COLUMNS]} is not four numbers"
            )
            return None
        points = parse_points68(row["facial_landmarks"])
        if points is None:
            found = len(row["facial_landmarks"].replace(";", " ").split())
            problems.append(
                f"{where}: facial_landmarks holds {found} values, not 136 numbers (68 points x, "
                "y); restore the row from AffectNet's archive"
            )
            return None
        image = self.root / IMAGES_DIR / row["subDirectory_filePath"].strip()
        if check_files and not image.is_file():
            problems.append(
                f"{where}: image {image} missing. Restore it from Manually_Annotated_Images, or "
                "remove the row."
            )
            return None
        source = f"{self.lists[split].name}:{line}"
        return Sample(split, label, source, str(code), path=str(image), points68=points, box=box)

    def _walk(
        self, counts: Counts, problems: list[str], progress: bool, check_files: bool = True
    ) -> Iterator[Sample]:
        if not (self.root / IMAGES_DIR).is_dir() and check_files:
            problems.append(
                f"{self.root / IMAGES_DIR}: missing. AffectNet's CSV release keeps its images "
                "there."
            )
            return
        for split in ("train", "test"):
            rows = self._rows(split, problems)
            for line, row in rafdb.progress_bar(
                rows, f"AffectNet {LIST_FILES[split]}", "row", progress
            ):
                sample = self._parse(split, line, row, counts, problems, check_files)
                if sample is not None:
                    yield sample

    def protocol(self) -> list[str]:
        return _protocol(self.classes, "validation.csv")


def _protocol(classes: tuple[str, ...], test: str) -> list[str]:
    eight = rafdb.CONTEMPT in classes
    return [
        f"protocol: AffectNet-{len(classes)}; {test} is the test split, as in every AffectNet "
        "paper; expressions 8-10 (None, Uncertain, No-Face) excluded; Contempt "
        f"{'kept' if eight else 'excluded'}",
        "protocol: the training set is unbalanced (Happy about 134k, Contempt about 4k); peers "
        "train with a class-balanced sampler, which this project does not (its validation split "
        "is stratified)",
    ]


# the class orders of the numpy release: the codes' names, and how the order is described
ORDERS = {
    "affectnet": (CODES, "AffectNet's (0 Neutral, 1 Happy, ...)"),
    "alphabetical": (ALPHABETICAL, "alphabetical (0 Anger, 1 Contempt, ...)"),
}


class AffectNetNpy(Reader):
    """The numpy release (``train_set/``, ``val_set/``). ``class_order`` auto (decided from the
    training set), affectnet (the CSV release's codes) or alphabetical (Anger, Contempt, Disgust,
    ..., as some repacks)."""

    layout = "AffectNet (numpy release)"

    def __init__(self, root: Path, classes: int = 8, class_order: str = "auto", **_):
        super().__init__(root, classes)
        if class_order not in CLASS_ORDERS:
            raise DataSetError(
                [f"class order {class_order!r} is not one of {', '.join(CLASS_ORDERS)}"]
            )
        self.class_order = class_order
        self.order_note = ""

    def _ids(self, split: str, problems: list[str]) -> list[str]:
        """The sample numbers of a split whose image and annotations are all there (the rest go to
        ``problems``)."""
        folder = self.root / NPY_SPLITS[split]
        try:
            images = {
                Path(e.name).stem for e in os.scandir(folder / "images") if e.name.endswith(".jpg")
            }
            annotations = {e.name for e in os.scandir(folder / "annotations")}
        except FileNotFoundError as error:
            problems.append(
                f"{error.filename}: missing. AffectNet's numpy release holds "
                f"{NPY_SPLITS[split]}/images/ and annotations/."
            )
            return []
        labelled = {name[: -len("_exp.npy")] for name in annotations if name.endswith("_exp.npy")}
        for n in sorted(images - labelled, key=_number):
            problems.append(
                f"{folder / 'annotations' / (n + '_exp.npy')}: missing for images/{n}.jpg (the "
                "row counts of images/ and annotations/ differ). Restore it, or remove the "
                "image."
            )
        for n in sorted(labelled - images, key=_number):
            problems.append(
                f"{folder / 'images' / (n + '.jpg')}: missing, but annotations/{n}_exp.npy exists "
                "(the row counts of images/ and annotations/ differ). Restore the image, or "
                "remove its annotations."
            )
        ids = sorted(images & labelled, key=_number)
        for n in ids:
            if f"{n}_lnd.npy" not in annotations:
                problems.append(
                    f"{folder / 'annotations' / (n + '_lnd.npy')}: missing (the 68 landmarks of "
                    f"images/{n}.jpg). Restore it from the archive."
                )
        return ids

    def _read(self, split: str, n: str, problems: list[str]) -> tuple[int, np.ndarray] | None:
        folder = self.root / NPY_SPLITS[split] / "annotations"
        exp, lnd = folder / f"{n}_exp.npy", folder / f"{n}_lnd.npy"
        try:
            code = int(np.asarray(np.load(exp, allow_pickle=False)).item())
        except (OSError, ValueError, TypeError) as error:
            problems.append(f"{exp}: not one whole number ({error}); restore it from the archive")
            return None
        if not 0 <= code <= 10:
            problems.append(f"{exp}: expression {code} is outside 0..10; fix or remove the sample")
            return None
        try:
            points = np.asarray(np.load(lnd, allow_pickle=False), dtype=np.float64)
        except (OSError, ValueError, TypeError) as error:
            problems.append(f"{lnd}: unreadable ({error}); restore it from the archive")
            return None
        if points.size != 136 or not np.isfinite(points).all():
            problems.append(
                f"{lnd}: {points.size} values, not 136 finite numbers (68 points); restore it "
                "from the archive"
            )
            return None
        return code, points.reshape(68, 2)

    def _names(self, codes: dict, problems: list[str]) -> tuple[str, ...]:
        """The class names of the codes: the order asked for, or the one ``auto`` detects (noted
        in ``order_note``)."""
        if self.class_order in ORDERS:
            names, described = ORDERS[self.class_order]
            self.order_note = f"class order: {described}, as asked"
            return names
        train = np.bincount(
            [c for (split, _), c in codes.items() if split == "train"], minlength=11
        )
        largest = int(train.argmax()) if train.sum() else -1
        for names, described in ORDERS.values():
            if largest == names.index("Happiness"):
                self.order_note = (
                    f"class order: {described}, detected: code {largest} is the largest training "
                    f"class ({train[largest]} images), as Happy is in AffectNet"
                )
                return names
        problems.append(
            f"{self.root}: cannot tell this copy's class order (the largest training class has "
            f"code {largest}, where Happy is 1 in AffectNet's order and 4 in alphabetical "
            "order). Pass --class-order affectnet or --class-order alphabetical."
        )
        return CODES

    def _walk(
        self, counts: Counts, problems: list[str], progress: bool, points: bool = False
    ) -> Iterator[Sample]:
        """Every sample the protocol keeps (its landmarks read if ``points``); every sample's code
        is read first, as the class-order detection needs them all."""
        codes = {}  # {(split, n): code}
        for split in ("train", "test"):
            ids = self._ids(split, problems)
            for n in rafdb.progress_bar(ids, f"AffectNet {NPY_SPLITS[split]}", "img", progress):
                read = self._read(split, n, problems)
                if read is not None:
                    codes[(split, n)] = read[0]
        names = self._names(codes, problems)
        bad = sorted({c for c in codes.values() if c >= len(names)})
        if bad:
            order = self.order_note.split(",")[0]
            problems.append(f"{self.root}: expression codes {bad} do not exist in the {order}")
        for (split, n), code in codes.items():
            label = _label_of(code, names, self.index, counts) if code < len(names) else None
            if label is not None:
                image = f"{NPY_SPLITS[split]}/images/{n}.jpg"
                lnd = self._read(split, n, [])[1] if points else None
                path = str(self.root / image)
                yield Sample(split, label, image, str(code), path=path, points68=lnd)

    def samples(self) -> Iterator[Sample]:
        yield from self._walk(Counts(self.classes), [], False, points=True)

    def protocol(self) -> list[str]:
        return _protocol(self.classes, "val_set") + ([self.order_note] if self.order_note else [])


def _number(name: str) -> tuple[int, str]:
    return (int(name), name) if name.isdigit() else (1 << 62, name)
