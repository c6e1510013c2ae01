"""A trained run's model as a product (``python -m fer_lib export``): a model folder anyone can load
(``config.json``, ``model.safetensors`` and a model card, ``fer_lib.models.folders``), or an ONNX
graph checked against PyTorch.

Both are batch-independent: ARM's batch-mean term is the population mean stored with the weights
(the mean over the training images), so a single image is predicted as in any batch, and an ONNX
graph gives each image the same output at batch 1 and batch 64.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from fer_lib import models, training
from fer_lib.data.heatmaps import default_sigma
from fer_lib.data.landmarks import ALIGNED_SIZE
from fer_lib.data.rafdb import RafDbError
from fer_lib.data.tensors import IMAGENET_MEAN, IMAGENET_STD
from fer_lib.evaluation import metrics
from fer_lib.io import relative, save_text
from fer_lib.run.experiment import Experiment, synthetic_data_root
from fer_lib.run.fusion_runs import canonical_weighting, fusion_run_name
from fer_lib.run.profiles import get_profile
from fer_lib.settings import PAPER_W, PAPER_WEIGHTING

ONNX_OPSET = 18
PARITY_TOLERANCE = 1e-4  # largest probability difference allowed between onnxruntime and PyTorch


class ExportError(models.CheckpointError):
    """A run, a model or a folder that cannot be exported as asked (one line: what, and what to
    do)."""


@dataclasses.dataclass
class RunModel:
    """One model of a finished run: the RGB network, and the landmark branch + fusion unless the
    baseline alone was asked for."""

    baseline: models.ARMNet
    fusion: models.FusionModel | None
    config: object  # the FusionConfig of the fusion run, or None
    name: str  # "baseline", or the fusion run's folder name
    seed: int
    run_dir: Path
    info: dict  # the run's run_info.json
    experiment: Experiment

    @property
    def network(self) -> nn.Module:
        return self.fusion if self.fusion is not None else self.baseline


def load_run_model(
    run_dir: Path, model: str = "proposed", seed: int | None = None, baseline_checkpoint=None
) -> RunModel:
    """A run's model, batch-independent: ``proposed`` (the paper's weighting at its w),
    ``baseline`` (the RGB network alone) or a fusion run's name (``calibrated_w0.60``, as under
    ``fusion/`` without ``_seed<S>``); ``seed``: default the run's first."""
    run_dir = Path(run_dir)
    try:
        info = json.loads((run_dir / "run_info.json").read_text(encoding="utf-8"))
        profile = get_profile(info["profile"], {k: str(v) for k, v in info["settings"].items()})
    except (OSError, json.JSONDecodeError, KeyError) as error:
        raise ExportError(
            f"{run_dir}: not a finished run (its run_info.json: {error}); pass the folder "
            "`run_all.sh` or `python -m fer_lib run-all` wrote"
        ) from None
    data = Path(str(info.get("data", "")))
    data_root = data if data.is_dir() else synthetic_data_root(run_dir)
    experiment = Experiment(profile, data_root, run_dir, baseline_checkpoint, progress=False)
    seed = experiment.seeds[0] if seed is None else seed
    if seed not in experiment.seeds:
        raise ExportError(f"{run_dir} has seeds {experiment.seeds}; --seed {seed} is not one")
    baseline = models.load_arm_checkpoint(
        Path(baseline_checkpoint or experiment.baselines.folder(seed) / "best.pt")
    )
    fusion, config, name = None, None, "baseline"
    if model != "baseline":
        if model == "proposed":
            model = fusion_run_name(*canonical_weighting(PAPER_WEIGHTING, PAPER_W), seed)
            model = model.replace(f"_seed{seed}", "")
        runs = {p.parent.name: p for p in sorted((run_dir / "fusion").glob("*/best.pt"))}
        names = {name.replace(f"_seed{seed}", ""): name for name in runs if f"_seed{seed}" in name}
        if model not in names:
            raise ExportError(
                f"{relative(run_dir)} has no model {model!r} of seed {seed}; --model takes "
                f"proposed, baseline, or one of: {', '.join(sorted(names)) or 'none'}"
            )
        name = names[model]
        fusion, config = training.load_fusion_checkpoint(runs[name], baseline)
    _estimate_missing_means(experiment, seed, baseline, fusion, config, name)
    for network in (baseline, fusion):
        if network is not None:
            network.set_affinity("fixed")
    return RunModel(baseline, fusion, config, name, seed, run_dir, info, experiment)


