"""The end-to-end run behind ``./run_all.sh``: data, then every notebook in order, then the HTML
report.

Artefacts of a profile live under ``runs/<profile>/``: ``data/`` (the synthetic set, when no RAF-DB
is given), ``executed/`` (the notebooks with outputs), ``report/`` (HTML and an index page),
``tables/``. Figures go to ``figures/``. Notebooks receive PROFILE, DATA_ROOT, RUN_DIR and
BASELINE_CHECKPOINT as papermill parameters.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import re
import subprocess
import time
from pathlib import Path

import pandas as pd
import torch

from fer_lib.data.rafdb import check_rafdb, read_classes, resolve_root
from fer_lib.data.synthetic import demo_dataset_is_complete, generate_demo_dataset
from fer_lib.io import (
    BATCH_REPORT_ENV,
    PROJECT_ROOT,
    claim_config,
    relative,
    save_json,
    save_text,
)
from fer_lib.report import tables
from fer_lib.run import freshness
from fer_lib.run.experiment import Experiment, synthetic_data_root
from fer_lib.run.jobs import write_jobs
from fer_lib.run.kernels import PIPELINE_KERNEL, EncryptedKernelManager, WarmKernels
from fer_lib.run.launch import launch
from fer_lib.run.profiles import as_profile, get_profile
from fer_lib.run.scheduler import train_all
from fer_lib.runtime.devices import pick_device
from fer_lib.runtime.precision import arithmetic_note, cpu_path

NOTEBOOK_DIR = PROJECT_ROOT / "notebooks"
RUNS_DIR = PROJECT_ROOT / "runs"


def run_dir_for(profile) -> Path:
    """``runs/<profile>``, or ``runs/<profile>-<settings>`` for a profile with ``--set`` overrides,
    so a sized-down or seed-shifted run never meets the default run's folder."""
    spec = as_profile(profile)
    overrides = spec.overrides()
    if not overrides:
        return RUNS_DIR / spec.name
    slug = "-".join(f"{key}_{value}" for key, value in overrides.items())
    return RUNS_DIR / (f"{spec.name}-" + re.sub(r"[^A-Za-z0-9.,_+-]+", "_", slug)[:120])


def figures_dir_for(profile, run_dir: Path) -> Path:
    """``figures/<profile>`` (committed) for a default demo or paper run in its default folder;
    otherwise (smoke, ``--set`` overrides, another ``--run-dir`` such as the other precision
    path's) the run folder's own, so that it never overwrites the committed figures."""
    spec = as_profile(profile)
    default = Path(run_dir).resolve() == run_dir_for(spec).resolve()
    if spec.name == "smoke" or spec.overrides() or not default:
        return Path(run_dir) / "figures"
    return PROJECT_ROOT / "figures" / spec.name


def claim_run_dir(run_dir: Path, profile) -> None:
    """Write the profile's effective settings into ``run_dir/settings.json``, or refuse a folder
    made with others."""
    changed = claim_config(Path(run_dir) / "settings.json", profile)
    if changed:
        raise SystemExit(
            f"{relative(run_dir)} holds a run made with other settings (differs in: "
            f"{', '.join(changed)}). Use another folder (--run-dir), or delete this one to start "
            "again."
        )


def ensure_data(profile, data: Path | None, run_dir: Path | None = None) -> Path:
    """The data root a profile runs on: the user's RAF-DB, or the profile's synthetic set (generated
    once, then reused, which is said)."""
    if data is not None:
        return Path(data)
    spec = as_profile(profile)
    if spec.synthetic is None:
        raise SystemExit(
            f"the {spec.name!r} profile needs a real RAF-DB: pass --data /path/to/RAF-DB/basic"
        )
    (n_train, n_test), seed, knobs = spec.synthetic, spec.synthetic_seed, spec.synthetic_knobs()
    root = synthetic_data_root(run_dir or run_dir_for(spec))
    complete = demo_dataset_is_complete(root, n_train, n_test, seed, knobs)
    print(
        f"==> {'reusing' if complete else 'generating'} the synthetic RAF-DB in {relative(root)} "
        f"({n_train} train / {n_test} test, seed {seed})"
    )
    if not complete:
        generate_demo_dataset(root, n_train, n_test, seed=seed, knobs=knobs)
    return root


