"""Models: the frozen RGB baseline (ResNet18 + ARM), the landmark CNN and the weighted fusion.

Paper: Kanamori et al., "Emotion estimation from face images using facial landmarks" (shared/paper/SPEC.md).
Baseline: Shi & Zhu 2021, "Learning to Amend Facial Expression Representation via De-albino and Affinity"
(arXiv 2103.10189; code: SimKarras/Amend-Representation-Module). Module names follow their released model,
so their RAF-DB checkpoint ``epoch59_acc0.9205.pth`` loads strictly (``load_arm_checkpoint``).

ARM block and its batch term
----------------------------
PixelShuffle(16) turns the trunk's (512, m, m) map into (2, 16m, 16m). One single-channel "de-albino" conv
(kernel 32, stride 8, no padding, no bias) is shared by both channels -> (2, n, n); BatchNorm2d(2); then the
per-image mean over the 2 channels, an (n, n) map. The ARM code adds ``alpha * x.mean(dim=[0, 1])`` of the
BatchNorm output: a mean over the minibatch and both channels that keeps the spatial positions, i.e. an
(n, n) map shared by the whole batch. It equals the batch mean of the per-image maps, which is how it is
computed here, so a cache of per-image maps (``ARM.per_image``) plus ``ARM.batch_term`` gives the same
features as the uncached forward. Affinity modes (``ARM.affinity``):

- ``"batch"``: faithful to the ARM code; the mean is over the current batch, in eval mode too, so an image's
  prediction depends on its batch companions (see shared/reference/ARM_NOTES.md).
- ``"fixed"``: batch-independent; the mean is the buffer ``population_mean``, the mean per-image map over a
  data set (the training set, without augmentation, in eval mode), set by ``estimate_population_mean``.
  The buffer is registered with ``persistent=False``, so ``state_dict()`` has exactly the authors' keys and
  their file loads strictly. Our checkpoints carry it beside the weights: ``save_arm_checkpoint`` writes
  ``population_means(model)``; ``load_arm_checkpoint`` and ``load_population_means`` read it back. It is
  NaN until estimated, and the fixed mode refuses to run on NaN.

Widths (for the CPU demo)
-------------------------
The paper's networks have ResNet18's widths (64..512 channels, ``width=64``) and Table 1's (32..512,
``width=32``). A narrower network (``width=16`` for ResNet18: 16..128 channels) trains ~16x faster on a
CPU. ARM then needs C/2 = r^2 for its PixelShuffle(r) to give 2 channels, and the de-albino kernel scales
with r (kernel 2r, stride r/2: 32 and 8 at the paper's r = 16), so the feature side n = 2m - 3 is the same
as the paper's for every width. Widths where r is an even integer work: ResNet18 1, 4, 9, 16, 25, 36, 49, 64 (the squares);
landmark CNN 2, 8, 18, 32. Only width 64 matches the released checkpoint.

Input sizes
-----------
224 is the paper's. Everything is derived from the input size s: trunk map m = s/32, shuffled side s/2,
ARM output side n = (s/2 - 32)/8 + 1 = s/16 - 3, feature size n*n (121 at 224). The RGB model takes
multiples of 32 from 64 (n = 1) upwards; the landmark CNN needs at least 128 (its size-matching conv's
kernel, conv5 side - m + 1, must be >= 1). ``arm_geometry`` and ``LandmarkCNN`` raise a ValueError listing
the valid sizes.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional

from fer_lib.data.rafdb import CLASSES, CLASSES_8, NUM_CLASSES
from fer_lib.data.tensors import IMAGENET_MEAN, IMAGENET_STD
from fer_lib.io import save_torch
from fer_lib.runtime import distributed, precision
from fer_lib.settings import (
    AFFINITY_MODES,
    DE_ALBINO_KERNEL,
    DE_ALBINO_STRIDE,
    LANDMARK_INPUTS,
    PAPER_INPUT_SIZE,
    SHUFFLE,
    SIZE_RANGE,
    WEIGHTINGS,
    arm_layout,
    arm_sides,
    landmark_last_kernel,
)

COORDS_HIDDEN = 256  # the coordinate MLP's hidden width

ARM_FILE_HINT = (
    "Expected the ARM authors' RAF-DB checkpoint (epoch59_acc0.9205.pth from SimKarras/Amend-Representation-Module, "
    "a dict with 'model_state_dict'), a file written by fer_lib.models.save_arm_checkpoint, or a bare state dict."
)


class CheckpointError(ValueError):
    """A weights file that cannot be used for the model asked for."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """A weights file that does not exist (catchable as FileNotFoundError too)."""


def check_classes(model_classes, data_classes, what: str) -> None:
    """Refuse a model whose class list is not the data set's, naming both lists (``what``: the checkpoint)."""
    if tuple(model_classes) != tuple(data_classes):
        raise CheckpointError(
            f"{what} was trained for {len(model_classes)} classes ({', '.join(model_classes)}), but the data set has "
            f"{len(data_classes)} ({', '.join(data_classes)}). Train on this data set, or compare across data sets "
            "with `python -m fer_lib evaluate --checkpoint RUN --data OTHER`, which maps the shared classes."
        )


