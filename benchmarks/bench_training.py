"""Landmark-branch training from the frozen-feature cache vs recomputing the baseline, and ARM
inference.

    python benchmarks/bench_training.py [--input-size 224] [--width 64] [--landmark-width 32]
    [--batch 64]
                                        [--steps 4] [--data ROOT] [--device cpu|cuda]
    python benchmarks/bench_training.py --raf-sized # GPU: a RAF-DB-sized epoch and test inference

1. Training images/s of the landmark branch + fusion with - cache: RGB per-image features looked up
   in the cache, heatmaps drawn from coordinates (no image read); - recompute: each step reads and
   resizes the JPEGs, normalises them and runs the frozen baseline.
2. Inference images/s of our ARMNet (vectorised de-albino) vs a straightforward per-channel-loop
   ARM, and baseline training images/s in fp32 vs bf16 autocast.
3. With --raf-sized (meant for a GPU): seconds per landmark-branch epoch over 12,271 training images
   and seconds to infer 3,068 test images, on a synthetic RAF-DB-sized set (features and heatmaps
   only, so the figure is the training cost, not the JPEG decoding).
Without --data a small synthetic set is generated in a temporary folder.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch
from torch.nn import functional

from fer_lib import models, training
from fer_lib.data import tensors
from fer_lib.data.rafdb import load_rafdb


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def fusion_step(model, optimizer, rgb_per_image, heatmaps, labels):
    out = model.forward_cached(rgb_per_image, heatmaps)
    loss = model.loss(out, labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def bench_training(args, device) -> None:
    rafdb = load_rafdb(args.data).split("train")
    rafdb = rafdb.subset(range(min(len(rafdb), args.batch * args.steps)))
    split = tensors.split_tensors(rafdb, args.input_size, progress=False)
    torch.manual_seed(0)
    baseline = models.ARMNet(args.input_size, width=args.width).to(device).eval()
    model = (
        models.FusionModel(baseline, width=args.landmark_width, batch_norm=True).to(device).train()
    )
    optimizer = torch.optim.Adam(model.trainable_parameters(), lr=1e-3)
    cache = training.rgb_feature_cache(baseline, split, flips=(False,), progress=False)
    batches = [
        torch.arange(i, min(i + args.batch, len(split))) for i in range(0, len(split), args.batch)
    ]

    def cached(index):
        heat = tensors.heatmaps_for(split.points[index].to(device), args.input_size)
        fusion_step(
            model, optimizer, cache[0, index].to(device), heat, split.labels[index].to(device)
        )

    def recompute(index):
        paths = [rafdb.aligned_path(int(i)) for i in index]
        images = torch.from_numpy(
            tensors.load_images(paths, args.input_size, progress=False)
        ).permute(0, 3, 1, 2)
        with torch.no_grad():
            rgb = baseline.forward_per_image(tensors.normalise(images.to(device)))
        heat = tensors.heatmaps_for(split.points[index].to(device), args.input_size)
        fusion_step(model, optimizer, rgb, heat, split.labels[index].to(device))

    rates = {}
    for name, step in (("cache", cached), ("recompute", recompute)):
        step(batches[0])  # warm-up
        sync(device)
        started = time.perf_counter()
        for index in batches:
            step(index)
        sync(device)
        rates[name] = sum(len(b) for b in batches) / (time.perf_counter() - started)
        print(f"landmark-branch training, {name:>9}: {rates[name]:7.1f} images/s")
    print(f"cache / recompute: {rates['cache'] / rates['recompute']:.2f}x")


class LoopARMNet(torch.nn.Module):
    """Reference: ARM with a Python loop over the two channels (how a
    first implementation reads)."""

    def __init__(self, model: models.ARMNet):
        super().__init__()
        self.model = model

    def forward(self, x):
        m = self.model
        shuffled = m.arrangement(m.features(x))
        channels = [m.arm.de_albino(shuffled[:, c : c + 1]) for c in range(shuffled.shape[1])]
        y = m.arm.bn(torch.cat(channels, dim=1))
        feature = y.mean(dim=1) + m.arm.alpha * y.mean(dim=[0, 1])
        return m.fc(feature.flatten(1))


@torch.no_grad()
def bench_inference(args, device) -> None:
    torch.manual_seed(0)
    model = models.ARMNet(args.input_size, width=args.width).to(device).eval()
    images = torch.randn(args.batch, 3, args.input_size, args.input_size, device=device)
    loop = LoopARMNet(model).eval()
    assert torch.allclose(model(images), loop(images), atol=1e-4), (
        "the two implementations disagree"
    )
    for name, net in (("vectorised ARM", model), ("per-channel loop", loop)):
        net(images)
        sync(device)
        started = time.perf_counter()
        for _ in range(args.steps):
            net(images)
        sync(device)
        print(
            f"inference, {name:>16}: "
            f"{args.steps * args.batch / (time.perf_counter() - started):7.1f} images/s"
        )


def bench_autocast(args, device) -> None:
    """Baseline training images/s in fp32 and under bf16 autocast (the choice
    made in fer_lib.training)."""
    torch.manual_seed(0)
    model = models.ARMNet(args.input_size, width=args.width).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    images = torch.randn(args.batch, 3, args.input_size, args.input_size, device=device)
    labels = torch.randint(0, 7, (args.batch,), device=device)
    for name, enabled in (("fp32", False), ("bf16 autocast", True)):

        def step():
            # called in this iteration only
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled):  # noqa: B023
                loss = functional.cross_entropy(model(images).float(), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        step()
        sync(device)
        started = time.perf_counter()
        for _ in range(args.steps):
            step()
        sync(device)
        print(
            f"baseline training, {name:>13}: "
            f"{args.steps * args.batch / (time.perf_counter() - started):7.1f} images/s"
        )


def bench_raf_sized(args, device) -> None:
    """A RAF-DB-sized epoch of the landmark branch from the cache, and
    inference of 3,068 test images."""
    n_train, n_test, size = 12271, 3068, args.input_size
    torch.manual_seed(0)
    baseline = models.ARMNet(size, width=args.width).to(device).eval()
    model = (
        models.FusionModel(baseline, width=args.landmark_width, batch_norm=True).to(device).train()
    )
    optimizer = torch.optim.Adam(model.trainable_parameters(), lr=1e-3)
    cache = torch.randn(n_train, baseline.feature_dim, device=device)
    points = torch.rand(n_train, 37, 2, device=device) * size
    labels = torch.randint(0, 7, (n_train,), device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    sync(device)
    started = time.perf_counter()
    for index in torch.randperm(n_train, device=device).split(256):
        with autocast:
            out = model.forward_cached(cache[index], tensors.heatmaps_for(points[index], size))
            loss = functional.cross_entropy(
                out.fused_logits.float(), labels[index]
            ) + functional.cross_entropy(out.landmark_logits.float(), labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    sync(device)
    print(
        f"RAF-DB-sized landmark-branch epoch ({n_train} images, batch 256, {size}px): "
        f"{time.perf_counter() - started:.1f} s"
    )
    model.eval()
    images = torch.randint(0, 256, (n_test, 3, size, size), dtype=torch.uint8)
    sync(device)
    started = time.perf_counter()
    with torch.no_grad(), autocast:
        for batch in images.split(64):
            batch = tensors.normalise(batch.to(device))
            model(
                batch,
                tensors.heatmaps_for(torch.rand(len(batch), 37, 2, device=device) * size, size),
            )
    sync(device)
    print(
        f"inference of {n_test} test images (baseline + landmark branch, batch 64): "
        f"{time.perf_counter() - started:.1f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument(
        "--width", type=int, default=64, help="ResNet18 base width (64: the paper's)"
    )
    parser.add_argument(
        "--landmark-width", type=int, default=32, help="landmark CNN base width (32: Table 1)"
    )
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--raf-sized", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(
        f"machine: {platform.machine()}, {torch.get_num_threads()} threads, device {device}"
        + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else "")
    )
    print(
        f"input {args.input_size}px, ResNet18 width {args.width}, landmark CNN width "
        f"{args.landmark_width}, batch {args.batch}"
    )
    if args.raf_sized:
        bench_raf_sized(args, device)
        return
    if args.data is None:
        from fer_lib.data.synthetic import generate_demo_dataset

        args.data = Path(tempfile.mkdtemp()) / "basic"
        generate_demo_dataset(
            args.data, max(args.batch * args.steps, 70), 14, seed=0, progress=False
        )
    bench_inference(args, device)
    bench_autocast(args, device)
    bench_training(args, device)


if __name__ == "__main__":
    main()
