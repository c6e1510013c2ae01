"""The frozen RGB baseline: ResNet18 + ARM (Shi & Zhu 2021), named as the authors' released model so
that their RAF-DB checkpoint ``epoch59_acc0.9205.pth`` loads strictly (``load_arm_checkpoint``).

ARM block and its batch term: PixelShuffle(16) turns the trunk's (512, m, m) map into (2, 16m, 16m).
One single-channel "de-albino" conv (kernel 32, stride 8, no padding, no bias) is shared by both
channels -> (2, n, n); BatchNorm2d(2); then the per-image mean over the 2 channels, an (n, n) map.
The ARM code adds ``alpha * x.mean(dim=[0, 1])`` of the BatchNorm output: a mean over the minibatch
and both channels that keeps the spatial positions, i.e. an (n, n) map shared by the whole batch. It
equals the batch mean of the per-image maps, which is how it is computed here, so a cache of
per-image maps (``ARM.per_image``) plus ``ARM.batch_term`` gives the same features as the uncached
forward. Affinity modes (``ARM.affinity``):

- ``"batch"``: faithful to the ARM code; the mean is over the current batch, in eval mode too, so an
  image's prediction depends on its batch companions (see shared/reference/ARM_NOTES.md).
- ``"fixed"``: batch-independent; the mean is the buffer ``population_mean``, the mean per-image map
  over a data set (the training set, without augmentation, in eval mode), set by
  ``estimate_population_mean``. The buffer is registered with ``persistent=False``, so
  ``state_dict()`` has exactly the authors' keys and their file loads strictly. Our checkpoints
  carry it beside the weights: ``save_arm_checkpoint`` writes ``population_means(model)``;
  ``load_arm_checkpoint`` and ``load_population_means`` read it back. It is NaN until estimated, and
  the fixed mode refuses to run on NaN.

Widths (for the CPU demo): the paper's networks have ResNet18's widths (64..512 channels,
``width=64``) and Table 1's (32..512, ``width=32``). A narrower network (``width=16`` for ResNet18:
16..128 channels) trains ~16x faster on a CPU. ARM then needs C/2 = r^2 for its PixelShuffle(r) to
give 2 channels, and the de-albino kernel scales with r (kernel 2r, stride r/2: 32 and 8 at the
paper's r = 16), so the feature side n = 2m - 3 is the same as the paper's for every width. Widths
where r is an even integer work: ResNet18 1, 4, 9, 16, 25, 36, 49, 64 (the squares); landmark CNN 2,
8, 18, 32. Only width 64 matches the released checkpoint.

Input sizes: 224 is the paper's. Everything is derived from the input size s: trunk map m = s/32,
shuffled side s/2, ARM output side n = (s/2 - 32)/8 + 1 = s/16 - 3, feature size n*n (121 at 224).
The RGB model takes multiples of 32 from 64 (n = 1) upwards; the landmark CNN needs at least 128
(its size-matching conv's kernel, conv5 side - m + 1, must be >= 1). ``arm_geometry`` and
``LandmarkCNN`` raise a ValueError listing the valid sizes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from fer_lib.data.rafdb import CLASSES, CLASSES_8, NUM_CLASSES
from fer_lib.data.tensors import IMAGENET_MEAN, IMAGENET_STD
from fer_lib.io import save_torch
from fer_lib.models.checkpoints import (
    ARM_FILE_HINT,
    CheckpointError,
    CheckpointNotFoundError,
    _read_checkpoint,
    _state_dict_of,
    check_classes,
    load_state_strict,
)
from fer_lib.models.folders import (
    WEIGHTS_FILE,
    has_means,
    read_model_folder,
    split_means,
    write_model_folder,
)
from fer_lib.runtime import distributed, precision
from fer_lib.settings import (
    AFFINITY_MODES,
    DE_ALBINO_KERNEL,
    DE_ALBINO_STRIDE,
    PAPER_INPUT_SIZE,
    SHUFFLE,
    SIZE_RANGE,
    arm_layout,
    arm_sides,
)


def arm_geometry(input_size: int) -> tuple[int, int, int]:
    """(trunk map side m, pixel-shuffled side, ARM output side n); 224 -> (7, 112, 11)."""
    sides = arm_sides(input_size) if isinstance(input_size, int) and input_size > 0 else None
    if sides is None:
        valid = [s for s in SIZE_RANGE if arm_sides(s)]
        raise ValueError(
            f"input size {input_size!r} does not fit ResNet18 + ARM: the trunk map is size/32 and "
            f"the PixelShuffle({SHUFFLE}) map ({SHUFFLE} * size/32 per side) must hold the "
            f"{DE_ALBINO_KERNEL}x{DE_ALBINO_KERNEL} de-albino kernel at stride "
            f"{DE_ALBINO_STRIDE}; valid sizes up to 448: {valid} (the paper uses 224)"
        )
    return sides


class ARM(nn.Module):
    """The ARM block after PixelShuffle: (B, 2, t, t) -> (B, n*n); see the module docstring."""

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
        # not in state_dict (persistent=False): the authors' checkpoint has no
        # such key; NaN = not estimated
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
        Batch-independent in eval mode (BatchNorm on running statistics), hence cacheable for a
        frozen model."""
        if x.ndim != 4 or x.shape[1] != 2:
            raise ValueError(f"ARM expects (B, 2, H, W) after PixelShuffle, got {tuple(x.shape)}")
        b, c, h, w = x.shape
        # (B*2, 1, n, n): the shared kernel on each channel
        x = self.de_albino(x.reshape(b * c, 1, h, w))
        x = self.bn(x.reshape(b, c, *x.shape[-2:]))  # (B, 2, n, n)
        x = x.mean(dim=1).flatten(1)  # (B, n*n)
        assert x.shape[1] == self.feature_dim, (
            f"ARM built for {self.feature_dim} features, input gives {x.shape[1]}"
        )
        return x

    def batch_term(self, per_image: Tensor) -> Tensor:
        """alpha * (the batch's or the population's mean map): (1, n*n), added to every image."""
        if self.affinity == "batch":
            # data-parallel training: the mean over every rank's images
            if distributed.global_batch_active():
                mean = distributed.global_mean(per_image)
            else:
                # (1, n*n) == bn output .mean(dim=[0, 1]), flattened
                mean = per_image.mean(dim=0, keepdim=True)
        else:
            # an exported graph cannot branch on a value; export_onnx checks the mean first
            if not torch.compiler.is_exporting() and torch.isnan(self.population_mean).any():
                raise RuntimeError(
                    "ARM affinity 'fixed' needs a population mean: call "
                    "estimate_population_mean(...) on the training set, or load a checkpoint "
                    "that carries one"
                )
            mean = self.population_mean.unsqueeze(0)  # (1, n*n)
        return self.alpha * mean

    def forward(self, x: Tensor) -> Tensor:
        per_image = self.per_image(x)  # (B, n*n)
        return per_image + self.batch_term(per_image)  # (B, n*n)

    @torch.no_grad()
    def estimate_population_mean(self, per_image_batches: Iterable[Tensor]) -> Tensor:
        """Set ``population_mean``: the mean of per-image maps, batches (B, n*n) (``per_image``)."""
        total = torch.zeros_like(self.population_mean, dtype=torch.float64)
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
    """Where torchvision caches ResNet18's ImageNet weights (<torch hub dir>/checkpoints/)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / _imagenet_weights_url().rsplit("/", 1)[-1]


def _imagenet_weights_url() -> str:
    # torchvision, here and below: 8 s (2 busy cores; it loads torch._dynamo) at every notebook's
    # start, through run.experiment
    import torchvision

    return torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url


def _narrow_resnet18(width: int) -> nn.Module:
    """ResNet18's topology and module names at base width ``width`` (torchvision's layout, init)."""
    # torchvision: see _imagenet_weights_url
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
    """torchvision ResNet18 without avgpool and fc: (B, 3, s, s) -> (B, 8*width, s/32, s/32); width
    64 is the standard network (512 channels), other widths keep its topology and module names.

    ``pretrained``: False for random init (training from scratch); True for ImageNet weights from
    the local torch hub cache (``imagenet_weights_path()``); or the path of a torchvision ResNet18
    state dict. Nothing is downloaded: a missing file raises CheckpointNotFoundError saying where to
    put it.
    """
    if width != 64:
        if pretrained:
            raise ValueError(
                f"ImageNet weights exist for ResNet18 at width 64 only, not width {width}"
            )
        return _narrow_resnet18(width)
    # torchvision: see _imagenet_weights_url
    from torchvision.models import resnet18

    resnet = resnet18(weights=None)
    if pretrained is not False and pretrained is not None:
        path = imagenet_weights_path() if pretrained is True else Path(pretrained)
        hint = (
            f"Download {_imagenet_weights_url()} (torchvision's ResNet18 ImageNet weights) and "
            f"put it at {path}."
        )
        if not path.is_file():
            raise CheckpointNotFoundError(
                f"ImageNet weights for ResNet18 not found at {path}. {hint}"
            )
        load_state_strict(resnet, _state_dict_of(_read_checkpoint(path, hint), path, hint), path)
    return nn.Sequential(*list(resnet.children())[:-2])


class ARMNet(nn.Module):
    """The RGB baseline, ResNet18 + ARM + fc, with the ARM authors' module names (``features``,
    ``arm``, ``fc``). ``forward(x)`` gives logits (B, 7) for ImageNet-normalised (B, 3, s, s)
    images; ``forward_head(fmap, pre_logits=True)`` gives F_RGB, the (B, n*n) feature before fc."""

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
        # what each output means: RAF-DB's 7, or RAF-DB's 7 + Contempt; load_arm_checkpoint sets a
        # file's own list
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
        """The module to hook for Grad-CAM: layer4 (``features[7]``), before PixelShuffle, ARM."""
        return self.features[7]

    def forward_features(self, x: Tensor) -> Tensor:
        """Trunk map (B, 512, s/32, s/32): ResNet18's layer4 output (``cam_layer``'s output)."""
        if x.ndim != 4 or x.shape[1:] != (3, self.input_size, self.input_size):
            raise ValueError(
                f"expected images (B, 3, {self.input_size}, {self.input_size}), got "
                f"{tuple(x.shape)}"
            )
        return self.features(x)

    def forward_per_image(self, x: Tensor) -> Tensor:
        """The cacheable, batch-independent part (in eval mode): ARM's per-image map (B, n*n)."""
        return self.arm.per_image(self.arrangement(self.forward_features(x)))

    def head_from_per_image(self, per_image: Tensor, pre_logits: bool = False) -> Tensor:
        """Batch term + fc on per-image maps (B, n*n), fp32: F_RGB if ``pre_logits`` else logits."""
        with precision.fp32_head(per_image):
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

    def pretrained_config(self) -> dict:
        """What a model folder's config.json says of this network."""
        return {"classes": list(self.classes), "input_size": self.input_size, "width": self.width}

    def save_pretrained(self, folder: str | Path, **about: object) -> Path:
        """This network as a model folder (``fer_lib.models.folders``: config.json and
        model.safetensors, its population mean included); ``about``: what else config.json records
        (provenance, preprocessing)."""
        config = {"architecture": "ARMNet", **self.pretrained_config(), **about}
        return save_folder_state(self, folder, config)

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> ARMNet:
        """A network from a model folder (a local folder, or a Hugging Face Hub repository), on
        the CPU in eval mode, batch-independent (affinity "fixed") where it carries a population
        mean."""
        config, state = read_model_folder(folder, "ARMNet")
        return load_folder_state(armnet_from_config(config, folder), state, folder)

    @torch.no_grad()
    def estimate_population_mean(self, batches: Iterable[Tensor | tuple | list]) -> Tensor:
        """Estimate ``arm.population_mean`` (for affinity "fixed") in eval mode over image batches.
        ``batches`` yields image tensors or tuples whose first element is the images (e.g. a
        DataLoader of (images, labels)); pass the training set without augmentation."""
        was_training = self.training
        device = self.fc.weight.device
        self.eval()
        try:
            per_image = [self.forward_per_image(_first(batch).to(device)) for batch in batches]
        finally:
            self.train(was_training)
        return self.arm.estimate_population_mean(per_image)


