"""Do a run's findings hold with other seeds or on another CPU? Two finished runs side by side
(their headline numbers and verdicts), a run's replicate found among its siblings, and the
comparison recorded with the figures.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from fer_lib.report.verdicts import EQUIVALENCE_MARGIN, MARGIN_REASON, PRIMARY_CLAIM
from fer_lib.settings import PAPER_W

HEADLINE_TOLERANCE = 0.01  # headline OA values of two runs of one profile must agree within this


def run_records(run_dir: Path) -> tuple[dict, dict]:
    """A run's run_info.json and settings.json ({} for one it lacks)."""
    return tuple(
        json.loads(path.read_text()) if path.exists() else {}
        for path in (run_dir / "run_info.json", run_dir / "settings.json")
    )


def _run_summary(run_dir: Path) -> dict:
    """The verdicts and headline numbers of one finished run, read from its saved tables and
    run_info.json."""
    run_dir = Path(run_dir)
    tables = run_dir / "tables"
    missing = [
        name
        for name in ("claims.csv", "table6_overall.csv", "branch_accuracy.csv")
        if not (tables / name).exists()
    ]
    if missing:
        raise FileNotFoundError(
            f"{run_dir} has no finished report ({', '.join(missing)} missing in {tables}); run "
            "./run_all.sh for it first"
        )
    info, settings = run_records(run_dir)
    table6 = pd.read_csv(tables / "table6_overall.csv").set_index("model")
    branch = pd.read_csv(tables / "branch_accuracy.csv")
    claims_frame = pd.read_csv(tables / "claims.csv")
    return {
        "run": run_dir.name,
        "cpu": info.get("cpu", "unknown"),
        # another precision path gives other numbers, which must not change a verdict
        "path": f"{info.get('device', 'cpu')}, {info.get('cpu_path', 'unknown')}",
        "commit": info.get("commit", "unknown"),
        "seeds": ", ".join(map(str, seed_list(settings))),
        "headline": {
            "baseline OA": float(table6.loc["baseline", "oa_top1"]),
            "proposed OA": float(table6.loc["proposed", "oa_top1"]),
        },
        "also": {
            "landmark-only OA": float(branch["landmark only"].mean()),
            "baseline AA": float(table6.loc["baseline", "aa"]),
            "proposed AA": float(table6.loc["proposed", "aa"]),
        },
        "verdicts": dict(zip(claims_frame["claim"], claims_frame["verdict"])),
    }


def seed_list(settings: dict) -> list[int]:
    """The training seeds of a run, from its settings.json."""
    offset, seeds = int(settings.get("seed_offset", 0)), int(settings.get("seeds", 0))
    return list(range(offset, offset + seeds))


def verdict_agreement(verdicts: list[str]) -> str:
    """Whether the verdicts of one claim in several runs agree: "same"; "compatible" where only
    inconclusive ones differ from the rest; "conflict" where one run supports what another
    contradicts, or finds equivalence where another finds a difference beyond the margin."""
    if len(set(verdicts)) == 1:
        return "same"
    words = {v.split(",")[0] for v in verdicts}
    equal = any(v == "equivalent" or "smaller than the margin" in v for v in verdicts)
    beyond = any("beyond the margin" in v for v in verdicts)
    if {"supported", "contradicted"} <= words or (equal and beyond) or "missing" in words:
        return "conflict"
    return "compatible"


def agreement_counts(table: pd.DataFrame) -> str:
    """How the claims of a ``stability_table`` agree, each kind counted on its own: "compatible"
    (one run decided, another inconclusive) is not agreement, nor counted as the same verdict."""
    claims_rows = table[table["quantity"].astype(str).str.startswith("claim: ")]["agree"]
    counts = {kind: int((claims_rows == kind).sum()) for kind in ("same", "compatible", "conflict")}
    return (
        f"{counts['same']} verdict(s) the same, {counts['compatible']} compatible (decided in one "
        f"run, inconclusive in another), {counts['conflict']} conflicting"
    )


def stability_table(run_dirs: list[Path]) -> pd.DataFrame:
    """One row per headline number and per claim: each run's value or verdict, and whether they
    agree (``verdict_agreement``; Table 6's OA values within ``HEADLINE_TOLERANCE``). The first rows
    name each run's CPU, device and precision path, commit and seeds; landmark-only OA and AA are
    shown with their spread, unjudged."""
    runs = [_run_summary(d) for d in run_dirs]
    names = [r["run"] for r in runs]

    def row(quantity: str, values: list, agree: str = "") -> dict:
        return {"quantity": quantity, **dict(zip(names, values)), "agree": agree}

    rows = [
        row(quantity, [r[key] for r in runs])
        for quantity, key in (
            ("CPU", "cpu"),
            ("device, CPU precision path", "path"),
            ("commit", "commit"),
            ("training seeds", "seeds"),
        )
    ]
    for group in ("headline", "also"):
        for key in runs[0][group]:
            values = [r[group][key] for r in runs]
            spread = max(values) - min(values)
            agree = f"(spread {spread:.4f})"
            if group == "headline":  # the rest is shown, not judged
                agree = "yes" if spread <= HEADLINE_TOLERANCE else f"no {agree}"
            rows.append(row(key, [f"{v:.4f}" for v in values], agree))
    for claim in runs[0]["verdicts"]:
        verdicts = [r["verdicts"].get(claim, "missing") for r in runs]
        rows.append(row(f"claim: {claim}", verdicts, verdict_agreement(verdicts)))
    return pd.DataFrame(rows)


