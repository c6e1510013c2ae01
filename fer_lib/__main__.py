"""Command line: ``python -m fer_lib <command>``.

    check-data ROOT [--json] [--no-decode]     validate a RAF-DB copy, counts next to Table 3
    demo-data OUT --train N --test M --seed S  write a synthetic RAF-DB in the same layout
    run-all [--profile P] [--data ROOT] ...    what ./run_all.sh runs: every table and figure
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def _check_data(args: argparse.Namespace) -> int:
    from fer_lib.rafdb import check_rafdb

    started = time.perf_counter()
    report = check_rafdb(args.root, decode_images=not args.no_decode, progress=not args.json)
    if args.json:
        print(json.dumps(report.to_json()))
        return 0 if report.ok else 1
    print(f"RAF-DB copy: {report.root}")
    print(report.table())
    for warning in report.warnings[:5]:
        print(f"warning: {warning}")
    if len(report.warnings) > 5:
        print(f"warning: ... {len(report.warnings) - 5} more warnings of this kind")
    if report.ok:
        print(f"OK: no problem found ({time.perf_counter() - started:.1f} s)")
        return 0
    for problem in report.errors:
        print(f"error: {problem}", file=sys.stderr)
    print(f"FAILED: {len(report.errors)} problem(s); fix them and run check-data again.", file=sys.stderr)
    return 1


def _demo_data(args: argparse.Namespace) -> int:
    from fer_lib.synthetic import generate_demo_dataset

    for option in ("train", "test"):
        if getattr(args, option) < 7:
            raise SystemExit(f"--{option} must be at least 7 (one image per class), got {getattr(args, option)}")
    started = time.perf_counter()
    root = generate_demo_dataset(args.out, args.train, args.test, seed=args.seed)
    print(f"wrote {args.train} train + {args.test} test synthetic images to {root} in {time.perf_counter() - started:.1f} s")
    return 0


def _run_all(args: argparse.Namespace) -> int:
    from fer_lib.pipeline import run_all

    return run_all(args.profile, data=args.data, baseline_checkpoint=args.baseline_checkpoint)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fer_lib", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    check = commands.add_parser("check-data", help="validate a RAF-DB copy and print per-class counts")
    check.add_argument("root", type=Path, help="RAF-DB's basic/ folder (holding EmoLabel/, Image/, Annotation/) or its parent")
    check.add_argument("--json", action="store_true", help='print one JSON object {"train": [...], "test": [...], "errors": [...]}')
    check.add_argument("--no-decode", action="store_true", help="check image files exist without decoding them")
    check.set_defaults(func=_check_data)

    demo = commands.add_parser("demo-data", help="write a synthetic RAF-DB (same layout) for the demo")
    demo.add_argument("out", type=Path, help="output folder (becomes the basic/ root)")
    demo.add_argument("--train", type=int, default=3000, help="number of training images")
    demo.add_argument("--test", type=int, default=750, help="number of test images")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo_data)

    run = commands.add_parser("run-all", help="regenerate every table and figure (what ./run_all.sh runs)")
    run.add_argument("--profile", default="demo", choices=("demo", "paper", "smoke"))
    run.add_argument("--data", type=Path, default=None, help="RAF-DB basic/ folder (paper profile); default: the synthetic set")
    run.add_argument("--baseline-checkpoint", type=Path, default=None, help="the ARM authors' epoch59_acc0.9205.pth")
    run.set_defaults(func=_run_all)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
