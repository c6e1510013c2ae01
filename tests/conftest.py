"""Shared fixtures: a tiny hand-made RAF-DB copy, independent of the synthetic generator."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.stats import norm

from fer_lib.data import rafdb
from fer_lib.evaluation.stats import PooledResult
from fer_lib.report import verdicts
from fer_lib.run import pipeline


def write_tiny_rafdb(
    root: Path, n_per_class: int = 1, seed: int = 0, newline: str = "\n", sep: str = "\t"
) -> Path:
    """Write a minimal RAF-DB layout: n_per_class train and test images per class, plain images."""
    rng = np.random.default_rng(seed)
    for folder in (
        rafdb.ALIGNED_DIR,
        rafdb.ORIGINAL_DIR,
        rafdb.MANUAL_DIR,
        rafdb.AUTO_DIR,
        rafdb.LABEL_FILE.parent,
    ):
        (root / folder).mkdir(parents=True, exist_ok=True)
    rows = []
    for split, digits in (("train", 5), ("test", 4)):
        for i in range(rafdb.NUM_CLASSES * n_per_class):
            name = f"{split}_{i + 1:0{digits}d}.jpg"
            rows.append(f"{name} {i % rafdb.NUM_CLASSES + 1}")
            pixels = rng.integers(0, 255, (100, 100, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(
                root / rafdb.ALIGNED_DIR / rafdb.aligned_name(name), quality=90
            )
            Image.fromarray(pixels).resize((160, 120)).save(
                root / rafdb.ORIGINAL_DIR / name, quality=90
            )
            manual = np.array([[50, 50], [100, 52], [75, 75], [55, 95], [95, 96]]) + rng.normal(
                0, 2, (5, 2)
            )
            lines = [f"{x:.2f}{sep}{y:.2f}" for x, y in manual] + ["1", "2", "3"]
            (root / rafdb.MANUAL_DIR / rafdb.manual_name(name)).write_text(
                newline.join(lines) + newline
            )
            auto = rng.uniform(40, 110, (37, 2))
            lines = [f"{x:.2f}{sep}{y:.2f}" for x, y in auto]
            (root / rafdb.AUTO_DIR / rafdb.auto_name(name)).write_text(
                newline.join(lines) + newline
            )
    (root / rafdb.LABEL_FILE).write_text(newline.join(rows) + newline)
    return root


@pytest.fixture
def tiny_rafdb(tmp_path: Path) -> Path:
    return write_tiny_rafdb(tmp_path / "basic")


def pooled_result(difference: float, half: float, seeds: int = 5):
    """A stats.PooledResult whose 95% interval is difference +- half, as with no seed
    effect (a normal quantile)."""
    se = half / norm.ppf(0.975)
    return PooledResult(
        "oa",
        difference,
        difference - half,
        difference + half,
        seeds,
        se,
        se**2,
        0.0,
        0.0,
        0.0,
        float(2 * norm.sf(abs(difference) / se)),
    )


def pooled_row(model: str, versus: str, result) -> dict:
    """The pooled row of a significance table (verdicts.significance_rows) for a PooledResult."""
    row = {
        "model": model,
        "versus": versus,
        "seed": verdicts.POOLED,
        "seeds": result.seeds,
        "OA diff": result.difference,
        "OA 95% low": result.low,
        "OA 95% high": result.high,
        "McNemar p": float("nan"),
    }
    row.update(
        {
            f"OA {column}": getattr(result, field)
            for column, field in verdicts.POOLED_COLUMNS.items()
        }
    )
    return row


PIPELINE_FIXTURES = {"smoke_run", "paper_sized_run"}


# Runs before every other test: it must meet the smoke run as the pipeline left it. Other tests
# execute notebooks into that run by hand, and a rerun after them first executes those notebooks
# again (about 100 s).
SEES_THE_RUN_UNTOUCHED = "test_a_rerun_executes_only_the_notebooks_whose_inputs_changed"


def pytest_collection_modifyitems(items):
    """A test that reads a whole pipeline run is slow (``-m 'not slow'`` leaves it out)."""
    for item in items:
        if PIPELINE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    # stable: the rest keep their order
    items.sort(key=lambda item: item.name != SEES_THE_RUN_UNTOUCHED)


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """The smoke profile's whole pipeline, run once for every test that reads
    it (notebooks, explorer)."""
    run_dir = tmp_path_factory.mktemp("smoke")
    backend = os.environ.get("MPLBACKEND")
    # as run_all.sh sets it: the report must still show its figures
    os.environ["MPLBACKEND"] = "Agg"
    try:
        assert pipeline.run_all("smoke", run_dir=run_dir, figures_dir=run_dir / "figures") == 0
    finally:
        os.environ.pop("MPLBACKEND") if backend is None else os.environ.update(MPLBACKEND=backend)
    return run_dir
