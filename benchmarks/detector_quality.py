"""How well dlib finds the synthetic faces, and how far its points fall from the true ones, plus the
throughput of ``import-images``.

The synthetic RAF-DB knows every face's landmarks: its automatic 37 points are the drawn face's
iBUG-68 points of ``AUTO37_FROM_IBUG68``, plus the simulated detector's noise
(``SyntheticKnobs.detector_jitter``, in inter-ocular units: 0.025 in the demo), so an NME near that
noise is as close as the files allow. On the original images of a demo set this measures:
- the detection rate (a face found, and its box holding the true eye centres);
- the normalised mean error (NME) of dlib's 37 points against the file's, divided by the
  inter-ocular distance (between the true eye centres), per image, then its median and mean;
- the time of ``python -m fer_lib import-images`` on those images (class folders, both cores).

    .venv/bin/python benchmarks/detector_quality.py --data runs/demo/data/basic --images 300 --out
    /tmp/detector

Results and the machine: benchmarks/README.md, "Face detection on the synthetic faces".
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        type=Path,
        required=True,
        help="a synthetic RAF-DB (basic/), e.g. runs/demo/data/basic",
    )
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    from fer_lib.data import faces
    from fer_lib.data.rafdb import CLASSES, load_rafdb

    data = load_rafdb(args.data)
    clock = time.perf_counter()
    quality = faces.detector_quality(data, args.images).iloc[0]
    print(
        f"detected {int(quality['faces found'])} of {int(quality['images'])} faces "
        f"({quality['share found']:.1%}) in {time.perf_counter() - clock:.0f} s (one process); "
        "NME of the 37 points (inter-ocular): median "
        f"{quality['NME of the 37 points, median']:.3f}, mean {quality['NME, mean']:.3f}"
    )
    picks = np.linspace(0, len(data) - 1, min(args.images, len(data))).astype(int)

    source = args.out / "photos"
    shutil.rmtree(args.out, ignore_errors=True)
    for i in picks:
        folder = source / CLASSES[int(data.labels[i])].lower()
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(data.original_path(i), folder / data.names[i])
    clock = time.perf_counter()
    counts = faces.import_images(source, args.out / "imported", progress=False)
    seconds = time.perf_counter() - clock
    print(
        f"import-images: {counts['photos']} photos in {seconds:.1f} s "
        f"({counts['photos'] / seconds:.1f} photos/s), {counts['imported']} imported"
    )


if __name__ == "__main__":
    main()
