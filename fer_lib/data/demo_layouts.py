"""The synthetic set (``fer_lib.data.synthetic``) written in the layouts of AffectNet, FERPlus and
CK+, so that every reader, check and converter runs without the real data (``python -m fer_lib
demo-data OUT --layout L``).

Each writer renders the same faces as the RAF-DB demo (same seed, same Table 3 class proportions)
and stores them as the real data set stores its own: AffectNet's original photos with a face box and
68 points in its CSV, or 224x224 crops with ``.npy`` annotations; FER2013's 48x48 grey faces with
ten FERPlus votes per row; CK+'s grey PNG frames with 68-point landmark files and one emotion file
per labelled sequence. What the generator cannot draw is said where it is used: it has no Contempt
recipe (Contempt rows show Disgust's face), no "not a face" image (codes 8-10 and NF rows show
faces), and a CK+ sequence's frames are separate renderings (one face per frame, not a sequence from
neutral to peak). A few rows of every kind the protocol excludes are written, so the counts by
reason are exercised.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from fer_lib.data import affectnet, ckplus, ferplus, rafdb
from fer_lib.data.synthetic import SyntheticSample, render_sample, split_labels

DEMO_LAYOUTS = ("rafdb", "affectnet", "affectnet-npy", "ferplus", "ckplus")
MARKER = "DEMO_LAYOUT.json"
NPY_SIZE = 224
# FER2013's emotion column
FER_CODES = ("Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise", "Neutral")


def _plan(n_train: int, n_test: int, seed: int) -> list[tuple[str, int, str]]:
    """(split, index, class) of every sample: Table 3 proportions over RAF-DB's 7 classes,
    then one extra row in twenty for Contempt and for what the protocols exclude ("excluded",
    given a code by each writer). ``index`` counts from 0 in each split."""
    plan = []
    for split, n in (("train", n_train), ("test", n_test)):
        plan += [(split, i, rafdb.CLASSES[k]) for i, k in enumerate(split_labels(n, split, seed))]
        extra = max(2, n // 20)
        plan += [(split, n + j, rafdb.CONTEMPT if j % 2 == 0 else "excluded") for j in range(extra)]
    return plan


def _render(seed: int, split: str, index: int, name: str) -> SyntheticSample:
    drawn = {rafdb.CONTEMPT: "Disgust", "excluded": "Neutral"}.get(name, name)
    return render_sample(seed, split, index, rafdb.CLASSES.index(drawn))


def _samples(n_train: int, n_test: int, seed: int, desc: str, progress: bool):
    """(split, index, class, sample) of every row of the plan, behind a progress bar."""
    plan = _plan(n_train, n_test, seed)
    for split, index, name in tqdm(plan, desc=desc, unit="img", disable=not progress):
        yield split, index, name, _render(seed, split, index, name)


def _prepare(out: str | os.PathLike) -> Path:
    out = Path(out).expanduser()
    if out.exists() and any(out.iterdir()) and not (out / MARKER).exists():
        raise FileExistsError(
            f"{out} is not empty and holds no {MARKER}: choose an empty folder for the demo set"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).unlink(missing_ok=True)
    return out


def _finish(out: Path, layout: str, n_train: int, n_test: int, seed: int) -> Path:
    (out / MARKER).write_text(
        json.dumps({"layout": layout, "n_train": n_train, "n_test": n_test, "seed": seed}) + "\n"
    )
    return out


def _csv_writer(stack: contextlib.ExitStack, path: Path):
    return csv.writer(stack.enter_context(open(path, "w", newline="", encoding="utf-8")))


def write_affectnet_csv(
    out: str | os.PathLike, n_train: int, n_test: int, seed: int = 0, progress: bool = True
) -> Path:
    """AffectNet's CSV release: Manually_Annotated_Images/ and
    Manually_Annotated_file_lists/{training,validation}.csv."""
    out = _prepare(out)
    lists = out / "Manually_Annotated_file_lists"
    lists.mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    excluded = itertools.cycle((8, 9, 10))
    with contextlib.ExitStack() as stack:
        writers = {
            split: _csv_writer(stack, lists / affectnet.LIST_FILES[split]) for split in rafdb.SPLITS
        }
        for writer in writers.values():
            writer.writerow(affectnet.COLUMNS)
        samples = _samples(n_train, n_test, seed, "demo AffectNet", progress)
        for split, index, name, sample in samples:
            code = next(excluded) if name == "excluded" else affectnet.CODES.index(name)
            relative = f"{index // 500 + 1}/{split}_{index:06d}.jpg"
            image = out / affectnet.IMAGES_DIR / relative
            image.parent.mkdir(parents=True, exist_ok=True)
            sample.original.save(image, quality=sample.jpeg_quality)
            x1, y1, x2, y2 = sample.box
            points = ";".join(f"{v:.2f}" for v in sample.points68.ravel())
            valence, arousal = rng.uniform(-1, 1, 2)
            box = [round(x1), round(y1), round(x2 - x1), round(y2 - y1)]
            writers[split].writerow(
                [relative, *box, points, code, f"{valence:.4f}", f"{arousal:.4f}"]
            )
    return _finish(out, "affectnet", n_train, n_test, seed)


def write_affectnet_npy(
    out: str | os.PathLike, n_train: int, n_test: int, seed: int = 0, progress: bool = True
) -> Path:
    """AffectNet's numpy release: train_set/ and val_set/ with images/N.jpg (224x224 crops) and
    annotations/N_*.npy. Expressions are stored as the release stores them, as one-character
    strings, in AffectNet's class order."""
    out = _prepare(out)
    rng = np.random.default_rng(seed)
    excluded = itertools.cycle((8, 9, 10))
    samples = _samples(n_train, n_test, seed, "demo AffectNet (numpy)", progress)
    for split, index, name, sample in samples:
        folder = out / affectnet.NPY_SPLITS[split]
        for part in ("images", "annotations"):
            (folder / part).mkdir(parents=True, exist_ok=True)
        # a square crop around the face, as the release's 224x224 images
        x1, y1, x2, y2 = sample.box
        side = max(x2 - x1, y2 - y1) * 1.2
        left, top = (x1 + x2) / 2 - side / 2, (y1 + y2) / 2 - side / 2
        crop = sample.original.crop(
            (round(left), round(top), round(left + side), round(top + side))
        )
        scale = NPY_SIZE / crop.width
        crop = crop.resize((NPY_SIZE, NPY_SIZE), Image.Resampling.BILINEAR)
        crop.save(folder / "images" / f"{index}.jpg", quality=sample.jpeg_quality)
        code = next(excluded) if name == "excluded" else affectnet.CODES.index(name)
        valence, arousal = rng.uniform(-1, 1, 2)
        annotations = {
            "exp": str(code),
            "lnd": ((sample.points68 - [round(left), round(top)] + 0.5) * scale - 0.5).ravel(),
            "val": f"{valence:.4f}",
            "aro": f"{arousal:.4f}",
        }
        for key, value in annotations.items():
            np.save(folder / "annotations" / f"{index}_{key}.npy", np.array(value))
    return _finish(out, "affectnet-npy", n_train, n_test, seed)


