"""The landmark branch + fusion runs of a run (``Experiment.fusion``): one folder per weighting, w,
seed and variant, each trained or reused, holding its checkpoints and prediction tables; the
variants of the proposed model that notebook 06 trains; and the plan of every run the report needs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import torch

from fer_lib import models, training
from fer_lib.evaluation.explain import Explanation
from fer_lib.evaluation.explain import explain as gradcam_explain
from fer_lib.io import relative
from fer_lib.settings import PAPER_W, PAPER_WEIGHTING, PAPER_WEIGHTINGS, WEIGHTINGS

if TYPE_CHECKING:
    from fer_lib.run.experiment import Experiment

# Choices the paper does not state that can move the headline either way, each flipped in one
# ablation run of the proposed model (notebook 06, with ``design_ablations``): name -> the profile's
# own FusionConfig -> (what the run is, the FusionConfig changes).
DESIGN_VARIANTS = {
    "default-init": lambda config: (
        "fusion layer from PyTorch's default initialisation",
        {"fusion_init_from_baseline": False},
    ),
    "flip-batch-norm": lambda config: (
        "landmark CNN without BatchNorm (Table 1 as printed)"
        if config.batch_norm
        else "landmark CNN with BatchNorm",
        {"batch_norm": not config.batch_norm},
    ),
}


# Naive fusion from PyTorch's default initialisation (design ablations): started from the baseline's
# fc, naive fusion begins as the baseline, which makes "naive fusion is no worse than the baseline"
# likely by construction.
NAIVE_DEFAULT_INIT = ("none", 1.0, "default-init")


# Beyond the paper (its section 6 and a reviewer's question): the landmark branch as an MLP on the
# plain coordinates, fused the same way (notebook 06, every profile); same shape as DESIGN_VARIANTS.
BRANCH_VARIANTS = {
    "coords": lambda config: (
        "coordinate MLP instead of heatmaps and the landmark CNN",
        {"landmark_input": "coords"},
    ),
}
VARIANTS = {**DESIGN_VARIANTS, **BRANCH_VARIANTS}

# The (weighting, w) single photos are predicted with (notebook 09, the explorer, README's predict
# command): only its runs store the landmark ARM's population mean, a pass over the training images
# that the other runs skip.
PREDICTED_WITH = (PAPER_WEIGHTING, PAPER_W)


@dataclass
class FusionRun:
    """One trained landmark branch + fusion: its folder and its test-set predictions."""

    weighting: str
    w: float
    seed: int
    folder: Path
    predictions: training.FusionPredictions
    history: pd.DataFrame = field(repr=False)


class FusionRuns:
    """The fusion runs of one ``Experiment``, each trained or reused on first use (and read
    once)."""

    def __init__(self, experiment: Experiment):
        self.experiment = experiment
        self._runs: dict[Path, FusionRun] = {}

    def config(
        self,
        weighting: str = PAPER_WEIGHTING,
        w: float = PAPER_W,
        seed: int = 0,
        variant: str | None = None,
    ) -> training.FusionConfig:
        """The landmark branch's configuration; ``variant`` (a key of VARIANTS) flips one unstated
        choice or swaps the branch."""
        p = self.experiment.profile
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
            config = dataclasses.replace(config, **VARIANTS[variant](config)[1])
        return config

    def folder(self, weighting: str, w: float, seed: int, variant: str | None = None) -> Path:
        return self.experiment.run_dir / "fusion" / fusion_run_name(weighting, w, seed, variant)

    def run(
        self,
        weighting: str = PAPER_WEIGHTING,
        w: float = PAPER_W,
        seed: int | None = None,
        variant: str | None = None,
    ) -> FusionRun:
        """Train (or reuse) one landmark branch + fusion and return its test predictions (seed: the
        run's first).

        Configurations that compute the same thing share one run: w does not matter without the
        agreement factor, and w = 1 turns "both" into "confidence" and "agreement" into "none".
        "learned" is not trained: its gate is fitted on the validation split of the same seed's
        "both" run (``training.fit_gate``).
        """
        weighting, w = canonical_weighting(weighting, w)
        seed = self.experiment.seeds[0] if seed is None else seed
        folder = self.folder(weighting, w, seed, variant)
        if folder in self._runs:  # read and announced once per Experiment
            return self._runs[folder]
        if (folder / "predictions_fused.csv").exists():
            named = f" {variant}" if variant else ""
            print(f"fusion {weighting} w={w:.2f} seed {seed}{named}: reusing {relative(folder)}")
        else:
            self._train(weighting, w, seed, variant, folder)
        # read back as a rerun reads them: the same numbers to the last digit
        predictions = read_fusion_predictions(folder)
        history = pd.read_csv(folder / "history.csv")
        self._runs[folder] = FusionRun(weighting, float(w), seed, folder, predictions, history)
        return self._runs[folder]

    def _train(
        self, weighting: str, w: float, seed: int, variant: str | None, folder: Path
    ) -> None:
        """Train one run's landmark branch + fusion (or fit the learned gate on the same seed's
        "both" run) and save its test predictions in ``folder``."""
        ex, baselines = self.experiment, self.experiment.baselines
        config = self.config(weighting, w, seed, variant)
        if weighting == "learned":
            both = self.run("both", w, seed, variant).folder
            model, _ = training.fit_gate(
                both,
                baselines.model(seed),
                ex.train,
                baselines.rgb_cache("train", seed),
                folder,
                device=ex.device,
            )
        else:
            model = training.train_fusion(
                baselines.model(seed),
                ex.train,
                baselines.rgb_cache("train", seed),
                config,
                folder,
                device=ex.device,
                progress=ex.progress,
                holdout=baselines.holdout(seed),
                population_means=(weighting, w, variant) == (*PREDICTED_WITH, None),
            )
        test_cache = baselines.rgb_cache("test", seed)
        training.save_test_predictions(model, ex.test, test_cache, config, folder)

    def model(
        self, weighting: str = PAPER_WEIGHTING, w: float = PAPER_W, seed: int | None = None
    ) -> tuple[models.FusionModel, training.FusionConfig]:
        """The selected checkpoint (``best.pt``) of one fusion run (trained first if missing), on
        the device."""
        run = self.run(weighting, w, seed)
        model, config = training.load_fusion_checkpoint(
            run.folder / "best.pt", self.experiment.baselines.model(run.seed)
        )
        return model.to(self.experiment.device).eval(), config

    def photo_model(
        self, seed: int | None = None
    ) -> tuple[models.FusionModel, training.FusionConfig]:
        """The proposed model as ``predict`` runs it on single photos: on the device, with the
        population means its checkpoints store. Where one lacks them (the ARM authors' baseline
        stores none), both are estimated over this run's training images."""
        model, config = self.model(*PREDICTED_WITH, seed)
        if any(torch.isnan(arm.population_mean).any() for arm in (model.baseline.arm, model.arm)):
            self._estimate_means(model, config, seed)
        return model, config

    def _estimate_means(self, model: models.FusionModel, config, seed: int | None) -> None:
        """ARM's population means of ``model`` over this run's training images."""
        train, cache = self.experiment.train, self.experiment.baselines.rgb_cache("train", seed)
        training.estimate_population_means(model, train, cache, config)

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
        """Grad-CAM++ of test images on both branches (see ``fer_lib.evaluation.explain``), ARM
        terms held as evaluated; ``seed``: the fusion run's, whose baseline ``model`` wraps
        (default: the first)."""
        if affinity == "fixed":
            self._estimate_means(model, config, seed)
        test, cache = self.experiment.test, self.experiment.baselines.rgb_cache("test", seed)
        return gradcam_explain(model, test, cache, config, index, target=target, affinity=affinity)

    def plan(self) -> list[tuple[str, float, int, str | None]]:
        """Every distinct (weighting, w, seed, variant) the report trains: the proposed model
        (notebook 04), Fig. 4's w grid (05), the ablation (06), the calibrated weighting and the
        coordinate branch (06) and, with ``design_ablations``, the proposed model with each unstated
        choice flipped (06); each for every seed, in the order seeds, then configurations. (The
        learned weighting is fitted afterwards, in seconds: not planned.)"""
        configurations = [
            PREDICTED_WITH,
            *((PAPER_WEIGHTING, w) for w in self.experiment.profile.w_grid),
            *((weighting, PAPER_W) for weighting in PAPER_WEIGHTINGS),
            ("calibrated", PAPER_W),
        ]
        pairs = dict.fromkeys(canonical_weighting(*pair) for pair in configurations)
        distinct = [(*pair, None) for pair in pairs]
        distinct += [(*PREDICTED_WITH, variant) for variant in BRANCH_VARIANTS]
        if self.experiment.profile.design_ablations:
            distinct += [(*PREDICTED_WITH, variant) for variant in self.design_variants()]
            distinct.append(NAIVE_DEFAULT_INIT)
        return [
            (weighting, w, seed, variant)
            for seed in self.experiment.seeds
            for weighting, w, variant in distinct
        ]

    def design_variants(self) -> list[str]:
        """The DESIGN_VARIANTS this profile trains (none without ``design_ablations``)."""
        return list(DESIGN_VARIANTS) if self.experiment.profile.design_ablations else []

    def variant_name(self, variant: str) -> str:
        """What a design ablation (or a branch variant) of this profile trains, in a table's
        words."""
        return VARIANTS[variant](self.config())[0]

    def runs(
        self, weighting: str = PAPER_WEIGHTING, w: float = PAPER_W, variant: str | None = None
    ) -> list[FusionRun]:
        """One run per seed of the profile."""
        return [self.run(weighting, w, seed, variant) for seed in self.experiment.seeds]


def fusion_run_name(weighting: str, w: float, seed: int, variant: str | None = None) -> str:
    """A fusion run's folder name (and its training job's log name): ``both_w0.60_seed0``,
    ``..._coords``."""
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
    heads = ("fused", "landmark", "rgb")
    frames = {head: pd.read_csv(Path(folder) / f"predictions_{head}.csv") for head in heads}
    fused = frames["fused"]
    columns = [c for c in fused.columns if c.startswith("p_")]
    return training.FusionPredictions(
        classes=tuple(c.removeprefix("p_") for c in columns),  # the tables' own class list
        names=fused["image"].tolist(),
        labels=fused["label"].to_numpy(),
        **{head: frame[columns].to_numpy() for head, frame in frames.items()},
        weight=fused["weight"].to_numpy(),
    )
