"""The report's figures, drawn from the tables and predictions and saved as PNG and PDF to
``<figures_dir>/<name>.{png,pdf}``.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from PIL import Image

from fer_lib.data import landmarks
from fer_lib.data.heatmaps import render_heatmaps
from fer_lib.data.rafdb import CLASSES
from fer_lib.evaluation import metrics
from fer_lib.io import write_atomic
from fer_lib.report.tables import CALIBRATION_BINS, HEADS, reliability, short_names


def _seaborn():
    # imported where a plot needs it: seaborn, with the scipy.stats it imports, adds about 1.2 s
    # to this module's import (python -X importtime after matplotlib, pandas and torch, 2026-12-06)
    import seaborn

    return seaborn


def save_figure(fig: plt.Figure, name: str, figures_dir: Path) -> None:
    """Save a figure as PNG (for the report) and PDF (vector, for papers); the notebook shows it
    inline."""
    figures_dir = Path(figures_dir)
    # no date: reruns give the same file
    for suffix, kwargs in ((".png", {"dpi": 150}), (".pdf", {"metadata": {"CreationDate": None}})):
        write_atomic(
            figures_dir / f"{name}{suffix}",
            lambda tmp, kw=kwargs, s=suffix: fig.savefig(
                tmp, format=s[1:], bbox_inches="tight", **kw
            ),
        )


def plot_class_counts(table: pd.DataFrame, data_label: str) -> plt.Figure:
    """Table 3 as bars: this data set's share per class next to the paper's."""
    classes = len(table)
    paper = table["paper train"].astype(float)  # NaN for a class RAF-DB does not have
    shares = pd.DataFrame(
        {
            "class": list(table["class"]) * 2,
            "share of training images": np.concatenate(
                [table["train"] / table["train"].sum(), paper / paper.sum()]
            ),
            "data set": ["this data set"] * classes + ["RAF-DB (paper, Table 3)"] * classes,
        }
    )
    fig, ax = plt.subplots(figsize=(7, 3.2))
    _seaborn().barplot(shares, x="class", y="share of training images", hue="data set", ax=ax)
    ax.set_title(f"Class proportions: {data_label}", fontsize=10)
    ax.set_xlabel("")
    fig.tight_layout()
    return fig


def plot_confusion(
    labels: np.ndarray, predicted: np.ndarray, title: str, classes=CLASSES
) -> plt.Figure:
    """Row-normalised confusion matrix over the data set's ``classes`` (rows: true class), counts in
    the cells."""
    return plot_confusion_matrix(
        metrics.confusion_matrix(labels, predicted, len(classes)), classes, title
    )


def plot_confusion_matrix(matrix: np.ndarray, classes, title: str) -> plt.Figure:
    """A confusion matrix of counts (rows: true class, in ``classes``' order) drawn row-normalised,
    counts in the cells."""
    share = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    names = short_names(classes)
    cbar = {"label": "share of the true class"}
    _seaborn().heatmap(
        share,
        annot=matrix,
        fmt="d",
        cmap="Blues",
        vmin=0,
        vmax=1,
        cbar_kws=cbar,
        ax=ax,
        xticklabels=names,
        yticklabels=names,
    )
    ax.set(xlabel="predicted", ylabel="true")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_history(history: pd.DataFrame, columns: dict[str, str], title: str) -> plt.Figure:
    """Training curves: loss on the left, accuracies (train and validation) on the right."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    left.plot(history["epoch"], history["train_loss"], marker="o")
    left.set(xlabel="epoch", ylabel="training loss")
    for column, label in columns.items():
        right.plot(history["epoch"], history[column], marker="o", label=label)
    right.set(xlabel="epoch", ylabel="accuracy")
    right.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _image(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def plot_samples(rafdb, per_class: int = 4, seed: int = 0) -> plt.Figure:
    """Aligned training images, ``per_class`` per emotion (a seeded random pick), one row per class
    of the data set."""
    rng = np.random.default_rng(seed)
    train = np.flatnonzero(rafdb.splits == "train")
    classes = rafdb.classes
    fig, axes = plt.subplots(
        len(classes), per_class, figsize=(1.3 * per_class, 1.35 * len(classes))
    )
    for k, name in enumerate(classes):
        members = train[rafdb.labels[train] == k]
        picks = (
            rng.choice(members, size=min(per_class, len(members)), replace=False)
            if len(members)
            else []
        )
        for j in range(per_class):
            ax = axes[k, j]
            ax.axis("off")
            if j < len(picks):
                ax.imshow(_image(rafdb.aligned_path(picks[j])))
        axes[k, 0].set_title(name, fontsize=8, loc="left")
    fig.tight_layout()
    return fig


def plot_alignment(rafdb, indices, size: int, landmark_set: str = "auto37") -> plt.Figure:
    """Fig. 3: original image with its landmarks, aligned image with the affine-mapped landmarks,
    heatmap."""
    indices = list(indices)
    fig, axes = plt.subplots(len(indices), 3, figsize=(7.5, 2.5 * len(indices)), squeeze=False)
    for row, i in zip(axes, indices):
        points = rafdb.landmarks(landmark_set)[i]
        row[0].imshow(_image(rafdb.original_path(i)))
        row[0].scatter(points[:, 0], points[:, 1], s=4, c="lime")
        row[0].scatter(rafdb.manual5[i, :, 0], rafdb.manual5[i, :, 1], s=12, c="red", marker="x")
        aligned = _image(rafdb.aligned_path(i))
        mapped = landmarks.align_points(points, rafdb.manual5[i], aligned.shape[0])
        row[1].imshow(aligned)
        row[1].scatter(mapped[:, 0], mapped[:, 1], s=4, c="lime")
        heat = render_heatmaps(landmarks.align_points(points, rafdb.manual5[i], size)[None], size)
        row[2].imshow(heat[0, 0].numpy(), cmap="gray", vmin=0, vmax=1)
        for ax, title in zip(
            row,
            (
                "original + landmarks (x: manual 5)",
                "aligned + mapped landmarks",
                f"heatmap {size}x{size}",
            ),
        ):
            ax.set_title(f"{rafdb.names[i]}: {title}" if ax is row[0] else title, fontsize=7)
            ax.axis("off")
    fig.tight_layout()
    return fig


def plot_reliability(run, data_label: str) -> plt.Figure:
    """Reliability diagrams of the three heads of one run: accuracy against mean confidence per bin,
    bar width the bin, the diagonal perfect calibration, and the share of images per bin
    underneath."""
    fig, axes = plt.subplots(
        2, 3, figsize=(12, 5.2), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    bins = {"width": 1 / CALIBRATION_BINS, "align": "edge"}
    for column, (head, name) in enumerate(HEADS):
        ece, table = reliability(run.predictions.labels, getattr(run.predictions, head))
        top, bottom = axes[0, column], axes[1, column]
        top.bar(
            table["bin low"],
            table["accuracy"],
            **bins,
            color="#4c72b0",
            edgecolor="white",
            label="accuracy",
        )
        top.plot(
            [0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration"
        )
        top.plot(
            table["mean confidence"],
            table["accuracy"],
            "o",
            color="#dd8452",
            markersize=4,
            label="accuracy at the bin's mean confidence",
        )
        top.set(
            title=f"{name}: ECE {ece:.3f}",
            ylabel="accuracy" if column == 0 else None,
            ylim=(0, 1),
            xlim=(0, 1),
        )
        shares = table["images"] / table["images"].sum()
        bottom.bar(table["bin low"], shares, **bins, color="#8c8c8c")
        bottom.set(
            xlabel="confidence (max softmax)", ylabel="share of images" if column == 0 else None
        )
    axes[0, 0].legend(loc="upper left", fontsize=8)
    fig.suptitle(f"Reliability on the test set, seed {run.seed}: {data_label}")
    fig.tight_layout()
    return fig


def plot_headroom(frame: pd.DataFrame, data_label: str) -> plt.Figure:
    """The headroom table as bars, one row per model (mean over seeds, as a share of the model's
    ceiling): images fixed among "RGB wrong, landmarks right" and among "both wrong" to the right,
    RGB-right images broken to the left, the net gain as a dot with each seed's as small marks; the
    dashed line is the ceiling (the oracle)."""
    counts = ["of those fixed", "both wrong, fixed", "RGB right, broken", "net gain (images)"]
    ceiling = frame["RGB wrong, landmarks right (ceiling)"]
    shares = frame.assign(**{column: frame[column] / ceiling for column in counts})
    shares = shares[~shares["model"].str.startswith("oracle")]
    mean = shares.groupby("model", sort=False)[counts].mean()
    fixed, gain = mean["of those fixed"], "net gain (images)"
    rows = np.arange(len(mean))[::-1]
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(mean) + 1.6))
    ax.barh(rows, fixed, color="#55a868", label="fixed: RGB wrong, landmarks right")
    ax.barh(rows, mean["both wrong, fixed"], left=fixed, color="#8fd19e", label="fixed: both wrong")
    ax.barh(rows, -mean["RGB right, broken"], color="#c44e52", label="broken: RGB right")
    ax.scatter(mean[gain], rows, color="black", zorder=3, label="net gain (mean over seeds)")
    seed_rows = shares["model"].map(dict(zip(mean.index, rows)))
    ax.scatter(
        shares[gain],
        seed_rows,
        marker="|",
        s=120,
        color="black",
        zorder=3,
        label="net gain, one seed",
    )
    ax.axvline(0, color="grey", lw=0.8)
    ax.axvline(1, color="black", lw=1, ls="--", label="ceiling (the oracle)")
    ax.set_yticks(rows, mean.index)
    ax.set_xlabel(
        "share of the model's ceiling (images RGB gets wrong and its landmark head right)"
    )
    ax.set_title(f"Headroom captured by each model: {data_label}", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def plot_w_sweep(frame: pd.DataFrame, data_label: str) -> plt.Figure:
    """Fig. 4: OA(fused) - OA(baseline) against w, mean over seeds with +-1 sd bars and the seeds as
    dots; circles mark seeds, stars seed means, whose paired-bootstrap 95% interval excludes
    zero."""
    grouped = frame.groupby("w")["oa_gain"]
    mean = grouped.mean()
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.axhline(0, color="grey", lw=0.8)
    ax.errorbar(
        mean.index,
        mean.values,
        yerr=grouped.std(ddof=1).fillna(0).values,
        marker="o",
        capsize=3,
        label="mean +- sd over seeds",
    )
    ax.scatter(frame["w"], frame["oa_gain"], s=10, color="black", alpha=0.5, label="one seed")
    if "interval excludes 0" in frame:
        sure = frame[frame["interval excludes 0"]]
        ax.scatter(
            sure["w"],
            sure["oa_gain"],
            s=60,
            facecolors="none",
            edgecolors="red",
            label="seed whose 95% interval excludes 0",
        )
    if "pooled differs (Holm over the w)" in frame:
        sure = mean[frame.groupby("w")["pooled differs (Holm over the w)"].first()]
        ax.scatter(
            sure.index,
            sure.values,
            s=140,
            marker="*",
            color="red",
            zorder=3,
            label="seed mean that differs from 0 (Holm over the w)",
        )
    ax.set(xlabel="agreement weight w (on disagreement)", ylabel="OA(fused) - OA(baseline)")
    ax.set_title(f"Fig. 4, w sweep: {data_label}", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_batch_study(frame: pd.DataFrame, data_label: str) -> plt.Figure:
    """ARM's batch term: test accuracy against the test batch size and order (and the fixed-mean
    mode)."""
    fig, ax = plt.subplots(figsize=(6, 3.4))
    _seaborn().lineplot(frame, x="batch size", y="accuracy", hue="setting", marker="o", ax=ax)
    ax.set_xscale("log", base=2)
    ax.set_title(f"Baseline accuracy vs test batch: {data_label}", fontsize=10)
    fig.tight_layout()
    return fig
