"""What if a face's landmarks were elsewhere, or part of its image hidden? (notebook 11)

One test image of a trained fusion model is answered again with moved landmarks or a hidden region,
through the functions the evaluation uses: the landmark input is drawn by ``training.points_input``
(what ``landmark_inputs`` draws for the test set), the branches run in the evaluation's precision,
and ARM's batch terms are held at the values of the test batch the image was evaluated in
(``explain.evaluated_maps``, as Grad-CAM holds them), so that an edit changes this face alone and
the unedited face is the saved prediction. Moving points changes only the landmark branch; hiding a
region changes only the RGB branch. Nothing retrains.

The jitter study asks the same of the whole test set: every landmark moved by Gaussian noise, as a
poor detector would place it, the test set evaluated as the report evaluates it, for each noise
level. Noise is given in pixels of RAF-DB's 100 x 100 aligned face (scaled to the run's input size)
and drawn once per seed, scaled by each level: the curve's points differ by the level alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from fer_lib import models, training
from fer_lib.apps import explore
from fer_lib.data import landmarks, tensors
from fer_lib.evaluation import explain
from fer_lib.io import save_torch
from fer_lib.runtime import precision

# px of the 100 x 100 aligned face; 0 is the evaluation itself
JITTER_SIGMAS = (0.0, 1.0, 2.0, 4.0, 8.0)
# iBUG-68 index ranges of the regions a reader can hide (auto37 is a subset of iBUG-68)
_IBUG68_REGIONS = {
    "eyes": range(36, 48),
    "brows": range(17, 27),
    "nose": range(27, 36),
    "mouth": range(48, 68),
}
_MANUAL5_REGIONS = {"eyes": (0, 1), "nose": (2,), "mouth": (3, 4)}
REGIONS = tuple(_IBUG68_REGIONS)
# Training's RandomErasing writes 0 into the normalised image: ImageNet's mean colour in pixels
FILLS = ("ImageNet mean colour (training's erasing)", "the face's mean colour")


def region_points(landmark_set: str, region: str) -> np.ndarray:
    """Indices of a landmark set's points that outline ``region`` (one of ``REGIONS``)."""
    if region not in _IBUG68_REGIONS:
        raise ValueError(f"region {region!r} is not one of {', '.join(REGIONS)}")
    auto37 = np.flatnonzero(np.isin(landmarks.AUTO37_FROM_IBUG68, _IBUG68_REGIONS[region]))
    manual5 = np.array(_MANUAL5_REGIONS.get(region, ()), dtype=np.int64)
    chosen = {"auto37": auto37, "manual5": manual5, "both": np.concatenate([auto37, 37 + manual5])}
    return chosen[landmarks.check_landmark_set(landmark_set)]


def region_box(
    points: torch.Tensor, region: str, landmark_set: str, size: int, margin: float = 0.06
) -> tuple[int, int, int, int]:
    """(top, left, bottom, right), bottom and right exclusive: the box around a region's points,
    grown by ``margin`` of the canvas side on every side and kept on the S x S canvas."""
    index = region_points(landmark_set, region)
    if not len(index):
        raise ValueError(f"landmark set {landmark_set!r} has no point of the {region}")
    chosen = points[index].float()
    low, high = chosen.min(0).values, chosen.max(0).values
    pad = margin * size
    left, top = (max(0, int(np.floor(float(v) - pad))) for v in low)
    right, bottom = (min(size, int(np.ceil(float(v) + pad))) for v in high)
    return top, left, bottom, right


def hide(image: torch.Tensor, box: tuple[int, int, int, int], fill: str = FILLS[0]) -> torch.Tensor:
    """A copy of a uint8 image (3, S, S) with ``box`` (top, left, bottom, right) filled as ``fill``
    says (one of ``FILLS``)."""
    if fill not in FILLS:
        raise ValueError(f"fill {fill!r} is not one of {', '.join(FILLS)}")
    top, left, bottom, right = box
    mean = torch.tensor(tensors.IMAGENET_MEAN) * 255
    colour = mean if fill == FILLS[0] else image.float().mean(dim=(1, 2))
    hidden = image.clone()
    hidden[:, top:bottom, left:right] = colour.round().to(image.dtype)[:, None, None]
    return hidden


