"""Every setting's default and allowed values, in one place: the training recipes
(``BaselineConfig``, ``FusionConfig``), the choices each option takes, and the input sizes and
widths the networks accept.

The command line (``fer_lib.cli``) derives its options' defaults and choices from here and the
report's profiles (``fer_lib.run.profiles``) start from the same defaults, so a default cannot drift
between them. A profile's departure from a default is written in the profile, where
``design_choices`` lists it. This module imports neither torch nor numpy: the command line reads it
before deciding whether it needs them.

Defaults follow the paper where it states a value (Table 1, Table 4, the ARM recipe) and say so
where it does not.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# dataclass field metadata: the value of runs saved before the field existed, where the default has
# moved since (io.claim_config and checkpoint loading read it)
OLDER_RUNS = "older_runs"

# -- choices
# -----------------------------------------------------------------------------------------------
# ARM's batch term: the current batch's mean (the ARM code), or a mean fixed
# from the training set (models.ARM)
AFFINITY_MODES = ("batch", "fixed")
PAPER_WEIGHTINGS = ("none", "confidence", "agreement", "both")  # Table 8's ablation
# beyond the paper (its section 6): the confidence of a temperature-scaled landmark
# head, and a gate fitted afterwards
WEIGHTINGS = (*PAPER_WEIGHTINGS, "calibrated", "learned")
# "learned" is fitted on a finished run (fit-gate), not trained
TRAINED_WEIGHTINGS = WEIGHTINGS[:-1]
# the landmark branch: Table 1's CNN on heatmaps, or an MLP on coordinates
LANDMARK_INPUTS = ("heatmaps", "coords")
# the baseline's augmentation: the ARM authors' mix (half untouched, a quarter flipped, a quarter
# noised), or every image flipped or noised (data.augment_arm)
AUGMENTATIONS = ("upstream", "flip_or_noise")
LANDMARK_SETS = ("auto37", "manual5", "both")  # which points draw the heatmaps (landmarks.py)
# the paper's ExponentialLR(0.9) per epoch, or a cosine to zero
LR_SCHEDULES = ("exponential", "cosine")
# the landmark branch's epoch kept: lowest validation loss of eq. 3 (both heads), or
# best fused validation accuracy
SELECTIONS = ("val_loss", "val_fused_accuracy")

# Paper, Table 4 (adabelief-pytorch); ExponentialLR(0.9) per epoch; batch 256 train / 64 test.
ADABELIEF = dict(
    lr=1e-3, betas=(0.9, 0.999), eps=1e-16, weight_decouple=True, rectify=False, weight_decay=1e-2
)
LR_GAMMA = 0.9

# -- geometry: which input sizes and widths the networks take (models.py's
# docstring derives them) ----------
PAPER_INPUT_SIZE = 224
SHUFFLE = 16  # PixelShuffle factor: 512 channels -> 2
DE_ALBINO_KERNEL, DE_ALBINO_STRIDE = 32, 8
SIZE_RANGE = range(32, 449, 32)  # candidate sizes listed in error messages
WIDTH_RANGE = range(1, 65)
TRUNK_CHANNELS = {"resnet": 8, "landmark": 16}  # output channels per unit of base width


def arm_layout(channels: int) -> tuple[int, int, int]:
    """(PixelShuffle factor r, de-albino kernel, stride) for a trunk with ``channels`` output
    channels.

    512 -> (16, 32, 8), the paper's. r**2 = channels / 2 so two channels come out; the kernel is 2r
    and the stride r/2, which keeps the ARM output side at 2m - 3 for an m x m map whatever the
    width.
    """
    shuffle = round((channels / 2) ** 0.5)
    if channels % 2 or shuffle * shuffle * 2 != channels or shuffle % 2:
        raise ValueError(
            f"a trunk with {channels} output channels does not fit ARM: PixelShuffle(r) must turn "
            "them into 2 channels with r even (channels = 2 r^2: 8, 32, 72, 128, 200, 288, 392, "
            "512, ...)"
        )
    return shuffle, 2 * shuffle, shuffle // 2


def arm_sides(input_size: int) -> tuple[int, int, int] | None:
    """(trunk map side m, pixel-shuffled side, ARM output side n), or
    None where ARM does not fit."""
    if input_size % 32:
        return None
    map_side = input_size // 32
    shuffled = SHUFFLE * map_side
    if shuffled < DE_ALBINO_KERNEL or (shuffled - DE_ALBINO_KERNEL) % DE_ALBINO_STRIDE:
        return None
    return map_side, shuffled, (shuffled - DE_ALBINO_KERNEL) // DE_ALBINO_STRIDE + 1


def landmark_conv5_side(input_size: int) -> int:
    """Side of the landmark CNN's 5th conv output (10 at 224): Table 1's
    unpadded convs and 2x2 pools."""
    side = input_size - 4  # conv 5x5
    for _ in range(4):
        side = side // 2 - 2  # maxpool 2, then conv 3x3
    return side


def landmark_last_kernel(input_size: int) -> int | None:
    """The kernel of the landmark CNN's size-matching conv (4 at 224); None where no kernel fits."""
    sides = arm_sides(input_size)
    if sides is None:
        return None
    kernel = landmark_conv5_side(input_size) - sides[0] + 1
    return kernel if kernel >= 1 else None


