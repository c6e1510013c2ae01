"""Grad-CAM++ explanations of the fused model on both branches, and the rules that pick the examples
of the paper's Tables 9-11.

The CAMs come from pytorch-grad-cam's ``GradCAMPlusPlus`` at the layers of the paper's footnote 3:
the output of ResNet18's layer4 on the RGB branch (before ARM) and the output of the landmark CNN's
conv5 on the landmark branch (before the size-matching conv and ARM). The target is the fused
model's logit of a class: its predicted class by default, or the true class.

The fused model takes two inputs; ``FusedLogits`` presents it to pytorch-grad-cam as a function of
one of them with the other held. ARM adds a batch-mean term that couples the images of a batch: left
live, one image's CAM would also carry the gradients of the other images' targets. The terms are
therefore held at fixed values. With affinity ``"batch"`` (the default, the one the evaluation used)
they are the values of the test batch the image was evaluated in: consecutive test-order batches of
the evaluation batch size, as ``training.predict_fusion`` runs them. The explained prediction is
computed from the evaluation's own per-image features (``evaluated_maps``: bf16 under CUDA's
autocast) with the heads in fp32, as the evaluation computes them, so it is the reported one
whatever the precision (notebook 07 checks this); the CAM passes run in fp32. With affinity
``"fixed"`` the terms are the population means.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from fer_lib import models
from fer_lib.data import tensors
from fer_lib.runtime import precision
from fer_lib.settings import AFFINITY_MODES
from fer_lib.training import landmark_inputs

BRANCHES = ("rgb", "landmark")
TARGETS = ("predicted", "true")
Terms = tuple[Tensor, Tensor]  # ARM's batch terms of the RGB and the landmark branch

# Table 11's cases: (RGB right, landmark right, fused right); None = either.
TABLE11_CASES = {
    "landmark right, RGB wrong, fused right": (False, True, True),
    "all three right": (True, True, True),
    "RGB and landmark wrong, fused right": (False, False, True),
    "fused wrong, landmark right": (None, True, False),
    "fused wrong, RGB right (fusion broke it)": (True, None, False),
}


# --------------------------------------------------------------------------------------------------
# Choosing the examples (deterministic rules on a prediction table)


def _frame(predictions) -> pd.DataFrame:
    """One row per test image: index, name, label, each head's prediction, the fused confidence."""
    return pd.DataFrame(
        {
            "index": np.arange(len(predictions.labels)),
            "image": list(predictions.names),
            "label": np.asarray(predictions.labels).astype(int),
            "fused": predictions.fused.argmax(1),
            "rgb": predictions.rgb.argmax(1),
            "landmark": predictions.landmark.argmax(1),
            "fused confidence": predictions.fused.max(1),
        }
    )


def _top(candidates: pd.DataFrame, count: int) -> pd.DataFrame:
    # most confident first; ties go to the earlier test image (a stable sort keeps test order)
    return candidates.sort_values("fused confidence", ascending=False, kind="stable").head(count)


def _named(picked: pd.DataFrame, classes) -> pd.DataFrame:
    picked = picked.reset_index(drop=True)
    for column in ("label", "fused", "rgb", "landmark"):
        picked[column] = [classes[k] for k in picked[column]]
    return picked


def _in_case(frame: pd.DataFrame, wanted: tuple[bool | None, ...]) -> np.ndarray:
    mask = np.ones(len(frame), dtype=bool)
    for head, right in zip(("rgb", "landmark", "fused"), wanted):
        if right is not None:
            mask &= (frame[head] == frame["label"]).to_numpy() == right
    return mask


def pick_per_class(predictions, *, correct: bool, per_class: int = 1) -> pd.DataFrame:
    """Table 9 (``correct=True``) or Table 10 (``correct=False``): for each true class, the test
    images the fused model got right (or wrong) with the highest fused confidence. The classes are
    the predictions' own (the data set's list); classes without such an image are left out."""
    frame = _frame(predictions)
    right = frame["fused"] == frame["label"]
    classes = predictions.classes
    picked = [
        _top(frame[(frame["label"] == k) & (right == correct)], per_class).assign(group=name)
        for k, name in enumerate(classes)
    ]
    return _named(pd.concat(picked)[["group", *frame.columns]], classes)


