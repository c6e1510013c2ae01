"""What computing the frozen RGB network in full fp32 costs, and what bf16 autocast would change.

The frozen baseline's features, caches and evaluations run in fp32 on every device
(``fer_lib.runtime.precision.full``), so that Table 6's baseline is the checkpoint's own accuracy.
This times the frozen network's feature-cache pass (``ARMNet.forward_per_image``, eval mode, no
gradients) over random images in fp32 and under bf16 autocast, at the demo's and the paper's network
sizes, and counts how many of the logits' argmax agree between the two.

    .venv/bin/python benchmarks/bench_frozen_precision.py [--images 512] [--repeats 3]

On a CPU without AMX, bf16 autocast is emulated and slower; on AMX CPUs and GPUs it is faster, and
the difference is the price of fp32. Random weights give no meaningful agreement rate for a trained
network; the agreement column is a check that bf16 moves predictions at all.
"""

from __future__ import annotations

import argparse
import platform

import torch
from timing import best_of  # benchmarks/timing.py: run as a script, benchmarks/ is on the path

from fer_lib import models
from fer_lib.data import tensors
from fer_lib.runtime import devices, precision

SIZES = {"demo": (128, 16), "paper": (224, 64)}  # (input size, ResNet18 base width)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = devices.pick_device()
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {device}")
    print("| network | images | fp32 s | bf16 autocast s | fp32 / bf16 | argmax agree |")
    print("|---|---|---|---|---|---|")
    for name, (size, width) in SIZES.items():
        torch.manual_seed(0)
        model = models.ARMNet(size, width=width).eval().to(device)
        images = torch.randint(0, 256, (args.images, 3, size, size), dtype=torch.uint8)
        batches = [
            tensors.normalise(images[i : i + args.batch_size].to(device))
            for i in range(0, args.images, args.batch_size)
        ]

        def fp32() -> torch.Tensor:
            with torch.no_grad(), precision.full(device):
                # called in this iteration only
                return torch.cat([model(b).float() for b in batches])  # noqa: B023

        def bf16() -> torch.Tensor:
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
                # called in this iteration only
                return torch.cat([model(b).float() for b in batches])  # noqa: B023

        full, low = best_of(fp32, args.repeats), best_of(bf16, args.repeats)
        agree = float((fp32().argmax(1) == bf16().argmax(1)).float().mean())
        print(
            f"| {name} ({size} px, width {width}) | {args.images} | {full:.2f} | {low:.2f} | "
            f"{full / low:.2f} | {agree:.3f} |"
        )


if __name__ == "__main__":
    main()