def fp32_head(features: Tensor):
    """Autocast off for what follows the trunks (batch terms, heads, eq. 2): fp32 from bf16 features, so that the
    numbers the report compares do not depend on where the features were rounded (``fer_lib.runtime.precision``)."""
    return torch.autocast(features.device.type, enabled=False)


DEVICE_ENV = "FER_DEVICE"  # set by --device; worker processes and notebook kernels inherit it


class DeviceError(ValueError):
    """A device that cannot be used (a CPU-only torch asked for CUDA, a GPU index that is not there)."""


def cuda_problem() -> str:
    """Why this torch sees no GPU, in one phrase."""
    if torch.version.cuda is None:
        return "this torch is a CPU-only build"
    return (
        f"this torch is built for CUDA {torch.version.cuda} but sees no usable GPU (no NVIDIA driver, a driver "
        "older than that CUDA, or CUDA_VISIBLE_DEVICES hides them)"
    )


def checked_device(name: str) -> torch.device:
    """``name`` (cpu, cuda or cuda:N) as a device this machine has, or a DeviceError saying why not."""
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise DeviceError(f"device {name!r}: expected cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {name}: {cuda_problem()}")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(
                f"device {name}: only {torch.cuda.device_count()} GPU(s) visible (cuda:0..)"
            )
    return device


def pick_device() -> torch.device:
    """``FER_DEVICE`` where set (``--device``), else CUDA when available, else CPU."""
    import os

    name = os.environ.get(DEVICE_ENV, "").strip()
    if name:
        return checked_device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def describe_device(device: torch.device) -> str:
    """The device and its precision path, for the line a run prints before it trains."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        where = f"{device} ({torch.cuda.get_device_name(index)})"
    else:
        where = "cpu"
    return (
        f"{where}, {precision.name(device)} for the trained trunks, fp32 for the frozen RGB network"
    )


# ----------------------------------------------------------------------------------------------------------
# Geometry


def arm_geometry(input_size: int) -> tuple[int, int, int]:
    """(trunk map side m, pixel-shuffled side, ARM output side n) for square inputs; 224 -> (7, 112, 11)."""
    sides = arm_sides(input_size) if isinstance(input_size, int) and input_size > 0 else None
    if sides is None:
        valid = [s for s in SIZE_RANGE if arm_sides(s)]
        raise ValueError(
            f"input size {input_size!r} does not fit ResNet18 + ARM: the trunk map is size/32 and the "
            f"PixelShuffle({SHUFFLE}) map ({SHUFFLE} * size/32 per side) must hold the {DE_ALBINO_KERNEL}x"
            f"{DE_ALBINO_KERNEL} de-albino kernel at stride {DE_ALBINO_STRIDE}; valid sizes up to 448: {valid} "
            "(the paper uses 224)"
        )
    return sides


# ----------------------------------------------------------------------------------------------------------
# ARM block and the RGB baseline


class ARM(nn.Module):
    """The ARM block after PixelShuffle: (B, 2, t, t) -> (B, n*n) feature; see the module docstring."""

    def __init__(
        self,
        out_side: int = 11,
        affinity: str = "batch",
        *,
        kernel: int = DE_ALBINO_KERNEL,
        stride: int = DE_ALBINO_STRIDE,
    ):
        super().__init__()
        self.de_albino = nn.Conv2d(1, 1, kernel_size=kernel, stride=stride, padding=0, bias=False)
        self.bn = nn.BatchNorm2d(2)
        self.alpha = nn.Parameter(torch.ones(1))
        # not in state_dict (persistent=False): the authors' checkpoint has no such key; NaN = not estimated
        self.register_buffer(
            "population_mean", torch.full((out_side * out_side,), float("nan")), persistent=False
        )
        self.set_affinity(affinity)

    @property
    def feature_dim(self) -> int:
        return self.population_mean.numel()

    def set_affinity(self, mode: str) -> ARM:
        if mode not in AFFINITY_MODES:
            raise ValueError(f"affinity {mode!r} is not one of {AFFINITY_MODES}")
        self.affinity = mode
        return self

    def per_image(self, x: Tensor) -> Tensor:
        """Per-image map (B, n*n): BatchNorm output averaged over the 2 channels, flattened.

        Batch-independent in eval mode (BatchNorm on running statistics), hence cacheable for a frozen model.
        """
        if x.ndim != 4 or x.shape[1] != 2:
            raise ValueError(f"ARM expects (B, 2, H, W) after PixelShuffle, got {tuple(x.shape)}")
        b, c, h, w = x.shape
        x = self.de_albino(
            x.reshape(b * c, 1, h, w)
        )  # (B*2, 1, n, n): the shared kernel on each channel
        x = self.bn(x.reshape(b, c, *x.shape[-2:]))  # (B, 2, n, n)
        x = x.mean(dim=1).flatten(1)  # (B, n*n)
        assert x.shape[1] == self.feature_dim, (
            f"ARM built for {self.feature_dim} features, input gives {x.shape[1]}"
        )
        return x

    def batch_term(self, per_image: Tensor) -> Tensor:
        """alpha * (mean map over the batch, or the population mean map): (1, n*n), added to every image."""
        if self.affinity == "batch":
            if (
                distributed.global_batch_active()
            ):  # data-parallel training: the mean over every rank's images
                mean = distributed.global_mean(per_image)
            else:
                mean = per_image.mean(
                    dim=0, keepdim=True
                )  # (1, n*n) == bn output .mean(dim=[0, 1]), flattened
        else:
            if torch.isnan(self.population_mean).any():
                raise RuntimeError(
                    "ARM affinity 'fixed' needs a population mean: call estimate_population_mean(...) on the "
                    "training set, or load a checkpoint that carries one"
                )
            mean = self.population_mean.unsqueeze(0)  # (1, n*n)
        return self.alpha * mean

    def forward(self, x: Tensor) -> Tensor:
        per_image = self.per_image(x)  # (B, n*n)
        return per_image + self.batch_term(per_image)  # (B, n*n)

    @torch.no_grad()
    def estimate_population_mean(self, per_image_batches: Iterable[Tensor]) -> Tensor:
        """Set ``population_mean`` to the mean of per-image maps (batches of (B, n*n), see ``per_image``)."""
        total = torch.zeros(
            self.feature_dim, dtype=torch.float64, device=self.population_mean.device
        )
        count = 0
        for batch in per_image_batches:
            if batch.ndim != 2 or batch.shape[1] != self.feature_dim:
                raise ValueError(
                    f"per-image batches must be (B, {self.feature_dim}), got {tuple(batch.shape)}"
                )
            total += batch.to(total).sum(dim=0)
            count += batch.shape[0]
        if count == 0:
            raise ValueError("estimate_population_mean got no samples")
        self.population_mean.copy_(total / count)
        return self.population_mean


def imagenet_weights_path() -> Path:
    """Where torchvision caches ResNet18's ImageNet weights: <torch hub dir>/checkpoints/resnet18-f37072fd.pth."""
    return Path(torch.hub.get_dir()) / "checkpoints" / _imagenet_weights_url().rsplit("/", 1)[-1]


