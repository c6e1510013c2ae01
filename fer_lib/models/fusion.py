"""The weighted fusion (eq. 1-3): the frozen RGB network's feature joined with the landmark
branch's, weighted by the landmark head's confidence and its agreement with the RGB network; a
learned gate and temperature scaling as alternatives.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional

from fer_lib.data.landmarks import flip_permutation
from fer_lib.data.rafdb import NUM_CLASSES
from fer_lib.io import fill_older_fields
from fer_lib.models.arm import (
    ARM,
    ARMNet,
    arm_geometry,
    armnet_from_config,
    load_folder_state,
    save_folder_state,
)
from fer_lib.models.checkpoints import CheckpointError
from fer_lib.models.folders import read_model_folder
from fer_lib.models.landmark import CoordinateMLP, LandmarkCNN
from fer_lib.runtime import precision
from fer_lib.settings import LANDMARK_INPUTS, WEIGHTINGS, FusionConfig, arm_layout


def landmark_memory_format(config: FusionConfig, device) -> torch.memory_format:
    """channels_last for the landmark CNN on CUDA, and on the CPU from width 8: oneDNN then runs its
    training step 1.4x faster at width 8 (benchmarks/README.md). Narrower CPU networks stay
    contiguous: a ResNet18 at width 4 in channels_last corrupted the heap there."""
    if torch.device(device).type == "cuda" or config.width >= 8:
        return torch.channels_last
    return torch.contiguous_format


class WeightGate(nn.Module):
    """The ``learned`` weighting: a logistic gate on [p_rgb, p_landmark, agreement] -> a factor in
    (0, 2) for F_landmark. Zero-initialised (factor 1); fitted on the validation split after the
    branch is trained (``training.fit_gate``), so it learns how far to trust the landmark head where
    its confidence is honest. The upper bound 2 lets it amplify the landmark feature, which the
    paper's factors (at most 1) cannot."""

    def __init__(self, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.linear = nn.Linear(2 * num_classes + 1, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, rgb_logits: Tensor, landmark_logits: Tensor, agree: Tensor) -> Tensor:
        inputs = torch.cat(
            [
                rgb_logits.softmax(1),
                landmark_logits.softmax(1),
                agree.to(rgb_logits.dtype)[:, None],
            ],
            dim=1,
        )
        return 2 * torch.sigmoid(self.linear(inputs.float()))[:, 0]


def fit_temperature(logits: Tensor, labels: Tensor) -> float:
    """The temperature T minimising the cross-entropy of softmax(logits / T) (Guo et al.
    2017), by a bounded search on log T in [1/20, 20]: deterministic, and one parameter cannot
    overfit a validation split."""
    # scipy.optimize: 1 s (2 busy cores) at every notebook's start, through run.experiment
    from scipy.optimize import minimize_scalar

    logits, labels = logits.double(), labels.long()

    def nll(log_t: float) -> float:
        return float(functional.cross_entropy(logits / np.exp(log_t), labels))

    bounds = (-np.log(20), np.log(20))
    return float(
        np.exp(minimize_scalar(nll, bounds=bounds, method="bounded", options={"xatol": 1e-4}).x)
    )


class FusionOutput(NamedTuple):
    fused_logits: Tensor  # (B, 7): fusion(cat(F_RGB, weight * F_landmark))
    landmark_logits: Tensor  # (B, 7): the landmark-only head
    rgb_logits: Tensor  # (B, 7): the frozen baseline
    weight: Tensor  # (B,): the factor applied to F_landmark
    rgb_feature: Tensor  # (B, n*n): F_RGB
    landmark_feature: Tensor  # (B, n*n): F_landmark before weighting


class FusionModel(nn.Module):
    """Frozen RGB baseline + landmark CNN with its own ARM, fused by a weighted concatenation
    (section 4.2).

    Args:
        baseline: the pretrained ARMNet; it is frozen (requires_grad False) and stays in eval mode.
        weighting: what scales F_landmark: "both" (p * a, the paper), "confidence" (p),
            "agreement" (a), "none" (1). p = max softmax of the landmark head (eq. 1); a = 1 when
            the landmark head's argmax equals the baseline's, else ``w_disagree``. Beyond the
            paper: "calibrated" (p * a with p taken from the landmark head's softmax at temperature
            ``temperature``, a buffer fitted on the validation split during training) and
            "learned" (``WeightGate``, fitted afterwards by ``training.fit_gate``).
        w_disagree: the agreement weight on disagreement (``settings.PAPER_W``, Fig. 4).
        weight_grad: let gradients flow through p (the paper is silent; default: the weight is a
            constant).
        batch_norm: BatchNorm in the landmark CNN (not in the paper).
        width: the landmark CNN's base width (32 is Table 1).
        init_from_baseline: start the fusion layer as the baseline's fc on F_RGB and zero on
            F_landmark, so the fused model starts exactly as the baseline and training moves it
            from there (the paper does not say how the layer is initialised); False: PyTorch's
            default random init.
        landmark_input: "heatmaps" (Table 1's CNN and its own ARM) or "coords"
            (``CoordinateMLP`` on the ``num_points`` aligned coordinates; no ARM, so no batch term
            on that side).
    """

    def __init__(
        self,
        baseline: ARMNet,
        *,
        weighting: str = FusionConfig.weighting,
        w_disagree: float = FusionConfig.w_disagree,
        weight_grad: bool = FusionConfig.weight_grad,
        batch_norm: bool = FusionConfig.batch_norm,
        width: int = FusionConfig.width,
        init_from_baseline: bool = FusionConfig.fusion_init_from_baseline,
        landmark_input: str = FusionConfig.landmark_input,
        num_points: int = len(flip_permutation(FusionConfig.landmark_set)),
    ):
        super().__init__()
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting {weighting!r} is not one of {WEIGHTINGS}")
        if landmark_input not in LANDMARK_INPUTS:
            raise ValueError(f"landmark input {landmark_input!r} is not one of {LANDMARK_INPUTS}")
        self.weighting, self.weight_grad = weighting, weight_grad
        self.w_disagree = float(w_disagree)
        self.input_size = baseline.input_size
        dim, num_classes = baseline.feature_dim, baseline.fc.out_features
        self.baseline = baseline.requires_grad_(False).eval()
        self.arm: ARM | None = None
        if landmark_input == "heatmaps":
            self.landmark_cnn = LandmarkCNN(self.input_size, batch_norm=batch_norm, width=width)
            shuffle, kernel, stride = arm_layout(self.landmark_cnn.out_channels)
            self.arrangement = nn.PixelShuffle(shuffle)
            self.arm = ARM(arm_geometry(self.input_size)[2], kernel=kernel, stride=stride)
        else:
            self.landmark_mlp = CoordinateMLP(num_points, dim, batch_norm=batch_norm)
        if weighting == "calibrated":
            self.register_buffer("temperature", torch.ones(()))
        if weighting == "learned":
            self.gate = WeightGate(num_classes)
        self.landmark_head = nn.Linear(dim, num_classes)
        self.fusion = nn.Linear(2 * dim, num_classes)
        if init_from_baseline:
            with torch.no_grad():
                self.fusion.weight.zero_()
                # (7, dim): F_RGB part = the baseline's fc
                self.fusion.weight[:, :dim] = baseline.fc.weight
                self.fusion.bias.copy_(baseline.fc.bias)

    @classmethod
    def from_config(cls, baseline: ARMNet, config: FusionConfig) -> FusionModel:
        """The fusion model a ``FusionConfig`` describes, on top of ``baseline`` (frozen)."""
        return cls(
            baseline,
            weighting=config.weighting,
            w_disagree=config.w_disagree,
            weight_grad=config.weight_grad,
            width=config.width,
            batch_norm=config.batch_norm,
            init_from_baseline=config.fusion_init_from_baseline,
            landmark_input=config.landmark_input,
            num_points=len(flip_permutation(config.landmark_set)),
        )

    def save_pretrained(self, folder: str | Path, config: FusionConfig, **about: object) -> Path:
        """This model as a model folder (``fer_lib.models.folders``): config.json with the RGB
        network's shape and ``config`` (the recipe it was trained with), model.safetensors with
        both branches, the fusion layer and both ARM blocks' population means; ``about``: what else
        config.json records (provenance, preprocessing)."""
        record = {
            "architecture": "FusionModel",
            "baseline": self.baseline.pretrained_config(),
            "fusion": dataclasses.asdict(config),
            **about,
        }
        return save_folder_state(self, folder, record)

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> FusionModel:
        """A model from a model folder (a local folder, or a Hugging Face Hub repository), on the
        CPU in eval mode, batch-independent (affinity "fixed": a single image is predicted as in any
        batch) where it carries both population means. Its recipe: ``model.config``."""
        record, state = read_model_folder(folder, "FusionModel")
        try:
            config = FusionConfig(**fill_older_fields(FusionConfig, record["fusion"]))
        except (KeyError, TypeError) as error:
            raise CheckpointError(
                f"{Path(folder) / 'config.json'}: no valid fusion recipe ({error}); export the "
                "model again"
            ) from None
        model = cls.from_config(armnet_from_config(record.get("baseline", {}), folder), config)
        load_folder_state(model, state, folder)
        model.config = config
        if config.landmark_input == "heatmaps":  # the layout it was trained in: the same bytes
            model.landmark_cnn.to(memory_format=landmark_memory_format(config, "cpu"))
        return model

    def train(self, mode: bool = True) -> FusionModel:
        super().train(mode)
        self.baseline.eval()  # frozen: its BatchNorm statistics stay as released
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Everything but the baseline: the landmark branch, the landmark head and the fusion layer
        (and a gate)."""
        return [p for name, p in self.named_parameters() if not name.startswith("baseline.")]

    @property
    def landmark_branch(self) -> list[nn.Module]:
        """The modules making the landmark features (what data-parallel training syncs)."""
        return [self.landmark_cnn, self.arm] if self.arm is not None else [self.landmark_mlp]

    def set_affinity(self, mode: str) -> FusionModel:
        """Affinity mode of both ARM blocks (the baseline's and the landmark branch's)."""
        self.baseline.set_affinity(mode)
        if self.arm is not None:
            self.arm.set_affinity(mode)
        return self

    def landmark_per_image(self, landmarks: Tensor) -> Tensor:
        """(B, n*n) per-image landmark features of heatmaps (B, 1, s, s) or coordinates (B, 2K)"""
        if self.arm is None:
            return self.landmark_mlp(landmarks)
        return self.arm.per_image(self.arrangement(self.landmark_cnn(landmarks)))

    def landmark_probabilities(self, landmark_logits: Tensor) -> Tensor:
        """The landmark head's probabilities as the weighting reads them (tempered: "calibrated")"""
        if self.weighting == "calibrated":
            landmark_logits = landmark_logits / self.temperature
        return landmark_logits.softmax(dim=1)

    def feature_weight(self, landmark_logits: Tensor, rgb_logits: Tensor) -> Tensor:
        """(B,) factor for F_landmark: p_landmark * w (eq. 2), one of them, or 1 (``weighting``)."""
        agree = landmark_logits.argmax(dim=1) == rgb_logits.argmax(dim=1)
        if self.weighting == "learned":
            return self.gate(rgb_logits.detach(), landmark_logits.detach(), agree)
        confidence = self.landmark_probabilities(landmark_logits).amax(dim=1)  # (B,) eq. 1
        agreement = torch.where(agree, 1.0, self.w_disagree).to(confidence)  # (B,)
        weight = {
            "none": torch.ones_like(confidence),
            "confidence": confidence,
            "agreement": agreement,
            "both": confidence * agreement,
            "calibrated": confidence * agreement,
        }[self.weighting]
        return weight if self.weight_grad else weight.detach()

    def forward_cached(self, rgb_per_image: Tensor, landmarks: Tensor) -> FusionOutput:
        """Forward from the baseline's cached per-image maps (``baseline.forward_per_image``, eval
        mode) and the landmark input (heatmaps or coordinates, ``training.landmark_inputs``)."""
        if rgb_per_image.shape[0] != landmarks.shape[0]:
            raise ValueError(
                f"batch sizes differ: {rgb_per_image.shape[0]} RGB, {landmarks.shape[0]} landmark "
                "inputs"
            )
        return self.forward_per_image_maps(rgb_per_image, self.landmark_per_image(landmarks))

    def batch_terms(
        self, rgb_per_image: Tensor, landmark_per_image: Tensor
    ) -> tuple[Tensor, Tensor]:
        """ARM's batch terms of both branches for this batch (or the population means in affinity
        "fixed"); the coordinate branch has no ARM, so its term is 0."""
        if self.arm is None:
            landmark_term = torch.zeros_like(landmark_per_image[:1])
        else:
            landmark_term = self.arm.batch_term(landmark_per_image)
        return self.baseline.arm.batch_term(rgb_per_image), landmark_term

    def forward_per_image_maps(
        self,
        rgb_per_image: Tensor,
        landmark_per_image: Tensor,
        batch_terms: tuple[Tensor, Tensor] | None = None,
    ) -> FusionOutput:
        """The rest of the network from both branches' per-image ARM maps (B, n*n).
        ``batch_terms`` (each (1 or B, n*n)) replaces the terms computed from this batch:
        Grad-CAM holds them at the values of the evaluation batch so that each image's
        explanation depends on that image alone."""
        # the heads and eq. 2 in fp32, from bf16 features under autocast
        with precision.fp32_head(rgb_per_image):
            rgb_per_image, landmark_per_image = rgb_per_image.float(), landmark_per_image.float()
            rgb_term, landmark_term = (
                self.batch_terms(rgb_per_image, landmark_per_image)
                if batch_terms is None
                else (t.float() for t in batch_terms)
            )
            rgb_feature = rgb_per_image + rgb_term  # (B, n*n) F_RGB
            rgb_logits = self.baseline.fc(rgb_feature)  # (B, 7)
            landmark_feature = landmark_per_image + landmark_term  # (B, n*n) F_landmark
            landmark_logits = self.landmark_head(landmark_feature)  # (B, 7)
            weight = self.feature_weight(landmark_logits, rgb_logits)  # (B,)
            # (B, 2*n*n)
            fused = torch.cat([rgb_feature, weight[:, None] * landmark_feature], dim=1)
            return FusionOutput(
                self.fusion(fused),
                landmark_logits,
                rgb_logits,
                weight,
                rgb_feature,
                landmark_feature,
            )

    def frozen_per_image(self, images: Tensor) -> Tensor:
        """The frozen baseline's per-image maps (B, n*n) in full fp32 on any device and inside any
        autocast region (``precision.full``), as its feature cache holds them."""
        with precision.full(images.device):
            return self.baseline.forward_per_image(images.float())

    def forward(self, images: Tensor, landmarks: Tensor) -> FusionOutput:
        return self.forward_cached(self.frozen_per_image(images), landmarks)

    @staticmethod
    def loss(output: FusionOutput, targets: Tensor) -> Tensor:
        """Paper eq. 3: CE(landmark head) + CE(fused output)."""
        return functional.cross_entropy(output.landmark_logits, targets) + functional.cross_entropy(
            output.fused_logits, targets
        )

    @torch.no_grad()
    def estimate_population_means(self, batches: Iterable[tuple | list]) -> None:
        """Estimate both ARM blocks' population means (affinity "fixed") in eval mode. ``batches``
        yields tuples whose first two elements are the RGB input and the landmark input; the RGB
        input is either images (B, 3, s, s) or cached per-image maps (B, n*n) from
        ``baseline.forward_per_image``."""
        was_training = self.training
        device = self.fusion.weight.device
        self.eval()
        rgb, landmark = [], []
        try:
            for batch in batches:
                rgb_input, landmarks = batch[0].to(device), batch[1].to(device)
                rgb.append(self.frozen_per_image(rgb_input) if rgb_input.ndim == 4 else rgb_input)
                if self.arm is not None:  # the coordinate branch has no batch term to estimate
                    landmark.append(self.landmark_per_image(landmarks))
        finally:
            self.train(was_training)
        self.baseline.arm.estimate_population_mean(rgb)
        if self.arm is not None:
            self.arm.estimate_population_mean(landmark)