def _estimate_missing_means(experiment, seed, baseline, fusion, config, name: str) -> None:
    """A model folder predicts single images, so every ARM block needs its population mean: one the
    run did not store (the ARM authors' baseline; a fusion run other than the proposed model's) is
    estimated here as the training stage would, over the run's training images (a fusion run's fit
    part, its split.json), without changing the run's files."""
    missing_rgb = torch.isnan(baseline.arm.population_mean).any()
    missing_landmark = fusion is not None and fusion.arm is not None
    missing_landmark = missing_landmark and torch.isnan(fusion.arm.population_mean).any()
    if not (missing_rgb or missing_landmark):
        return
    try:
        train, cache = experiment.train, experiment.baselines.rgb_cache("train", seed)
    except (RafDbError, OSError) as error:
        raise ExportError(
            f"{name} stores no population mean, and the run's training images, over which it is "
            f"estimated, cannot be read ({error})"
        ) from None
    if missing_rgb:
        baseline.arm.estimate_population_mean([cache[0].to(baseline.fc.weight.device)])
        print(
            f"the baseline stores no population mean: estimated over {len(train)} training images"
        )
    if missing_landmark:
        split = experiment.run_dir / "fusion" / name / "split.json"
        position = {image: k for k, image in enumerate(train.names)}
        index = [position[image] for image in json.loads(split.read_text())["train"]]
        kept = baseline.arm.population_mean.clone()  # the frozen network keeps its own
        fit = train.subset(index, images=False)
        training.estimate_population_means(fusion, fit, cache[:1, index], config)
        baseline.arm.population_mean.copy_(kept)
        print(
            f"{name} stores no population mean for its landmark ARM: estimated over the run's "
            f"{len(index)} fit images (the run's files are unchanged)"
        )


def about(run: RunModel) -> dict:
    """What config.json records beside the architecture: how to make the input, and where the
    weights come from."""
    size = run.baseline.input_size
    preprocessing = {
        "image": f"RGB, aligned as RAF-DB's aligned faces ({ALIGNED_SIZE} px, a similarity on 5 "
        f"points), resized to {size} px; ImageNet mean {list(IMAGENET_MEAN)} and std "
        f"{list(IMAGENET_STD)} on [0, 1] values"
    }
    if run.config is not None:
        sigma = run.config.heatmap_sigma or default_sigma(size)
        preprocessing["landmarks"] = {
            "set": run.config.landmark_set,
            "input": run.config.landmark_input,
            "heatmap": f"gaussian points, sigma {sigma:.3g} px at {size} px, peak 1, on black "
            "(fer_lib.data.heatmaps.render_heatmaps)",
        }
    keys = ("profile", "settings", "data", "commit", "date", "device", "cpu_path", "torch")
    provenance = {key: run.info.get(key) for key in keys}
    return {
        "preprocessing": preprocessing,
        "provenance": {**provenance, "model": run.name, "seed": run.seed},
    }