def pick_cases(predictions, *, per_case: int = 2) -> pd.DataFrame:
    """Table 11: per case of ``TABLE11_CASES``, its images of highest fused confidence."""
    frame = _frame(predictions)
    picked = [
        _top(frame[_in_case(frame, wanted)], per_case).assign(group=name)
        for name, wanted in TABLE11_CASES.items()
    ]
    return _named(pd.concat(picked)[["group", *frame.columns]], predictions.classes)


def case_counts(predictions) -> pd.DataFrame:
    """How many test images fall in each case of Table 11."""
    frame = _frame(predictions)
    masks = {name: _in_case(frame, wanted) for name, wanted in TABLE11_CASES.items()}
    return pd.DataFrame(
        [{"case": k, "images": int(m.sum()), "share": float(m.mean())} for k, m in masks.items()]
    )


# --------------------------------------------------------------------------------------------------
# Grad-CAM++


class FusedLogits(nn.Module):
    """The fused model's logits (B, classes) as a function of one input (``vary``: "rgb"
    images or "landmark" heatmaps), the other branch's per-image ARM map and both ARM batch
    terms held at the given values."""

    def __init__(
        self, model: models.FusionModel, vary: str, held_per_image: Tensor, batch_terms: Terms
    ):
        super().__init__()
        if vary not in BRANCHES:
            raise ValueError(f"vary {vary!r} is not one of {BRANCHES}")
        self.model, self.vary = model, vary
        self.held_per_image, self.batch_terms = held_per_image, batch_terms

    def forward(self, x: Tensor) -> Tensor:
        if self.vary == "rgb":
            # the baseline is frozen: only an input that needs gradients gives
            # layer4's output a gradient
            x = x if x.requires_grad else x.detach().requires_grad_(True)
            rgb, landmark = self.model.frozen_per_image(x), self.held_per_image
        else:
            rgb, landmark = self.held_per_image, self.model.landmark_per_image(x)
        return self.model.forward_per_image_maps(rgb, landmark, self.batch_terms).fused_logits


@dataclass
class Explanation:
    """Grad-CAM++ maps (N, S, S) in [0, 1] of a set of test images, with what they explain."""

    index: np.ndarray  # (N,) test-set indices
    target: np.ndarray  # (N,) the class whose fused logit is explained
    target_kind: str  # "predicted" or "true"
    affinity: str  # how ARM's batch terms were held (see the module docstring)
    images: np.ndarray  # (N, S, S, 3) float in [0, 1], the network's input before normalisation
    heatmaps: np.ndarray  # (N, S, S) float in [0, 1]
    rgb_cam: np.ndarray  # (N, S, S)
    landmark_cam: np.ndarray  # (N, S, S)
    fused_probabilities: np.ndarray  # (N, classes) of the explained forward pass

    def describe(self) -> str:
        held = (
            "the evaluation batch's ARM terms"
            if self.affinity == "batch"
            else "ARM's population means"
        )
        return f"Grad-CAM++ of the fused {self.target_kind} class; {held}"


