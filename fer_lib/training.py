"""Training and evaluation: the ARM baseline, the frozen-feature cache, and the landmark branch +
fusion.

Every run lives in its own folder: ``config.json`` (what was asked), ``split.json`` (the seeded,
stratified validation split held out from the training set), ``last.pt`` (written atomically after
each epoch; a rerun resumes from it), ``best.pt`` (the epoch with the best validation score:
accuracy for the baseline, the loss of eq. 3 for fusion runs; model selection never looks at the
test set), ``history.csv`` and, once evaluated, prediction tables. The test set is only ever used by
``predict_*`` on the selected model.

The baseline is frozen while the landmark branch trains, so its batch-independent part (ARM's
per-image map, ``ARMNet.forward_per_image`` in eval mode) is computed once per image and flip state
and cached; ARM's batch-mean term is added per batch, so cached training computes exactly what
uncached training would. An epoch of the landmark branch then reads no image: features come from the
cache and heatmaps are drawn from coordinates.

Beyond the paper: the "calibrated" weighting refits its landmark head's temperature on the
validation split after each epoch (``calibrate_temperature``); the "learned" weighting is not
trained but fitted afterwards on a finished run's validation split (``fit_gate``);
``landmark_input="coords"`` feeds the aligned coordinates to an MLP instead of heatmaps to the CNN
(``landmark_inputs``).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from adabelief_pytorch import AdaBelief
from torch import nn
from torch.nn import functional
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from fer_lib import models
from fer_lib.data import tensors
from fer_lib.data.rafdb import CLASSES, load_rafdb
from fer_lib.io import claim_config, fill_older_fields, relative, save_csv, save_json, save_torch
from fer_lib.runtime import devices, distributed, precision
from fer_lib.settings import (
    ADABELIEF,
    LR_GAMMA,
    BaselineConfig,
    FusionConfig,
)


def _lr_schedule(optimizer, config):
    """The learning rate per epoch: the paper's ExponentialLR(0.9), or a cosine to zero over
    ``config.epochs`` (the demo's: it ends converged in fewer epochs, benchmarks/README.md)."""
    if config.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=LR_GAMMA)


def _check_config(run_dir: Path, config) -> None:
    """Refuse to resume a run folder made with another configuration (its checkpoints would not
    match)."""
    changed = claim_config(run_dir / "config.json", config)
    if changed:
        raise ValueError(
            f"{run_dir} holds a run with another configuration (differs in: {', '.join(changed)}). "
            "Use another run folder, or delete this one to start again."
        )


def _validation_split(
    run_dir: Path,
    train: tensors.SplitTensors,
    fraction: float,
    seed: int,
    holdout: Path | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The run's seeded, stratified validation split (``split.json``), or, with ``holdout`` (the
    ``split.json`` of the baseline this run is fused with), that baseline's own hold-out: images the
    frozen network never trained on."""
    path = run_dir / "split.json"
    if not path.exists() and holdout is not None:
        if not Path(holdout).exists():
            raise FileNotFoundError(
                f"{holdout}: the baseline's hold-out (split.json of its run folder) is missing; "
                "train the baseline here, or fuse without --holdout (the run then says its "
                "validation images were seen)"
            )
        saved = json.loads(Path(holdout).read_text())
        if set(saved["train"]) | set(saved["validation"]) != set(train.names):
            raise ValueError(
                f"{holdout} was made for another training set than this run's; use the baseline "
                "trained on this data set"
            )
        save_json({**saved, "holdout_of": relative(Path(holdout).parent)}, path)
    if path.exists():
        saved = json.loads(path.read_text())
        names = set(train.names)
        if set(saved["train"]) | set(saved["validation"]) != names:
            raise ValueError(
                f"{path} was made for another training set; delete {run_dir} to start again"
            )
        position = {name: i for i, name in enumerate(train.names)}
        return np.array([position[n] for n in saved["train"]]), np.array(
            [position[n] for n in saved["validation"]]
        )
    fit, val = tensors.stratified_split(train.labels.numpy(), fraction, seed)
    save_json(
        {
            "seed": seed,
            "fraction": fraction,
            "train": [train.names[i] for i in fit],
            "validation": [train.names[i] for i in val],
        },
        path,
    )
    return fit, val


def _autocast(device: torch.device):
    # bf16 on CUDA and on CPUs with AMX (precision.cpu_path); FER_PRECISION=bf16: on any device
    return precision.autocast(device)


def _baseline_layout(model: models.ARMNet, device: torch.device) -> torch.memory_format:
    """The baseline's layout, the model converted in place: channels_last on CUDA (with cuDNN's
    kernel search: fixed shapes), and on the CPU from width 16, where oneDNN runs the demo's
    ResNet18 faster in it (benchmarks/README.md). Narrower CPU networks stay contiguous: at width 4
    oneDNN corrupted the heap."""
    memory_format = (
        torch.channels_last
        if device.type == "cuda" or model.width >= 16
        else torch.contiguous_format
    )
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    model.to(memory_format=memory_format)
    return memory_format


def _load_last(
    run_dir: Path, model, optimizer, scheduler, epochs: int, average=None
) -> tuple[int, list[dict], float]:
    """Resume state from ``last.pt``: (next epoch, history, best validation accuracy)."""
    path = run_dir / "last.pt"
    if not path.exists():
        return 0, [], float("-inf")
    state = torch.load(path, map_location="cpu", weights_only=True)
    load_trained_state(model, state["model"], path)
    if average is not None:
        average.load_state_dict(state["average"], strict=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if state["epoch"] + 1 < epochs:
        print(f"resuming {relative(run_dir)} after epoch {state['epoch'] + 1}")
    return state["epoch"] + 1, state["history"], state["best_val_accuracy"]


def trained_state(model: nn.Module) -> dict:
    """A model's weights as its checkpoints keep them: a fusion model's without the frozen
    baseline's (11.7 M parameters at the paper's size, identical in every run of a seed), which
    ``models.weights_fingerprint`` (a digest of its weights) stands for; any other model's whole."""
    state = model.state_dict()
    if not isinstance(model, models.FusionModel):
        return state
    return {key: value for key, value in state.items() if not key.startswith("baseline.")}


