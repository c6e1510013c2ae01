"""check-data speed on a RAF-DB-sized copy (15,339 samples; target: annotations in under 10 s).

    python benchmarks/bench_check_data.py [--root DIR] [--keep]

Without --root, writes a RAF-DB-sized layout (12,271 train / 3,068 test) with real annotation files
and small 100x100 JPEGs in a temporary folder (about a minute), then times one pass over the
annotation files (``load_rafdb``) and the full ``check_rafdb`` pass that also decodes every aligned
image.
"""

from __future__ import annotations

import argparse
import io
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from fer_lib.data import rafdb


def write_raf_sized(root: Path, n_train: int = 12271, n_test: int = 3068) -> Path:
    rng = np.random.default_rng(0)
    for folder in (
        rafdb.ALIGNED_DIR,
        rafdb.ORIGINAL_DIR,
        rafdb.MANUAL_DIR,
        rafdb.AUTO_DIR,
        rafdb.LABEL_FILE.parent,
    ):
        (root / folder).mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (100, 100, 3), dtype=np.uint8)).save(
        buffer, format="JPEG", quality=90
    )
    jpeg = buffer.getvalue()
    rows = []
    for split, count, digits in (("train", n_train, 5), ("test", n_test, 4)):
        for i in range(1, count + 1):
            name = f"{split}_{i:0{digits}d}.jpg"
            rows.append(f"{name} {rng.integers(1, 8)}")
            (root / rafdb.ALIGNED_DIR / rafdb.aligned_name(name)).write_bytes(jpeg)
            (root / rafdb.ORIGINAL_DIR / name).write_bytes(jpeg)
            manual = rng.uniform(50, 150, (5, 2))
            lines = [f"{x:.2f}\t{y:.2f}" for x, y in manual] + ["1", "0", "2"]
            (root / rafdb.MANUAL_DIR / rafdb.manual_name(name)).write_text("\n".join(lines) + "\n")
            auto = rng.uniform(50, 150, (37, 2))
            (root / rafdb.AUTO_DIR / rafdb.auto_name(name)).write_text(
                "\n".join(f"{x:.2f}\t{y:.2f}" for x, y in auto) + "\n"
            )
    (root / rafdb.LABEL_FILE).write_text("\n".join(rows) + "\n")
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the generated copy")
    args = parser.parse_args()
    made = args.root is None
    root = args.root or write_raf_sized(Path(tempfile.mkdtemp()) / "basic")
    try:
        print(f"machine: {platform.machine()}, copy: {root}")
        started = time.perf_counter()
        data = rafdb.load_rafdb(root)
        print(
            f"annotation pass (load_rafdb), {len(data)} samples: "
            f"{time.perf_counter() - started:.2f} s"
        )
        started = time.perf_counter()
        report = rafdb.check_rafdb(root, progress=False)
        print(
            "full check-data (annotations + decoding every aligned image): "
            f"{time.perf_counter() - started:.2f} s, {len(report.errors)} errors"
        )
    finally:
        if made and not args.keep:
            shutil.rmtree(root.parent)


if __name__ == "__main__":
    main()
