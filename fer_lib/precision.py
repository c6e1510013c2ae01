"""The precision of the heavy passes (the two branches' convolutions): bf16 autocast on CUDA, fp32 elsewhere.

``FER_PRECISION`` (an environment variable, so that worker processes and notebook kernels inherit it) overrides
the choice: ``bf16`` runs the CUDA path's autocast on any device, which is how the CPU-only tests run that path
(bf16 autocast works on CPUs); ``fp32`` turns autocast off everywhere; ``auto`` (or unset) is the default above.

Only the convolutional trunks run under autocast. What the report compares (ARM's batch terms, the heads, eq. 2's
agreement and confidence, a temperature, the learned gate, the fused logits) is computed in fp32 from the bf16
features (``models.fp32_head``), so two passes over the same features give the same numbers.
"""

from __future__ import annotations

import contextlib
import os

import torch

ENV = "FER_PRECISION"
MODES = ("auto", "bf16", "fp32")


def mode() -> str:
    value = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if value not in MODES:
        raise ValueError(f"{ENV}={value!r}: expected one of {', '.join(MODES)}")
    return value


def autocast_enabled(device: torch.device | str) -> bool:
    """Whether the trunks run under bf16 autocast on ``device``."""
    chosen = mode()
    return chosen == "bf16" or (chosen == "auto" and torch.device(device).type == "cuda")


def name(device: torch.device | str) -> str:
    """``bf16`` or ``fp32``: the precision of the features computed on ``device`` (part of the feature cache's key)."""
    return "bf16" if autocast_enabled(device) else "fp32"


def autocast(device: torch.device | str):
    """bf16 autocast for the trunks where ``autocast_enabled`` says so; a no-op context otherwise."""
    device = torch.device(device)
    if not autocast_enabled(device):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)