def load_trained_state(model: nn.Module, saved: dict, path: Path) -> None:
    """Inverse of ``trained_state``, strictly: a fusion model keeps the baseline it holds where
    the checkpoint has none (older checkpoints, which carry it, load as they are)."""
    if isinstance(model, models.FusionModel):
        held = {f"baseline.{key}": value for key, value in model.baseline.state_dict().items()}
        saved = {**held, **saved}
    models.load_state_strict(model, saved, path)


def _save_fusion_best(model: models.FusionModel, kept: dict, path: Path) -> None:
    """``best.pt`` of a fusion run: the trained weights, the baseline's fingerprint, the epoch, its
    validation scores and the config."""
    fingerprint = models.weights_fingerprint(model.baseline)
    save_torch({"model": trained_state(model), "baseline": fingerprint, **kept}, path)


def _keep_epoch(
    run_dir: Path,
    training_state: tuple,
    epoch: int,
    history: list[dict],
    best: float,
    score: float,
    save_best: Callable[[], object],
) -> float:
    """End an epoch: ``save_best()`` writes ``best.pt`` where ``score`` beats ``best``;
    ``last.pt`` (``training_state``: model, optimizer, scheduler, moving average) always. Every
    rank holds the same weights; rank 0 writes. Returns the best score so far."""
    improved, best = score > best, max(best, score)
    if distributed.is_main():
        if improved:
            save_best()
        _save_last(run_dir, training_state, epoch, history, best)
    distributed.barrier()
    return best


def _save_last(
    run_dir: Path, training_state: tuple, epoch: int, history: list[dict], best: float
) -> None:
    """The state a rerun resumes from (``training_state``: model, optimizer, scheduler, moving
    average or None), and the history so far (both written atomically)."""
    model, optimizer, scheduler, average = training_state
    save_torch(
        {
            "model": trained_state(model),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "epoch": epoch,
            "history": history,
            "best_val_accuracy": best,
            **({"average": average.state_dict()} if average is not None else {}),
        },
        run_dir / "last.pt",
    )
    save_csv(pd.DataFrame(history), run_dir / "history.csv")


# --------------------------------------------------------------------------------------------------
# Baseline


def build_baseline(config: BaselineConfig, classes: tuple[str, ...] = CLASSES) -> models.ARMNet:
    model = models.ARMNet(
        config.input_size,
        num_classes=len(classes),
        width=config.width,
        pretrained=config.pretrained or False,
    )
    model.classes = tuple(classes)  # saved into every checkpoint with the weights
    return model


@torch.no_grad()
def baseline_logits(
    model: models.ARMNet,
    images: torch.Tensor,
    batch_size: int = 64,
    *,
    progress: bool = False,
    sharded: bool = False,
) -> torch.Tensor:
    """Logits (N, 7) for uint8 images (N, 3, S, S), in consecutive batches of ``batch_size`` (the
    test order), so in ``batch`` affinity each image shares its batch term with its neighbours.
    ``sharded`` (every rank calls it): each rank computes its block of the batches, every rank
    returns them all."""
    device = next(model.parameters()).device
    memory_format = _baseline_layout(model, device)
    model.eval()
    out = []
    for rows in tqdm(
        distributed.evaluation_batches(len(images), batch_size, sharded),
        desc="inference",
        disable=not progress,
        leave=False,
    ):
        batch = tensors.normalise(images[rows].to(device)).contiguous(memory_format=memory_format)
        with precision.full(device):  # the checkpoint's own predictions on any device
            out.append(model(batch).float().cpu())
    return torch.cat(distributed.gather(out, sharded))


def train_baseline(
    train: tensors.SplitTensors,
    config: BaselineConfig,
    run_dir: Path,
    *,
    device: torch.device | None = None,
    progress: bool = True,
) -> models.ARMNet:
    """Train ResNet18 + ARM with the ARM recipe; returns the best-on-validation model (eval mode,
    CPU).

    ``train`` is the full training split; the validation part is held out here (``split.json``).
    """
    run_dir = Path(run_dir)
    device = device or devices.pick_device()
    if train.input_size != config.input_size:
        raise ValueError(
            f"images are {train.input_size}px but the config asks for {config.input_size}px"
        )
    distributed.main_first(lambda: _check_config(run_dir, config))
    fit_index, val_index = distributed.main_first(
        lambda: _validation_split(run_dir, train, config.val_fraction, config.seed)
    )
    fit, val = train.subset(fit_index), train.subset(val_index)

    torch.manual_seed(config.seed)
    model = build_baseline(config, train.classes).to(device)
    memory_format = _baseline_layout(model, device)
    # DistributedDataParallel under torchrun; the model itself otherwise
    trained = distributed.wrap(model, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = _lr_schedule(optimizer, config)
    average = _moving_average(model, config)
    start, history, best = _load_last(run_dir, model, optimizer, scheduler, config.epochs, average)
    evaluated = average.module if average is not None else model
    fit_images, fit_labels, fit_targets = _baseline_fit_tensors(fit, device)
    for epoch in range(start, config.epochs):
        clock = time.perf_counter()
        generator = torch.Generator().manual_seed(config.seed * 1000 + epoch)
        order = torch.randperm(len(fit), generator=generator).to(fit_images.device)
        seen, correct, loss_sum = _baseline_steps(
            model,
            trained,
            optimizer,
            average,
            fit_images,
            fit_labels,
            fit_targets,
            order,
            generator,
            config,
            epoch,
            device,
            memory_format,
            progress=progress,
        )
        scheduler.step()
        counts = distributed.all_sum(seen, correct, loss_sum)
        history.append(_baseline_epoch_row(evaluated, val, config, epoch, counts, clock, progress))
        val_accuracy = history[-1]["val_accuracy"]
        best = _keep_epoch(
            run_dir,
            (model, optimizer, scheduler, average),
            epoch,
            history,
            best,
            val_accuracy,
            functools.partial(
                models.save_arm_checkpoint,
                evaluated,
                run_dir / "best.pt",
                epoch=epoch + 1,
                val_accuracy=val_accuracy,
                config=dataclasses.asdict(config),
            ),
        )
    best_model = models.load_arm_checkpoint(run_dir / "best.pt", classes=train.classes)
    if torch.isnan(best_model.arm.population_mean).any():
        store_population_mean(best_model, fit, config.eval_batch_size, run_dir / "best.pt", device)
    return best_model


def _baseline_epoch_row(
    evaluated: nn.Module,
    val: tensors.SplitTensors,
    config: BaselineConfig,
    epoch: int,
    counts: tuple,
    clock: float,
    progress: bool,
) -> dict:
    """An epoch's line of ``history.csv`` (``counts``: images seen, correct and summed loss over the
    ranks; ``clock``: when the epoch started), the validation accuracy measured here, printed."""
    seen, correct, loss_sum = counts
    logits = baseline_logits(evaluated, val.images, config.eval_batch_size, sharded=True)
    row = {
        "epoch": epoch + 1,
        "train_images": int(seen),
        "train_loss": loss_sum / max(seen, 1),
        "train_accuracy": correct / max(seen, 1),
        "val_accuracy": float((logits.argmax(1) == val.labels).float().mean()),
        "seconds": round(time.perf_counter() - clock, 2),
    }
    if progress and distributed.is_main():
        print(
            f"baseline epoch {epoch + 1}/{config.epochs}: loss {row['train_loss']:.3f}, "
            f"train acc {row['train_accuracy']:.3f}, val acc {row['val_accuracy']:.3f}"
        )
    return row


def _baseline_fit_tensors(fit: tensors.SplitTensors, device: torch.device) -> tuple:
    """The fit images, labels and targets (soft labels where the data set has them). On a GPU the
    images (uint8) live there and augmentation runs there: no image copy per step."""
    images = fit.images.to(device) if device.type == "cuda" else fit.images
    labels = fit.labels.to(device)
    return images, labels, labels if fit.soft is None else fit.soft.to(device)


def _moving_average(model: models.ARMNet, config: BaselineConfig) -> AveragedModel | None:
    """The weights' moving average (torch's swa_utils), BatchNorm statistics included; None: off."""
    if not config.ema:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema), use_buffers=True)


