"""CK+ (Lucey et al., 2010): posed sequences from neutral to peak, with 68 AAM landmarks for every
frame.

Layout: ``cohn-kanade-images/S005/001/S005_001_00000011.png``,
``Landmarks/S005/001/S005_001_00000011_landmarks.txt`` (68 rows of ``x y`` in scientific notation)
and ``Emotion/S005/001/S005_001_00000011_emotion.txt`` (one number, for the peak frame of the 327
labelled sequences; codes 0 neutral, 1 anger, 2 contempt, 3 disgust, 4 fear, 5 happy, 6 sadness, 7
surprise).

Protocol (the usual one): every labelled sequence gives its last three frames with its label, and,
with ``first_neutral`` (the default), its first frame as Neutral. Subjects are dealt to ``folds``
folds in sorted order (subject i to fold i mod k), so no subject is in both training and test; fold
``fold`` is the test split. A converted copy holds one fold; convert once per fold (``--fold``) to
run them all.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from fer_lib.data.layouts import Counts, DataSetError, Reader, Sample
from fer_lib.data.rafdb import progress_bar

CODES = ("Neutral", "Anger", "Contempt", "Disgust", "Fear", "Happiness", "Sadness", "Surprise")
IMAGES_DIR, EMOTION_DIR, LANDMARKS_DIR = "cohn-kanade-images", "Emotion", "Landmarks"
PEAK_FRAMES = 3
_FRAME = re.compile(r"^(S\d+)_(\d+)_(\d+)\.png$")


def parse_landmark_file(path: Path, problems: list[str]) -> np.ndarray | None:
    """(68, 2) points of a CK+ landmark file, or None (the reason in ``problems``)."""
    try:
        rows = [r for r in path.read_text(encoding="utf-8").splitlines() if r.strip()]
    except FileNotFoundError:
        problems.append(
            f"{path}: missing (the landmarks of a frame the protocol uses). Restore it from CK+'s "
            "Landmarks/."
        )
        return None
    except (OSError, UnicodeDecodeError) as error:
        problems.append(f"{path}: unreadable ({error})")
        return None
    if len(rows) != 68:
        problems.append(
            f"{path}: {len(rows)} points, expected 68 rows of 'x y'. Restore it from CK+'s "
            "Landmarks/."
        )
        return None
    try:
        points = np.array([[float(v) for v in row.split()] for row in rows])
    except ValueError:
        points = np.empty(0)
    if points.shape != (68, 2) or not np.isfinite(points).all():
        problems.append(
            f"{path}: not 68 rows of two finite numbers 'x y'. Restore it from CK+'s Landmarks/."
        )
        return None
    return points


class CkPlus(Reader):
    """CK+'s three folders; ``folds`` (default 10) subject-wise folds, ``fold`` the test fold;
    ``classes`` 8 or 7."""

    layout = "CK+"

    def __init__(
        self, root: Path, classes: int = 8, folds: int = 10, fold: int = 0, first_neutral=True, **_
    ):
        super().__init__(root, classes)
        if not (2 <= folds and 0 <= fold < folds):
            raise DataSetError(
                [
                    f"need 2 or more folds and a test fold in 0..folds-1, got folds={folds}, "
                    f"fold={fold}"
                ]
            )
        self.folds, self.fold, self.first_neutral = folds, fold, first_neutral
        self.fold_sizes: list[int] = []

    def _sequences(self, problems: list[str]) -> list[tuple[str, str, int, Path]]:
        """(subject, sequence, code, emotion file) of every labelled sequence, sorted."""
        emotion_root = self.root / EMOTION_DIR
        for folder in (IMAGES_DIR, EMOTION_DIR, LANDMARKS_DIR):
            if not (self.root / folder).is_dir():
                problems.append(
                    f"{self.root / folder}: missing. CK+ needs cohn-kanade-images/, Emotion/ and "
                    "Landmarks/ side by side (unpack each of its archives here)."
                )
        if problems:
            return []
        found = []
        for path in sorted(emotion_root.glob("S*/*/*_emotion.txt")):
            subject, sequence = path.parent.parent.name, path.parent.name
            try:
                code = int(round(float(path.read_text(encoding="utf-8").split()[0])))
            except (IndexError, ValueError, UnicodeDecodeError):
                problems.append(
                    f"{path}:1: not one number (an emotion code 0..7). Restore it from CK+'s "
                    "Emotion/."
                )
                continue
            if not 0 <= code <= 7:
                problems.append(
                    f"{path}:1: emotion {code} is outside CK+'s 0..7; fix it or remove the file"
                )
                continue
            found.append((subject, sequence, code, path))
        if not found and not problems:
            problems.append(
                f"{emotion_root}: no S*/NNN/*_emotion.txt file: no labelled sequence to use"
            )
        return found

    def _walk(self, counts: Counts, problems: list[str], progress: bool) -> Iterator[Sample]:
        sequences = self._sequences(problems)
        subjects = sorted({subject for subject, *_ in sequences})
        folds = {subject: i % self.folds for i, subject in enumerate(subjects)}
        self.fold_sizes = [sum(1 for f in folds.values() if f == k) for k in range(self.folds)]
        if sequences and len(folds) < self.folds:
            problems.append(
                f"{self.root}: {len(folds)} subject(s) cannot fill {self.folds} folds; pass fewer "
                "folds"
            )
            return
        for subject, sequence, code, emotion_file in progress_bar(
            sequences, "CK+ sequences", "seq", progress
        ):
            frames = self._frames(subject, sequence, emotion_file, problems)
            if frames is None:
                continue
            split = "test" if folds[subject] == self.fold else "train"
            picked = [(f, code) for f in frames[-PEAK_FRAMES:]] + (
                [(frames[0], 0)] if self.first_neutral else []
            )
            for frame, frame_code in picked:
                name = CODES[frame_code]
                if name not in self.index:
                    counts.exclude(f"{name}: not among the {len(self.classes)} classes")
                    continue
                landmarks = (
                    self.root / LANDMARKS_DIR / subject / sequence / f"{frame.stem}_landmarks.txt"
                )
                points = parse_landmark_file(landmarks, problems)
                if points is None:
                    continue
                source = f"{IMAGES_DIR}/{subject}/{sequence}/{frame.name}"
                code_text = f"{frame_code} ({emotion_file.name})"
                label = self.index[name]
                yield Sample(split, label, source, code_text, path=str(frame), points68=points)

    def _frames(
        self, subject: str, sequence: str, emotion_file: Path, problems: list[str]
    ) -> list[Path] | None:
        """The sequence's frames from the first to the labelled peak, or None (the reason in
        ``problems``). A frame is known by its image or by its landmark file, so a missing image is
        named, not silently skipped."""
        frame_dir = self.root / IMAGES_DIR / subject / sequence
        images = {p.stem for p in frame_dir.glob("*.png") if _FRAME.match(p.name)}
        landmark_dir = self.root / LANDMARKS_DIR / subject / sequence
        marked = {p.name[: -len("_landmarks.txt")] for p in landmark_dir.glob("*_landmarks.txt")}
        peak = emotion_file.name[: -len("_emotion.txt")]
        for stem in sorted((marked | {peak}) - images):
            problems.append(
                f"{frame_dir / (stem + '.png')}: missing, but its landmarks (or its emotion "
                "label) exist. Restore it from cohn-kanade-images/."
            )
        if (marked | {peak}) - images:
            return None
        frames = sorted(frame_dir / f"{stem}.png" for stem in images if stem <= peak)
        if len(frames) < PEAK_FRAMES + 1:
            problems.append(
                f"{frame_dir}: {len(frames)} frame(s) up to the labelled one; a labelled sequence "
                f"needs at least {PEAK_FRAMES + 1} (neutral to peak). Restore it from "
                "cohn-kanade-images/."
            )
            return None
        return frames

    def protocol(self) -> list[str]:
        sizes = f" ({', '.join(map(str, self.fold_sizes))} subjects)" if self.fold_sizes else ""
        return [
            f"protocol: CK+, {len(self.classes)} classes; the last {PEAK_FRAMES} frames of each "
            "labelled sequence take its "
            f"label{', its first frame is Neutral' if self.first_neutral else ''}",
            f"protocol: subject-wise {self.folds} folds{sizes}, subjects dealt in sorted order; "
            f"fold {self.fold} is the test split here (convert once per fold and report the mean "
            "over folds)",
        ]
