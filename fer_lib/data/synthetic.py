"""A synthetic RAF-DB: the project's embedded default data set.

RAF-DB cannot be downloaded, so every notebook, table and figure runs on this stand-in when no copy
is at hand. ``generate_demo_dataset`` writes it in exactly RAF-DB's basic/ layout (see
fer_lib.data.rafdb), so the same reader loads it.

How a sample is made (all procedural, numpy + PIL.ImageDraw, no assets):
- a canonical frontal 68-point iBUG face (units: inter-ocular distance = 1, origin between the eyes,
  y down), varied per identity (face width and height, jaw shape, eye size, brows, nose, mouth);
- an expression as a sum of action-unit-like displacements of the 68 points with a random intensity;
  weak intensities sit near Neutral, and the class recipes overlap where real FER does
  (Fear/Surprise, Disgust/Anger, Sadness/Neutral); a little label noise swaps confusable partners;
- appearance cues that the landmarks do not carry (teeth, wrinkles, crow's feet, tears, brow
  shadow), which make the RGB branch the stronger one;
- pose (yaw through a crude depth map, pitch, roll), random canvas size and face placement,
  background clutter, lighting, blur, noise, grayscale and JPEG quality, all drawn independently of
  the class;
- occluders (sunglasses, a hand or bar over the mouth), low light, heavy blur and tiny faces that
  hide the pixel cues while the landmark files stay accurate, as RAF-DB's annotators labelled such
  faces anyway.

Scene, expression and detector noise come from three independent random streams seeded by (seed,
split, index), so everything except the expression is independent of the class by construction, and
the output is byte-identical whatever the number of worker processes.
"""

from __future__ import annotations

import functools
import json
import math
import multiprocessing
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter
from tqdm.auto import tqdm

from fer_lib.data import rafdb
from fer_lib.data.landmarks import (
    ALIGN_TARGETS,
    ALIGNED_SIZE,
    AUTO37_FROM_IBUG68,
    alignment_anchors,
    similarity_from_points,
)

GENERATOR_VERSION = 1  # bump whenever the output changes, so old demo sets are regenerated
MARKER_FILE = "DEMO_DATA.json"  # written last: its presence (and content) means "complete"
PARTIAL_FILE = "DEMO_DATA.partial"  # present while a run is writing
SPLIT_CODES = {"train": 0, "test": 1}
NAME_DIGITS = {"train": 5, "test": 4}
# the cases only landmarks can solve, each drawn at SyntheticKnobs' <name>_rate
HARD_CONDITIONS = ("sunglasses", "mouth_occluder", "low_light", "heavy_blur", "tiny_face")
# Surprise<->Fear, Disgust<->Anger, Sadness<->Neutral
CONFUSABLE_PARTNER = {0: 1, 1: 0, 2: 5, 5: 2, 4: 6, 6: 4}


@dataclass(frozen=True)
class SyntheticKnobs:
    """Every calibration knob of the generator. Rates are per-sample probabilities."""

    # expression geometry (what the landmarks carry)
    intensity_range: tuple[float, float] = (0.45, 1.0)  # AU intensity of a clear expression
    weak_fraction: float = 0.25  # share of non-neutral samples drawn with a weak intensity
    weak_intensity_range: tuple[float, float] = (0.08, 0.35)  # weak expressions: close to Neutral
    recipe_jitter: float = 0.3  # relative sd of each AU's weight around its class recipe
    idle_au_sd: float = 0.08  # sd of small random AU activations on every face (resting face)
    identity_sd: float = 1.0  # multiplier on every identity shape variation (brow height, ...)
    label_noise: float = 0.05  # chance a paired class shows its confusable partner's expression
    # appearance cues (pixels only)
    cue_strength: float = 1.0  # contrast of teeth/wrinkles/tears (0 removes every appearance cue)
    cue_presence: float = 1.0  # multiplier on the per-class cue probabilities (_CUE_PRESENCE)
    weak_cue_factor: float = 0.5  # cue probability at intensity 0 relative to full intensity
    age_wrinkle_rate: float = 0.5  # chance an older face (age code >= 3) has faint static wrinkles
    # cases only landmarks can solve (landmark files stay accurate)
    sunglasses_rate: float = 0.05  # dark lenses over both eyes
    mouth_occluder_rate: float = 0.05  # a hand or a bar over the mouth
    low_light_rate: float = 0.04  # very dark, noisy photo
    heavy_blur_rate: float = 0.04  # blur of ~10% of the inter-ocular distance
    tiny_face_rate: float = 0.04  # inter-ocular distance of 8-13 px in the original
    # automatic (detector) landmarks
    detector_jitter: float = 0.03  # sd of auto37 noise, fraction of the inter-ocular distance
    hard_jitter_factor: float = 2.0  # jitter multiplier on occluded, dark, blurred or tiny faces
    manual_jitter: float = 0.004  # sd of manual5 noise, fraction of the inter-ocular distance
    # identity, pose and capture (all independent of the class)
    glasses_rate: float = 0.1  # clear glasses (frames only)
    yaw_max_deg: float = 25.0  # yaw uniform in +-this
    pitch_sd_deg: float = 5.0  # head nod, normal sd
    roll_sd_deg: float = 7.0  # in-plane tilt, normal sd
    canvas_range: tuple[int, int] = (160, 360)  # original image width and height, px
    face_fraction_range: tuple[float, float] = (0.16, 0.3)  # inter-ocular distance / min side
    grayscale_fraction: float = 0.08  # images stored as gray (in RGB JPEGs)
    jpeg_quality_range: tuple[int, int] = (60, 95)  # per image: its original and aligned files
    noise_sd_range: tuple[float, float] = (0.5, 4.0)  # sensor noise, 0-255 scale
    blur_range: tuple[float, float] = (0.3, 0.8)  # everyday blur radius, px


# The action units modelled (FACS numbers); _au_basis gives each one's displacement of the points.
AU_NAMES = tuple(f"AU{number}" for number in (1, 2, 4, 5, 6, 7, 9, 10, 12, 15, 17, 20, 23, 25, 26))

# Class recipes (0-based class -> AU weights at intensity 1), after FACS prototypes.
_RECIPES: dict[int, dict[str, float]] = {
    0: dict(AU1=1.0, AU2=1.0, AU5=1.0, AU25=0.5, AU26=1.0),  # Surprise
    1: dict(AU1=1.0, AU2=0.5, AU4=0.5, AU5=1.0, AU20=1.0, AU25=0.6, AU26=0.3),  # Fear
    2: dict(AU9=1.0, AU10=1.0, AU4=0.4, AU7=0.3, AU15=0.4, AU17=0.4),  # Disgust
    3: dict(AU6=1.0, AU12=1.0, AU25=0.5),  # Happiness
    4: dict(AU1=1.0, AU4=0.4, AU15=1.0, AU17=0.6),  # Sadness
    5: dict(AU4=1.0, AU5=0.3, AU7=1.0, AU23=1.0, AU10=0.2),  # Anger
    6: {},  # Neutral
}

