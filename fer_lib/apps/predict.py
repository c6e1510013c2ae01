"""What a trained model says about new photos (``python -m fer_lib predict``): every face of every
photo, on both branches.

Per face: dlib's box and 68 points (``fer_lib.data.faces``), the aligned crop made as the training
data was, the landmark heatmap, the probabilities of the RGB, landmark-only and fused heads, and
Grad-CAM++ of both branches at the paper's layers (``fer_lib.evaluation.explain``). A single photo
has no batch, so ARM runs batch-independent: its batch-mean term is the population mean stored in
the checkpoints (the mean over the training images). Without a fusion checkpoint, the RGB baseline
alone.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm.auto import tqdm

from fer_lib import models, training
from fer_lib.data import landmarks, tensors
from fer_lib.data.faces import IMAGE_SUFFIXES, Face, ImportProblem, align, detect_faces, load_photo
from fer_lib.data.rafdb import CLASSES
from fer_lib.evaluation import explain
from fer_lib.io import save_json
from fer_lib.runtime import precision
from fer_lib.training import landmark_inputs

HEADS = (("rgb", "RGB"), ("landmark", "landmark only"), ("fused", "fused"))
BATCH_NOTE = (
    "ARM batch-independent: its batch term is the stored population mean (a single photo has no "
    "batch)"
)


def photos_in(paths: list[Path]) -> list[Path]:
    """The image files named, and those inside named folders (recursively), in order."""
    found = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
        elif path.is_file():
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                raise ImportProblem(
                    f"{path}: not a photo this command reads (expected {', '.join(IMAGE_SUFFIXES)})"
                )
            found.append(path)
        else:
            raise ImportProblem(f"{path}: no such file or folder")
    return found


def figure_stems(photos: list[Path]) -> dict[Path, str]:
    """Each photo's figure name: its stem, or where two photos share one (a/x.jpg, b/x.png), its
    path below their common folder with "__" for "/", so that no figure overwrites another."""
    stems = [p.stem for p in photos]
    if len(set(stems)) == len(stems):
        return dict(zip(photos, stems))
    absolute = [p.resolve() for p in photos]
    common = Path(os.path.commonpath([p.parent for p in absolute]))
    return {
        photo: "__".join(path.relative_to(common).with_suffix("").parts)
        + ("" if path.suffix.lower() in (".jpg", ".jpeg") else f"_{path.suffix.lstrip('.')}")
        for photo, path in zip(photos, absolute)
    }


def baseline_population_mean(baseline: models.ARMNet, data_root: Path, device: torch.device) -> int:
    """Estimate the baseline's population mean over a RAF-DB copy's training images, as notebook 09
    does for a checkpoint that stores none (the ARM authors'); returns how many images it took."""
    fit, _ = training.load_splits(data_root, baseline.input_size, progress=True)
    maps = training.rgb_feature_cache(baseline.to(device), fit, flips=(False,), progress=True)[0]
    baseline.arm.estimate_population_mean(maps.to(device).split(256))
    return len(fit)


def load_models(baseline_path: Path, fusion_path: Path | None, device, mean_data=None):
    """(baseline, fusion model or None, fusion config or None), in eval mode and
    batch-independent. A baseline checkpoint without a population mean gets one estimated over
    ``mean_data``'s training images."""
    baseline = models.load_arm_checkpoint(baseline_path)
    if torch.isnan(baseline.arm.population_mean).any():
        if mean_data is None:
            raise models.CheckpointError(
                f"{baseline_path} carries no population mean, which a single photo needs (ARM's "
                "batch-independent mode; the ARM authors' checkpoint stores none): add --data "
                "RAF-DB/basic, and predict estimates it over those training images, as notebook "
                "09 does"
            )
        count = baseline_population_mean(baseline, Path(mean_data), device)
        print(
            f"{baseline_path} carries no population mean: estimated over the {count} training "
            f"images of {mean_data}"
        )
    fusion, config = None, None
    if fusion_path is not None:
        fusion, config = training.load_fusion_checkpoint(fusion_path, baseline)
        if fusion.arm is None:
            raise models.CheckpointError(
                f"{fusion_path} is a coordinate-branch run, which predict cannot explain with "
                "Grad-CAM; pass a heatmap run (the proposed model's best.pt)"
            )
        if torch.isnan(fusion.arm.population_mean).any():
            raise models.CheckpointError(
                f"{fusion_path} carries no population mean for the landmark ARM, which a single "
                "photo needs; the report's runs store it for the proposed model only "
                "(fusion/both_w0.60_seed*/best.pt), and `python -m fer_lib train-fusion` always"
            )
        fusion = fusion.to(device).eval().set_affinity("fixed")
    return baseline.to(device).eval().set_affinity("fixed"), fusion, config


def face_split(image, faces: list[Face], size: int, name: str) -> tensors.SplitTensors:
    """The faces of one photo as the networks' input: aligned crops at ``size`` and their 37 points
    on that canvas."""
    # 100x100, then resized as the training images were (tensors._load_image)
    crops = [align(image, face) for face in faces]
    if size != landmarks.ALIGNED_SIZE:
        crops = [crop.resize((size, size), Image.BILINEAR) for crop in crops]
    points = np.stack(
        [landmarks.align_points(face.auto37, face.manual5, size) for face in faces]
    ).astype(np.float32)
    return tensors.SplitTensors(
        names=[f"{name}#{k}" for k in range(len(faces))],
        images=torch.from_numpy(np.stack([np.asarray(c) for c in crops]))
        .permute(0, 3, 1, 2)
        .contiguous(),
        points=torch.from_numpy(points),
        labels=torch.zeros(len(faces), dtype=torch.long),
        landmark_set="auto37",
    )


def load_model_folder(folder: Path, device: torch.device):
    """(baseline, fusion model or None, fusion config or None) of a model folder (``python -m
    fer_lib export``), in eval mode and batch-independent."""
    folder = models.local_folder(folder)  # a Hub name fetched once
    architecture = models.folder_architecture(folder)
    if architecture == "ARMNet":
        return models.ARMNet.from_pretrained(folder).to(device), None, None
    fusion = models.FusionModel.from_pretrained(folder)
    if fusion.arm is None:
        raise models.CheckpointError(
            f"{folder} is a coordinate-branch model, which predict cannot explain with Grad-CAM; "
            "export a heatmap run (the proposed model)"
        )
    return fusion.baseline.to(device), fusion.to(device), fusion.config


def load_for_predict(
    baseline_path: Path | None,
    fusion_path: Path | None,
    device: torch.device,
    *,
    mean_data: Path | None = None,
    model_folder: Path | None = None,
):
    """(baseline, fusion model or None, fusion config or None) of a model folder or of two
    checkpoints (``load_models``), batch-independent."""
    if model_folder is not None:
        return load_model_folder(Path(model_folder), device)
    fusion_path = Path(fusion_path) if fusion_path else None
    return load_models(Path(baseline_path), fusion_path, device, mean_data)


def head_probabilities(
    baseline: models.ARMNet, fusion: models.FusionModel | None, config, split: tensors.SplitTensors
) -> tuple[dict[str, np.ndarray], torch.Tensor]:
    """Faces through the RGB head and, with a fusion model, the landmark and fused heads: each
    head's probabilities (faces x classes), and the RGB network's per-image maps."""
    device = next(baseline.parameters()).device
    with torch.no_grad(), precision.full(device):
        per_image = baseline.forward_per_image(tensors.normalise(split.images.to(device)))
        probabilities = {"rgb": baseline.head_from_per_image(per_image).softmax(1).cpu().numpy()}
    if fusion is None:
        return probabilities, per_image
    # the landmark trunk as evaluated: its precision, its cuDNN kernels
    with torch.no_grad(), precision.autocast(device), precision.evaluation_kernels():
        outputs = fusion.forward_cached(
            per_image, landmark_inputs(split, torch.arange(len(split)), None, config, device)
        )
    probabilities.update(
        landmark=fusion.landmark_probabilities(outputs.landmark_logits).cpu().numpy(),
        fused=outputs.fused_logits.softmax(1).cpu().numpy(),
    )
    return probabilities, per_image


def _face_row(
    path: Path,
    k: int,
    found: list[Face],
    probabilities: dict[str, np.ndarray],
    classes: tuple[str, ...],
) -> dict:
    """Face ``k``'s row of predictions.csv: its box and score, each head's class, then each
    head's probabilities."""
    face = found[k]
    row = {
        "image": str(path),
        "face": k,
        "status": "predicted" if k == 0 or len(found) == 1 else "predicted (not the largest face)",
        **dict(zip(("x1", "y1", "x2", "y2"), face.box)),
        "detection score": face.score,
    }
    heads = [head for head, _ in HEADS if head in probabilities]
    row.update({f"{head} class": classes[int(probabilities[head][k].argmax())] for head in heads})
    for head in heads:
        row.update({f"p_{head}_{c}": float(v) for c, v in zip(classes, probabilities[head][k])})
    return row


def photo_columns(classes: tuple[str, ...], heads: list[str]) -> list[str]:
    """predictions.csv's columns: the photo, the face and its box, each head's class, then each
    head's probabilities (``_face_row``)."""
    names = ["image", "face", "status", "reason", "x1", "y1", "x2", "y2", "detection score"]
    names += [f"{head} class" for head in heads]
    return names + [f"p_{head}_{c}" for head in heads for c in classes]


def _already_predicted(table: Path, names: list[str], model: str) -> set[str]:
    """The photos a stopped run left in ``table``; a table of another model (``model``: its
    ``weights_fingerprint``, kept beside the table) is refused."""
    if not table.is_file():
        return set()
    done = pd.read_csv(table, dtype={"image": str})
    about = table.with_suffix(".json")
    written_by = json.loads(about.read_text()).get("model") if about.is_file() else None
    if list(done.columns) != names or written_by != model:
        raise models.CheckpointError(
            f"{table} holds another model's predictions: pass another --out, or delete it (and "
            f"{about.name}) to start again"
        )
    return set(done["image"])


def predict_photos(
    paths: list[Path],
    baseline: models.ARMNet,
    fusion: models.FusionModel | None,
    config,
    out: Path,
    *,
    figures: bool = True,
    batch_size: int = 64,
    resume: bool = True,
    progress: bool = True,
) -> pd.DataFrame:
    """Every face of every photo through loaded models whose ARM population means are set; returns
    the rows of these photos.

    ``out/predictions.csv`` grows a photo at a time, so a stopped run resumes where it stopped (the
    photos already in it are skipped; ``resume=False`` starts the table again). The models' weights
    and population means are fingerprinted in ``out/predictions.json``: a table is resumed only by
    the models that began it. ``figures``: one figure per face with Grad-CAM++ (PNG and
    PDF); without them the faces of several photos go through the networks together, ``batch_size``
    at a time (ARM is batch-independent here: the same probabilities in any batch)."""
    networks = [baseline] if fusion is None else [baseline, fusion]
    for network in networks:
        network.eval().set_affinity("fixed")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    photos = photos_in(paths)
    table = out / "predictions.csv"
    if not resume:
        table.unlink(missing_ok=True)
    names = photo_columns(baseline.classes, ["rgb"] if fusion is None else [h for h, _ in HEADS])
    model = models.weights_fingerprint(*networks, buffers=True)
    done = _already_predicted(table, names, model)
    if not done:
        save_json({"model": model}, table.with_suffix(".json"))
    todo = [path for path in photos if str(path) not in done]
    if done:
        skipped = len(photos) - len(todo)
        print(f"predict: resuming: {skipped} of {len(photos)} photo(s) already in {table}")
    with open(table, "a", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=names, restval="")
        if not done:
            writer.writeheader()
        figures_to = out if figures else None
        _predict_photos(
            todo, baseline, fusion, config, writer, handle, batch_size, progress, figures_to
        )
    frame = pd.read_csv(table, dtype={"image": str})
    return frame[frame["image"].isin({str(path) for path in photos})].reset_index(drop=True)


def _faces_of(path: Path) -> tuple[Image.Image | None, list[Face], dict | None]:
    """(the photo, its faces, None), or (None or the photo, [], its row: unreadable with why, or no
    face)."""
    try:
        image = load_photo(path)
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        reason = f"{type(error).__name__}: {error}"
        print(f"predict: skipped {path}: unreadable ({reason})", file=sys.stderr)
        return None, [], {"image": str(path), "status": "unreadable", "reason": reason}
    found = detect_faces(image)
    return image, found, None if found else {"image": str(path), "status": "no face"}


def _predict_photos(photos, baseline, fusion, config, writer, handle, batch_size, progress, out):
    """Photos read and their faces found one at a time, then every ``batch_size`` faces through the
    networks together; rows written in the photos' order. With ``out``, each photo alone, and its
    faces' figures saved there before its rows."""
    stems = figure_stems(photos) if out is not None and photos else {}
    classes = baseline.classes
    pending = []  # (path, the photo where figures are drawn, its faces, their split, or its row)

    def save_figures(path, image, found, split, probabilities, per_image) -> None:
        explanation = None
        if fusion is not None:
            every = np.arange(len(split))
            explanation = explain.explain(
                fusion, split, per_image.cpu()[None], config, every, affinity="fixed"
            )
        for k, face in enumerate(found):
            title = f"{path.name}, face {k}"
            figure = plot_face(image, face, split, k, probabilities, explanation, title, classes)
            figure.savefig(out / f"{stems[path]}_face{k}.png", dpi=110)
            # no date: reruns give the same file
            figure.savefig(out / f"{stems[path]}_face{k}.pdf", metadata={"CreationDate": None})
            plt.close(figure)

    def flush() -> None:
        splits = [split for _, _, _, split, _ in pending if split is not None]
        probabilities, per_image = {}, None
        if splits:
            batch = dataclasses.replace(
                splits[0],
                names=[name for split in splits for name in split.names],
                images=torch.cat([split.images for split in splits]),
                points=torch.cat([split.points for split in splits]),
                labels=torch.cat([split.labels for split in splits]),
            )
            probabilities, per_image = head_probabilities(baseline, fusion, config, batch)
        start = 0
        for path, image, found, split, row in pending:
            if row is not None:  # unreadable, or no face
                writer.writerow(row)
                continue
            mine = {head: p[start : start + len(found)] for head, p in probabilities.items()}
            if out is not None:  # the batch is this photo alone: per_image is its own
                save_figures(path, image, found, split, mine, per_image)
            writer.writerows(_face_row(path, k, found, mine, classes) for k in range(len(found)))
            start += len(found)
        handle.flush()
        pending.clear()

    for path in tqdm(photos, desc="predict", unit="photo", disable=not progress):
        image, found, row = _faces_of(path)
        split = face_split(image, found, baseline.input_size, path.name) if found else None
        pending.append((path, image if out is not None else None, found, split, row))
        if out is not None or sum(len(f) for _, _, f, _, _ in pending) >= batch_size:
            flush()
    flush()


def plot_face(
    image,
    face: Face,
    split: tensors.SplitTensors,
    k: int,
    probabilities: dict,
    explanation: explain.Explanation | None,
    title: str,
    classes: tuple[str, ...] = CLASSES,
) -> plt.Figure:
    """One face: the photo with its box and points, the aligned crop, the heatmap, the
    heads' probabilities (over the model's ``classes``) and, with a fusion model,
    Grad-CAM++ of both branches."""
    columns = 6 if explanation is not None else 3
    fig, axes = plt.subplots(
        1,
        columns,
        figsize=(3.1 * columns, 3.4),
        gridspec_kw={"width_ratios": [1.2] + [1] * (columns - 1)},
    )
    axes[0].imshow(image)
    x1, y1, x2, y2 = face.box
    axes[0].add_patch(
        plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color="lime", linewidth=1.5)
    )
    axes[0].plot(face.points68[:, 0], face.points68[:, 1], ".", color="yellow", markersize=2)
    axes[1].imshow(split.images[k].permute(1, 2, 0).numpy())
    bars = axes[2]
    heads = [(head, name) for head, name in HEADS if head in probabilities]
    width = 0.8 / len(heads)
    for j, (head, name) in enumerate(heads):
        bars.barh(
            np.arange(len(classes)) + j * width, probabilities[head][k], height=width, label=name
        )
    bars.set_yticks(np.arange(len(classes)) + width * (len(heads) - 1) / 2, classes, fontsize=8)
    bars.invert_yaxis()
    bars.set(xlim=(0, 1), xlabel="probability")
    bars.legend(fontsize=7, loc="lower right")
    titles = ["photo, face and 68 points", "aligned crop (network input)", "probabilities"]
    if explanation is not None:
        axes[3].imshow(explanation.heatmaps[k], cmap="gray")
        axes[4].imshow(explain.overlay(explanation.images[k], explanation.rgb_cam[k]))
        axes[5].imshow(explain.overlay(explanation.heatmaps[k], explanation.landmark_cam[k]))
        target = classes[explanation.target[k]]
        titles += [
            "landmark heatmap",
            f"Grad-CAM++ RGB ({target})",
            f"Grad-CAM++ landmarks ({target})",
        ]
    for axis, panel in zip(axes, titles):
        axis.set_title(panel, fontsize=9)
        if axis is not bars:
            axis.axis("off")
    fig.suptitle(f"{title}. {BATCH_NOTE}", fontsize=9)
    fig.tight_layout()
    return fig
