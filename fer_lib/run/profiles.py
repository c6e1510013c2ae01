"""The report's profiles (smoke, demo, paper) and the ``--set KEY=VALUE`` overrides a run may apply
to them.

A ``Profile`` fixes the data set and the sizes of one report run. Its training fields start from the
recipes' defaults in ``fer_lib.settings`` (the paper's), so a profile states only where it departs
from them; the demo's departures are listed on the report page (``design_choices``). Each field has
one validator in ``VALIDATORS``, which turns the text of a ``--set`` into the field's value or
raises a ``SettingsError`` naming the key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field

from fer_lib.data.rafdb import CLASSES
from fer_lib.data.synthetic import SyntheticKnobs
from fer_lib.settings import (
    AUGMENTATIONS,
    LR_SCHEDULES,
    OLDER_RUNS,
    PAPER_INPUT_SIZE,
    PAPER_W,
    BaselineConfig,
    FusionConfig,
    valid_input_sizes,
    valid_widths,
)


@dataclass(frozen=True)
class Profile:
    """The sizes and settings of one report run. Every field but ``name`` can be
    overridden (``with_settings``)."""

    name: str
    # (train, test) sizes of the synthetic set; None: the user's data set
    synthetic: tuple[int, int] | None
    input_size: int  # network input (224 in the paper)
    baseline_width: int  # ResNet18 base width (64 in the paper)
    baseline_epochs: int
    landmark_width: int  # landmark CNN base width (32 in the paper, Table 1)
    fusion_epochs: int
    seeds: int  # training seeds of every landmark-branch configuration
    w_grid: tuple[float, ...]  # Fig. 4
    batch_train: int = BaselineConfig.batch_size
    # training batch of the landmark branch + fusion; None: batch_train
    batch_fusion: int | None = None
    batch_test: int = BaselineConfig.eval_batch_size  # the paper tests with batch 64
    batch_study: tuple[int, ...] = (1, 16, 64, 256)  # ARM's batch-term study (notebook 3)
    synthetic_seed: int = 0
    # every training seed is shifted by this: another seed acts like another CPU
    seed_offset: int = 0
    train_limit: int | None = None  # a stratified subset of the training split (None: all of it)
    test_limit: int | None = None  # a stratified subset of the test split (None: all of it)
    knobs: tuple[tuple[str, object], ...] = ()  # SyntheticKnobs overrides (the demo's difficulty)
    # BatchNorm in the landmark CNN (not in Table 1), and the baseline's augmentation
    # (data.augment_arm); run folders saved before these fields existed had BatchNorm and flipped or
    # noised every image
    landmark_batch_norm: bool = field(default=FusionConfig.batch_norm, metadata={OLDER_RUNS: True})
    augmentation: str = field(
        default=BaselineConfig.augmentation, metadata={OLDER_RUNS: "flip_or_noise"}
    )
    # one trained baseline per seed (its spread enters every interval); False: one, shared
    baseline_per_seed: bool = False
    # a trained baseline keeps the moving average of its weights (decay
    # per step); None: the ARM recipe
    baseline_ema: float | None = BaselineConfig.ema
    # of the baseline and the landmark branch: the paper's ExponentialLR(0.9), or "cosine" to zero
    lr_schedule: str = BaselineConfig.lr_schedule
    fusion_lr_schedule: str | None = None  # the landmark branch's own schedule; None: lr_schedule
    # notebook 06 also trains the proposed model with each unstated choice
    # flipped (fusion_runs.DESIGN_VARIANTS)
    design_ablations: bool = False

    @property
    def seed_list(self) -> list[int]:
        """The training seeds of every landmark-branch configuration; the baseline uses the first,
        or each one (``baseline_per_seed``)."""
        return [self.seed_offset + k for k in range(self.seeds)]

    def synthetic_knobs(self):
        return dataclasses.replace(SyntheticKnobs(), **dict(self.knobs))

    def describe(self, data: str | None = None) -> str:
        """One line: the data set (``data``, where the run was given one, else the profile's own)
        and the sizes."""
        data = data or (
            f"synthetic RAF-DB ({self.synthetic[0]} train / {self.synthetic[1]} test)"
            if self.synthetic
            else "RAF-DB (basic)"
        )
        subsets = (("train", self.train_limit), ("test", self.test_limit))
        limits = "".join(f"; {split} subset of {n}" for split, n in subsets if n)
        return (
            f"profile {self.name}: {data}{limits}; input {self.input_size}px; ResNet18 width "
            f"{self.baseline_width}, {self.baseline_epochs} epochs; landmark CNN width "
            f"{self.landmark_width}, {self.fusion_epochs} epochs; seeds "
            f"{', '.join(map(str, self.seed_list))}"
        )

    def overrides(self) -> dict[str, object]:
        """The fields that differ from the named profile's, as ``--set`` would write them."""
        default = PROFILES[self.name]
        return {
            f.name: _format_value(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != getattr(default, f.name)
        }

    def settings(self) -> dict[str, object]:
        """Every field, JSON-ready (what a run folder's ``settings.json`` holds)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


W_GRID_PAPER = tuple(round(0.1 * i, 1) for i in range(11))
# The demo's difficulty (SyntheticKnobs overrides), calibrated so that its CPU-sized networks
# learn what their input allows and the paper's Table 2 pattern appears
# (benchmarks/README.md, "Calibrating the demo"): fewer and less weak near-Neutral
# expressions, class recipes held closer to their prototypes, pixel cues that stay at weak
# intensities, fewer hard photos, a sharper landmark detector and more identity variety. The
# no-shortcut check (notebook 01) still holds with them.
DEMO_KNOBS = (
    ("cue_presence", 1.15),
    ("cue_strength", 1.3),
    ("detector_jitter", 0.025),
    ("heavy_blur_rate", 0.02),
    ("identity_sd", 1.3),
    ("label_noise", 0.03),
    ("low_light_rate", 0.02),
    ("mouth_occluder_rate", 0.035),
    ("recipe_jitter", 0.2),
    ("sunglasses_rate", 0.035),
    ("tiny_face_rate", 0.02),
    ("weak_cue_factor", 0.9),
    ("weak_fraction", 0.15),
    ("weak_intensity_range", (0.15, 0.4)),
)
# the demo tests on as many images as RAF-DB's test set: evaluation is
# cheap, and it narrows every interval
RAFDB_TEST_SIZE = 3068
PROFILES = {
    # tiny, for the tests: every notebook in seconds
    "smoke": Profile(
        "smoke",
        synthetic=(140, 70),
        input_size=128,
        baseline_width=4,
        baseline_epochs=2,
        landmark_width=2,
        fusion_epochs=1,
        seeds=2,
        w_grid=(0.0, PAPER_W, 1.0),
        batch_train=32,
        batch_study=(8, 64),
        landmark_batch_norm=True,
        augmentation="flip_or_noise",
        baseline_per_seed=True,
        design_ablations=True,
    ),
    # The CPU demo: narrow networks at 128 px, so that the whole report runs in 9-15 minutes on the
    # 2-core CPUs measured (README: 9 min 28 s and 15 min 9 s).
    # - The landmark branch trains with batch 32, 1.0-1.7x faster per image than at 64 on the CPUs
    #   measured (benchmarks/README.md), and with BatchNorm: without it, its landmark CNN stayed at
    #   the majority class.
    # - Every image of the baseline is flipped or noised (the ARM authors leave half untouched).
    # - One frozen baseline, shared by every seed, as in the paper; the moving average of its
    #   weights steadies it: four seeds of the raw recipe ranged over 1.3 points of OA
    #   (benchmarks/README.md, "The demo baseline's spread between seeds"). A baseline per seed cost
    #   28% of the training stage's CPU time ("One shared baseline"); whether another baseline gives
    #   the same verdicts is what the replicate run (--replicate, seed offset 100) checks.
    # - The baseline keeps 10 epochs of the paper's exponential schedule: 8 cosine epochs put seed
    #   1's baseline at 0.856, below its HOG probe and 3 points under seed 0's
    #   (benchmarks/README.md, "The demo's schedule, checked on two seeds"). The landmark branch
    #   trains 2 epochs with a cosine schedule (half of its cost; every quality target holds: "The
    #   landmark branch at 2 epochs").
    "demo": Profile(
        "demo",
        synthetic=(4000, RAFDB_TEST_SIZE),
        input_size=128,
        baseline_width=16,
        baseline_epochs=10,
        landmark_width=8,
        fusion_epochs=2,
        seeds=3,  # fewer give no method-level verdict (verdicts.MIN_SEEDS)
        w_grid=(0.0, PAPER_W, 1.0),
        batch_train=64,
        batch_fusion=32,
        knobs=DEMO_KNOBS,
        landmark_batch_norm=True,
        augmentation="flip_or_noise",
        baseline_ema=0.99,
        fusion_lr_schedule="cosine",
    ),
    # the paper's settings on the user's RAF-DB, meant for a GPU: every recipe default (Table 1 as
    # printed, without BatchNorm; the ARM authors' augmentation)
    "paper": Profile(
        "paper",
        synthetic=None,
        input_size=PAPER_INPUT_SIZE,
        baseline_width=BaselineConfig.width,
        baseline_epochs=BaselineConfig.epochs,
        landmark_width=FusionConfig.width,
        fusion_epochs=FusionConfig.epochs,
        seeds=5,
        w_grid=W_GRID_PAPER,
        design_ablations=True,
    ),
}


class SettingsError(ValueError):
    """A ``--set KEY=VALUE`` that names no setting or gives it a value out of range."""


def get_profile(name: str, overrides: dict[str, str] | None = None) -> Profile:
    """A named profile, with ``overrides`` (KEY -> VALUE text, as ``--set``
    takes them) parsed and checked."""
    if name not in PROFILES:
        raise SettingsError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}")
    return with_settings(PROFILES[name], overrides or {})


def as_profile(profile: str | Profile) -> Profile:
    """A profile given by name (as defined) or as itself."""
    return get_profile(profile) if isinstance(profile, str) else profile


def with_settings(profile: Profile, overrides: dict[str, str]) -> Profile:
    """``profile`` with each KEY=VALUE override parsed and checked (a
    SettingsError names what is wrong)."""
    changes = {key: parse_setting(key, value) for key, value in overrides.items()}
    if "knobs" in changes:  # on top of the profile's own knobs
        changes["knobs"] = tuple(sorted({**dict(profile.knobs), **dict(changes["knobs"])}.items()))
    result = dataclasses.replace(profile, **changes)
    if result.knobs and result.synthetic is None:
        raise SettingsError(
            "knobs: the difficulty knobs apply to the synthetic set only; this run reads a real "
            "data set"
        )
    return result


def parse_assignments(items: list[str]) -> dict[str, str]:
    """``["KEY=VALUE", ...]`` (the ``--set`` options) into a dict,
    refusing an item without ``=``."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SettingsError(
                f"--set {item!r}: expected KEY=VALUE; the settings are: {', '.join(SETTING_KEYS)}"
            )
        out[key.strip()] = value
    return out


def parse_setting(key: str, text: str) -> object:
    """The value of one ``--set KEY=VALUE``, checked by the field's validator."""
    if key not in VALIDATORS:
        raise SettingsError(f"unknown setting {key!r}; the settings are: {', '.join(SETTING_KEYS)}")
    return VALIDATORS[key](key, str(text).strip())


def _format_value(value) -> object:
    if isinstance(value, tuple) and value and isinstance(value[0], tuple):  # knobs
        return ",".join(f"{k}={json.dumps(v)}" for k, v in value)
    if isinstance(value, tuple):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return value


# -- one validator per field: (key, text) -> value, or a SettingsError -----------------------------
Validator = Callable[[str, str], object]
NONE_WORDS = ("", "none", "all", "off")


def _whole(low: int) -> Validator:
    def parse(key: str, text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise SettingsError(
                f"{key}={text!r}: expected a whole number of at least {low}"
            ) from None
        if value < low:
            raise SettingsError(f"{key}={text!r}: must be at least {low}")
        return value

    return parse


def _or_none(parse: Validator) -> Validator:
    def parse_or_none(key: str, text: str):
        return None if text.lower() in NONE_WORDS else parse(key, text)

    return parse_or_none


def _one_of(options: tuple[str, ...]) -> Validator:
    def parse(key: str, text: str) -> str:
        if text not in options:
            raise SettingsError(f"{key}={text!r}: expected one of {', '.join(options)}")
        return text

    return parse


def _flag(key: str, text: str) -> bool:
    if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
        raise SettingsError(f"{key}={text!r}: expected true or false")
    return text.lower() in ("true", "1", "yes")


def _member(valid: Callable[[], tuple[int, ...]], problem: str) -> Validator:
    """A whole number among ``valid()``; ``problem`` follows ``key=text`` with ``{}``: them."""

    def parse(key: str, text: str) -> int:
        value, allowed = _whole(1)(key, text), valid()
        if value not in allowed:
            raise SettingsError(f"{key}={text!r}" + problem.format(", ".join(map(str, allowed))))
        return value

    return parse


def _number_list(kind: type, what: str, inside: Callable[[float], bool]) -> Validator:
    def parse(key: str, text: str) -> tuple:
        try:
            values = tuple(kind(v) for v in text.split(",") if v.strip())
        except ValueError:
            values = ()
        if not values or not all(inside(v) for v in values):
            raise SettingsError(
                f"{key}={text!r}: expected a non-empty comma-separated list of {what}"
            )
        return tuple(sorted(set(values)))

    return parse


def _synthetic_sizes(key: str, text: str) -> tuple[int, int] | None:
    if text.lower() in NONE_WORDS:
        return None
    parts = text.split(",")
    if len(parts) != 2:
        raise SettingsError(f"{key}={text!r}: expected TRAIN,TEST image counts, e.g. 1600,500")
    count = _whole(len(CLASSES))
    return count("synthetic train", parts[0]), count("synthetic test", parts[1])


def _decay(key: str, text: str) -> float:
    try:
        decay = float(text)
    except ValueError:
        decay = -1.0
    if not 0 < decay < 1:
        raise SettingsError(
            f"{key}={text!r}: expected a decay per step between 0 and 1 (e.g. 0.99), or none"
        )
    return decay


def _knobs(key: str, text: str) -> tuple[tuple[str, object], ...]:
    """``name=value,name=value`` (JSON values; ranges as [low, high]) into
    SyntheticKnobs overrides."""
    valid = {f.name: f for f in dataclasses.fields(SyntheticKnobs)}
    pairs = {}
    for item in filter(None, (part.strip() for part in _split_top_level(text))):
        name, _, value = item.partition("=")
        if name not in valid:
            raise SettingsError(f"{key}: unknown knob {name!r}; the knobs are: {', '.join(valid)}")
        try:
            parsed = json.loads(value)
        except ValueError:
            raise SettingsError(
                f"{key}: {item!r} is not NAME=VALUE with a number or [low, high]"
            ) from None
        default = getattr(SyntheticKnobs(), name)
        if isinstance(default, tuple):
            if not (isinstance(parsed, list) and len(parsed) == 2):
                raise SettingsError(f"{key}: {name} is a range: write {name}=[low,high]")
            parsed = tuple(type(default[0])(v) for v in parsed)
        elif not isinstance(parsed, (int, float)) or parsed < 0:
            raise SettingsError(f"{key}: {name} must be a number >= 0, got {value!r}")
        pairs[name] = parsed
    return tuple(sorted(pairs.items()))


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside brackets: ``a=1,b=[2,3]`` -> ``['a=1', 'b=[2,3]']``."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [*parts, current]


VALIDATORS: dict[str, Validator] = {
    "synthetic": _synthetic_sizes,
    "input_size": _member(
        valid_input_sizes, " does not fit the networks: they take one of {} (the paper: 224)"
    ),
    "baseline_width": _member(lambda: valid_widths("resnet"), ": ARM needs one of the widths {}"),
    "baseline_epochs": _whole(1),
    "landmark_width": _member(lambda: valid_widths("landmark"), ": ARM needs one of the widths {}"),
    "fusion_epochs": _whole(1),
    "seeds": _whole(1),
    "w_grid": _number_list(float, "numbers in [0, 1]", lambda v: 0 <= v <= 1),
    "batch_train": _whole(2),  # BatchNorm needs two samples
    "batch_fusion": _or_none(_whole(2)),
    "batch_test": _whole(1),
    "batch_study": _number_list(int, "batch sizes >= 1", lambda v: v >= 1),
    "synthetic_seed": _whole(0),
    "seed_offset": _whole(0),
    "train_limit": _or_none(_whole(len(CLASSES))),
    "test_limit": _or_none(_whole(len(CLASSES))),
    "knobs": _knobs,
    "landmark_batch_norm": _flag,
    "augmentation": _one_of(AUGMENTATIONS),
    "baseline_per_seed": _flag,
    "baseline_ema": _or_none(_decay),
    "lr_schedule": _one_of(LR_SCHEDULES),
    "fusion_lr_schedule": _or_none(_one_of(LR_SCHEDULES)),
    "design_ablations": _flag,
}
SETTING_KEYS = tuple(f.name for f in dataclasses.fields(Profile) if f.name != "name")
if set(VALIDATORS) != set(SETTING_KEYS):  # a new field needs its validator
    raise RuntimeError(f"profile fields without a validator: {set(SETTING_KEYS) ^ set(VALIDATORS)}")
