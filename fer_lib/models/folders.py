"""A model folder anyone can load: ``config.json`` (what the model is and how its input is made) and
``model.safetensors`` (every weight and the ARM blocks' population means; no pickle), beside the
model card ``README.md`` that ``fer_lib.apps.export`` writes.

``ARMNet.from_pretrained`` and ``FusionModel.from_pretrained`` read such a folder; a local folder is
read as it is, a name that is not one is fetched from the Hugging Face Hub (``huggingface_hub``),
and ``huggingface_hub.upload_folder(repo_id=..., folder_path=FOLDER)`` publishes one.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from fer_lib.io import save_json, write_atomic
from fer_lib.models.checkpoints import CheckpointError, CheckpointNotFoundError

FORMAT = "fer_lib-model/1"
CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"
MEAN_SUFFIX = "population_mean"  # ARM's non-persistent buffer, stored beside the weights


def write_model_folder(folder: Path, config: dict, state: dict[str, Tensor]) -> Path:
    """``config`` (JSON-able; its ``architecture`` names the class) and ``state`` (the state dict
    and the population means) written atomically into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # safetensors stores dense tensors that share no memory: channels-last weights are copied
    tensors = {key: value.detach().cpu().contiguous().clone() for key, value in state.items()}
    write_atomic(folder / WEIGHTS_FILE, lambda tmp: save_file(tensors, str(tmp)))
    save_json({"format": FORMAT, **config}, folder / CONFIG_FILE)
    return folder


def local_folder(name: str | Path) -> Path:
    """``name`` itself where it is a folder here; else the Hub repository of that name, downloaded
    (or read from the Hub's cache)."""
    path = Path(name)
    if path.is_dir():
        return path
    hint = (
        f"a model folder holds {CONFIG_FILE} and {WEIGHTS_FILE}; `python -m fer_lib export RUN_DIR "
        "--out FOLDER` writes one"
    )
    if path.exists() or str(name).count("/") != 1 or str(name).startswith((".", "/")):
        raise CheckpointNotFoundError(f"{name}: not a model folder ({hint})")
    # huggingface_hub: 0.23 s (-X importtime) at every import of fer_lib.models; a Hub name only
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id=str(name)))
    except Exception as error:  # noqa: BLE001 - offline, unknown repository, no access: one line
        raise CheckpointNotFoundError(
            f"{name}: no such folder here, and the Hugging Face Hub did not give it "
            f"({type(error).__name__}); {hint}"
        ) from None


def read_model_folder(folder: Path, architecture: str) -> tuple[dict, dict[str, Tensor]]:
    """(config, state) of a model folder written for ``architecture``; each problem is one
    CheckpointError naming the file and what to do."""
    folder = local_folder(folder)
    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    for path in (config_path, weights_path):
        if not path.is_file():
            raise CheckpointNotFoundError(
                f"{path}: no such file; a model folder holds {CONFIG_FILE} and {WEIGHTS_FILE} "
                "(`python -m fer_lib export RUN_DIR --out FOLDER` writes both)"
            )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(
            f"{config_path}: not JSON ({error}); export the model again"
        ) from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(
            f"{config_path}: not a fer_lib model folder (format {config.get('format')!r}, "
            f"expected {FORMAT!r})"
            if isinstance(config, dict)
            else f"{config_path}: not a fer_lib model folder (no JSON object)"
        )
    if config.get("architecture") != architecture:
        raise CheckpointError(
            f"{folder} holds a model of class {config.get('architecture')}, not {architecture}: "
            f"load it with {config.get('architecture')}.from_pretrained"
        )
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError) as error:
        raise CheckpointError(
            f"{weights_path}: not a readable safetensors file ({error})"
        ) from None
    return config, state


def folder_architecture(folder: Path) -> str:
    """The class a model folder holds ("ARMNet" or "FusionModel"), from its config.json."""
    path = local_folder(folder) / CONFIG_FILE
    try:
        return str(json.loads(path.read_text(encoding="utf-8")).get("architecture"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, AttributeError) as error:
        raise CheckpointError(f"{path}: not a model folder's config ({error})") from None


def split_means(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """(the state dict, the population means) of a folder's tensors."""
    means = {k: v for k, v in state.items() if k.endswith(MEAN_SUFFIX)}
    return {k: v for k, v in state.items() if k not in means}, means


def has_means(means: dict[str, Tensor]) -> bool:
    """Whether every population mean is estimated (NaN: not estimated)."""
    return bool(means) and not any(torch.isnan(v).any() for v in means.values())
