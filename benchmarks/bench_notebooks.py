"""The report's notebooks, before and after a change: every notebook executed again on a copy of a
finished run.

    .venv/bin/python benchmarks/bench_notebooks.py --ref 229993e --repeats 2

Copies the run folder (default ``runs/demo``: its data, models and caches) once, then runs ``python
-m fer_lib run-all --force --run-dir COPY`` with the current tree's code and with REV's,
alternating, so that the load of a shared machine hits both alike. Both run from temporary copies of
their source (REV's by ``git archive``, the working tree's tracked and untracked files), where their
figures go: the project's own ``figures/`` is left alone. Every model is reused, so what is timed is
the notebooks alone: their kernels, imports, cells and HTML pages. Prints each run's wall time and
seconds per notebook (``run_info.json``) and the ratio of medians. Results: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_once(source: Path, run_dir: Path, profile: str, cache: Path) -> dict:
    env = {
        **os.environ,
        "PYTHONPATH": str(source),
        "PYTHONPYCACHEPREFIX": str(cache),
        "MPLBACKEND": "Agg",
    }
    command = [sys.executable, "-m", "fer_lib", "run-all", "--profile", profile]
    command += ["--run-dir", str(run_dir), "--force"]
    clock = time.perf_counter()
    result = subprocess.run(command, cwd=source, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - clock
    if result.returncode:
        raise SystemExit(f"run-all failed in {source}:\n{result.stderr[-3000:]}")
    seconds = json.loads((run_dir / "run_info.json").read_text())["notebook_seconds"]
    seconds = {name: value for name, value in seconds.items() if not name.startswith("training")}
    return {"wall": round(wall, 1), "notebooks": round(sum(seconds.values()), 1), **seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", required=True, help="a git revision to compare with")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "demo", help="a finished run")
    args = parser.parse_args()
    if not (args.run / "run_info.json").exists():
        raise SystemExit(f"{args.run}: not a finished run; run ./run_all.sh once first")
    import pandas as pd
    from tqdm import tqdm

    with tempfile.TemporaryDirectory(prefix="bench_notebooks_") as scratch:
        scratch = Path(scratch)
        run_dir, ref_tree, tree = scratch / "run", scratch / "ref", scratch / "tree"
        shutil.copytree(args.run, run_dir, symlinks=True)
        ref_tree.mkdir()
        archive = subprocess.run(
            ["git", "archive", args.ref], cwd=ROOT, capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(ref_tree)], input=archive, check=True)
        files = subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        for name in files:
            if (ROOT / name).is_file():
                (tree / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, tree / name)
        sources = [(f"before ({args.ref})", ref_tree), ("after", tree)]
        rows = []
        for repeat in tqdm(range(args.repeats * 2), desc="bench_notebooks"):
            label, source = sources[repeat % 2]
            # each code its own bytecode cache, kept between its repetitions
            row = run_once(source, run_dir, args.profile, scratch / f"pycache_{repeat % 2}")
            rows.append({"repeat": repeat // 2, "code": label, **row})
            tqdm.write(json.dumps(rows[-1]))
    frame = pd.DataFrame(rows)
    medians = frame.drop(columns="repeat").groupby("code", sort=False).median()
    print(f"\n{time.strftime('%Y-%m-%d')}, medians of {args.repeats} repetition(s), seconds:\n")
    print(medians.T.to_markdown(floatfmt=".1f"))
    ratio = medians.loc["after"] / medians.iloc[0]
    print(f"\nafter / before: wall {ratio['wall']:.2f}, notebooks {ratio['notebooks']:.2f}")


if __name__ == "__main__":
    main()
