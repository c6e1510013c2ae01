"""The run's artefact cache, as the notebooks call it: an ``Experiment`` trains or reuses every model of a profile
(``fer_lib.run.profiles``) and keeps its artefacts under ``runs/<profile>/``.

``Experiment`` methods either compute an artefact or reuse a finished one and say so (never silently): the
decoded images, the baseline, the frozen-feature caches and each fusion run (one folder per weighting, w and
seed, holding its checkpoints and prediction tables). Tables go to ``tables_dir`` and figures to
``figures_dir``; the variants of the proposed model that notebook 06 trains are named here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fer_lib import models, training
from fer_lib.data.rafdb import RafDb, load_rafdb, read_classes, resolve_root
from fer_lib.data.tensors import SplitTensors, split_tensors
from fer_lib.evaluation.explain import Explanation
from fer_lib.evaluation.explain import explain as gradcam_explain
from fer_lib.io import relative, save_csv
from fer_lib.run.profiles import Profile, get_profile
from fer_lib.runtime import devices
from fer_lib.settings import PAPER_W, PAPER_WEIGHTING, PAPER_WEIGHTINGS, WEIGHTINGS

# Choices the paper does not state that can move the headline either way, each flipped in one ablation run of the
# proposed model (notebook 06, with ``design_ablations``): name -> (what the run is, given the profile's own
# FusionConfig; the FusionConfig changes).
DESIGN_VARIANTS = {
    "default-init": (
        lambda config: "fusion layer from PyTorch's default initialisation",
        lambda config: {"fusion_init_from_baseline": False},
    ),
    "flip-batch-norm": (
        lambda config: (
            "landmark CNN without BatchNorm (Table 1 as printed)"
            if config.batch_norm
            else "landmark CNN with BatchNorm"
        ),
        lambda config: {"batch_norm": not config.batch_norm},
    ),
}


# Naive fusion from PyTorch's default initialisation (design ablations): started from the baseline's fc, naive fusion
# begins as the baseline, which makes "naive fusion is no worse than the baseline" likely by construction.
NAIVE_DEFAULT_INIT = ("none", 1.0, "default-init")


# Beyond the paper (its section 6 and a reviewer's question): the landmark branch as an MLP on the plain coordinates,
# fused the same way (notebook 06, every profile); same shape as DESIGN_VARIANTS.
BRANCH_VARIANTS = {
    "coords": (
        lambda config: "coordinate MLP instead of heatmaps and the landmark CNN",
        lambda config: {"landmark_input": "coords"},
    ),
}
VARIANTS = {**DESIGN_VARIANTS, **BRANCH_VARIANTS}

# The (weighting, w) single photos are predicted with (notebook 09, the explorer, README's predict command): only its
# runs store the landmark ARM's population mean, a pass over the training images that the other runs skip.
PREDICTED_WITH = (PAPER_WEIGHTING, PAPER_W)


def synthetic_data_root(run_dir: Path) -> Path:
    """Where a run keeps its profile's synthetic set (``pipeline.ensure_data`` writes it there)."""
    return Path(run_dir) / "data" / "basic"


def stratified_subset(labels: np.ndarray, limit: int | None, seed: int = 0) -> np.ndarray:
    """Sorted indices of ``limit`` samples with each class's share kept (at least one per present class)."""
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


