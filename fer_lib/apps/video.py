"""What a trained model says about a video (``python -m fer_lib predict clip.mp4 ...``): every k-th
frame decoded (PyAV), its faces found by the project's detector and followed from frame to frame
(a stable face id), each face through both branches.

One CSV row per face and frame, written as the frames are read, so that a broken or truncated video
keeps every frame read before the break: the frame, its time, the face id, the box and detection
score (py-feat's ``FaceRectX``... names), the 5 alignment points, each head's probabilities (the
fused head's under py-feat's lower-case emotion names) and the prediction. A frame without a face
is a row that says so. A figure shows the fused probabilities over time, one panel per face.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import av
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from fer_lib import models
from fer_lib.apps.predict import face_split, head_probabilities
from fer_lib.data.faces import Face, detect_faces

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
POINT_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")  # RAF-DB's 5
SAME_FACE_IOU = 0.3  # a box overlapping the last one of a face this much continues that face


def iou(a: tuple, b: tuple) -> float:
    """Intersection over union of two boxes (x1, y1, x2, y2)."""
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    inter = width * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


class FaceTracker:
    """Stable face ids: each face continues the known face whose last box it overlaps most (IoU at
    least ``SAME_FACE_IOU``; each known face at most once per frame), else starts a new id."""

    def __init__(self) -> None:
        self.last: dict[int, tuple] = {}

    def assign(self, boxes: list[tuple]) -> list[int]:
        known = self.last.items()
        pairs = sorted(
            ((iou(box, last), k, face) for k, box in enumerate(boxes) for face, last in known),
            reverse=True,
        )
        ids: dict[int, int] = {}
        for overlap, k, face in pairs:
            if overlap >= SAME_FACE_IOU and k not in ids and face not in ids.values():
                ids[k] = face
        for k in range(len(boxes)):
            if k not in ids:
                ids[k] = max([*self.last, *ids.values(), -1]) + 1
            self.last[ids[k]] = boxes[k]
        return [ids[k] for k in range(len(boxes))]


def columns(classes: tuple[str, ...], heads: list[str]) -> list[str]:
    """The per-frame table's columns."""
    names = ["input", "frame", "time", "face", "status"]
    names += ["FaceRectX", "FaceRectY", "FaceRectWidth", "FaceRectHeight", "FaceScore"]
    names += [f"{axis}_{point}" for point in POINT_NAMES for axis in ("x", "y")]
    names += [_column(head, heads, name) for head in heads for name in classes]
    return [*names, "prediction"]


def _column(head: str, heads: list[str], name: str) -> str:
    """A head's probability column: the emotion's name for the fused head (or the only head),
    ``<head>_<name>`` for the others."""
    return name.lower() if head == "fused" or len(heads) == 1 else f"{head}_{name.lower()}"


def _face_rows(video, index, time, faces: list[Face], ids, probabilities, classes) -> list[dict]:
    heads = list(probabilities)
    rows = []
    for k, face in enumerate(faces):
        x1, y1, x2, y2 = face.box
        row = {"input": video, "frame": index, "time": time, "face": ids[k], "status": "predicted"}
        row.update(FaceRectX=x1, FaceRectY=y1, FaceRectWidth=x2 - x1, FaceRectHeight=y2 - y1)
        row["FaceScore"] = face.score
        for name, (x, y) in zip(POINT_NAMES, face.manual5):
            row[f"x_{name}"], row[f"y_{name}"] = float(x), float(y)
        for head in heads:
            for name, value in zip(classes, probabilities[head][k]):
                row[_column(head, heads, name)] = float(value)
        row["prediction"] = classes[int(probabilities[heads[-1]][k].argmax())]
        rows.append(row)
    return rows