VERDICT_RULES = f"""\
**How to read a verdict.** Each claim compares two models on the same test images, each trained with
several seeds. What the seeds vary is in the *about* column: with one frozen RGB network shared by
every seed (the paper's design, and the demo's), only the landmark branch is retrained, so the claim
is about fusion onto that network and the baseline's own training chance is not in the interval
(`--set baseline_per_seed=true` retrains it per seed). The verdict reads the *method-level* interval
(the seeds pooled): it counts both sources of chance, the test images drawn and the training seeds,
from variance components (image, seed, their interaction counted once), with a quantile that knows
how few seeds there are. It is a calibrated plug-in: its worst-case miss over the unknown ratio of
seed to image variance, integrated exactly under its model, is at most its nominal level, and its
coverage was measured by simulation with known truth (`benchmarks/stats_coverage.py`).
- **supported** / **contradicted**: the difference is surely on the claim's side of zero, or on the
  other side;
- **equivalent**: the difference lies within +-{100 * EQUIVALENCE_MARGIN:.1f} points, the smallest
  difference of interest (two one-sided tests); "supported, smaller than the margin" and "supported,
  beyond the margin" say both;
- **inconclusive**: none of these. The column *resolution* says the smallest difference the run
  would detect (80% power): an inconclusive verdict with a resolution of 2 points says nothing about
  a 0.3-point effect.

The margin: {MARGIN_REASON}

One error rate for the whole table: every verdict word (supported, contradicted, equivalent, beyond
or smaller than the margin) is read off the claim's interval at its share of 5% (Bonferroni: the
paper's headline, "{PRIMARY_CLAIM}", the primary claim, 2.5%; every other claim and every w
comparison share the other 2.5%), so the chance of any false word anywhere in the table is at most
5%. "w = {PAPER_W:g} gives the largest gain" is supported only if w = {PAPER_W:g} beats every other
w, contradicted if another w beats it. With fewer than 3 seeds a method-level claim gets no verdict
("inconclusive (2 seeds: per-seed only)"): two seeds cannot check anything about the seed
distribution. A claim read from one seed, or marked "these trained models" (RGB against landmarks:
exact McNemar), is about the trained models, not the method. The column *per seed* gives those
conditional tests for every claim. A verdict is a finding when a run of the same commit, data and
settings with other seeds (`./run_all.sh --replicate`) does not conflict with it."""

# <figures>/seed_stability.{csv,md}: written by `compare-runs` and `run_all.sh --replicate`
STABILITY_FILE = "seed_stability"


def replicate_of(run_dir: Path) -> Path | None:
    """Another finished run of the same commit, data and settings but other training seeds, beside
    ``run_dir`` (``runs/``): what the "same verdict with other seeds" column compares with."""
    run_dir = Path(run_dir)

    def identity(folder: Path):
        try:
            info = json.loads((folder / "run_info.json").read_text())
            settings = json.loads((folder / "settings.json").read_text())
        except (OSError, ValueError):
            return None
        if "uncommitted" in info.get("commit", "uncommitted") and not info.get("source"):
            return None
        same = {k: v for k, v in settings.items() if k != "seed_offset"}
        return (
            info.get("commit"),
            info.get("source"),
            info.get("data"),
            json.dumps(same, sort_keys=True),
            settings.get("seed_offset"),
        )

    mine = identity(run_dir)
    if mine is None:
        return None
    for other in sorted(run_dir.parent.iterdir()):
        if other == run_dir or not (other / "tables" / "claims.csv").exists():
            continue
        theirs = identity(other)
        if theirs is not None and theirs[:4] == mine[:4] and theirs[4] != mine[4]:
            return other
    return None


def recorded_stability(figures_dir: Path) -> pd.DataFrame | None:
    """The comparison recorded in ``<figures>/seed_stability.csv`` (committed for the demo), if one
    was made."""
    path = Path(figures_dir) / f"{STABILITY_FILE}.csv"
    return pd.read_csv(path, dtype=str, keep_default_na=False) if path.exists() else None


def findings(claims_frame: pd.DataFrame, stability: pd.DataFrame | None) -> pd.DataFrame:
    """The claims with a column saying whether a replicate of this run with other seeds
    (``stability_table`` of this run and ``replicate_of`` it, computed now) agrees: "same",
    "compatible" (only inconclusive verdicts differ) or "conflict"; "not checked" without a
    replicate. Only verdicts that hold are findings."""
    out = claims_frame[["claim", "verdict"]].copy()
    if stability is None:
        out["same verdict with other seeds"] = "not checked"
        return out
    rows = stability.set_index("quantity")
    agree = {
        q.removeprefix("claim: "): a for q, a in rows["agree"].items() if q.startswith("claim: ")
    }
    out["same verdict with other seeds"] = [agree.get(c, "not checked") for c in out["claim"]]
    return out