def _imagenet_weights_url() -> str:
    import torchvision  # imported where used: importing it costs seconds on a CPU (it loads torch._dynamo)

    return torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url


def _narrow_resnet18(width: int) -> nn.Module:
    """ResNet18's topology and module names at base width ``width`` (torchvision's layout, its init)."""
    from torchvision.models.resnet import BasicBlock, conv1x1

    def layer(inplanes: int, planes: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or inplanes != planes:
            downsample = nn.Sequential(conv1x1(inplanes, planes, stride), nn.BatchNorm2d(planes))
        return nn.Sequential(
            BasicBlock(inplanes, planes, stride, downsample), BasicBlock(planes, planes)
        )

    net = nn.Sequential(
        nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        layer(width, width, 1),
        layer(width, 2 * width, 2),
        layer(2 * width, 4 * width, 2),
        layer(4 * width, 8 * width, 2),
    )
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    return net


def build_resnet18_trunk(pretrained: bool | str | Path = False, width: int = 64) -> nn.Sequential:
    """torchvision ResNet18 without avgpool and fc: (B, 3, s, s) -> (B, 8*width, s/32, s/32); width 64 is
    the standard network (512 channels), other widths keep its topology and module names.

    Args:
        pretrained: False for random init (training from scratch); True for ImageNet weights from the local
            torch hub cache (``imagenet_weights_path()``); or the path of a torchvision ResNet18 state dict.
            Nothing is downloaded: a missing file raises CheckpointNotFoundError saying where to put it.
    """
    if width != 64:
        if pretrained:
            raise ValueError(
                f"ImageNet weights exist for ResNet18 at width 64 only, not width {width}"
            )
        return _narrow_resnet18(width)
    from torchvision.models import resnet18

    resnet = resnet18(weights=None)
    if pretrained is not False and pretrained is not None:
        path = imagenet_weights_path() if pretrained is True else Path(pretrained)
        hint = f"Download {_imagenet_weights_url()} (torchvision's ResNet18 ImageNet weights) and put it at {path}."
        if not path.is_file():
            raise CheckpointNotFoundError(
                f"ImageNet weights for ResNet18 not found at {path}. {hint}"
            )
        load_state_strict(resnet, _state_dict_of(_read_checkpoint(path, hint), path, hint), path)
    return nn.Sequential(*list(resnet.children())[:-2])


class ARMNet(nn.Module):
    """The RGB baseline, ResNet18 + ARM + fc, with the ARM authors' module names (``features``, ``arm``, ``fc``).

    ``forward(x)`` gives logits (B, 7) for ImageNet-normalised (B, 3, s, s) images; ``forward_head(fmap,
    pre_logits=True)`` gives F_RGB, the (B, n*n) feature before fc.
    """

    def __init__(
        self,
        input_size: int = PAPER_INPUT_SIZE,
        num_classes: int = NUM_CLASSES,
        pretrained: bool | str | Path = False,
        width: int = 64,
    ):
        super().__init__()
        _, _, out_side = arm_geometry(input_size)
        shuffle, kernel, stride = arm_layout(8 * width)
        self.input_size, self.width = input_size, width
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD  # preprocessing the weights expect
        # what each output means: RAF-DB's 7, or RAF-DB's 7 + Contempt; load_arm_checkpoint sets a file's own list
        self.classes = (
            CLASSES_8[:num_classes]
            if num_classes <= len(CLASSES_8)
            else tuple(f"class {k}" for k in range(num_classes))
        )
        self.feature_dim = out_side * out_side
        self.features = build_resnet18_trunk(pretrained, width)
        self.arrangement = nn.PixelShuffle(shuffle)
        self.arm = ARM(out_side, kernel=kernel, stride=stride)
        self.fc = nn.Linear(self.feature_dim, num_classes)

    def set_affinity(self, mode: str) -> ARMNet:
        self.arm.set_affinity(mode)
        return self

    @property
    def cam_layer(self) -> nn.Module:
        """The module to hook for Grad-CAM: ResNet18's layer4 (``features[7]``), before PixelShuffle and ARM."""
        return self.features[7]

    def forward_features(self, x: Tensor) -> Tensor:
        """Trunk map (B, 512, s/32, s/32): ResNet18's layer4 output (``cam_layer``'s output)."""
        if x.ndim != 4 or x.shape[1:] != (3, self.input_size, self.input_size):
            raise ValueError(
                f"expected images (B, 3, {self.input_size}, {self.input_size}), got {tuple(x.shape)}"
            )
        return self.features(x)

    def forward_per_image(self, x: Tensor) -> Tensor:
        """The cacheable, batch-independent part (in eval mode): ARM's per-image map (B, n*n)."""
        return self.arm.per_image(self.arrangement(self.forward_features(x)))

    def head_from_per_image(self, per_image: Tensor, pre_logits: bool = False) -> Tensor:
        """Batch term + fc on per-image maps (B, n*n): F_RGB if ``pre_logits`` else logits (B, 7); in fp32."""
        with fp32_head(per_image):
            per_image = per_image.float()
            feature = per_image + self.arm.batch_term(per_image)  # (B, n*n)
            return feature if pre_logits else self.fc(feature)

    def forward_head(self, fmap: Tensor, pre_logits: bool = False) -> Tensor:
        return self.head_from_per_image(self.arm.per_image(self.arrangement(fmap)), pre_logits)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))  # (B, 7)

    def feature_and_logits(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(F_RGB (B, n*n), logits (B, 7)) in one pass."""
        feature = self.forward_head(self.forward_features(x), pre_logits=True)
        return feature, self.fc(feature)

    @torch.no_grad()
    def estimate_population_mean(self, batches: Iterable[Tensor | tuple | list]) -> Tensor:
        """Estimate ``arm.population_mean`` (for affinity "fixed") in eval mode over image batches.

        ``batches`` yields image tensors or tuples whose first element is the images (e.g. a DataLoader of
        (images, labels)); pass the training set without augmentation.
        """
        was_training = self.training
        device = self.fc.weight.device
        self.eval()
        try:
            per_image = [self.forward_per_image(_first(batch).to(device)) for batch in batches]
        finally:
            self.train(was_training)
        return self.arm.estimate_population_mean(per_image)


def _first(batch: Tensor | tuple | list) -> Tensor:
    return batch[0] if isinstance(batch, (tuple, list)) else batch


# ----------------------------------------------------------------------------------------------------------
# Checkpoints


def _read_checkpoint(path: Path, hint: str) -> object:
    if not path.is_file():
        raise CheckpointNotFoundError(f"{path}: no such file. {hint}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (
        Exception
    ) as err:  # torch raises several types (UnpicklingError, RuntimeError, EOFError...)
        text = str(err).split("WeightsUnpickler error:", 1)[
            -1
        ]  # skip torch's generic weights_only preamble
        reason = next((line.strip() for line in text.splitlines() if line.strip()), "")[:200]
        raise CheckpointError(
            f"{path}: not a PyTorch checkpoint readable with torch.load(weights_only=True) "
            f"({type(err).__name__}{': ' + reason if reason else ''}). {hint}"
        ) from err


def _state_dict_of(obj: object, path: Path, hint: str) -> dict[str, Tensor]:
    """The state dict inside a loaded file: obj['model_state_dict'] or obj itself; strips 'module.'."""
    state = obj.get("model_state_dict") if isinstance(obj, dict) else None
    if (
        state is None
        and isinstance(obj, dict)
        and obj
        and all(isinstance(v, Tensor) for v in obj.values())
    ):
        state = obj
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()
    ):
        found = (
            f"a dict with keys {sorted(map(str, obj))[:10]}"
            if isinstance(obj, dict)
            else type(obj).__name__
        )
        raise CheckpointError(f"{path}: no model weights found (got {found}). {hint}")
    if state and all(k.startswith("module.") for k in state):  # saved from nn.DataParallel
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _listing(title: str, items: list[str], limit: int = 20) -> str:
    more = [f"... and {len(items) - limit} more"] if len(items) > limit else []
    return f"\n  {title} ({len(items)}):\n    " + "\n    ".join(items[:limit] + more)


def load_state_strict(model: nn.Module, state: Mapping[str, Tensor], path: Path) -> None:
    """load_state_dict(strict=True), after a check that names every missing, unexpected and mis-shaped key."""
    expected = model.state_dict()
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    shapes = [
        f"{k}: file {tuple(state[k].shape)}, model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        message = f"{path} does not match {type(model).__name__}:"
        for title, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", shapes),
        ):
            if items:
                message += _listing(title, items)
        fc = state.get("fc.weight")
        side = round(fc.shape[-1] ** 0.5) if fc is not None and fc.ndim == 2 else 0
        if (
            isinstance(model, ARMNet)
            and fc.shape != model.fc.weight.shape
            and side * side == fc.shape[-1]
        ):
            message += f"\n  fc.weight's width is the ARM feature size n*n: n={side} means input_size={16 * (side + 3)}"
        raise CheckpointError(message)
    model.load_state_dict(state, strict=True)


def population_means(model: nn.Module) -> dict[str, Tensor]:
    """Every ARM block's ``population_mean`` in ``model``, keyed by module path (e.g. 'arm.population_mean')."""
    return {
        f"{name}.population_mean" if name else "population_mean": module.population_mean.detach()
        .cpu()
        .clone()
        for name, module in model.named_modules()
        if isinstance(module, ARM)
    }


def load_population_means(model: nn.Module, means: Mapping[str, Tensor]) -> None:
    """Inverse of ``population_means``; keys must name ARM blocks of ``model`` (missing ones stay as they are)."""
    buffers = population_means(model)
    unknown = sorted(means.keys() - buffers.keys())
    if unknown:
        raise CheckpointError(
            f"population means for unknown ARM blocks {unknown}; the model has {sorted(buffers)}"
        )
    for name, module in model.named_modules():
        key = f"{name}.population_mean" if name else "population_mean"
        if isinstance(module, ARM) and key in means:
            module.population_mean.copy_(means[key])


def save_arm_checkpoint(model: ARMNet, path: str | Path, **extra: object) -> Path:
    """Write an ARMNet (atomically) as {'model_state_dict', 'input_size', 'width', 'classes', 'population_means', **extra}.

    The state dict has the ARM authors' keys, so their own loader (and ``load_arm_checkpoint``) reads it;
    ``extra`` must hold types ``torch.load(weights_only=True)`` accepts (numbers, strings, lists, tensors).
    """
    record = {
        "model_state_dict": model.state_dict(),
        "input_size": model.input_size,
        "width": model.width,
        "classes": list(model.classes),  # the data set's class list travels with the weights
        "population_means": population_means(model),
    }
    return save_torch({**record, **extra}, path)


def load_arm_checkpoint(path: str | Path, *, input_size: int | None = None, classes=None) -> ARMNet:
    """Load the ARM authors' RAF-DB checkpoint (or one of ours) strictly into an ARMNet.

    Accepts ``{'model_state_dict': ...}`` (the authors' file; ours, written by ``save_arm_checkpoint``, also
    carries 'input_size' and 'population_means') or a bare state dict; a 'module.' prefix is stripped. Any
    missing, unexpected or mis-shaped key raises CheckpointError listing them; a missing file raises
    CheckpointNotFoundError (also a FileNotFoundError).

    Args:
        input_size: the model's input size; default: the file's 'input_size' entry, else 224 (the paper).
        classes: the class list the caller needs; a file made for another list is refused, naming both. A file
            without a 'classes' entry (the authors', or one from before 8 classes) is RAF-DB's 7.

    Returns:
        The model on CPU, in eval mode, affinity "batch" (exactly the ARM code's computation); a population
        mean stored in the file is loaded, so ``set_affinity("fixed")`` works on it.
    """
    path = Path(path)
    obj = _read_checkpoint(path, ARM_FILE_HINT)
    state = _state_dict_of(obj, path, ARM_FILE_HINT)
    stored_size = (
        obj.get("input_size") if isinstance(obj, dict) and "model_state_dict" in obj else None
    )
    if input_size is not None and stored_size is not None and input_size != stored_size:
        raise CheckpointError(
            f"{path} was saved for input size {stored_size}; input_size={input_size} was asked for"
        )
    if input_size is None:
        input_size = stored_size if stored_size is not None else PAPER_INPUT_SIZE
    width = obj.get("width", 64) if isinstance(obj, dict) and "model_state_dict" in obj else 64
    stored_classes = (
        obj.get("classes") if isinstance(obj, dict) and "model_state_dict" in obj else None
    )
    stored_classes = tuple(stored_classes) if stored_classes else CLASSES
    if classes is not None:
        check_classes(stored_classes, classes, str(path))
    model = ARMNet(input_size, num_classes=len(stored_classes), width=int(width))
    model.classes = stored_classes
    load_state_strict(model, state, path)
    if isinstance(obj, dict) and isinstance(obj.get("population_means"), dict):
        load_population_means(model, obj["population_means"])
    return model.set_affinity("batch").eval()


# ----------------------------------------------------------------------------------------------------------
# Landmark branch and fusion


def _conv_block(
    in_channels: int, out_channels: int, kernel: int, batch_norm: bool
) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_channels))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class LandmarkCNN(nn.Sequential):
    """The paper's Table 1 "landmark CNN": (B, 1, s, s) heatmap -> (B, 512, s/32, s/32), s = 224 by default.

    Five unpadded convs (5x5 then 3x3, stride 1; 32, 64, 128, 256, 512 channels) with 2x2 max pools after
    the first four, then a size-matching conv (4x4 at 224) whose output has the RGB trunk's s/32 side. The
    paper states no activation or normalisation: each conv block here is conv -> [BatchNorm] -> ReLU
    (ReLU after every conv, the last one too, as ResNet's layer4 output is post-ReLU; BatchNorm off by
    default). Blocks are named ``conv1``..``conv5``, ``conv6`` and ``pool1``..``pool4``; ``cam_layer`` is
    ``conv5``, whose output is the post-ReLU (512, 10, 10) map at 224 that the paper explains with Grad-CAM.
    """

    def __init__(
        self, input_size: int = PAPER_INPUT_SIZE, *, batch_norm: bool = False, width: int = 32
    ):
        last_kernel = landmark_last_kernel(input_size) if isinstance(input_size, int) else None
        if last_kernel is None:
            valid = [s for s in SIZE_RANGE if landmark_last_kernel(s)]
            raise ValueError(
                f"input size {input_size!r} does not fit the landmark CNN: its 5th conv map must be at least as "
                f"large as the RGB trunk's size/32 map; valid sizes up to 448: {valid} (the paper uses 224)"
            )
        blocks: list[tuple[str, nn.Module]] = []
        channels = [1, width, 2 * width, 4 * width, 8 * width, 16 * width]  # Table 1 at width 32
        for i in range(5):
            blocks.append(
                (
                    f"conv{i + 1}",
                    _conv_block(channels[i], channels[i + 1], 5 if i == 0 else 3, batch_norm),
                )
            )
            if i < 4:
                blocks.append((f"pool{i + 1}", nn.MaxPool2d(2)))
        blocks.append(("conv6", _conv_block(channels[-1], channels[-1], last_kernel, batch_norm)))
        super().__init__(OrderedDict(blocks))
        self.input_size, self.width, self.out_channels = input_size, width, channels[-1]
        self.last_kernel = last_kernel

    @property
    def cam_layer(self) -> nn.Module:
        """The module to hook for Grad-CAM: ``conv5`` (post-ReLU output, before the size-matching conv)."""
        return self.conv5

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1:] != (1, self.input_size, self.input_size):
            raise ValueError(
                f"expected heatmaps (B, 1, {self.input_size}, {self.input_size}), got {tuple(x.shape)}"
            )
        return super().forward(x)  # (B, 512, s/32, s/32)


