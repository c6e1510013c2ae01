"""A run of the study, as the notebooks call it: an ``Experiment`` holds one profile's data and
folders (``runs/<profile>/``), and its ``baselines`` (``fer_lib.run.baselines``) and ``fusion`` runs
(``fer_lib.run.fusion_runs``), which train or reuse every model and say which (never silently).
Tables go to ``tables_dir`` and figures to ``figures_dir``.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np

from fer_lib.data.rafdb import RafDb, RafDbError, load_rafdb, read_classes, resolve_root
from fer_lib.data.tensors import SplitTensors, split_tensors
from fer_lib.io import relative
from fer_lib.run.baselines import Baselines
from fer_lib.run.fusion_runs import FusionRuns
from fer_lib.run.profiles import Profile, as_profile
from fer_lib.runtime import devices


def synthetic_data_root(run_dir: Path) -> Path:
    """Where a run keeps its profile's synthetic set (``pipeline.ensure_data`` writes it there)."""
    return Path(run_dir) / "data" / "basic"


def stratified_subset(labels: np.ndarray, limit: int | None, seed: int = 0) -> np.ndarray:
    """Sorted indices of ``limit`` samples with each class's share kept (at least one per present
    class)."""
    labels = np.asarray(labels)
    if limit is None or limit >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quota = np.maximum(1, np.floor(counts * limit / len(labels)).astype(int))
    for k in np.argsort(-(counts * limit / len(labels) - quota))[: max(0, limit - quota.sum())]:
        quota[k] += 1  # largest remainders first
    picks = [
        rng.choice(np.flatnonzero(labels == c), size=min(q, n), replace=False)
        for c, q, n in zip(classes, quota, counts)
    ]
    return np.sort(np.concatenate(picks))


class Experiment:
    """Everything one profile trains and evaluates, reusing finished artefacts from ``run_dir``."""

    def __init__(
        self,
        profile: str | Profile,
        data_root: str | Path,
        run_dir: str | Path,
        baseline_checkpoint: str | Path | None = None,
        *,
        pretrained: str | Path | None = None,
        figures_dir: str | Path | None = None,
        cross_data: tuple[str | Path, ...] = (),
        progress: bool = True,
    ):
        self.profile = as_profile(profile)
        self.data_root = Path(data_root)
        self.run_dir = Path(run_dir)
        # every table as CSV, Markdown and LaTeX (report.save_table)
        self.tables_dir = self.run_dir / "tables"
        # figures as PNG and PDF: the committed figures/<profile> for a default run
        # (notebook.start), else here
        self.figures_dir = Path(figures_dir) if figures_dir else self.run_dir / "figures"
        self.baseline_checkpoint = Path(baseline_checkpoint) if baseline_checkpoint else None
        # torchvision's ResNet18 ImageNet weights for a trained baseline
        self.pretrained = Path(pretrained) if pretrained else None
        # other data sets the run's models are also tested on (notebook 09, fer_lib.apps.crossdata)
        self.cross_data = tuple(Path(root) for root in cross_data)
        self.progress = progress
        self.device = devices.pick_device()
        self.cache_dir = self.run_dir / "cache"
        self.baselines = Baselines(self)
        self.fusion = FusionRuns(self)

    @property
    def data_label(self) -> str:
        """Which data set every number comes from (printed under every table): a converted set by
        its layout."""
        try:
            layout = read_classes(resolve_root(self.data_root))[1].get("layout", "RAF-DB")
        except RafDbError:
            layout = "RAF-DB"  # the data check reports what is wrong with it
        if layout != "RAF-DB":
            return f"{layout}, converted, at {relative(self.data_root)}"
        return (
            "synthetic RAF-DB (demo data, not real faces)"
            if self.on_synthetic_data
            else f"RAF-DB at {relative(self.data_root)}"
        )

    @property
    def on_synthetic_data(self) -> bool:
        """Whether the run reads its profile's synthetic set (where ``pipeline.ensure_data`` writes
        it), not a data set it was given."""
        generated = synthetic_data_root(self.run_dir)
        return bool(self.profile.synthetic) and self.data_root.resolve() in (
            generated.resolve(),
            generated.parent.resolve(),
        )

    # -- data --------------------------------------------------------------------------------------
    @cached_property
    def classes(self) -> tuple[str, ...]:
        """The data set's class list, in label order: RAF-DB's 7, or a converted copy's (its
        ``classes.json``, 8 with Contempt). Every per-class table, confusion matrix and example pick
        of the report follows it."""
        return read_classes(resolve_root(self.data_root))[0]

    @cached_property
    def rafdb(self) -> RafDb:
        return load_rafdb(self.data_root, progress=self.progress, cache_dir=self.cache_dir)

    def _split_tensors(self, name: str, limit: int | None) -> SplitTensors:
        """A split at the profile's input size; a stratified subset where ``limit`` asks."""
        split = self.rafdb.split(name)
        if limit is not None and limit < len(split):
            split = split.subset(stratified_subset(split.labels, limit))
        return split_tensors(
            split, self.profile.input_size, cache_dir=self.cache_dir, progress=self.progress
        )

    @property
    def splits(self) -> tuple[SplitTensors, SplitTensors]:
        """(train, test); each is decoded on first use only (reading a finished run needs the test
        split alone)."""
        return self.train, self.test

    @property
    def seeds(self) -> list[int]:
        """The training seeds of this run (``seed_offset`` onwards)."""
        return self.profile.seed_list

    @cached_property
    def train(self) -> SplitTensors:
        return self._split_tensors("train", self.profile.train_limit)

    @cached_property
    def test(self) -> SplitTensors:
        return self._split_tensors("test", self.profile.test_limit)