# + a path parameter's name: where a kernel finds a placeholder's value
PARAMETER_ENV = "FER_PARAMETER_"
PATH_SEPARATOR = ";"  # between the paths of a parameter of several (CROSS_DATA)


def portable_parameter(name: str, *paths) -> str:
    """A path parameter (of the given ``paths``, ``PATH_SEPARATOR`` between them; None ones left
    out) as written into the executed notebook: relative to the project when every path is inside
    it; else a placeholder ``<name>`` whose value the kernel reads from the environment variable
    ``FER_PARAMETER_<NAME>`` (``notebook.check_parameters``), so no absolute path of the machine is
    written into a shared notebook."""
    resolved = [Path(path).resolve() for path in paths if path]
    if all(path.is_relative_to(PROJECT_ROOT) for path in resolved):
        return PATH_SEPARATOR.join(str(path.relative_to(PROJECT_ROOT)) for path in resolved)
    # kernels inherit the environment
    os.environ[PARAMETER_ENV + name] = PATH_SEPARATOR.join(str(path) for path in resolved)
    return f"<{name.lower()}>"


def check_data(root: Path) -> None:
    """Fail fast on a broken copy before any notebook runs. Images are only checked for presence
    here; notebook 01 decodes every one (decoding twice would double the cost on a real RAF-DB)."""
    report = check_rafdb(root, decode_images=False)
    if report.errors and report.read_nothing:
        raise SystemExit("\n".join(report.errors))
    print(report.table())
    if not report.ok:
        for problem in report.errors[:50]:
            print(f"error: {problem}")
        raise SystemExit(
            f"{len(report.errors)} problem(s) in {root}; run `python -m fer_lib check-data "
            f"{root}` for all"
        )


def describe_data(root: Path) -> dict:
    """A data set's class list, layout, protocol and excluded rows (its classes.json; RAF-DB itself
    has none: its 7 classes), for the report."""
    classes, info = read_classes(resolve_root(root))
    return {**info, "classes": list(classes)}


def machine_info() -> dict:
    """What a run ran on: CPU model and cores, GPU, torch and Python versions, the
    project's commit, the date."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )

    def git(*words: str) -> bytes:
        return subprocess.run(
            ["git", *words], cwd=PROJECT_ROOT, capture_output=True, check=True
        ).stdout

    try:
        commit = git("rev-parse", "--short", "HEAD").decode().strip()
        dirty = git(
            "status", "--porcelain", "--untracked-files=no", "--", "fer_lib", "notebooks"
        ).strip()
        commit += " (with uncommitted changes)" if dirty else ""
        # which uncommitted changes: two runs of one dirty tree are still the same
        # source (replication.replicate_of)
        diff = git("diff", "HEAD", "--", "fer_lib", "notebooks")
        source = hashlib.sha256(diff).hexdigest()[:16] if dirty else ""
    except (OSError, subprocess.CalledProcessError):
        commit, source = "unknown (not a git checkout)", ""
    return {
        "cpu": cpu,
        "cpu_cores": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        "cpu_path": cpu_path(),  # fp32 or bf16 autocast: another path gives other numbers
        "torch": torch.__version__,
        "python": platform.python_version(),
        "commit": commit,
        "source": source,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def notebooks() -> list[Path]:
    return sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))


# Kernels inherit the environment: a headless MPLBACKEND (run_all.sh sets Agg) would keep every
# figure out of the executed notebooks and so out of the HTML report.
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"


def kernel_environment() -> dict[str, str]:
    """What the notebooks' kernels get on top of this process's environment: figures inline, widgets
    off (no one uses them in a rendered report)."""
    return {"MPLBACKEND": INLINE_BACKEND, BATCH_REPORT_ENV: "1"}


def _execute(
    notebook: Path,
    executed: Path,
    parameters: dict,
    kernels: WarmKernels | None = None,
    ahead: bool = False,
) -> None:
    """Execute ``notebook`` into ``executed`` in a fresh kernel (``kernels``' warm one if ready;
    ``ahead``: then start warming the next notebook's)."""
    # papermill: 3.5 s (2 busy cores) at every notebook's start (run.notebook imports this module)
    import papermill

    environment = kernel_environment()
    saved = {name: os.environ.get(name) for name in environment}
    os.environ.update(environment)  # a kernel papermill starts itself inherits it
    try:
        papermill.execute_notebook(
            str(notebook),
            str(executed),
            parameters=parameters,
            cwd=str(NOTEBOOK_DIR),
            # which notebook, cell by cell, with the time left
            progress_bar={"desc": notebook.stem, "unit": "cell"},
            # the notebooks' "fer-lib" needs registering (./run_all.sh lab)
            kernel_name=PIPELINE_KERNEL,
            kernel_manager_class=kernels.manager_class(ahead)
            if kernels
            else EncryptedKernelManager,
        )
        _strip_machine_paths(executed)
    except papermill.PapermillExecutionError as error:
        raise SystemExit(
            f"notebook {notebook.name} failed in cell {error.exec_count} ({error.ename}: "
            f"{error.evalue}).\nThe executed copy with the traceback: {executed}"
        ) from None
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _strip_machine_paths(executed: Path) -> None:
    """papermill records where it read and wrote the notebook; keep those
    paths relative to the project."""
    import nbformat  # here: 4 s at every notebook's start (run.notebook imports this module)

    notebook = nbformat.read(executed, as_version=4)
    record = notebook.metadata.get("papermill", {})
    for key in ("input_path", "output_path"):
        if record.get(key):
            record[key] = relative(record[key])
    nbformat.write(notebook, executed)


def _render_html(executed: Path, report_dir: Path) -> Path:
    import nbformat  # here, as in _strip_machine_paths
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nbformat.read(executed, as_version=4))
    target = report_dir / executed.with_suffix(".html").name
    target.write_text(body, encoding="utf-8")
    return target