def armnet_from_config(config: dict, folder: str | Path) -> ARMNet:
    """An untrained ARMNet of a model folder's shape (``ARMNet.pretrained_config``)."""
    try:
        classes, size, width = config["classes"], int(config["input_size"]), int(config["width"])
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(
            f"{Path(folder) / 'config.json'}: no valid {error} for the RGB network; export the "
            "model again"
        ) from None
    model = ARMNet(size, num_classes=len(classes), width=width)
    model.classes = tuple(classes)
    return model


def save_folder_state(model: nn.Module, folder: str | Path, config: dict) -> Path:
    """A model folder of ``model``: ``config`` and its weights with every population mean."""
    return write_model_folder(folder, config, {**model.state_dict(), **population_means(model)})


def load_folder_state(model: nn.Module, state: dict[str, Tensor], folder: str | Path) -> nn.Module:
    """``model`` with a model folder's tensors loaded, on the CPU in eval mode, batch-independent
    (affinity "fixed") where they carry every population mean."""
    weights, means = split_means(state)
    load_state_strict(model, weights, Path(folder) / WEIGHTS_FILE)
    load_population_means(model, means)
    return model.set_affinity("fixed" if has_means(means) else "batch").eval()


def _first(batch: Tensor | tuple | list) -> Tensor:
    return batch[0] if isinstance(batch, (tuple, list)) else batch


