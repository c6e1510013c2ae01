"""CPU (or GPU) time per image of each stage of the paper profile, at its sizes: 224 px, ResNet18 at
width 64, the Table 1 landmark CNN at width 32, batch 256 for training (smaller here, see --batch)
and 64 for inference.

    .venv/bin/python benchmarks/bench_paper_stages.py --batch 32 --steps 3

Stages, each timed over --steps batches after one warm-up batch, with random inputs of the right
shapes:
- baseline training step (ARM recipe: normalise, augment, forward, backward, Adam step);
- frozen-feature cache (the baseline's per-image ARM maps, eval mode);
- landmark-branch training step from the cache (heatmaps drawn from coordinates, landmark CNN, ARM,
  both heads, AdaBelief step);
- inference through both branches (RGB trunk + landmark CNN + fusion), batch 64.
"""

from __future__ import annotations

import argparse
import time

import torch


def _timed(step, batch: int, steps: int) -> float:
    step()  # warm-up
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - started) / (steps * batch) * 1000


def main() -> None:
    from adabelief_pytorch import AdaBelief

    from fer_lib import models, training
    from fer_lib.data import tensors
    from fer_lib.runtime import devices

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--batch",
        type=int,
        default=32,
        help="training batch (the paper: 256; smaller fits a CPU's time)",
    )
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    device = torch.device(args.device) if args.device else devices.pick_device()
    torch.manual_seed(0)
    size, batch, steps = 224, args.batch, args.steps
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8)
    points = torch.rand(batch, 37, 2) * (size - 40) + 20
    labels = torch.randint(0, 7, (batch,))
    generator = torch.Generator().manual_seed(0)

    baseline = models.ARMNet(size, width=64).to(device)
    adam = torch.optim.Adam(baseline.parameters(), lr=1e-3, weight_decay=1e-4)

    def baseline_step():
        baseline.train()
        x = tensors.augment_arm(tensors.normalise(images), generator).to(device)
        loss = torch.nn.functional.cross_entropy(baseline(x), labels.to(device))
        adam.zero_grad()
        loss.backward()
        adam.step()

    results = {"baseline training step": _timed(baseline_step, batch, steps)}
    baseline.eval()

    def cache_step():
        with torch.no_grad():
            baseline.forward_per_image(tensors.normalise(images).to(device))

    results["frozen-feature cache"] = _timed(cache_step, batch, steps)
    config = training.FusionConfig(width=32, batch_norm=False)
    model = models.FusionModel.from_config(baseline, config).to(device)
    model.landmark_cnn.to(memory_format=models.landmark_memory_format(config, device))
    optimizer = AdaBelief(
        model.trainable_parameters(), print_change_log=False, **training.ADABELIEF
    )
    with torch.no_grad():
        cached = baseline.forward_per_image(tensors.normalise(images).to(device))

    def landmark_step():
        model.train()
        heatmaps = tensors.heatmaps_for(points.to(device), size).contiguous(
            memory_format=models.landmark_memory_format(config, device)
        )
        loss = model.loss(model.forward_cached(cached, heatmaps), labels.to(device))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    results["landmark-branch training step (from the cache)"] = _timed(landmark_step, batch, steps)
    model.eval()

    def inference_step():
        with torch.no_grad():
            model(
                tensors.normalise(images).to(device), tensors.heatmaps_for(points.to(device), size)
            )

    results["inference, both branches"] = _timed(inference_step, batch, steps)
    print(
        f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, batch "
        f"{batch}, {steps} timed steps"
    )
    for stage, ms in results.items():
        print(f"{stage}: {ms:.0f} ms/image")


if __name__ == "__main__":
    main()
