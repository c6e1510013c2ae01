"""The explorer of notebook 10 on a finished demo run: how long it takes to open, and to draw an
image's panel.

    .venv/bin/python benchmarks/bench_explore.py [--run runs/demo] [--repeats 3]

Each repetition is a fresh process (as a reader opening the notebook). It times the imports that the
notebook's first cell (``notebook.start``) does anyway, then the explorer cell: the run's Experiment
and the explorer's data, the proposed model's saved outputs (computed once by notebook 10 or the
first opening) and the table of every test image. Then it draws one image's panel at another w
without and with Grad-CAM++ (on the CPU). Targets (issue "Explore, not only read"): open under 5 s,
a panel under 1 s. Results: benchmarks/README.md, "The explorer".
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def worker(run: Path) -> None:
    clock = time.perf_counter()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fer_lib.apps import explore
    from fer_lib.run.experiment import Experiment
    from fer_lib.run.profiles import get_profile

    # what the notebook's first cell (notebook.start) has done already
    imported = time.perf_counter() - clock
    clock = time.perf_counter()
    settings = json.loads((run / "settings.json").read_text())
    experiment = Experiment(
        get_profile(settings["name"]), run / "data" / "basic", run, progress=False
    )
    data = explore.ExplorerData(experiment)
    outputs = data.outputs(explore.PROPOSED)
    frame = outputs.table()
    opened = time.perf_counter() - clock
    index = (
        int(explore.select(frame, effect="fixed")["index"].iloc[0])
        if (frame["effect"] == "fixed").any()
        else 0
    )
    timings = {"imports (the first cell)": imported, "open (the explorer cell)": opened}
    for name, cams in (("panel", False), ("panel with Grad-CAM++", True)):
        clock = time.perf_counter()
        fig = data.draw_panel(outputs, index, 0.3, cams=cams)
        fig.canvas.draw()  # rendered, as the notebook shows it
        plt.close(fig)
        timings[name] = time.perf_counter() - clock
    clock = time.perf_counter()
    fig = data.draw_panel(outputs, index, 0.8, cams=True)  # the w slider moved, the checkbox on
    fig.canvas.draw()
    plt.close(fig)
    timings["panel with Grad-CAM++ again, at another w"] = time.perf_counter() - clock
    clock = time.perf_counter()
    outputs.table(0.3)
    timings["re-fuse every test image at a new w"] = time.perf_counter() - clock
    print(json.dumps(timings))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "demo")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.run)
    if not (args.run / "settings.json").exists():
        raise SystemExit(
            f"{args.run}: not a finished run (no settings.json); run ./run_all.sh first"
        )
    rows = []
    for _ in range(args.repeats + 1):  # the first builds the saved outputs if notebook 10 has not
        result = subprocess.run(
            [sys.executable, __file__, "--worker", "--run", str(args.run)],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        if result.returncode:
            raise SystemExit(result.stderr[-3000:])
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
    print(
        f"medians of {args.repeats} fresh processes (the first, which may build the saved "
        "outputs, left out), seconds:"
    )
    for key in rows[0]:
        print(
            f"  {key}: {statistics.median(row[key] for row in rows[1:]):.2f}  (first: "
            f"{rows[0][key]:.2f})"
        )


if __name__ == "__main__":
    main()