# Probability of each pixel-only cue per shown class, in rafdb.CLASSES order.
_CUE_PRESENCE: dict[str, tuple[float, ...]] = {
    "teeth": (0.15, 0.45, 0.35, 0.85, 0.02, 0.3, 0.03),
    "nasolabial": (0.05, 0.15, 0.7, 0.85, 0.05, 0.2, 0.03),
    "crow_feet": (0.0, 0.0, 0.15, 0.8, 0.0, 0.05, 0.02),
    "nose_wrinkle": (0.0, 0.05, 0.85, 0.05, 0.0, 0.25, 0.0),
    "brow_furrow": (0.02, 0.35, 0.3, 0.0, 0.35, 0.9, 0.03),
    "forehead_lines": (0.85, 0.6, 0.0, 0.02, 0.25, 0.0, 0.03),
    "tear": (0.0, 0.1, 0.0, 0.02, 0.5, 0.0, 0.0),
    "chin_dimple": (0.0, 0.05, 0.3, 0.0, 0.55, 0.2, 0.0),
    "brow_shadow": (0.0, 0.0, 0.2, 0.0, 0.0, 0.7, 0.0),
}

# iBUG-68 index groups.
_LEFT_BROW = np.array([17, 18, 19, 20, 21])  # image-left brow, outer -> inner
_RIGHT_BROW = np.array([26, 25, 24, 23, 22])  # image-right brow, outer -> inner
_UPPER_LID = np.array([37, 38, 43, 44])
_LOWER_LID = np.array([41, 40, 47, 46])  # paired with _UPPER_LID (same column)
_LEFT_EYE = np.arange(36, 42)
_RIGHT_EYE = np.arange(42, 48)
_UPPER_INNER_LIP = np.array([61, 62, 63])
_LOWER_INNER_LIP = np.array([67, 66, 65])  # paired with _UPPER_INNER_LIP
_UPPER_OUTER_MID = np.array([50, 51, 52])
_LOWER_OUTER_MID = np.array([58, 57, 56])  # paired with _UPPER_OUTER_MID


# Each action unit's displacement at intensity 1 beyond the brows and the jaw line (computed in
# _au_basis): point groups moved in y (down), in order, then image-left mouth points moved in x and
# y whose mirror partners (_MOUTH_MIRROR) move with x negated.
# fmt: off
_AU_Y_SHIFTS: dict[str, tuple] = {
    "AU4": ((_UPPER_LID, 0.01),),  # brow lowerer
    "AU5": ((_UPPER_LID, -0.055), ([36, 39, 42, 45], -0.005), (_LOWER_LID, 0.008)),  # eyes wide
    # cheek raiser: eyes narrowed from below
    "AU6": ((_LOWER_LID, -0.03), (_UPPER_LID, 0.012), ([36, 45], -0.008), ([2, 3, 13, 14], -0.02)),
    "AU7": ((_UPPER_LID, 0.028), (_LOWER_LID, -0.026)),  # lid tightener
    # nose wrinkler: nostrils and upper lip up
    "AU9": ((slice(31, 36), -0.04), ([29, 30], [-0.015, -0.025]), (slice(49, 54), -0.025),
            (_UPPER_INNER_LIP, -0.02), (_LOWER_LID, -0.015)),
    # upper lip raiser
    "AU10": (([49, 53], -0.04), ([50, 51, 52], -0.06), (_UPPER_INNER_LIP, -0.05),
             ([48, 54, 60, 64], -0.015), (slice(31, 36), -0.015)),
    # chin raiser: lower lip and chin pushed up
    "AU17": (([55, 56, 58, 59], -0.03), (57, -0.04), ([65, 66, 67], -0.025), ([7, 8, 9], -0.03),
             ([6, 10], -0.015), ([50, 51, 52], -0.01)),
    "AU20": ((51, 0.012), (57, -0.012)),  # lip stretcher
    # lip tightener/presser: thin lips, narrower mouth
    "AU23": (([49, 53], 0.03), ([50, 51, 52], 0.035), (slice(55, 60), -0.035)),
    "AU25": ((_UPPER_INNER_LIP, -0.012), (_LOWER_INNER_LIP, 0.035), ([56, 57, 58], 0.03),
             ([55, 59], 0.02)),  # lips part
    # jaw drop: the lower lip follows the chin
    "AU26": ((slice(55, 60), [0.15, 0.2, 0.22, 0.2, 0.15]), (slice(65, 68), [0.19, 0.22, 0.19]),
             (_UPPER_INNER_LIP, -0.01), (slice(49, 54), -0.005)),
}
_AU_MIRRORED_SHIFTS: dict[str, dict[int, tuple[float, float]]] = {
    "AU12": {48: (-0.06, -0.075), 60: (-0.05, -0.065), 49: (-0.03, -0.035), 59: (-0.03, -0.03),
             61: (-0.02, -0.02), 67: (-0.02, -0.015), 50: (0.0, -0.01)},  # lip corner puller
    "AU15": {48: (0.015, 0.065), 60: (0.012, 0.055), 49: (0.0, 0.03), 59: (0.0, 0.03),
             50: (0.0, 0.01), 58: (0.0, 0.01)},  # lip corner depressor
    "AU20": {48: (-0.075, 0.015), 60: (-0.07, 0.015), 49: (-0.04, 0.01), 59: (-0.04, 0.0),
             50: (0.0, 0.012), 58: (0.0, -0.012)},  # lip stretcher
    "AU23": {48: (0.025, 0.0), 60: (0.02, 0.0)},
    "AU26": {48: (0.03, 0.06), 60: (0.035, 0.07)},
}
# fmt: on
_MOUTH_MIRROR = {48: 54, 49: 53, 50: 52, 59: 55, 58: 56, 60: 64, 61: 63, 67: 65}


def _au_basis() -> np.ndarray:
    """(n_AU, 68, 2) displacements at intensity 1 (x right, y down, inter-ocular distance = 1)."""
    basis = {name: np.zeros((68, 2)) for name in AU_NAMES}
    u = np.linspace(0, 1, 5)  # brow position, outer (0) -> inner (1)
    for brow, inward in ((_LEFT_BROW, 1.0), (_RIGHT_BROW, -1.0)):
        basis["AU1"][brow, 1] = -0.13 * (0.25 + 0.75 * u)  # inner brow raiser
        basis["AU2"][brow, 1] = -0.12 * (1 - 0.65 * u)  # outer brow raiser
        basis["AU4"][brow, 1] = 0.085 * (0.35 + 0.65 * u)  # brow lowerer: down and together
        basis["AU4"][brow, 0] = inward * 0.055 * u**2
        basis["AU9"][brow, 1] = 0.035 * u  # the nose wrinkler pulls the inner brows down
    basis["AU9"][[31, 35], 0] = [-0.02, 0.02]  # the nostrils widen
    jaw = np.arange(3, 14)
    basis["AU26"][jaw, 1] = 0.26 * np.sin(np.pi * (jaw - 2) / 12) ** 1.5  # the chin moves most
    for name, shifts in _AU_Y_SHIFTS.items():
        for points, dy in shifts:
            basis[name][points, 1] = dy
    for name, left in _AU_MIRRORED_SHIFTS.items():
        for index, (dx, dy) in left.items():
            basis[name][index] = (dx, dy)
            basis[name][_MOUTH_MIRROR[index]] = (-dx, dy)
    return np.stack([basis[name] for name in AU_NAMES])


_AU_BASIS = _au_basis()


# --- identity


