"""The end-to-end run behind ``./run_all.sh``: data, then every notebook in order, then the HTML report.

Artefacts of a profile live under ``runs/<profile>/``: ``data/`` (the synthetic set, when no RAF-DB is
given), ``executed/`` (the notebooks with outputs), ``report/`` (HTML and an index page), ``tables/``.
Figures go to ``figures/``. Notebooks receive PROFILE, DATA_ROOT, RUN_DIR and BASELINE_CHECKPOINT as
papermill parameters.
"""

from __future__ import annotations

import html
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = PROJECT_ROOT / "notebooks"
RUNS_DIR = PROJECT_ROOT / "runs"


def run_dir_for(profile: str) -> Path:
    return RUNS_DIR / profile


def ensure_data(profile: str, data: Path | None, run_dir: Path | None = None) -> Path:
    """The data root a profile runs on: the user's RAF-DB, or the profile's synthetic set (generated once,
    then reused, which is said)."""
    from fer_lib.experiment import get_profile
    from fer_lib.synthetic import demo_dataset_is_complete, generate_demo_dataset

    if data is not None:
        return Path(data)
    spec = get_profile(profile)
    if spec.synthetic is None:
        raise SystemExit(f"the {profile!r} profile needs a real RAF-DB: pass --data /path/to/RAF-DB/basic")
    (n_train, n_test), seed = spec.synthetic, spec.synthetic_seed
    root = (run_dir or run_dir_for(profile)) / "data" / "basic"
    if demo_dataset_is_complete(root, n_train, n_test, seed):
        print(f"==> reusing the synthetic RAF-DB in {root} ({n_train} train / {n_test} test, seed {seed})")
    else:
        print(f"==> generating the synthetic RAF-DB in {root} ({n_train} train / {n_test} test, seed {seed})")
        generate_demo_dataset(root, n_train, n_test, seed=seed)
    return root


def check_data(root: Path) -> None:
    from fer_lib.rafdb import check_rafdb

    report = check_rafdb(root)
    print(report.table())
    if not report.ok:
        for problem in report.errors[:50]:
            print(f"error: {problem}")
        raise SystemExit(f"{len(report.errors)} problem(s) in {root}; run `python -m fer_lib check-data {root}` for all")


def notebooks() -> list[Path]:
    return sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))


def _execute(notebook: Path, executed: Path, parameters: dict) -> None:
    import papermill

    try:
        papermill.execute_notebook(
            str(notebook), str(executed), parameters=parameters, progress_bar=True, cwd=str(NOTEBOOK_DIR)
        )
    except papermill.PapermillExecutionError as error:
        raise SystemExit(
            f"notebook {notebook.name} failed in cell {error.exec_count} ({error.ename}: {error.evalue}).\n"
            f"The executed copy with the traceback: {executed}"
        ) from None


def _render_html(executed: Path, report_dir: Path) -> Path:
    import nbformat
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nbformat.read(executed, as_version=4))
    target = report_dir / executed.with_suffix(".html").name
    target.write_text(body, encoding="utf-8")
    return target


def _write_index(report_dir: Path, pages: list[Path], profile: str, data_root: Path) -> Path:
    items = "\n".join(f'<li><a href="{html.escape(p.name)}">{html.escape(p.stem)}</a></li>' for p in pages)
    index = report_dir / "index.html"
    index.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>FER report ({profile})</title></head><body>"
        f"<h1>Report: profile {html.escape(profile)}</h1><p>Data: {html.escape(str(data_root))}</p>"
        f"<ol>{items}</ol></body></html>",
        encoding="utf-8",
    )
    return index


def run_all(
    profile: str,
    data: Path | None = None,
    baseline_checkpoint: Path | None = None,
    *,
    run_dir: Path | None = None,
    figures_dir: Path | None = None,
) -> int:
    """Data check, then every notebook in order (stopping at the first failure), then the HTML report."""
    started = time.perf_counter()
    base = Path(run_dir) if run_dir else run_dir_for(profile)
    data_root = ensure_data(profile, data, base)
    check_data(data_root)
    executed_dir, report_dir = base / "executed", base / "report"
    executed_dir.mkdir(parents=True, exist_ok=True)
    report_dir.mkdir(parents=True, exist_ok=True)
    parameters = {
        "PROFILE": profile,
        "DATA_ROOT": str(data_root.resolve()),
        "RUN_DIR": str(base.resolve()),
        "BASELINE_CHECKPOINT": str(Path(baseline_checkpoint).resolve()) if baseline_checkpoint else "",
        "FIGURES_DIR": str(Path(figures_dir).resolve()) if figures_dir else "",
    }
    pages = []
    for notebook in notebooks():
        print(f"==> {notebook.name}")
        executed = executed_dir / notebook.name
        _execute(notebook, executed, parameters)
        pages.append(_render_html(executed, report_dir))
    index = _write_index(report_dir, pages, profile, data_root)
    print(f"==> done in {time.perf_counter() - started:.0f} s; report: {index}")
    return 0
