"""Tensors for training and evaluation: aligned images at the network's input size, aligned
landmarks, labels, and the batched augmentations of the ARM recipe.

Images are decoded once, resized to the input size and kept as one uint8 tensor per split (cached on
disk as ``.npy`` next to the run, so the notebooks after the first do not decode JPEGs again).
Landmarks are mapped to the input canvas with the paper's 5-point affine alignment; heatmaps are
drawn from them per batch, so no heatmap image is ever stored.
"""

from __future__ import annotations

import functools
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from fer_lib.data import landmarks
from fer_lib.data.heatmaps import render_heatmaps
from fer_lib.data.rafdb import CLASSES, RafDb
from fer_lib.io import relative, save_npy
from fer_lib.settings import AUGMENTATIONS

# the statistics the ImageNet weights were trained with: every RGB input is normalised with them
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class SplitTensors:
    """One split, ready for a network: everything indexed by sample."""

    names: list[str]
    images: torch.Tensor  # (N, 3, S, S) uint8, aligned images resized to the input size
    points: torch.Tensor  # (N, K, 2) float32, landmarks on the S x S input canvas
    labels: torch.Tensor  # (N,) int64, 0-based
    landmark_set: str
    classes: tuple[str, ...] = CLASSES  # what labels index (the data set's class list)
    # (N, K) float32 soft labels to train on (FERPlus's probability mode), or None
    soft: torch.Tensor | None = None

    def targets(self, index: torch.Tensor) -> torch.Tensor:
        """What the loss compares with for the samples ``index``: their soft labels where the data
        set has them (cross-entropy with probability targets), else their class indices."""
        return self.labels[index] if self.soft is None else self.soft[index]

    def __len__(self) -> int:
        return len(self.names)

    @property
    def input_size(self) -> int:
        return int(self.images.shape[-1])

    def subset(self, index, *, images: bool = True) -> "SplitTensors":
        """The samples ``index``; ``images=False`` leaves their pixels out (none, of the same size):
        what reads the frozen-feature cache needs only points and labels, and a copy of the
        training images is 1.7 GB at 224 px."""
        index = torch.as_tensor(np.asarray(index), dtype=torch.long)
        return SplitTensors(
            [self.names[i] for i in index.tolist()],
            self.images[index] if images else self.images[:0],
            self.points[index],
            self.labels[index],
            self.landmark_set,
            self.classes,
            None if self.soft is None else self.soft[index],
        )


def _load_image(path: Path, size: int) -> np.ndarray:
    with Image.open(path) as image:
        image = image.convert("RGB")
        if image.size != (size, size):
            image = image.resize((size, size), Image.BILINEAR)
        return np.asarray(image, dtype=np.uint8)


def load_images(paths: list[Path], size: int, *, progress: bool = True) -> np.ndarray:
    """(N, S, S, 3) uint8 images, decoded with a few threads (PIL releases
    the GIL while decoding)."""
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 2) * 2)) as pool:
        for i, image in enumerate(
            tqdm(
                pool.map(lambda p: _load_image(p, size), paths, chunksize=32),
                total=len(paths),
                desc=f"images @{size}",
                disable=not progress,
                leave=False,
            )
        ):
            out[i] = image
    return out


def _cache_key(data: RafDb, size: int) -> str:
    digest = hashlib.sha256(f"{data.root.resolve()}|{size}|".encode())
    digest.update("\n".join(data.names).encode())
    return digest.hexdigest()[:16]