@dataclass
class _Identity:
    """Who is in the photo: class-independent shape and appearance parameters."""

    attributes: tuple[int, int, int]  # gender, race, age codes (RAF-DB's manual file rows 6-8)
    # half face width (inter-ocular distance = 1: varies the eye spacing relative to the face)
    face_w: float
    chin_y: float
    jaw_square: float  # superellipse exponent of the jaw: larger = squarer
    head_h: float  # forehead height above the eye line
    eye_hw: float  # half eye width
    eye_open: float
    iris_r: float
    brow_dy: float
    brow_arch: float
    brow_thick: float
    nose_len: float
    nose_w: float
    mouth_y: float
    mouth_hw: float
    lip_upper: float
    lip_lower: float
    corner_dy: float  # resting mouth-corner height: some neutral faces look slightly happy or sad
    skin: np.ndarray
    lip: np.ndarray
    hair: np.ndarray
    hair_style: str
    hair_depth: float
    glasses: bool
    age_wrinkles: float  # strength of static wrinkles (0: none)


def _sample_identity(rng: np.random.Generator, knobs: SyntheticKnobs) -> _Identity:
    gender = int(rng.choice(3, p=[0.45, 0.5, 0.05]))
    race = int(rng.choice(3, p=[0.75, 0.1, 0.15]))
    age = int(rng.choice(5, p=[0.04, 0.14, 0.55, 0.21, 0.06]))
    male, child = gender == 0, age <= 1

    def shape(mean: float, sd: float, floor: float = -math.inf) -> float:
        """A shape parameter whose spread scales with knobs.identity_sd."""
        return max(floor, rng.normal(mean, sd * knobs.identity_sd))

    base_skin = [(228, 188, 160), (125, 85, 60), (222, 184, 146)][race]
    skin = np.clip(np.array(base_skin) * rng.uniform(0.85, 1.1) + rng.normal(0, 8, 3), 30, 250)
    lip = np.clip(skin * np.array([0.85, 0.55, 0.58]) + rng.normal(0, 6, 3), 20, 240)
    if age >= 4 or (age == 3 and rng.random() < 0.4):
        hair = np.array([170, 170, 165]) * rng.uniform(0.7, 1.2)
    else:
        palette = [(25, 20, 18), (60, 40, 28), (110, 75, 45), (190, 160, 100), (140, 60, 30)]
        weights = [0.45, 0.3, 0.1, 0.1, 0.05] if race == 0 else [0.8, 0.15, 0.05, 0.0, 0.0]
        hair = np.array(palette[rng.choice(5, p=weights)]) * rng.uniform(0.8, 1.2)
    style_p = [0.55, 0.1, 0.2, 0.15] if male else [0.15, 0.6, 0.23, 0.02]
    style = str(rng.choice(["short", "long", "fringe", "bald"], p=style_p))
    return _Identity(
        attributes=(gender, race, age),
        face_w=shape(1.0 if male else 0.95, 0.06),
        chin_y=shape(1.3 if child else 1.45, 0.07),
        jaw_square=rng.uniform(2.4, 3.4) if male else rng.uniform(2.0, 2.8),
        head_h=rng.normal(1.35, 0.06),
        eye_hw=shape(0.23, 0.015),
        eye_open=shape(1.15 if child else 1.0, 0.12, floor=0.6),
        iris_r=rng.normal(0.095, 0.007),
        brow_dy=shape(0, 0.035),
        brow_arch=shape(1.0, 0.25, floor=0.2),
        brow_thick=max(0.025, rng.normal(0.065 if male else 0.05, 0.012)),
        nose_len=shape(1.0, 0.07),
        nose_w=shape(1.0, 0.1),
        mouth_y=shape(0.84, 0.035),
        mouth_hw=shape(0.4, 0.03),
        lip_upper=shape(0.065, 0.012, floor=0.03),
        lip_lower=shape(0.085, 0.015, floor=0.04),
        corner_dy=shape(0, 0.015),
        skin=skin,
        lip=lip,
        hair=np.clip(hair, 0, 255),
        hair_style=style,
        hair_depth=rng.uniform(0.55, 0.7) if style == "fringe" else rng.uniform(0.25, 0.45),
        glasses=bool(rng.random() < knobs.glasses_rate),
        age_wrinkles=rng.uniform(0.2, 0.4)
        if age >= 3 and rng.random() < knobs.age_wrinkle_rate
        else 0.0,
    )


def _neutral_landmarks(idn: _Identity) -> np.ndarray:
    """The identity's frontal, expressionless 68 iBUG points in canonical units."""
    p = np.zeros((68, 2))
    # jaw: a superellipse from the left temple over the chin to the right
    phi = np.pi * np.arange(17) / 16
    e = 2 / idn.jaw_square
    p[:17, 0] = -idn.face_w * np.sign(np.cos(phi)) * np.abs(np.cos(phi)) ** e
    p[:17, 1] = 0.05 + (idn.chin_y - 0.05) * np.abs(np.sin(phi)) ** e
    brow_x = np.array([-0.88, -0.72, -0.52, -0.33, -0.16])
    brow_y = -0.3 - idn.brow_arch * np.array([0.0, 0.1, 0.14, 0.12, 0.08]) + idn.brow_dy
    p[_LEFT_BROW] = np.stack([brow_x, brow_y], 1)
    p[_RIGHT_BROW] = np.stack([-brow_x, brow_y], 1)
    p[27:31, 1] = np.array([-0.02, 0.14, 0.29, 0.45]) * idn.nose_len  # the ridge, at x = 0
    p[31:36, 0] = np.array([-0.19, -0.1, 0.0, 0.1, 0.19]) * idn.nose_w
    p[31:36, 1] = 0.45 * idn.nose_len + np.array([0.1, 0.135, 0.15, 0.135, 0.1])
    # iBUG order: 36 outer, 37, 38, 39 inner, 40, 41 (left eye); 42 inner, .., 45 outer (right)
    up, low = -0.068 * idn.eye_open, 0.05 * idn.eye_open
    dx = np.array([1, 0.35, -0.35, -1, -0.35, 0.35]) * idn.eye_hw
    p[_LEFT_EYE] = np.stack([-0.5 - dx, [-0.012, up, up, 0.008, low, low]], 1)
    p[_RIGHT_EYE] = np.stack([0.5 - dx, [0.008, up, up, -0.012, low, low]], 1)
    m = idn.mouth_hw
    p[48:60, 0] = np.array([-1, -0.6, -0.25, 0, 0.25, 0.6, 1, 0.6, 0.25, 0, -0.25, -0.6]) * m
    # the upper lip from corner to corner (48-54), then the lower lip back (55-59)
    upper_y = np.array([0, -0.8, -1.05, -0.85, -1.05, -0.8, 0]) * idn.lip_upper
    lower_y = np.array([0.85, 1.0, 1.05, 1.0, 0.85]) * idn.lip_lower
    p[48:60, 1] = idn.mouth_y + np.concatenate([upper_y, lower_y])
    p[60:68, 0] = np.array([-0.85, -0.3, 0, 0.3, 0.85, 0.3, 0, -0.3]) * m
    p[60:68, 1] = idn.mouth_y + 0.005
    p[[48, 54, 60, 64], 1] += idn.corner_dy
    return p