@dataclass
class FusionRun:
    """One trained landmark branch + fusion: its folder and its test-set predictions."""

    weighting: str
    w: float
    seed: int
    folder: Path
    predictions: training.FusionPredictions
    history: pd.DataFrame = field(repr=False)


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
        self.profile = get_profile(profile) if isinstance(profile, str) else profile
        self.data_root = Path(data_root)
        self.run_dir = Path(run_dir)
        self.tables_dir = (
            self.run_dir / "tables"
        )  # every table as CSV, Markdown and LaTeX (report.save_table)
        # figures as PNG and PDF: the committed figures/<profile> for a default run (notebook.start), else here
        self.figures_dir = Path(figures_dir) if figures_dir else self.run_dir / "figures"
        self.baseline_checkpoint = Path(baseline_checkpoint) if baseline_checkpoint else None
        self.pretrained = (
            Path(pretrained) if pretrained else None
        )  # torchvision's ResNet18 ImageNet weights for a trained baseline
        # other data sets the run's models are also tested on (notebook 09, fer_lib.apps.crossdata)
        self.cross_data = tuple(Path(root) for root in cross_data)
        self.progress = progress
        self.device = devices.pick_device()
        self.cache_dir = self.run_dir / "cache"
        self._rgb_caches: dict[tuple[str, int], torch.Tensor] = {}
        self._baselines: dict[int, models.ARMNet] = {}
        self._fusion_runs: dict[Path, FusionRun] = {}

    @property
    def data_label(self) -> str:
        """Which data set every number comes from (printed under every table): a converted set by its layout."""
        from fer_lib.data.rafdb import RafDbError

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
        """Whether the run reads its profile's synthetic set (where ``pipeline.ensure_data`` writes it), not a data
        set it was given."""
        generated = synthetic_data_root(self.run_dir)
        return bool(self.profile.synthetic) and self.data_root.resolve() in (
            generated.resolve(),
            generated.parent.resolve(),
        )

    # -- data ------------------------------------------------------------------------------------------
    @cached_property
    def classes(self) -> tuple[str, ...]:
        """The data set's class list, in label order: RAF-DB's 7, or a converted copy's (its ``classes.json``, 8
        with Contempt). Every per-class table, confusion matrix and example pick of the report follows it."""
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
        """(train, test); each is decoded on first use only (reading a finished run needs the test split alone)."""
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

    # -- linear probes (fer_lib.evaluation.probes) ------------------------------------------------------------------
    def probes(self) -> pd.DataFrame:
        """Test accuracy of linear probes on each branch's input and of the majority class, computed once per
        data set and input size (``cache/probes_<key>.csv``) and reused."""
        import hashlib

        from fer_lib.evaluation.probes import (
            C_GRID,
            HOG_SIDE,
            coordinate_features,
            hog_features,
            linear_probe,
        )

        key = hashlib.sha256(
            f"{self.profile.input_size}|{HOG_SIDE}|{C_GRID}|".encode()
            + "\n".join(self.train.names + self.test.names).encode()
        ).hexdigest()[:16]
        path = self.cache_dir / f"probes_{key}.csv"
        if path.exists():
            print(f"reusing the linear probes in {path.name}")
            return pd.read_csv(path)
        y_train, y_test = self.train.labels.numpy(), self.test.labels.numpy()
        size = self.profile.input_size
        results = [
            linear_probe(
                "linear probe, HOG (aligned images)",
                hog_features(self.train.images.numpy()),
                y_train,
                hog_features(self.test.images.numpy()),
                y_test,
            ),
            linear_probe(
                "linear probe, coordinates (aligned landmarks)",
                coordinate_features(self.train.points.numpy(), size),
                y_train,
                coordinate_features(self.test.points.numpy(), size),
                y_test,
            ),
        ]
        majority = int(np.bincount(y_train).argmax())
        frame = pd.DataFrame(
            [
                {
                    "model": r.name,
                    "input": "RGB" if "HOG" in r.name else "landmarks",
                    "test OA": r.test_accuracy,
                    "features": r.features,
                    "C (chosen on validation)": r.c,
                }
                for r in results
            ]
            + [
                {
                    "model": f"majority class ({self.classes[majority]})",
                    "input": "none",
                    "test OA": float((y_test == majority).mean()),
                    "features": 0,
                    "C (chosen on validation)": np.nan,
                }
            ]
        )
        save_csv(frame, path)
        return frame

    def shortcut_check(self) -> pd.DataFrame:
        """The no-shortcut check of SYNTHETIC_DATA.md on this data set: a linear probe on global photo statistics
        (colour, photo size, face size and position) against the majority class; the first should not beat the second."""
        import hashlib

        from fer_lib.evaluation.probes import (
            C_GRID,
            global_statistics,
            linear_probe,
        )

        # computed once per data set (reading every original photo is most of a notebook's time) and reused
        key = hashlib.sha256(
            f"shortcut|{C_GRID}|".encode()
            + "\n".join(self.rafdb.names).encode()
            + np.asarray(self.rafdb.labels).tobytes()
        ).hexdigest()[:16]
        path = self.cache_dir / f"shortcut_{key}.csv"
        if path.exists():
            print(f"reusing the no-shortcut check in {path.name}")
            return pd.read_csv(path)
        stats = global_statistics(self.rafdb)
        is_train = self.rafdb.splits == "train"
        y_train, y_test = self.rafdb.labels[is_train], self.rafdb.labels[~is_train]
        result = linear_probe(
            "global statistics", stats[is_train], y_train, stats[~is_train], y_test
        )
        majority = float((y_test == np.bincount(y_train).argmax()).mean())
        frame = pd.DataFrame(
            [
                {
                    "linear probe on": "photo colour, photo size, face size and position",
                    "features": result.features,
                    "test OA": result.test_accuracy,
                    "majority-class rate": majority,
                    "gain over the majority class": result.test_accuracy - majority,
                }
            ]
        )
        save_csv(frame, path)
        return frame

    # -- baseline --------------------------------------------------------------------------------------
    def baseline_seed(self, seed: int | None = None) -> int:
        """The seed of the baseline a landmark-branch seed is trained on: its own (``baseline_per_seed``), else the
        first (and always the first with a given checkpoint, which serves every seed)."""
        if (
            seed is None
            or not self.profile.baseline_per_seed
            or self.baseline_checkpoint is not None
        ):
            return self.seeds[0]
        return seed

    @property
    def baseline_seeds(self) -> list[int]:
        """The seeds of the trained baselines of this run (one, or one per seed)."""
        return sorted({self.baseline_seed(seed) for seed in self.seeds})

    def baseline_config(self, seed: int | None = None) -> training.BaselineConfig:
        p = self.profile
        return training.BaselineConfig(
            input_size=p.input_size,
            width=p.baseline_width,
            epochs=p.baseline_epochs,
            batch_size=p.batch_train,
            eval_batch_size=p.batch_test,
            pretrained=str(self.pretrained) if self.pretrained else None,
            augmentation=p.augmentation,
            ema=p.baseline_ema,
            lr_schedule=p.lr_schedule,
            seed=self.baseline_seed(seed),
        )

    def baseline_dir_for(self, seed: int | None = None) -> Path:
        """``baseline/`` for the first seed's baseline, ``baseline_seed<S>/`` for the others."""
        seed = self.baseline_seed(seed)
        return self.run_dir / ("baseline" if seed == self.seeds[0] else f"baseline_seed{seed}")

    @property
    def baseline_dir(self) -> Path:
        return self.baseline_dir_for()

    @property
    def baseline(self) -> models.ARMNet:
        """The frozen RGB network of the first seed (see ``baseline_for``)."""
        return self.baseline_for()

    def baseline_for(self, seed: int | None = None) -> models.ARMNet:
        """The frozen RGB network a seed's landmark branch uses: the given checkpoint, else a finished training
        run, else trained now."""
        seed = self.baseline_seed(seed)
        if seed in self._baselines:
            return self._baselines[seed]
        if self.baseline_checkpoint is not None:
            if self._baselines:  # one checkpoint serves every seed
                return next(iter(self._baselines.values()))
            print(f"baseline: loading {relative(self.baseline_checkpoint)}")
            model = models.load_arm_checkpoint(
                self.baseline_checkpoint, input_size=self.profile.input_size
            )
        else:
            folder = self.baseline_dir_for(seed)
            history = folder / "history.csv"
            finished = (
                history.exists() and len(pd.read_csv(history)) >= self.profile.baseline_epochs
            )
            print(
                f"baseline seed {seed}: {'reusing the finished run in' if finished else 'training (or resuming) in'} {folder.name}"
            )
            config = self.baseline_config(seed)
            model = training.finished_baseline(folder, config, self.classes) if finished else None
            if model is None:
                model = training.train_baseline(
                    self.train, config, folder, device=self.device, progress=self.progress
                )
        self._baselines[seed] = model.to(self.device).eval()
        return self._baselines[seed]

    def baseline_warning(self) -> str | None:
        """Why this run's baseline cannot be compared with the paper's 0.9205, if it cannot."""
        if (
            self.profile.synthetic is None
            and self.baseline_checkpoint is None
            and self.pretrained is None
        ):
            return (
                "warning: the baseline is trained from random initialisation (neither --baseline-checkpoint "
                "epoch59_acc0.9205.pth nor --pretrained resnet18-f37072fd.pth was given), so its accuracy cannot be "
                "compared with the paper's 0.9205, which starts from the ARM authors' ImageNet-initialised checkpoint."
            )
        return None

    def baseline_holdout(self, seed: int | None = None) -> Path | None:
        """The hold-out (``split.json``) of the baseline a seed's landmark branch is fused with: its validation images,
        which the baseline never trained on, validate that branch too (epoch, temperature, gate). None with a given
        checkpoint, which comes without one (``holdout_warning``)."""
        if self.baseline_checkpoint is not None:
            return None
        self.baseline_for(seed)  # trained (or reused) first: its split.json exists
        return self.baseline_dir_for(seed) / "split.json"

    def holdout_warning(self) -> str | None:
        """What a run fused with a given checkpoint biases: its validation images were the checkpoint's training images."""
        if self.baseline_checkpoint is None:
            return None
        return (
            "warning: the baseline checkpoint comes without a hold-out (the ARM authors trained theirs on all 12,271 training "
            "images), so every validation image of the landmark branch was a training image of the RGB network. Its RGB head looks "
            "better there than on new images: the epoch kept, the calibrated temperature and above all the learned gate (which "
            "reads the RGB head's probability) are fitted where the RGB branch is overconfident, in favour of trusting it."
        )

    def baseline_history(self, seed: int | None = None) -> pd.DataFrame | None:
        path = self.baseline_dir_for(seed) / "history.csv"
        return pd.read_csv(path) if self.baseline_checkpoint is None and path.exists() else None

    def baseline_probabilities(
        self,
        batch_size: int | None = None,
        order: np.ndarray | None = None,
        affinity: str = "batch",
        seed: int | None = None,
    ) -> np.ndarray:
        """Test-set probabilities (in test order) with a given test batch size, image order and affinity.

        Only ARM's batch term depends on the batch, so the frozen per-image features are computed once (the
        test cache) and the batch term and fc are applied per batch: the same numbers as running the whole
        network batch by batch (a test checks it), in a fraction of the time.
        """
        batch_size = batch_size or self.profile.batch_test
        order = np.arange(len(self.test)) if order is None else np.asarray(order)
        model = self.baseline_for(seed)
        if (
            affinity == "fixed"
        ):  # the mean over this run's whole training set (the checkpoint's is over its fit part)
            training.estimate_population_means(model, self.train, self.rgb_cache("train", seed))
        per_image = self.rgb_cache("test", seed)[0][torch.as_tensor(order)]
        model.set_affinity(affinity)
        try:
            with torch.no_grad():
                logits = torch.cat(
                    [
                        model.head_from_per_image(chunk.to(self.device)).cpu()
                        for chunk in per_image.split(batch_size)
                    ]
                )
        finally:
            model.set_affinity("batch")
        probabilities = np.empty((len(order), logits.shape[1]), dtype=np.float32)
        probabilities[order] = logits.softmax(1).numpy()
        return probabilities

    def baseline_predictions(self, seed: int | None = None) -> pd.DataFrame:
        """A baseline's test predictions at the profile's batch size, saved as a table (``baseline_test.csv`` for
        the first seed's, ``baseline_seed<S>_test.csv`` for the others)."""
        seed = self.baseline_seed(seed)
        frame = training.prediction_frame(
            self.test.names,
            self.test.labels.numpy(),
            self.baseline_probabilities(seed=seed),
            self.test.classes,
        )
        name = "baseline_test.csv" if seed == self.seeds[0] else f"baseline_seed{seed}_test.csv"
        save_csv(frame, self.run_dir / "predictions" / name)
        return frame

    # -- frozen-feature caches ---------------------------------------------------------------------------
    def rgb_cache(self, split: str, seed: int | None = None) -> torch.Tensor:
        """The per-image features of a split (train: also flipped) under the baseline a seed uses, computed or read once."""
        key = (split, self.baseline_seed(seed))
        if key not in self._rgb_caches:
            tensors = self.train if split == "train" else self.test
            flips = (False, True) if split == "train" else (False,)
            self._rgb_caches[key] = training.rgb_feature_cache(
                self.baseline_for(seed),
                tensors,
                flips=flips,
                cache_dir=self.cache_dir,
                progress=self.progress,
            )
        return self._rgb_caches[key]

    # -- landmark branch + fusion ------------------------------------------------------------------------
    def fusion_config(
        self,
        weighting: str = PAPER_WEIGHTING,
        w: float = PAPER_W,
        seed: int = 0,
        variant: str | None = None,
    ) -> training.FusionConfig:
        """The landmark branch's configuration; ``variant`` (a key of VARIANTS) flips one unstated choice or swaps the branch."""
        p = self.profile
        config = training.FusionConfig(
            weighting=weighting,
            w_disagree=float(w),
            width=p.landmark_width,
            batch_norm=p.landmark_batch_norm,
            epochs=p.fusion_epochs,
            batch_size=p.batch_fusion or p.batch_train,
            eval_batch_size=p.batch_test,
            lr_schedule=p.fusion_lr_schedule or p.lr_schedule,
            seed=seed,
        )
        if variant is not None:
            if variant not in VARIANTS:
                raise ValueError(f"variant {variant!r} is not one of {sorted(VARIANTS)}")
            config = dataclasses.replace(config, **VARIANTS[variant][1](config))
        return config

    def fusion_dir(self, weighting: str, w: float, seed: int, variant: str | None = None) -> Path:
        return self.run_dir / "fusion" / fusion_run_name(weighting, w, seed, variant)

    def fusion_run(
        self,
        weighting: str = PAPER_WEIGHTING,
        w: float = PAPER_W,
        seed: int | None = None,
        variant: str | None = None,
    ) -> FusionRun:
        """Train (or reuse) one landmark branch + fusion and return its test predictions (seed: the run's first).

        Configurations that compute the same thing share one run: w does not matter without the agreement
        factor, and w = 1 turns "both" into "confidence" and "agreement" into "none". "learned" is not trained: its
        gate is fitted on the validation split of the same seed's "both" run (``training.fit_gate``).
        """
        weighting, w = canonical_weighting(weighting, w)
        seed = self.seeds[0] if seed is None else seed
        config = self.fusion_config(weighting, w, seed, variant)
        folder = self.fusion_dir(weighting, w, seed, variant)
        if folder in self._fusion_runs:  # read and announced once per Experiment
            return self._fusion_runs[folder]
        done = folder / "predictions_fused.csv"
        if done.exists():
            print(
                f"fusion {weighting} w={w:.2f} seed {seed}{' ' + variant if variant else ''}: reusing {relative(folder)}"
            )
            predictions = read_fusion_predictions(folder)
        elif weighting == "learned":
            base = self.fusion_run("both", w, seed, variant)
            model, _ = training.fit_gate(
                base.folder,
                self.baseline_for(seed),
                self.train,
                self.rgb_cache("train", seed),
                folder,
                device=self.device,
            )
            training.save_fusion_predictions(
                training.predict_fusion(model, self.test, self.rgb_cache("test", seed), config),
                folder,
            )
            predictions = read_fusion_predictions(
                folder
            )  # as a rerun reads them: the same numbers to the last digit
        else:
            model = training.train_fusion(
                self.baseline_for(seed),
                self.train,
                self.rgb_cache("train", seed),
                config,
                folder,
                device=self.device,
                progress=self.progress,
                holdout=self.baseline_holdout(seed),
                population_means=(weighting, w, variant) == (*PREDICTED_WITH, None),
            )
            training.save_fusion_predictions(
                training.predict_fusion(model, self.test, self.rgb_cache("test", seed), config),
                folder,
            )
            predictions = read_fusion_predictions(folder)
        self._fusion_runs[folder] = FusionRun(
            weighting, float(w), seed, folder, predictions, pd.read_csv(folder / "history.csv")
        )
        return self._fusion_runs[folder]

    def fusion_model(
        self, weighting: str = PAPER_WEIGHTING, w: float = PAPER_W, seed: int | None = None
    ) -> tuple[models.FusionModel, training.FusionConfig]:
        """The selected checkpoint (``best.pt``) of one fusion run (trained first if missing), on the device."""
        run = self.fusion_run(weighting, w, seed)
        model, config = training.load_fusion_checkpoint(
            run.folder / "best.pt", self.baseline_for(run.seed)
        )
        return model.to(self.device).eval(), config

    def photo_model(
        self, seed: int | None = None
    ) -> tuple[models.FusionModel, training.FusionConfig]:
        """The proposed model as ``predict`` runs it on single photos: on the device, with the population means its
        checkpoints store. Where one lacks them (the ARM authors' baseline stores none), both are estimated over
        this run's training images."""
        model, config = self.fusion_model(*PREDICTED_WITH, seed)
        if any(torch.isnan(arm.population_mean).any() for arm in (model.baseline.arm, model.arm)):
            training.estimate_population_means(
                model, self.train, self.rgb_cache("train", seed), config
            )
        return model, config

    def explain(
        self,
        model: models.FusionModel,
        config: training.FusionConfig,
        index,
        *,
        target: str = "predicted",
        affinity: str = "batch",
        seed: int | None = None,
    ) -> Explanation:
        """Grad-CAM++ of test images on both branches (see ``fer_lib.evaluation.explain``), ARM terms held as evaluated; ``seed``:
        the fusion run's, whose baseline ``model`` wraps (default: the first)."""
        if affinity == "fixed":
            training.estimate_population_means(
                model, self.train, self.rgb_cache("train", seed), config
            )
        return gradcam_explain(
            model,
            self.test,
            self.rgb_cache("test", seed),
            config,
            index,
            target=target,
            affinity=affinity,
        )

    def fusion_plan(self) -> list[tuple[str, float, int, str | None]]:
        """Every distinct (weighting, w, seed, variant) the report trains: the proposed model (notebook 04), Fig. 4's
        w grid (05), the ablation (06), the calibrated weighting and the coordinate branch (06) and, with
        ``design_ablations``, the proposed model with each unstated choice flipped (06); each for every seed, in the
        order seeds, then configurations. (The learned weighting is fitted afterwards, in seconds: not planned.)"""
        configurations = [
            PREDICTED_WITH,
            *((PAPER_WEIGHTING, w) for w in self.profile.w_grid),
            *((weighting, PAPER_W) for weighting in PAPER_WEIGHTINGS),
            ("calibrated", PAPER_W),
        ]
        distinct = [
            (*pair, None)
            for pair in dict.fromkeys(
                canonical_weighting(weighting, w) for weighting, w in configurations
            )
        ]
        distinct += [(*PREDICTED_WITH, variant) for variant in BRANCH_VARIANTS]
        if self.profile.design_ablations:
            distinct += [(*PREDICTED_WITH, variant) for variant in self.design_variants()]
            distinct.append(NAIVE_DEFAULT_INIT)
        return [
            (weighting, w, seed, variant)
            for seed in self.seeds
            for weighting, w, variant in distinct
        ]

    def design_variants(self) -> list[str]:
        """The DESIGN_VARIANTS this profile trains (none without ``design_ablations``)."""
        return list(DESIGN_VARIANTS) if self.profile.design_ablations else []

    def design_variant_name(self, variant: str) -> str:
        """What a design ablation (or a branch variant) of this profile trains, in a table's words."""
        return VARIANTS[variant][0](self.fusion_config())

    def fusion_runs(
        self, weighting: str = PAPER_WEIGHTING, w: float = PAPER_W, variant: str | None = None
    ) -> list[FusionRun]:
        """One run per seed of the profile."""
        return [self.fusion_run(weighting, w, seed, variant) for seed in self.seeds]


