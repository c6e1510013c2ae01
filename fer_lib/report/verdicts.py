"""How sure a difference is, and what the report concludes from it: per-seed and seed-pooled
significance rows (``fer_lib.evaluation.stats``), the claims of the paper and beyond, their
families, Holm's adjustment and the four verdicts, and the seeds a claim would need. Everything is
read from the run's saved tables.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import binomtest, norm

from fer_lib.data.rafdb import paper_results
from fer_lib.evaluation.stats import (
    PooledResult,
    holm,
    mcnemar_exact,
    outlying_seed,
    paired_bootstrap_correct,
    pooled_from_components,
    seed_pooled_interval,
    seeds_needed,
)
from fer_lib.report.tables import (
    CALIBRATED,
    COORDS_BRANCH,
    HEATMAP_BRANCH,
    LEARNED,
    PAPER_MODEL,
    read_table,
)
from fer_lib.settings import PAPER_W

POOLED = "pooled"  # the "seed" of a significance row over all seeds


def significance_rows(
    name: str,
    labels: np.ndarray,
    reference,
    runs,
    head: str = "fused",
    reference_name: str = "baseline",
    resamples: int = 10_000,
) -> list[dict]:
    """A model against a reference on the same test images: per seed, exact McNemar (discordant
    counts, p) and paired-bootstrap 95% intervals of the OA and AA differences; with two seeds or
    more, a last row ("seed" = "pooled") with the interval of the seed-averaged difference,
    test-image sampling and the spread between seeds both counted (``stats.seed_pooled_interval``;
    McNemar needs one model per side, so it is left empty there).

    ``reference`` is the probabilities (N, 7) of one model (the frozen baseline), or a list with one
    entry per run (a model trained with the same seeds, paired seed by seed).
    """
    references = (
        list(reference) if isinstance(reference, (list, tuple)) else [reference] * len(runs)
    )
    if len(references) != len(runs):
        raise ValueError(f"{len(references)} reference predictions for {len(runs)} runs")
    pair = {"model": name, "versus": reference_name}
    rows, correct, reference_correct = [], [], []
    for run, ref in zip(runs, references):
        correct.append(getattr(run.predictions, head).argmax(1) == labels)
        reference_correct.append(ref.argmax(1) == labels)
        test = mcnemar_exact(correct[-1], reference_correct[-1])
        rows.append(
            {
                **pair,
                "seed": run.seed,
                "only model right": test.only_a_right,
                "only versus right": test.only_b_right,
                "McNemar p": test.p_value,
                **_intervals_of(labels, reference_correct[-1], correct[-1], resamples, run.seed),
            }
        )
    if len(runs) > 1:
        no_mcnemar = dict.fromkeys(("only model right", "only versus right", "McNemar p"), np.nan)
        intervals = _intervals_of(
            labels, np.array(reference_correct), np.array(correct), resamples, 0
        )
        rows.append({**pair, "seed": POOLED, **no_mcnemar, **intervals})
    return rows


def significance_frame(rows: list[dict]) -> pd.DataFrame:
    """``significance_rows`` as a table; the discordant counts stay integers (empty on pooled
    rows)."""
    return pd.DataFrame(rows).astype({"only model right": "Int64", "only versus right": "Int64"})


# table column suffix -> PooledResult field
POOLED_COLUMNS = {
    "p": "p_value",
    "se": "se",
    "image var": "image_variance",
    "seed var": "seed_variance",
    "interaction var": "interaction_variance",
    "ratio": "ratio",
}


def _intervals_of(labels, reference_correct, correct, resamples: int, seed: int) -> dict:
    """Bootstrap intervals of one seed's difference (conditional on the two models), or, for (S, N)
    per-seed correctness, the method-level interval with its variance components
    (``stats.seed_pooled_interval``)."""
    pooled_row = np.ndim(correct) == 2
    # the pooled interval is computed, not resampled: it takes no resamples and no seed
    interval = (
        seed_pooled_interval
        if pooled_row
        else partial(paired_bootstrap_correct, resamples=resamples, seed=seed)
    )
    row = {}
    for metric in ("OA", "AA"):
        result = interval(labels, reference_correct, correct, metric=metric.lower())
        row[f"{metric} diff"] = result.difference
        row[f"{metric} 95% low"], row[f"{metric} 95% high"] = result.low, result.high
        if pooled_row:
            for column, field in POOLED_COLUMNS.items():
                row[f"{metric} {column}"] = getattr(result, field)
    if pooled_row:
        row["seeds"] = len(correct)
        # what the seeds vary: with one fixed reference (the frozen baseline) the interval holds the
        # trained part's seed variation only, and the claim is about that part on this reference
        same = bool((np.asarray(reference_correct) == np.asarray(reference_correct)[0]).all())
        row["versus per seed"] = VERSUS_FIXED if same else VERSUS_RETRAINED
    return row


VERSUS_FIXED, VERSUS_RETRAINED = "one fixed model", "one per seed"


def about_pooled(row, seeds: int) -> str:
    """What a method-level claim is about, in words: which part of the pipeline its seeds vary."""
    versus = str(row.get("versus", "the reference"))
    return {
        VERSUS_FIXED: f"the trained part over {seeds} seeds, on one fixed {versus} (its own "
        "training chance not counted)",
        VERSUS_RETRAINED: f"both methods over {seeds} paired seeds (the reference, {versus}, "
        "retrained per seed)",
    }.get(row.get("versus per seed"), f"the training method ({seeds} seeds pooled)")


def pooled_result(row, metric: str = "OA"):
    """The ``stats.PooledResult`` of a pooled row of a significance table."""
    return PooledResult(
        metric.lower(),
        float(row[f"{metric} diff"]),
        float(row[f"{metric} 95% low"]),
        float(row[f"{metric} 95% high"]),
        int(row["seeds"]),
        **{field: float(row[f"{metric} {column}"]) for column, field in POOLED_COLUMNS.items()},
    )


def family_p_values(frame: pd.DataFrame, metric: str = "OA") -> np.ndarray:
    """Holm-adjusted p-values of the pooled rows of a significance table, taken as one family (with
    one seed: of the per-seed rows, from McNemar for OA)."""
    column = f"{metric} p" if _is_pooled(frame).any() else "McNemar p"
    return holm(pooled(frame)[column].to_numpy(dtype=float))


def _is_pooled(frame: pd.DataFrame) -> pd.Series:
    return frame["seed"].astype(str) == POOLED


def per_seed(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of a significance table that belong to one seed each."""
    return frame[~_is_pooled(frame)]


