"""Every report notebook, executed in order by papermill on the smoke
profile, and the tables it writes."""

import ast
import html
import json
import re
import shutil
import subprocess
from urllib.parse import unquote

import nbformat
import numpy as np
import pandas as pd
import pytest
import torch

from fer_lib import training
from fer_lib.cli.main import main
from fer_lib.data.rafdb import CLASSES
from fer_lib.run import pipeline, scheduler
from fer_lib.run.experiment import Experiment
from fer_lib.run.kernels import WarmKernels
from fer_lib.run.notebook import PARAMETERS
from fer_lib.run.profiles import get_profile

NOTEBOOKS = pipeline.notebooks()


def test_notebooks_are_ordered_and_committed_without_outputs():
    assert [nb.name[:2] for nb in NOTEBOOKS] == [f"{i:02d}" for i in range(1, 12)]
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), path.name
        tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{path.name}: exactly one cell tagged 'parameters'"
        assert "import torch.nn" not in "".join(c.source for c in code), (
            "no model code inside notebooks"
        )


MAX_LINE = 100  # characters in a line of notebook code


def test_notebook_code_lines_are_at_most_100_characters():
    too_long = []
    for path in NOTEBOOKS:
        for index, cell in enumerate(nbformat.read(path, as_version=4).cells):
            if cell.cell_type != "code":
                continue
            for number, line in enumerate(cell.source.splitlines(), 1):
                if len(line) > MAX_LINE:
                    too_long.append(
                        f"{path.name}, cell {index}, line {number} ({len(line)} characters): {line}"
                    )
    assert not too_long, "lines over 100 characters:\n" + "\n".join(too_long)


def test_the_shared_opening_cells_are_the_same_in_every_notebook():
    """What no generator keeps in step any more: title, imports, parameters,
    start(...) and the kernel."""
    parameters, kernelspecs = {}, {}
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        title = nb.cells[0]
        assert title.cell_type == "markdown" and title.source.startswith(
            f"# {int(path.name[:2])}. "
        ), path.name
        code = [c for c in nb.cells if c.cell_type == "code"]
        tagged = [i for i, c in enumerate(code) if "parameters" in c.metadata.get("tags", [])]
        assert tagged == [1], f"{path.name}: the imports, then the one cell tagged 'parameters'"
        assert "from fer_lib.run.notebook import start" in code[0].source, (
            f"{path.name}: imports start"
        )
        parameters[path.name] = code[1].source
        after = code[2].source
        assert after.startswith("ex = start(globals()"), (
            f"{path.name}: the code cell after the parameters is {after!r}"
        )
        kernelspecs[path.name] = nb.metadata["kernelspec"]
        assert nb.metadata["kernelspec"]["name"] == "fer-lib", path.name
        assert nb.metadata["language_info"]["name"] == "python", path.name
    first = NOTEBOOKS[0].name
    for name, source in parameters.items():
        assert source == parameters[first], f"{name}: its parameters cell differs from {first}'s"
        assert kernelspecs[name] == kernelspecs[first], (
            f"{name}: its kernelspec differs from {first}'s"
        )
    assigned = [node.targets[0].id for node in ast.parse(parameters[first]).body]
    assert assigned == list(PARAMETERS), (
        "the parameters cell names what fer_lib.run.notebook.PARAMETERS checks"
    )


def test_every_notebook_ran_and_rendered(smoke_run):
    for path in NOTEBOOKS:
        assert (smoke_run / "executed" / path.name).exists()
        assert (smoke_run / "report" / f"{path.stem}.html").stat().st_size > 10_000
        # every figure a notebook saves is also shown in it, hence in the HTML report
        executed = nbformat.read(smoke_run / "executed" / path.name, as_version=4)
        calls = [
            c.source
            for c in executed.cells
            if c.cell_type == "code" and not c.source.startswith("def ")
        ]
        saved = sum(source.count("save_figure(") + source.count("= show(table") for source in calls)
        shown = sum(
            "image/png" in o.get("data", {})
            for c in executed.cells
            if c.cell_type == "code"
            for o in c.outputs
        )
        assert shown >= saved, f"{path.name}: {saved} figure(s) saved, {shown} shown"
        assert (smoke_run / "report" / f"{path.stem}.html").read_text().count("<img") >= saved