def fusion_run_name(weighting: str, w: float, seed: int, variant: str | None = None) -> str:
    """A fusion run's folder name (and its training job's log name): ``both_w0.60_seed0``, ``..._coords``."""
    return f"{weighting}_w{w:.2f}_seed{seed}" + (f"_{variant}" if variant else "")


def canonical_weighting(weighting: str, w: float) -> tuple[str, float]:
    """The (weighting, w) that computes the same model: w only acts through the agreement factor."""
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting {weighting!r} is not one of {WEIGHTINGS}")
    if float(w) == 1.0:
        weighting = {"both": "confidence", "agreement": "none"}.get(weighting, weighting)
    if weighting in ("none", "confidence"):
        w = 1.0
    return weighting, float(w)


def read_fusion_predictions(folder: Path) -> training.FusionPredictions:
    """FusionPredictions back from the three prediction tables of a fusion run."""
    frames = {
        head: pd.read_csv(Path(folder) / f"predictions_{head}.csv")
        for head in ("fused", "landmark", "rgb")
    }
    columns = [c for c in frames["fused"].columns if c.startswith("p_")]
    return training.FusionPredictions(
        classes=tuple(c.removeprefix("p_") for c in columns),  # the tables' own class list
        names=frames["fused"]["image"].tolist(),
        labels=frames["fused"]["label"].to_numpy(),
        fused=frames["fused"][columns].to_numpy(),
        landmark=frames["landmark"][columns].to_numpy(),
        rgb=frames["rgb"][columns].to_numpy(),
        weight=frames["fused"]["weight"].to_numpy(),
    )