def write_results_digest(
    tables_dir: Path, figures_dir: Path, profile: str, data_root: Path, arithmetic: str = ""
) -> Path:
    """All tables of a run (their Markdown files) in one page beside the figures, for sharing and
    the README; ``arithmetic``: which precision path computed them
    (``precision.arithmetic_note``)."""
    parts = [
        f"# Results: profile {profile}\n\nGenerated by `./run_all.sh` from the saved predictions; "
        f"data: `{relative(data_root)}`{'; ' + arithmetic if arithmetic else ''}.\n"
    ]
    for table in sorted(Path(tables_dir).glob("*.md")):
        parts.append(f"## {table.stem}\n\n{table.read_text()}")
    return save_text("\n".join(parts), Path(figures_dir) / "RESULTS.md")


FOLD_PATTERN = "fold_[0-9][0-9]"  # what convert-data --fold all writes, one copy per fold


def fold_copies(root: Path) -> list[Path]:
    """The per-fold copies that ``convert-data --fold all`` wrote under ``root`` (CK+'s subject-wise
    protocol), in fold order; [] for any other folder."""
    root = Path(root)
    if not root.is_dir() or (root / "EmoLabel").is_dir():
        return []
    return sorted(p for p in root.glob(FOLD_PATTERN) if (p / "EmoLabel").is_dir())


def run_folds(
    profile: str, folds: list[Path], *, run_dir: Path | None = None, settings=None, **options
) -> int:
    """CK+'s protocol, every fold run and reported: the whole report on each fold's copy
    (``<run_dir>/fold_NN``, each with its own report page), then Table 6's OA and AA of every model
    on each fold with their mean and sd over the folds (``<run_dir>/tables/folds_summary.*``), read
    from the folds' saved tables. ``options``: as ``run_all``'s. Stops at the first fold that fails;
    a rerun reuses the folds already done."""
    spec = get_profile(profile, settings)
    default = run_dir_for(spec)
    base = Path(run_dir) if run_dir else default.with_name(f"{default.name}-folds")
    for number, fold in enumerate(folds, start=1):
        print(f"==> {fold.name}, {number} of {len(folds)} folds: {relative(fold)}")
        folder = base / fold.name
        status = run_all(
            profile,
            data=fold,
            settings=settings,
            run_dir=folder,
            figures_dir=folder / "figures",
            **options,
        )
        if status:
            return status
    summary = fold_summary({fold.name: base / fold.name / "tables" for fold in folds})
    tables.save_table(
        summary,
        "folds_summary",
        base / "tables",
        caption=(
            f"Table 6 on each of {len(folds)} subject-wise folds (each model tested on its own "
            "fold), then the mean and sd over the folds: the protocol's reported number"
        ),
    )
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"==> folds summary: {relative(base / 'tables' / 'folds_summary.md')}")
    return 0


