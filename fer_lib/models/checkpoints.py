"""Weights files read and loaded strictly: every missing, unexpected or mis-shaped key named, a
wrong class list refused, and the ARM's population means carried beside the weights.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

ARM_FILE_HINT = (
    "Expected the ARM authors' RAF-DB checkpoint (epoch59_acc0.9205.pth from "
    "SimKarras/Amend-Representation-Module, a dict with 'model_state_dict'), a file written by "
    "fer_lib.models.save_arm_checkpoint, or a bare state dict."
)


def weights_fingerprint(*modules: nn.Module, buffers: bool = False) -> str:
    """A short digest of the modules' weights (``state_dict``); ``buffers`` adds the buffers it
    leaves out, such as ARM's population means, which change a model's answers too."""
    digest = hashlib.sha256()
    for module in modules:
        tensors = dict(module.state_dict())
        if buffers:  # the persistent ones are the state dict's own entries again
            tensors.update(module.named_buffers())
        for name, tensor in sorted(tensors.items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


class CheckpointError(ValueError):
    """A weights file that cannot be used for the model asked for."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """A weights file that does not exist (catchable as FileNotFoundError too)."""


def check_classes(model_classes, data_classes, what: str) -> None:
    """Refuse a model whose class list is not the data set's, naming both (``what``: the file)."""
    if tuple(model_classes) != tuple(data_classes):
        raise CheckpointError(
            f"{what} was trained for {len(model_classes)} classes ({', '.join(model_classes)}), "
            f"but the data set has {len(data_classes)} ({', '.join(data_classes)}). Train on "
            "this data set, or compare across data sets with `python -m fer_lib evaluate "
            "--checkpoint RUN --data OTHER`, which maps the shared classes."
        )


def _read_checkpoint(path: Path, hint: str) -> object:
    if not path.is_file():
        raise CheckpointNotFoundError(f"{path}: no such file. {hint}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    # torch raises several types (UnpicklingError, RuntimeError, EOFError...)
    except Exception as err:
        # skip torch's generic weights_only preamble
        text = str(err).split("WeightsUnpickler error:", 1)[-1]
        reason = next((line.strip() for line in text.splitlines() if line.strip()), "")[:200]
        raise CheckpointError(
            f"{path}: not a PyTorch checkpoint readable with torch.load(weights_only=True) "
            f"({type(err).__name__}{': ' + reason if reason else ''}). {hint}"
        ) from err


def _state_dict_of(obj: object, path: Path, hint: str) -> dict[str, Tensor]:
    """The state dict in a loaded file: obj['model_state_dict'] or obj; strips 'module.'."""
    state = obj.get("model_state_dict") if isinstance(obj, dict) else None
    if state is None and isinstance(obj, dict) and obj:
        state = obj if all(isinstance(v, Tensor) for v in obj.values()) else None
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()
    ):
        found = (
            f"a dict with keys {sorted(map(str, obj))[:10]}"
            if isinstance(obj, dict)
            else type(obj).__name__
        )
        raise CheckpointError(f"{path}: no model weights found (got {found}). {hint}")
    if state and all(k.startswith("module.") for k in state):  # saved from nn.DataParallel
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _listing(title: str, items: list[str], limit: int = 20) -> str:
    more = [f"... and {len(items) - limit} more"] if len(items) > limit else []
    return f"\n  {title} ({len(items)}):\n    " + "\n    ".join(items[:limit] + more)


def load_state_strict(model: nn.Module, state: Mapping[str, Tensor], path: Path) -> None:
    """load_state_dict(strict=True) after a check naming each missing, unexpected, mis-shaped key"""
    expected = model.state_dict()
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    shapes = [
        f"{k}: file {tuple(state[k].shape)}, model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        lists = {"missing keys": missing, "unexpected keys": unexpected, "shape mismatches": shapes}
        message = f"{path} does not match {type(model).__name__}:"
        message += "".join(_listing(title, items) for title, items in lists.items() if items)
        fc = state.get("fc.weight")
        side = round(fc.shape[-1] ** 0.5) if fc is not None and fc.ndim == 2 else 0
        # an ARMNet (its fc reads the ARM feature); a fusion model has an ARM but no fc
        is_armnet = hasattr(model, "arm") and hasattr(model, "fc")
        if side and is_armnet and fc.shape != model.fc.weight.shape and side**2 == fc.shape[-1]:
            message += (
                f"\n  fc.weight's width is the ARM feature size n*n: n={side} means "
                f"input_size={16 * (side + 3)}"
            )
        raise CheckpointError(message)
    model.load_state_dict(state, strict=True)