def _epoch_batches(images: int, config, what: str, progress: bool):
    """The batches of an epoch (``distributed.epoch_batches``: positions in its order), behind a
    progress bar on rank 0."""
    return tqdm(
        distributed.epoch_batches(images, config.batch_size),
        desc=f"{what}/{config.epochs}",
        disable=not (progress and distributed.is_main()),
        leave=False,
    )


def _baseline_steps(
    model: models.ARMNet,
    trained: nn.Module,
    optimizer: torch.optim.Optimizer,
    average: AveragedModel | None,
    fit_images: torch.Tensor,
    fit_labels: torch.Tensor,
    fit_targets: torch.Tensor,
    order: torch.Tensor,
    generator: torch.Generator,
    config: BaselineConfig,
    epoch: int,
    device: torch.device,
    memory_format: torch.memory_format,
    *,
    progress: bool,
) -> tuple:
    """One epoch of the ARM recipe's steps over the fit images in ``order``; returns (images seen,
    correct, summed loss) of this rank, summed over the ranks by the caller."""
    # one per epoch on a GPU; None on the CPU
    noise_generator = tensors.device_generator(generator, fit_images.device)
    model.train()
    # counts kept on the device and read once per epoch: a read per step would wait for the GPU
    # every step
    seen, correct, loss_sum = (
        0,
        torch.zeros((), dtype=torch.long, device=device),
        torch.zeros((), dtype=torch.float64, device=device),
    )
    for batch in _epoch_batches(len(order), config, f"baseline epoch {epoch + 1}", progress):
        index = order[batch]
        # this rank's share of the batch; every rank draws the whole batch's augmentation
        part = distributed.share(len(index))
        images = tensors.augment_arm(
            tensors.normalise(fit_images[index[part]]),
            generator,
            config.augmentation,
            noise_generator,
            part=part,
            batch_size=len(index),
        ).to(device, memory_format=memory_format)
        labels = fit_labels[index[part]]
        with _autocast(device), distributed.global_batch():
            logits = trained(images)
            loss = functional.cross_entropy(logits.float(), fit_targets[index[part]])
        optimizer.zero_grad(set_to_none=True)
        (loss * distributed.loss_scale(len(labels), len(index))).backward()
        optimizer.step()
        if average is not None:
            average.update_parameters(model)
        seen += len(labels)  # this rank's images: all_sum adds the ranks' counts
        correct += (logits.argmax(1) == labels).sum()
        loss_sum += loss.detach().double() * len(labels)
    return seen, correct, loss_sum


def finished_baseline(
    run_dir: Path, config: BaselineConfig, classes: tuple[str, ...]
) -> models.ARMNet | None:
    """The best model of a baseline run that trained all its epochs and stored its population mean,
    read without the training images (``train_baseline`` would decode them); None where the run
    still needs them."""
    run_dir, history = Path(run_dir), Path(run_dir) / "history.csv"
    if not (run_dir / "best.pt").exists() or not history.exists():
        return None
    if len(pd.read_csv(history)) < config.epochs:
        return None
    _check_config(run_dir, config)
    model = models.load_arm_checkpoint(run_dir / "best.pt", classes=classes)
    return None if torch.isnan(model.arm.population_mean).any() else model


@torch.no_grad()
def store_population_mean(
    model: models.ARMNet,
    fit: tensors.SplitTensors,
    batch_size: int,
    path: Path,
    device: torch.device,
) -> None:
    """ARM's batch-independent mean over the training images (eval mode, no augmentation), written
    into the kept checkpoint: what a single photo is explained with (``predict``), where there is no
    batch. The maps are computed as the feature cache computes them: on the run's device, in its
    precision (``model`` is left on the CPU)."""
    maps = rgb_feature_cache(
        model.to(device), fit, flips=(False,), batch_size=batch_size, progress=False, sharded=True
    )[0]
    model.cpu().arm.estimate_population_mean(maps.split(batch_size))
    if distributed.is_main():
        state = torch.load(path, map_location="cpu", weights_only=True)
        state["population_means"] = models.population_means(model)
        save_torch(state, path)
    distributed.barrier()