def _apply_expression(neutral: np.ndarray, au: np.ndarray) -> np.ndarray:
    """Deform the neutral points by AU weights, then keep eyelids and lips physically ordered."""
    p = neutral + np.tensordot(au, _AU_BASIS, axes=1)
    for upper, lower, gap in (
        (_UPPER_LID, _LOWER_LID, 0.008),
        (_UPPER_INNER_LIP, _LOWER_INNER_LIP, 0.0),
    ):
        mid = (p[upper, 1] + p[lower, 1]) / 2
        closed = p[lower, 1] - p[upper, 1] < gap
        p[upper[closed], 1] = mid[closed] - gap / 2
        p[lower[closed], 1] = mid[closed] + gap / 2
    p[_UPPER_OUTER_MID, 1] = np.minimum(p[_UPPER_OUTER_MID, 1], p[_UPPER_INNER_LIP, 1] - 0.012)
    p[_LOWER_OUTER_MID, 1] = np.maximum(p[_LOWER_OUTER_MID, 1], p[_LOWER_INNER_LIP, 1] + 0.012)
    return p


# --- expression


def _sample_expression(
    rng: np.random.Generator, label: int, knobs: SyntheticKnobs
) -> tuple[int, float, np.ndarray, dict[str, float]]:
    """The class shown (differs from the label under label noise), its intensity, the (n_AU,)
    weights and the appearance cues drawn (name -> strength)."""
    shown = label
    if label in CONFUSABLE_PARTNER and rng.random() < knobs.label_noise:
        shown = CONFUSABLE_PARTNER[label]
    weak = rng.random() < knobs.weak_fraction
    low, high = knobs.weak_intensity_range if weak else knobs.intensity_range
    intensity = 0.0 if shown == 6 else float(rng.uniform(low, high))
    au = rng.normal(0, knobs.idle_au_sd, len(AU_NAMES))
    for name, weight in _RECIPES[shown].items():
        au[AU_NAMES.index(name)] += (
            intensity * weight * max(0.0, 1 + rng.normal(0, knobs.recipe_jitter))
        )
    presence_scale = knobs.cue_presence * (
        knobs.weak_cue_factor + (1 - knobs.weak_cue_factor) * min(1.0, intensity)
    )
    cues = {}
    for cue, by_class in _CUE_PRESENCE.items():
        # neutral faces keep their (small) base rate: an occasional grin belongs to no class
        p = by_class[shown] * (knobs.cue_presence if shown == 6 else presence_scale)
        if rng.random() < p:
            cues[cue] = (
                knobs.cue_strength * rng.uniform(0.6, 1.0) * (0.6 + 0.4 * min(1.0, intensity))
            )
    if "teeth" in cues:  # teeth show only through parted lips
        au[AU_NAMES.index("AU25")] += rng.uniform(0.6, 1.0)
    jaw = [AU_NAMES.index("AU25"), AU_NAMES.index("AU26")]
    au[jaw] = np.maximum(au[jaw], 0)
    return shown, intensity, au, cues


# --- pose and scene


@dataclass
class _Pose:
    """Canonical face coordinates (with a crude depth map) -> original-image pixels."""

    yaw: float
    pitch: float
    roll: float
    scale: float  # px per canonical unit (frontal inter-ocular distance in px)
    centre: np.ndarray  # image position of the canonical origin (between the eyes)

    def __call__(self, xy: np.ndarray) -> np.ndarray:
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        z = _depth(xy)
        cy, sy = math.cos(self.yaw), math.sin(self.yaw)
        cp, sp = math.cos(self.pitch), math.sin(self.pitch)
        x = xy[:, 0] * cy + z * sy
        y = xy[:, 1] * cp + (xy[:, 0] * sy - z * cy) * sp
        c, s = self.scale * math.cos(self.roll), self.scale * math.sin(self.roll)
        return np.stack([self.centre[0] + c * x - s * y, self.centre[1] + s * x + c * y], 1)


def _depth(xy: np.ndarray) -> np.ndarray:
    """Crude head depth (towards the camera) at canonical points: an ellipsoid plus a nose ridge."""
    x, y = xy[:, 0], xy[:, 1]
    x2 = x * x
    head = 0.3 * np.sqrt(np.maximum(1 - x2 - ((y - 0.3) / 1.6) ** 2, 0)) - 0.2
    nose = 0.32 * np.exp(-x2 / 0.0169 - ((y - 0.4) / 0.22) ** 2)
    return head + nose


def _head_outline(idn: _Identity, jaw: np.ndarray, grow: float = 1.0) -> np.ndarray:
    """Closed outline: the jaw points, then the skull from the right temple over the top."""
    alpha = np.linspace(0, np.pi, 15)[1:-1]
    top = np.stack(
        [idn.face_w * grow * np.cos(alpha), 0.05 - idn.head_h * grow * np.sin(alpha) ** 0.8], 1
    )
    return np.concatenate([jaw, top])


@dataclass
class _Scene:
    """Capture conditions, all drawn independently of the class."""

    width: int
    height: int
    pose: _Pose
    conditions: tuple[str, ...]  # the HARD_CONDITIONS drawn
    jpeg_quality: int
    grayscale: bool


def _sample_scene(rng: np.random.Generator, idn: _Identity, knobs: SyntheticKnobs) -> _Scene:
    width, height = rng.integers(knobs.canvas_range[0], knobs.canvas_range[1] + 1, 2).tolist()
    conditions = tuple(
        name for name in HARD_CONDITIONS if rng.random() < getattr(knobs, f"{name}_rate")
    )
    if "tiny_face" in conditions:
        scale = rng.uniform(8, 13)
    else:
        scale = rng.uniform(*knobs.face_fraction_range) * min(width, height)
    pose = _Pose(
        yaw=math.radians(rng.uniform(-knobs.yaw_max_deg, knobs.yaw_max_deg)),
        pitch=math.radians(rng.normal(0, knobs.pitch_sd_deg)),
        roll=math.radians(rng.normal(0, knobs.roll_sd_deg)),
        scale=scale,
        centre=np.zeros(2),
    )
    # place the head (with room for the expression's jaw drop) uniformly where it fits in the canvas
    jaw = _neutral_landmarks(idn)[:17]
    jaw[3:14, 1] += 0.3
    canvas = np.array([width - 1, height - 1])

    def extent() -> tuple[np.ndarray, np.ndarray]:
        head = pose(_head_outline(idn, jaw, grow=1.05))
        return head.min(0), head.max(0) - head.min(0)

    low, size = extent()
    if np.any(size > canvas):  # head larger than the canvas: shrink it
        pose.scale *= 0.95 * np.min(canvas / size)
        low, size = extent()
    pose.centre = -low + rng.uniform(0, 1, 2) * np.maximum(canvas - size, 0)
    quality = int(rng.integers(knobs.jpeg_quality_range[0], knobs.jpeg_quality_range[1] + 1))
    return _Scene(
        width, height, pose, conditions, quality, bool(rng.random() < knobs.grayscale_fraction)
    )