def jitter_noise(points: torch.Tensor, seed: int) -> torch.Tensor:
    """Standard normal noise shaped like ``points``, drawn from ``seed`` alone."""
    return torch.randn(points.shape, generator=torch.Generator().manual_seed(int(seed)))


def jittered(points: torch.Tensor, sigma: float, size: int, noise: torch.Tensor) -> torch.Tensor:
    """``points`` on the S x S canvas moved by ``noise`` at ``sigma`` px of the aligned face."""
    return points + noise * (float(sigma) * size / landmarks.ALIGNED_SIZE)


def class_mean_points(split: tensors.SplitTensors) -> torch.Tensor:
    """(classes, K, 2) the mean aligned landmarks of each class of a split (NaN where it has
    none); "move toward class K" interpolates toward them."""
    means = torch.full((len(split.classes), *split.points.shape[1:]), float("nan"))
    for k in range(len(split.classes)):
        members = split.labels == k
        if members.any():
            means[k] = split.points[members].mean(0)
    return means


def toward(points: torch.Tensor, target: torch.Tensor, amount: float) -> torch.Tensor:
    """``points`` moved the fraction ``amount`` (0: unchanged, 1: ``target``) toward ``target``."""
    if torch.isnan(target).any():
        raise ValueError("the class has no training image: no mean landmarks to move toward")
    return points + float(amount) * (target - points)


@dataclasses.dataclass(frozen=True)
class Answer:
    """What the model says of one (edited) face: each head's probabilities (classes,), the
    landmark head's confidence p as the weighting reads it, whether the heads agree, the factor on
    F_landmark, and the landmark input drawn (S, S) (None on the coordinate branch)."""

    classes: tuple[str, ...]
    rgb: np.ndarray
    landmark: np.ndarray
    fused: np.ndarray
    confidence: float
    agree: bool
    factor: float
    heatmap: np.ndarray | None

    def predicted(self, head: str = "fused") -> str:
        return self.classes[int(getattr(self, head).argmax())]

    def summary(self) -> str:
        """One line: each head's class and probability, p, the agreement and the factor."""
        heads = ", ".join(
            f"{head} {self.predicted(head)} {getattr(self, head).max():.3f}"
            for head in ("rgb", "landmark", "fused")
        )
        agreement = "agree" if self.agree else "disagree"
        return f"{heads}; p = {self.confidence:.3f}, {agreement}, factor {self.factor:.3f}"


