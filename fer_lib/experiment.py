"""The experiments of the report, as the notebooks call them: profiles, and an ``Experiment`` that trains or
reuses every model of a profile and keeps its artefacts under ``runs/<profile>/``.

A profile fixes the data set and the sizes. ``Experiment`` methods either compute an artefact or reuse a
finished one and say so (never silently): the decoded images, the baseline, the frozen-feature caches
and each fusion run (one folder per weighting, w and seed, holding its checkpoints and prediction tables).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fer_lib import data as D
from fer_lib import explain as E
from fer_lib import models as M
from fer_lib import training as T
from fer_lib.io import save_csv
from fer_lib.rafdb import RafDb, load_rafdb


@dataclass(frozen=True)
class Profile:
    name: str
    synthetic: tuple[int, int] | None  # (train, test) sizes of the synthetic set; None: the user's RAF-DB
    input_size: int  # network input (224 in the paper)
    baseline_width: int  # ResNet18 base width (64 in the paper)
    baseline_epochs: int
    landmark_width: int  # landmark CNN base width (32 in the paper, Table 1)
    fusion_epochs: int
    seeds: int  # training seeds of every landmark-branch configuration
    w_grid: tuple[float, ...]  # Fig. 4
    batch_train: int = 256
    batch_fusion: int | None = None  # training batch of the landmark branch + fusion; None: batch_train
    batch_test: int = 64  # the paper tests with batch 64
    batch_study: tuple[int, ...] = (1, 16, 64, 256)  # ARM's batch-term study (notebook 3)
    synthetic_seed: int = 0

    def describe(self) -> str:
        data = f"synthetic RAF-DB ({self.synthetic[0]} train / {self.synthetic[1]} test)" if self.synthetic else "RAF-DB (basic)"
        return (
            f"profile {self.name}: {data}; input {self.input_size}px; ResNet18 width {self.baseline_width}, "
            f"{self.baseline_epochs} epochs; landmark CNN width {self.landmark_width}, {self.fusion_epochs} epochs, {self.seeds} seed(s)"
        )


W_GRID_PAPER = tuple(round(0.1 * i, 1) for i in range(11))
PROFILES = {
    # tiny, for the tests: every notebook in seconds
    "smoke": Profile("smoke", (140, 70), 128, 4, 2, 2, 1, 2, (0.0, 0.6, 1.0), batch_train=32, batch_study=(8, 64)),
    # the CPU demo: narrow networks at 128 px so the whole report runs in under 10 minutes on 2 cores. The
    # landmark branch trains with batch 32: its CNN then runs 1.4-1.7x faster per image than at 64 on this CPU
    # (its early maps fit the cache; benchmarks/README.md) and takes twice the steps per epoch.
    "demo": Profile("demo", (1600, 500), 128, 16, 7, 2, 3, 2, (0.0, 0.6, 1.0), batch_train=64, batch_fusion=32),
    # the paper's settings on the user's RAF-DB, meant for a GPU
    "paper": Profile("paper", None, 224, 64, 70, 32, 10, 5, W_GRID_PAPER),
}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}")
    return PROFILES[name]


@dataclass
class FusionRun:
    """One trained landmark branch + fusion: its folder and its test-set predictions."""

    weighting: str
    w: float
    seed: int
    folder: Path
    predictions: T.FusionPredictions
    history: pd.DataFrame = field(repr=False)


class Experiment:
    """Everything one profile trains and evaluates, reusing finished artefacts from ``run_dir``."""

    def __init__(self, profile: str | Profile, data_root: str | Path, run_dir: str | Path, baseline_checkpoint: str | Path | None = None, *, progress: bool = True):
        self.profile = get_profile(profile) if isinstance(profile, str) else profile
        self.data_root = Path(data_root)
        self.run_dir = Path(run_dir)
        self.baseline_checkpoint = Path(baseline_checkpoint) if baseline_checkpoint else None
        self.progress = progress
        self.device = M.pick_device()
        self.cache_dir = self.run_dir / "cache"
        self._rgb_caches: dict[str, torch.Tensor] = {}

    @property
    def data_label(self) -> str:
        """Which data set every number comes from (printed under every table)."""
        return "synthetic RAF-DB (demo data, not real faces)" if self.profile.synthetic else f"RAF-DB at {self.data_root}"

    # -- data ------------------------------------------------------------------------------------------
    @cached_property
    def rafdb(self) -> RafDb:
        return load_rafdb(self.data_root, progress=self.progress)

    @cached_property
    def splits(self) -> tuple[D.SplitTensors, D.SplitTensors]:
        return tuple(
            D.split_tensors(self.rafdb.split(name), self.profile.input_size, cache_dir=self.cache_dir, progress=self.progress)
            for name in ("train", "test")
        )

    @property
    def train(self) -> D.SplitTensors:
        return self.splits[0]

    @property
    def test(self) -> D.SplitTensors:
        return self.splits[1]

    # -- baseline --------------------------------------------------------------------------------------
    def baseline_config(self) -> T.BaselineConfig:
        p = self.profile
        return T.BaselineConfig(input_size=p.input_size, width=p.baseline_width, epochs=p.baseline_epochs, batch_size=p.batch_train, eval_batch_size=p.batch_test)

    @property
    def baseline_dir(self) -> Path:
        return self.run_dir / "baseline"

    @cached_property
    def baseline(self) -> M.ARMNet:
        """The frozen RGB network: the given checkpoint, else a finished training run, else trained now."""
        if self.baseline_checkpoint is not None:
            print(f"baseline: loading {self.baseline_checkpoint}")
            model = M.load_arm_checkpoint(self.baseline_checkpoint, input_size=self.profile.input_size)
        else:
            history = self.baseline_dir / "history.csv"
            finished = history.exists() and len(pd.read_csv(history)) >= self.profile.baseline_epochs
            print(f"baseline: {'reusing the finished run in' if finished else 'training (or resuming) in'} {self.baseline_dir}")
            model = T.train_baseline(self.train, self.baseline_config(), self.baseline_dir, device=self.device, progress=self.progress)
        return model.to(self.device).eval()

    def baseline_history(self) -> pd.DataFrame | None:
        path = self.baseline_dir / "history.csv"
        return pd.read_csv(path) if self.baseline_checkpoint is None and path.exists() else None

    def baseline_probabilities(self, batch_size: int | None = None, order: np.ndarray | None = None, affinity: str = "batch") -> np.ndarray:
        """Test-set probabilities (in test order) with a given test batch size, image order and affinity.

        Only ARM's batch term depends on the batch, so the frozen per-image features are computed once (the
        test cache) and the batch term and fc are applied per batch: the same numbers as running the whole
        network batch by batch (a test checks it), in a fraction of the time.
        """
        batch_size = batch_size or self.profile.batch_test
        order = np.arange(len(self.test)) if order is None else np.asarray(order)
        model = self.baseline
        if affinity == "fixed" and torch.isnan(model.arm.population_mean).any():
            T.estimate_population_means(model, self.train, self.rgb_cache("train"))
        per_image = self.rgb_cache("test")[0][torch.as_tensor(order)]
        model.set_affinity(affinity)
        try:
            with torch.no_grad():
                logits = torch.cat([model.head_from_per_image(chunk.to(self.device)).cpu() for chunk in per_image.split(batch_size)])
        finally:
            model.set_affinity("batch")
        probabilities = np.empty((len(order), logits.shape[1]), dtype=np.float32)
        probabilities[order] = logits.softmax(1).numpy()
        return probabilities

    def baseline_predictions(self) -> pd.DataFrame:
        """The baseline's test predictions at the profile's batch size, saved as a table."""
        frame = T.prediction_frame(self.test.names, self.test.labels.numpy(), self.baseline_probabilities())
        save_csv(frame, self.run_dir / "predictions" / "baseline_test.csv")
        return frame

    # -- frozen-feature caches ---------------------------------------------------------------------------
    def rgb_cache(self, split: str) -> torch.Tensor:
        """The frozen baseline's per-image features of a split (train: also flipped), computed or read once."""
        if split not in self._rgb_caches:
            tensors = self.train if split == "train" else self.test
            flips = (False, True) if split == "train" else (False,)
            self._rgb_caches[split] = T.rgb_feature_cache(self.baseline, tensors, flips=flips, cache_dir=self.cache_dir, progress=self.progress)
        return self._rgb_caches[split]

    # -- landmark branch + fusion ------------------------------------------------------------------------
    def fusion_config(self, weighting: str = "both", w: float = 0.6, seed: int = 0) -> T.FusionConfig:
        p = self.profile
        return T.FusionConfig(weighting=weighting, w_disagree=float(w), width=p.landmark_width, epochs=p.fusion_epochs, batch_size=p.batch_fusion or p.batch_train, eval_batch_size=p.batch_test, seed=seed)

    def fusion_dir(self, weighting: str, w: float, seed: int) -> Path:
        return self.run_dir / "fusion" / f"{weighting}_w{w:.2f}_seed{seed}"

    def fusion_run(self, weighting: str = "both", w: float = 0.6, seed: int = 0) -> FusionRun:
        """Train (or reuse) one landmark branch + fusion and return its test predictions.

        Configurations that compute the same thing share one run: w does not matter without the agreement
        factor, and w = 1 turns "both" into "confidence" and "agreement" into "none".
        """
        weighting, w = canonical_weighting(weighting, w)
        config = self.fusion_config(weighting, w, seed)
        folder = self.fusion_dir(weighting, w, seed)
        done = folder / "predictions_fused.csv"
        if done.exists():
            print(f"fusion {weighting} w={w:.2f} seed {seed}: reusing {folder}")
            predictions = read_fusion_predictions(folder)
        else:
            model = T.train_fusion(self.baseline, self.train, self.rgb_cache("train"), config, folder, device=self.device, progress=self.progress)
            predictions = T.predict_fusion(model, self.test, self.rgb_cache("test"), config)
            T.save_fusion_predictions(predictions, folder)
        return FusionRun(weighting, float(w), seed, folder, predictions, pd.read_csv(folder / "history.csv"))

    def fusion_model(self, weighting: str = "both", w: float = 0.6, seed: int = 0) -> tuple[M.FusionModel, T.FusionConfig]:
        """The selected checkpoint (``best.pt``) of one fusion run (trained first if missing), on the device."""
        run = self.fusion_run(weighting, w, seed)
        model, config = T.load_fusion_checkpoint(run.folder / "best.pt", self.baseline)
        return model.to(self.device).eval(), config

    def explain(self, model: M.FusionModel, config: T.FusionConfig, index, *, target: str = "predicted", affinity: str = "batch") -> E.Explanation:
        """Grad-CAM++ of test images on both branches (see ``fer_lib.explain``), ARM terms held as evaluated."""
        if affinity == "fixed":
            T.estimate_population_means(model, self.train, self.rgb_cache("train"), config)
        return E.explain(model, self.test, self.rgb_cache("test"), config, index, target=target, affinity=affinity)

    def fusion_runs(self, weighting: str = "both", w: float = 0.6) -> list[FusionRun]:
        """One run per seed of the profile."""
        return [self.fusion_run(weighting, w, seed) for seed in range(self.profile.seeds)]


def canonical_weighting(weighting: str, w: float) -> tuple[str, float]:
    """The (weighting, w) that computes the same model: w only acts through the agreement factor."""
    if weighting not in M.WEIGHTINGS:
        raise ValueError(f"weighting {weighting!r} is not one of {M.WEIGHTINGS}")
    if float(w) == 1.0:
        weighting = {"both": "confidence", "agreement": "none"}.get(weighting, weighting)
    if weighting in ("none", "confidence"):
        w = 1.0
    return weighting, float(w)


def read_fusion_predictions(folder: Path) -> T.FusionPredictions:
    """FusionPredictions back from the three prediction tables of a fusion run."""
    frames = {head: pd.read_csv(Path(folder) / f"predictions_{head}.csv") for head in ("fused", "landmark", "rgb")}
    columns = [c for c in frames["fused"].columns if c.startswith("p_")]
    return T.FusionPredictions(
        names=frames["fused"]["image"].tolist(),
        labels=frames["fused"]["label"].to_numpy(),
        fused=frames["fused"][columns].to_numpy(),
        landmark=frames["landmark"][columns].to_numpy(),
        rgb=frames["rgb"][columns].to_numpy(),
        weight=frames["fused"]["weight"].to_numpy(),
    )
