"""Images per second of an exported model on the CPU: onnxruntime against PyTorch eager.

Both run the same batch-independent network (``fer_lib.apps.export``'s deployed graph: RGB crops in
[0, 255] and heatmaps in, every head's probabilities out) on random inputs, at the demo's and the
paper's network sizes, for the proposed fusion model and the RGB baseline alone, at batch 1 and
batch 64, with every core (torch's and onnxruntime's default thread counts). Random weights: the
speed of a network does not depend on its values.

    .venv/bin/python benchmarks/bench_onnx.py [--images 128] [--repeats 3] [--sizes demo paper]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
from pathlib import Path

import onnxruntime
import torch
from timing import best_of  # benchmarks/timing.py: run as a script, benchmarks/ is on the path

from fer_lib import models
from fer_lib.apps import export
from fer_lib.settings import FusionConfig

SIZES = {"demo": (128, 16, 8), "paper": (224, 64, 32)}  # input size, ResNet18 width, landmark width


def _network(size: str, fusion: bool) -> torch.nn.Module:
    side, width, landmark_width = SIZES[size]
    torch.manual_seed(0)
    baseline = models.ARMNet(side, width=width).eval()
    if not fusion:
        baseline.estimate_population_mean([torch.randn(4, 3, side, side)])
        return baseline
    model = models.FusionModel.from_config(baseline, FusionConfig(width=landmark_width)).eval()
    model.estimate_population_means([(torch.randn(4, 3, side, side), torch.rand(4, 1, side, side))])
    return model


def measure(size: str, fusion: bool, images: int, batch: int, repeats: int, folder: Path) -> dict:
    network = _network(size, fusion)
    path = export.export_onnx(network, folder / f"{size}_{fusion}.onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    side = SIZES[size][0]
    inputs = {"images": torch.rand(images, 3, side, side) * 255}
    if fusion:
        inputs["heatmaps"] = torch.rand(images, 1, side, side)
    deployed = export._Deployed(network).eval()
    starts = range(0, images, batch)

    def eager():
        with torch.no_grad():
            for k in starts:
                deployed(**{name: value[k : k + batch] for name, value in inputs.items()})

    def onnx():
        for k in starts:
            session.run(
                None, {name: value[k : k + batch].numpy() for name, value in inputs.items()}
            )

    torch_seconds, onnx_seconds = best_of(eager, repeats), best_of(onnx, repeats)
    return {
        "size": size,
        "model": "proposed (fusion)" if fusion else "RGB baseline",
        "batch": batch,
        "PyTorch eager images/s": images / torch_seconds,
        "onnxruntime images/s": images / onnx_seconds,
        "onnxruntime / PyTorch": torch_seconds / onnx_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", nargs="+", choices=sorted(SIZES), default=["demo", "paper"])
    args = parser.parse_args()
    print(
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}"
    )
    with tempfile.TemporaryDirectory() as folder:
        for size in args.sizes:
            for fusion in (True, False):
                for batch in (1, 64):
                    row = measure(size, fusion, args.images, batch, args.repeats, Path(folder))
                    ratio = row["onnxruntime / PyTorch"]
                    print(
                        f"{row['size']:5s} {row['model']:17s} batch {batch:2d}: PyTorch "
                        f"{row['PyTorch eager images/s']:7.1f}/s, onnxruntime "
                        f"{row['onnxruntime images/s']:7.1f}/s ({ratio:.2f}x)"
                    )


if __name__ == "__main__":
    main()
