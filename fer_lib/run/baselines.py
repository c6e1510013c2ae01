"""The frozen RGB networks of a run (``Experiment.baselines``): one for every seed or one for all,
each trained, reused from a finished run or loaded from a given checkpoint; their test predictions
at any batch size and affinity, and their frozen-feature caches.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from fer_lib import models, training
from fer_lib.io import relative, save_csv

if TYPE_CHECKING:
    from fer_lib.run.experiment import Experiment


class Baselines:
    """The baselines of one ``Experiment``, computed or reused on first use."""

    def __init__(self, experiment: Experiment):
        self.experiment = experiment
        self._models: dict[int, models.ARMNet] = {}
        self._rgb_caches: dict[tuple[str, int], torch.Tensor] = {}

    def seed(self, seed: int | None = None) -> int:
        """The seed of the baseline a landmark-branch seed is trained on: its own
        (``baseline_per_seed``), else the first (and always the first with a given checkpoint, which
        serves every seed)."""
        ex = self.experiment
        if seed is None or not ex.profile.baseline_per_seed or ex.baseline_checkpoint is not None:
            return ex.seeds[0]
        return seed

    @property
    def seeds(self) -> list[int]:
        """The seeds of the trained baselines of this run (one, or one per seed)."""
        return sorted({self.seed(seed) for seed in self.experiment.seeds})

    def config(self, seed: int | None = None) -> training.BaselineConfig:
        p, pretrained = self.experiment.profile, self.experiment.pretrained
        return training.BaselineConfig(
            input_size=p.input_size,
            width=p.baseline_width,
            epochs=p.baseline_epochs,
            batch_size=p.batch_train,
            eval_batch_size=p.batch_test,
            pretrained=str(pretrained) if pretrained else None,
            augmentation=p.augmentation,
            ema=p.baseline_ema,
            lr_schedule=p.lr_schedule,
            seed=self.seed(seed),
        )

    def folder(self, seed: int | None = None) -> Path:
        """``baseline/`` for the first seed's baseline, ``baseline_seed<S>/`` for the others."""
        seed = self.seed(seed)
        return self.experiment.run_dir / (
            "baseline" if seed == self.experiment.seeds[0] else f"baseline_seed{seed}"
        )

    def model(self, seed: int | None = None) -> models.ARMNet:
        """The frozen RGB network a seed's landmark branch uses: the given checkpoint, else a
        finished training run, else trained now."""
        seed, ex = self.seed(seed), self.experiment
        if seed in self._models:
            return self._models[seed]
        if ex.baseline_checkpoint is not None:
            if self._models:  # one checkpoint serves every seed
                return next(iter(self._models.values()))
            print(f"baseline: loading {relative(ex.baseline_checkpoint)}")
            model = models.load_arm_checkpoint(
                ex.baseline_checkpoint, input_size=ex.profile.input_size
            )
        else:
            folder, config = self.folder(seed), self.config(seed)
            history = folder / "history.csv"
            finished = history.exists() and len(pd.read_csv(history)) >= ex.profile.baseline_epochs
            what = "reusing the finished run in" if finished else "training (or resuming) in"
            print(f"baseline seed {seed}: {what} {folder.name}")
            model = training.finished_baseline(folder, config, ex.classes) if finished else None
            if model is None:
                model = training.train_baseline(
                    ex.train, config, folder, device=ex.device, progress=ex.progress
                )
        self._models[seed] = model.to(ex.device).eval()
        return self._models[seed]

    def warning(self) -> str | None:
        """Why this run's baseline cannot be compared with the paper's 0.9205, if it cannot."""
        ex = self.experiment
        if ex.profile.synthetic or ex.baseline_checkpoint or ex.pretrained:
            return None
        return (
            "warning: the baseline is trained from random initialisation (neither "
            "--baseline-checkpoint epoch59_acc0.9205.pth nor --pretrained "
            "resnet18-f37072fd.pth was given), so its accuracy cannot be compared with the "
            "paper's 0.9205, which starts from the ARM authors' ImageNet-initialised "
            "checkpoint."
        )

    def holdout(self, seed: int | None = None) -> Path | None:
        """The hold-out (``split.json``) of the baseline a seed's landmark branch is fused with: its
        validation images, which the baseline never trained on, validate that branch too (epoch,
        temperature, gate). None with a given checkpoint, which comes without one
        (``holdout_warning``)."""
        if self.experiment.baseline_checkpoint is not None:
            return None
        self.model(seed)  # trained (or reused) first: its split.json exists
        return self.folder(seed) / "split.json"

    def holdout_warning(self) -> str | None:
        """What a run fused with a given checkpoint biases: its validation images were the
        checkpoint's training images."""
        if self.experiment.baseline_checkpoint is None:
            return None
        return (
            "warning: the baseline checkpoint comes without a hold-out (the ARM authors trained "
            "theirs on all 12,271 training images), so every validation image of the landmark "
            "branch was a training image of the RGB network. Its RGB head looks better there than "
            "on new images: the epoch kept, the calibrated temperature and above all the learned "
            "gate (which reads the RGB head's probability) are fitted where the RGB branch is "
            "overconfident, in favour of trusting it."
        )

    def history(self, seed: int | None = None) -> pd.DataFrame | None:
        path = self.folder(seed) / "history.csv"
        given = self.experiment.baseline_checkpoint is not None
        return None if given or not path.exists() else pd.read_csv(path)

    def probabilities(
        self,
        batch_size: int | None = None,
        order: np.ndarray | None = None,
        affinity: str = "batch",
        seed: int | None = None,
    ) -> np.ndarray:
        """Test-set probabilities (in test order) with a given test batch size, image order and
        affinity.

        Only ARM's batch term depends on the batch, so the frozen per-image features are computed
        once (the test cache) and the batch term and fc are applied per batch: the same numbers as
        running the whole network batch by batch (a test checks it), in a fraction of the time.
        """
        ex = self.experiment
        batch_size = batch_size or ex.profile.batch_test
        order = np.arange(len(ex.test)) if order is None else np.asarray(order)
        model = self.model(seed)
        # the mean over this run's whole training set (the checkpoint's is over its fit part)
        if affinity == "fixed":
            training.estimate_population_means(model, ex.train, self.rgb_cache("train", seed))
        per_image = self.rgb_cache("test", seed)[0][torch.as_tensor(order)]
        model.set_affinity(affinity)
        try:
            with torch.no_grad():
                chunks = per_image.split(batch_size)
                logits = torch.cat(
                    [model.head_from_per_image(c.to(ex.device)).cpu() for c in chunks]
                )
        finally:
            model.set_affinity("batch")
        probabilities = np.empty((len(order), logits.shape[1]), dtype=np.float32)
        probabilities[order] = logits.softmax(1).numpy()
        return probabilities

    def predictions(self, seed: int | None = None) -> pd.DataFrame:
        """A baseline's test predictions at the profile's batch size, saved as a table
        (``predictions_path``)."""
        seed, test = self.seed(seed), self.experiment.test
        probabilities = self.probabilities(seed=seed)
        frame = training.prediction_frame(
            test.names, test.labels.numpy(), probabilities, test.classes
        )
        save_csv(frame, self.predictions_path(seed))
        return frame

    def predictions_path(self, seed: int | None = None) -> Path:
        """Where ``predictions`` saves a baseline's: ``baseline_test.csv`` for the first seed's,
        ``baseline_seed<S>_test.csv`` for the others (its folder's name)."""
        return self.experiment.run_dir / "predictions" / f"{self.folder(seed).name}_test.csv"

    def rgb_cache(self, split: str, seed: int | None = None) -> torch.Tensor:
        """The per-image features of a split (train: also flipped) under the baseline a seed uses,
        computed or read once."""
        key, ex = (split, self.seed(seed)), self.experiment
        if key not in self._rgb_caches:
            tensors = ex.train if split == "train" else ex.test
            flips = (False, True) if split == "train" else (False,)
            self._rgb_caches[key] = training.rgb_feature_cache(
                self.model(seed), tensors, flips=flips, cache_dir=ex.cache_dir, progress=ex.progress
            )
        return self._rgb_caches[key]
