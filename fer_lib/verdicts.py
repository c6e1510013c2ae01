"""How sure a difference is, and what the report concludes from it: per-seed and seed-pooled significance rows
(``fer_lib.stats``), the claims of the paper and beyond, their families, Holm's adjustment and the four verdicts, and the
seeds a claim would need. Everything is read from the run's saved tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fer_lib.report import (
    CALIBRATED,
    COORDS_BRANCH,
    HEATMAP_BRANCH,
    LEARNED,
    PAPER_MODEL,
    read_table,
)

# -- how sure is a difference (fer_lib.stats) -------------------------------------------------------------


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
    """A model against a reference on the same test images: per seed, exact McNemar (discordant counts, p)
    and paired-bootstrap 95% intervals of the OA and AA differences; with two seeds or more, a last row
    ("seed" = "pooled") with the interval of the seed-averaged difference, test-image sampling and the spread
    between seeds both counted (``stats.seed_pooled_interval``; McNemar needs one model per side, so it is
    left empty there).

    ``reference`` is the probabilities (N, 7) of one model (the frozen baseline), or a list with one entry per
    run (a model trained with the same seeds, paired seed by seed).
    """
    from fer_lib.stats import mcnemar_exact

    references = (
        list(reference) if isinstance(reference, (list, tuple)) else [reference] * len(runs)
    )
    if len(references) != len(runs):
        raise ValueError(f"{len(references)} reference predictions for {len(runs)} runs")
    rows, correct, reference_correct = [], [], []
    for run, ref in zip(runs, references):
        correct.append(getattr(run.predictions, head).argmax(1) == labels)
        reference_correct.append(ref.argmax(1) == labels)
        test = mcnemar_exact(correct[-1], reference_correct[-1])
        rows.append(
            {
                "model": name,
                "versus": reference_name,
                "seed": run.seed,
                "only model right": test.only_a_right,
                "only versus right": test.only_b_right,
                "McNemar p": test.p_value,
                **_intervals_of(labels, reference_correct[-1], correct[-1], resamples, run.seed),
            }
        )
    if len(runs) > 1:
        rows.append(
            {
                "model": name,
                "versus": reference_name,
                "seed": POOLED,
                "only model right": np.nan,
                "only versus right": np.nan,
                "McNemar p": np.nan,
                **_intervals_of(
                    labels, np.array(reference_correct), np.array(correct), resamples, 0
                ),
            }
        )
    return rows


def significance_frame(rows: list[dict]) -> pd.DataFrame:
    """``significance_rows`` as a table; the discordant counts stay integers (empty on pooled rows)."""
    frame = pd.DataFrame(rows)
    return frame.astype({"only model right": "Int64", "only versus right": "Int64"})


POOLED_COLUMNS = {
    "p": "p_value",
    "se": "se",
    "image var": "image_variance",
    "seed var": "seed_variance",
    "interaction var": "interaction_variance",
    "ratio": "ratio",
}  # table column suffix -> PooledResult field


def _intervals_of(
    labels: np.ndarray,
    reference_correct: np.ndarray,
    correct: np.ndarray,
    resamples: int,
    seed: int,
) -> dict:
    """Bootstrap intervals of one seed's difference (conditional on the two models), or, for (S, N) per-seed
    correctness, the method-level interval with its variance components (``stats.seed_pooled_interval``)."""
    from fer_lib.stats import paired_bootstrap_correct, seed_pooled_interval

    pooled_row = np.ndim(correct) == 2
    interval = seed_pooled_interval if pooled_row else paired_bootstrap_correct
    row = {}
    for metric in ("OA", "AA"):
        result = interval(
            labels,
            reference_correct,
            correct,
            metric=metric.lower(),
            resamples=resamples,
            seed=seed,
        )
        row.update(
            {
                f"{metric} diff": result.difference,
                f"{metric} 95% low": result.low,
                f"{metric} 95% high": result.high,
            }
        )
        if pooled_row:
            row.update(
                {
                    f"{metric} {column}": getattr(result, field)
                    for column, field in POOLED_COLUMNS.items()
                }
            )
    if pooled_row:
        row["seeds"] = len(correct)
    return row


def pooled_result(row, metric: str = "OA"):
    """The ``stats.PooledResult`` of a pooled row of a significance table."""
    from fer_lib.stats import PooledResult

    return PooledResult(
        metric.lower(),
        float(row[f"{metric} diff"]),
        float(row[f"{metric} 95% low"]),
        float(row[f"{metric} 95% high"]),
        0,
        int(row["seeds"]),
        **{field: float(row[f"{metric} {column}"]) for column, field in POOLED_COLUMNS.items()},
    )


def family_p_values(frame: pd.DataFrame, metric: str = "OA") -> np.ndarray:
    """Holm-adjusted p-values of the pooled rows of a significance table, taken as one family (with one seed: of the
    per-seed rows, from McNemar for OA)."""
    from fer_lib.stats import holm

    rows = pooled(frame)
    column = f"{metric} p" if (frame["seed"].astype(str) == POOLED).any() else "McNemar p"
    return holm(rows[column].to_numpy(dtype=float))


def per_seed(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of a significance table that belong to one seed each."""
    return frame[frame["seed"].astype(str) != POOLED]


