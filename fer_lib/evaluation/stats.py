"""How sure is a difference between two models evaluated on the same test images?

- ``mcnemar_exact``: exact McNemar test on paired per-image correctness. Under the null the
  discordant images (one model right, the other wrong) split 50/50, so the p-value is a two-sided
  binomial test on the discordant counts.
- ``paired_bootstrap``: a seeded paired bootstrap of the OA and AA differences. Test images are
  resampled with replacement, the same draw for both models. It returns the observed difference and
  a percentile interval. A resample is drawn as multinomial counts of (class, hit A, hit B) cells,
  which is the same distribution as drawing image indices and costs nothing per image.
- ``paired_bootstrap_correct``: the same on per-image correctness given as numbers in [0, 1]
  (booleans, or each image's fraction of seeds that got it right).
- ``seed_pooled_interval``: the method-level interval of the seed-averaged difference of two
  training methods, from variance components (images, seeds, their interaction) with a quantile that
  knows how few seeds there are: the interval every verdict reads. Its coverage is measured by
  simulation (``benchmarks/stats_coverage.py``).
- ``outlying_seed``: a seed whose difference is an outlier among its siblings (a failed seed), which
  the interval's normal seed effects do not allow for.
- ``holm``, ``seeds_needed``: a family of claims, and how many seeds a target effect needs.

Resamples are drawn class by class, keeping each class's number of test images, as the test set's
class sizes are fixed by design (RAF-DB's test split, and the synthetic set's copy of its
proportions).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.optimize import brentq
from scipy.special import ndtr
from scipy.stats import binomtest, chi2
from scipy.stats import t as student


@dataclass(frozen=True)
class McNemarResult:
    only_a_right: int  # images model A gets right and model B wrong
    only_b_right: int
    p_value: float


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> McNemarResult:
    """Exact (binomial) McNemar test on paired boolean correctness arrays."""
    correct_a, correct_b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if correct_a.shape != correct_b.shape or correct_a.ndim != 1:
        raise ValueError(
            f"correctness arrays must be 1-D and the same length, got {correct_a.shape} and "
            f"{correct_b.shape}"
        )
    only_a = int((correct_a & ~correct_b).sum())
    only_b = int((~correct_a & correct_b).sum())
    p_value = 1.0 if only_a + only_b == 0 else binomtest(only_a, only_a + only_b, 0.5).pvalue
    return McNemarResult(only_a, only_b, float(p_value))


@dataclass(frozen=True)
class BootstrapResult:
    metric: str  # "oa" or "aa"
    difference: float  # observed metric(B) - metric(A)
    low: float  # percentile interval of the difference
    high: float
    resamples: int

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def _check_metric(metric: str) -> None:
    if metric not in ("oa", "aa"):
        raise ValueError(f"metric must be 'oa' or 'aa', got {metric!r}")


def _class_count(labels: np.ndarray, num_classes: int | None) -> int:
    """The data set's class count, or where not given enough for every label: AA averages over the
    classes present in the test labels only, so classes without a test image do not change it (any
    class list works)."""
    if num_classes is not None:
        return int(num_classes)
    return int(np.max(labels)) + 1 if len(labels) else 1


def _cell_accuracy(
    counts: np.ndarray, cell_class: np.ndarray, cell_hits: np.ndarray, metric: str, num_classes: int
) -> np.ndarray:
    """OA or AA per row of ``counts`` (R, K): draws per cell (class, a's hit, b's hit)."""
    if metric == "oa":
        return counts @ cell_hits / counts.sum(1)
    onehot = np.eye(num_classes)[cell_class]  # (K, C)
    total = counts @ onehot  # (R, C) draws per class
    right = (counts * cell_hits) @ onehot  # (R, C)
    present = total > 0
    return (right / np.maximum(total, 1) * present).sum(1) / present.sum(1)


def paired_bootstrap(
    labels: np.ndarray, predicted_a: np.ndarray, predicted_b: np.ndarray, **options
) -> BootstrapResult:
    """Percentile interval of metric(B) - metric(A) over paired bootstrap resamples of the test
    images. ``options`` are ``paired_bootstrap_correct``'s: ``metric`` "oa" (overall accuracy) or
    "aa" (average per-class accuracy over the classes present), ``resamples``, ``confidence``,
    ``seed``, ``num_classes``. Seeded; each resample costs O(classes x distinct correctness pairs),
    not O(images)."""
    labels = np.asarray(labels)
    return paired_bootstrap_correct(
        labels, np.asarray(predicted_a) == labels, np.asarray(predicted_b) == labels, **options
    )


def paired_bootstrap_correct(
    labels: np.ndarray,
    correct_a: np.ndarray,
    correct_b: np.ndarray,
    *,
    metric: str = "oa",
    resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
    num_classes: int | None = None,
) -> BootstrapResult:
    """``paired_bootstrap`` on correctness (N,) in [0, 1]: booleans, or fractions of seeds right."""
    _check_metric(metric)
    labels = np.asarray(labels)
    correct_a, correct_b = np.asarray(correct_a, dtype=float), np.asarray(correct_b, dtype=float)
    if not (correct_a.shape == correct_b.shape == labels.shape) or labels.ndim != 1:
        raise ValueError(
            f"labels and correctness must be 1-D and the same length, got {labels.shape}, "
            f"{correct_a.shape}, {correct_b.shape}"
        )
    num_classes = _class_count(labels, num_classes)
    cells = _cells(labels, correct_a, correct_b)
    observed = _observed_difference(cells, metric, num_classes)
    differences = _resampled_differences(cells, metric, resamples, seed, num_classes)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(differences, [tail, 100 - tail])
    return BootstrapResult(metric, observed, float(low), float(high), resamples)


def _cells(
    labels: np.ndarray, correct_a: np.ndarray, correct_b: np.ndarray
) -> tuple[np.ndarray, ...]:
    """(class, a's hit, b's hit) of each distinct cell, and how many images fall in it. A resample's
    OA and AA depend only on how many draws land in each cell, and those counts are multinomial:
    drawing them is the same bootstrap as drawing image indices, in O(cells) per resample."""
    cells, members = np.unique(
        np.stack([np.asarray(labels, dtype=float), correct_a, correct_b], 1),
        axis=0,
        return_inverse=True,
    )
    return (
        cells[:, 0].astype(int),
        cells[:, 1],
        cells[:, 2],
        np.bincount(members.ravel(), minlength=len(cells)),
    )


def _difference(
    cells: tuple[np.ndarray, ...], counts: np.ndarray, metric: str, num_classes: int
) -> np.ndarray:
    """metric(B) - metric(A) for each row of ``counts`` (R, K) over the cells."""
    cell_class, hits_a, hits_b, _ = cells
    return _cell_accuracy(counts, cell_class, hits_b, metric, num_classes) - _cell_accuracy(
        counts, cell_class, hits_a, metric, num_classes
    )


def _observed_difference(cells: tuple[np.ndarray, ...], metric: str, num_classes: int) -> float:
    return float(_difference(cells, cells[3][None].astype(float), metric, num_classes)[0])


def _resampled_differences(
    cells: tuple[np.ndarray, ...], metric: str, resamples: int, seed: int, num_classes: int
) -> np.ndarray:
    """metric(B) - metric(A) over resamples drawn class by class: each class keeps its
    number of test images (the test set's class sizes are fixed by design), and its images
    are drawn with replacement."""
    cell_class, cell_counts = cells[0], cells[3]
    rng = np.random.default_rng(seed)
    counts = np.zeros((resamples, len(cell_class)))
    for k in np.unique(cell_class):
        members = np.flatnonzero(cell_class == k)
        size = int(cell_counts[members].sum())
        counts[:, members] = rng.multinomial(size, cell_counts[members] / size, size=resamples)
    return _difference(cells, counts, metric, num_classes)


def bound_confidence(seeds: int, alpha: float) -> float:
    """One-sided confidence of the upper bound on the seed variance that an interval at level 1 -
    ``alpha`` takes its quantile at: the bound may miss as often as the interval (0.6 ``alpha`` with
    two seeds). Not Berger-Boos (the bound's miss is not added to the level): a plug-in, whose
    worst-case miss over the nuisance ratio, integrated exactly under its own model, is at most
    ``alpha`` at every level checked (``benchmarks/stats_coverage.py --worst-case``)."""
    return 1 - (0.6 if seeds == 2 else 1.0) * alpha


_GRID = 4000  # chi-square quantiles that integrate over the seed-variance estimate


@dataclass(frozen=True)
class PooledResult:
    """Two training methods compared over S seeds (``seed_pooled_interval``)."""

    metric: str
    difference: float  # seed-averaged metric(B) - metric(A)
    low: float  # the interval at the requested confidence
    high: float
    seeds: int
    se: float  # standard error of the difference: sqrt(image_variance + seed_variance / seeds)
    # test-image sampling of the seed-averaged difference, the interaction not counted
    image_variance: float
    # variance of one seed's difference around the method's mean (seed effect + interaction)
    seed_variance: float
    # the part of seed_variance that image-by-seed interaction alone explains
    interaction_variance: float
    ratio: float  # the bound on seed_variance / (seeds * image_variance) the quantile is taken at
    # two-sided, against no difference: below 1 - confidence exactly when the interval excludes 0
    p_value: float

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    @property
    def floor(self) -> float:
        """The interaction's share interaction_variance / (seeds * image_variance): the seed
        variance in the standard error is never below the interaction, and the quantile's
        distribution knows it."""
        if self.image_variance <= 0:
            return 0.0
        return self.interaction_variance / (self.seeds * self.image_variance)

    def quantile(self, probability: float) -> float:
        """Upper ``probability`` quantile of the studentised difference (two-sided: pass 0.975)."""
        return _quantile(self.ratio, self.seeds, probability, self.floor)

    def interval(self, confidence: float) -> tuple[float, float]:
        """The interval at another ``confidence`` (the verdicts read intervals at 1 -
        alpha_j, alpha_j their share of the table's alpha), its seed-variance bound taken at
        that level (``bound_confidence``)."""
        if self.se == 0:
            return self.difference, self.difference
        components = self.image_variance, self.seed_variance, self.interaction_variance
        ratio = _ratio(*components, self.seeds, 1 - confidence)
        half = _quantile(ratio, self.seeds, 0.5 + confidence / 2, self.floor) * self.se
        return self.difference - half, self.difference + half

    def p_equivalence(self, margin: float) -> float:
        """Two one-sided tests against +-margin: p below alpha shows |difference| < margin."""
        if self.se == 0:
            return 0.0 if abs(self.difference) < margin else 1.0
        # H0: difference <= -margin
        lower = _tail(self.ratio, self.seeds, (self.difference + margin) / self.se, self.floor)
        # H0: difference >= +margin
        upper = _tail(self.ratio, self.seeds, (margin - self.difference) / self.se, self.floor)
        return max(lower, upper)

    def p_beyond(self, margin: float) -> float:
        """One-sided p of |difference| <= margin against a difference beyond the
        margin in the observed direction."""
        if self.se == 0:
            return 0.0 if abs(self.difference) > margin else 1.0
        return _tail(self.ratio, self.seeds, (abs(self.difference) - margin) / self.se, self.floor)

    def resolution(self, alpha: float = 0.05, power: float = 0.8) -> float:
        """The smallest true difference this run detects with ``power`` at two-sided ``alpha``."""
        return (self.quantile(1 - alpha / 2) + self.quantile(power)) * self.se


@lru_cache(maxsize=None)
def _chi_points(seeds: int) -> np.ndarray:
    """Equal-probability points of chi2(S-1)/(S-1): the seed-variance estimate over its truth."""
    return chi2.ppf((np.arange(_GRID) + 0.5) / _GRID, seeds - 1) / (seeds - 1)


def _tail(ratio: float, seeds: int, t: float, floor: float = 0.0) -> float:
    """P(T > t) for the studentised difference T = (D - delta) / sqrt(v_img + max(s^2, v_int) / S)
    when the true seed_variance / (S v_img) is ``ratio`` and v_int / (S v_img) is ``floor`` (v_int,
    the interaction, is estimated from (N-1)(S-1) degrees of freedom and taken as known): T = sqrt(1
    + ratio) Z / sqrt(1 + max(ratio U, floor)), U ~ chi2(S-1)/(S-1)."""
    # no image term: the floor can only shorten the tail, so t(S-1) is safe
    if not np.isfinite(ratio):
        return float(student.sf(t, seeds - 1))
    scale = np.sqrt((1 + np.maximum(ratio * _chi_points(seeds), floor)) / (1 + ratio))
    return float(ndtr(-t * scale).mean())


def _quantile(ratio: float, seeds: int, probability: float, floor: float = 0.0) -> float:
    if not np.isfinite(ratio):
        return float(student.ppf(probability, seeds - 1))
    return float(
        brentq(lambda t: _tail(ratio, seeds, t, floor) - (1 - probability), 0.0, 1e4, xtol=1e-7)
    )


def _metric_weights(labels: np.ndarray, metric: str, num_classes: int) -> np.ndarray:
    """Each image's weight in the metric, so that metric(B) - metric(A) = weights @ (correct_b -
    correct_a): 1/N for OA, 1/(classes present x its class's size) for AA."""
    if metric == "oa":
        return np.full(len(labels), 1 / len(labels))
    sizes = np.bincount(labels, minlength=num_classes)
    return 1 / ((sizes > 0).sum() * sizes[labels])


def _variance_components(
    labels: np.ndarray, diff: np.ndarray, weights: np.ndarray
) -> tuple[float, float]:
    """Image and interaction variance of a metric difference from per-seed, per-image differences
    ``diff`` (S, N).

    A two-way layout (images x seeds) within each class: the image term is the spread of the
    seed-averaged differences between images, less the interaction it contains (a class-stratified
    resample of the test images sees both); the interaction comes from the residual mean square.
    Returns (image variance of the seed-averaged metric difference, interaction variance of one
    seed's metric difference)."""
    seeds = diff.shape[0]
    image = interaction = 0.0
    for k in np.unique(labels):
        members = labels == k
        d, n = diff[:, members], int(members.sum())
        if n < 2:
            continue
        per_image = d.mean(0)
        residual_ms = 0.0
        if seeds > 1:
            residual = d - per_image[None] - d.mean(1, keepdims=True) + d.mean()
            residual_ms = float((residual**2).sum()) / ((n - 1) * (seeds - 1))
        spread = float(((per_image - per_image.mean()) ** 2).sum()) / (n - 1)
        weight = weights[members][0]  # the same for every image of a class
        image += n * weight**2 * max(spread - residual_ms / seeds, 0.0)
        interaction += n * weight**2 * residual_ms
    return image, interaction


def seed_pooled_interval(
    labels: np.ndarray,
    correct_a: np.ndarray,
    correct_b: np.ndarray,
    *,
    metric: str = "oa",
    confidence: float = 0.95,
    num_classes: int | None = None,
) -> PooledResult:
    """The method-level interval of the seed-averaged difference metric(B) - metric(A): training
    method B against A, both sources of chance counted, the test images drawn and the training
    seeds.

    ``correct_a`` and ``correct_b`` are (S, N) per-seed correctness, paired seed by seed (A may
    repeat one model, such as a frozen baseline); S >= 2. Per image i and seed s the difference is
    delta + a_i + b_s + g_si, so the seed-averaged difference has variance v_img + v_seed / S, where
    v_seed (seed effect plus interaction) is the spread of the S per-seed differences and v_img the
    image term without the interaction (``_variance_components``). s^2 is floored at the interaction
    estimate v_int (v_seed contains it; a tie of the per-seed differences, common as they are counts
    of images, gives s^2 = 0) in the standard error and in the quantile alike. v_seed rests on S - 1
    degrees of freedom: the quantile is the exact one of the studentised difference at an upper
    confidence bound of the ratio v_seed / (S v_img) (``bound_confidence``). This is a calibrated
    plug-in, not Berger-Boos: its worst-case miss over the nuisance ratio, integrated exactly under
    its own model, is at most 1 - ``confidence`` (``benchmarks/stats_coverage.py --worst-case``),
    and its coverage on simulated test sets is measured by the same benchmark, which
    ``tests/test_stats.py`` checks. With two seeds the interval is wide, honestly. Nothing here is
    random (no resamples, no seed).
    """
    labels = np.asarray(labels)
    correct_a, correct_b = (
        np.atleast_2d(np.asarray(c, dtype=float)) for c in (correct_a, correct_b)
    )
    if correct_a.shape != correct_b.shape or correct_a.shape[1] != len(labels):
        raise ValueError(
            f"per-seed correctness must pair up over the {len(labels)} images, got "
            f"{correct_a.shape} and {correct_b.shape}"
        )
    _check_metric(metric)
    seeds = correct_a.shape[0]
    if seeds < 2:
        raise ValueError(
            "a method-level interval needs two seeds or more; for one model each use "
            "paired_bootstrap_correct"
        )
    labels = labels.astype(int)
    weights = _metric_weights(labels, metric, _class_count(labels, num_classes))
    per_seed = (correct_b - correct_a) @ weights  # OA and AA are linear in per-image correctness
    difference = float(per_seed.mean())
    image_variance, interaction = _variance_components(labels, correct_b - correct_a, weights)
    seed_variance = float(per_seed.var(ddof=1))
    # s^2 below the interaction (a tie of the per-seed differences gives 0) says less than the
    # images do: the standard error uses the same floor as the quantile, so the interval never
    # collapses while images disagree
    return pooled_from_components(
        metric, difference, image_variance, seed_variance, interaction, seeds, confidence
    )


def pooled_from_components(
    metric: str,
    difference: float,
    image_variance: float,
    seed_variance: float,
    interaction: float,
    seeds: int,
    confidence: float = 0.95,
) -> PooledResult:
    """The interval, p-value and plug-in ratio of ``seed_pooled_interval`` from the
    seed-averaged difference and its variance components (what simulations of the statistic
    draw, without drawing test sets)."""
    se, floor = _se_and_floor(image_variance, seed_variance, interaction, seeds)
    if se == 0:
        p_value = 1.0 if difference == 0 else 0.0
        return PooledResult(metric, *[difference] * 3, seeds, *[0.0] * 5, p_value)
    ratio = _ratio(image_variance, seed_variance, interaction, seeds, 1 - confidence)
    half = _quantile(ratio, seeds, 0.5 + confidence / 2, floor) * se
    p_value = min(1.0, 2 * _tail(ratio, seeds, abs(difference) / se, floor))
    return PooledResult(
        metric,
        difference,
        difference - half,
        difference + half,
        seeds,
        se,
        image_variance,
        seed_variance,
        interaction,
        float(ratio),
        p_value,
    )


def _se_and_floor(
    image_variance: float, seed_variance: float, interaction: float, seeds: int
) -> tuple[float, float]:
    """The standard error sqrt(v_img + max(s^2, v_int) / S) and the floor v_int / (S v_img) of the
    plug-in ratio."""
    se = float(np.sqrt(image_variance + max(seed_variance, interaction) / seeds))
    return se, 0.0 if image_variance == 0 else interaction / (seeds * image_variance)


def _ratio(
    image_variance: float, seed_variance: float, interaction: float, seeds: int, alpha: float
) -> float:
    """The plug-in ratio v_seed / (S v_img) the quantile is taken at: an upper confidence bound of
    v_seed (``bound_confidence``) from s^2 floored at the interaction, as in the standard error."""
    if image_variance <= 0:
        return np.inf
    level = bound_confidence(seeds, alpha)
    # s^2 floored at the interaction here too: a tie says the seeds are
    # close, not that they cannot differ
    bound = max(seed_variance, interaction) * (seeds - 1) / chi2.ppf(1 - level, seeds - 1)
    return bound / (seeds * image_variance)


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjustment (1979): adjusted p-values; the family-wise error stays alpha."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p)
    adjusted = np.empty_like(p)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, (len(p) - rank) * p[index])
        adjusted[index] = min(1.0, running)
    return adjusted


def seeds_needed(
    result: PooledResult,
    effect: float,
    *,
    test_images_scale: float = 1.0,
    alpha: float = 0.05,
    power: float = 0.8,
    most: int = 1000,
) -> int | None:
    """The fewest seeds that resolve ``effect`` (the minimum detectable effect at ``power`` falls to
    it) given the variance components ``result`` measured; ``test_images_scale``: test images as a
    multiple of this run's (the image term and the interaction shrink with it, the seed effect does
    not). None where even ``most`` seeds do not (the test set's own sampling is too coarse)."""
    image_variance = result.image_variance / test_images_scale
    interaction = result.interaction_variance / test_images_scale
    seed_variance = max(result.seed_variance - result.interaction_variance, 0.0) + interaction

    def resolves(seeds: int) -> bool:
        # the plug-in ratio a run with these components typically gets (s^2 at its expectation)
        ratio = _ratio(image_variance, seed_variance, interaction, seeds, alpha)
        se, floor = _se_and_floor(image_variance, seed_variance, interaction, seeds)
        return (
            _quantile(ratio, seeds, 1 - alpha / 2, floor) + _quantile(ratio, seeds, power, floor)
        ) * se <= abs(effect)

    if not resolves(most):
        return None
    low, high = 1, most  # resolves(high) holds; the resolution shrinks as seeds grow
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if resolves(middle) else (middle, high)
    return high


# the chance, per claim, of flagging some seed when seed effects are normal (at most)
OUTLIER_ALPHA = 0.05


@dataclass(frozen=True)
class OutlyingSeed:
    """A seed whose difference lies outside its siblings' spread (``outlying_seed``)."""

    index: int  # position among the seeds given
    difference: float  # its difference
    others: float  # the mean difference of the other seeds
    statistic: float  # |difference - others| over its standard error from the others' spread
    p_value: float  # Bonferroni-adjusted over the seeds: below the level it was flagged at


def outlying_seed(
    differences, interaction: float = 0.0, alpha: float = OUTLIER_ALPHA
) -> OutlyingSeed | None:
    """The seed whose per-seed difference is an outlier among its siblings, or None: each seed's
    difference against the mean of the others, over the standard error the others' spread gives it
    (a studentised deleted residual), flagged where its two-sided t(S-2) p-value times S (Bonferroni
    over the seeds) falls below ``alpha``.

    The test-image term is shared by every seed and cancels in a seed's deviation from the others,
    so under normal seed effects (seed effect plus interaction, any seed sd) the statistic is t(S-2)
    and some seed is flagged at most ``alpha`` of the time. The others' variance is floored at
    ``interaction`` (the image-by-seed interaction, which every seed's difference carries): two
    seeds that happen to tie leave no zero scale to flag against, and the floor only lowers the
    statistic. With three seeds the others are two (one degree of freedom): only a seed dozens of
    spreads away is flagged (``benchmarks/README.md``, "Seeds that fail")."""
    d = np.asarray(differences, dtype=float)
    seeds = len(d)
    if seeds < 3:
        return None
    best = None
    for s in range(seeds):
        rest = np.delete(d, s)
        variance = max(float(rest.var(ddof=1)), interaction) * (1 + 1 / (seeds - 1))
        gap = abs(d[s] - rest.mean())
        statistic = gap / np.sqrt(variance) if variance > 0 else (np.inf if gap > 0 else 0.0)
        p = min(1.0, seeds * 2 * float(student.sf(statistic, seeds - 2)))
        if best is None or p < best.p_value:
            best = OutlyingSeed(s, float(d[s]), float(rest.mean()), float(statistic), p)
    return best if best.p_value < alpha else None