def predict_video(
    path: Path,
    baseline: models.ARMNet,
    fusion: models.FusionModel | None,
    config,
    out: Path,
    *,
    every: int = 1,
    stem: str | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Every ``every``-th frame of a video through loaded, batch-independent models; writes
    ``out/<stem>_frames.csv`` as it goes and ``out/<stem>_timeline.{png,pdf}`` (``stem``: default
    the video's). A video that cannot be opened, or breaks part-way, is one line on stderr; the rows
    read so far are kept."""
    path, out = Path(path), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    heads = ["rgb"] if fusion is None else ["rgb", "landmark", "fused"]
    stem = stem or path.stem
    table = out / f"{stem}_frames.csv"
    read, tracker = 0, FaceTracker()
    with open(table, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns(baseline.classes, heads), restval="")
        writer.writeheader()
        try:
            for index, time, image in _frames(path, every, progress):
                read += 1
                faces = detect_faces(image)
                if not faces:
                    writer.writerow(
                        {"input": str(path), "frame": index, "time": time, "status": "no face"}
                    )
                    continue
                split = face_split(image, faces, baseline.input_size, f"{path.name}@{index}")
                probabilities, _ = head_probabilities(baseline, fusion, config, split)
                ids = tracker.assign([face.box for face in faces])
                writer.writerows(
                    _face_rows(str(path), index, time, faces, ids, probabilities, baseline.classes)
                )
                handle.flush()  # a run stopped here keeps every frame so far
        except (av.error.FFmpegError, OSError, ValueError) as error:
            where = f"after frame {index}; frames up to it are in {table}" if read else ""
            print(
                f"predict: {path}: {'broken ' + where if read else 'not a readable video'} "
                f"({type(error).__name__}: {error})",
                file=sys.stderr,
            )
    frame = pd.read_csv(table)
    if (frame["status"] == "predicted").any():
        title = f"{path.name}: {heads[-1]} head"
        plot_timeline(frame, baseline.classes, title, out / f"{stem}_timeline")
    return frame


def _frames(path: Path, every: int, progress: bool):
    """(frame index, time in seconds, RGB image) of every ``every``-th frame."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        bar = tqdm(
            total=stream.frames or None,
            desc=path.name,
            unit="frame",
            disable=not progress,
            leave=False,
        )
        try:
            for index, frame in enumerate(container.decode(stream)):
                bar.update()
                if index % every:
                    continue
                seconds = frame.time if frame.time is not None else index / stream.average_rate
                yield index, round(float(seconds), 4), frame.to_image().convert("RGB")
        finally:
            bar.close()


def plot_timeline(frame: pd.DataFrame, classes: tuple[str, ...], title: str, stem: Path) -> None:
    """The probabilities under the emotion names (the fused head's, or the RGB head's without a
    fusion model) over time, one panel per face, saved as PNG and PDF."""
    faces = frame[frame["status"] == "predicted"]
    ids = sorted(faces["face"].dropna().astype(int).unique())
    figure, axes = plt.subplots(
        len(ids), 1, figsize=(8, 0.6 + 2.2 * len(ids)), squeeze=False, sharex=True
    )
    times = np.sort(frame["time"].unique())
    for axis, face in zip(axes[:, 0], ids):
        # every frame read, so that the line breaks where the face is not found
        rows = faces[faces["face"] == face].groupby("time").first().reindex(times)
        for name in classes:
            axis.plot(times, rows[name.lower()], marker=".", label=name)
        axis.set_ylim(0, 1)
        axis.set_ylabel(f"face {face}")
    axes[0, 0].set_title(f"{title}, probabilities over time (gaps: face not found)")
    axes[-1, 0].set_xlabel("time (s)")
    figure.legend(
        *axes[0, 0].get_legend_handles_labels(), loc="lower center", ncol=len(classes), fontsize=8
    )
    figure.tight_layout(rect=(0, 0.08, 1, 1))
    figure.savefig(stem.with_suffix(".png"), dpi=110)
    figure.savefig(stem.with_suffix(".pdf"), metadata={"CreationDate": None})
    plt.close(figure)
