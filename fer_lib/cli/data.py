"""Data commands: check-data, convert-data, demo-data and import-images."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from fer_lib.cli.common import (
    LAYOUT_OPTIONS,
    WORKERS,
    add_command,
    at_least,
    between,
    existing,
    layout_options_of,
)
from fer_lib.data.datasets import check_layout, reader_for
from fer_lib.data.demo_layouts import DEMO_LAYOUTS, WRITERS
from fer_lib.data.layouts import DataSetError, convert, detect_layout
from fer_lib.data.synthetic import generate_demo_dataset


def _check_data(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    report = check_layout(
        args.root,
        decode_images=not args.no_decode,
        progress=not args.json,
        **layout_options_of(args),
    )
    if args.json:
        print(json.dumps(report.to_json()))
        return 0 if report.ok else 1
    errors = [f"error: {problem}" for problem in report.errors]
    # nothing counted: the problem alone, not a table of zeros
    if report.errors and report.read_nothing:
        print("\n".join(errors), file=sys.stderr)
        return 1
    print(f"{report.layout}{' copy' if report.layout == 'RAF-DB' else ''}: {report.root}")
    print(report.table())
    for warning in report.warnings[:5]:
        print(f"warning: {warning}")
    if len(report.warnings) > 5:
        print(f"warning: ... {len(report.warnings) - 5} more warnings of this kind")
    if report.ok:
        print(f"OK: no problem found ({time.perf_counter() - started:.1f} s)")
        return 0
    errors.append(f"FAILED: {len(report.errors)} problem(s); fix them and run check-data again.")
    print("\n".join(errors), file=sys.stderr)
    return 1


def _demo_data(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    write = generate_demo_dataset if args.layout == "rafdb" else WRITERS[args.layout]
    root = write(args.out, args.train, args.test, seed=args.seed)
    then = f" ({args.layout} layout; next: python -m fer_lib check-data {root})"
    print(
        f"wrote {args.train} train + {args.test} test synthetic images to {root} in "
        f"{time.perf_counter() - started:.1f} s{'' if args.layout == 'rafdb' else then}"
    )
    return 0


def _convert_data(args: argparse.Namespace) -> int:
    layout = detect_layout(args.src)
    if layout in ("rafdb", "photos"):
        what = (
            "already in RAF-DB's layout: use it as it is"
            if layout == "rafdb"
            else f"a folder of photos: use `python -m fer_lib import-images {args.src} {args.out}`"
        )
        raise DataSetError([f"{args.src}: {what}"])
    every_fold = args.fold == "all"
    if every_fold and layout != "ckplus":
        raise DataSetError(
            [f"{args.src}: --fold all is for CK+'s subject-wise folds; this is another layout"]
        )
    # CK+'s protocol runs every fold: --fold all writes one copy per fold (OUT/fold_00, ...)
    for fold in range(args.folds) if every_fold else [None]:
        out = args.out / f"fold_{fold:02d}" if every_fold else args.out
        reader = reader_for(layout, args.src, **layout_options_of(args, fold))
        counts = convert(reader, out, workers=args.workers)
        print(
            f"{counts['layout']}: {counts['rows']} usable row(s); converted {counts['converted']} "
            f"({counts['train']} train, {counts['test']} test) into {out} with "
            f"{len(counts['classes'])} classes ({', '.join(counts['classes'])})"
        )
        for reason, count in counts["excluded"].items():
            print(f"excluded by the protocol: {count} row(s): {reason}")
        if counts["not converted"]:
            print(
                f"not converted: {counts['not converted']} image(s), listed with the reason in "
                f"{out / 'conversion_report.csv'}"
            )
    if every_fold:
        print(
            f"next: `./run_all.sh --profile paper --data {args.out}` runs the report on every "
            "fold, then the mean over the folds (or train each fold_NN yourself, then `python -m "
            "fer_lib evaluate --paired ...`)"
        )
    else:
        print(f"next: python -m fer_lib check-data {args.out}")
    return 0


def _import_images(args: argparse.Namespace) -> int:
    from fer_lib.data.faces import import_images

    counts = import_images(
        args.src, args.out, test_fraction=args.test_fraction, seed=args.seed, workers=args.workers
    )
    print(
        f"found {counts['photos']} photo(s) as {counts['found']}; imported {counts['imported']} "
        f"({counts['train']} train, {counts['test']} test); not imported: "
        f"{counts['not imported']}, listed with the reason in {args.out / 'import_report.csv'}"
    )
    if counts["several faces"]:
        print(
            f"{counts['several faces']} photo(s) showed several faces: the largest was kept "
            "(import_report.csv)"
        )
    if counts["already aligned"]:
        print(
            f"{counts['already aligned']} photo(s) were already aligned 100x100 crops: aligned "
            "again from their detected points"
        )
    print(f"next: python -m fer_lib check-data {args.out}")
    return 0


def add_parsers(commands) -> None:
    add_command(
        commands,
        "check-data",
        _check_data,
        "name the layout of a data set, validate it and print per-class counts",
        *LAYOUT_OPTIONS,
        (
            ("root", existing),
            "RAF-DB's basic/ folder (or its parent), or AffectNet's, FERPlus's or CK+'s folder",
        ),
        (
            ("--json", "store_true"),
            (
                'print one JSON object {"layout", "classes", "train": [...], "test": [...], '
                '"excluded": {...}, "errors": [...]}'
            ),
        ),
        (("--no-decode", "store_true"), "check image files exist without decoding them"),
    )
    add_command(
        commands,
        "convert-data",
        _convert_data,
        "AffectNet, FERPlus or CK+ into RAF-DB's layout, with its class list (classes.json)",
        *LAYOUT_OPTIONS,
        (
            ("src", existing),
            "AffectNet's folder (either release), FERPlus's (fer2013.csv + fer2013new.csv) or "
            "CK+'s",
        ),
        (("out", Path), "an empty folder for the converted copy"),
        WORKERS,
    )
    add_command(
        commands,
        "demo-data",
        _demo_data,
        "write the synthetic set, in RAF-DB's layout or (--layout) another data set's",
        (("--layout", DEMO_LAYOUTS, "rafdb"), "the layout to write (FERPlus: 48x48 grey faces)"),
        (("out", Path), "output folder (becomes the basic/ root)"),
        (("--train", at_least(7), 3000), "number of training images (at least 7: one per class)"),
        (("--test", at_least(7), 750), "number of test images (at least 7: one per class)"),
        (("--seed", int, 0), None),
    )
    add_command(
        commands,
        "import-images",
        _import_images,
        "face photos (class folders, RAF-DB's mirror layout, or a CSV) into RAF-DB's layout",
        (
            ("src", existing),
            "a folder of class folders (happy/, sad/, ...), train/1..7 + test/1..7, or a CSV "
            "path,label[,split]",
        ),
        (("out", Path), "an empty folder for the data set"),
        (
            ("--test-fraction", between(0.0, 1.0, open_ends=True), 0.2),
            "stratified share for the test split where SRC gives none",
        ),
        (("--seed", at_least(0), 0), None),
        WORKERS,
    )