def _ramp(angle: float, ends: np.ndarray, width: int, height: int) -> Image.Image:
    """A linear ramp along ``angle`` between the two rows of ``ends`` (3 channels: RGB, 1: L).

    Built as a 2x2 image resized bilinearly: far faster than numpy at full size.
    """
    direction = [math.cos(angle), math.sin(angle)]
    t = np.array([[-1, -1], [1, -1], [-1, 1], [1, 1]], dtype=np.float64) @ direction
    t = (t - t.min()) / max(float(np.ptp(t)), 1e-9)
    start, stop = ends
    corners = np.clip(np.round(start + (stop - start) * t[:, None]), 0, 255).astype(np.uint8)
    corners = corners.reshape(2, 2, -1).squeeze()
    return Image.fromarray(corners).resize((width, height), Image.Resampling.BILINEAR)


def _random_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(rng.integers(0, 256, 3).tolist())


def _background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A two-colour gradient with random clutter: carries nothing about the class."""
    colours = np.array([_random_colour(rng), _random_colour(rng)], dtype=np.float64)
    image = _ramp(rng.uniform(0, 2 * np.pi), colours, width, height)
    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(2, 10)):
        x0, y0 = rng.uniform(-0.2, 1.0, 2) * (width, height)
        w, h = rng.uniform(0.05, 0.6, 2) * (width, height)
        kind, colour, box = rng.integers(4), _random_colour(rng), [x0, y0, x0 + w, y0 + h]
        if kind < 2:
            (draw.rectangle, draw.ellipse)[kind](box, fill=colour)
        elif kind == 2:
            draw.line(box, fill=colour, width=int(rng.integers(1, 8)))
        else:
            points = rng.uniform(0, 1, (rng.integers(3, 7), 2)) * (w, h) + (x0, y0)
            draw.polygon(points.ravel().tolist(), fill=colour)
    return image


# --- drawing


def _chaikin(points: np.ndarray, closed: bool, iterations: int = 2) -> np.ndarray:
    """Corner-cutting smoothing, so a 6-point eye or a 12-point mouth is drawn as a curve."""
    for _ in range(iterations):
        q = np.vstack([points, points[:1]]) if closed else points
        new = np.empty((2 * (len(q) - 1), 2))
        new[0::2] = 0.75 * q[:-1] + 0.25 * q[1:]
        new[1::2] = 0.25 * q[:-1] + 0.75 * q[1:]
        points = new if closed else np.vstack([points[:1], new, points[-1:]])
    return points


def _ellipse(centre: np.ndarray, rx: float, ry: float, n: int = 16) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([centre[0] + rx * np.cos(t), centre[1] + ry * np.sin(t)], 1)


def _rgb(colour: np.ndarray, factor: float = 1.0) -> tuple[int, int, int]:
    return tuple(int(v) for v in np.clip(np.asarray(colour) * factor, 0, 255))


class _Painter:
    """Draws canonical-coordinate shapes (arrays or lists of points) onto the original image
    through the pose."""

    def __init__(self, image: Image.Image, pose: _Pose):
        self.draw = ImageDraw.Draw(image)
        self.pose = pose

    def polygon(self, points, fill, smooth: bool = False) -> None:
        points = _chaikin(np.asarray(points), closed=True) if smooth else points
        self.draw.polygon(self.pose(points).ravel().tolist(), fill=fill)

    def line(self, points, fill, width: float, smooth: bool = True) -> None:
        points = np.asarray(points)
        points = _chaikin(points, closed=False) if smooth and len(points) > 2 else points
        pixels = max(1, int(round(width * self.pose.scale)))
        self.draw.line(self.pose(points).ravel().tolist(), fill=fill, width=pixels, joint="curve")


def _draw_person(paint: _Painter, idn: _Identity, p: np.ndarray, rng: np.random.Generator) -> None:
    """Hair, neck, clothes, ears and the head shape behind the facial features."""
    if idn.hair_style == "long":
        back = _head_outline(idn, p[:17], grow=1.12)[17:]
        sides = [[-idn.face_w - 0.3, 2.1], [idn.face_w + 0.3, 2.1]]
        paint.polygon(np.vstack([back, sides, back[:1]]), _rgb(idn.hair, 0.8))
    clothes = [[-2.4, 2.2], [-0.6, 1.75], [0.6, 1.75], [2.4, 2.2], [2.6, 5], [-2.6, 5]]
    paint.polygon(clothes, _random_colour(rng))
    paint.polygon([[-0.42, 0.9], [0.42, 0.9], [0.5, 1.95], [-0.5, 1.95]], _rgb(idn.skin, 0.85))
    for side in (-1, 1):  # the ears
        ear = _ellipse([side * (idn.face_w + 0.02), 0.25], 0.12, 0.24)
        paint.polygon(ear, _rgb(idn.skin, 0.92))
    paint.polygon(_head_outline(idn, p[:17]), _rgb(idn.skin), smooth=True)
    if idn.hair_style != "bald":
        alpha = np.linspace(np.pi, 0, 13)  # left to right: the cap's outer edge runs right to left
        hairline_y = 0.05 - (idn.head_h - idn.hair_depth) * np.sin(alpha) ** 0.6
        hairline = np.stack([idn.face_w * 0.97 * np.cos(alpha), hairline_y], 1)
        cap = _head_outline(idn, p[:17], grow=1.06)[17:]
        paint.polygon(np.vstack([cap, hairline]), _rgb(idn.hair), smooth=True)


def _draw_eyes(paint: _Painter, idn: _Identity, p: np.ndarray, iris_colour) -> None:
    """Sclera, iris and lids: lids are skin over the iris, so a raised lid shows white above it."""
    for eye, cx in ((_LEFT_EYE, -0.5), (_RIGHT_EYE, 0.5)):
        ring = p[eye]
        paint.polygon(ring, (236, 232, 226), smooth=True)
        paint.polygon(_ellipse([cx, -0.004], idn.iris_r, idn.iris_r), iris_colour)
        pupil = idn.iris_r * 0.42
        paint.polygon(_ellipse([cx, -0.004], pupil, pupil, 10), (15, 12, 12))
        upper, lower = ring[:4], ring[[3, 4, 5, 0]]  # corner to corner, both eyes
        paint.polygon(np.vstack([upper, upper[::-1] + [0, -0.2]]), _rgb(idn.skin))
        paint.polygon(np.vstack([lower, lower[::-1] + [0, 0.16]]), _rgb(idn.skin))
        paint.line(upper, (40, 30, 30), 0.025)
        paint.line(lower, _rgb(idn.skin, 0.75), 0.012)


def _draw_mouth(paint: _Painter, idn: _Identity, p: np.ndarray, teeth: float) -> None:
    """Mouth opening, upper teeth when the cue is on (brighter with its strength), then the lips."""
    upper_inner = p[60:65]
    gap = float(np.mean(p[_LOWER_INNER_LIP, 1] - p[_UPPER_INNER_LIP, 1]))
    if gap > 0.008:
        paint.polygon(p[60:68], (70, 25, 30), smooth=True)
        if teeth > 0:
            shade = _rgb(70 + (np.array([240.0, 236.0, 222.0]) - 70) * (0.4 + 0.6 * teeth))
            height = min(0.7 * gap, 0.075)
            lower_edge = upper_inner + [0, height]
            lower_edge[[0, -1], 1] = upper_inner[[0, -1], 1] + height * 0.3
            paint.polygon(np.vstack([upper_inner, lower_edge[::-1]]), shade, smooth=True)
            for x in (-0.12, 0.0, 0.12):
                gum = p[62, 1]
                paint.line([[x, gum], [x, gum + height * 0.9]], (150, 145, 140), 0.008)
    upper_lip = p[[48, 49, 50, 51, 52, 53, 54, 64, 63, 62, 61, 60]]
    paint.polygon(upper_lip, _rgb(idn.lip), smooth=True)
    lower_lip = p[[54, 55, 56, 57, 58, 59, 48, 60, 67, 66, 65, 64]]
    paint.polygon(lower_lip, _rgb(idn.lip, 1.05), smooth=True)
    paint.line(upper_inner, _rgb(idn.lip, 0.55), 0.014)


def _draw_brows(paint: _Painter, idn: _Identity, p: np.ndarray) -> None:
    taper = np.linspace(0.6, 1.0, 5)[:, None] * [0, idn.brow_thick / 2]
    for brow in (_LEFT_BROW, _RIGHT_BROW):
        outline = np.vstack([p[brow] - taper, (p[brow] + taper)[::-1]])
        paint.polygon(outline, _rgb(idn.hair, 0.75), smooth=True)


def _draw_nose(paint: _Painter, idn: _Identity, p: np.ndarray) -> None:
    paint.line(np.vstack([p[27:31] + [0.07, 0], p[[35]]]), _rgb(idn.skin, 0.9), 0.015)
    paint.line(p[31:36], _rgb(idn.skin, 0.78), 0.018)
    for nostril in (32, 34):
        shape = _ellipse(p[nostril] + [0, -0.015], 0.04 * idn.nose_w, 0.022, 10)
        paint.polygon(shape, _rgb(idn.skin, 0.45))


def _nasolabial_fold(
    p: np.ndarray, side: int, middle: tuple[float, float], end: tuple[float, float]
) -> np.ndarray:
    """The fold from the nose wing past the mouth corner on one side (-1 image-left, 1 right)."""
    wing, corner = (31, 48) if side < 0 else (35, 54)
    offsets = [[side * dx, dy] for dx, dy in ((0.07, -0.03), middle, end)]
    return p[[wing, corner, corner]] + offsets


def _draw_cues(paint: _Painter, idn: _Identity, p: np.ndarray, cues: dict[str, float]) -> None:
    """The appearance cues a landmark file cannot carry (wrinkles, tears, shadows), and an older
    face's static wrinkles."""

    def dark(strength: float) -> tuple[int, int, int]:  # a crease or shadow of strength in (0, 1]
        return _rgb(idn.skin, 1 - 0.45 * strength)

    for side in (-1, 1):  # image-left, right
        if "nasolabial" in cues:
            fold = _nasolabial_fold(p, side, (0.11, -0.07), (0.13, 0.1))
            paint.line(fold, dark(cues["nasolabial"]), 0.022)
        if "crow_feet" in cues:
            start = p[36 if side < 0 else 45] + [side * 0.04, 0]
            for angle in (-0.5, 0.0, 0.5):
                end = start + [side * 0.12 * math.cos(angle), 0.12 * math.sin(angle)]
                paint.line([start, end], dark(cues["crow_feet"]), 0.016)
        if "tear" in cues:
            lid = p[41 if side < 0 else 46]
            tear = [lid + [0, 0.03], lid + [side * 0.02, 0.18], lid + [side * 0.01, 0.32]]
            paint.line(tear, (200, 215, 235), 0.022 * cues["tear"] + 0.01)
        if "brow_shadow" in cues:
            brow = p[_LEFT_BROW if side < 0 else _RIGHT_BROW]
            paint.line(brow[1:] + [0, 0.06], dark(0.7 * cues["brow_shadow"]), 0.05)
    if "nose_wrinkle" in cues:
        for y in (0.3, 0.55, 0.8):
            level = p[27, 1] + y * (p[29, 1] - p[27, 1])
            wrinkle = [[-0.11, level + 0.02], [0, level], [0.11, level + 0.02]]
            paint.line(wrinkle, dark(cues["nose_wrinkle"]), 0.014)
    if "brow_furrow" in cues:
        top = min(p[21, 1], p[22, 1])
        for x in (-0.045, 0.045):
            paint.line([[x, top - 0.02], [x * 0.8, top + 0.13]], dark(cues["brow_furrow"]), 0.016)
    for strength in (cues.get("forehead_lines", 0.0), idn.age_wrinkles):
        if strength > 0:
            brow_top = min(p[19, 1], p[24, 1])
            for k, gap in enumerate((0.09, 0.17)):
                y = brow_top - gap
                line = [[-0.45, y + 0.02], [0, y - 0.01 * k], [0.45, y + 0.02]]
                paint.line(line, dark(strength), 0.015)
    if idn.age_wrinkles > 0 and "nasolabial" not in cues:
        for side in (-1, 1):
            fold = _nasolabial_fold(p, side, (0.1, -0.05), (0.11, 0.08))
            paint.line(fold, dark(idn.age_wrinkles), 0.016)
    if "chin_dimple" in cues:
        chin = p[57] + [0, 0.5 * (p[8, 1] - p[57, 1])]
        for dx in (-0.06, 0.0, 0.06):
            dimple = _ellipse(chin + [dx, 0.01 * abs(dx) / 0.06], 0.018, 0.014, 8)
            paint.polygon(dimple, dark(cues["chin_dimple"]))