def seed_metrics(run: RunModel) -> pd.DataFrame:
    """Every seed's test metrics of this model, from the run's saved predictions (each head of a
    fusion model)."""
    rows = []
    if run.fusion is None:  # each trained baseline (one, where every seed shares it)
        seeds = run.experiment.baselines.seeds
        files = {s: {"RGB": run.experiment.baselines.predictions_path(s)} for s in seeds}
    else:
        heads = ("fused", "landmark", "rgb")
        folders = {
            s: run.run_dir / "fusion" / run.name.replace(f"_seed{run.seed}", f"_seed{s}")
            for s in run.experiment.seeds
        }
        files = {
            s: {h: folder / f"predictions_{h}.csv" for h in heads} for s, folder in folders.items()
        }
    for seed, paths in files.items():
        for head, path in paths.items():
            if not path.is_file():
                continue
            labels, probabilities = training.read_prediction_frame(path)
            result = metrics.summary(labels, probabilities, probabilities.shape[1])
            rows.append({"seed": seed, "head": head, "OA": result["oa_top1"], "AA": result["aa"]})
    return pd.DataFrame(rows, columns=["seed", "head", "OA", "AA"])


def model_card(run: RunModel, config: dict) -> str:
    """The folder's README.md: what the model is, how it was trained, its test metrics per seed
    (from the run's saved predictions), how to load it, and the terms its data allow."""
    provenance, synthetic = config["provenance"], "synthetic" in str(run.info.get("data"))
    table = seed_metrics(run)
    metrics_md = (
        table.to_markdown(index=False, floatfmt=".4f") if len(table) else "(no saved predictions)"
    )
    what = (
        "the RGB network alone (ResNet18 + ARM)"
        if run.fusion is None
        else f"ResNet18 + ARM fused with a landmark-heatmap network, weighting "
        f"{run.config.weighting}, w = {run.config.w_disagree:g}"
    )
    classes = ", ".join(run.baseline.classes)
    data_terms = (
        "Trained on the project's **synthetic** RAF-DB (drawn faces, not photographs): a "
        "demonstration of the pipeline, **not a facial-expression model** for real photos."
        if synthetic
        else "Trained on RAF-DB: its licence allows non-commercial research use only; these "
        "weights inherit that restriction. The 68-point dlib model used to find landmarks in new "
        "photos is for research use only (iBUG 300-W)."
    )
    load = (
        "from fer_lib.models import ARMNet\nmodel = ARMNet.from_pretrained(FOLDER)"
        if run.fusion is None
        else "from fer_lib.models import FusionModel\nmodel = FusionModel.from_pretrained(FOLDER)"
    )
    return f"""# {provenance["model"]}, seed {run.seed}

{what}; {len(run.baseline.classes)} classes in this order: {classes}. Input
{run.baseline.input_size} px. The reference implementation of "facial expression recognition by
fusing a frozen RGB network with a landmark-heatmap network weighted by its confidence and its
agreement" (`fer_lib`).

## How it was trained

Profile `{provenance["profile"]}` (settings {provenance["settings"] or "as the profile"}), data
{provenance["data"]}, commit {provenance["commit"]}, {provenance["date"]}, on {provenance["device"]}
(CPU precision path {provenance["cpu_path"]}). `config.json` holds the full recipe and how to make
the input.

## Test metrics of this model, every seed of the run

Computed from the run's saved test predictions (batch affinity, test batches as the paper's
protocol); this folder holds seed {run.seed}.

{metrics_md}

## Use

```python
{load}
```

`python -m fer_lib predict PHOTOS --model FOLDER --out OUT` finds, aligns and predicts every face.
ARM runs batch-independent (its stored population mean), so one image is predicted as in any
batch. `model.safetensors` holds no pickle.

## Intended use and terms

Research on facial expression recognition. {data_terms} Expressions are not emotions: a predicted
class says what a face shows, not what a person feels; do not use it to judge people.
"""


