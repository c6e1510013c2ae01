"""A rerun executes only the notebooks whose inputs changed (fer_lib.run.freshness), without
notebooks or kernels."""

from __future__ import annotations

import os

from fer_lib.run import freshness


def _notebooks(folder):
    paths = []
    for name in ("01_a.ipynb", "02_b.ipynb", "03_c.ipynb"):
        path = folder / "notebooks" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f'{{"cells": ["{name}"]}}')
        paths.append(path)
    return paths


def _play(run_dir, figures, notebooks, base="inputs", force=False, models="m"):
    """One pipeline pass: the notebooks it executed (each writes a table
    and a figure of its own)."""
    fresh = freshness.Freshness(run_dir, figures, base, force=force)
    executed = []
    for notebook in notebooks:
        fresh.advance(notebook, *((models,) if notebook.name.startswith("03") else ()))
        page = run_dir / "report" / notebook.with_suffix(".html").name
        if fresh.is_fresh(notebook, page):
            continue
        before = fresh.snapshot()
        for path in (
            run_dir / "executed" / notebook.name,
            page,
            run_dir / "tables" / f"{notebook.stem}.csv",
            figures / f"{notebook.stem}.png",
        ):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(notebook.stem)
        fresh.ran(notebook, before, 1.0)
        executed.append(notebook.stem)
    return executed


def _touch(path):
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def test_only_what_changed_runs_again_and_everything_after_it(tmp_path):
    run_dir, figures = tmp_path / "run", tmp_path / "figures"
    notebooks = _notebooks(tmp_path)
    everything = [n.stem for n in notebooks]
    assert _play(run_dir, figures, notebooks) == everything
    assert _play(run_dir, figures, notebooks) == []  # nothing changed

    notebooks[1].write_text('{"cells": ["edited"]}')  # an edited notebook and every later one
    assert _play(run_dir, figures, notebooks) == everything[1:]
    # new models: from 03 on
    assert _play(run_dir, figures, notebooks, models="retrained") == everything[2:]
    assert (
        _play(run_dir, figures, notebooks, base="another library", models="retrained") == everything
    )
    assert (
        _play(run_dir, figures, notebooks, base="another library", models="retrained", force=True)
        == everything
    )


def test_a_missing_or_edited_output_runs_its_notebook_again(tmp_path):
    run_dir, figures = tmp_path / "run", tmp_path / "figures"
    notebooks = _notebooks(tmp_path)
    _play(run_dir, figures, notebooks)
    (figures / "02_b.png").unlink()
    assert _play(run_dir, figures, notebooks) == ["02_b", "03_c"]
    _touch(run_dir / "tables" / "03_c.csv")
    assert _play(run_dir, figures, notebooks) == ["03_c"]
    (run_dir / "report" / "01_a.html").unlink()  # the page too
    assert _play(run_dir, figures, notebooks) == ["01_a", "02_b", "03_c"]
    # a damaged record: everything runs
    (run_dir / "executed" / freshness.STAMPS).write_text("{not json")
    assert len(_play(run_dir, figures, notebooks)) == 3


def test_the_models_key_ignores_what_the_notebooks_wrote(tmp_path):
    run_dir, figures = tmp_path / "run", tmp_path / "figures"
    (run_dir / "fusion" / "both_w0.60_seed0").mkdir(parents=True)
    model = run_dir / "fusion" / "both_w0.60_seed0" / "best.pt"
    model.write_bytes(b"weights")
    notebooks = _notebooks(tmp_path)
    key = freshness.Freshness(run_dir, figures, "x").models_key()
    _play(run_dir, figures, notebooks, models=key)
    fresh = freshness.Freshness(run_dir, figures, "x")
    assert fresh.models_key() == key  # the tables written since are outputs, not models
    _touch(model)
    assert fresh.models_key() != key


def test_other_runs_count_by_content(tmp_path):
    runs = tmp_path / "runs"
    mine, other, figures = runs / "demo", runs / "demo-seed_offset_100", tmp_path / "figures"
    for folder in (mine, other):
        (folder / "tables").mkdir(parents=True)
        (folder / "run_info.json").write_text('{"commit": "abc", "data": "synthetic"}')
    (other / "tables" / "claims.csv").write_text("claim,verdict\nheadline,inconclusive\n")
    key = freshness.sibling_key(mine, figures)
    # rewritten, same bytes
    (other / "tables" / "claims.csv").write_text("claim,verdict\nheadline,inconclusive\n")
    _touch(other / "tables" / "claims.csv")
    assert freshness.sibling_key(mine, figures) == key
    (other / "tables" / "claims.csv").write_text("claim,verdict\nheadline,supported\n")
    assert freshness.sibling_key(mine, figures) != key
    key = freshness.sibling_key(mine, figures)
    figures.mkdir()
    # the recorded comparison is read too
    (figures / "seed_stability.csv").write_text("agree\nsame\n")
    assert freshness.sibling_key(mine, figures) != key


def test_a_model_a_notebook_fitted_stays_its_output_when_reused(tmp_path):
    run_dir, figures = tmp_path / "run", tmp_path / "figures"
    notebook = _notebooks(tmp_path)[1]
    gate = run_dir / "fusion" / "learned_w0.60_seed0" / "best.pt"

    def execute(fresh):  # fits the gate the first time, reuses it after (as notebook 6 does)
        before = fresh.snapshot()
        if not gate.exists():
            gate.parent.mkdir(parents=True)
            gate.write_bytes(b"gate")
        fresh.ran(notebook, before, 1.0)

    fresh = freshness.Freshness(run_dir, figures, "x")
    key = fresh.models_key()
    execute(fresh)
    # the gate is the notebook's, not a trained model
    assert freshness.Freshness(run_dir, figures, "x").models_key() == key
    # executed again, the gate reused
    execute(freshness.Freshness(run_dir, figures, "x", force=True))
    assert freshness.Freshness(run_dir, figures, "x").models_key() == key


def test_a_link_to_the_run_itself_is_not_another_run(tmp_path):
    runs = tmp_path / "runs"
    mine = runs / "smoke0"
    (mine / "tables").mkdir(parents=True)
    (mine / "run_info.json").write_text('{"commit": "abc"}')
    (runs / "smokecurrent").symlink_to(mine)  # as pytest's and many users' "latest" links
    key = freshness.sibling_key(mine, tmp_path / "figures")
    # the run's own tables change as it runs
    (mine / "tables" / "claims.csv").write_text("claim,verdict\n")
    assert freshness.sibling_key(mine, tmp_path / "figures") == key
