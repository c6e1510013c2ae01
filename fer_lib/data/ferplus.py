"""FERPlus (Barsoum et al., 2016): FER2013's 48x48 grey faces with ten crowd votes per image.

Files: ``fer2013.csv`` (``emotion,pixels,Usage``: 2,304 grey values per row) and ``fer2013new.csv``
(the same rows in the same order: ``Usage,Image name`` and the votes for neutral, happiness,
surprise, sadness, anger, disgust, fear, contempt, unknown, NF). Both are read in step, row by row.

Label modes (the reference ``ferplus.py``; single votes are dropped first, as outliers):
- ``majority`` (the default, FERPlus's rule): the top class if it holds more than half of the
  remaining votes; otherwise unknown (a tie is therefore unknown);
- ``plurality``: the top class, a tie for the top being unknown;
- ``probability``: soft labels over the top classes covering 75% of the votes (at most three), as
  the reference code makes them; the hard label is their argmax and the soft ones go to
  ``soft_labels.csv`` on conversion.
Rows whose label is unknown or NF (not a face), and rows without an image name, are excluded and
counted.

Splits: Training is the training split and PrivateTest the test split. PublicTest, FERPlus's
validation set, joins the training split, from which the project holds out its own stratified
validation split, as for every data set. The faces have no landmarks: conversion enlarges each 4x
and runs the project's detector on it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from itertools import zip_longest
from pathlib import Path

import numpy as np

from fer_lib.data.layouts import Counts, DataSetError, Reader, Sample, open_csv
from fer_lib.data.rafdb import progress_bar

VOTE_COLUMNS = (
    *("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt"),
    *("unknown", "NF"),
)
VOTE_CLASSES = tuple(name.capitalize() for name in VOTE_COLUMNS[:8])
FER_COLUMNS = ("emotion", "pixels", "Usage")
NEW_COLUMNS = ("Usage", "Image name")
USAGE_SPLIT = {"Training": "train", "PublicTest": "train", "PrivateTest": "test"}
LABEL_MODES = ("majority", "plurality", "probability")
SIDE = 48
UPSAMPLE = 4  # dlib's detector wants faces of about 80 px and more


def label_votes(votes: np.ndarray, mode: str) -> tuple[int | None, str, np.ndarray | None]:
    """(index into VOTE_COLUMNS or None, why excluded, soft label over the 8 classes or None) of
    one row's votes, as the reference ferplus.py: single votes dropped first; unknown, NF excluded.
    """
    votes = np.where(np.asarray(votes, dtype=np.float64) <= 1.0, 0.0, votes)
    total = votes.sum()
    if total == 0:
        return None, "unknown (every vote was a single one, dropped as an outlier)", None
    if mode == "majority":
        top = int(votes.argmax())
        if votes[top] <= 0.5 * total:
            return None, "unknown (no class holds more than half of the votes)", None
    elif mode == "plurality":
        top = int(votes.argmax())
        if (votes == votes[top]).sum() > 1:
            return None, "unknown (a tie for the most votes)", None
    else:  # probability: the reference code's loop
        kept, remaining, count, part = np.zeros_like(votes), votes.copy(), 0, 0.0
        valid = True
        while part < 0.75 * total and count < 3 and valid:
            peak = remaining.max()
            for i in range(len(votes)):
                if remaining[i] == peak:
                    kept[i], remaining[i] = peak, 0
                    part += peak
                    count += 1
                    if i >= 8:  # unknown or NF tie with the peak: stop there
                        valid = False
                        if kept.sum() > peak:
                            kept[i] = 0
                            count -= 1
                        break
        if kept.sum() <= 0.5 * total or count > 3:
            return None, "unknown (the top votes cover no more than half of them)", None
        top = int(kept.argmax())
        if top < 8:
            return top, "", kept[:8] / kept[:8].sum()
    if top == 8:
        return None, "unknown (the top vote is 'unknown')", None
    if top == 9:
        return None, "NF (not a face)", None
    return top, "", None


class FerPlus(Reader):
    """Both CSV files of FERPlus; ``label_mode`` majority (default), plurality or probability;
    ``classes`` 8 or 7. Its pixels are its images: nothing to decode."""

    layout = "FERPlus"

    def __init__(self, root: Path, classes: int = 8, label_mode: str = "majority", **_):
        root = Path(root)
        super().__init__(root.parent if root.is_file() else root, classes)
        if label_mode not in LABEL_MODES:
            raise DataSetError(
                [f"label mode {label_mode!r} is not one of {', '.join(LABEL_MODES)}"]
            )
        self.label_mode = label_mode
        self.old_path, self.new_path = self.root / "fer2013.csv", self.root / "fer2013new.csv"

    def _open(self, files: ExitStack, path: Path, columns: tuple[str, ...], problems: list[str]):
        if not path.exists():
            problems.append(
                f"{path}: missing. FERPlus needs fer2013.csv (Kaggle's FER2013) and fer2013new.csv "
                "(microsoft/FERPlus) side by side."
            )
            return None
        must = f"name {', '.join(columns)}. Restore the file from its source."
        return open_csv(files, path, columns, problems, must)

    def _walk(self, counts: Counts, problems: list[str], progress: bool) -> Iterator[Sample]:
        with ExitStack() as files:
            old = self._open(files, self.old_path, FER_COLUMNS, problems)
            new = self._open(files, self.new_path, NEW_COLUMNS + VOTE_COLUMNS, problems)
            if old is None or new is None:
                return
            rows = progress_bar(zip_longest(old[1], new[1]), "FERPlus rows", "row", progress)
            for line, (a, b) in enumerate(rows, start=2):
                if a is None or b is None:
                    paths = (self.old_path, self.new_path)
                    shorter, longer = paths if a is None else paths[::-1]
                    problems.append(
                        f"{shorter}:{line}: ends here, but {longer.name} goes on: the two files "
                        "must hold the same rows in the same order (row count mismatch). "
                        "Restore both from their sources."
                    )
                    return
                sample = self._parse(
                    line, dict(zip(old[0], a)), dict(zip(new[0], b)), counts, problems
                )
                if sample is not None:
                    yield sample

    def _shares_over_classes(self, soft: np.ndarray) -> tuple[tuple[float, ...], str]:
        """Vote shares over the vote classes -> over this reader's class list (contempt's share
        dropped for 7), and the class with the largest share (a tie goes to the class first in
        the project's order)."""
        mapped = np.zeros(len(self.classes))
        for k, share in enumerate(soft):
            if VOTE_CLASSES[k] in self.index:
                mapped[self.index[VOTE_CLASSES[k]]] = share
        return tuple((mapped / mapped.sum()).tolist()), self.classes[int(np.argmax(mapped))]

    def _parse(
        self, line: int, a: dict, b: dict, counts: Counts, problems: list[str]
    ) -> Sample | None:
        """A Sample for one row, or None (a problem noted, or the row excluded and counted): both
        files' Usage agree, ten whole votes, an emotion in FER2013's 0..6, 48x48 pixels."""
        old, new = f"{self.old_path}:{line}", f"{self.new_path}:{line}"
        usage = (a.get("Usage") or "").strip()
        if usage not in USAGE_SPLIT:
            problems.append(f"{old}: Usage {usage!r} is not Training, PublicTest or PrivateTest")
            return None
        if (b.get("Usage") or "").strip() != usage:
            problems.append(
                f"{new}: Usage {b.get('Usage')!r} differs from fer2013.csv's {usage!r}: the files "
                "are not in the same row order. Restore both from their sources."
            )
            return None
        try:
            votes = np.array([float(b[c]) for c in VOTE_COLUMNS])
        except (TypeError, ValueError):
            problems.append(
                f"{new}: the votes {[b.get(c) for c in VOTE_COLUMNS]} are not ten numbers"
            )
            return None
        if (votes < 0).any() or (votes != np.round(votes)).any() or votes.sum() > 100:
            problems.append(
                f"{new}: votes {votes.astype(int).tolist()} out of range (whole numbers from 0, "
                "ten per image); fix or remove the row"
            )
            return None
        try:
            emotion = int(a.get("emotion") or "")
        except ValueError:
            emotion = -1
        if not 0 <= emotion <= 6:
            problems.append(
                f"{old}: emotion {a.get('emotion')!r} is outside FER2013's 0..6; fix or remove the "
                "row"
            )
            return None
        pixels = (a.get("pixels") or "").split()
        if len(pixels) != SIDE * SIDE:
            problems.append(
                f"{old}: {len(pixels)} pixel values, not {SIDE * SIDE} (a 48x48 image); restore "
                "the row from fer2013.csv"
            )
            return None
        if not (b.get("Image name") or "").strip():
            counts.exclude("no image name in fer2013new.csv (FERPlus dropped the face)")
            return None
        top, reason, soft = label_votes(votes, self.label_mode)
        if top is None:
            counts.exclude(reason)
            return None
        name = VOTE_CLASSES[top]
        if name not in self.index:
            counts.exclude(f"{name}: not among the {len(self.classes)} classes")
            return None
        if soft is not None:
            soft, name = self._shares_over_classes(soft)
        try:
            # numpy parses the strings: twice as fast as int() per value
            grey = np.array(pixels, dtype=np.int64)
        except ValueError:
            problems.append(f"{old}: pixels are not whole numbers")
            return None
        if grey.min() < 0 or grey.max() > 255:
            problems.append(f"{old}: pixel values outside 0..255")
            return None
        code = "votes " + " ".join(str(int(v)) for v in votes)
        grey = grey.astype(np.uint8).reshape(SIDE, SIDE)
        split, label = USAGE_SPLIT[usage], self.index[name]
        source = f"fer2013.csv:{line}"
        return Sample(split, label, source, code, pixels=grey, upsample=UPSAMPLE, soft=soft)

    def protocol(self) -> list[str]:
        return [
            f"protocol: FERPlus, {len(self.classes)} classes, label mode {self.label_mode}; "
            "unknown and NF excluded",
            "protocol: Training + PublicTest are the training split (the project holds out its "
            "own validation), PrivateTest the test split",
            "protocol: no landmarks ship with FERPlus: faces enlarged 4x and found by dlib's "
            "detector; faces it misses are listed in conversion_report.csv",
        ]