def test_every_model_is_trained_before_the_notebooks_which_only_reuse_them(smoke_run):
    experiment = Experiment(get_profile("smoke"), smoke_run, smoke_run, progress=False)
    baselines, fusions = scheduler.plan(experiment)
    planned = [experiment.fusion.folder(j.weighting, j.w, j.seed, j.variant).name for j in fusions]
    # fitted in 06, in seconds
    gates = [experiment.fusion.folder("learned", 0.6, seed).name for seed in experiment.seeds]
    assert sorted(p.name for p in (smoke_run / "fusion").iterdir()) == sorted(planned + gates)
    # two design ablations of the proposed model and naive fusion's (smoke runs them) and the
    # coordinate branch, for two seeds
    assert sorted(j.variant for j in fusions if j.variant) == sorted(
        ["default-init", "flip-batch-norm", "coords", "default-init"] * 2
    )
    # one baseline per seed
    assert sorted(p.name for p in smoke_run.glob("baseline*")) == ["baseline", "baseline_seed1"]
    # the landmark ARM's population mean (a pass over the training images)
    # only where a single photo needs it
    with_means = {
        folder.name
        for folder in (smoke_run / "fusion").iterdir()
        if "population_means"
        in torch.load(folder / "best.pt", map_location="cpu", weights_only=True)
    }
    proposed = {experiment.fusion.folder("both", 0.6, seed).name for seed in experiment.seeds}
    assert with_means == proposed | set(gates)  # a gate copies its run's
    # one log per job, and the stage's time-left estimates beside the truth
    assert sorted(p.name for p in (smoke_run / "logs").iterdir()) == sorted(
        [f"{j.slug}.log" for j in baselines + fusions] + ["time_left.csv"]
    )
    assert "true seconds left" in (smoke_run / "logs" / "time_left.csv").read_text().splitlines()[0]
    info = json.loads((smoke_run / "run_info.json").read_text())
    assert list(info["notebook_seconds"])[2] == "training (parallel, before 03)"
    for name in ("03_baseline", "04_fusion", "05_w_sweep", "06_ablation"):
        text = json.dumps(
            [
                c.get("outputs", [])
                for c in nbformat.read(smoke_run / "executed" / f"{name}.ipynb", as_version=4).cells
            ]
        )
        assert "training (or resuming)" not in text and "fusion epoch 1/" not in text, name
    # each seed's landmark branch is compared with its own seed's baseline
    table6 = pd.read_csv(smoke_run / "tables" / "table6_overall.csv").set_index("model")
    per_seed = pd.read_csv(smoke_run / "tables" / "baseline_metrics.csv")
    assert list(per_seed["seed"]) == [0, 1] and table6.loc["baseline", "seeds"] == 2
    assert table6.loc["baseline", "oa_top1"] == pytest.approx(per_seed["oa_top1"].mean())


def test_nothing_shared_carries_a_path_of_this_machine(smoke_run):
    shared = [
        smoke_run / "executed",
        smoke_run / "report",
        smoke_run / "tables",
        smoke_run / "figures",
    ]
    files = [
        f
        for folder in shared
        for f in folder.rglob("*")
        if f.suffix in (".ipynb", ".html", ".md", ".csv", ".tex")
    ]
    assert len(files) > 50
    for path in files:
        text = path.read_text(errors="replace")
        for machine_path in (str(smoke_run), str(pipeline.PROJECT_ROOT), "/tmp/"):
            assert machine_path not in text, (
                f"{path.relative_to(smoke_run)} contains {machine_path}"
            )
    injected = nbformat.read(smoke_run / "executed" / "04_fusion.ipynb", as_version=4).metadata[
        "papermill"
    ]["parameters"]
    # outside the project: placeholders
    assert injected["RUN_DIR"] == "<run_dir>" and injected["DATA_ROOT"] == "<data_root>"