@torch.no_grad()
def evaluated_maps(
    model: models.FusionModel,
    split: tensors.SplitTensors,
    cache: Tensor,
    config,
    index: np.ndarray,
    affinity: str = "batch",
) -> tuple[Tensor, Tensor, Terms]:
    """Each image of ``index`` as the evaluation saw it (``training.fusion_outputs``): its RGB
    per-image map from the cache, its landmark per-image map computed in its test batch (consecutive
    batches of ``config.eval_batch_size`` in split order) in the evaluation's precision, and ARM's
    terms (N, n*n): its batch's for ``"batch"``, the population means for ``"fixed"``. Returns (RGB
    maps, landmark maps, terms), each (N, n*n) in fp32."""
    device = next(model.parameters()).device
    size = config.eval_batch_size
    previous = model.baseline.arm.affinity  # the coordinate branch has no ARM of its own
    model.set_affinity(affinity)
    try:
        batches = {}
        for batch in sorted({int(i) // size for i in index}):
            members = torch.arange(batch * size, min((batch + 1) * size, len(split)))
            rgb = cache[0, members].to(device)
            heatmaps = landmark_inputs(split, members, None, config, device)
            # as fusion_outputs computes it: bf16 on CUDA, the same cuDNN kernels
            with precision.autocast(device), precision.evaluation_kernels():
                landmark = model.landmark_per_image(heatmaps)
            rgb, landmark = rgb.float(), landmark.float()
            batches[batch] = rgb, landmark, model.batch_terms(rgb, landmark)
    finally:
        model.set_affinity(previous)
    rows = [(batches[int(i) // size], int(i) % size) for i in index]
    rgb = torch.stack([b[0][k] for b, k in rows])
    landmark = torch.stack([b[1][k] for b, k in rows])
    rgb_terms = torch.cat([b[2][0].expand(1, -1) for b, _ in rows])
    landmark_terms = torch.cat([b[2][1].expand(1, -1) for b, _ in rows])
    return rgb, landmark, (rgb_terms, landmark_terms)


def _grad_cam_plus_plus(
    wrapper: FusedLogits, layer: nn.Module, inputs: Tensor, target: np.ndarray
) -> np.ndarray:
    # pytorch_grad_cam (with cv2): 13 s (2 busy cores) at every notebook's start (run.experiment
    # imports this module)
    from pytorch_grad_cam import GradCAMPlusPlus
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cam = GradCAMPlusPlus(model=wrapper, target_layers=[layer])
    try:  # not ``with``: its __exit__ swallows IndexError
        with torch.enable_grad():
            return cam(
                input_tensor=inputs, targets=[ClassifierOutputTarget(int(k)) for k in target]
            )
    finally:
        cam.activations_and_grads.release()
        wrapper.model.zero_grad(set_to_none=True)


def _checked_index(
    model: models.FusionModel, split: tensors.SplitTensors, index, target: str, affinity: str
) -> np.ndarray:
    """``index`` as a flat int64 copy, once the request is one ``explain`` can answer."""
    if target not in TARGETS:
        raise ValueError(f"target {target!r} is not one of {TARGETS}")
    if model.arm is None:
        raise ValueError(
            "Grad-CAM explains the landmark CNN's heatmap input; this model's landmark branch "
            "reads coordinates (landmark_input 'coords'): explain a heatmap run instead"
        )
    if affinity not in AFFINITY_MODES:
        raise ValueError(f"affinity {affinity!r} is not one of {AFFINITY_MODES}")
    index = np.array(index, dtype=np.int64).reshape(-1)  # a copy: pandas columns can be read-only
    if len(index) and (index.min() < 0 or index.max() >= len(split)):
        raise IndexError(
            f"example indices must be in [0, {len(split)}), got {index.min()}..{index.max()}"
        )
    return index


def _explain_chunk(
    model: models.FusionModel,
    split: tensors.SplitTensors,
    cache: Tensor,
    config,
    chosen: np.ndarray,
    target: str,
    affinity: str,
) -> tuple[np.ndarray, ...]:
    """``explain`` on the images ``chosen``: the classes explained, the images (N, H, W, 3) in
    [0, 1], the heatmaps' first channel, both branches' CAMs and the fused probabilities."""
    device = next(model.parameters()).device
    members = torch.as_tensor(chosen)
    # the reported logits from the evaluation's own features (bf16 under autocast) and heads (fp32);
    # the CAMs run in fp32 (pytorch-grad-cam reads activations through numpy, which has no bf16)
    rgb, landmark, terms = evaluated_maps(model, split, cache, config, chosen, affinity)
    images = tensors.normalise(split.images[members].to(device))
    heatmaps = landmark_inputs(split, members, None, config, device)
    with torch.no_grad():
        logits = model.forward_per_image_maps(rgb, landmark, terms).fused_logits
    explained = (
        logits.argmax(1).cpu().numpy() if target == "predicted" else split.labels[members].numpy()
    )
    cams = branch_cams(model, images, heatmaps, (rgb, landmark, terms), explained)
    shown = split.images[members].permute(0, 2, 3, 1).float().numpy() / 255
    return explained, shown, heatmaps[:, 0].cpu().numpy(), *cams, logits.softmax(1).cpu().numpy()


def branch_cams(
    model: models.FusionModel,
    images: Tensor,
    heatmaps: Tensor,
    held: tuple[Tensor, Tensor, Terms],
    explained: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM++ (N, S, S) of the RGB and the landmark branch for the fused logits of the classes
    ``explained``: ``images`` normalised (N, 3, S, S), ``heatmaps`` (N, 1, S, S), ``held`` the
    per-image maps and ARM terms (``evaluated_maps``) each branch's pass holds the other at."""
    rgb, landmark, terms = held
    rgb_cam = _grad_cam_plus_plus(
        FusedLogits(model, "rgb", landmark, terms), model.baseline.cam_layer, images, explained
    )
    landmark_wrapper = FusedLogits(model, "landmark", rgb, terms)
    landmark_cam = _grad_cam_plus_plus(
        landmark_wrapper, model.landmark_cnn.cam_layer, heatmaps, explained
    )
    return rgb_cam, landmark_cam


def explain(
    model: models.FusionModel,
    split: tensors.SplitTensors,
    cache: Tensor,
    config,
    index,
    *,
    target: str = "predicted",
    affinity: str = "batch",
    chunk: int = 32,
) -> Explanation:
    """Grad-CAM++ on both branches for the test images ``index`` of ``split``.

    Args:
        cache: the baseline's per-image feature cache of ``split`` (``training.rgb_feature_cache``);
            used for the batch terms of the images' evaluation batches.
        target: explain the fused "predicted" class or the "true" class.
        affinity: "batch" (terms of the evaluation batch) or "fixed" (population means; estimate
            them first).
    """
    index = _checked_index(model, split, index, target, affinity)
    model.eval()
    parts = [
        _explain_chunk(model, split, cache, config, index[start : start + chunk], target, affinity)
        for start in range(0, len(index), chunk)
    ]
    if not parts:
        raise ValueError("explain got no example indices")
    explained, images, heatmaps, rgb_cam, landmark_cam, probabilities = (
        np.concatenate(p) for p in zip(*parts)
    )
    heatmaps = np.clip(heatmaps, 0, 1)
    return Explanation(
        index, explained, target, affinity, images, heatmaps, rgb_cam, landmark_cam, probabilities
    )


# --------------------------------------------------------------------------------------------------
# Figures


def overlay(base: np.ndarray, cam: np.ndarray) -> np.ndarray:
    """pytorch-grad-cam's jet overlay of a CAM on an RGB (S, S, 3) or grey (S, S) image in [0, 1]"""
    # pytorch_grad_cam: see _grad_cam_plus_plus
    from pytorch_grad_cam.utils.image import show_cam_on_image

    base = np.repeat(base[..., None], 3, axis=-1) if base.ndim == 2 else base
    return show_cam_on_image(np.float32(base), cam, use_rgb=True)


def plot_explanations(explanation: Explanation, examples: pd.DataFrame, title: str) -> plt.Figure:
    """One column per example (``examples`` rows, in the order of ``explanation.index``): the input
    image, its RGB-branch CAM, the landmark heatmap and its landmark-branch CAM; headers give the
    true class and the three heads' predictions. Each row is one mosaic image (one axes per row
    keeps the figure fast to save)."""
    if list(examples["index"]) != list(explanation.index):
        raise ValueError("the examples table and the explanation list different images")
    n, size = len(examples), explanation.images.shape[1]
    gap = max(2, size // 20)

    def uint8(rgb: np.ndarray) -> np.ndarray:
        return rgb if rgb.dtype == np.uint8 else np.uint8(np.round(255 * np.clip(rgb, 0, 1)))

    def mosaic(panels) -> np.ndarray:
        row = np.full((size, n * (size + gap) - gap, 3), 255, dtype=np.uint8)
        for j, panel in enumerate(panels):
            row[:, j * (size + gap) : j * (size + gap) + size] = uint8(panel)
        return row

    grey = np.repeat(explanation.heatmaps[..., None], 3, axis=-1)
    rows = {
        "input": explanation.images,
        "RGB CAM\n(layer4)": [
            overlay(img, cam) for img, cam in zip(explanation.images, explanation.rgb_cam)
        ],
        "landmark\nheatmap": grey,
        "landmark CAM\n(conv5)": [
            overlay(hm, cam) for hm, cam in zip(explanation.heatmaps, explanation.landmark_cam)
        ],
    }
    fig, axes = plt.subplots(4, 1, figsize=(1.75 * n + 1.2, 9.0), squeeze=False)
    for ax, (label, panels) in zip(axes[:, 0], rows.items()):
        ax.imshow(mosaic(panels), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(label, fontsize=9)
        for spine in ax.spines.values():
            spine.set_visible(False)
    for j, row in enumerate(examples.itertuples(index=False)):
        header = (
            f"{textwrap.fill(row.group, 22)}\ntrue {row.label}\nfused {row.fused}\nRGB {row.rgb} "
            f"/ lm {row.landmark}"
        )
        x = j * (size + gap) + size / 2
        axes[0, 0].text(x, -size * 0.04, header, ha="center", va="bottom", fontsize=7.5)
    fig.suptitle(f"{title}\n{explanation.describe()}", fontsize=10)
    fig.tight_layout()
    return fig
