"""The precision of the heavy passes (the two branches' convolutions): bf16 autocast on CUDA and on
CPUs with AMX (``cpu_path``), fp32 elsewhere.

``FER_PRECISION`` (an environment variable, so that worker processes and notebook kernels inherit
it) overrides the choice: ``bf16`` runs the CUDA path's autocast on any device, which is how the
CPU-only tests run that path (bf16 autocast works on CPUs); ``fp32`` turns autocast off everywhere;
``auto`` (or unset) is the default above.

The frozen RGB network (the baseline the landmark branch is fused onto) runs in full fp32 on every
device (``full``): its features, caches and evaluations are the checkpoint's own, so Table 6's
baseline and the fused models' RGB branch do not depend on the machine (under bf16 the ARM authors'
network and ours agreed on 97.9% of predictions; in fp32 on all). Only the trainable trunks (the
baseline while it trains, the landmark CNN) run under autocast. What the report compares (ARM's
batch terms, the heads, eq. 2's agreement and confidence, a temperature, the learned gate, the fused
logits) is computed in fp32 from the bf16 features (``fp32_head``), so two passes over the same
features give the same numbers.
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


def cpu_path() -> str:
    """How this CPU computes: "bf16" (autocast) where it has AMX tiles, native bf16 matrix units;
    "fp32" elsewhere, where bf16 autocast measured slower (benchmarks/README.md).
    FER_CPU_BF16=1/0 forces either. Another path gives other numbers, so runs record it
    (run_info.json, the design choices)."""
    forced = os.environ.get("FER_CPU_BF16", "").strip()
    if forced in ("0", "1"):
        return "bf16" if forced == "1" else "fp32"
    return "bf16" if torch.cpu._is_amx_tile_supported() else "fp32"


def cuda_has_bf16(device: torch.device | str) -> bool:
    """Whether a CUDA device computes bf16 natively (Ampere and later): on a V100 or a T4 bf16
    autocast is emulated, slower than fp32."""
    return torch.cuda.is_bf16_supported(including_emulation=False)


def autocast_enabled(device: torch.device | str) -> bool:
    """Whether the trunks run under bf16 autocast on ``device``: where it computes bf16 natively
    (a CUDA GPU with bf16 units, a CPU with AMX), or everywhere with FER_PRECISION=bf16."""
    chosen, kind = mode(), torch.device(device).type
    return chosen == "bf16" or (
        chosen == "auto"
        and ((kind == "cuda" and cuda_has_bf16(device)) or (kind == "cpu" and cpu_path() == "bf16"))
    )


def name(device: torch.device | str) -> str:
    """``bf16`` or ``fp32``: the precision of the features computed on ``device`` (part of the
    feature cache's key)."""
    return "bf16" if autocast_enabled(device) else "fp32"


def autocast(device: torch.device | str):
    """bf16 autocast for the trunks where ``autocast_enabled`` says so; else a no-op context."""
    device = torch.device(device)
    if not autocast_enabled(device):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def _ieee_settings() -> list[tuple[object, str, object]]:
    """(namespace, attribute, value) that turn TF32 off in cuDNN's convolutions and
    CUDA's matrix products: the fp32_precision settings where torch has them (2.9 on),
    the older allow_tf32 flags before."""
    cudnn_conv = getattr(torch.backends.cudnn, "conv", None)
    if cudnn_conv is not None and hasattr(cudnn_conv, "fp32_precision"):
        return [
            (cudnn_conv, "fp32_precision", "ieee"),
            (torch.backends.cuda.matmul, "fp32_precision", "ieee"),
        ]
    return [
        (torch.backends.cudnn, "allow_tf32", False),
        (torch.backends.cuda.matmul, "allow_tf32", False),
    ]


@contextlib.contextmanager
def full(device: torch.device | str):
    """Full fp32 for the frozen RGB network on any device: autocast off (inside an autocast region
    too), and on CUDA no TF32 (which keeps 10 mantissa bits) in convolutions or matrix products."""
    device = torch.device(device)
    settings = _ieee_settings() if device.type == "cuda" else []
    saved = [getattr(space, name) for space, name, _ in settings]
    try:
        for space, name, value in settings:
            setattr(space, name, value)
        with torch.autocast(device.type, enabled=False):
            yield
    finally:
        for (space, name, _), value in zip(settings, saved):
            setattr(space, name, value)


@contextlib.contextmanager
def evaluation_kernels():
    """cuDNN's kernels for an evaluation pass, chosen the same way in every pass: benchmark mode off
    and deterministic algorithms on (training turns benchmark mode on for speed, and another kernel
    gives other low bits, which a check of two passes at 1e-4 would see). No effect on a CPU."""
    cudnn = torch.backends.cudnn
    saved = cudnn.benchmark, cudnn.deterministic
    cudnn.benchmark, cudnn.deterministic = False, True
    try:
        yield
    finally:
        cudnn.benchmark, cudnn.deterministic = saved


def arithmetic_note(device: str, cpu_path: str) -> str:
    """Which precision path computed a run's numbers, in words (another gives other numbers)."""
    if device.startswith("cuda"):
        path = "CUDA (bf16 autocast for the trained trunks)"
    else:
        kind = "bf16 autocast, AMX" if cpu_path == "bf16" else "no autocast"
        path = f"the CPU's {cpu_path} path ({kind})"
    return (
        f"computed on {path}, the frozen RGB network in fp32; another path gives other numbers, "
        "not other findings"
    )


def fp32_head(features: torch.Tensor):
    """Autocast off for what follows the trunks (batch terms, heads, eq. 2): fp32
    from bf16 features, so that the numbers the report compares do not depend on
    where the features were rounded."""
    return torch.autocast(features.device.type, enabled=False)
