"""The report's landing page, ``runs/<profile>/report/index.html``: what someone opening only that
page needs.

It shows the paper, what was run (profile, data set and counts, settings, commit, date, machine,
wall time per notebook), Table 6 beside the paper's numbers, the claims with their verdicts, Fig. 4
and one Grad-CAM++ mosaic, and links to each notebook with one line on what it shows. Everything is
read from the run's saved tables, ``run_info.json`` and ``settings.json``. The folder is
self-contained: the figures are copied into ``report/figures/`` and the method (``docs/SPEC.md``) is
rendered to ``report/paper.html``, so the folder can be copied anywhere and opened offline.
"""

from __future__ import annotations

import html
import shutil
from pathlib import Path

import mistune
import nbformat
import pandas as pd

from fer_lib.data.rafdb import CLASSES as RAFDB_CLASSES
from fer_lib.io import relative
from fer_lib.report.replication import run_records, seed_list
from fer_lib.report.tables import read_table
from fer_lib.report.verdicts import CLAIM_COLUMNS, EQUIVALENCE_MARGIN, resolvable_rows
from fer_lib.runtime.precision import arithmetic_note

PAPER = {
    "title": "Emotion estimation from face images using facial landmarks",
    "authors": "Kanamori, Kanamori, Endo, Mitani (University of Tsukuba)",
    "language": "Japanese; restated in English, with every number, on the page linked here",
}
# The figures shown on the landing page, in order of preference per slot: (file stem, caption).
FIGURES = (
    (
        ("fig4_w_sweep",),
        "Fig. 4: the OA gain over the baseline against the agreement weight w (mean over seeds, "
        "seeds as dots).",
    ),
    (
        ("headroom",),
        "Headroom: what each model fixes and breaks, as a share of its ceiling (notebook 6; the "
        "paper's section 6).",
    ),
    (
        ("table10_gradcam", "table9_gradcam"),
        "Grad-CAM++ of both branches, at the paper's layers, on the most confident mistakes per "
        "class (Table 10).",
    ),
    (
        ("whatif_jitter",),
        "Landmark jitter: fused, landmark-only and RGB accuracy as every landmark is moved by "
        "Gaussian noise, and the fused gain over RGB (notebook 11; every seed).",
    ),
)
CSS = """
body {
  font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
  color: #222; line-height: 1.45;
}
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.supported { color: #0a6b2c; font-weight: 600; }
.contradicted { color: #a11; font-weight: 600; }
.equivalent { color: #1f4e99; font-weight: 600; }
.inconclusive { color: #666; }
.warning { background: #fff4e5; border-left: 4px solid #e69500; padding: 0.5em 1em; }
figure { margin: 1em 0 2em; } figure img { max-width: 100%; border: 1px solid #ddd; }
.small { color: #555; font-size: 0.9em; }
"""


def _table(
    frame: pd.DataFrame, *, numeric: dict[str, str] | None = None, css_column: str | None = None
) -> str:
    """An HTML table without index; ``numeric`` maps a column to its format, ``css_column`` gives
    cells a class."""
    numeric = numeric or {}
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = []
    for _, row in frame.iterrows():
        cells = []
        for column, value in row.items():
            if column in numeric:
                text = "" if pd.isna(value) else format(float(value), numeric[column])
                cells.append(f'<td class="num">{text}</td>')
                continue
            text = "" if pd.isna(value) else str(value)
            # "supported, smaller than ..." too
            css = f' class="{text.split(",")[0].replace(" ", "-")}"' if column == css_column else ""
            cells.append(f"<td{css}>{html.escape(text)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _section(title: str, intro: str, frame: pd.DataFrame, **options) -> str:
    """A heading, a short note on how to read the table, and the table (``_table``'s options)."""
    return f"<h2>{title}</h2><p class='small'>{intro}</p>" + _table(frame, **options)


def _notebook_line(executed: Path) -> tuple[str, str]:
    """(title, first sentence of the introduction) of an executed notebook's first markdown cell."""
    cell = next(
        (c for c in nbformat.read(executed, as_version=4).cells if c.cell_type == "markdown"), None
    )
    if cell is None:
        return executed.stem, ""
    title, _, rest = cell.source.partition("\n")
    first = rest.strip().split("\n\n")[0].replace("\n", " ")
    sentence = first.split(". ")[0].rstrip(".") + "." if first else ""
    return title.lstrip("# ").strip(), sentence


def _page(title: str, body: str) -> str:
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{CSS}</style></head><body>{body}</body></html>"
    )


def render_spec(spec: Path, target: Path) -> Path:
    """The method, restated in English (``docs/SPEC.md``), as a standalone HTML page."""
    body = mistune.html(spec.read_text(encoding="utf-8"))
    back = "<p><a href='index.html'>Back to the report</a></p>"
    target.write_text(_page("The method", back + body), encoding="utf-8")
    return target