def pooled(frame: pd.DataFrame) -> pd.DataFrame:
    """The seed-averaged rows of a significance table (per seed rows when only one seed was run)."""
    rows = frame[_is_pooled(frame)]
    return rows if len(rows) else frame


def pooled_by(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """The pooled row of each group of a significance table (its only row where one seed was
    run)."""
    return pd.concat([pooled(group) for _, group in frame.groupby(column, sort=False)])


ALPHA = 0.05
# 0.2 points of OA or AA: the smallest difference of interest (MARGIN_REASON)
EQUIVALENCE_MARGIN = 0.002
MARGIN_REASON = (
    "0.2 points (6 of RAF-DB's 3,068 test images): below every gain the paper reports for its "
    "method (+0.26 OA, +0.61 AA against the baseline; +0.33 OA against naive fusion), so the "
    "paper's own headline would not count as equivalent, and above what a reader of Table 6's "
    "four-digit accuracies would call a difference."
)


@dataclass
class ClaimTest:
    """One claim as a test: the difference it reads (claim direction: ``sign`` +1 when it says "B
    beats A", -1 when it says "B is worse"), its p-values, and what it is about (the training
    method, or the trained models)."""

    claim: str
    family: str  # "primary", "claims", or "w" (the w comparisons)
    sign: int
    p_two: float  # against no difference
    p_equivalence: float  # two one-sided tests against +-EQUIVALENCE_MARGIN (1: not applicable)
    p_beyond: float  # one-sided: beyond the margin in the observed direction (1: not applicable)
    difference: float
    low: float
    high: float
    resolution: float  # smallest difference detected with 80% power (nan: not computed)
    about: str
    detail: str
    # the conditional tests, per seed: what the trained models themselves show
    seeds_right: str = ""
    result: object = None  # the stats.PooledResult of a method-level claim
    seed_differences: tuple = ()  # (seed, its difference) of each seed of a method-level claim


def _test_from_rows(
    claim: str, family: str, frame: pd.DataFrame, metric: str = "OA", sign: int = 1
) -> ClaimTest:
    """A claim read from a significance table: its pooled row (method-level) where there is one,
    else its one seed's conditional test (McNemar for OA; the bootstrap interval for AA)."""
    seed_rows = per_seed(frame)
    above = int((seed_rows[f"{metric} 95% low"] > 0).sum())
    below = int((seed_rows[f"{metric} 95% high"] < 0).sum())
    with_claim, against = (above, below) if sign > 0 else (below, above)
    seeds_right = (
        f"{with_claim} of {len(seed_rows)} seeds as claimed, {against} against "
        "(per-seed 95% interval excludes 0)"
    )
    common = dict(
        claim=claim,
        family=family,
        sign=sign,
        detail=_intervals(frame, metric),
        seeds_right=seeds_right,
    )
    pooled = frame[_is_pooled(frame)]
    if len(pooled):
        row = pooled.iloc[0]
        result = pooled_result(row, metric)
        return ClaimTest(
            **common,
            **_read_off(result),
            resolution=result.resolution(),
            about=about_pooled(row, result.seeds),
            seed_differences=tuple(
                (r["seed"], float(r[f"{metric} diff"])) for _, r in seed_rows.iterrows()
            ),
        )
    row = seed_rows.iloc[0]
    difference, low, high = (float(row[f"{metric} {c}"]) for c in ("diff", "95% low", "95% high"))
    p_two = (
        float(row["McNemar p"])
        if metric == "OA" and pd.notna(row.get("McNemar p", np.nan))
        else _p_from_interval(difference, low, high)
    )
    return ClaimTest(
        **common,
        p_two=p_two,
        p_equivalence=1.0,
        p_beyond=1.0,
        difference=difference,
        low=low,
        high=high,
        resolution=np.nan,
        about=f"these trained models (seed {row['seed']}; one seed says nothing about the method)",
    )


def _p_from_interval(difference: float, low: float, high: float) -> float:
    """A two-sided p-value from a bootstrap 95% interval (normal approximation), so that a one-seed
    claim without an exact test can be read at its share of the table's alpha."""
    se = (high - low) / (2 * norm.ppf(0.975))
    if se <= 0:
        return 1.0 if difference == 0 else 0.0
    return float(2 * norm.sf(abs(difference) / se))


MIN_SEEDS = 3  # fewer seeds give a method-level interval but no method-level verdict


def _too_few_seeds(test: ClaimTest) -> bool:
    return test.result is not None and test.result.seeds < MIN_SEEDS


def per_seed_only(seeds: int) -> str:
    """The verdict of a method-level claim run with too few seeds to check anything about the seed
    distribution."""
    return f"inconclusive ({seeds} seeds: per-seed only)"


def table_levels(tests: list[ClaimTest], alpha: float = ALPHA) -> np.ndarray:
    """Each test's share alpha_j of the table's ``alpha`` (Bonferroni): the primary claim gets alpha
    / 2 where other tests issue words (all of alpha alone), the others share the rest equally, the w
    comparisons among them; a claim with fewer than ``MIN_SEEDS`` seeds issues no word and gets 0.
    Every word of a claim is read off its interval at 1 - alpha_j, so some false word anywhere in
    the table needs some interval to miss: at most alpha."""
    tested = np.array([not _too_few_seeds(t) for t in tests])
    primary = tested & np.array([t.family == "primary" for t in tests])
    others = tested & ~primary
    levels = np.zeros(len(tests))
    if not tested.any():
        return levels
    share = alpha / 2 if primary.any() and others.any() else alpha
    levels[primary] = share
    levels[others] = (alpha - primary.any() * share) / others.sum() if others.any() else 0
    return levels


def _words(low: float, high: float, sign: int, margin: float = EQUIVALENCE_MARGIN) -> str:
    """The verdict words an interval says: supported / contradicted when it excludes 0, with "beyond
    the margin" when it lies beyond +-margin and "smaller than the margin" when within it;
    equivalent when it lies within +-margin but holds 0; inconclusive otherwise."""
    within = -margin < low and high < margin
    beyond = low > margin or high < -margin
    return _verdict(low > 0 or high < 0, np.sign(low + high) == sign, beyond, within)


def _verdict(differs: bool, as_claimed: bool, beyond: bool, within: bool) -> str:
    """The words of a difference found (or not), in the claimed direction (or not), beyond or
    within the margin."""
    if not differs:
        return "equivalent" if within else "inconclusive"
    word = "supported" if as_claimed else "contradicted"
    return word + (
        ", beyond the margin" if beyond else ", smaller than the margin" if within else ""
    )


def decide(tests: list[ClaimTest], alpha: float = ALPHA) -> list[str]:
    """The verdict of each test under one family-wise error rate ``alpha`` for the whole table
    (README, "How to read a verdict"): its words read off its interval at 1 - alpha_j
    (``table_levels``). Tests without a ``result`` (one seed, or an exact McNemar) read their
    p-values: differs at p_two < alpha_j, equivalent and beyond at their one-sided p < alpha_j / 2
    (the same as an interval at 1 - alpha_j)."""
    verdicts = []
    for test, level in zip(tests, table_levels(tests, alpha)):
        if _too_few_seeds(test):
            verdicts.append(per_seed_only(test.result.seeds))
        elif test.result is not None:
            verdicts.append(_words(*test.result.interval(1 - level), test.sign))
        else:
            as_claimed = np.sign(test.difference) == test.sign
            equivalent, beyond = test.p_equivalence < level / 2, test.p_beyond < level / 2
            verdicts.append(_verdict(test.p_two < level, as_claimed, beyond, equivalent))
    return verdicts


def outlying_seed_note(test: ClaimTest, level: float) -> str:
    """The column "outlying seed": empty, or the seed whose difference is an outlier among its
    siblings (``stats.outlying_seed``, from the per-seed rows and the pooled row's interaction), its
    difference, and the verdict the claim would get without it. That verdict is ``decide``'s at the
    claim's own share of the table's alpha (``level``) on the pooled interval recomputed from the
    other seeds' differences, with the pooled row's image and interaction variances (neither depends
    on how many seeds are run)."""
    if test.result is None or level == 0 or len(test.seed_differences) < MIN_SEEDS:
        return ""
    seeds, differences = zip(*test.seed_differences)
    found = outlying_seed(differences, test.result.interaction_variance)
    if found is None:
        return ""
    rest = np.delete(np.asarray(differences, dtype=float), found.index)
    note = (
        f"seed {seeds[found.index]}: {found.difference:+.4f} against {found.others:+.4f} for the "
        f"other {len(rest)} (p = {found.p_value:.2g}, adjusted over {len(seeds)} seeds)"
    )
    if len(rest) < MIN_SEEDS:
        return note + (
            f"; without it {len(rest)} seeds remain, too few for a method-level verdict "
            "(per-seed only)"
        )
    result = test.result
    without = pooled_from_components(
        result.metric,
        float(rest.mean()),
        result.image_variance,
        float(rest.var(ddof=1)),
        result.interaction_variance,
        len(rest),
    )
    word = decide([_without(test, without)], alpha=level)[0]
    low, high = without.interval(1 - level)
    return (
        note + f"; without it: {word}, {without.difference:+.4f} [{low:+.4f}, {high:+.4f}] at "
        f"{100 * (1 - level):.3g}%"
    )


def _read_off(result: PooledResult) -> dict:
    """The fields of a ``ClaimTest`` a pooled result gives."""
    return dict(
        p_two=result.p_value,
        p_equivalence=result.p_equivalence(EQUIVALENCE_MARGIN),
        p_beyond=result.p_beyond(EQUIVALENCE_MARGIN),
        difference=result.difference,
        low=result.low,
        high=result.high,
        result=result,
    )


def _without(test: ClaimTest, result) -> ClaimTest:
    """``test`` read off another pooled result (its seeds less one)."""
    return replace(test, **_read_off(result))


W_CLAIM = f"w = {PAPER_W:g} gives the largest OA gain among the w tried (on the test set)"


def w_tests(pairs: pd.DataFrame) -> list[ClaimTest]:
    """The paper's w minus each other w (pooled rows) as tests of the family "w"."""
    return [
        _test_from_rows(
            f"w = {PAPER_W:g} vs {r['versus']}", "w", pairs[pairs["versus"] == r["versus"]]
        )
        for _, r in pooled_by(pairs, "versus").iterrows()
    ]


def w_verdict(tests: list[ClaimTest], words: list[str]) -> tuple[str, str]:
    """ "The paper's w gives the largest gain", from the words ``decide`` gave it minus each other w
    (each read at its share of the table's alpha): supported only if it beats every other w (an
    intersection-union test); contradicted if some other w beats it; equivalent if every other w is
    within the margin of it; else inconclusive."""
    if any(_too_few_seeds(t) for t in tests):
        verdict = per_seed_only(min(t.result.seeds for t in tests if t.result is not None))
    elif all(w.startswith("supported") for w in words):
        verdict = "supported"
    elif any(w.startswith("contradicted") for w in words):
        verdict = "contradicted"
    elif all(w == "equivalent" or "smaller than the margin" in w for w in words):
        verdict = "equivalent"
    else:
        verdict = "inconclusive"
    detail = f"w = {PAPER_W:g} minus each other w: " + "; ".join(
        f"{t.claim.split(' vs ')[1]}: {t.difference:+.4f} [{t.low:+.4f}, {t.high:+.4f}], p "
        f"{t.p_two:.2g}, {w}"
        for t, w in zip(tests, words)
    )
    return verdict, detail


def _intervals(frame: pd.DataFrame, metric: str) -> str:
    def seed(r) -> str:
        return "seeds pooled" if str(r["seed"]) == POOLED else f"seed {r['seed']}"

    return "; ".join(
        f"{seed(r)}: {r[f'{metric} diff']:+.4f} [{r[f'{metric} 95% low']:+.4f}, "
        f"{r[f'{metric} 95% high']:+.4f}]"
        for _, r in frame.iterrows()
    )


PRIMARY_CLAIM = "the proposed fusion beats the baseline in OA"
AA_CLAIM = "the proposed fusion beats the baseline in AA"
WEIGHTING_CLAIM = "weighting by confidence and agreement beats no weighting (OA)"


def claim_tests(tables_dir: Path) -> list[ClaimTest]:
    """Every claim of this run's saved tables as a test: the paper's headline as the primary claim,
    the others as one family."""
    tests = []
    if (t := read_table(tables_dir, "significance_proposed")) is not None:
        tests.append(_test_from_rows(PRIMARY_CLAIM, "primary", t, "OA"))
        tests.append(_test_from_rows(AA_CLAIM, "claims", t, "AA"))
    if (t := read_table(tables_dir, "significance_ablation")) is not None:
        for model, versus, claim, sign in (
            ("both", "none", WEIGHTING_CLAIM, 1),
            ("none", "baseline", "naive fusion (no weighting) is worse than the baseline (OA)", -1),
        ):
            pair = t[(t["model"] == model) & (t["versus"] == versus)]
            tests.append(_test_from_rows(claim, "claims", pair, sign=sign))
    if (t := read_table(tables_dir, "table2_contingency")) is not None:
        counts = {(r["RGB"], r["landmark"]): int(r["count"]) for _, r in t.iterrows()}
        only_rgb, only_landmark = counts[("correct", "wrong")], counts[("wrong", "correct")]
        p = (
            binomtest(only_rgb, only_rgb + only_landmark, 0.5).pvalue
            if only_rgb + only_landmark
            else 1.0
        )
        total = sum(counts.values())
        claim = "the RGB branch alone is more accurate than the landmark branch alone"
        difference = (only_rgb - only_landmark) / total
        detail = (
            f"first seed: only RGB right {only_rgb}, only landmarks right {only_landmark}, "
            f"exact McNemar p = {p:.2g}"
        )
        about = "these trained models (first seed; exact McNemar)"
        no_interval = (np.nan, np.nan, np.nan)  # low, high, resolution
        tests.append(
            ClaimTest(claim, "claims", 1, p, 1.0, 1.0, difference, *no_interval, about, detail)
        )
    # beyond the paper (issue 13): each against the paper's proposed model, paired seed by seed
    if (t := read_table(tables_dir, "significance_future_work")) is not None:
        for model, versus, claim in (
            (LEARNED, PAPER_MODEL, "a learned weighting beats the paper's (OA)"),
            (CALIBRATED, PAPER_MODEL, "a calibrated confidence beats the paper's weighting (OA)"),
            (HEATMAP_BRANCH, COORDS_BRANCH, "the heatmap CNN beats coordinates (fused OA)"),
        ):
            pair = t[(t["model"] == model) & (t["versus"] == versus)]
            if len(pair):
                tests.append(_test_from_rows(claim, "claims", pair))
    return tests


CLAIM_COLUMNS = [
    "claim",
    "family",
    "verdict",
    "difference",
    "95% low",
    "95% high",
    "p (unadjusted)",
    "verdict's interval",
    "margin",
    "resolution",
    "about",
    "per seed (the trained models)",
    "detail",
    "outlying seed",
]


def _verdict_interval(test: ClaimTest, level: float) -> str:
    """The interval the verdict reads, at its share of the table's alpha."""
    if level == 0:
        return "no method-level verdict"
    if test.result is None:
        return f"p < {level:.2g} to differ"
    low, high = test.result.interval(1 - level)
    return f"[{low:+.4f}, {high:+.4f}] at {100 * (1 - level):.3g}%"


def claims(tables_dir: Path) -> pd.DataFrame:
    """One row per claim with a verdict computed from this run's saved tables (``decide``), the
    interval it reads, the run's resolution (the smallest difference it detects with 80% power),
    what the verdict is about, and any outlying seed (``outlying_seed_note``)."""
    tests = claim_tests(tables_dir)
    pairs = read_table(Path(tables_dir), "significance_w_pairs")
    comparisons = w_tests(pairs) if pairs is not None and len(pairs) else []
    everything = tests + comparisons
    words = decide(everything)
    levels = table_levels(everything)
    rows = [
        {
            "claim": t.claim,
            "family": t.family,
            "verdict": v,
            "difference": t.difference,
            "95% low": t.low,
            "95% high": t.high,
            "p (unadjusted)": t.p_two,
            "verdict's interval": _verdict_interval(t, level),
            # a method-level claim is always read against the margin (its
            # "about" no longer says "pooled")
            "margin": EQUIVALENCE_MARGIN if t.p_equivalence < 1 or t.result is not None else np.nan,
            "resolution": t.resolution,
            "about": t.about,
            "per seed (the trained models)": t.seeds_right,
            "detail": t.detail,
            "outlying seed": outlying_seed_note(t, level),
        }
        for t, v, level in zip(tests, words, levels)
    ]
    if comparisons:
        verdict_w, detail = w_verdict(comparisons, words[len(tests) :])
        w_levels = list(zip(comparisons, levels[len(tests) :]))
        # no difference, interval, p or resolution of its own: those cells stay empty
        rows.append(
            {
                "claim": W_CLAIM,
                "family": "w",
                "verdict": verdict_w,
                "verdict's interval": "; ".join(_verdict_interval(t, lv) for t, lv in w_levels),
                "margin": EQUIVALENCE_MARGIN,
                "about": comparisons[0].about,
                "per seed (the trained models)": "; ".join(
                    f"{t.claim}: {t.seeds_right}" for t in comparisons
                ),
                "detail": detail,
                "outlying seed": "; ".join(
                    f"{t.claim}: {note}"
                    for t, lv in w_levels
                    if (note := outlying_seed_note(t, lv))
                ),
            }
        )
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)


