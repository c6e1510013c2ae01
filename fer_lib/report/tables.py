"""The report's tables: computed from saved predictions, written as CSV, Markdown and LaTeX to
``<run_dir>/tables/<name>.{csv,md,tex}``, with the data set named on each; the paper's numbers
beside ours. How sure a difference is and the verdicts: ``fer_lib.report.verdicts``; whether they
hold with other seeds: ``fer_lib.report.replication``; the figures: ``fer_lib.report.figures``.
"""

from __future__ import annotations

from dataclasses import fields
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from IPython.display import display

from fer_lib.data.heatmaps import default_sigma
from fer_lib.data.rafdb import CLASSES, paper_results
from fer_lib.data.synthetic import SyntheticKnobs
from fer_lib.evaluation import metrics
from fer_lib.io import save_csv, save_text
from fer_lib.runtime.precision import cpu_path


def short_names(classes) -> tuple[str, ...]:
    """A confusion matrix's tick labels: each class's first three letters (Sur, ..., Con)."""
    return tuple(name[:3] for name in classes)


def save_table(
    frame: pd.DataFrame, name: str, tables_dir: Path, *, caption: str = ""
) -> pd.DataFrame:
    """Write a table as CSV, Markdown and LaTeX (atomically); returns it for display."""
    tables_dir = Path(tables_dir)
    save_csv(frame, tables_dir / f"{name}.csv")
    # as Python objects, or tabulate would turn the integers (seeds, counts) into floats too
    readable_frame = readable_components(frame)
    shown = readable_frame.astype(object).where(frame.notna(), None)
    # the components' text as written: tabulate would parse "2.50e-06" back and print 0.0000
    as_text = [k for k, c in enumerate(frame.columns) if str(c).endswith(COMPONENT_SUFFIXES)]
    markdown = shown.to_markdown(
        index=False, floatfmt=".4f", missingval="", disable_numparse=as_text or False
    )
    save_text((f"{caption}\n\n" if caption else "") + markdown + "\n", tables_dir / f"{name}.md")
    save_text(
        readable_frame.to_latex(index=False, float_format="%.4f", caption=caption or None),
        tables_dir / f"{name}.tex",
    )
    return frame


# variance components and ratios: tiny or huge, never 0.0000 or 3.1e17
COMPONENT_SUFFIXES = (" var", " ratio")


def readable(value: float) -> str:
    """A variance or ratio as a reader can read it: 3 significant digits in scientific notation,
    "inf", "0"."""
    if not np.isfinite(value):
        return "inf" if value > 0 else "-inf" if value < 0 else ""
    if value == 0:
        return "0"
    return f"{value:.3g}" if 1e-3 <= abs(value) < 1e4 else f"{value:.2e}"