def _data_set(info: dict, settings: dict, counts: pd.DataFrame | None) -> str:
    """The "data set" cell of "What was run" (HTML): which data, its counts and its protocol."""
    layout = info.get("data_layout", "RAF-DB")
    if layout != "RAF-DB":  # a converted AffectNet, FERPlus or CK+ copy (classes.json)
        data = html.escape(f"{layout}, converted into RAF-DB's layout")
    # the synthetic set, not a --data set
    elif settings.get("synthetic") and str(info.get("data", "synthetic")).startswith("synthetic"):
        data = "synthetic RAF-DB (the embedded demo data, <b>not real faces</b>)"
    else:
        data = "RAF-DB (basic)"
    if counts is not None:
        data += (
            f": {int(counts['train'].sum()):,} training and {int(counts['test'].sum()):,} test "
            "images"
        )
    classes = info.get("data_classes")
    protocol = [line.removeprefix("protocol: ") for line in info.get("data_protocol", [])]
    # every per-class table and figure follows this list
    if classes and tuple(classes) != RAFDB_CLASSES:
        protocol.insert(0, f"{len(classes)} classes: {', '.join(classes)}")
    protocol += [
        f"excluded: {count:,} row(s), {reason}"
        for reason, count in (info.get("data_excluded") or {}).items()
    ]
    if protocol:
        data += "<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in protocol) + "</ul>"
    return data


