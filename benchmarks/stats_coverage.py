"""Coverage of the seed-pooled interval (``fer_lib.evaluation.stats.seed_pooled_interval``), by
simulation with known truth.

    python benchmarks/stats_coverage.py [--replicates 1000] [--out benchmarks/stats_coverage.csv]
    python benchmarks/stats_coverage.py --seed-laws | --outliers | --worst-case

Per replicate a test set is drawn with RAF-DB's test class sizes (3,068 images) from a population
whose true difference between the two training methods is known, a baseline (frozen, or one per
seed) and a method trained with S seeds are evaluated on it, and the interval is checked against the
truth. A settings grid: seeds 2, 3, 5, 10; seed-to-seed sd of the gain 0, 0.3, 1 point; frozen and
per-seed baselines; true OA differences 0 and 0.3 points. Prints and writes the miss rate of each
(target: 3.5-6.5% at 95%), for OA and AA, next to the interval the report used before (z *
sqrt(bootstrap variance + s^2 / S)).

The population: image i of class c has a difficulty z_i ~ N(mu_c, 1); a model is right where z_i +
shift + noise > 0. A method's noise on an image is correlated with its baseline's (rho = 0.85,
``RHO``: it changes about 5% of the images, like the fusion), and each training seed shifts it by a
draw with the stated sd (for per-seed baselines the baseline's own seed moves both). Accuracies
follow from the normal CDF, so the true OA and AA differences are computed, not estimated.

``--seed-laws``: seed effects that are not normal (``Setting.seed_law``: skewed, heavy-tailed, 10%
of seeds failing by 3.3 points); the truth is integrated over the law. ``--outliers``: how often
``stats.outlying_seed`` flags a seed when seed effects are normal (false flags) and when one seed is
planted 3.3 points lower (detections).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import brentq
from scipy.stats import norm

from fer_lib.evaluation.stats import seed_pooled_interval

# Table 3's test counts, in RAF-DB's label order
RAFDB_TEST = np.array([329, 74, 160, 1185, 478, 162, 680])
# a baseline about as good as ARM's, per class
CLASS_ACCURACY = np.array([0.88, 0.62, 0.65, 0.96, 0.88, 0.80, 0.92])
NOISE = 1.0  # a model's per-image noise, in units of the difficulty's sd
# correlation of a method's noise with its baseline's on the same image (about 6% of images change)
RHO = 0.85
BASELINE_SEED_SD = 0.3  # points of OA: the spread of per-seed baselines (the demo measured 0.24)
SEED_LAWS = ("normal", "skewed", "heavy", "failed")
# "failed": a seed fails this often, by about this many points of OA
FAIL_RATE, FAIL_DROP = (0.1, 3.3)
_LAW_POINTS = 2000  # equal-probability points that integrate a non-normal seed law


@dataclass(frozen=True)
class Setting:
    seeds: int
    gain_sd: float  # points of OA: seed-to-seed sd of the method's population gain
    baseline: str  # "frozen" (one, shared) or "per-seed"
    effect: float  # points of OA: the true population difference
    # the seed effects' law, each with sd gain_sd (per-seed baselines: BASELINE_SEED_SD, the same
    # law): "normal"; "skewed", a centred chi-square(1) with its long tail to the low side; "heavy",
    # t with 3 df; "failed", normal with FAIL_RATE of seeds FAIL_DROP points lower (a per-seed
    # baseline fails so too, raising the difference)
    seed_law: str = "normal"

    @property
    def name(self) -> str:
        law = "" if self.seed_law == "normal" else f", {self.seed_law} seeds"
        return (
            f"S={self.seeds}, gain sd {self.gain_sd:g}, {self.baseline}, effect "
            f"{self.effect:g}{law}"
        )


def standard_law(law: str, size, rng: np.random.Generator) -> np.ndarray:
    """Draws of a seed law with mean 0 and sd 1 before its failures ("failed" adds them apart)."""
    if law in ("normal", "failed"):
        return rng.normal(size=size)
    if law == "skewed":
        return -(rng.chisquare(1, size) - 1) / np.sqrt(2)
    if law == "heavy":
        return rng.standard_t(3, size) / np.sqrt(3)
    raise ValueError(f"seed_law must be one of {SEED_LAWS}, got {law!r}")


def _law_points(law: str, size: int = _LAW_POINTS) -> np.ndarray:
    """Equal-probability points of ``standard_law`` (before failures), to integrate over it."""
    from scipy.stats import chi2, t

    u = (np.arange(size) + 0.5) / size
    if law in ("normal", "failed"):
        return norm.ppf(u)
    if law == "skewed":
        return -(chi2.ppf(u, 1) - 1) / np.sqrt(2)
    return t.ppf(u, 3) / np.sqrt(3)


class Population:
    """The two methods' population accuracies for a setting: shifts solved so the true OA difference
    is the effect."""

    def __init__(self, setting: Setting):
        self.setting = setting
        self.share = RAFDB_TEST / RAFDB_TEST.sum()
        self.mu = norm.ppf(CLASS_ACCURACY) * np.sqrt(1 + NOISE**2)
        self.baseline_sd = (
            0.0 if setting.baseline == "frozen" else self._shift_sd(BASELINE_SEED_SD, 0.0)
        )
        self.baseline_drop = (
            self._drop(FAIL_DROP, 0.0)
            if setting.baseline != "frozen" and setting.seed_law == "failed"
            else 0.0
        )
        self.shift = 0.0
        self.gain_drop = 0.0
        # the seed sd's slope depends on the shift, and the shift on the sd: two passes settle both
        for _ in range(2):
            self.gain_shift_sd = self._shift_sd(setting.gain_sd, self.shift)
            if setting.seed_law == "failed":
                self.gain_drop = self._drop(FAIL_DROP, self.shift)
            self.shift = brentq(lambda m: self.oa_difference(m) - setting.effect / 100, -2, 2)

    def _shift_sd(self, points: float, shift: float) -> float:
        slope = float(self.share @ norm.pdf((self.mu + shift) / np.sqrt(1 + NOISE**2))) / np.sqrt(
            1 + NOISE**2
        )
        return points / 100 / slope

    def _drop(self, points: float, shift: float) -> float:
        """The shift that lowers a model's OA by ``points`` from a mean shift ``shift`` (solved, not
        linearised: the accuracy is curved at a failure's size)."""
        oa = lambda m: float(self.share @ self.class_accuracy(m, 0.0))  # noqa: E731
        return brentq(lambda x: oa(shift) - oa(shift - x) - points / 100, 0.0, 3.0)

    def class_accuracy(self, shift: float, seed_sd: float) -> np.ndarray:
        return norm.cdf((self.mu + shift) / np.sqrt(1 + NOISE**2 + seed_sd**2))

    def _shift_points(self, sd: float, drop: float, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Points and weights of one seed's shift under the setting's law (sd,
        and a failure of ``drop``)."""
        points = sd * _law_points(self.setting.seed_law, size)
        weights = np.full(len(points), 1 / len(points))
        if drop:
            points = np.concatenate([points, points - drop])
            weights = np.concatenate([(1 - FAIL_RATE) * weights, FAIL_RATE * weights])
        return points, weights

    def class_accuracies(self, shift: float) -> tuple[np.ndarray, np.ndarray]:
        """Population accuracy per class of the baseline and of the method whose mean
        shift is ``shift``, averaged over their seeds (normal: in closed form; other laws:
        over equal-probability points)."""
        if self.setting.seed_law == "normal":
            method = self.class_accuracy(shift, np.hypot(self.baseline_sd, self.gain_shift_sd))
            return self.class_accuracy(0.0, self.baseline_sd), method
        # per-seed baselines sum two laws: fewer points each keep the product grid small
        size = _LAW_POINTS if self.setting.baseline == "frozen" else _LAW_POINTS // 5
        a, wa = self._shift_points(self.baseline_sd, self.baseline_drop, size)
        b, wb = self._shift_points(self.gain_shift_sd, self.gain_drop, size)
        scale = np.sqrt(1 + NOISE**2)
        baseline = wa @ norm.cdf((self.mu[None] + a[:, None]) / scale)
        # the method carries its baseline's seed shift and its own gain's: a sum of the two laws
        total = (a[:, None] + b[None]).ravel()
        weights = (wa[:, None] * wb[None]).ravel()
        if self.setting.baseline == "frozen":
            total, weights = b, wb
        method = weights @ norm.cdf((self.mu[None] + shift + total[:, None]) / scale)
        return baseline, method

    def oa_difference(self, shift: float) -> float:
        baseline, method = self.class_accuracies(shift)
        return float(self.share @ (method - baseline))

    def truth(self, metric: str) -> float:
        baseline, method = self.class_accuracies(self.shift)
        difference = method - baseline
        return float(self.share @ difference if metric == "oa" else difference.mean())

    def seed_shifts(self, sd: float, drop: float, seeds: int, rng: np.random.Generator):
        """One shift per seed under the setting's law (S, 1)."""
        if self.setting.seed_law == "normal":
            return rng.normal(0, sd, (seeds, 1))  # the draws of the normal grid, unchanged
        shifts = sd * standard_law(self.setting.seed_law, (seeds, 1), rng)
        if drop:
            shifts -= drop * (rng.random((seeds, 1)) < FAIL_RATE)
        return shifts

    def draw(
        self, rng: np.random.Generator, fail_first: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One test set and its per-seed correctness: labels (N,), baseline (S, N),
        method (S, N). ``fail_first``: the method's first seed fails, FAIL_DROP points of
        OA lower (a planted outlier)."""
        s = self.setting.seeds
        labels = np.repeat(np.arange(len(RAFDB_TEST)), RAFDB_TEST)
        z = rng.normal(self.mu[labels], 1.0)
        if self.setting.baseline == "frozen":
            noise_a = np.broadcast_to(rng.normal(size=len(labels)), (s, len(labels)))
            shift_a = np.zeros((s, 1))
        else:
            noise_a = rng.normal(size=(s, len(labels)))
            shift_a = self.seed_shifts(self.baseline_sd, self.baseline_drop, s, rng)
        noise_b = RHO * noise_a + np.sqrt(1 - RHO**2) * rng.normal(size=(s, len(labels)))
        shift_b = (
            shift_a + self.shift + self.seed_shifts(self.gain_shift_sd, self.gain_drop, s, rng)
        )
        if fail_first:
            shift_b[0] -= self._drop(FAIL_DROP, self.shift)
        baseline = z + shift_a + NOISE * noise_a > 0
        method = z + shift_b + NOISE * noise_b > 0
        return labels, baseline, method


def previous_interval(
    labels: np.ndarray, correct_a: np.ndarray, correct_b: np.ndarray, metric: str
) -> tuple[float, float]:
    """The interval the report used before: z * sqrt(v_test + s^2 / S), v_test the
    class-stratified bootstrap variance of the seed-averaged difference (its expectation,
    computed), s the sd of the per-seed differences."""
    diff = correct_b.astype(float) - correct_a
    weight = np.where(metric == "oa", 1 / len(labels), 1 / (len(RAFDB_TEST) * RAFDB_TEST[labels]))
    per_seed = diff @ weight
    mean_diff = diff.mean(0)
    v_test = sum(
        ((mean_diff[labels == k] - mean_diff[labels == k].mean()) ** 2).sum()
        * weight[labels == k][0] ** 2
        for k in range(len(RAFDB_TEST))
    )
    half = 1.959964 * np.sqrt(v_test + per_seed.var(ddof=1) / len(per_seed))
    return per_seed.mean() - half, per_seed.mean() + half


def coverage(
    setting: Setting, replicates: int, seed: int = 0, *, previous: bool = True, metrics=("oa", "aa")
) -> dict:
    """Miss rates of the interval (and of the previous one) over ``replicates`` test sets of
    a setting, overall and given a tie, s^2 below the interaction, or an outlying seed
    flagged (``stats.outlying_seed``)."""
    from fer_lib.evaluation.stats import _metric_weights, outlying_seed

    population = Population(setting)
    rng = np.random.default_rng(seed)
    truth = {m: population.truth(m) for m in metrics}
    misses = {m: 0 for m in metrics}
    below_truth = {m: 0 for m in metrics}  # misses with the whole interval under the truth
    misses_before = {m: 0 for m in metrics}
    widths = {m: [] for m in metrics}
    # the cases where an interval that trusts s^2 collapses: the per-seed differences
    # tie (s^2 = 0, common as they are counts of images over N), or s^2 falls below
    # the interaction it must contain
    ties = {m: [0, 0] for m in metrics}  # [cases, misses among them]
    below = {m: [0, 0] for m in metrics}
    flagged = {m: [0, 0] for m in metrics}  # an outlying seed flagged: [cases, misses among them]
    changed = []
    for _ in range(replicates):
        labels, baseline, method = population.draw(rng)
        changed.append(float((baseline != method).mean()))
        for m in metrics:
            result = seed_pooled_interval(labels, baseline, method, metric=m)
            missed = not (result.low <= truth[m] <= result.high)
            misses[m] += missed
            below_truth[m] += result.high < truth[m]
            widths[m].append(result.high - result.low)
            if result.seed_variance == 0:
                ties[m][0] += 1
                ties[m][1] += missed
            if result.seed_variance < result.interaction_variance:
                below[m][0] += 1
                below[m][1] += missed
            weights = _metric_weights(labels, m, len(RAFDB_TEST))
            if outlying_seed(
                (method - baseline.astype(float)) @ weights, result.interaction_variance
            ):
                flagged[m][0] += 1
                flagged[m][1] += missed
            if previous:
                low, high = previous_interval(labels, baseline, method, m)
                misses_before[m] += not (low <= truth[m] <= high)
    row = {
        "setting": setting.name,
        "seeds": setting.seeds,
        "gain sd (points)": setting.gain_sd,
        "baseline": setting.baseline,
        "effect (points)": setting.effect,
        "seed law": setting.seed_law,
        "replicates": replicates,
        "images changed": float(np.mean(changed)),
    }
    for m in metrics:
        row[f"{m.upper()} miss"] = misses[m] / replicates
        row[f"{m.upper()} misses below the truth"] = below_truth[m]
        row[f"{m.upper()} misses above the truth"] = misses[m] - below_truth[m]
        row[f"{m.upper()} median width (points)"] = 100 * float(np.median(widths[m]))
        for name, (cases, missed) in (
            ("tie", ties[m]),
            ("s2 < interaction", below[m]),
            ("flagged", flagged[m]),
        ):
            row[f"{m.upper()} {name} cases"] = cases
            row[f"{m.upper()} miss | {name}"] = missed / cases if cases else float("nan")
        if previous:
            row[f"{m.upper()} miss before"] = misses_before[m] / replicates
    return row


def outlier_rates(setting: Setting, replicates: int, seed: int = 0, *, fail_first: bool = False):
    """How often ``stats.outlying_seed`` flags a seed of the OA differences over ``replicates`` test
    sets of a setting: with normal seed effects every flag is false; with ``fail_first`` the first
    seed is planted FAIL_DROP points lower and a flag of it is a detection."""
    from fer_lib.evaluation.stats import _metric_weights, _variance_components, outlying_seed

    population = Population(setting)
    rng = np.random.default_rng(seed)
    flagged = first = 0
    for _ in range(replicates):
        labels, baseline, method = population.draw(rng, fail_first=fail_first)
        diff = method.astype(float) - baseline
        weights = _metric_weights(labels, "oa", len(RAFDB_TEST))
        _, interaction = _variance_components(labels, diff, weights)
        found = outlying_seed(diff @ weights, interaction)
        flagged += found is not None
        first += found is not None and found.index == 0
    return {
        "seeds": setting.seeds,
        "gain sd (points)": setting.gain_sd,
        "baseline": setting.baseline,
        "seed law": setting.seed_law,
        "planted failure": fail_first,
        "replicates": replicates,
        "some seed flagged": flagged / replicates,
        "the failed seed flagged": first / replicates if fail_first else float("nan"),
    }


def exact_miss(
    seeds: int,
    ratio: float,
    floor: float,
    confidence: float = 0.95,
    bound_level: float | None = None,
    points: int = 8000,
) -> float:
    """The interval's miss probability under its own model, by numerical integration, not
    simulation: the true v_seed / (S v_img) is ``ratio`` and v_int / (S v_img) is ``floor`` (v_img
    and v_int taken as known: they rest on thousands of degrees of freedom). Z and U = s^2 / v_seed
    ~ chi2(S-1)/(S-1) are independent, so the miss is E_U[2 Phi(-q(R(U)) sqrt(1 + max(ratio U,
    floor)) / sqrt(1 + ratio))], R(U) the plug-in ratio the interval takes its quantile q at; the
    expectation over U is taken at ``points`` equal-probability points. ``bound_level``: the
    seed-variance bound's confidence (default ``stats.bound_confidence``)."""
    from scipy.special import ndtr
    from scipy.stats import chi2

    from fer_lib.evaluation.stats import _quantile, bound_confidence

    level = bound_confidence(seeds, 1 - confidence) if bound_level is None else bound_level
    u = chi2.ppf((np.arange(points) + 0.5) / points, seeds - 1) / (seeds - 1)
    plug_in = np.maximum(ratio * u, floor) * (seeds - 1) / chi2.ppf(1 - level, seeds - 1)
    # q is smooth in log R: tabulate it and interpolate rather than solve once per point
    grid = np.geomspace(max(plug_in.min(), 1e-6), plug_in.max() * 1.0001 + 1e-9, 160)
    table = [_quantile(r, seeds, 0.5 + confidence / 2, floor) for r in grid]
    q = np.interp(np.log(plug_in), np.log(grid), table)
    scale = np.sqrt((1 + np.maximum(ratio * u, floor)) / (1 + ratio))
    return float((2 * ndtr(-q * scale)).mean())


# worst_case's grid of seed-to-image variance ratios
RATIOS = np.geomspace(0.01, 3000, 15)


def worst_case(
    seeds: int,
    confidence: float = 0.95,
    ratios=RATIOS,
    floor_shares=(0.0, 0.05, 0.1, 0.2, 0.5, 1.0),
) -> dict:
    """The largest ``exact_miss`` over the nuisance: the ratio, and the interaction's share of it
    (floor / ratio)."""
    misses = {
        (r, share): exact_miss(seeds, r, share * r, confidence)
        for share in floor_shares
        for r in ratios
    }
    (r, share), worst = max(misses.items(), key=lambda item: item[1])
    return {
        "seeds": seeds,
        "confidence": confidence,
        "worst miss": worst,
        "worst / nominal": worst / (1 - confidence),
        "at ratio": r,
        "interaction share": share,
        "least miss": min(misses.values()),
    }


GRID = [
    Setting(s, sd, b, e)
    for s in (2, 3, 5, 10)
    for sd in (0.0, 0.3, 1.0)
    for b in ("frozen", "per-seed")
    for e in (0.0, 0.3)
]


# seed effects that break the normal assumption, beside normal ones of the
# same sd; true gain 0.3 points
LAW_GRID = [
    Setting(s, sd, b, 0.3, law)
    for s, b in ((3, "frozen"), (5, "frozen"), (10, "frozen"), (3, "per-seed"))
    for law, sd in (
        ("normal", 0.3),
        ("failed", 0.3),
        ("normal", 1.0),
        ("skewed", 1.0),
        ("heavy", 1.0),
    )
]
# normal seeds (every flag false) and one planted failure (a flag of it is
# a detection); a frozen baseline
OUTLIER_GRID = [
    (Setting(s, sd, "frozen", 0.3), planted)
    for s in (3, 5, 10)
    for planted in (False, True)
    for sd in (0.0, 0.3, 1.0)
]


def main(argv=None) -> int:
    import pandas as pd
    from tqdm import tqdm

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--replicates", type=int, default=1000)
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help=(
            "default: stats_coverage.csv beside this script (_laws.csv, _outliers.csv for those "
            "modes)"
        ),
    )
    parser.add_argument(
        "--worst-case",
        action="store_true",
        help=(
            "print the exact worst-case miss over the nuisance ratio (numerical integration), "
            "not the simulation"
        ),
    )
    parser.add_argument(
        "--seed-laws",
        action="store_true",
        help=(
            "OA coverage when seed effects are not normal (LAW_GRID: skewed, heavy-tailed, "
            "failed seeds)"
        ),
    )
    parser.add_argument(
        "--outliers",
        action="store_true",
        help=(
            "the outlying-seed rule's false-flag rate (normal seeds) and detection rate (one "
            "failed seed)"
        ),
    )
    args = parser.parse_args(argv)
    clock = time.perf_counter()
    if args.seed_laws or args.outliers:
        if args.seed_laws:
            rows = [
                coverage(setting, args.replicates, seed=100 + i, previous=False, metrics=("oa",))
                for i, setting in enumerate(tqdm(LAW_GRID, desc="settings"))
            ]
            columns = ["seeds", "baseline", "seed law", "gain sd (points)", "OA miss"]
            columns += ["OA misses below the truth", "OA misses above the truth"]
            columns += ["OA median width (points)", "OA flagged cases", "OA miss | flagged"]
        else:
            rows = [
                outlier_rates(setting, args.replicates, seed=200 + i, fail_first=planted)
                for i, (setting, planted) in enumerate(tqdm(OUTLIER_GRID, desc="settings"))
            ]
            columns = list(rows[0])
        frame = pd.DataFrame(rows)[columns]
        name = "stats_coverage_laws.csv" if args.seed_laws else "stats_coverage_outliers.csv"
        frame.to_csv(args.out or Path(__file__).with_name(name), index=False, float_format="%.4f")
        print(frame.to_markdown(index=False, floatfmt=".4g"))
        print(
            f"{len(rows)} settings x {args.replicates} replicates in "
            f"{time.perf_counter() - clock:.0f} s"
        )
        return 0
    if args.worst_case:
        frame = pd.DataFrame(
            [worst_case(s, c) for s in (2, 3, 5, 10) for c in (0.95, 0.99, 0.9975)]
        )
        print(frame.to_markdown(index=False, floatfmt=".4g"))
        print(f"in {time.perf_counter() - clock:.0f} s")
        return 0
    rows = [
        coverage(setting, args.replicates, seed=i)
        for i, setting in enumerate(tqdm(GRID, desc="settings"))
    ]
    frame = pd.DataFrame(rows)
    out = args.out or Path(__file__).with_name("stats_coverage.csv")
    frame.to_csv(out, index=False, float_format="%.4f")
    print(frame.drop(columns=["setting"]).to_markdown(index=False, floatfmt=".4f"))
    for m in ("OA", "AA"):
        print(
            f"{m}: miss rate {frame[f'{m} miss'].min():.1%} to {frame[f'{m} miss'].max():.1%} "
            f"(before: {frame[f'{m} miss before'].min():.1%} to "
            f"{frame[f'{m} miss before'].max():.1%})"
        )
    print(
        f"{len(GRID)} settings x {args.replicates} replicates in "
        f"{time.perf_counter() - clock:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