def split_tensors(
    data: RafDb,
    size: int,
    *,
    landmark_set: str = "auto37",
    cache_dir: Path | None = None,
    progress: bool = True,
) -> SplitTensors:
    """Images at ``size``, landmarks aligned to the ``size`` canvas, labels, for the samples of
    ``data``.

    With ``cache_dir``, decoded images are saved there and reused when the same files at the same
    size are asked for again (the key covers the data root, the size and the list of names).
    """
    landmarks.check_landmark_set(landmark_set)
    images = None
    if cache_dir is not None:
        cache_file = Path(cache_dir) / f"images_{size}_{_cache_key(data, size)}.npy"
        if cache_file.exists():
            images = np.load(cache_file)
            if progress:
                print(f"reusing decoded images from {relative(cache_file)}")
    if images is None:
        images = load_images(
            [data.aligned_path(i) for i in range(len(data))], size, progress=progress
        )
        if cache_dir is not None:
            save_npy(images, cache_file)
    points = landmarks.align_points(data.landmarks(landmark_set), data.manual5, size)
    return SplitTensors(
        names=list(data.names),
        images=torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
        points=torch.from_numpy(points.astype(np.float32)),
        labels=torch.from_numpy(data.labels.copy()),
        landmark_set=landmark_set,
        classes=tuple(data.classes),
        soft=None if data.soft is None else torch.from_numpy(data.soft.astype(np.float32)),
    )


def normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, S, S) -> float ImageNet-normalised, as the ARM code feeds its network."""
    mean, std = imagenet_statistics(images.device)
    return (images.float() / 255 - mean) / std


@functools.lru_cache(maxsize=16)
def imagenet_statistics(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """ImageNet's mean and std as (1, 3, 1, 1) tensors on ``device``, made once per device: a
    tensor made from a list is a blocking host-to-device copy on a GPU, once per step otherwise."""
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    return mean, torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)


def flip_points_where(
    points: torch.Tensor, size: int, flip: torch.Tensor | None, landmark_set: str = "auto37"
) -> torch.Tensor:
    """Canvas landmarks (B, K, 2) with the samples whose ``flip`` is True mirrored (x and left/right
    partners), as ``landmarks.flip_points`` does, on the points' device and without reading ``flip``
    on the host."""
    if flip is None:
        return points
    flipped = points[
        :, torch.as_tensor(landmarks.flip_permutation(landmark_set), device=points.device)
    ].clone()
    flipped[..., 0] = (size - 1) - flipped[..., 0]
    return torch.where(flip.view(-1, 1, 1).to(points.device), flipped, points)


def heatmaps_for(
    points: torch.Tensor,
    size: int,
    flip: torch.Tensor | None = None,
    landmark_set: str = "auto37",
    **kwargs,
) -> torch.Tensor:
    """Heatmaps (B, 1, S, S) for canvas landmarks; samples with ``flip`` True
    are mirrored consistently."""
    return render_heatmaps(flip_points_where(points, size, flip, landmark_set), size, **kwargs)


def coordinates_for(
    points: torch.Tensor, size: int, flip: torch.Tensor | None = None, landmark_set: str = "auto37"
) -> torch.Tensor:
    """The coordinate branch's input (B, 2K): canvas landmarks scaled to [-1,
    1], mirrored where ``flip``."""
    points = flip_points_where(points, size, flip, landmark_set)
    return (points.float() * (2.0 / size) - 1.0).reshape(len(points), -1)


def flip_images(images: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Mirror the images whose ``flip`` entry is True."""
    return torch.where(flip.view(-1, 1, 1, 1).to(images.device), images.flip(-1), images)


def device_generator(generator: torch.Generator, device) -> torch.Generator | None:
    """A generator on ``device`` seeded from the CPU ``generator`` (reproducible), for
    ``augment_arm``'s noise on a GPU: made once per epoch, not per step. None on the CPU, where the
    noise comes from ``generator`` itself."""
    if torch.device(device).type == "cpu":
        return None
    return torch.Generator(device=device).manual_seed(
        int(torch.randint(2**62, (1,), generator=generator))
    )


