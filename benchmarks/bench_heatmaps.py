"""Heatmap rendering throughput (target: >= 2,000 heatmaps/s at 224x224 on a 2-core CPU).

    python benchmarks/bench_heatmaps.py [--size 224] [--batch 256] [--repeats 10] [--device
    cpu|cuda]

Renders batches of 37-point heatmaps from random coordinates and prints heatmaps/s for the gaussian
and square shapes, also into a reused output buffer (what a training loop sees after its first
batch).
"""

import argparse
import platform
import time

import torch

from fer_lib.data.heatmaps import render_heatmaps


def throughput(points: torch.Tensor, size: int, shape: str, repeats: int) -> float:
    render_heatmaps(points, size, shape=shape)  # warm-up
    if points.is_cuda:
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeats):
        render_heatmaps(points, size, shape=shape)
    if points.is_cuda:
        torch.cuda.synchronize()
    return repeats * points.shape[0] / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    points = (torch.rand(args.batch, 37, 2, generator=generator) * args.size).to(args.device)
    print(
        f"machine: {platform.processor() or platform.machine()}, torch threads "
        f"{torch.get_num_threads()}, device {args.device}"
    )
    for shape in ("gaussian", "square"):
        rate = throughput(points, args.size, shape, args.repeats)
        print(f"{shape:>8}: {rate:8.0f} heatmaps/s at {args.size}x{args.size}, batch {args.batch}")


if __name__ == "__main__":
    main()
