"""Which device a run uses (``--device``, ``FER_DEVICE``, else CUDA when there is one), checked, and
named in the line a run prints before it trains.
"""

from __future__ import annotations

import os

import torch

from fer_lib.runtime import precision

DEVICE_ENV = "FER_DEVICE"  # set by --device; worker processes and notebook kernels inherit it


class DeviceError(ValueError):
    """A device that cannot be used (CUDA on a CPU-only torch, a GPU index that is not there)."""


def cuda_problem() -> str:
    """Why this torch sees no GPU, in one phrase."""
    if torch.version.cuda is None:
        return "this torch is a CPU-only build"
    return (
        f"this torch is built for CUDA {torch.version.cuda} but sees no usable GPU (no NVIDIA "
        "driver, a driver older than that CUDA, or CUDA_VISIBLE_DEVICES hides them)"
    )


def checked_device(name: str) -> torch.device:
    """``name`` (cpu, cuda or cuda:N) as a device this machine has, or a DeviceError saying why."""
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise DeviceError(f"device {name!r}: expected cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {name}: {cuda_problem()}")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(
                f"device {name}: only {torch.cuda.device_count()} GPU(s) visible (cuda:0..)"
            )
    return device


def pick_device() -> torch.device:
    """``FER_DEVICE`` where set (``--device``), else CUDA when available, else CPU."""
    name = os.environ.get(DEVICE_ENV, "").strip()
    if name:
        return checked_device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def describe_device(device: torch.device) -> str:
    """The device and its precision path, for the line a run prints before it trains."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        where = f"{device} ({torch.cuda.get_device_name(index)})"
    else:
        where = "cpu"
    return (
        f"{where}, {precision.name(device)} for the trained trunks, fp32 for the frozen RGB network"
    )