def _paper_gains() -> dict[str, float]:
    """The paper's own gain for each claim it makes a number for (Tables 6 and 8, RAF-DB)."""
    paper = paper_results()
    table6, table8 = paper["table6_overall"], paper["table8_ablation_overall"]
    return {
        PRIMARY_CLAIM: table6["proposed"]["oa_top1"] - table6["baseline"]["oa_top1"],
        AA_CLAIM: table6["proposed"]["aa"] - table6["baseline"]["aa"],
        WEIGHTING_CLAIM: table8["both"]["oa_top1"] - table8["none"]["oa_top1"],
    }


def _method_level(tables_dir: Path) -> list[ClaimTest]:
    return [t for t in claim_tests(tables_dir) if t.result is not None]


def resolvable_rows(tables_dir: Path, power: float = 0.8, alpha: float = ALPHA) -> pd.DataFrame:
    """What this run's test set can resolve, however many seeds are trained: with unlimited seeds
    the seed term vanishes and the standard error falls to the test images' own term, so the
    smallest difference detected with ``power`` at two-sided ``alpha`` is (z_(1-alpha/2) + z_power)
    * sqrt(image variance). Beside each claim's paper gain, and the test images that gain would need
    (the image term shrinks as 1/N)."""
    gains = _paper_gains()
    rows = []
    for t in _method_level(tables_dir):
        if t.claim not in gains:
            continue
        floor = (norm.ppf(1 - alpha / 2) + norm.ppf(power)) * np.sqrt(t.result.image_variance)
        gain = gains[t.claim]
        rows.append(
            {
                "claim": t.claim,
                "paper's gain": gain,
                "resolvable with unlimited seeds": floor,
                "resolved by this test set": "yes" if abs(gain) >= floor else "no",
                "test images needed (x this run's)": (floor / gain) ** 2 if gain else np.inf,
            }
        )
    return pd.DataFrame(rows)


def plan_rows(tables_dir: Path, effect: float, test_images_scale: float = 1.0) -> pd.DataFrame:
    """For every method-level claim of a finished run: its measured variance components, its
    resolution, and the seeds that would resolve ``effect`` (``stats.seeds_needed``) at
    ``test_images_scale`` times this run's test images."""
    rows = []
    for t in _method_level(tables_dir):
        needed = seeds_needed(t.result, effect, test_images_scale=test_images_scale)
        rows.append(
            {
                "claim": t.claim,
                "seeds run": t.result.seeds,
                "difference": t.difference,
                "se, test images (points)": 100 * np.sqrt(t.result.image_variance),
                "sd between seeds (points)": 100 * np.sqrt(t.result.seed_variance),
                "resolution now": t.resolution,
                "target effect": effect,
                "seeds needed": needed
                if needed is not None
                else "none suffices: the test set is too small",
            }
        )
    return pd.DataFrame(rows)