def _draw_glasses(paint: _Painter, p: np.ndarray, dark: bool, rng: np.random.Generator) -> None:
    """Sunglasses (``dark``) or clear glasses with a frame of a random colour."""
    frame = (20, 20, 20) if dark else _random_colour(rng)
    half = (0.3, 0.21) if dark else (0.26, 0.17)
    lenses = [_ellipse(p[eye].mean(0) + [0, 0.01], *half, 20) for eye in (_LEFT_EYE, _RIGHT_EYE)]
    for lens in lenses:
        if dark:
            paint.polygon(lens, (25, 25, 30))
        paint.line(np.vstack([lens, lens[:1]]), frame, 0.025, smooth=False)
    paint.line([lenses[0][0], [0, lenses[0][0][1] - 0.03], lenses[1][10]], frame, 0.025)


def _draw_mouth_occluder(
    paint: _Painter, idn: _Identity, p: np.ndarray, rng: np.random.Generator
) -> None:
    """A hand (skin) or a bar (random colour) over the whole mouth, whatever the jaw drop."""
    top = p[33, 1] + rng.uniform(0.0, 0.08)
    bottom = max(p[57, 1], p[66, 1]) + rng.uniform(0.15, 0.35)
    shift = rng.uniform(-0.08, 0.08)
    if rng.random() < 0.6:
        tone, edge = _rgb(idn.skin, rng.uniform(0.85, 1.05)), _rgb(idn.skin, 0.6)
        for k in range(4):  # four fingers lying across the mouth, each outlined
            y0 = top + k * (bottom - top) / 4
            y1 = y0 + (bottom - top) / 4
            xy = [[-0.75, y0], [0.6, y0 - 0.02], [0.66, y0 + 0.1], [0.6, y1], [-0.75, y1 + 0.02]]
            finger = np.array(xy) + [shift, 0]
            paint.polygon(finger, tone, smooth=True)
            paint.line(np.vstack([finger, finger[:1]]), edge, 0.015)
    else:
        bar = np.array([[-0.8, top], [0.8, top], [0.8, bottom], [-0.8, bottom]]) + [shift, 0]
        paint.polygon(bar, _random_colour(rng))