# --------------------------------------------------------------------------------------------------
# Frozen-feature cache


def rgb_feature_cache(
    baseline: models.ARMNet,
    split: tensors.SplitTensors,
    *,
    flips: tuple[bool, ...] = (False, True),
    batch_size: int = 128,
    cache_dir: Path | None = None,
    progress: bool = True,
    sharded: bool = False,
) -> torch.Tensor:
    """(len(flips), N, n*n) per-image ARM maps of the frozen baseline, one row per flip state.
    ``sharded`` (every rank calls it): each rank computes its block of the batches, every rank
    returns them all.

    Computed in full fp32 on every device (``precision.full``: the frozen network's own features,
    whatever path the trainable branches take). Saved to ``cache_dir`` under a name made of the
    baseline's weights, the images, the device type and the precision, and reused; a cache of the
    same weights and images made on another device, or in another precision by an older version, is
    recomputed, and the run says so.
    """
    device = next(baseline.parameters()).device
    path = None
    if cache_dir is not None:
        key = hashlib.sha256(
            f"{models.weights_fingerprint(baseline)}|{flips}|".encode()
            + "\n".join(split.names).encode()
        ).hexdigest()[:16]
        path = Path(cache_dir) / f"rgb_cache_{key}_{device.type}_fp32.pt"
        if path.exists():
            if progress:
                print(f"reusing frozen RGB features from {relative(path)}")
            return torch.load(path, map_location="cpu", weights_only=True)
        others = sorted(p.name for p in Path(cache_dir).glob(f"rgb_cache_{key}_*.pt"))
        if others:
            print(
                f"recomputing frozen RGB features on {device.type} in fp32: {', '.join(others)} "
                "holds them for another device or precision"
            )
    memory_format = _baseline_layout(baseline, device)
    baseline.eval()
    rows = []
    for flip in flips:
        chunks = []
        for index in tqdm(
            distributed.evaluation_batches(len(split), batch_size, sharded),
            desc=f"RGB feature cache{' (flipped)' if flip else ''}",
            disable=not progress,
            leave=False,
        ):
            images = split.images[index]
            images = images.flip(-1) if flip else images
            with precision.full(device):
                chunks.append(
                    baseline.forward_per_image(
                        tensors.normalise(images.to(device)).contiguous(memory_format=memory_format)
                    )
                    .float()
                    .cpu()
                )
        rows.append(torch.cat(distributed.gather(chunks, sharded)))
    cache = torch.stack(rows)  # (F, N, n*n)
    if path is not None:
        save_torch(cache, path)
    return cache


# no_grad applied after the definition, not as a decorator: mutmut skips decorated functions
rgb_feature_cache = torch.no_grad()(rgb_feature_cache)


# --------------------------------------------------------------------------------------------------
# Landmark branch + fusion


@dataclass
class FusionPredictions:
    """Per-image probabilities (N, classes) of the three heads on one split, in the split's
    order."""

    names: list[str]
    labels: np.ndarray
    fused: np.ndarray
    landmark: np.ndarray
    rgb: np.ndarray
    weight: np.ndarray
    classes: tuple[str, ...] = CLASSES  # the data set's class list: the probabilities' columns


def landmark_inputs(
    split: tensors.SplitTensors,
    index: torch.Tensor,
    flip: torch.Tensor | None,
    config: FusionConfig,
    device,
) -> torch.Tensor:
    """The landmark branch's input for samples ``index`` of a split, drawn as ``config`` says:
    heatmaps (B, 1, S, S), or the coordinates (B, 2K) for the "coords" branch."""
    return points_input(
        split.points[index], split.input_size, split.landmark_set, config, device, flip=flip
    )


def points_input(
    points: torch.Tensor,
    size: int,
    landmark_set: str,
    config: FusionConfig,
    device,
    *,
    flip: torch.Tensor | None = None,
) -> torch.Tensor:
    """The landmark branch's input for points (B, K, 2) on the S x S input canvas (what
    ``landmark_inputs`` draws for a split; the what-if editor's moved points go through it too)."""
    points = points.to(device)
    if config.landmark_input == "coords":
        return tensors.coordinates_for(points, size, flip=flip, landmark_set=landmark_set)
    heatmaps = tensors.heatmaps_for(
        points, size, flip=flip, landmark_set=landmark_set, sigma=config.heatmap_sigma
    )
    return heatmaps.contiguous(memory_format=models.landmark_memory_format(config, device))


@torch.no_grad()
def fusion_outputs(
    model: models.FusionModel,
    split: tensors.SplitTensors,
    cache: torch.Tensor,
    config: FusionConfig,
    *,
    progress: bool = False,
    sharded: bool = False,
) -> models.FusionOutput:
    """The model's outputs on a split, in consecutive batches of ``config.eval_batch_size`` (each
    its own ARM batch term, as the paper tests), concatenated on the CPU in float32. ``sharded``
    (every rank calls it): each rank computes its block of the batches, every rank returns them
    all."""
    device = next(model.parameters()).device
    model.eval()
    outs = []
    for index in tqdm(
        distributed.evaluation_batches(len(split), config.eval_batch_size, sharded),
        desc="evaluate",
        disable=not progress,
        leave=False,
    ):
        with _autocast(device), precision.evaluation_kernels():
            out = model.forward_cached(
                cache[0, index].to(device), landmark_inputs(split, index, None, config, device)
            )
        outs.append([t.float().cpu() for t in out])
    return models.FusionOutput(
        *(torch.cat(parts) for parts in zip(*distributed.gather(outs, sharded)))
    )


@torch.no_grad()
def predict_fusion(
    model: models.FusionModel,
    split: tensors.SplitTensors,
    cache: torch.Tensor,
    config: FusionConfig,
    *,
    progress: bool = False,
    sharded: bool = False,
) -> FusionPredictions:
    """Probabilities of the fused, landmark-only (temperature-scaled in a "calibrated" run) and RGB
    heads (``sharded``: as ``fusion_outputs``)."""
    out = fusion_outputs(model, split, cache, config, progress=progress, sharded=sharded)
    landmark = model.landmark_probabilities(
        out.landmark_logits.to(next(model.parameters()).device)
    ).cpu()
    # classes (the last field): the columns, the model's classes (another data set's may differ)
    return FusionPredictions(
        list(split.names),
        split.labels.numpy(),
        out.fused_logits.softmax(1).numpy(),
        landmark.numpy(),
        out.rgb_logits.softmax(1).numpy(),
        out.weight.numpy(),
        tuple(model.baseline.classes),
    )