def _votes(rng: np.random.Generator, name: str, row: int) -> list[int]:
    """Ten votes: a clear majority for the class, or for excluded rows in turn a tie (unknown under
    the majority rule), mostly unknown, mostly NF."""
    votes = np.zeros(len(ferplus.VOTE_COLUMNS), dtype=int)
    if name == "excluded":
        if row % 3 == 0:
            votes[[0, 3]] = 5
        else:
            votes[[0, 7 + row % 3]] = 2, 8
        return votes.tolist()
    top = ferplus.VOTE_CLASSES.index(name)
    votes[top] = int(rng.integers(6, 11))
    for _ in range(10 - votes[top]):
        votes[int(rng.integers(0, 10))] += 1
    return votes.tolist()


def write_ferplus(
    out: str | os.PathLike, n_train: int, n_test: int, seed: int = 0, progress: bool = True
) -> Path:
    """fer2013.csv (48x48 grey faces from the aligned crops) and fer2013new.csv (ten votes per row).
    One training row in five is PublicTest; the test rows are PrivateTest."""
    out = _prepare(out)
    rng = np.random.default_rng(seed)
    with contextlib.ExitStack() as stack:
        old, new = (_csv_writer(stack, out / name) for name in ("fer2013.csv", "fer2013new.csv"))
        old.writerow(ferplus.FER_COLUMNS)
        new.writerow([*ferplus.NEW_COLUMNS, *ferplus.VOTE_COLUMNS])
        samples = _samples(n_train, n_test, seed, "demo FERPlus", progress)
        side = (ferplus.SIDE, ferplus.SIDE)
        for row, (split, index, name, sample) in enumerate(samples):
            grey = np.asarray(sample.aligned.convert("L").resize(side, Image.Resampling.BILINEAR))
            training = "PublicTest" if index % 5 == 4 else "Training"
            usage = "PrivateTest" if split == "test" else training
            emotion = FER_CODES.index(name if name in FER_CODES else "Neutral")
            old.writerow([emotion, " ".join(map(str, grey.ravel().tolist())), usage])
            new.writerow([usage, f"fer{row:07d}.png", *_votes(rng, name, row)])
    return _finish(out, "ferplus", n_train, n_test, seed)


