"""The smoke pipeline end to end on the CUDA path's precision (``FER_PRECISION=bf16``: bf16 autocast, run on the CPU):
every notebook, 03-09 included (notebook 07 checks that Grad-CAM explains the reported probabilities), on bf16
feature caches."""

import pytest

from fer_lib import pipeline, precision

pytestmark = pytest.mark.slow  # every test here reads a whole pipeline run


def test_the_smoke_pipeline_runs_end_to_end_under_bf16_autocast(tmp_path, monkeypatch):
    monkeypatch.setenv(
        precision.ENV, "bf16"
    )  # inherited by the training workers and the notebook kernels
    monkeypatch.setenv("MPLBACKEND", "Agg")
    # one seed, the paper's w and no design ablations: every notebook and kind of model still runs, in half the time
    settings = {"seeds": "1", "w_grid": "0.6", "design_ablations": "false"}
    assert (
        pipeline.run_all(
            "smoke", settings=settings, run_dir=tmp_path, figures_dir=tmp_path / "figures"
        )
        == 0
    )
    for path in pipeline.notebooks():
        assert (tmp_path / "executed" / path.name).exists(), path.name
    caches = sorted(p.name for p in (tmp_path / "cache").glob("rgb_cache_*.pt"))
    assert caches and all(name.endswith("_cpu_bf16.pt") for name in caches), caches