def augment_arm(
    images: torch.Tensor,
    generator: torch.Generator,
    mix: str = "upstream",
    noise_generator: torch.Generator | None = None,
    *,
    part: slice | None = None,
    batch_size: int | None = None,
) -> torch.Tensor:
    """The ARM recipe on a normalised batch, then RandomErasing(scale=(0.02, 0.1)) (torchvision's
    default p = 0.5, ratio (0.3, 3.3), value 0).

    ``mix`` "upstream" is the ARM authors' code: half the images untouched, a quarter flipped, a
    quarter with gaussian noise. "flip_or_noise" flips half and noises the other half (every image
    altered), which the CPU demo was calibrated with. ``noise_generator`` (``device_generator``)
    draws the noise of images on a GPU; without it one is made for this call.

    ``images`` may be rows ``part`` of a batch of ``batch_size`` (a rank's share under
    data-parallel training): the random numbers are drawn for the whole batch, so the share comes
    out as those rows of the whole batch augmented, whatever the split, and only the share is
    altered. Drawing the whole batch's noise costs each rank one random tensor of the batch: the
    CPU's generator (Mersenne Twister) cannot skip ahead, and CUDA's draws are not addressable by
    image.
    """
    if mix not in AUGMENTATIONS:
        raise ValueError(f"augmentation mix {mix!r} is not one of {AUGMENTATIONS}")
    part = slice(None) if part is None else part
    _, channels, height, width = images.shape
    batch = len(images) if batch_size is None else batch_size
    draw = torch.rand(batch, generator=generator)
    if mix == "upstream":
        flip, noisy = (draw >= 0.5) & (draw < 0.75), draw >= 0.75
    else:
        flip = draw < 0.5
        noisy = ~flip
    device = images.device
    out = flip_images(images, flip[part])
    shape = (batch, channels, height, width)
    if device.type == "cpu":
        noise = torch.randn(shape, generator=generator)[part]
    # drawn on the device (no batch-sized copy per step), from a seed the CPU
    # generator gives: reproducible
    else:
        noise = torch.randn(
            shape, generator=noise_generator or device_generator(generator, device), device=device
        )[part]
    # std 0.1 in normalised units
    out = torch.where(noisy[part].view(-1, 1, 1, 1).to(device), out + noise * 0.1, out)

    erase = torch.rand(batch, generator=generator) < 0.5
    area = torch.empty(batch).uniform_(0.02, 0.1, generator=generator) * height * width
    log_ratio = torch.empty(batch).uniform_(np.log(0.3), np.log(3.3), generator=generator)
    h = (area * log_ratio.exp()).sqrt().round().clamp(1, height).long()
    w = (area / log_ratio.exp()).sqrt().round().clamp(1, width).long()
    top = (torch.rand(batch, generator=generator) * (height - h + 1).float()).long()
    left = (torch.rand(batch, generator=generator) * (width - w + 1).float()).long()
    # the mask is built where the images are, for the share only
    top, h, left, w, erase = (t[part].to(device) for t in (top, h, left, w, erase))
    rows = torch.arange(height, device=device).view(1, -1)
    cols = torch.arange(width, device=device).view(1, -1)
    in_rows = (rows >= top.view(-1, 1)) & (rows < (top + h).view(-1, 1))  # (B, H)
    in_cols = (cols >= left.view(-1, 1)) & (cols < (left + w).view(-1, 1))  # (B, W)
    # (B, 1, H, W)
    mask = (in_rows.unsqueeze(-1) & in_cols.unsqueeze(-2) & erase.view(-1, 1, 1)).unsqueeze(1)
    return out.masked_fill(mask, 0.0)


def stratified_split(
    labels: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, validation) with ``fraction`` of each class held out for validation (at least
    one per class that has two or more samples). Seeded; the test set is never touched."""
    if not 0 < fraction < 1:
        raise ValueError(f"validation fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    train, val = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_val = max(1, int(round(fraction * len(members)))) if len(members) >= 2 else 0
        val.extend(members[:n_val])
        train.extend(members[n_val:])
    return np.sort(np.array(train, dtype=np.int64)), np.sort(np.array(val, dtype=np.int64))