def fold_summary(tables: dict[str, Path]) -> pd.DataFrame:
    """Table 6's OA and AA of every model on each fold (``tables``: fold name -> its tables folder),
    then their mean and sample sd over the folds."""
    rows = []
    for fold, folder in tables.items():
        path = Path(folder) / "table6_overall.csv"
        if not path.exists():
            raise FileNotFoundError(f"{path}: the fold's report has no Table 6; run it again")
        for row in pd.read_csv(path).itertuples(index=False):
            rows.append({"model": row.model, "fold": fold, "OA": row.oa_top1, "AA": row.aa})
    per_fold = pd.DataFrame(rows)
    over_folds = per_fold.groupby("model", sort=False)[["OA", "AA"]]
    mean = over_folds.mean().reset_index().assign(fold=f"mean over {len(tables)} folds")
    sd = over_folds.std(ddof=1).reset_index().assign(fold="sd over the folds")
    return pd.concat([per_fold, mean, sd], ignore_index=True)[["model", "fold", "OA", "AA"]]


def run_all(
    profile: str,
    data: Path | None = None,
    baseline_checkpoint: Path | None = None,
    *,
    settings: dict[str, str] | None = None,
    pretrained: Path | None = None,
    run_dir: Path | None = None,
    figures_dir: Path | None = None,
    workers: int | None = None,
    replicate: int | None = None,
    force: bool = False,
    cross_data: list[Path] | None = None,
    launcher: str | None = None,
    launch_options=None,
    runs_per_gpu: int | str = 1,
    run_memory_gb: float | None = None,
) -> int:
    """Data check, then every notebook in order (stopping at the first failure), the HTML report.

    ``cross_data``: other data sets (RAF-DB's layout, or converted) that notebook 09 tests the run's
    models on (``fer_lib.apps.crossdata``).

    ``replicate``: afterwards, the same run with every training seed shifted by this much (its own
    run folder), then this run's report again (everything reused), so that both summaries compare
    the two runs' verdicts (``replication.replicate_of``); the comparison is also written to
    ``<figures>/seed_stability.*``.

    A rerun executes only the notebooks whose inputs changed since they last ran
    (``fer_lib.run.freshness``); ``force`` executes every one.

    ``settings`` are ``--set`` overrides of the profile (checked before any work starts). Before the
    first notebook that trains (03), every model of the profile is trained in ``workers`` parallel
    processes (``fer_lib.run.scheduler``; None: ``runs_per_gpu`` per GPU, a number or "auto" from
    the measured peak memory of a run (``run_memory_gb``, or recorded in the run folder), or one per
    CPU core; 0: none, the notebooks train one model at a time). ``launcher`` ("slurm", "local",
    "debug"): through submitit instead (``fer_lib.run.launch``, with ``launch_options``).
    """
    started = time.perf_counter()
    spec = get_profile(profile, settings)
    base = Path(run_dir) if run_dir else run_dir_for(spec)
    figures = Path(figures_dir) if figures_dir else figures_dir_for(spec, base)
    cross_data = [Path(root) for root in cross_data or ()]
    data_root = prepare_data(spec, data, base, cross_data, bool(baseline_checkpoint or pretrained))
    run = _Run(spec, data_root, base, figures, baseline_checkpoint, pretrained, cross_data)
    if spec.synthetic and data is None:  # a set given with --data is named by its path
        run.info["data"] = f"synthetic RAF-DB {spec.synthetic}"
    run.launcher, run.launch_options = launcher, launch_options
    run.packing = {"runs_per_gpu": runs_per_gpu, "run_memory_gb": run_memory_gb}
    pages, reused = run.notebooks(workers, force)
    if reused:
        run.info["notebooks_reused"] = reused  # their seconds: those of the run that executed them
        save_json(run.info, base / "run_info.json")
        print(
            f"==> up to date, not executed again: {', '.join(reused)} (nothing they read has "
            "changed; --force executes every notebook)"
        )
    index = run.report(pages)
    print(f"==> done in {time.perf_counter() - started:.0f} s; report: {relative(index)}")
    if replicate:
        _replicate(
            spec,
            replicate,
            data=data,
            baseline_checkpoint=baseline_checkpoint,
            settings=settings,
            pretrained=pretrained,
            run_dir=run_dir,
            figures_dir=figures_dir,
            workers=workers,
            force=force,
            cross_data=cross_data,
            launcher=launcher,
            launch_options=launch_options,
            runs_per_gpu=runs_per_gpu,
            run_memory_gb=run_memory_gb,
            main_run=base,
            figures=figures,
        )
    return 0


