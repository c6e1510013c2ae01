"""The export command: a trained run's model as a folder anyone can load (safetensors, a model card)
and, with --format onnx, as an ONNX graph checked against PyTorch on the run's test images."""

from __future__ import annotations

import argparse
from pathlib import Path

from fer_lib.cli.common import REQUIRED, add_command, at_least, existing


def _export(args: argparse.Namespace) -> int:
    from fer_lib.apps import export

    run = export.load_run_model(args.run_dir, args.model, args.seed, args.baseline_checkpoint)
    folder = export.export_folder(run, args.out)
    print(f"{run.name}: model folder {folder} (config.json, model.safetensors, README.md)")
    if args.format != "onnx":
        return 0
    path = export.export_onnx(run.network, folder / "model.onnx")
    images, heatmaps = export.test_inputs(run, args.parity_images)
    parity = export.onnx_parity(run.network, path, images, heatmaps)
    print(
        f"ONNX graph {path}: on {parity['images']} test images, max |onnxruntime - PyTorch| "
        f"{parity['max |onnx - torch|']:.2e}, max |batch 1 - batch {parity['images']}| "
        f"{parity['max |batch 1 - whole batch|']:.2e}"
    )
    worst = max(parity["max |onnx - torch|"], parity["max |batch 1 - whole batch|"])
    if worst > export.PARITY_TOLERANCE:
        print(f"export: the graph differs from PyTorch by more than {export.PARITY_TOLERANCE:g}")
        return 1
    return 0


def add_parsers(commands) -> None:
    add_command(
        commands,
        "export",
        _export,
        "a trained run's model as a folder anyone can load (safetensors, model card), or ONNX",
        (("run_dir", existing), "a finished run's folder, e.g. runs/demo"),
        (
            ("--model", None, "proposed"),
            "proposed (the paper's weighting at its w, the default), baseline (the RGB network "
            "alone), or a fusion run's name under RUN_DIR/fusion/ without _seed<S>",
        ),
        (("--seed", int), "default: the run's first seed"),
        (("--out", Path, REQUIRED), "a new folder for the model"),
        (
            ("--format", ("safetensors", "onnx"), "safetensors"),
            "onnx: also model.onnx (dynamic batch, batch-independent), checked against PyTorch",
        ),
        (
            ("--parity-images", at_least(1), 256),
            "test images the ONNX graph is checked on (default %(default)s)",
        ),
        (
            ("--baseline-checkpoint", existing),
            "the baseline a run was given (run-all --baseline-checkpoint), if it trained none",
        ),
    )