def export_folder(run: RunModel, out: Path) -> Path:
    """The run's model as a model folder with its card."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ExportError(f"{out}: not empty; export into a new folder")
    extra = about(run)
    if run.fusion is None:
        run.baseline.save_pretrained(out, **extra)
    else:
        run.fusion.save_pretrained(out, run.config, **extra)
    save_text(model_card(run, extra), out / "README.md")
    return out


class _Deployed(nn.Module):
    """The graph ONNX receives: aligned RGB crops in [0, 255] (and heatmaps) in, each head's
    probabilities (and the factor on F_landmark) out, batch-independent."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor, heatmaps: torch.Tensor | None = None):
        x = (images / 255 - self.mean) / self.std
        if heatmaps is None:
            return self.network(x).softmax(1)
        out = self.network(x, heatmaps)
        return (
            out.fused_logits.softmax(1),
            out.landmark_logits.softmax(1),
            out.rgb_logits.softmax(1),
            out.weight,
        )


def _deployed(network: nn.Module) -> _Deployed:
    """``network`` on the CPU, batch-independent, as the graph ONNX receives."""
    return _Deployed(network.cpu().eval().set_affinity("fixed")).eval()


def export_onnx(network: nn.Module, path: Path) -> Path:
    """``network`` (an ARMNet or a FusionModel with population means) as an ONNX graph with a
    dynamic batch axis."""
    fusion = isinstance(network, models.FusionModel)
    if fusion and network.arm is None:
        raise ExportError("the coordinate branch has no ONNX export; export a heatmap run")
    means = models.population_means(network)
    if any(torch.isnan(mean).any() for mean in means.values()):
        raise ExportError("a graph predicts single images: estimate the population means first")
    size = network.input_size
    example = {"images": torch.rand(2, 3, size, size) * 255}
    if fusion:
        example["heatmaps"] = torch.rand(2, 1, size, size)
    outputs = ["fused", "landmark", "rgb", "weight"] if fusion else ["probabilities"]
    batch = torch.export.Dim("batch", min=1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the batch axis named twice: one constraint
        torch.onnx.export(
            _deployed(network),
            (),
            str(tmp),
            kwargs=example,
            input_names=list(example),
            output_names=outputs,
            dynamic_shapes={name: {0: batch} for name in example},
            opset_version=ONNX_OPSET,
            dynamo=True,
            external_data=False,  # one file: the weights are a few MB (ONNX's limit is 2 GB)
            verbose=False,
        )
    tmp.replace(path)
    return path


def test_inputs(run: RunModel, limit: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The first ``limit`` images of the run's test split as the ONNX graph takes them: RGB in
    [0, 255], and the heatmaps the fusion run draws."""
    test = run.experiment.test
    index = torch.arange(min(limit, len(test)))
    if run.config is None:
        return test.images[index].float(), None
    heatmaps = training.landmark_inputs(test, index, None, run.config, "cpu")
    return test.images[index].float(), heatmaps.contiguous()


def onnx_parity(network: nn.Module, path: Path, images: torch.Tensor, heatmaps=None) -> dict:
    """onnxruntime against PyTorch on the same inputs: the largest probability difference, and the
    largest difference between each image run alone (batch 1) and in the whole batch."""
    import onnxruntime  # 0.2 s; only where a graph is checked

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    deployed = _deployed(network)
    inputs = [images.float()] + ([heatmaps.float()] if heatmaps is not None else [])
    names = [i.name for i in session.get_inputs()]

    def run(arrays):
        return session.run(None, dict(zip(names, [a.numpy() for a in arrays])))

    with torch.no_grad():
        expected = deployed(*inputs)
    expected = [expected] if isinstance(expected, torch.Tensor) else list(expected)
    whole = run(inputs)
    single = [
        np.concatenate(parts)
        for parts in zip(*(run([a[k : k + 1] for a in inputs]) for k in range(len(images))))
    ]
    torch_gap = max(np.abs(o - e.numpy()).max() for o, e in zip(whole, expected))
    batch_gap = max(np.abs(s - w).max() for s, w in zip(single, whole))
    return {
        "images": len(images),
        "max |onnx - torch|": float(torch_gap),
        "max |batch 1 - whole batch|": float(batch_gap),
    }