class FaceWhatIf:
    """One test image of a trained fusion model, answered again with moved points or a hidden
    region; see the module docstring."""

    def __init__(
        self,
        model: models.FusionModel,
        split: tensors.SplitTensors,
        cache: torch.Tensor,
        config: training.FusionConfig,
        index: int,
    ):
        self.model, self.config, self.index = model.eval(), config, int(index)
        self.classes = tuple(split.classes)
        self.size, self.landmark_set = split.input_size, split.landmark_set
        self.label = int(split.labels[self.index])
        self.points = split.points[self.index].clone()  # (K, 2) as evaluated
        self.image = split.images[self.index].clone()  # (3, S, S) uint8
        self.device = next(model.parameters()).device
        self.held = explain.evaluated_maps(model, split, cache, config, np.array([self.index]))

    def landmark_input(self, points: torch.Tensor) -> torch.Tensor:
        """The landmark branch's input (1, ...) for points (K, 2) on the S x S canvas."""
        return training.points_input(
            points[None], self.size, self.landmark_set, self.config, self.device
        )

    @torch.no_grad()
    def _maps(
        self, drawn: torch.Tensor | None = None, image: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Both branches' per-image maps and the held ARM terms for the edited face (``drawn``: the
        ``landmark_input`` of moved points): the evaluation's own maps where nothing was edited,
        the branch recomputed where it was."""
        rgb, landmark, terms = self.held
        if drawn is not None:
            # as fusion_outputs computes it: the evaluation's autocast and cuDNN settings
            with precision.autocast(self.device), precision.evaluation_kernels():
                landmark = self.model.landmark_per_image(drawn).float()
        if image is not None:
            normalised = tensors.normalise(image[None].to(self.device))
            rgb = self.model.frozen_per_image(normalised).float()
        return rgb, landmark, terms

    def _edited(self, points, image):
        """(the landmark input of ``points``, or of the face's own points where None; the maps of
        the edited face)."""
        drawn = self.landmark_input(self.points if points is None else points)
        return drawn, self._maps(None if points is None else drawn, image)

    @torch.no_grad()
    def answer(
        self, points: torch.Tensor | None = None, image: torch.Tensor | None = None
    ) -> Answer:
        """The model's answer with ``points`` (K, 2) and ``image`` (3, S, S uint8) in place of the
        face's own (None: unedited)."""
        drawn, held = self._edited(points, image)
        out = self.model.forward_per_image_maps(*held)
        landmark = self.model.landmark_probabilities(out.landmark_logits)[0].cpu().numpy()
        rgb = out.rgb_logits[0].softmax(0).cpu().numpy()
        heatmaps = self.config.landmark_input == "heatmaps"
        return Answer(
            self.classes,
            rgb,
            landmark,
            out.fused_logits[0].softmax(0).cpu().numpy(),
            float(landmark.max()),
            bool(rgb.argmax() == landmark.argmax()),
            float(out.weight[0]),
            drawn[0, 0].float().cpu().numpy() if heatmaps else None,
        )

    def gradcam(
        self, points: torch.Tensor | None = None, image: torch.Tensor | None = None
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """Grad-CAM++ (S, S) of the RGB and the landmark branch for the edited face's fused class,
        each branch's pass holding the other branch at its edited map; and that class."""
        if self.model.arm is None:
            raise ValueError(
                "Grad-CAM explains the landmark CNN's heatmap input; this model's landmark branch "
                "reads coordinates"
            )
        drawn, held = self._edited(points, image)
        with torch.no_grad():
            explained = self.model.forward_per_image_maps(*held).fused_logits.argmax(1)
        shown = tensors.normalise((self.image if image is None else image)[None].to(self.device))
        rgb_cam, landmark_cam = explain.branch_cams(
            self.model, shown, drawn, held, explained.cpu().numpy()
        )
        return rgb_cam[0], landmark_cam[0], int(explained[0])


# -- the whole test set under landmark noise -------------------------------------------------------


@torch.no_grad()
def jitter_study(
    model: models.FusionModel,
    split: tensors.SplitTensors,
    cache: torch.Tensor,
    config: training.FusionConfig,
    *,
    sigmas=JITTER_SIGMAS,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Each test image's fused and landmark-head class with every landmark jittered at each of
    ``sigmas`` (px of the aligned face), the test set evaluated as the report evaluates it
    (``training.fusion_outputs``); the noise drawn once from ``seed``. Returns tensors: "sigmas"
    (L,), "fused" and "landmark" (L, N), "rgb" and "labels" (N,)."""
    noise = jitter_noise(split.points, seed)
    fused, landmark = [], []
    for sigma in sigmas:
        moved = dataclasses.replace(
            split, points=jittered(split.points, sigma, split.input_size, noise)
        )
        out = training.fusion_outputs(model, moved, cache, config)
        fused.append(out.fused_logits.argmax(1))
        landmark.append(out.landmark_logits.argmax(1))
    return {
        "sigmas": torch.tensor([float(s) for s in sigmas]),
        "fused": torch.stack(fused),
        "landmark": torch.stack(landmark),
        "rgb": out.rgb_logits.argmax(1),  # the RGB branch reads no landmark
        "labels": split.labels.clone(),
        "seed": torch.tensor(int(seed)),
    }


def saved_jitter_study(path: Path, stamp: int, compute) -> dict[str, torch.Tensor]:
    """The study saved at ``path`` for the model file of modification time ``stamp``, or
    ``compute()`` saved there."""
    path = Path(path)
    if path.exists():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if int(saved.get("stamp", -1)) == stamp:
            return saved
    study = {**compute(), "stamp": torch.tensor(stamp)}
    save_torch(study, path)
    return study


def jitter_table(
    studies: Mapping[tuple[str, int], Mapping[str, torch.Tensor]], index=None
) -> pd.DataFrame:
    """One row per model, seed and jitter: fused, landmark-head and RGB-head accuracy over the test
    images ``index`` (None: all), from the studies' saved per-image classes."""
    rows = []
    for (name, seed), study in studies.items():
        keep = slice(None) if index is None else torch.tensor(np.array(index, dtype=np.int64))
        labels = study["labels"][keep]
        accuracy = {
            head: [float((classes[keep] == labels).float().mean()) for classes in study[head]]
            for head in ("fused", "landmark")
        }
        rgb = float((study["rgb"][keep] == labels).float().mean())
        for level, sigma in enumerate(study["sigmas"].tolist()):
            rows.append(
                {
                    "model": name,
                    "seed": int(seed),
                    "jitter (px)": sigma,
                    "fused OA": accuracy["fused"][level],
                    "landmark OA": accuracy["landmark"][level],
                    "RGB OA": rgb,
                    "images": int(labels.numel()),
                }
            )
    return pd.DataFrame(rows)


def jitter_summary(table: pd.DataFrame) -> pd.DataFrame:
    """The seeds' mean of ``jitter_table`` per model and jitter, with the fused gain over RGB."""
    summary = (
        table.assign(gain=table["fused OA"] - table["RGB OA"])
        .groupby(["model", "jitter (px)"], sort=False)[
            ["fused OA", "landmark OA", "RGB OA", "gain"]
        ]
        .mean()
        .reset_index()
        .rename(columns={"gain": "fused - RGB"})
    )
    seeds = table.groupby("model", sort=False)["seed"].nunique()
    return summary.assign(seeds=summary["model"].map(seeds))


def plot_jitter(table: pd.DataFrame, title: str = "") -> plt.Figure:
    """One panel per model (fused and landmark-head accuracy against jitter, each seed a thin line,
    the seeds' mean thick, the RGB head dotted) and a last panel with the fused gain over RGB."""
    names = list(dict.fromkeys(table["model"]))
    fig, axes = plt.subplots(
        1, len(names) + 1, figsize=(4.2 * (len(names) + 1), 3.4), squeeze=False
    )
    axes = axes[0]

    def seeds_and_mean(ax, rows, column, style, colour, label) -> None:
        """Each seed a thin line, the seeds' mean thick."""
        for _, seed_rows in rows.groupby("seed"):
            ax.plot(
                seed_rows["jitter (px)"], seed_rows[column], style, c=colour, lw=0.8, alpha=0.45
            )
        mean = rows.groupby("jitter (px)")[column].mean()
        ax.plot(mean.index, mean.to_numpy(), style, c=colour, lw=2, label=label)

    lines = {"fused OA": ("-", "C0"), "landmark OA": ("--", "C1"), "RGB OA": (":", "0.4")}
    gain = table.assign(gain=table["fused OA"] - table["RGB OA"])
    for k, (ax, name) in enumerate(zip(axes, names)):
        rows = table[table["model"] == name]
        for column, (style, colour) in lines.items():
            seeds_and_mean(ax, rows, column, style, colour, column.replace(" OA", ""))
        ax.set_title(name, fontsize=9)
        ax.set_ylabel("test accuracy", fontsize=8)
        seeds_and_mean(axes[-1], gain[gain["model"] == name], "gain", "-", f"C{k + 2}", name)
    axes[-1].axhline(0, c="0.4", lw=0.8, ls=":")
    axes[-1].set_title("fused - RGB accuracy", fontsize=9)
    for ax in axes:
        ax.set_xlabel("landmark jitter (px of the 100 px aligned face)", fontsize=8)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_before_after(
    face: FaceWhatIf, after_points: torch.Tensor, title: str = "", after_image=None
) -> plt.Figure:
    """A scripted edit shown statically: the face with its points before (white) and after (red),
    the landmark input before and after, and the three heads' probabilities before and after."""
    before, after = face.answer(), face.answer(after_points, after_image)
    shown = face.image if after_image is None else after_image
    panels = 3 if before.heatmap is not None else 1
    fig, axes = plt.subplots(
        1,
        panels + 1,
        figsize=(2.6 * panels + 5.0, 2.9),
        gridspec_kw={"width_ratios": [1] * panels + [2.2]},
    )
    axes[0].imshow(shown.permute(1, 2, 0).numpy())
    for points, colour in ((face.points, "white"), (after_points, "red")):
        axes[0].scatter(points[:, 0], points[:, 1], s=6, c=colour)
    axes[0].set(xlim=(0, face.size), ylim=(face.size, 0))  # points moved off the face stay off
    axes[0].set_title(f"true {face.classes[face.label]}: before / after", fontsize=8)
    if panels == 3:
        for ax, answer, when in ((axes[1], before, "before"), (axes[2], after, "after")):
            ax.imshow(answer.heatmap, cmap="gray")
            ax.set_title(f"landmark heatmap, {when}", fontsize=8)
    for ax in axes[:panels]:
        ax.axis("off")
    bars, y = axes[-1], np.arange(len(face.classes))
    for k, head in enumerate(("rgb", "landmark", "fused")):
        at, colour, label = y + 0.27 * (k - 1), f"C{k}", f"{head} (after; shaded: before)"
        bars.barh(at, getattr(before, head), height=0.26, color=colour, alpha=0.3)
        bars.barh(
            at,
            getattr(after, head),
            height=0.26,
            color="none",
            edgecolor=colour,
            lw=1.2,
            label=label,
        )
    bars.set_yticks(y, face.classes, fontsize=7)
    bars.invert_yaxis()
    bars.set_xlim(0, 1)
    bars.legend(fontsize=6, loc="lower right")
    bars.set_title(
        f"before: {before.predicted()} (factor {before.factor:.2f}); after: "
        f"{after.predicted()} (factor {after.factor:.2f})",
        fontsize=8,
    )
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


# -- a finished run's models (the explorer's) ------------------------------------------------------

# the two models of the report's jitter figure: the proposed weighting and the one without any
STUDIED = (explore.PROPOSED, "naive fusion (no weighting)")


def face_of(data: explore.ExplorerData, outputs: explore.ModelOutputs, index: int) -> FaceWhatIf:
    """Test image ``index`` of a run's trained model (``ExplorerData.outputs``)."""
    cache = data.ex.baselines.rgb_cache("test", outputs.seed)
    return FaceWhatIf(outputs.model, data.ex.test, cache, outputs.config, index)


def jitter_studies(
    data: explore.ExplorerData, names=STUDIED, *, progress: bool = True
) -> dict[tuple[str, int], dict[str, torch.Tensor]]:
    """``jitter_study`` of each model ``names`` and each seed of the run that trained it, the noise
    drawn from the model's seed; kept in ``<run>/explore/`` and computed again only when the model
    file changes."""
    ex = data.ex
    pairs = [(name, seed) for name in names for seed in ex.seeds if name in data.models(seed)]
    studies = {}
    for name, seed in tqdm(pairs, desc="landmark jitter study", disable=not progress):
        model, config, folder = data.trained(name, seed)
        cache = ex.baselines.rgb_cache("test", seed)
        studies[(name, seed)] = saved_jitter_study(
            ex.run_dir / explore.FEATURES_DIR / f"jitter_{folder.name}.pt",
            (folder / "best.pt").stat().st_mtime_ns,
            lambda m=model, c=cache, k=config, s=seed: jitter_study(m, ex.test, c, k, seed=s),
        )
    return studies