def prepare_data(spec, data, base: Path, cross_data: list[Path], has_weights: bool) -> Path:
    """Every data set checked before the run folder is made (a broken one is named first), then the
    run folder claimed and the data set's root (the synthetic set generated into it)."""
    if data is None and spec.synthetic is None:
        ensure_data(spec, data)  # says that the profile needs a real data set
    for root in filter(None, [data, *cross_data]):
        check_data(Path(root))
    base.mkdir(parents=True, exist_ok=True)
    claim_run_dir(base, spec)
    print(
        f"==> {spec.describe(None if data is None else f'the data set at {relative(Path(data))}')}"
    )
    if spec.synthetic is None and not has_weights:
        print(
            "==> warning: no --baseline-checkpoint and no --pretrained: the baseline trains from "
            "random initialisation and cannot be compared with the paper's 0.9205 (the report "
            "says so too)"
        )
    data_root = ensure_data(spec, data, base)
    if data is None:
        check_data(data_root)  # the synthetic set, generated into the run folder
    return data_root


class _Run:
    """One run's notebooks: their parameters, the run's record (``run_info.json``) and the
    freshness of each notebook's inputs."""

    def __init__(self, spec, data_root, base, figures, baseline_checkpoint, pretrained, cross_data):
        self.spec, self.data_root, self.base, self.cross_data = spec, data_root, base, cross_data
        self.baseline_checkpoint, self.pretrained = baseline_checkpoint, pretrained
        self.executed_dir, self.report_dir = base / "executed", base / "report"
        self.executed_dir.mkdir(parents=True, exist_ok=True)
        self.report_dir.mkdir(parents=True, exist_ok=True)
        self.parameters = {
            "PROFILE": spec.name,
            "SETTINGS": json.dumps(spec.overrides()) if spec.overrides() else "",
            "DATA_ROOT": portable_parameter("DATA_ROOT", data_root),
            "RUN_DIR": portable_parameter("RUN_DIR", base),
            "BASELINE_CHECKPOINT": portable_parameter("BASELINE_CHECKPOINT", baseline_checkpoint),
            "PRETRAINED": portable_parameter("PRETRAINED", pretrained),
            "FIGURES_DIR": portable_parameter("FIGURES_DIR", figures),
            "CROSS_DATA": portable_parameter("CROSS_DATA", *cross_data),
        }
        warning = self.experiment().baselines.warning()
        data_info = describe_data(data_root)
        self.info = {
            **machine_info(),
            "profile": spec.name,
            "settings": spec.overrides(),
            # what replication.replicate_of compares (run_all names a generated synthetic set)
            "data": self.parameters["DATA_ROOT"],
            "warnings": [warning] if warning else [],
            "data_layout": data_info.get("layout", "RAF-DB"),
            "data_classes": data_info["classes"],
            "data_protocol": data_info.get("protocol", []),
            "data_excluded": data_info.get("excluded", {}),
            "notebook_seconds": {},
            "device": str(pick_device()),  # what every training and notebook of this run ran on
        }
        self.figures = figures
        self.launcher, self.launch_options = None, None
        self.packing: dict = {}  # runs per GPU, and a run's memory (scheduler.train_all)

    def report(self, pages: list[Path]) -> Path:
        """The landing page over the notebooks' pages, and the tables' digest; returns the page."""
        # the report's verdicts load scipy.stats: 6 s (2 busy cores) at every notebook's start
        from fer_lib.report.landing import write_landing_page

        spec_page = PROJECT_ROOT / "docs" / "SPEC.md"
        index = write_landing_page(self.base, self.report_dir, pages, self.figures, spec=spec_page)
        arithmetic = arithmetic_note(self.info["device"], self.info["cpu_path"])
        digest = write_results_digest(
            self.base / "tables", self.figures, self.spec.name, self.data_root, arithmetic
        )
        print(f"==> tables digest: {relative(digest)}")
        return index

    def experiment(self) -> Experiment:
        spec, checkpoint = self.spec, self.baseline_checkpoint
        return Experiment(spec, self.data_root, self.base, checkpoint, pretrained=self.pretrained)

    def notebooks(self, workers: int | None, force: bool) -> tuple[list[Path], list[str]]:
        """Every notebook in order, each executed unless its inputs are unchanged; the models are
        trained in parallel before 03. Returns the HTML pages and the notebooks reused."""
        inputs = freshness.hash_parts(
            freshness.source_key(),
            freshness.environment_key(self.info["cpu"], self.info["cpu_path"]),
            {name: value for name, value in self.parameters.items() if name != "CROSS_DATA"},
            self.spec.settings(),
            freshness.folder_key(self.data_root),
        )
        fresh = freshness.Freshness(self.base, self.figures, inputs, force=force)
        pages, reused, seconds = [], [], self.info["notebook_seconds"]
        kernels, every = WarmKernels(NOTEBOOK_DIR, kernel_environment()), notebooks()
        try:
            for notebook in every:
                fresh.advance(notebook, *self._inputs_beyond_the_run(notebook, fresh, workers))
                executed = self.executed_dir / notebook.name
                page = self.report_dir / notebook.with_suffix(".html").name
                if fresh.is_fresh(notebook, page):
                    reused.append(notebook.stem)
                    seconds[notebook.stem] = fresh.seconds(notebook)
                    pages.append(page)
                    continue
                print(f"==> {notebook.name}")
                before, clock = fresh.snapshot(), time.perf_counter()
                _execute(notebook, executed, self.parameters, kernels, ahead=notebook != every[-1])
                seconds[notebook.stem] = round(time.perf_counter() - clock, 1)
                pages.append(_render_html(executed, self.report_dir))
                fresh.ran(notebook, before, seconds[notebook.stem])
                save_json(self.info, self.base / "run_info.json")
        finally:
            kernels.close()  # one started ahead for a notebook that turned out up to date
        return pages, reused

    def _train(self, workers: int | None) -> None:
        """Every model of the profile, before the notebooks: in ``workers`` processes here, or as
        submitit tasks. Its own Experiment: the decoded images it loads are freed before the
        notebooks run."""
        if not self.launcher:
            train_all(self.experiment(), workers=workers, **self.packing)
            return
        listed = self.base / "jobs.json"
        write_jobs(self.experiment(), listed)
        launch(listed, self.launcher, self.launch_options, **self.packing)

    def _inputs_beyond_the_run(self, notebook: Path, fresh, workers: int | None) -> tuple:
        """What a notebook reads besides the run's inputs: from 03 on the trained models (trained
        here first, in parallel), for 09 the other data sets' files."""
        if notebook.name.startswith("03"):
            if self.launcher or workers != 0:
                clock = time.perf_counter()
                self._train(workers)
                self.info["notebook_seconds"]["training (parallel, before 03)"] = round(
                    time.perf_counter() - clock, 1
                )
            return fresh.models_key(), freshness.sibling_key(self.base, self.figures)
        if notebook.name.startswith("09"):
            return (self.parameters["CROSS_DATA"], *map(freshness.folder_key, self.cross_data))
        return ()