class CoordinateMLP(nn.Sequential):
    """The cheaper landmark branch ("coords"): (B, 2K) aligned coordinates, scaled to [-1, 1] -> (B, dim) F_landmark.

    Two hidden layers (Linear -> [BatchNorm] -> ReLU) and a linear output of the RGB feature's size, so that it
    is fused exactly like the heatmap branch's ARM feature. It answers whether the heatmap CNN adds anything
    over the plain coordinates it is drawn from."""

    def __init__(
        self, num_points: int, dim: int, *, hidden: int = COORDS_HIDDEN, batch_norm: bool = True
    ):
        layers: list[tuple[str, nn.Module]] = []
        sizes = [2 * num_points, hidden, hidden]
        for i in range(2):
            layers.append((f"fc{i + 1}", nn.Linear(sizes[i], sizes[i + 1], bias=not batch_norm)))
            if batch_norm:
                layers.append((f"bn{i + 1}", nn.BatchNorm1d(sizes[i + 1])))
            layers.append((f"relu{i + 1}", nn.ReLU(inplace=True)))
        layers.append(("out", nn.Linear(hidden, dim)))
        super().__init__(OrderedDict(layers))
        self.num_points = num_points

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 2 or x.shape[1] != 2 * self.num_points:
            raise ValueError(
                f"expected coordinates (B, {2 * self.num_points}), got {tuple(x.shape)}"
            )
        return super().forward(x)