def valid_input_sizes() -> list[int]:
    """The input sizes both networks take, up to 448 (the paper's 224 among them)."""
    return [size for size in SIZE_RANGE if landmark_last_kernel(size)]


def valid_widths(network: str) -> list[int]:
    """The base widths ARM accepts after ``network``'s trunk ("resnet" or
    "landmark"), up to the paper's."""
    valid = []
    for width in WIDTH_RANGE:
        try:
            arm_layout(TRUNK_CHANNELS[network] * width)
        except ValueError:
            continue
        valid.append(width)
    return valid


# -- the training recipes --------------------------------------------------------------------------
@dataclass
class BaselineConfig:
    """The ARM recipe (SPEC.md): Adam, weight decay 1e-4, ExponentialLR(0.9), batch 256,
    the ARM authors' augmentation."""

    input_size: int = PAPER_INPUT_SIZE
    width: int = 64  # ResNet18's base width; 64 is the paper's (and the released checkpoint's)
    epochs: int = 70
    batch_size: int = 256
    eval_batch_size: int = 64  # the paper tests with batch 64 (ARM's batch term depends on it)
    lr: float = 1e-3
    weight_decay: float = 1e-4
    val_fraction: float = 0.1  # held out from the training set for model selection
    pretrained: str | None = None  # torchvision's ResNet18 ImageNet weights; None: from scratch
    # AUGMENTATIONS; the ARM authors' mix. Runs saved before the field existed
    # flipped or noised every image.
    augmentation: str = field(default="upstream", metadata={OLDER_RUNS: "flip_or_noise"})
    # decay per step of an exponential moving average of the weights, evaluated and kept instead of
    # the raw weights; None: off (the ARM recipe)
    ema: float | None = None
    lr_schedule: str = "exponential"  # LR_SCHEDULES; the ARM recipe's ExponentialLR(0.9)
    seed: int = 0


# the paper's method: the landmark feature weighted by its confidence and by its agreement with the
# RGB network, w when the two disagree (Fig. 4's best)
PAPER_WEIGHTING = "both"
PAPER_W = 0.6


@dataclass
class FusionConfig:
    """Landmark branch + fusion (paper, sections 4.2-4.3; Table 1's CNN; Table 4's optimiser)."""

    weighting: str = PAPER_WEIGHTING  # WEIGHTINGS
    w_disagree: float = PAPER_W  # agreement weight when the branches disagree (Fig. 4)
    weight_grad: bool = False  # gradients through p_landmark (the paper is silent)
    width: int = 32  # landmark CNN's base width; 32 is Table 1's
    # BatchNorm in the landmark CNN: not in Table 1; the CPU demo needs it (without it its landmark
    # CNN stayed at the majority class)
    batch_norm: bool = field(default=False, metadata={OLDER_RUNS: True})  # older runs: True
    landmark_input: str = "heatmaps"  # LANDMARK_INPUTS
    # fused model starts as the baseline (the paper does not say)
    fusion_init_from_baseline: bool = True
    epochs: int = 10  # not stated in the paper; selection on the validation split
    lr: float = ADABELIEF["lr"]  # Table 4
    # SELECTIONS; eq. 3's loss is what the model is trained on. Older runs: the fused accuracy.
    select: str = field(default="val_loss", metadata={OLDER_RUNS: "val_fused_accuracy"})
    batch_size: int = 256
    eval_batch_size: int = 64
    landmark_set: str = "auto37"  # LANDMARK_SETS
    heatmap_sigma: float | None = None  # None: 1.5 px at 224, scaled with the input size
    flip: bool = True  # random horizontal flips of image and heatmap together
    val_fraction: float = 0.1
    lr_schedule: str = "exponential"  # LR_SCHEDULES; Table 4's recipe
    seed: int = 0