def readable_components(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with its variance-component and ratio columns as ``readable`` text (the CSV keeps
    the numbers)."""
    columns = [c for c in frame.columns if str(c).endswith(COMPONENT_SUFFIXES)]
    if not columns:
        return frame
    out = frame.copy()
    for c in columns:
        out[c] = [readable(float(v)) if pd.notna(v) else None for v in frame[c]]
    return out


def show(frame: pd.DataFrame) -> None:
    """Display a table in a notebook: no index column, four decimals, missing values empty. Returns
    nothing, so a cell ending in it shows the table once."""
    frame = readable_components(frame)
    numbers = frame.select_dtypes("number").columns
    integers = [c for c in numbers if pd.api.types.is_integer_dtype(frame[c])]
    styler = frame.style.hide(axis="index").format(precision=4, na_rep="")
    display(styler.format("{:d}", subset=integers, na_rep=""))


def read_table(tables_dir: Path, name: str) -> pd.DataFrame | None:
    """A saved table back from its CSV; None when it was not produced, or produced empty."""
    path = Path(tables_dir) / f"{name}.csv"
    if not path.exists():
        return None
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return None


def paper_per_class(values: list, classes) -> list:
    """The paper's per-class numbers (RAF-DB's 7, in its order) for ``classes``, matched by name;
    None for a class RAF-DB does not have (Contempt)."""
    by_name = dict(zip(paper_results()["classes"], values))
    return [by_name.get(name) for name in classes]


def class_count_table(
    train_counts: list[int], test_counts: list[int], classes=CLASSES
) -> pd.DataFrame:
    """Table 3: images per class of the data set's ``classes``, next to the paper's counts
    (RAF-DB's; none for a class RAF-DB does not have)."""
    paper = paper_results()["table3_class_counts"]
    table = pd.DataFrame({"class": list(classes), "train": train_counts, "test": test_counts})
    for split in ("train", "test"):
        table[f"paper {split}"] = pd.array(paper_per_class(paper[split], classes), dtype="Int64")
    return table


def contingency_table(rgb_correct: np.ndarray, landmark_correct: np.ndarray) -> pd.DataFrame:
    """Table 2: RGB correct/wrong x landmark correct/wrong, counts and shares, next to the
    paper's."""
    counts = metrics.contingency_2x2(rgb_correct, landmark_correct)
    paper = paper_results()["table2_contingency_test"]
    total, paper_total = sum(counts.values()), sum(paper.values())
    rows = []
    for key, count in counts.items():  # rgb_<correct|wrong>_landmark_<correct|wrong>
        rgb, landmark = key.removeprefix("rgb_").split("_landmark_")
        rows.append((rgb, landmark, count, count / total, paper[key], paper[key] / paper_total))
    columns = ["RGB", "landmark", "count", "share", "paper count", "paper share"]
    return pd.DataFrame(rows, columns=columns)


METRIC_COLUMNS = ("oa_top1", "oa_top2", "oa_top3", "aa")


def headroom_rows(name: str, runs, *, oracle: bool = False) -> list[dict]:
    """How much of the landmark branch's headroom a fusion model captures, per seed.

    The ceiling of any weighting is the images the RGB branch gets wrong and the landmark head right
    (the paper's Table 2: 62 on RAF-DB): choosing the right branch per image gains at most that
    many. Per run, against its own RGB and landmark heads: those the fused model fixes, "both wrong"
    it fixes, RGB-right images it breaks, the net gain (= the OA gain in images) and its share of
    the ceiling. ``oracle``: the upper bound instead (the right branch whenever one is right).
    """
    rows = []
    for run in runs:
        p = run.predictions
        rgb, landmark, fused = (
            getattr(p, head).argmax(1) == p.labels for head in ("rgb", "landmark", "fused")
        )
        ceiling = int((~rgb & landmark).sum())
        fixed, fixed_both, broken = (
            (ceiling, 0, 0)
            if oracle
            else (
                int((~rgb & landmark & fused).sum()),
                int((~rgb & ~landmark & fused).sum()),
                int((rgb & ~fused).sum()),
            )
        )
        gain = fixed + fixed_both - broken
        rows.append(
            {
                "model": name,
                "seed": run.seed,
                "RGB wrong, landmarks right (ceiling)": ceiling,
                "of those fixed": fixed,
                "both wrong, fixed": fixed_both,
                "RGB right, broken": broken,
                "net gain (images)": gain,
                "share of the ceiling": gain / ceiling if ceiling else np.nan,
            }
        )
    return rows


def metric_values(labels: np.ndarray, probabilities: np.ndarray, classes=CLASSES) -> dict:
    """OA top-1/2/3, AA and each class's accuracy of one model's test probabilities (one column per
    class of ``classes``, the data set's list)."""
    if probabilities.shape[1] != len(classes):
        raise ValueError(
            f"{probabilities.shape[1]} probabilities per image for {len(classes)} classes "
            f"({', '.join(classes)})"
        )
    result = metrics.summary(labels, probabilities)
    return {**{k: result[k] for k in METRIC_COLUMNS}, **dict(zip(classes, result["per_class"]))}


def seed_metrics(runs, head: str = "fused") -> pd.DataFrame:
    """One row per seed: the head's OA top-1/2/3, AA and per-class accuracies (over the class list
    of its saved predictions), from its saved predictions."""
    return pd.DataFrame(
        [
            {
                "seed": run.seed,
                **metric_values(
                    run.predictions.labels, getattr(run.predictions, head), run.predictions.classes
                ),
            }
            for run in runs
        ]
    )


def mean_sd_row(name: str, per_seed: pd.DataFrame, columns) -> dict:
    """A table row with each column's mean over seeds, its sd (ddof=1) and the seed count. One seed
    has no sd: it is left missing (shown empty), not written as 0, which would read as no spread
    between seeds."""
    row = {"model": name, "seeds": len(per_seed)}
    for column in columns:
        row[column] = per_seed[column].mean()
        row[f"{column} sd"] = per_seed[column].std(ddof=1)  # NaN for one seed
    return row


CALIBRATION_BINS = 15


def reliability(
    labels: np.ndarray, probabilities: np.ndarray, bins: int = CALIBRATION_BINS
) -> tuple[float, pd.DataFrame]:
    """(expected calibration error, per-bin table) of the max-softmax confidence: equal-width
    confidence bins over [0, 1]; ECE is the image-weighted mean |accuracy - mean confidence| over
    the bins (Guo et al. 2017)."""
    confidence = probabilities.max(1)
    correct = probabilities.argmax(1) == labels
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    table = pd.DataFrame(
        [
            {
                "bin low": b / bins,
                "bin high": (b + 1) / bins,
                "images": int(inside.sum()),
                "mean confidence": float(confidence[inside].mean()),
                "accuracy": float(correct[inside].mean()),
            }
            for b in range(bins)
            if (inside := which == b).any()
        ]
    )
    gaps = (table["accuracy"] - table["mean confidence"]).abs()
    return float((table["images"] * gaps).sum() / len(labels)), table


HEADS = (("rgb", "RGB (the baseline)"), ("landmark", "landmark only"), ("fused", "fused"))


def calibration_rows(runs, heads=HEADS) -> list[dict]:
    """ECE, mean confidence and accuracy of each head (default: RGB, landmark-only and fused) of
    each run (test set)."""
    rows = []
    for run in runs:
        for head, name in heads:
            probabilities = getattr(run.predictions, head)
            rows.append(
                {
                    "head": name,
                    "seed": run.seed,
                    f"ECE ({CALIBRATION_BINS} bins)": reliability(
                        run.predictions.labels, probabilities
                    )[0],
                    "mean confidence": float(probabilities.max(1).mean()),
                    "accuracy": float((probabilities.argmax(1) == run.predictions.labels).mean()),
                }
            )
    return rows


COMPARISON_COLUMNS = ("table", "model", "metric", "ours", "ours sd", "paper", "difference")


def _compared(table: str, model: str, metric: str, ours, sd, paper) -> dict:
    """One row of ``paper_comparison``."""
    difference = None if paper is None or ours is None else ours - paper
    return dict(zip(COMPARISON_COLUMNS, (table, model, metric, ours, sd, paper, difference)))


def paper_comparison(tables_dir: Path) -> dict[str, pd.DataFrame]:
    """Every saved table next to the paper's numbers: one long table per paper table (ours, sd,
    paper, diff).

    Reads only the CSVs the notebooks saved in ``tables_dir``; tables not produced yet are left out.
    """
    paper = paper_results()
    out: dict[str, pd.DataFrame] = {}
    for name, key, compare in (
        ("table3_class_counts", "table3", _compare_class_shares),
        ("branch_accuracy", "branches", _compare_branches),
        ("table2_contingency", "table2", _compare_contingency),
        ("table5_per_class", "table5", _metric_table("table5_per_class_accuracy", per_class=True)),
        ("table6_overall", "table6", _metric_table("table6_overall", per_class=False)),
        ("table7_ablation_per_class", "table7", _metric_table("table7_ablation_per_class", True)),
        ("table8_ablation_overall", "table8", _metric_table("table8_ablation_overall", False)),
        ("claims", "claims", None),
        ("fig4_w_sweep", "fig4", _compare_w_sweep),
    ):
        if (t := read_table(tables_dir, name)) is not None:
            out[key] = t if compare is None else pd.DataFrame(compare(t, name, paper))
    return out


def _compare_class_shares(t: pd.DataFrame, name: str, paper: dict) -> list[dict]:
    rows: list[dict] = []
    for split in ("train", "test"):
        shares = t[split] / t[split].sum()
        paper_counts = t[f"paper {split}"].astype(float)  # NaN for a class RAF-DB does not have
        paper_shares = paper_counts / paper_counts.sum()
        rows += [
            _compared("Table 3", split, f"share {c}", share, None, None if np.isnan(p) else p)
            for c, share, p in zip(t["class"], shares, paper_shares)
        ]
    return rows


def _compare_branches(t: pd.DataFrame, name: str, paper: dict) -> list[dict]:
    return [
        _compared(
            "Section 5 (branches)",
            column,
            "OA",
            t[column].mean(),
            t[column].std(ddof=1) if len(t) > 1 else 0.0,
            paper["branch_accuracy_test"][key],
        )
        for column, key in (("RGB", "rgb"), ("landmark only", "landmark_only"))
    ]


def _compare_contingency(t: pd.DataFrame, name: str, paper: dict) -> list[dict]:
    return [
        _compared(
            "Table 2",
            f"RGB {r['RGB']}, landmark {r['landmark']}",
            "share",
            r["share"],
            None,
            r["paper share"],
        )
        for _, r in t.iterrows()
    ]


def _metric_table(key: str, per_class: bool):
    """Tables 5-8: each model's metrics (a per-class table's columns are the data set's classes,
    whatever its list) beside the paper's row of the same model in ``paper[key]``."""
    return partial(_compare_metric_table, key=key, per_class=per_class)


def _compare_metric_table(
    t: pd.DataFrame, name: str, paper: dict, *, key: str, per_class: bool
) -> list[dict]:
    columns = (
        [c for c in t.columns if c not in ("model", "seeds") and not c.endswith(" sd")]
        if per_class
        else METRIC_COLUMNS
    )
    table = name.split("_")[0].replace("table", "Table ")
    rows: list[dict] = []
    for _, r in t.iterrows():
        reference = paper[key].get(r["model"])
        if reference is None:
            values = [None] * len(columns)
        elif per_class:  # the paper's list is in RAF-DB's order: matched by class name
            values = paper_per_class(reference, columns)
        else:
            values = [reference[column] for column in columns]
        rows += [
            _compared(table, r["model"], column, r[column], r[f"{column} sd"], value)
            for column, value in zip(columns, values)
        ]
    return rows


def _compare_w_sweep(t: pd.DataFrame, name: str, paper: dict) -> list[dict]:
    gains = t.groupby("w")["oa_gain"].mean()
    best = paper["figure4_w_sweep"]["best_w"]
    return [
        _compared("Fig. 4", "both", "best w (test set)", float(gains.idxmax()), None, best),
        _compared("Fig. 4", "both", "OA gain at the best w", float(gains.max()), None, None),
    ]


PAPER_MODEL = "both (the paper)"
CALIBRATED = "calibrated confidence"  # the landmark head temperature-scaled on the validation split
LEARNED = "learned gate"  # a gate fitted on the validation split of the paper's run
HEATMAP_BRANCH = "heatmap CNN branch"
COORDS_BRANCH = "coordinate MLP branch"


def model_rows(runs_by_name: dict) -> pd.DataFrame:
    """Per model, over seeds: fused OA and AA (mean, sd), the landmark-only head's OA and the mean
    factor on F_landmark."""
    rows = []
    for name, runs in runs_by_name.items():
        landmark = mean_sd_row(name, seed_metrics(runs, "landmark"), ("oa_top1",))
        rows.append(
            {
                **mean_sd_row(name, seed_metrics(runs), ("oa_top1", "aa")),
                "landmark-only oa_top1": landmark["oa_top1"],
                "landmark-only oa_top1 sd": landmark["oa_top1 sd"],
                "mean weight on F_landmark": float(
                    np.mean([r.predictions.weight.mean() for r in runs])
                ),
            }
        )
    return pd.DataFrame(rows)


def branch_reference(
    runs, probes: pd.DataFrame, baseline_seeds: list[int] | None = None
) -> pd.DataFrame:
    """Each branch's network next to a linear probe on the same input (``probes.probe_table``): a
    network below its probe has not learned what its input allows. The RGB row is the mean over the
    trained baselines (the runs whose seed is in ``baseline_seeds``; default: the first run's)."""

    def mean_oa(runs, head: str) -> float:
        return float(
            np.mean(
                [
                    metrics.overall_accuracy(
                        r.predictions.labels, getattr(r.predictions, head).argmax(1)
                    )
                    for r in runs
                ]
            )
        )

    baselines = [r for r in runs if r.seed in baseline_seeds] if baseline_seeds else runs[:1]
    over_seeds = ", mean over seeds" if len(baselines) > 1 else ""
    rows = [
        (
            f"RGB network (the frozen baseline{over_seeds})",
            "RGB",
            mean_oa(baselines, "rgb"),
            len(baselines),
        ),
        (
            "landmark network (landmark-only head, mean over seeds)",
            "landmarks",
            mean_oa(runs, "landmark"),
            len(runs),
        ),
    ]
    frame = pd.concat(
        [
            pd.DataFrame(rows, columns=["model", "input", "test OA", "seeds"]),
            probes[["model", "input", "test OA"]].assign(seeds=np.nan),
        ],
        ignore_index=True,
    )
    frame["seeds"] = frame["seeds"].astype("Int64")
    return frame.sort_values(
        "input", kind="stable", key=lambda c: c.map({"RGB": 0, "landmarks": 1}).fillna(2)
    ).reset_index(drop=True)


def knobs_table(knobs, changed: dict) -> pd.DataFrame:
    """Every SyntheticKnobs value of the data set, its generator default, and whether the profile
    changed it."""
    default = SyntheticKnobs()
    rows = [
        {
            "knob": f.name,
            "value": str(getattr(knobs, f.name)),
            "generator default": str(getattr(default, f.name)),
            "set by the profile": "yes" if f.name in changed else "",
        }
        for f in fields(knobs)
    ]
    return pd.DataFrame(rows)


# what the paper says on each choice design_choices reports, in the table's order
PAPER_CHOICES = {
    "fusion layer initialisation": "silent",
    "gradient through the weight p * w": "silent",
    "heatmap points": "white points on black; size not stated",
    "fusion epochs and the epoch kept": "silent",
    "validation hold-out": "silent",
    "landmark-branch augmentation": "silent",
    "ReLU after conv6": "Table 1 lists no activations",
    "ARM noise": "the ARM code: variance 30 (std 5.5 grey levels) on the 100 px uint8 image, "
    "clipped, then resized",
    "frozen-feature cache": "silent (the paper recomputes)",
    "arithmetic": "silent",
    "learning-rate schedule": "ExponentialLR(0.9) per epoch (Table 4)",
    "BatchNorm in the landmark CNN": "Table 1 lists none",
    "baseline augmentation": "the ARM code: half untouched, a quarter flipped, a quarter noised",
    "network widths": "64 and 32",
    "baselines": "one (the ARM authors' checkpoint)",
    "baseline weights kept": "the ARM recipe: the epoch's own weights",
}


def design_choices(profile, fusion_config, *, checkpoint: bool = False) -> pd.DataFrame:
    """The choices this run makes where the paper is silent or was changed for the CPU (README,
    "Choices the paper does not state"); ``checkpoint``: the baseline is a given checkpoint (no
    hold-out of its own)."""
    fusion = fusion_config
    sigma = fusion.heatmap_sigma or default_sigma(profile.input_size)
    schedules = (
        ("baseline", profile.lr_schedule, profile.baseline_epochs),
        ("landmark branch", fusion.lr_schedule, fusion.epochs),
    )
    this_run = {
        "fusion layer initialisation": "the baseline's fc on F_RGB, zeros on F_landmark"
        if fusion.fusion_init_from_baseline
        else "PyTorch's default",
        "gradient through the weight p * w": "yes"
        if fusion.weight_grad
        else "no (the weight is a constant)",
        "heatmap points": f"gaussian, sigma {sigma:.2f} px at {profile.input_size} px",
        "fusion epochs and the epoch kept": f"{fusion.epochs}; lowest validation loss of eq. 3"
        if fusion.select == "val_loss"
        else f"{fusion.epochs}; best fused validation accuracy",
        "validation hold-out": f"{fusion.val_fraction:.0%} of the training set, stratified, "
        "seeded; "
        + (
            "drawn for each run: the checkpoint trained on these images, so the RGB head looks "
            "better there than on new ones (epoch, temperature and gate lean towards it)"
            if checkpoint
            else "the baseline's own hold-out, which it never trained on, "
            "for the landmark branch, the temperature and the gate too"
        ),
        "landmark-branch augmentation": "horizontal flips of image and heatmap together "
        "(paired), nothing else"
        if fusion.flip
        else "none",
        "ReLU after conv6": "yes: every conv block of Table 1 ends in ReLU, conv6 (the output "
        "F_landmark) too",
        "ARM noise": "gaussian, std 0.1 in normalised units (about 5.7 grey levels) on the network "
        "input, not clipped",
        "frozen-feature cache": "computed once per image and flip state",
        "arithmetic": f"bf16 autocast on CUDA; on this CPU {cpu_path()} (bf16 autocast only with "
        "AMX)",
        "learning-rate schedule": "; ".join(
            f"{branch}: "
            + (
                "ExponentialLR(0.9) per epoch"
                if schedule == "exponential"
                else f"cosine to zero over its {epochs} epochs"
            )
            for branch, schedule, epochs in schedules
        ),
        "BatchNorm in the landmark CNN": "yes" if fusion.batch_norm else "no (Table 1 as printed)",
        "baseline augmentation": {
            "upstream": "the ARM authors' mix",
            "flip_or_noise": "every image flipped or noised",
        }[profile.augmentation],
        "network widths": f"ResNet18 {profile.baseline_width}, landmark CNN "
        f"{profile.landmark_width}",
        "baselines": f"one per training seed ({profile.seeds}), each seed's landmark branch fused "
        "with its own"
        if profile.baseline_per_seed
        else "one, shared by every seed",
        "baseline weights kept": f"their moving average (decay {profile.baseline_ema} per step), "
        "at the best validation epoch"
        if profile.baseline_ema
        else "the best validation epoch's",
    }
    rows = [(choice, this_run[choice], paper) for choice, paper in PAPER_CHOICES.items()]
    return pd.DataFrame(rows, columns=["choice", "this run", "the paper"])