def pooled(frame: pd.DataFrame) -> pd.DataFrame:
    """The seed-averaged rows of a significance table (per seed rows when only one seed was run)."""
    rows = frame[frame["seed"].astype(str) == POOLED]
    return rows if len(rows) else frame


def pooled_by(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """The pooled row of each group of a significance table (its only row where one seed was run)."""
    return pd.concat([pooled(group) for _, group in frame.groupby(column, sort=False)])


ALPHA = 0.05
EQUIVALENCE_MARGIN = (
    0.002  # 0.2 points of OA or AA: the smallest difference of interest (MARGIN_REASON)
)
MARGIN_REASON = (
    "0.2 points (6 of RAF-DB's 3,068 test images): below every gain the paper reports for its method (+0.26 OA, +0.61 AA "
    "against the baseline; +0.33 OA against naive fusion), so the paper's own headline would not count as equivalent, and "
    "above what a reader of Table 6's four-digit accuracies would call a difference."
)


@dataclass
class ClaimTest:
    """One claim as a test: the difference it reads (claim direction: ``sign`` +1 when it says "B beats A", -1
    when it says "B is worse"), its p-values, and what it is about (the training method, or the trained models)."""

    claim: str
    family: str  # "primary" (unadjusted), "claims" (Holm over the family), "w" (the w comparisons, their own family)
    sign: int
    p_two: float  # against no difference
    p_equivalence: float  # two one-sided tests against +-EQUIVALENCE_MARGIN (1: not applicable)
    p_beyond: float  # one-sided, that the difference exceeds the margin in its observed direction (1: not applicable)
    difference: float
    low: float
    high: float
    resolution: float  # smallest difference detected with 80% power (nan: not computed)
    about: str
    detail: str
    seeds_right: str = (
        ""  # the conditional tests, per seed: what the trained models themselves show
    )
    result: object = None  # the stats.PooledResult of a method-level claim


def _test_from_rows(
    claim: str, family: str, frame: pd.DataFrame, metric: str = "OA", sign: int = 1
) -> ClaimTest:
    """A claim read from a significance table: its pooled row (method-level) where there is one, else its one seed's
    conditional test (McNemar for OA; the bootstrap interval for AA)."""
    rows = frame[frame["seed"].astype(str) == POOLED]
    seed_rows = per_seed(frame)
    better = sum(1 for _, r in seed_rows.iterrows() if r[f"{metric} 95% low"] > 0)
    worse = sum(1 for _, r in seed_rows.iterrows() if r[f"{metric} 95% high"] < 0)
    seeds_right = f"{better} of {len(seed_rows)} seeds better, {worse} worse (per-seed 95% interval excludes 0)"
    if len(rows):
        row = rows.iloc[0]
        result = pooled_result(row, metric)
        margin = EQUIVALENCE_MARGIN
        return ClaimTest(
            claim,
            family,
            sign,
            result.p_value,
            result.p_equivalence(margin),
            result.p_beyond(margin),
            result.difference,
            result.low,
            result.high,
            result.resolution(),
            f"the training method ({result.seeds} seeds pooled)",
            _intervals(frame, metric),
            seeds_right,
            result,
        )
    row = seed_rows.iloc[0]
    low, high = float(row[f"{metric} 95% low"]), float(row[f"{metric} 95% high"])
    p_two = (
        float(row["McNemar p"])
        if metric == "OA" and pd.notna(row.get("McNemar p", np.nan))
        else (0.0 if low > 0 or high < 0 else 1.0)
    )
    return ClaimTest(
        claim,
        family,
        sign,
        p_two,
        1.0,
        1.0,
        float(row[f"{metric} diff"]),
        low,
        high,
        np.nan,
        f"these trained models (seed {row['seed']}; one seed says nothing about the method)",
        _intervals(frame, metric),
        seeds_right,
    )


def decide(tests: list[ClaimTest], alpha: float = ALPHA) -> list[str]:
    """The verdict of each claim under one rule set (README, "How to read a verdict"):
    - supported / contradicted: the difference differs from zero, in the claim's direction or against it;
    - equivalent: it lies within +-EQUIVALENCE_MARGIN (two one-sided tests); with a difference from zero too,
      "supported, smaller than the margin";
    - "supported, beyond the margin": surely larger than the margin;
    - inconclusive: none of these.
    The primary claim is tested at ``alpha``; the other claims ("claims") are one family, each kind of p-value Holm-
    adjusted over it, so that any false supported/contradicted verdict among them has probability at most alpha."""
    from fer_lib.stats import holm

    adjusted = {}
    family = [i for i, t in enumerate(tests) if t.family == "claims"]
    for kind in ("p_two", "p_equivalence", "p_beyond"):
        values = np.array([getattr(t, kind) for t in tests])
        if family:
            values[family] = holm(values[family])
        adjusted[kind] = values
    verdicts = []
    for i, test in enumerate(tests):
        differs, equivalent, beyond = (
            adjusted[k][i] < alpha for k in ("p_two", "p_equivalence", "p_beyond")
        )
        if differs:
            word = "supported" if np.sign(test.difference) == test.sign else "contradicted"
            verdicts.append(
                word
                + (
                    ", beyond the margin"
                    if beyond
                    else ", smaller than the margin"
                    if equivalent
                    else ""
                )
            )
        else:
            verdicts.append("equivalent" if equivalent else "inconclusive")
    return verdicts


def w_verdict(pairs: pd.DataFrame, alpha: float = ALPHA) -> tuple[str, str]:
    """ "w = 0.6 gives the largest gain", from w = 0.6 minus each other w (pooled rows), the w comparisons one family in
    both directions: supported only if 0.6 beats every other w (an intersection-union test: each at alpha); contradicted
    if some other w beats it with Holm-adjusted p below alpha (a union over the family); equivalent if every other w
    is within the margin of it (intersection-union again); else inconclusive."""
    from fer_lib.stats import holm

    tests = [
        _test_from_rows(f"w = 0.6 vs {r['versus']}", "w", pairs[pairs["versus"] == r["versus"]])
        for _, r in pooled_by(pairs, "versus").iterrows()
    ]
    p_adjusted = holm([t.p_two for t in tests])
    if all(t.p_two < alpha and t.difference > 0 for t in tests):
        verdict = "supported"
    elif any(p < alpha and t.difference < 0 for p, t in zip(p_adjusted, tests)):
        verdict = "contradicted"
    elif all(t.p_equivalence < alpha for t in tests):
        verdict = "equivalent"
    else:
        verdict = "inconclusive"
    detail = "w = 0.6 minus each other w: " + "; ".join(
        f"{t.claim.split(' vs ')[1]}: {t.difference:+.4f} [{t.low:+.4f}, {t.high:+.4f}], Holm p {p:.2g}"
        for t, p in zip(tests, p_adjusted)
    )
    return verdict, detail


def _intervals(frame: pd.DataFrame, metric: str) -> str:
    def seed(r) -> str:
        return "seeds pooled" if str(r["seed"]) == POOLED else f"seed {r['seed']}"

    return "; ".join(
        f"{seed(r)}: {r[f'{metric} diff']:+.4f} [{r[f'{metric} 95% low']:+.4f}, {r[f'{metric} 95% high']:+.4f}]"
        for _, r in frame.iterrows()
    )


PRIMARY_CLAIM = "the proposed fusion beats the baseline in OA"


def claim_tests(tables_dir: Path) -> list[ClaimTest]:
    """Every claim of this run's saved tables as a test (``claims`` decides them): the paper's headline as the
    primary claim, the others as one family."""
    from scipy.stats import binomtest

    tables_dir = Path(tables_dir)

    def read(name):
        return read_table(tables_dir, name)

    tests = []
    if (t := read("significance_proposed")) is not None:
        tests.append(_test_from_rows(PRIMARY_CLAIM, "primary", t, "OA"))
        tests.append(
            _test_from_rows("the proposed fusion beats the baseline in AA", "claims", t, "AA")
        )
    if (t := read("significance_ablation")) is not None:
        tests.append(
            _test_from_rows(
                "weighting by confidence and agreement beats no weighting (OA)",
                "claims",
                t[(t["model"] == "both") & (t["versus"] == "none")],
            )
        )
        tests.append(
            _test_from_rows(
                "naive fusion (no weighting) is worse than the baseline (OA)",
                "claims",
                t[(t["model"] == "none") & (t["versus"] == "baseline")],
                sign=-1,
            )
        )
    if (t := read("table2_contingency")) is not None:
        counts = {(r["RGB"], r["landmark"]): int(r["count"]) for _, r in t.iterrows()}
        only_rgb, only_landmark = counts[("correct", "wrong")], counts[("wrong", "correct")]
        p = (
            binomtest(only_rgb, only_rgb + only_landmark, 0.5).pvalue
            if only_rgb + only_landmark
            else 1.0
        )
        total = sum(counts.values())
        tests.append(
            ClaimTest(
                "the RGB branch alone is more accurate than the landmark branch alone",
                "claims",
                1,
                p,
                1.0,
                1.0,
                (only_rgb - only_landmark) / total,
                np.nan,
                np.nan,
                np.nan,
                "these trained models (first seed; exact McNemar)",
                f"first seed: only RGB right {only_rgb}, only landmarks right {only_landmark}, exact McNemar p = {p:.2g}",
            )
        )
    # beyond the paper (issue 13): each against the paper's proposed model, paired seed by seed
    if (t := read("significance_future_work")) is not None:
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
    "p (Holm in the family)",
    "margin",
    "resolution",
    "about",
    "per seed (the trained models)",
    "detail",
]


