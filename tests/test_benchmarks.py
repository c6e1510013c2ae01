"""The GPU check (benchmarks/gpu_check.sh) runs its stages on a tiny set on the CPU, leaves only its
results in --out, starts fresh every time, and fits a budget."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STAGES = (
    "baseline run of 2 epochs (wall: set-up, both epochs, checkpoints, population mean)",
    "baseline epoch (training + validation)",
    "population mean (training images)",
    "ResNet18 inference, test set (as the validation runs it)",
    "frozen-feature cache, built (train 2 flips + test)",
    "frozen-feature cache, reused (read back)",
    "landmark-branch run of 2 epochs (wall)",
    "landmark-branch epoch (training + validation)",
    "test inference of a landmark-branch run (from the feature cache)",
    "whole paper profile (estimate)",
)


def _check(out: Path, scratch: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run(
        [
            "bash",
            "benchmarks/gpu_check.sh",
            "--small",
            "--out",
            str(out),
            "--scratch",
            str(scratch),
            *extra,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_the_gpu_check_runs_small_on_the_cpu_and_leaves_only_its_results(tmp_path):
    out, scratch = tmp_path / "out", tmp_path / "scratch"
    scratch.mkdir()
    result = _check(out, scratch)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == [
        "gpu_check.json",
        "gpu_check.log",
        "gpu_check.md",
    ]
    assert sum(p.stat().st_size for p in out.iterdir()) < 200_000
    # the data, checkpoints and caches went to a temporary folder, removed
    assert not any(scratch.iterdir())
    report = json.loads((out / "gpu_check.json").read_text())
    stages = {row["stage"]: row["seconds"] for row in report["stages"]}
    for stage in STAGES:
        assert stages[stage] is not None and stages[stage] > 0, stage
    # 5 seeds x (13 distinct configurations of Fig. 4 and the ablation + calibrated + coordinates +
    # 2 design ablations of the proposed model + naive fusion from the default initialisation)
    assert report["landmark-branch runs in the paper profile"] == 90
    assert (
        report["small"] is True and report["train images"] == 56 and report["own estimate (s)"] > 0
    )
    assert "| landmark-branch epoch (training + validation) |" in (out / "gpu_check.md").read_text()
    assert "resuming" not in (out / "gpu_check.log").read_text()

    # a second run into the same --out starts afresh, and a budget it cannot
    # fit skips stages and says so
    again = _check(out, scratch, "--budget", "1")
    assert again.returncode == 0, again.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    skipped = [row["stage"] for row in report["stages"] if row["note"].startswith("skipped")]
    # which stages a 1-second budget leaves out depends on how fast this machine ran the ones before
    assert skipped, "a budget the check cannot fit must skip stages and say so"
    assert {row["stage"]: row["seconds"] for row in report["stages"]}[
        "whole paper profile (estimate)"
    ] is None
    assert "resuming" not in (out / "gpu_check.log").read_text() and not any(scratch.iterdir())


def test_the_check_fits_its_own_estimate_into_the_budget():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    full = gpu_check.sized_for(480, small=False)
    # RAF-DB's sizes within 8 minutes at the assumed H100 rates
    assert full[:2] == (12271, 3068) and full[2] <= 480
    trimmed = gpu_check.sized_for(90, small=False)
    assert trimmed[0] < 12271 and trimmed[2] <= 90


def test_the_gpu_check_refuses_an_unknown_argument():
    result = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh", "--big"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 2 and "unknown argument --big" in result.stderr


def test_the_gpu_check_stops_in_one_line_when_a_module_is_missing_and_writes_why(tmp_path):
    # an interpreter without adabelief-pytorch, as a CUDA image with PyTorch alone is
    blocked = (
        "import sys, runpy; sys.modules['adabelief_pytorch'] = None; sys.argv = sys.argv[1:]; "
    )
    blocked += "runpy.run_path('benchmarks/gpu_check.py', run_name='__main__')"
    command = [sys.executable, "-c", blocked, "gpu_check.py", "--small", "--out", str(tmp_path)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert (
        "stopped before the first stage" in result.stdout and "adabelief-pytorch" in result.stdout
    )
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["stages"] == [] and "adabelief_pytorch" in report["error"]
    assert "**Stopped**" in (tmp_path / "gpu_check.md").read_text()


def test_the_gpu_check_writes_the_stages_it_measured_when_one_fails(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    from fer_lib import training

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(training, "train_baseline", broken)
    monkeypatch.setattr(sys, "argv", ["gpu_check.py", "--small", "--out", str(tmp_path)])
    monkeypatch.setattr(gpu_check, "RUNNING", {})
    with pytest.raises(RuntimeError, match="illegal memory access"):
        gpu_check.main()
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    done = [row["stage"] for row in report["stages"]]
    assert done == ["synthetic set, generated (CPU)", "synthetic set, decoded once (CPU)"]
    assert report["error"].startswith("failed after 2 stage(s): RuntimeError: CUDA error")
    assert "illegal memory access" in (tmp_path / "gpu_check.md").read_text()