def write_ckplus(
    out: str | os.PathLike, n_train: int, n_test: int, seed: int = 0, progress: bool = True
) -> Path:
    """CK+'s cohn-kanade-images/, Landmarks/ and Emotion/. ``n_train + n_test`` frames in sequences
    of four (a neutral first frame, three peak frames), three sequences per subject; one sequence in
    eight is unlabelled."""
    out = _prepare(out)
    plan = [p for p in _plan(n_train, n_test, seed) if p[2] != "excluded"]
    sequences = max(len(plan) // 4, 7)
    for s in tqdm(range(sequences), desc="demo CK+", unit="seq", disable=not progress):
        # spread over the plan: every class, both splits
        split, index, name = plan[s * len(plan) // sequences]
        subject, sequence = f"S{s // 3 + 1:03d}", f"{s % 3 + 1:03d}"
        images, landmarks, emotion = (
            out / folder / subject / sequence
            for folder in (ckplus.IMAGES_DIR, ckplus.LANDMARKS_DIR, ckplus.EMOTION_DIR)
        )
        images.mkdir(parents=True, exist_ok=True)
        landmarks.mkdir(parents=True, exist_ok=True)
        for k, (frame, drawn) in enumerate([(1, "Neutral")] + [(k, name) for k in (8, 9, 10)]):
            sample = _render(seed, split, 4 * s + k + 100_000, drawn)
            stem = f"{subject}_{sequence}_{frame:08d}"
            sample.original.convert("L").save(images / f"{stem}.png")
            (landmarks / f"{stem}_landmarks.txt").write_text(
                "".join(f"   {x:.7e}   {y:.7e}\n" for x, y in sample.points68)
            )
        if s % 8 != 7:  # unlabelled sequences are in CK+ too, and the protocol leaves them out
            emotion.mkdir(parents=True, exist_ok=True)
            (emotion / f"{subject}_{sequence}_{10:08d}_emotion.txt").write_text(
                f"   {ckplus.CODES.index(name):.7e}\n"
            )
    return _finish(out, "ckplus", n_train, n_test, seed)


WRITERS = {
    "affectnet": write_affectnet_csv,
    "affectnet-npy": write_affectnet_npy,
    "ferplus": write_ferplus,
    "ckplus": write_ckplus,
}
