"""The what-if editor of notebook 11: how long from a landmark's move to the updated numbers, on the
CPU, at the demo's size and at the paper's.

    .venv/bin/python benchmarks/bench_whatif.py [--run runs/demo] [--repeats 20]

"editor" (a finished run, the demo's by default): the Python side of a drag in the live editor, from
the points' new coordinates arriving to the readout, the bars and the landmark input set (the
answer of both heads and the fusion, the PNGs the page shows). "paper size": the same work
(``FaceWhatIf.answer`` of moved points and the two PNGs) with the paper's networks at 224 px
(random weights, a test batch of 64 synthetic faces). The browser's own drawing and the socket are
not included. Target: under 300 ms. Results: benchmarks/README.md, "The what-if editor".
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def _times(step, repeats: int) -> list[float]:
    step()  # warm-up: kernels chosen, memory allocated
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return times


def editor_drag(run: Path, repeats: int) -> list[float]:
    """A drag's Python side in the editor on a finished run."""
    import numpy as np

    from fer_lib.apps import editor, explore
    from fer_lib.run.experiment import Experiment
    from fer_lib.run.profiles import get_profile

    settings = json.loads((run / "settings.json").read_text())
    experiment = Experiment(
        get_profile(settings["name"]), run / "data" / "basic", run, progress=False
    )
    edit = editor.Editor(experiment, explore.ExplorerData(experiment))
    start = np.array(edit.points.y)
    step_count = iter(range(10**6))

    def drag():
        y = start.copy()
        y[-1] -= 1 + next(step_count) % 20  # another place each time: nothing is reused
        edit.points.y = y

    return _times(drag, repeats)


def paper_size(repeats: int) -> list[float]:
    """``FaceWhatIf.answer`` of moved points and the two PNGs with the paper's networks."""
    from fer_lib import models, training
    from fer_lib.apps import editor, whatif
    from fer_lib.data import tensors
    from fer_lib.run.profiles import get_profile

    profile = get_profile("paper")
    size, count = profile.input_size, 64
    generator = torch.Generator().manual_seed(0)
    split = tensors.SplitTensors(
        names=[f"face_{i}" for i in range(count)],
        images=torch.randint(
            0, 256, (count, 3, size, size), dtype=torch.uint8, generator=generator
        ),
        points=torch.rand(count, 37, 2, generator=generator) * (0.6 * size) + 0.2 * size,
        labels=torch.arange(count) % 7,
        landmark_set="auto37",
    )
    baseline = models.ARMNet(size, width=profile.baseline_width).eval()
    config = training.FusionConfig(width=profile.landmark_width, eval_batch_size=count)
    model = models.FusionModel.from_config(baseline, config).eval()
    cache = training.rgb_feature_cache(baseline, split, flips=(False,), progress=False)
    face = whatif.FaceWhatIf(model, split, cache, config, 5)
    step_count = iter(range(10**6))

    def move():
        points = face.points.clone()
        points[-1, 1] -= 1 + next(step_count) % 20
        answer = face.answer(points)
        editor.png(answer.heatmap)
        editor.png(face.image.permute(1, 2, 0).numpy())

    return _times(move, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "demo")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    results = {}
    if (args.run / "settings.json").exists():
        results[f"editor, a drag ({args.run.name} run)"] = editor_drag(args.run, args.repeats)
    else:
        print(f"{args.run}: not a finished run (no settings.json); the editor row is left out")
    results["paper size (224 px, paper widths), a move"] = paper_size(args.repeats)
    print(f"milliseconds over {args.repeats} moves after a warm-up (torch {torch.__version__}):")
    for name, times in results.items():
        print(
            f"  {name}: median {1000 * statistics.median(times):.1f}, max {1000 * max(times):.1f}"
        )


if __name__ == "__main__":
    main()