def _browser() -> str | None:
    return next(
        (
            shutil.which(name)
            for name in ("chromium", "chromium-browser", "google-chrome")
            if shutil.which(name)
        ),
        None,
    )


def test_the_landing_page_is_self_contained_and_shows_the_result(smoke_run, tmp_path):
    copied = tmp_path / "a copy of the report"  # copied elsewhere, as someone receiving it would
    shutil.copytree(smoke_run / "report", copied)
    page = (copied / "index.html").read_text()
    for name in ("index.html", *(p.name for p in copied.glob("0*.html"))):
        text = (copied / name).read_text()
        for target in re.findall(r'<(?:a|img)\b[^>]*?(?:href|src)="([^"#][^"]*)"', text):
            if target.startswith(("http://", "https://", "data:")):
                assert name != "index.html", f"the landing page links outside the folder: {target}"
                continue
            assert (copied / unquote(target)).resolve().is_relative_to(copied.resolve()), (
                f"{name}: {target} leaves the folder"
            )
            assert (copied / unquote(target)).is_file(), f"{name}: {target} does not resolve"
    assert str(smoke_run) not in page and "/tmp/" not in page  # no path of this machine
    for page_name in (p.stem for p in NOTEBOOKS):
        assert f'href="{page_name}.html"' in page

    browser = _browser()
    if browser is None:
        pytest.skip(
            "no headless browser: install Debian's chromium (apt-get install chromium) to open "
            "the report in one"
        )
    probe = (
        "<script>window.addEventListener('load', () => document.body.setAttribute('data-images', "
        "JSON.stringify([...document.images].map(i => [i.getAttribute('src'), i.complete && "
        "i.naturalWidth > 0]))));</script>"
    )
    (copied / "check.html").write_text(page.replace("</body>", probe + "</body>"))
    result = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=10000",
            "--dump-dom",
            (copied / "check.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    images = json.loads(html.unescape(re.search(r'data-images="([^"]*)"', result.stdout).group(1)))
    # Fig. 4 and a Grad-CAM++ mosaic, drawn
    assert len(images) >= 2 and all(loaded for _, loaded in images), images
    text = re.sub(r"<[^>]+>", " ", result.stdout)
    assert "Table 6" in text and "What was run" in text
    claims = pd.read_csv(smoke_run / "tables" / "claims.csv")
    assert all(claim in html.unescape(result.stdout) for claim in claims["claim"])
    assert all(verdict in text for verdict in claims["verdict"])


def test_tables_have_the_paper_shapes_and_valid_values(smoke_run):
    tables = smoke_run / "tables"
    for name in (
        "table3_class_counts",
        "table5_per_class",
        "table6_overall",
        "table7_ablation_per_class",
        "table8_ablation_overall",
        "table2_contingency",
        "fig4_w_sweep",
    ):
        for suffix in (".csv", ".md", ".tex"):
            assert (tables / f"{name}{suffix}").exists(), name + suffix
    table5 = pd.read_csv(tables / "table5_per_class.csv")
    assert list(table5["model"]) == ["baseline", "proposed"]
    values = table5[list(CLASSES)].to_numpy()
    assert np.all((values >= 0) & (values <= 1) | np.isnan(values))
    table6 = pd.read_csv(tables / "table6_overall.csv")
    for _, row in table6.iterrows():
        assert 0 <= row["oa_top1"] <= row["oa_top2"] <= row["oa_top3"] <= 1
    table2 = pd.read_csv(tables / "table2_contingency.csv")
    assert table2["count"].sum() == 70 and len(table2) == 4
    table8 = pd.read_csv(tables / "table8_ablation_overall.csv")
    assert list(table8["model"]) == ["none", "confidence_only", "agreement_only", "both"]
    assert (table8["seeds"] == 2).all()
    sweep = pd.read_csv(tables / "fig4_w_sweep.csv")
    assert sorted(sweep["w"].unique()) == [0.0, 0.6, 1.0] and len(sweep) == 6
    counts = pd.read_csv(tables / "table3_class_counts.csv")
    assert counts["train"].sum() == 140 and counts["test"].sum() == 70


def test_summary_covers_every_paper_table(smoke_run):
    tables = smoke_run / "tables"
    for name in ("table2", "table3", "table5", "table6", "table7", "table8", "branches", "fig4"):
        frame = pd.read_csv(tables / f"summary_{name}.csv")
        assert {"ours", "paper", "difference"} <= set(frame.columns)
        assert len(frame) > 0
    table6 = pd.read_csv(tables / "summary_table6.csv")
    proposed = table6[(table6["model"] == "proposed") & (table6["metric"] == "oa_top1")].iloc[0]
    assert proposed["paper"] == pytest.approx(0.9231)
    assert proposed["difference"] == pytest.approx(proposed["ours"] - 0.9231)


def test_significance_and_claims_are_computed(smoke_run):
    tables = smoke_run / "tables"
    significance = pd.read_csv(tables / "significance_proposed.csv")
    assert list(significance["seed"].astype(str)) == ["0", "1", "pooled"]
    per_seed = significance.iloc[:2]
    assert (
        per_seed["McNemar p"].between(0, 1).all()
        and significance["McNemar p"].iloc[2:].isna().all()
    )
    assert (significance["OA 95% low"] <= significance["OA diff"]).all() and (
        significance["OA diff"] <= significance["OA 95% high"]
    ).all()
    ablation = pd.read_csv(tables / "significance_ablation.csv")
    # four weightings vs the baseline, and both vs none: 2 seeds + pooled each
    assert len(ablation) == 5 * 3
    per_seed = pd.read_csv(tables / "ablation_per_seed.csv")
    assert len(per_seed) == 4 * 2 and set(per_seed["seed"]) == {0, 1}
    assert len(pd.read_csv(tables / "proposed_per_seed.csv")) == 2
    # beyond the paper: calibrated and learned vs the baseline and vs the paper's model, coords vs
    # the baseline, and the heatmap branch vs the coordinate branch
    future = pd.read_csv(tables / "significance_future_work.csv")
    assert len(future) == 6 * 3 and set(future["versus"]) == {
        "baseline",
        "both (the paper)",
        "coordinate MLP branch",
    }
    assert (
        len(pd.read_csv(tables / "future_work.csv")) == 4
        and len(pd.read_csv(tables / "future_work_per_class.csv")) == 4
    )
    claims = pd.read_csv(tables / "claims.csv")
    # "inconclusive (2 seeds: per-seed only)": the smoke run's two seeds
    # give no method-level verdict
    first_words = claims["verdict"].str.split(",").str[0].str.replace(r" \(.*\)$", "", regex=True)
    assert len(claims) == 9 and set(first_words) <= {
        "supported",
        "contradicted",
        "equivalent",
        "inconclusive",
    }
    primary = claims.set_index("claim").loc["the proposed fusion beats the baseline in OA"]
    assert (
        primary["family"] == "primary"
        # the smoke profile trains a baseline per seed: both sides'
        # training chance is in the interval
        and "over 2 paired seeds (the reference, baseline, retrained per seed)" in primary["about"]
        and primary["resolution"] > 0
    )
    assert (claims["family"] == "claims").sum() == 7 and (claims["family"] == "w").sum() == 1
    plan = pd.read_csv(tables / "plan_seeds.csv")
    assert "the proposed fusion beats the baseline in OA" in set(plan["claim"])
    assert {
        "a learned weighting beats the paper's (OA)",
        "the heatmap CNN beats coordinates (fused OA)",
    } <= set(claims["claim"])
    sweep = pd.read_csv(tables / "fig4_w_sweep.csv")
    assert {
        "interval excludes 0",
        "pooled p (Holm over the w)",
        "pooled differs (Holm over the w)",
    } <= set(sweep.columns)
    design = pd.read_csv(tables / "significance_design_ablation.csv")
    assert "naive fusion (no weighting), PyTorch's default initialisation" in set(design["model"])
    choices = pd.read_csv(tables / "design_choices.csv").set_index("choice")
    assert {"ReLU after conv6", "ARM noise", "landmark-branch augmentation"} <= set(choices.index)
    assert "never trained on" in choices.loc["validation hold-out", "this run"]


def test_gradcam_examples_follow_their_rules(smoke_run):
    tables = smoke_run / "tables"
    table9 = pd.read_csv(tables / "table9_examples.csv")
    assert (
        len(table9) >= 1
        and (table9["label"] == table9["fused"]).all()
        and table9["group"].is_unique
    )
    table10 = pd.read_csv(tables / "table10_examples.csv")
    assert len(table10) >= 1 and (table10["label"] != table10["fused"]).all()
    predictions = pd.read_csv(smoke_run / "fusion" / "both_w0.60_seed0" / "predictions_fused.csv")
    for _, row in table10.iterrows():  # the most confident mistake of its class
        wrong = predictions[
            (predictions["label"] == CLASSES.index(row["label"]))
            & (predictions["predicted"] != predictions["label"])
        ]
        assert row["fused confidence"] == pytest.approx(
            wrong[[f"p_{c}" for c in CLASSES]].max(axis=1).max()
        )
    cases = pd.read_csv(tables / "table11_case_counts.csv")
    table11 = pd.read_csv(tables / "table11_examples.csv")
    for _, case in cases.iterrows():
        assert (table11["group"] == case["case"]).sum() == min(2, case["images"])


def test_figures_are_written_as_png_and_pdf(smoke_run):
    figures = smoke_run / "figures"
    for name in (
        "table3_class_counts",
        "fig3_alignment",
        "baseline_confusion",
        "fig4_w_sweep",
        "table9_gradcam",
        "table10_gradcam",
        "table11_gradcam",
        "whatif_jitter",
        "whatif_landmarks",
        "whatif_hidden",
    ):
        assert (figures / f"{name}.png").stat().st_size > 5_000
        assert (figures / f"{name}.pdf").exists()


def test_a_notebook_rerun_alone_reuses_and_says_so(smoke_run, tmp_path):
    import papermill

    parameters = {"PROFILE": "smoke", "RUN_DIR": str(smoke_run), "FIGURES_DIR": str(tmp_path)}
    # this environment's own kernel, as pipeline.run_all uses: the notebooks' "fer-lib" is
    # registered only by ./run_all.sh lab
    papermill.execute_notebook(
        str(pipeline.NOTEBOOK_DIR / "05_w_sweep.ipynb"),
        str(tmp_path / "05.ipynb"),
        parameters=parameters,
        kernel_name="python3",
        progress_bar=False,
    )
    text = json.dumps(
        [c.get("outputs", []) for c in nbformat.read(tmp_path / "05.ipynb", as_version=4).cells]
    )
    assert "reusing the synthetic RAF-DB" in text and "fusion both w=0.60 seed 1: reusing" in text


def test_a_rerun_executes_only_the_notebooks_whose_inputs_changed(smoke_run, capsys):
    def rerun() -> dict:
        assert pipeline.run_all("smoke", run_dir=smoke_run, figures_dir=smoke_run / "figures") == 0
        return json.loads((smoke_run / "run_info.json").read_text())

    # other tests execute notebooks into this run by hand (05 alone, the explorer in JupyterLab),
    # which rewrites their outputs: a first rerun executes those again (and every later one), then
    # nothing is left to do
    first = rerun()
    touched = [nb.stem for nb in NOTEBOOKS if nb.stem not in first.get("notebooks_reused", [])]
    # a tail, if any
    assert touched == [nb.stem for nb in NOTEBOOKS][len(NOTEBOOKS) - len(touched) :]
    capsys.readouterr()
    executed = {nb.name: (smoke_run / "executed" / nb.name).stat().st_mtime_ns for nb in NOTEBOOKS}
    info = rerun()
    out = capsys.readouterr().out
    assert (
        "every model of the profile is trained" in out and "up to date, not executed again" in out
    )
    assert info["notebooks_reused"] == [nb.stem for nb in NOTEBOOKS]
    assert {
        nb.name: (smoke_run / "executed" / nb.name).stat().st_mtime_ns for nb in NOTEBOOKS
    } == executed
    # an output of the last notebook removed: that notebook alone runs again, and writes it back
    record = json.loads((smoke_run / "executed" / "freshness.json").read_text())
    last = NOTEBOOKS[-1]
    output = sorted(record[last.name]["outputs"])[0]
    path = smoke_run / output.removeprefix("run/")
    path.unlink()
    info = rerun()
    assert info["notebooks_reused"] == [nb.stem for nb in NOTEBOOKS[:-1]] and path.exists()


@pytest.mark.slow
def test_unknown_parameter_is_refused(tmp_path):
    import papermill

    with pytest.raises(papermill.PapermillExecutionError, match="unknown notebook parameter"):
        papermill.execute_notebook(
            str(NOTEBOOKS[0]),
            str(tmp_path / "out.ipynb"),
            parameters={"PROFILE": "smoke", "RUN_DIR": str(tmp_path), "EPOCHS": 3},
            kernel_name="python3",
            progress_bar=False,
        )


PAPER_SIZED = {
    "input_size": "224",
    "baseline_width": "64",
    "landmark_width": "32",  # the paper's networks (Table 1, ResNet18)
    "synthetic": "70,35",
    "seeds": "1",
    "seed_offset": "3",
    "w_grid": "0.6",
    "batch_train": "32",
    "batch_study": "8,64",
    # the flipped design choices train the same networks as the proposed
    # model; the smoke run covers them
    "design_ablations": "false",
    "baseline_epochs": "1",
}


@pytest.fixture(scope="module")
def paper_sized_run(tmp_path_factory):
    """Every notebook with the paper profile's networks at 224 px, on a tiny synthetic set, one
    epoch of fusion."""
    run_dir = tmp_path_factory.mktemp("paper_sized")
    assert (
        pipeline.run_all(
            "smoke", settings=PAPER_SIZED, run_dir=run_dir, figures_dir=run_dir / "figures"
        )
        == 0
    )
    return run_dir


def test_the_paper_networks_run_end_to_end(paper_sized_run):
    settings = json.loads((paper_sized_run / "settings.json").read_text())
    assert settings == get_profile("smoke", PAPER_SIZED).settings()
    baseline = torch.load(paper_sized_run / "baseline" / "best.pt", weights_only=True)
    assert baseline["input_size"] == 224 and baseline["width"] == 64
    # the paper's 11x11 ARM feature
    assert baseline["model_state_dict"]["fc.weight"].shape == (7, 121)
    # seeds start at the offset
    fusion = torch.load(
        paper_sized_run / "fusion" / "both_w0.60_seed3" / "best.pt", weights_only=True
    )
    assert fusion["config"]["width"] == 32 and fusion["model"][
        "landmark_cnn.conv5.0.weight"
    ].shape == (512, 256, 3, 3)
    tables = paper_sized_run / "tables"
    for name in (
        "table3_class_counts",
        "table5_per_class",
        "table6_overall",
        "table7_ablation_per_class",
        "table8_ablation_overall",
        "table2_contingency",
        "fig4_w_sweep",
        "branch_reference",
        "claims",
        "table9_examples",
    ):
        assert (tables / f"{name}.csv").exists(), name
    for name in ("fig3_alignment", "baseline_confusion", "fig4_w_sweep", "table9_gradcam"):
        assert (paper_sized_run / "figures" / f"{name}.png").exists(), name
    executed = (paper_sized_run / "executed" / "04_fusion.ipynb").read_text()
    assert "settings changed from the profile (--set)" in executed and "input_size=224" in executed


@pytest.mark.slow
def test_kernels_start_without_the_unencrypted_tcp_warning(tmp_path, capfd):
    from nbformat.v4 import new_code_cell, new_notebook

    notebook = new_notebook(cells=[new_code_cell("print(6 * 7)")])
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(notebook, tmp_path / "tiny.ipynb")
    pipeline._execute(tmp_path / "tiny.ipynb", tmp_path / "tiny_out.ipynb", {})
    assert "42" in json.dumps(
        nbformat.read(tmp_path / "tiny_out.ipynb", as_version=4).cells[0].outputs
    )
    captured = capfd.readouterr()
    assert "without encryption" not in captured.err + captured.out


def test_plan_prints_the_seeds_a_finished_run_needs(smoke_run, capsys):
    assert main(["plan", str(smoke_run), "--effect", "0.05"]) == 0
    out = capsys.readouterr().out
    assert (
        "Seeds needed to resolve a difference of 5.00 points" in out
        and "the proposed fusion beats the baseline in OA" in out
    )
    assert main(["plan", str(smoke_run / "nowhere")]) == 2


def test_the_photo_model_uses_the_stored_means_and_estimates_those_a_checkpoint_lacks(
    smoke_run, monkeypatch
):
    def experiment():
        return Experiment(
            get_profile("smoke"), smoke_run / "data" / "basic", smoke_run, progress=False
        )

    stored = torch.load(
        smoke_run / "fusion" / "both_w0.60_seed0" / "best.pt", map_location="cpu", weights_only=True
    )["population_means"]["arm.population_mean"]
    model, _ = experiment().fusion.photo_model()
    assert torch.equal(model.arm.population_mean.cpu(), stored)  # no pass over the training images

    load = training.load_fusion_checkpoint

    def without_means(path, baseline):  # as a checkpoint that stores none loads
        model, config = load(path, baseline)
        model.arm.population_mean.fill_(float("nan"))
        return model, config

    monkeypatch.setattr(training, "load_fusion_checkpoint", without_means)
    model, _ = experiment().fusion.photo_model()
    assert not torch.isnan(model.arm.population_mean).any()
    assert not torch.isnan(model.baseline.arm.population_mean).any()


@pytest.mark.slow
def test_a_kernel_started_ahead_has_the_imports_loaded_and_nothing_else(tmp_path):
    from nbformat.v4 import new_code_cell, new_notebook

    probe = (
        "import sys\n"
        "print('torch loaded:', 'torch' in sys.modules, '| torch bound:', 'torch' in dir(), "
        "'| x bound:', 'x' in dir())\n"
        "x = 1"
    )
    notebook = new_notebook(cells=[new_code_cell(probe)])
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(notebook, tmp_path / "probe.ipynb")
    kernels = WarmKernels(tmp_path, pipeline.kernel_environment())
    printed = []
    try:
        for name, ahead in (("first", True), ("second", True), ("third", False)):
            pipeline._execute(
                tmp_path / "probe.ipynb", tmp_path / f"{name}.ipynb", {}, kernels, ahead
            )
            printed.append(
                nbformat.read(tmp_path / f"{name}.ipynb", as_version=4).cells[0].outputs[0].text
            )
        assert kernels.take() is None  # the last notebook started none ahead
    finally:
        kernels.close()
    assert printed[0].startswith("torch loaded: False")  # nothing was started ahead of the first
    for text in printed[1:]:  # warm, but fresh: no name from the warm-up or an earlier notebook
        assert text.strip() == "torch loaded: True | torch bound: False | x bound: False"