@functools.lru_cache(maxsize=4)
def _noise_tile(size: int) -> np.ndarray:
    """A fixed field of unit gaussian noise; each image takes a random crop
    (much cheaper than fresh noise)."""
    return np.random.default_rng(20240601).standard_normal((size, size), dtype=np.float32)


def _finish(
    image: Image.Image, scene: _Scene, rng: np.random.Generator, knobs: SyntheticKnobs
) -> Image.Image:
    """Blur, lighting, noise and grayscale: the camera, independent of the class. PIL operations
    for speed."""
    width, height = scene.width, scene.height
    blur = rng.uniform(*knobs.blur_range)
    if "heavy_blur" in scene.conditions:
        blur = max(blur, rng.uniform(0.08, 0.14) * scene.pose.scale)
        image = image.filter(ImageFilter.GaussianBlur(blur))
    else:  # fractional box: anti-aliasing plus soft focus
        image = image.filter(ImageFilter.BoxBlur(blur))
    low_light = "low_light" in scene.conditions
    exposure = rng.uniform(0.12, 0.25) if low_light else rng.uniform(0.8, 1.15)
    balance = rng.uniform(0.92, 1.08, 3)  # white balance
    amp = rng.uniform(0, 0.35)  # light falling from one side: gain 1 -/+ amp across the image
    gains = np.array([[255 * (1 - amp) / (1 + amp)], [255.0]])
    shade = _ramp(rng.uniform(0, 2 * np.pi), gains, width, height)
    image = ImageChops.multiply(image, shade.convert("RGB"))  # pixel * gain / (1 + amp)
    levels = np.arange(256, dtype=np.float64)
    lut = np.concatenate([levels * (1 + amp) * exposure * b for b in balance])
    image = image.point(np.clip(np.round(lut), 0, 255).astype(int).tolist())
    noise_sd = rng.uniform(6, 12) if low_light else rng.uniform(*knobs.noise_sd_range)
    tile = _noise_tile(512 * math.ceil(max(width, height) / 512))
    oy, ox = rng.integers(0, len(tile) - height + 1), rng.integers(0, len(tile) - width + 1)
    noise = tile[oy : oy + height, ox : ox + width] * np.float32(noise_sd) + np.float32(128)
    noise = Image.fromarray(np.clip(noise, 0, 255).astype(np.uint8)).convert("RGB")
    image = ImageChops.add(image, noise, scale=1.0, offset=-128)
    return image.convert("L").convert("RGB") if scene.grayscale else image


# --- one sample


@dataclass
class SyntheticSample:
    """One rendered sample, in memory (what the files will hold, before JPEG encoding)."""

    label: int  # 0-based class written to the label file
    shown_class: int  # 0-based class whose expression was drawn (differs under label noise)
    intensity: float
    original: Image.Image
    aligned: Image.Image  # 100x100
    manual5: np.ndarray  # (5, 2) original-image pixels
    auto37: np.ndarray  # (37, 2) original-image pixels
    box: np.ndarray  # (4,) x1, y1, x2, y2
    attributes: tuple[int, int, int]  # gender, race, age
    jpeg_quality: int
    conditions: tuple[str, ...]  # the HARD_CONDITIONS drawn
    cues: dict[str, float]  # appearance cue -> strength
    points68: np.ndarray  # (68, 2) the simulated detector's points (auto37 a subset), other layouts


def render_sample(
    seed: int, split: str, index: int, label: int, knobs: SyntheticKnobs | None = None
) -> SyntheticSample:
    """Render sample ``index`` (0-based) of a split with 0-based ``label``; pure function of its
    arguments."""
    knobs = knobs or SyntheticKnobs()
    sequence = np.random.SeedSequence([seed, SPLIT_CODES[split], 1, index])
    rng_scene, rng_expr, rng_detector = map(np.random.default_rng, sequence.spawn(3))
    idn = _sample_identity(rng_scene, knobs)
    scene = _sample_scene(rng_scene, idn, knobs)
    shown, intensity, au, cues = _sample_expression(rng_expr, label, knobs)
    points = _apply_expression(_neutral_landmarks(idn), au)

    image = _background(rng_scene, scene.width, scene.height)
    paint = _Painter(image, scene.pose)
    _draw_person(paint, idn, points, rng_scene)
    iris = [(70, 45, 25), (40, 30, 20), (70, 90, 110), (80, 95, 60)][rng_scene.integers(4)]
    _draw_eyes(paint, idn, points, iris)
    _draw_nose(paint, idn, points)
    _draw_cues(paint, idn, points, cues)
    _draw_brows(paint, idn, points)
    _draw_mouth(paint, idn, points, cues.get("teeth", 0.0))
    sunglasses = "sunglasses" in scene.conditions
    if idn.glasses or sunglasses:
        _draw_glasses(paint, points, sunglasses, rng_scene)
    if "mouth_occluder" in scene.conditions:
        _draw_mouth_occluder(paint, idn, points, rng_scene)
    original = _finish(image, scene, rng_scene, knobs)

    pixels68 = scene.pose(points)
    # RAF-DB's five points: the eye centres, the nose tip, the mouth corners
    eyes = [pixels68[eye].mean(0) for eye in (_LEFT_EYE, _RIGHT_EYE)]
    manual5 = np.stack([*eyes, *pixels68[[30, 48, 54]]])
    manual5 += rng_detector.normal(0, knobs.manual_jitter * scene.pose.scale, manual5.shape)
    hard = knobs.hard_jitter_factor if scene.conditions else 1.0
    jitter = knobs.detector_jitter * scene.pose.scale * hard
    face_shift = rng_detector.normal(0, 0.4 * jitter, 2)  # the whole face, then each point
    detected = pixels68 + face_shift + rng_detector.normal(0, jitter, pixels68.shape)
    outline = scene.pose(_head_outline(idn, points[:17]))
    box = np.concatenate([outline.min(0), outline.max(0)])
    box += rng_detector.normal(0, 0.03 * scene.pose.scale, 4)
    box = np.clip(box, 0, [scene.width - 1, scene.height - 1] * 2)
    return SyntheticSample(
        label=label,
        shown_class=shown,
        intensity=intensity,
        original=original,
        aligned=warp_aligned(original, manual5),
        manual5=manual5,
        auto37=detected[AUTO37_FROM_IBUG68],
        box=box,
        attributes=idn.attributes,
        jpeg_quality=scene.jpeg_quality,
        conditions=scene.conditions,
        cues=cues,
        points68=detected,
    )


