"""Make-style freshness of a run's notebooks: a rerun executes only the notebooks whose inputs
changed.

A notebook's key chains what it can read: the library's source and the notebooks, the run's
parameters and settings, the installed versions and the CPU path (another CPU gives other numbers),
the data set's files, the trained models (from the first notebook after the training stage on), the
sibling runs a report compares with (``runs/*``: the "same verdict with other seeds" column) and the
previous notebook's key. A notebook is reused when its key is the one recorded when it last ran, its
executed copy and HTML page exist, and every file it wrote then (under the run folder and the
figures folder: what changed while it ran) is still as it left it. Once one notebook runs, every
later one runs too, since it may read what the first one wrote. ``run-all --force`` executes
everything.

Files are compared by size and modification time, not content: a stat of every file is cheap where
hashing the decoded-image cache would not be, and an edit or a ``git checkout`` changes the time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from importlib import metadata
from pathlib import Path

from fer_lib.io import PROJECT_ROOT, save_json

STAMPS = "freshness.json"  # in the run's executed/ folder
# Run-folder parts that are no notebook's output: inputs hashed elsewhere, caches rebuilt on demand,
# the pipeline's own
RUN_DIR_SKIP = ("data", "cache", "executed", "report", "logs", "run_info.json", "settings.json")
MODEL_FOLDERS = ("baseline", "fusion")  # what the training stage writes into a run folder
# The packages whose version can change a number or a figure of the report
PACKAGES = (
    "torch",
    "torchvision",
    "numpy",
    "pandas",
    "scipy",
    "scikit-learn",
    "matplotlib",
    "seaborn",
    "grad-cam",
    "adabelief-pytorch",
    "opencv-python-headless",
    "pillow",
    "papermill",
    "nbconvert",
    "ipykernel",
)


def hash_parts(*parts: object) -> str:
    digest = hashlib.sha256()
    for part in parts:
        if not isinstance(part, bytes):
            part = json.dumps(part, sort_keys=True, default=str).encode()
        digest.update(part)
    return digest.hexdigest()[:16]


def _stats(root: Path, skip: tuple[str, ...] = ()) -> dict[str, list[int]]:
    """{path relative to root: [size, mtime_ns]} of every file under ``root``, but the top-level
    names in ``skip``."""
    found = {}
    for folder, subfolders, files in os.walk(root):  # nothing for a missing root
        here = Path(folder)
        if here == root:
            subfolders[:] = [name for name in subfolders if name not in skip]
            files = [name for name in files if name not in skip]
        subfolders[:] = [name for name in subfolders if name != "__pycache__"]
        for name in files:
            path = here / name
            try:
                stat = path.stat()
            except OSError:  # removed while walking
                continue
            found[path.relative_to(root).as_posix()] = [stat.st_size, stat.st_mtime_ns]
    return found


def folder_key(root: Path) -> str:
    """Every file under ``root`` by name, size and time (a data set: its annotations and images)."""
    return hash_parts(_stats(Path(root)))


def source_key() -> str:
    """The library, its resources and the notebooks: any edit of them can
    change what a notebook shows."""
    parts = []
    for root in (PROJECT_ROOT / "fer_lib", PROJECT_ROOT / "notebooks"):
        for path in sorted(
            p
            for p in root.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and ".ipynb_checkpoints" not in p.parts
        ):
            parts += [path.relative_to(PROJECT_ROOT).as_posix(), path.read_bytes()]
    return hash_parts(*parts)


def environment_key(cpu: str, cpu_path: str) -> str:
    versions = dict.fromkeys(PACKAGES)
    for package in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    return hash_parts(sys.version, versions, cpu, cpu_path)


def _contents(paths) -> list:
    return [[path.name, path.read_bytes()] for path in sorted(paths) if path.is_file()]


def sibling_key(run_dir: Path, figures_dir: Path) -> str:
    """What a report reads from other runs: their identity, settings and tables
    (``replication.replicate_of``), and the recorded comparison in the figures folder
    (``replication.recorded_stability``). By content: a rerun that rewrites the same tables must not
    make the other run stale."""
    run_dir, parts = Path(run_dir), []
    if run_dir.parent.exists():
        for other in sorted(run_dir.parent.iterdir()):
            # a link to itself too
            if other.resolve() == run_dir.resolve() or not (other / "run_info.json").exists():
                continue
            try:
                info = json.loads((other / "run_info.json").read_text())
            except ValueError:
                info = {}
            identity = [info.get(key) for key in ("commit", "source", "data")]
            files = _contents([other / "settings.json", *(other / "tables").glob("*.csv")])
            parts.append([other.name, identity, files])
    parts.append(_contents(Path(figures_dir).glob("seed_stability.*")))
    by_hash = [json.dumps(p, default=lambda b: hashlib.sha256(b).hexdigest()) for p in parts]
    return hash_parts(*[part.encode() for part in by_hash])


class Freshness:
    """The record of one run's notebooks (``executed/freshness.json``) and the decisions a rerun
    makes from it."""

    def __init__(self, run_dir: Path, figures_dir: Path, base_key: str, *, force: bool = False):
        self.run_dir, self.figures_dir = Path(run_dir), Path(figures_dir)
        self.path = self.run_dir / "executed" / STAMPS
        self.force, self.key, self.ran_one = force, base_key, False
        try:
            self.record = json.loads(self.path.read_text()) if self.path.exists() else {}
        except ValueError:  # a damaged record: everything runs again
            self.record = {}

    def snapshot(self) -> dict[str, list[int]]:
        roots = [("run", self.run_dir, RUN_DIR_SKIP)]
        if not self.figures_dir.resolve().is_relative_to(self.run_dir.resolve()):
            roots.append(("figures", self.figures_dir, ()))
        return {
            f"{label}/{name}": stat
            for label, root, skip in roots
            for name, stat in _stats(root, skip).items()
        }

    def models_key(self) -> str:
        """The trained models and their predictions (``baseline*/``, ``fusion/``) that no notebook
        wrote: what the training stage leaves for the notebooks (a model a notebook fits, like the
        learned gate, is that notebook's output)."""
        written = {name for entry in self.record.values() for name in entry.get("outputs", {})}
        return hash_parts(
            {
                name: stat
                for name, stat in self.snapshot().items()
                if name.split("/")[1].startswith(MODEL_FOLDERS) and name not in written
            }
        )

    def advance(self, notebook: Path, *extra: str) -> None:
        """Chain ``notebook``'s own key onto the previous one's (``extra``:
        more inputs from here on)."""
        self.key = hash_parts(self.key, notebook.name, notebook.read_bytes(), *extra)

    def is_fresh(self, notebook: Path, page: Path) -> bool:
        entry = self.record.get(notebook.name)
        if self.force or self.ran_one or not entry or entry.get("key") != self.key:
            return False
        if not (self.run_dir / "executed" / notebook.name).exists() or not page.exists():
            return False
        now = self.snapshot()
        return all(now.get(name) == stat for name, stat in entry.get("outputs", {}).items())

    def ran(self, notebook: Path, before: dict[str, list[int]], seconds: float) -> None:
        """Record what ``notebook`` wrote (the files new or changed since ``before``)
        under its key, with what it wrote before and reused this time (a fitted model it
        found on disk stays its output)."""
        self.ran_one = True
        after = self.snapshot()
        outputs = {name: stat for name, stat in after.items() if before.get(name) != stat}
        previous = self.record.get(notebook.name, {}).get("outputs", {})
        outputs.update({name: stat for name, stat in previous.items() if after.get(name) == stat})
        self.record[notebook.name] = {
            "key": self.key,
            "outputs": outputs,
            "seconds": round(seconds, 1),
        }
        save_json(self.record, self.path)

    def seconds(self, notebook: Path) -> float | None:
        return self.record.get(notebook.name, {}).get("seconds")