def _replicate(
    spec, offset: int, *, main_run: Path, figures: Path, settings: dict | None, **arguments
) -> None:
    """``run_all``'s second run with seeds shifted by ``offset`` (its own folder and figures), this
    run's report again (reused models: notebooks only), and the two runs' comparison in
    ``<figures>/seed_stability.*``."""
    # the report's verdicts load scipy.stats: 2.5 s (2 busy cores) at every notebook's start
    from fer_lib.report import replication, tables

    shifted = {**(settings or {}), "seed_offset": str(spec.seed_offset + offset)}
    print(f"==> replicate: the same run with seed offset {spec.seed_offset + offset}")
    run_all(spec.name, **{**arguments, "run_dir": None, "figures_dir": None}, settings=shifted)
    print("==> this run's report again, now beside its replicate (every model reused)")
    run_all(spec.name, **arguments, settings=settings)
    other = replication.replicate_of(main_run)
    if other is None:
        raise SystemExit(
            f"run-all --replicate: the second run is not a replicate of {relative(main_run)} "
            "(another commit or settings?)"
        )
    table = replication.stability_table([main_run, other])
    tables.save_table(
        table,
        replication.STABILITY_FILE,
        figures,
        caption=(
            "This run and its replicate with other training seeds: headline numbers and verdicts"
        ),
    )
    print(
        f"==> replicate: {replication.agreement_counts(table)}; "
        f"{relative(figures / (replication.STABILITY_FILE + '.md'))}"
    )