class WeightGate(nn.Module):
    """The ``learned`` weighting: a logistic gate on [p_rgb, p_landmark, agreement] -> a factor in (0, 2) for
    F_landmark. Zero-initialised (factor 1); fitted on the validation split after the branch is trained
    (``training.fit_gate``), so it learns how far to trust the landmark head where its confidence is honest.
    The upper bound 2 lets it amplify the landmark feature, which the paper's factors (at most 1) cannot."""

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
    """The temperature T minimising the cross-entropy of softmax(logits / T) (Guo et al. 2017), by a bounded search
    on log T in [1/20, 20]: deterministic, and one parameter cannot overfit a validation split."""
    from scipy.optimize import minimize_scalar

    logits, labels = logits.double(), labels.long()

    def nll(log_t: float) -> float:
        return float(functional.cross_entropy(logits / np.exp(log_t), labels))

    return float(
        np.exp(
            minimize_scalar(
                nll, bounds=(-np.log(20), np.log(20)), method="bounded", options={"xatol": 1e-4}
            ).x
        )
    )


class FusionOutput(NamedTuple):
    fused_logits: Tensor  # (B, 7): fusion(cat(F_RGB, weight * F_landmark))
    landmark_logits: Tensor  # (B, 7): the landmark-only head
    rgb_logits: Tensor  # (B, 7): the frozen baseline
    weight: Tensor  # (B,): the factor applied to F_landmark
    rgb_feature: Tensor  # (B, n*n): F_RGB
    landmark_feature: Tensor  # (B, n*n): F_landmark before weighting


