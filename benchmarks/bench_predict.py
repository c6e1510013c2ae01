"""Photos per second of ``predict`` on the CPU: with a figure per face (Grad-CAM++ of both
branches), and without (``--no-figures``: the table alone, faces batched through the networks).

Every photo is scikit-image's astronaut (512 x 512, one face), saved ``--photos`` times under other
names; the models are a model folder (``python -m fer_lib export``), by default the demo run's
proposed model. Detection (dlib's HOG detector and 68 points) runs on every photo either way.

    .venv/bin/python benchmarks/bench_predict.py --model models/demo-proposed [--photos 200]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image
from skimage import data as samples

from fer_lib.apps.predict import load_model_folder, predict_photos


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a model folder")
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--figure-photos", type=int, default=20, help="photos timed with figures")
    args = parser.parse_args()
    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads")
    models = load_model_folder(args.model, torch.device("cpu"))
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "photos"
        folder.mkdir()
        face = Image.fromarray(samples.astronaut())
        for k in range(args.photos):
            face.save(folder / f"photo{k:05d}.jpg", quality=90)
        photos = sorted(folder.iterdir())
        for figures, count in ((False, args.photos), (True, args.figure_photos)):
            out = Path(scratch) / f"out_{figures}"
            started = time.perf_counter()
            predict_photos(photos[:count], *models, out, figures=figures, progress=False)
            seconds = time.perf_counter() - started
            what = "with a figure per face" if figures else "--no-figures"
            print(f"{what}: {count} photos in {seconds:.1f} s, {count / seconds:.2f} photos/s")


if __name__ == "__main__":
    main()