def warp_aligned(image: Image.Image, manual5: np.ndarray) -> Image.Image:
    """RAF-DB's aligned 100x100 crop: least-squares similarity from eyes + mouth centre to
    ALIGN_TARGETS.

    PIL's AFFINE transform takes the inverse map in its own coordinates (pixel centres at +0.5);
    faces shrunk by more than 2x are box-reduced first so thin lines (wrinkles) survive.
    """
    matrix = similarity_from_points(alignment_anchors(manual5), ALIGN_TARGETS)
    factor = int(1 / math.hypot(matrix[0, 0], matrix[1, 0]))
    if factor >= 2:
        image = image.reduce(factor)
        # reduced pixel centre xr sits at original factor * (xr + 0.5) - 0.5
        to_original = np.array(
            [[factor, 0, (factor - 1) / 2], [0, factor, (factor - 1) / 2]], dtype=np.float64
        )
        linear = matrix[:, :2]
        matrix = np.column_stack(
            [linear @ to_original[:, :2], linear @ to_original[:, 2] + matrix[:, 2]]
        )
    inverse = np.linalg.inv(matrix[:, :2])
    offset = 0.5 - inverse @ (0.5 + matrix[:, 2])
    data = (*inverse[0], offset[0], *inverse[1], offset[1])
    size = (ALIGNED_SIZE, ALIGNED_SIZE)
    return image.transform(size, Image.Transform.AFFINE, data, resample=Image.Resampling.BILINEAR)


# --- the data set


def class_counts_for(n: int, split: str) -> list[int]:
    """Images per class for ``n`` images of a split, in the proportions of the paper's Table 3.

    Largest remainder (ties to the lower class index), so the counts sum to ``n``; with n >= 7 every
    class gets at least one image, taken from the largest class.
    """
    if split not in SPLIT_CODES:
        raise ValueError(f"split {split!r} is not one of {tuple(SPLIT_CODES)}")
    paper = np.array(rafdb.paper_results()["table3_class_counts"][split], dtype=np.float64)
    exact = n * paper / paper.sum()
    counts = np.floor(exact).astype(int)
    counts[np.argsort(counts - exact, kind="stable")[: n - counts.sum()]] += 1
    if n >= len(counts):
        while (counts == 0).any():
            counts[counts.argmax()] -= 1
            counts[counts.argmin()] += 1
    return counts.tolist()


def split_labels(n: int, split: str, seed: int) -> np.ndarray:
    """0-based labels of a split's samples in name order: Table 3 proportions, shuffled by the
    seed."""
    labels = np.repeat(np.arange(rafdb.NUM_CLASSES), class_counts_for(n, split))
    np.random.default_rng(np.random.SeedSequence([seed, SPLIT_CODES[split], 0])).shuffle(labels)
    return labels


def sample_name(split: str, index: int) -> str:
    return f"{split}_{index + 1:0{NAME_DIGITS[split]}d}.jpg"


def _render_and_write(task: tuple[Path, int, str, int, int, SyntheticKnobs]) -> None:
    root, seed, split, index, label, knobs = task
    name, sample = sample_name(split, index), render_sample(seed, split, index, label, knobs)
    sample.original.save(root / rafdb.ORIGINAL_DIR / name, "JPEG", quality=sample.jpeg_quality)
    aligned = root / rafdb.ALIGNED_DIR / rafdb.aligned_name(name)
    sample.aligned.save(aligned, "JPEG", quality=sample.jpeg_quality)
    rafdb.write_annotations(
        root, name, sample.manual5, sample.attributes, sample.auto37, sample.box
    )


def _marker(n_train: int, n_test: int, seed: int, knobs: SyntheticKnobs) -> dict:
    return {
        "generator_version": GENERATOR_VERSION,
        "n_train": n_train,
        "n_test": n_test,
        "seed": seed,
        "knobs": json.loads(json.dumps(asdict(knobs))),
    }


def demo_dataset_is_complete(
    out_dir: str | os.PathLike,
    n_train: int,
    n_test: int,
    seed: int,
    knobs: SyntheticKnobs | None = None,
) -> bool:
    """True when ``out_dir`` holds a finished demo set made by this generator version with these
    settings."""
    root = Path(out_dir)
    try:
        found = json.loads((root / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return False
    return (
        not (root / PARTIAL_FILE).exists()
        and (root / rafdb.LABEL_FILE).is_file()
        and found == _marker(n_train, n_test, seed, knobs or SyntheticKnobs())
    )


def _prepare_folder(root: Path) -> None:
    """Refuse to touch a folder that looks like real data; clear a previous demo set's files."""
    ours = (root / MARKER_FILE).exists() or (root / PARTIAL_FILE).exists()
    if (root / rafdb.LABEL_FILE).exists() and not ours:
        raise FileExistsError(
            f"{root} holds {rafdb.LABEL_FILE} but no {MARKER_FILE}: it looks like a real RAF-DB "
            "copy, so the demo generator will not overwrite it. Choose another folder."
        )
    if not ours and root.is_dir() and any(root.iterdir()):
        raise FileExistsError(
            f"{root} is not empty and holds no {MARKER_FILE}: choose an empty folder for the demo "
            "set"
        )
    root.mkdir(parents=True, exist_ok=True)
    (root / PARTIAL_FILE).write_text("a demo data set is being written here\n")
    (root / MARKER_FILE).unlink(missing_ok=True)
    for folder in rafdb.LAYOUT_DIRS:
        if ours:
            shutil.rmtree(root / folder, ignore_errors=True)
        (root / folder).mkdir(parents=True, exist_ok=True)


def generate_demo_dataset(
    out_dir: str | os.PathLike,
    n_train: int,
    n_test: int,
    seed: int = 0,
    *,
    progress: bool = True,
    knobs: SyntheticKnobs | None = None,
    workers: int | None = None,
) -> Path:
    """Write a synthetic RAF-DB (basic/ layout) into ``out_dir`` and return it.

    Deterministic for (n_train, n_test, seed, knobs): byte-identical files whatever ``workers`` is
    (default: one process per CPU, at most 8; workers are spawned, so a script that calls this with
    workers > 1 needs the usual ``if __name__ == "__main__":`` guard). A folder holding a label file
    but no demo marker is refused (it may be a real RAF-DB copy); a previous demo set there is
    replaced. ``DEMO_DATA.json`` is written last; see ``demo_dataset_is_complete``.
    """
    knobs = knobs or SyntheticKnobs()
    if not (1 <= n_train <= 99999 and 1 <= n_test <= 9999):
        raise ValueError(
            "need 1 <= n_train <= 99999 and 1 <= n_test <= 9999 (RAF-DB's name widths), got "
            f"{n_train}, {n_test}"
        )
    root = Path(out_dir).expanduser()
    _prepare_folder(root)
    tasks, rows = [], []
    for split, n in (("train", n_train), ("test", n_test)):
        for index, label in enumerate(split_labels(n, split, seed)):
            tasks.append((root, seed, split, index, int(label), knobs))
            rows.append(f"{sample_name(split, index)} {label + 1}\n")
    workers = min(8, os.cpu_count() or 1) if workers is None else workers
    with tqdm(total=len(tasks), desc="demo data", unit="img", disable=not progress) as bar:
        if workers <= 1 or len(tasks) < 64:
            for task in tasks:
                _render_and_write(task)
                bar.update()
        else:
            with multiprocessing.get_context("spawn").Pool(workers) as pool:
                for _ in pool.imap_unordered(_render_and_write, tasks, chunksize=16):
                    bar.update()
    (root / rafdb.LABEL_FILE).write_text("".join(rows))
    (root / MARKER_FILE).write_text(
        json.dumps(_marker(n_train, n_test, seed, knobs), indent=2, sort_keys=True) + "\n"
    )
    (root / PARTIAL_FILE).unlink()
    return root
