"""The predict command: every face of every photo through both branches, with Grad-CAM++."""

from __future__ import annotations

import argparse
from pathlib import Path

from fer_lib.cli.common import REQUIRED, add_command, add_options, at_least, existing, run_device


def _predict(args: argparse.Namespace) -> int:
    import pandas as pd

    from fer_lib.apps.predict import figure_stems, load_for_predict, photos_in, predict_photos
    from fer_lib.apps.video import VIDEO_SUFFIXES, predict_video

    if args.model is not None and (args.fusion or args.data):
        print("predict: --model holds both branches and their means; drop --fusion and --data")
        return 2
    videos = [p for p in args.paths if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES]
    photos = photos_in([p for p in args.paths if p not in videos])  # bad paths named first
    device = run_device(args.device)
    loaded = load_for_predict(
        args.baseline, args.fusion, device, mean_data=args.data, model_folder=args.model
    )
    stems = figure_stems(videos)  # two videos of one name get tables of their own
    for video in videos:
        frames = predict_video(video, *loaded, args.out, every=args.every, stem=stems[video])
        faces = frames.loc[frames["status"] == "predicted", "face"]
        print(
            f"{video}: {frames['frame'].nunique()} frame(s) read, {faces.nunique()} face(s) "
            f"followed, {int((frames['status'] == 'no face').sum())} frame(s) without a face; "
            f"table {args.out / (stems[video] + '_frames.csv')}"
        )
    if not photos:
        return 0
    frame = predict_photos(
        photos, *loaded, args.out, figures=not args.no_figures, batch_size=args.batch_size
    )
    status = frame["status"] if len(frame) else pd.Series(dtype=str)
    faces = frame[status.str.startswith("predicted")] if len(frame) else frame
    print(
        f"{len(faces)} face(s) in {faces['image'].nunique() if len(faces) else 0} photo(s); "
        f"{int((status == 'no face').sum())} photo(s) without a face; "
        f"{int((status == 'unreadable').sum())} unreadable (listed with the reason). "
        f"Table: {args.out / 'predictions.csv'}"
        + ("" if args.no_figures else f"; one figure per face in {args.out}")
    )
    return 0


def add_parsers(commands) -> None:
    guess = add_command(
        commands,
        "predict",
        _predict,
        "what a trained model says about photos: every face, both branches, Grad-CAM++",
        (("paths", existing, None, dict(nargs="+")), "photos, folders of photos, or video files"),
        (
            ("--no-figures", "store_true"),
            "photos: the table alone, faces of several photos through the networks together "
            "(thousands of photos); default: one figure per face with Grad-CAM++",
        ),
        (
            ("--batch-size", at_least(1), 64),
            "faces per network pass with --no-figures (default %(default)s)",
        ),
        (("--every", at_least(1), 1), "videos: every K-th frame (default: every frame)"),
    )
    add_options(
        guess.add_mutually_exclusive_group(required=True),
        (
            ("--model", existing),
            "a model folder (`python -m fer_lib export`): both branches, or the baseline alone",
        ),
        (("--baseline", existing), "the baseline checkpoint (best.pt of a baseline run)"),
    )
    add_options(
        guess,
        (
            ("--fusion", existing),
            "a fusion run's best.pt (without it: the RGB baseline alone)",
        ),
        (("--out", Path, REQUIRED), "folder for predictions.csv and the figures"),
        (
            ("--data", existing),
            "a RAF-DB copy (basic/): its training images give a baseline checkpoint that stores "
            "no population mean (the ARM authors') one, as notebook 09 does",
        ),
        (("--device",), "cpu or cuda (default: the best available)"),
    )