def write_landing_page(
    run_dir: Path,
    report_dir: Path,
    pages: list[Path],
    figures_dir: Path,
    *,
    spec: Path | None = None,
) -> Path:
    """Write ``report_dir/index.html`` for a finished run (see the module docstring) and return its
    path."""
    run_dir, report_dir, figures_dir = Path(run_dir), Path(report_dir), Path(figures_dir)
    tables = run_dir / "tables"
    info, settings = run_records(run_dir)
    name = str(settings.get("name", "?"))
    parts = [
        "<h1>Facial expressions from RGB and landmarks: report of the "
        f"<code>{html.escape(name)}</code> run</h1>"
    ]

    paper_link = ""
    if spec is not None and spec.exists():
        render_spec(spec, report_dir / "paper.html")
        paper_link = ' (<a href="paper.html">the method, with every number</a>)'
    parts.append(
        f"<p><b>The paper.</b> <i>{html.escape(PAPER['title'])}</i>, "
        f"{html.escape(PAPER['authors'])}; {html.escape(PAPER['language'])}{paper_link}. A "
        "frozen RGB network (ResNet18 + ARM) is fused with a landmark-heatmap CNN whose feature "
        "is weighted by its own confidence and by its agreement with the RGB network.</p>"
    )

    overrides = info.get("settings") or {}
    facts = [
        (
            "settings changed from the profile",
            ", ".join(f"{k}={v}" for k, v in overrides.items()) or "none",
        ),
        ("training seeds", ", ".join(map(str, seed_list(settings)))),
        ("commit", str(info.get("commit", "unknown"))),
        ("date", str(info.get("date", "unknown"))),
        (
            "machine",
            f"{info.get('cpu', '?')}, {info.get('cpu_cores', '?')} cores; GPU: "
            f"{info.get('gpu', '?')}",
        ),
        ("software", f"torch {info.get('torch', '?')}, Python {info.get('python', '?')}"),
    ]
    if "device" in info:  # runs recorded before the device was
        facts.append(("arithmetic", arithmetic_note(info["device"], info["cpu_path"])))
    if seconds := info.get("notebook_seconds") or {}:
        wall = "; ".join(f"{k} {v:.0f} s" for k, v in seconds.items())
        facts.append(("wall time", wall + f" (total {sum(seconds.values()) / 60:.1f} min)"))
    rows = [
        ("profile", html.escape(name)),
        ("data set", _data_set(info, settings, read_table(tables, "table3_class_counts"))),
        *((k, html.escape(v)) for k, v in facts),
    ]
    parts.append(
        "<h2>What was run</h2><table><tbody>"
        + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
        + "</tbody></table>"
    )
    parts += [f'<p class="warning">{html.escape(w)}</p>' for w in info.get("warnings", [])]

    layout, classes = info.get("data_layout", "RAF-DB"), info.get("data_classes")
    if layout != "RAF-DB":
        over = f", over its {len(classes)} classes" if classes else ""
        tested_on = html.escape(f"the test split of {layout}{over}")
    else:
        tested_on = "the synthetic set" if settings.get("synthetic") else "the RAF-DB test set"
    if (table6 := read_table(tables, "summary_table6")) is not None:
        table6 = table6.drop(columns=["table"]).rename(
            columns={
                "ours": "this run",
                "ours sd": "sd over seeds",
                "paper": "paper (RAF-DB)",
                "difference": "this run - paper",
            }
        )
        table6["metric"] = table6["metric"].replace(
            {
                "oa_top1": "OA (top-1)",
                "oa_top2": "OA (top-2)",
                "oa_top3": "OA (top-3)",
                "aa": "AA (mean per class)",
            }
        )
        parts.append(
            _section(
                "Table 6: overall and average accuracy, beside the paper's",
                f"This run's numbers are on {tested_on}; the paper's on RAF-DB.",
                table6,
                numeric={
                    "this run": ".4f",
                    "sd over seeds": ".4f",
                    "paper (RAF-DB)": ".4f",
                    "this run - paper": "+.4f",
                },
            )
        )

    claims = read_table(tables, "claims")
    if claims is not None:
        findings = read_table(tables, "findings")
        if findings is not None and "same verdict with other seeds" in findings:
            claims = claims.merge(
                findings[["claim", "same verdict with other seeds"]], on="claim", how="left"
            )
        # the claims table's columns but the margin, the per-seed counts and the detail, with the
        # replicate's agreement before the outlying seed
        left_out = ("margin", "per seed (the trained models)", "detail", "outlying seed")
        order = [c for c in CLAIM_COLUMNS if c not in left_out]
        shown = [
            c
            for c in [*order, "same verdict with other seeds", "outlying seed"]
            # an outlying seed's column only where some claim has one: empty, it would only take
            # space
            if c in claims and (c != "outlying seed" or claims[c].dropna().astype(str).ne("").any())
        ]
        parts.append(
            _section(
                "The paper's claims on this run, and three questions beyond it",
                "Method-level 95% intervals (seeds pooled; their coverage measured by simulation). "
                "Every verdict word is read off the claim's interval at its share of one 5% error "
                "rate for the whole table (Bonferroni: the primary claim 2.5%, the others sharing "
                "2.5%): supported or contradicted when it excludes zero; equivalent when it lies "
                f"within +-{100 * EQUIVALENCE_MARGIN:.1f} points; otherwise inconclusive, with "
                "the resolution (the smallest difference this run detects with 80% power) saying "
                "why. With fewer than 3 seeds there is no method-level verdict, only the per-seed "
                "results. A verdict is a finding when a replicate with other seeds does not "
                "conflict with it (summary notebook).",
                claims[shown],
                css_column="verdict",
                numeric={
                    "difference": "+.4f",
                    "95% low": "+.4f",
                    "95% high": "+.4f",
                    "p (unadjusted)": ".3g",
                    "resolution": ".4f",
                },
            )
        )
        resolvable = resolvable_rows(tables)
        if len(resolvable):
            parts.append(
                _section(
                    "What this test set can resolve",
                    "However many seeds are trained, the test images alone leave a standard "
                    "error: the smallest difference this run's test set detects with 80% power at "
                    "5% (two-sided), with unlimited seeds, beside the paper's own gains (RAF-DB). "
                    "Where a gain is below it, no number of seeds can confirm it on a test set of "
                    "this size; the last column says how many times this run's test images would "
                    "(the image term shrinks as 1/N). A baseline per seed does not shrink it.",
                    resolvable,
                    numeric={
                        "paper's gain": "+.4f",
                        "resolvable with unlimited seeds": ".4f",
                        "test images needed (x this run's)": ".1f",
                    },
                )
            )

    if (future := read_table(tables, "future_work")) is not None:
        future = future.drop(columns=[c for c in future.columns if c.endswith(" sd")]).rename(
            columns={
                "oa_top1": "fused OA",
                "aa": "fused AA",
                "landmark-only oa_top1": "landmark-only OA",
            }
        )
        parts.append(
            _section(
                "Beyond the paper: other weightings and plain coordinates",
                "Means over seeds (notebook 6): a temperature-calibrated confidence and a gate "
                "fitted on the validation split instead of eq. 2's factor, and an MLP on the "
                "aligned coordinates instead of the heatmap CNN; the last three claims above test "
                "them against the paper's model.",
                future,
                numeric={c: ".4f" for c in future.columns if c not in ("model", "seeds")},
            )
        )

    for stems, caption in FIGURES:
        candidates = (figures_dir / f"{stem}.png" for stem in stems)
        if (source := next((path for path in candidates if path.exists()), None)) is None:
            continue
        (report_dir / "figures").mkdir(exist_ok=True)
        shutil.copyfile(source, report_dir / "figures" / source.name)
        parts.append(
            f'<figure><img src="figures/{html.escape(source.name)}" '
            f'alt="{html.escape(source.stem)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )

    items = []
    for page in pages:
        executed = run_dir / "executed" / f"{page.stem}.ipynb"
        title, line = _notebook_line(executed) if executed.exists() else (page.stem, "")
        items.append(
            f'<li><a href="{html.escape(page.name)}">{html.escape(title)}</a>: '
            f"{html.escape(line)}</li>"
        )
    parts.append("<h2>The notebooks, executed</h2><ol>" + "".join(items) + "</ol>")
    parts.append(
        "<p class='small'>Written by <code>./run_all.sh</code> from the run folder "
        f"<code>{html.escape(relative(run_dir))}</code>; every number above is read from its "
        "saved tables.</p>"
    )
    index = report_dir / "index.html"
    index.write_text(_page(html.escape(f"FER report ({name})"), "".join(parts)), encoding="utf-8")
    return index