def claims(tables_dir: Path) -> pd.DataFrame:
    """One row per claim with a verdict computed from this run's saved tables (``decide``, ``w_verdict``): the
    difference and its 95% interval, the p-value (Holm-adjusted within the family), the equivalence margin, the
    run's resolution (the smallest difference it detects with 80% power) and what the verdict is about."""
    from fer_lib.stats import holm

    tests = claim_tests(tables_dir)
    verdicts = decide(tests)
    family = [i for i, t in enumerate(tests) if t.family == "claims"]
    p_shown = np.array([t.p_two for t in tests])
    if family:
        p_shown[family] = holm(p_shown[family])
    rows = [
        {
            "claim": t.claim,
            "family": t.family,
            "verdict": v,
            "difference": t.difference,
            "95% low": t.low,
            "95% high": t.high,
            "p (Holm in the family)": p,
            "margin": EQUIVALENCE_MARGIN if t.p_equivalence < 1 or "pooled" in t.about else np.nan,
            "resolution": t.resolution,
            "about": t.about,
            "per seed (the trained models)": t.seeds_right,
            "detail": t.detail,
        }
        for t, v, p in zip(tests, verdicts, p_shown)
    ]
    pairs = read_table(Path(tables_dir), "significance_w_pairs")
    if pairs is not None and len(pairs):
        verdict_w, detail = w_verdict(pairs)
        rows.append(
            {
                "claim": "w = 0.6 gives the largest OA gain among the w tried (on the test set)",
                "family": "w",
                "verdict": verdict_w,
                "difference": np.nan,
                "95% low": np.nan,
                "95% high": np.nan,
                "p (Holm in the family)": np.nan,
                "margin": EQUIVALENCE_MARGIN,
                "resolution": np.nan,
                "about": "the training method"
                if (pairs["seed"].astype(str) == POOLED).any()
                else "these trained models",
                "per seed (the trained models)": "",
                "detail": detail,
            }
        )
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)


def plan_rows(tables_dir: Path, effect: float, test_images_scale: float = 1.0) -> pd.DataFrame:
    """For every method-level claim of a finished run: its measured variance components, its resolution, and the
    seeds that would resolve ``effect`` (``stats.seeds_needed``) at ``test_images_scale`` times this run's test images."""
    from fer_lib.stats import seeds_needed

    rows = []
    for t in claim_tests(tables_dir):
        if t.result is None:
            continue
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
