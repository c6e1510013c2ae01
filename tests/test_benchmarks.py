"""The GPU check (benchmarks/gpu_check.sh) runs its stages on a tiny set on the CPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_gpu_check_runs_small_on_the_cpu(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable}
    result = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--small", "--out", str(tmp_path)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    stages = {row["stage"]: row["seconds"] for row in report["stages"]}
    for stage in ("baseline epoch", "frozen-feature cache, train (2 flips) + test", "landmark-branch epoch",
                  "test inference, both branches", "whole paper profile (estimate)"):
        assert stages[stage] > 0, stage
    # 5 seeds x (13 distinct configurations of Fig. 4 and the ablation + calibrated + coordinates + 2 design ablations)
    assert report["landmark-branch runs in the paper profile"] == 85
    assert report["small"] is True and report["train images"] == 56
    assert "| landmark-branch epoch |" in (tmp_path / "gpu_check.md").read_text()


def test_the_gpu_check_refuses_an_unknown_argument():
    result = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--big"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2 and "unknown argument --big" in result.stderr