class FusionModel(nn.Module):
    """Frozen RGB baseline + landmark CNN with its own ARM, fused by a weighted concatenation (section 4.2).

    Args:
        baseline: the pretrained ARMNet; it is frozen (requires_grad False) and stays in eval mode.
        weighting: what scales F_landmark: "both" (p * a, the paper), "confidence" (p), "agreement" (a),
            "none" (1). p = max softmax of the landmark head (eq. 1); a = 1 when the landmark head's argmax
            equals the baseline's, else ``w_disagree``. Beyond the paper: "calibrated" (p * a with p taken from
            the landmark head's softmax at temperature ``temperature``, a buffer fitted on the validation split
            during training) and "learned" (``WeightGate``, fitted afterwards by ``training.fit_gate``).
        w_disagree: the agreement weight on disagreement (0.6 in the paper, Fig. 4).
        weight_grad: let gradients flow through p (the paper is silent; default: the weight is a constant).
        batch_norm: BatchNorm in the landmark CNN (not in the paper).
        width: the landmark CNN's base width (32 is Table 1; see "Widths" above).
        init_from_baseline: start the fusion layer as the baseline's fc on F_RGB and zero on F_landmark, so
            the fused model starts exactly as the baseline and training moves it from there (the paper does
            not say how the layer is initialised); False: PyTorch's default random init.
        landmark_input: "heatmaps" (Table 1's CNN and its own ARM) or "coords" (``CoordinateMLP`` on the
            ``num_points`` aligned coordinates; no ARM, so no batch term on that side).
    """

    def __init__(
        self,
        baseline: ARMNet,
        *,
        weighting: str = "both",
        w_disagree: float = 0.6,
        weight_grad: bool = False,
        batch_norm: bool = False,
        width: int = 32,
        init_from_baseline: bool = True,
        landmark_input: str = "heatmaps",
        num_points: int = 37,
    ):
        super().__init__()
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting {weighting!r} is not one of {WEIGHTINGS}")
        if landmark_input not in LANDMARK_INPUTS:
            raise ValueError(f"landmark input {landmark_input!r} is not one of {LANDMARK_INPUTS}")
        self.weighting, self.w_disagree, self.weight_grad = (
            weighting,
            float(w_disagree),
            weight_grad,
        )
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
                self.fusion.weight[:, :dim] = (
                    baseline.fc.weight
                )  # (7, dim): F_RGB part = the baseline's fc
                self.fusion.bias.copy_(baseline.fc.bias)

    def train(self, mode: bool = True) -> FusionModel:
        super().train(mode)
        self.baseline.eval()  # frozen: its BatchNorm statistics stay as released
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Everything but the baseline: the landmark branch, the landmark head and the fusion layer (and a gate)."""
        return [p for name, p in self.named_parameters() if not name.startswith("baseline.")]

    @property
    def landmark_branch(self) -> list[nn.Module]:
        """The modules that turn the landmark input into per-image features (what data-parallel training syncs)."""
        return [self.landmark_cnn, self.arm] if self.arm is not None else [self.landmark_mlp]

    def set_affinity(self, mode: str) -> FusionModel:
        """Affinity mode of both ARM blocks (the baseline's and the landmark branch's)."""
        self.baseline.set_affinity(mode)
        if self.arm is not None:
            self.arm.set_affinity(mode)
        return self

    def landmark_per_image(self, landmarks: Tensor) -> Tensor:
        """(B, n*n) per-image landmark features from heatmaps (B, 1, s, s) or coordinates (B, 2K)."""
        if self.arm is None:
            return self.landmark_mlp(landmarks)
        return self.arm.per_image(self.arrangement(self.landmark_cnn(landmarks)))

    def landmark_probabilities(self, landmark_logits: Tensor) -> Tensor:
        """The landmark head's probabilities as the weighting reads them (temperature-scaled when "calibrated")."""
        if self.weighting == "calibrated":
            landmark_logits = landmark_logits / self.temperature
        return landmark_logits.softmax(dim=1)

    def feature_weight(self, landmark_logits: Tensor, rgb_logits: Tensor) -> Tensor:
        """(B,) factor for F_landmark: p_landmark * w (eq. 2), or one factor alone, or 1 (see ``weighting``)."""
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
        """Forward from the baseline's cached per-image maps (``baseline.forward_per_image``, eval mode) and the
        landmark input (heatmaps or coordinates, ``training.landmark_inputs``)."""
        if rgb_per_image.shape[0] != landmarks.shape[0]:
            raise ValueError(
                f"batch sizes differ: {rgb_per_image.shape[0]} RGB, {landmarks.shape[0]} landmark inputs"
            )
        return self.forward_per_image_maps(rgb_per_image, self.landmark_per_image(landmarks))

    def batch_terms(
        self, rgb_per_image: Tensor, landmark_per_image: Tensor
    ) -> tuple[Tensor, Tensor]:
        """ARM's batch terms of both branches for this batch (or the population means in affinity "fixed"); the
        coordinate branch has no ARM, so its term is 0."""
        landmark_term = (
            self.arm.batch_term(landmark_per_image)
            if self.arm is not None
            else torch.zeros_like(landmark_per_image[:1])
        )
        return self.baseline.arm.batch_term(rgb_per_image), landmark_term

    def forward_per_image_maps(
        self,
        rgb_per_image: Tensor,
        landmark_per_image: Tensor,
        batch_terms: tuple[Tensor, Tensor] | None = None,
    ) -> FusionOutput:
        """The rest of the network from both branches' per-image ARM maps (B, n*n).

        ``batch_terms`` (each (1 or B, n*n)) replaces the terms computed from this batch: Grad-CAM holds them at
        the values of the evaluation batch so that each image's explanation depends on that image alone.
        """
        with fp32_head(
            rgb_per_image
        ):  # the heads and eq. 2 in fp32, from bf16 features under autocast
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
            fused = torch.cat(
                [rgb_feature, weight[:, None] * landmark_feature], dim=1
            )  # (B, 2*n*n)
            return FusionOutput(
                self.fusion(fused),
                landmark_logits,
                rgb_logits,
                weight,
                rgb_feature,
                landmark_feature,
            )

    def frozen_per_image(self, images: Tensor) -> Tensor:
        """The frozen baseline's per-image maps (B, n*n) in full fp32 on any device and inside any autocast
        region (``precision.full``), as its feature cache holds them."""
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
        """Estimate both ARM blocks' population means (affinity "fixed") in eval mode.

        ``batches`` yields tuples whose first two elements are the RGB input and the landmark input; the RGB input
        is either images (B, 3, s, s) or cached per-image maps (B, n*n) from ``baseline.forward_per_image``.
        """
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