def _arm_blocks(model: nn.Module) -> dict[str, ARM]:
    """Every ARM block of ``model`` keyed by its mean's path (e.g. 'arm.population_mean')."""
    return {
        f"{name}.population_mean" if name else "population_mean": module
        for name, module in model.named_modules()
        if isinstance(module, ARM)
    }


def population_means(model: nn.Module) -> dict[str, Tensor]:
    """Every ARM block's ``population_mean`` in ``model``, keyed like 'arm.population_mean'."""
    return {
        key: arm.population_mean.detach().cpu().clone() for key, arm in _arm_blocks(model).items()
    }


def load_population_means(model: nn.Module, means: Mapping[str, Tensor]) -> None:
    """Inverse of ``population_means``; keys must name ARM blocks (missing ones stay as they are)"""
    blocks = _arm_blocks(model)
    unknown = sorted(means.keys() - blocks.keys())
    if unknown:
        raise CheckpointError(
            f"population means for unknown ARM blocks {unknown}; the model has {sorted(blocks)}"
        )
    for key, arm in blocks.items():
        if key in means:
            arm.population_mean.copy_(means[key])


def save_arm_checkpoint(model: ARMNet, path: str | Path, **extra: object) -> Path:
    """Write an ARMNet (atomically) as {'model_state_dict', 'input_size', 'width', 'classes',
    'population_means', **extra}.

    The state dict has the ARM authors' keys, so their own loader (and ``load_arm_checkpoint``)
    reads it; ``extra`` must hold types ``torch.load(weights_only=True)`` accepts (numbers, strings,
    lists, tensors).
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

    Accepts ``{'model_state_dict': ...}`` (the authors' file; ours, written by
    ``save_arm_checkpoint``, also carries 'input_size' and 'population_means') or a bare state dict;
    a 'module.' prefix is stripped. Any missing, unexpected or mis-shaped key raises CheckpointError
    listing them; a missing file raises CheckpointNotFoundError (also a FileNotFoundError).

    ``input_size``: the model's input size; default: the file's 'input_size' entry, else 224 (the
    paper). ``classes``: the class list the caller needs; a file made for another list is refused,
    naming both. A file without a 'classes' entry (the authors', or one from before 8 classes) is
    RAF-DB's 7.

    Returns the model on CPU, in eval mode, affinity "batch" (exactly the ARM code's computation); a
    population mean stored in the file is loaded, so ``set_affinity("fixed")`` works on it.
    """
    path = Path(path)
    obj = _read_checkpoint(path, ARM_FILE_HINT)
    state = _state_dict_of(obj, path, ARM_FILE_HINT)
    record = obj if isinstance(obj, dict) and "model_state_dict" in obj else {}
    stored_size = record.get("input_size")
    if input_size is not None and stored_size is not None and input_size != stored_size:
        raise CheckpointError(
            f"{path} was saved for input size {stored_size}; input_size={input_size} was asked for"
        )
    if input_size is None:
        input_size = stored_size if stored_size is not None else PAPER_INPUT_SIZE
    stored_classes = tuple(record["classes"]) if record.get("classes") else CLASSES
    if classes is not None:
        check_classes(stored_classes, classes, str(path))
    model = ARMNet(input_size, num_classes=len(stored_classes), width=int(record.get("width", 64)))
    model.classes = stored_classes
    load_state_strict(model, state, path)
    if isinstance(obj, dict) and isinstance(obj.get("population_means"), dict):
        load_population_means(model, obj["population_means"])
    return model.set_affinity("batch").eval()
