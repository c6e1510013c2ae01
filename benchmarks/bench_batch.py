"""Training cost per image against batch size, for the demo's networks (why the demo trains the
landmark branch with batch 32), and the import cost of a report notebook's first cell.

    python benchmarks/bench_batch.py [--input-size 128] [--width 16] [--landmark-width 2] [--seconds
    3]

1. Forward + backward ms per image of the RGB network (ResNet18 + ARM) and of the landmark CNN at
   batch 16, 32 and 64 (random inputs, fp32, the default thread count).
2. Seconds to import what a notebook imports, in a fresh interpreter, with and without torchvision.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time

import torch

from fer_lib import models


def ms_per_image(
    model: torch.nn.Module, batch: int, channels: int, size: int, seconds: float
) -> float:
    x = torch.rand(batch, channels, size, size)
    for _ in range(2):  # warm-up
        model(x).sum().backward()
    start, images = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        model(x).sum().backward()
        images += batch
    return (time.perf_counter() - start) / images * 1000


def import_seconds(statement: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", statement], check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--input-size", type=int, default=128)
    parser.add_argument("--width", type=int, default=16, help="ResNet18 base width (demo: 16)")
    parser.add_argument(
        "--landmark-width", type=int, default=2, help="landmark CNN base width (demo: 2)"
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per setting")
    args = parser.parse_args()
    print(
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    torch.manual_seed(0)
    networks = {
        f"RGB ResNet18+ARM width {args.width}": (
            models.ARMNet(args.input_size, width=args.width),
            3,
        ),
        f"landmark CNN width {args.landmark_width}": (
            models.LandmarkCNN(args.input_size, batch_norm=True, width=args.landmark_width),
            1,
        ),
    }
    for name, (model, channels) in networks.items():
        for batch in (16, 32, 64):
            print(
                f"{name}, batch {batch}: "
                f"{ms_per_image(model, batch, channels, args.input_size, args.seconds):.2f} ms "
                "per image (forward + backward)"
            )
    notebook = "from fer_lib import report; from fer_lib.run.notebook import start"
    print(f"import of a notebook's first cell: {import_seconds(notebook):.1f} s")
    print(f"  the same plus torchvision: {import_seconds(notebook + '; import torchvision'):.1f} s")


if __name__ == "__main__":
    main()