def calibrate_temperature(
    model: models.FusionModel,
    split: tensors.SplitTensors,
    cache: torch.Tensor,
    config: FusionConfig,
    *,
    sharded: bool = False,
) -> float:
    """Set a "calibrated" model's temperature to the one that fits its landmark head best on
    ``split`` (the validation split: never the test set) and return it (``sharded``: the outputs
    as ``fusion_outputs``; every rank fits the same temperature to all of them)."""
    out = fusion_outputs(model, split, cache, config, sharded=sharded)
    temperature = models.fit_temperature(out.landmark_logits, split.labels)
    model.temperature.fill_(temperature)
    return temperature


calibrate_temperature = torch.no_grad()(calibrate_temperature)  # as rgb_feature_cache


# ridge penalty on the gate's weights: 15 numbers fitted on a few hundred validation images
GATE_L2 = 1e-3


def _landmark_means(means: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A fusion model's population means without the frozen baseline's (which keeps its own
    checkpoint's)."""
    return {k: v for k, v in means.items() if not k.startswith("baseline.")}


def fit_gate(
    base_folder: Path,
    baseline: models.ARMNet,
    train: tensors.SplitTensors,
    train_cache: torch.Tensor,
    run_dir: Path,
    *,
    device: torch.device | None = None,
) -> tuple[models.FusionModel, FusionConfig]:
    """The ``learned`` weighting: a trained run's landmark branch, heads and fusion layer kept
    frozen, with eq. 2's factor replaced by a ``WeightGate`` fitted on that run's validation split
    (its ``split.json``; never the test set) to minimise the fused head's cross-entropy (+
    ``GATE_L2``), by L-BFGS to convergence: nothing is selected. Writes ``best.pt``,
    ``config.json``, ``split.json`` and a one-row ``history.csv`` to ``run_dir``; returns the gated
    model and its configuration, as ``load_fusion_checkpoint`` does."""
    base_folder, run_dir = Path(base_folder), Path(run_dir)
    clock = time.perf_counter()
    base, base_config = load_fusion_checkpoint(base_folder / "best.pt", baseline)
    config = dataclasses.replace(base_config, weighting="learned")
    _check_config(run_dir, config)
    model = models.FusionModel.from_config(baseline, config)
    missing = model.load_state_dict(base.state_dict(), strict=False)
    if missing.unexpected_keys or any(not k.startswith("gate.") for k in missing.missing_keys):
        raise models.CheckpointError(
            f"{base_folder / 'best.pt'} does not fit a gated model: {missing}"
        )
    models.load_population_means(model, _landmark_means(models.population_means(base)))
    device = device or devices.pick_device()
    _, val_index = _validation_split(base_folder, train, base_config.val_fraction, base_config.seed)
    save_json(json.loads((base_folder / "split.json").read_text()), run_dir / "split.json")
    val = train.subset(val_index, images=False)  # its images are in the cache
    # on the CPU, float32
    out = fusion_outputs(model.to(device), val, train_cache[:, val_index], config)
    model.cpu().requires_grad_(False)
    labels, agree = val.labels, out.landmark_logits.argmax(1) == out.rgb_logits.argmax(1)

    def fused_logits(weight: torch.Tensor) -> torch.Tensor:
        return model.fusion(torch.cat([out.rgb_feature, weight[:, None] * out.landmark_feature], 1))

    with torch.no_grad():
        loss_before = float(
            functional.cross_entropy(
                fused_logits(base.cpu().feature_weight(out.landmark_logits, out.rgb_logits)), labels
            )
        )
    gate = model.gate
    _fit_gate_weights(
        gate, lambda: fused_logits(gate(out.rgb_logits, out.landmark_logits, agree)), labels
    )
    with torch.no_grad():
        weight = gate(out.rgb_logits, out.landmark_logits, agree)
        logits = fused_logits(weight)
    fitted = {
        "val_fused_loss_paper_weighting": loss_before,
        "val_fused_loss": float(functional.cross_entropy(logits, labels)),
        "val_fused_accuracy": float((logits.argmax(1) == labels).float().mean()),
        "mean_weight": float(weight.mean()),
    }
    _save_gate_run(model, config, base_folder, run_dir, fitted, clock)
    model.to(device).eval()
    return model, config


def _save_gate_run(
    model: models.FusionModel,
    config: FusionConfig,
    base_folder: Path,
    run_dir: Path,
    fitted: dict,
    clock: float,
) -> None:
    """The gated model's ``best.pt`` and its one-row ``history.csv`` (``fitted``: the validation
    losses before and after, the accuracy and the mean weight; ``clock``: when the fit started)."""
    means = _landmark_means(models.population_means(model))
    loss_after, fitted_accuracy = fitted["val_fused_loss"], fitted["val_fused_accuracy"]
    save_torch(
        {
            "model": trained_state(model),
            "baseline": models.weights_fingerprint(model.baseline),
            "epoch": 0,
            "val_loss": loss_after,
            "val_accuracy": fitted_accuracy,
            "config": dataclasses.asdict(config),
            "population_means": means,
            "base_run": base_folder.name,
        },
        run_dir / "best.pt",
    )
    seconds = round(time.perf_counter() - clock, 2)
    row = {"epoch": 1, "fitted_on": "validation split", **fitted, "seconds": seconds}
    save_csv(pd.DataFrame([row]), run_dir / "history.csv")


def _fit_gate_weights(gate: models.WeightGate, logits_of_gate: Callable, labels: torch.Tensor):
    """The gate's weights minimising the fused head's cross-entropy (``logits_of_gate()``: the fused
    logits under the gate's weights) + ``GATE_L2``, by L-BFGS to convergence."""
    gate.requires_grad_(True)
    optimizer = torch.optim.LBFGS(
        gate.parameters(),
        lr=1.0,
        max_iter=500,
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = functional.cross_entropy(logits_of_gate(), labels)
        loss = loss + GATE_L2 * gate.linear.weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    gate.requires_grad_(False)


def _check_fusion_inputs(
    baseline: models.ARMNet,
    train: tensors.SplitTensors,
    train_cache: torch.Tensor,
    config: FusionConfig,
    run_dir: Path,
) -> None:
    """Refuse, before any training, inputs that do not belong together (each error names both
    sides)."""
    models.check_classes(baseline.classes, train.classes, "the baseline")
    distributed.main_first(lambda: _check_config(run_dir, config))
    if train.landmark_set != config.landmark_set:
        raise ValueError(
            f"the split carries {train.landmark_set} landmarks but the config asks for "
            f"{config.landmark_set}"
        )
    if train_cache.shape[1] != len(train):
        raise ValueError(
            f"the feature cache has {train_cache.shape[1]} images, the training split {len(train)}"
        )
    if config.weighting == "learned":
        raise ValueError(
            "the learned weighting is fitted on a trained run's validation split: use "
            "training.fit_gate (Experiment.fusion.run('learned', ...) does), not train_fusion"
        )


def train_fusion(
    baseline: models.ARMNet,
    train: tensors.SplitTensors,
    train_cache: torch.Tensor,
    config: FusionConfig,
    run_dir: Path,
    *,
    device: torch.device | None = None,
    progress: bool = True,
    holdout: Path | None = None,
    population_means: bool = True,
) -> models.FusionModel:
    """Train the landmark branch and the fusion layer from the frozen-feature cache (baseline
    untouched).

    Loss: CE(landmark head) + CE(fused) (eq. 3); AdaBelief as Table 4; ExponentialLR(0.9) per epoch.
    The epoch kept (``best.pt``) is ``config.select``'s: the lowest validation loss of eq. 3
    ("val_loss", what the profiles and the command line use) or the best fused validation accuracy.
    ``holdout``: the baseline's ``split.json``, whose validation images (never trained on by the
    baseline) this run validates on; without it the run draws its own split, whose images a frozen
    baseline may have trained on. ``population_means``: afterwards, store the landmark ARM's
    batch-independent mean over the training images in ``best.pt`` (what ``predict`` needs for a
    single photo; one more pass over them, so the training stage asks it of the proposed model's
    runs only). Returns the kept epoch in eval mode.
    """
    run_dir = Path(run_dir)
    device = device or devices.pick_device()
    _check_fusion_inputs(baseline, train, train_cache, config, run_dir)
    flips = config.flip and train_cache.shape[0] > 1
    fit_index, val_index = distributed.main_first(
        lambda: _validation_split(run_dir, train, config.val_fraction, config.seed, holdout)
    )
    # the images are in the cache: points and labels only
    fit, val = train.subset(fit_index, images=False), train.subset(val_index, images=False)
    fit_cache, val_cache = train_cache[:, fit_index], train_cache[:, val_index]

    torch.manual_seed(config.seed)
    model = models.FusionModel.from_config(baseline, config).to(device)
    if config.landmark_input == "heatmaps":
        model.landmark_cnn.to(memory_format=models.landmark_memory_format(config, device))
    # DistributedDataParallel under torchrun (global-batch BatchNorm in the trained parts); the
    # model itself otherwise
    trained = distributed.wrap(model, device, "forward_cached", trained=model.landmark_branch)
    optimizer = AdaBelief(
        model.trainable_parameters(), print_change_log=False, **{**ADABELIEF, "lr": config.lr}
    )
    scheduler = _lr_schedule(optimizer, config)
    start, history, best = _load_last(run_dir, model, optimizer, scheduler, config.epochs)
    fit_cache, on_device = _fusion_fit_tensors(fit, fit_cache, device)
    for epoch in range(start, config.epochs):
        clock = time.perf_counter()
        generator = torch.Generator().manual_seed(config.seed * 1000 + epoch)
        order = torch.randperm(len(fit), generator=generator).to(device)
        seen, correct, landmark_correct, loss_sum = _fusion_steps(
            model,
            trained,
            optimizer,
            fit_cache,
            on_device,
            order,
            generator,
            config,
            flips,
            epoch,
            device,
            progress=progress,
        )
        scheduler.step()
        counts = distributed.all_sum(seen, correct, landmark_correct, loss_sum)
        history.append(_fusion_epoch_row(model, val, val_cache, config, epoch, counts, clock))
        best = _keep_fusion_epoch(run_dir, (model, optimizer, scheduler), config, history, best)
    state = torch.load(run_dir / "best.pt", map_location="cpu", weights_only=True)
    load_trained_state(model, state["model"], run_dir / "best.pt")
    model.eval()
    if population_means and "population_means" not in state:  # for a single photo (predict)
        _store_landmark_means(model, fit, fit_cache, config, state, run_dir)
    return model


def _keep_fusion_epoch(
    run_dir: Path, training_state: tuple, config: FusionConfig, history: list[dict], best: float
) -> float:
    """``_keep_epoch`` for a fusion run (``training_state``: model, optimizer, scheduler): the
    score is ``config.select``'s, the lowest validation loss of eq. 3 or the best fused validation
    accuracy."""
    row, model = history[-1], training_state[0]
    score = -row["val_loss"] if config.select == "val_loss" else row["val_fused_accuracy"]
    kept = {
        "epoch": row["epoch"],
        "val_accuracy": row["val_fused_accuracy"],
        "val_loss": row["val_loss"],
        "config": dataclasses.asdict(config),
    }
    save_best = functools.partial(_save_fusion_best, model, kept, run_dir / "best.pt")
    epoch = row["epoch"] - 1
    return _keep_epoch(run_dir, (*training_state, None), epoch, history, best, score, save_best)


def _fusion_fit_tensors(
    fit: tensors.SplitTensors, fit_cache: torch.Tensor, device: torch.device
) -> tuple[torch.Tensor, tensors.SplitTensors]:
    """The fit cache, points and labels on the device: on a GPU a step copies only its indices and
    flips."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        fit_cache = fit_cache.to(device)
    on_device = dataclasses.replace(
        fit,
        points=fit.points.to(device),
        labels=fit.labels.to(device),
        soft=None if fit.soft is None else fit.soft.to(device),
    )
    return fit_cache, on_device


def _fusion_epoch_row(
    model: models.FusionModel,
    val: tensors.SplitTensors,
    val_cache: torch.Tensor,
    config: FusionConfig,
    epoch: int,
    counts: tuple,
    clock: float,
) -> dict:
    """An epoch's line of ``history.csv`` (``counts``: images seen, fused and landmark correct and
    summed loss over the ranks; ``clock``: when the epoch started), validated here."""
    seen, correct, landmark_correct, loss_sum = counts
    temperature, predictions = _validate_fusion(model, val, val_cache, config)
    return {
        "epoch": epoch + 1,
        "train_images": int(seen),
        "train_loss": loss_sum / max(seen, 1),
        "train_fused_accuracy": correct / max(seen, 1),
        "train_landmark_accuracy": landmark_correct / max(seen, 1),
        "val_loss": validation_loss(predictions),
        "val_fused_accuracy": float((predictions.fused.argmax(1) == predictions.labels).mean()),
        "val_landmark_accuracy": float(
            (predictions.landmark.argmax(1) == predictions.labels).mean()
        ),
        **temperature,
        "seconds": round(time.perf_counter() - clock, 2),
    }


def _fusion_steps(
    model: models.FusionModel,
    trained: nn.Module,
    optimizer: torch.optim.Optimizer,
    fit_cache: torch.Tensor,
    on_device: tensors.SplitTensors,
    order: torch.Tensor,
    generator: torch.Generator,
    config: FusionConfig,
    flips: bool,
    epoch: int,
    device: torch.device,
    *,
    progress: bool,
) -> tuple:
    """One epoch of eq. 3's steps over the fit images in ``order``; returns (images seen, fused
    correct, landmark correct, summed loss), summed over the ranks by the caller."""
    model.train()
    # counts kept on the device and read once per epoch: a read per step would wait for the GPU
    # every step
    seen, correct, landmark_correct = (
        0,
        torch.zeros((), dtype=torch.long, device=device),
        torch.zeros((), dtype=torch.long, device=device),
    )
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    for batch in _epoch_batches(len(order), config, f"fusion epoch {epoch + 1}", progress):
        index = order[batch]
        batch_size = len(index)
        flip = (
            torch.rand(batch_size, generator=generator) < 0.5
            if flips
            else torch.zeros(batch_size, dtype=torch.bool)
        )
        part = distributed.share(batch_size)  # this rank's share of the batch
        index, flip = index[part], flip[part].to(device)
        rgb = fit_cache[flip.long(), index]  # (B, n*n): each image in its flip state
        landmarks = landmark_inputs(on_device, index, flip, config, device)
        labels = on_device.labels[index]
        with _autocast(device), distributed.global_batch():
            out = trained(rgb, landmarks)
            loss = model.loss(
                out._replace(
                    fused_logits=out.fused_logits.float(),
                    landmark_logits=out.landmark_logits.float(),
                ),
                on_device.targets(index),
            )
        optimizer.zero_grad(set_to_none=True)
        (loss * distributed.loss_scale(len(labels), batch_size)).backward()
        optimizer.step()
        seen += len(index)
        correct += (out.fused_logits.argmax(1) == labels).sum()
        landmark_correct += (out.landmark_logits.argmax(1) == labels).sum()
        loss_sum += loss.detach().double() * len(index)
    return seen, correct, landmark_correct, loss_sum


def _validate_fusion(
    model: models.FusionModel,
    val: tensors.SplitTensors,
    val_cache: torch.Tensor,
    config: FusionConfig,
) -> tuple[dict, FusionPredictions]:
    """This epoch's predictions on the validation split, after fitting the calibrated weighting's
    temperature there (the only thing fitted on it besides the epoch kept); sharded over the
    ranks."""
    temperature = {}
    if config.weighting == "calibrated":
        # this epoch's landmark head, temperature-scaled on the validation split
        fitted = calibrate_temperature(model, val, val_cache, config, sharded=True)
        temperature = {"temperature": fitted}
    return temperature, predict_fusion(model, val, val_cache, config, sharded=True)


def _store_landmark_means(
    model: models.FusionModel,
    fit: tensors.SplitTensors,
    fit_cache: torch.Tensor,
    config: FusionConfig,
    state: dict,
    run_dir: Path,
) -> None:
    """Estimate the landmark ARM's batch-independent mean over the fit images and store it in
    ``best.pt`` (what ``predict`` needs for a single photo); the frozen baseline keeps its own."""
    baseline_mean = model.baseline.arm.population_mean.clone()  # the frozen baseline keeps its own
    # the unflipped features
    estimate_population_means(model, fit, fit_cache[:1], config, sharded=True)
    model.baseline.arm.population_mean.copy_(baseline_mean)
    means = _landmark_means(models.population_means(model))
    if distributed.is_main():
        save_torch({**state, "population_means": means}, run_dir / "best.pt")
    distributed.barrier()


def validation_loss(predictions: FusionPredictions) -> float:
    """The paper's loss (eq. 3: cross-entropy of the landmark head plus that of the fused output) on
    a split.

    Fusion runs keep the epoch where it is lowest: on a few hundred validation images it moves more
    smoothly than accuracy, and it weighs both heads, so the kept model has a trained landmark head
    too.
    """
    rows = np.arange(len(predictions.labels))

    def cross_entropy(probabilities):
        return float(-np.log(np.clip(probabilities[rows, predictions.labels], 1e-12, None)).mean())

    return cross_entropy(predictions.landmark) + cross_entropy(predictions.fused)


@torch.no_grad()
def estimate_population_means(
    model: models.ARMNet | models.FusionModel,
    split: tensors.SplitTensors,
    cache: torch.Tensor,
    config: FusionConfig | None = None,
    batch_size: int = 256,
    *,
    sharded: bool = False,
) -> None:
    """Set the ``fixed`` affinity means from a split (the training set, unflipped, no augmentation):
    the baseline's from its cached per-image maps, and for a fusion model also its landmark
    ARM's. ``sharded`` (every rank calls it): each rank computes the landmark maps of its block of
    the batches, and every rank sets the means from all of them."""
    baseline = model.baseline if isinstance(model, models.FusionModel) else model
    device = next(model.parameters()).device
    if not isinstance(model, models.FusionModel):
        baseline.arm.estimate_population_mean([cache[0].to(device)])
        return
    config = config or FusionConfig()
    model.eval()
    batches = distributed.evaluation_batches(len(split), batch_size, sharded)
    maps = []
    if model.arm is not None:  # the coordinate branch has no batch term to estimate
        # the landmark maps as the evaluation computes them
        with precision.autocast(device), precision.evaluation_kernels():
            for index in batches:
                landmarks = landmark_inputs(split, index, None, config, device)
                maps.append(model.landmark_per_image(landmarks).cpu())
        maps = distributed.gather(maps, sharded)
    # in the batches of one process: the same float64 sums
    everything = distributed.evaluation_batches(len(split), batch_size, sharded=False)
    baseline.arm.estimate_population_mean([cache[0, index].to(device) for index in everything])
    if model.arm is not None:
        model.arm.estimate_population_mean(maps)


def load_fusion_checkpoint(
    path: Path, baseline: models.ARMNet
) -> tuple[models.FusionModel, FusionConfig]:
    """A trained fusion model (``best.pt`` or ``last.pt`` of a fusion run) around ``baseline``,
    strictly."""
    path = Path(path)
    if not path.is_file():
        raise models.CheckpointNotFoundError(
            f"{path}: no such file; train it with `python -m fer_lib train-fusion` first"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise models.CheckpointError(
            f"{path}: not a fusion checkpoint of this project (no 'model' and 'config' entries)"
        )
    config = FusionConfig(**fill_older_fields(FusionConfig, state["config"]))
    model = models.FusionModel.from_config(baseline, config)
    baseline_state = {f"baseline.{k}": v for k, v in baseline.state_dict().items()}
    mismatched = [
        k
        for k, v in baseline_state.items()
        if k in state["model"] and not torch.equal(state["model"][k], v.cpu())
    ]
    fingerprint = models.weights_fingerprint(baseline)
    if mismatched or state.get("baseline", fingerprint) != fingerprint:
        raise models.CheckpointError(
            f"{path} was trained on another baseline (its weights differ"
            + (f" in {mismatched[:3]}...)" if mismatched else ")")
            + "; pass the baseline it was trained with"
        )
    load_trained_state(model, state["model"], path)
    if "population_means" in state:
        models.load_population_means(model, _landmark_means(state["population_means"]))
    if config.landmark_input == "heatmaps":  # the layout it was trained in, faster on the CPU
        model.landmark_cnn.to(memory_format=models.landmark_memory_format(config, "cpu"))
    return model.eval(), config


def load_splits(
    data_root: Path,
    input_size: int,
    *,
    landmark_set: str = "auto37",
    cache_dir: Path | None = None,
    progress: bool = True,
) -> tuple[tensors.SplitTensors, tensors.SplitTensors]:
    """(train, test) tensors of a RAF-DB copy at ``input_size``."""
    rafdb = load_rafdb(data_root, progress=progress)
    return tuple(
        tensors.split_tensors(
            rafdb.split(name),
            input_size,
            landmark_set=landmark_set,
            cache_dir=cache_dir,
            progress=progress,
        )
        for name in ("train", "test")
    )


# --------------------------------------------------------------------------------------------------
# Prediction tables


def prediction_frame(
    names: list[str], labels: np.ndarray, probabilities: np.ndarray, classes=CLASSES
) -> pd.DataFrame:
    """One row per image: name, label, predicted class and one probability per class (columns
    ``p_<class>``)."""
    if probabilities.shape[1] != len(classes):
        raise ValueError(
            f"{probabilities.shape[1]} probabilities per image for {len(classes)} classes "
            f"({', '.join(classes)})"
        )
    frame = pd.DataFrame(
        {
            "image": names,
            "label": labels.astype(int),
            "predicted": probabilities.argmax(1).astype(int),
        }
    )
    for k, name in enumerate(classes):
        frame[f"p_{name}"] = probabilities[:, k]
    return frame


def read_prediction_frame(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(labels, probabilities) back from a prediction table."""
    frame = pd.read_csv(path)
    return frame["label"].to_numpy(), frame[
        [c for c in frame.columns if c.startswith("p_")]
    ].to_numpy()


def save_fusion_predictions(predictions: FusionPredictions, folder: Path) -> dict[str, Path]:
    """Write ``predictions_{fused,landmark,rgb}.csv`` (the fused table also carries the weight)."""
    paths = {}
    for head in ("fused", "landmark", "rgb"):
        frame = prediction_frame(
            predictions.names, predictions.labels, getattr(predictions, head), predictions.classes
        )
        if head == "fused":
            frame["weight"] = predictions.weight
        paths[head] = Path(folder) / f"predictions_{head}.csv"
        save_csv(frame, paths[head])
    return paths


def save_baseline_predictions(
    model: models.ARMNet, test: tensors.SplitTensors, batch_size: int, path: Path
) -> np.ndarray:
    """A baseline's test-split probabilities (in consecutive batches of ``batch_size``), saved as a
    prediction table at ``path``."""
    probabilities = baseline_logits(model, test.images, batch_size).softmax(1).numpy()
    save_csv(prediction_frame(test.names, test.labels.numpy(), probabilities, test.classes), path)
    return probabilities


def save_test_predictions(
    model: models.FusionModel,
    test: tensors.SplitTensors,
    test_cache: torch.Tensor,
    config: FusionConfig,
    folder: Path,
) -> FusionPredictions:
    """A fusion model's test-split predictions (from the frozen network's feature cache), saved as
    the three prediction tables in ``folder``: what the notebooks, the command line and the explorer
    read back."""
    predictions = predict_fusion(model, test, test_cache, config)
    save_fusion_predictions(predictions, folder)
    return predictions
