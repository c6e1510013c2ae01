"""The AffectNet CSV reader and check at full size: time and peak memory on an annotations-only
copy.

    python benchmarks/bench_datasets.py [--rows 287651] [--validation 4000] [--keep DIR] [--convert
    N]

Writes ``training.csv`` (``--rows`` rows; AffectNet's has about 414,000, of which about 287,000 are
in the 8 expression classes) and ``validation.csv`` in AffectNet's columns, with 68 random landmarks
per row and about one row in twelve with a code 8-10, then times ``AffectNetCsv.check`` reading
every row (image files are not looked for: the copy has none). Each measurement runs in a fresh
process, so its peak resident memory (``ru_maxrss``) is its own; the same process importing fer_lib
and doing nothing gives the floor, and the difference is what the reader holds. A reader that kept
every row would grow with the rows; a streaming one stays flat, which the run checks at a tenth of
the rows too.

``--convert N`` also writes a synthetic AffectNet CSV copy of N training images (``demo-data
--layout affectnet``) and times its conversion into RAF-DB's layout (decoding, cropping, aligning,
writing two JPEGs and three annotation files per image) with one worker per CPU: the rate that sizes
a full conversion.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from fer_lib.data.affectnet import AffectNetCsv
root, mode = Path(sys.argv[1]), sys.argv[2]
started = time.perf_counter()
rows = None
if mode == "check":
    report = AffectNetCsv(root).check(decode_images=False, progress=False, check_files=False)
    rows = sum(report.train) + sum(report.test) + sum(report.excluded.values())
    assert report.ok, report.errors[:3]
if mode == "convert":
    import os
    from fer_lib.data.layouts import convert
    out = root.parent / (root.name + "_converted")
    rows = convert(AffectNetCsv(root), out, workers=os.cpu_count(), progress=False)["converted"]
seconds = time.perf_counter() - started
peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "peak_mib": peak_mib, "rows": rows}))
"""


def write_copy(root: Path, rows: int, validation: int, seed: int = 0) -> Path:
    """An annotations-only AffectNet CSV release: the two list files, no images."""
    from fer_lib.data.affectnet import COLUMNS

    rng = np.random.default_rng(seed)
    lists = root / "Manually_Annotated_file_lists"
    lists.mkdir(parents=True, exist_ok=True)
    (root / "Manually_Annotated_Images").mkdir(exist_ok=True)
    for name, count in (("training.csv", rows), ("validation.csv", validation)):
        with open(lists / name, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(COLUMNS)
            for start in range(0, count, 10_000):  # written in blocks: the generator streams too
                n = min(10_000, count - start)
                codes = np.where(
                    rng.random(n) < 1 / 12, rng.integers(8, 11, n), rng.integers(0, 8, n)
                )
                points = rng.uniform(20, 400, (n, 136))
                for i in range(n):
                    writer.writerow(
                        [
                            f"{(start + i) // 1000 + 1}/{start + i:032x}.jpg",
                            40,
                            40,
                            300,
                            300,
                            ";".join(f"{v:.2f}" for v in points[i]),
                            int(codes[i]),
                            "0.1",
                            "-0.2",
                        ]
                    )
    return root


def measure(root: Path, mode: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(root), mode], capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def time_conversion(base: Path, n: int) -> None:
    """convert-data on synthetic AffectNet copies of n and n / 10 training images, each in a fresh
    process: its time and the converting (parent) process's peak memory; the workers each hold one
    image at a time."""
    from fer_lib.data.demo_layouts import write_affectnet_csv

    for size in (n // 10, n):
        source = write_affectnet_csv(
            base / f"images_{size}", size, max(7, size // 10), progress=False
        )
        run = measure(source, "convert")
        rate = run["rows"] / run["seconds"]
        print(
            f"convert-data, {run['rows']} synthetic AffectNet images, {os.cpu_count()} workers: "
            f"{run['seconds']:.1f} s ({rate:.0f} images/s; 287,651 would take about "
            f"{287_651 / rate / 3600:.1f} h), peak {run['peak_mib']:.0f} MiB in the converting "
            "process"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--rows", type=int, default=287_651, help="training.csv rows (AffectNet-8's training set)"
    )
    parser.add_argument("--validation", type=int, default=4_000)
    parser.add_argument("--keep", type=Path, default=None, help="write the copy here and keep it")
    parser.add_argument(
        "--convert",
        type=int,
        default=0,
        metavar="N",
        help="also time converting N synthetic images",
    )
    args = parser.parse_args()
    base = args.keep or Path(tempfile.mkdtemp())
    try:
        started = time.perf_counter()
        full = write_copy(base / "full", args.rows, args.validation)
        tenth = write_copy(base / "tenth", args.rows // 10, args.validation // 10)
        size = (
            sum(p.stat().st_size for p in (full / "Manually_Annotated_file_lists").iterdir())
            / 2**20
        )
        print(
            f"wrote {args.rows} + {args.validation} rows ({size:.0f} MiB of CSV) in "
            f"{time.perf_counter() - started:.0f} s"
        )
        floor = measure(full, "import")
        small = measure(tenth, "check")
        big = measure(full, "check")
        print(
            f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
            f"Python {platform.python_version()}"
        )
        print(f"import only: peak {floor['peak_mib']:.0f} MiB")
        for run in (small, big):
            print(
                f"check, {run['rows']} rows: {run['seconds']:.1f} s "
                f"({run['rows'] / run['seconds']:,.0f} rows/s), peak {run['peak_mib']:.0f} MiB "
                f"({run['peak_mib'] - floor['peak_mib']:+.0f} MiB over the import)"
            )
        if args.convert:
            time_conversion(base, args.convert)
    finally:
        if args.keep is None:
            shutil.rmtree(base)


if __name__ == "__main__":
    main()
