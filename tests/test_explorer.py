"""The explorer of notebook 10: its tables and re-fusion against the saved predictions, and the live
widgets in a real browser (JupyterLab driven by headless Chromium; skipped, saying why, where the
browser or its driver is missing)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.pyplot as plt
import nbformat
import numpy as np
import pandas as pd
import pytest
import torch

from fer_lib.apps import editor, explore, whatif
from fer_lib.data.rafdb import CLASSES
from fer_lib.run import pipeline
from fer_lib.run.experiment import Experiment
from fer_lib.run.profiles import get_profile


@pytest.fixture(scope="module")
def data(smoke_run):
    settings = json.loads((smoke_run / "settings.json").read_text())
    experiment = Experiment(
        get_profile("smoke"), smoke_run / "data" / "basic", smoke_run, progress=False
    )
    assert settings["name"] == "smoke"
    return explore.ExplorerData(experiment)


def test_the_explorer_reads_the_saved_models_and_refuses_as_the_report_evaluated(data):
    ex = data.ex
    # the smoke run trains every kind the explorer offers
    assert set(data.models()) == set(explore.MODELS)
    proposed = data.outputs(explore.PROPOSED)
    saved = ex.fusion.run("both", 0.6).predictions
    fused, factor = proposed.refuse()
    # the trained w re-fused = the saved predictions
    np.testing.assert_allclose(fused, saved.fused, atol=1e-5)
    np.testing.assert_allclose(factor, saved.weight, atol=1e-5)
    # another w changes only the factor on disagreement: images where the
    # branches agree keep their factor
    agree = proposed.table()["agree"].to_numpy()
    _, at_zero = proposed.refuse(0.0)
    np.testing.assert_allclose(at_zero[agree], factor[agree], atol=1e-6)
    assert np.all(at_zero[~agree] == 0)
    naive = data.outputs("naive fusion (no weighting)")
    assert not naive.uses_w and np.array_equal(naive.refuse(0.0)[0], naive.refuse(1.0)[0])
    assert (
        ex.run_dir / explore.FEATURES_DIR / f"{proposed.folder.name}.pt"
    ).exists()  # computed once, then read


def test_filters_and_sorts(data):
    frame = data.outputs(explore.PROPOSED).table()
    assert set(frame["case"]) <= set(explore.TABLE2_CASES) and set(frame["effect"]) <= set(
        explore.EFFECTS
    )
    fixed = explore.select(frame, effect="fixed")
    assert ((fixed["RGB"] != fixed["true"]) & (fixed["fused"] == fixed["true"])).all()
    chosen = explore.select(frame, true=CLASSES[3], sort="RGB confidence (low first)")
    assert (chosen["true"] == CLASSES[3]).all() and chosen["RGB confidence"].is_monotonic_increasing
    assert len(explore.select(frame)) == len(frame)
    with pytest.raises(ValueError, match="case 'nonsense' is not one of"):
        explore.select(frame, case="nonsense")
    with pytest.raises(ValueError, match="is not one of"):
        data.outputs("a model nobody trained")


def test_the_panel_and_the_gallery_draw(data):
    proposed = data.outputs(explore.PROPOSED)
    fig = data.draw_panel(proposed, 0, 0.3, cams=True)
    assert len(fig.axes) == 5
    plt.close(fig)
    cam = data.gradcam(proposed, 0)
    # another w, same image: not computed again
    plt.close(data.draw_panel(proposed, 0, 0.9, cams=True))
    assert data.gradcam(proposed, 0) is cam and cam.index.tolist() == [0]
    coords = data.outputs("coordinate branch (MLP)")
    plt.close(data.draw_panel(coords, 1))  # no heatmap on that branch: its points instead
    plt.close(data.draw_gallery(proposed.table(), count=5))


def test_the_jitter_table_starts_at_the_reported_accuracies(data):
    """The report's jitter table at jitter 0, per model and seed, is the accuracy of the run's saved
    test predictions."""
    ex = data.ex
    table = pd.read_csv(ex.tables_dir / "whatif_jitter.csv")
    assert set(table["model"]) == set(whatif.STUDIED)
    assert sorted(set(table["seed"])) == sorted(ex.seeds)
    for (name, seed), rows in table.groupby(["model", "seed"]):
        weighting, w, _ = explore.MODELS[name]
        saved = ex.fusion.run(weighting, w, int(seed)).predictions
        at_zero = rows[rows["jitter (px)"] == 0].iloc[0]
        assert at_zero["fused OA"] == pytest.approx((saved.fused.argmax(1) == saved.labels).mean())
        assert at_zero["RGB OA"] == pytest.approx((saved.rgb.argmax(1) == saved.labels).mean())
        assert at_zero["landmark OA"] == pytest.approx(
            (saved.landmark.argmax(1) == saved.labels).mean()
        )
        assert rows["jitter (px)"].tolist() == list(whatif.JITTER_SIGMAS)


def test_the_editor_answers_a_drag_and_a_reset(data):
    edit = editor.Editor(data.ex, data)
    proposed = data.outputs(explore.PROPOSED)
    index = edit.image.value
    saved = data.ex.fusion.run("both", 0.6).predictions
    unedited = edit.readout.value
    assert "points as detected" in unedited
    np.testing.assert_allclose(edit.bars.y[2], saved.fused[index], atol=1e-5)
    np.testing.assert_allclose(edit.bars.y[0], proposed.out.rgb_logits[index].softmax(0), atol=1e-5)
    rgb_bars = edit.bars.y[0].copy()
    y = np.array(edit.points.y)
    y[-1] -= 20  # a mouth point up
    edit.points.y = y
    assert "points moved" in edit.readout.value and edit.readout.value != unedited
    assert np.array_equal(edit.bars.y[0], rgb_bars)
    edit.region.value = "mouth"
    assert "region hidden" in edit.readout.value
    # a box drawn on the face (the brush, on while a box is chosen) becomes the sliders' box
    edit.region.value = editor.BOX
    assert edit.face_figure.interaction is edit.brush
    edit.brush.selected_x, edit.brush.selected_y = np.array([40.4, 3.0]), np.array([9.0, 30.0])
    assert edit.rows.value == (9, 30) and edit.cols.value == (3, 40)
    hidden = edit.current_image()
    assert not torch.equal(hidden[:, 9:30, 3:40], edit.face.image[:, 9:30, 3:40])
    assert torch.equal(hidden[:, 30:], edit.face.image[:, 30:])
    edit.reset.click()
    assert edit.readout.value == unedited
    edit.target.value, edit.amount.value = CLASSES[3], 1.0
    means = whatif.class_mean_points(data.ex.train)[3]
    np.testing.assert_allclose(edit.current_points().numpy(), means.numpy(), atol=1e-5)


# -- the live explorer in a browser ----------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _missing_browser() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (the dev extras have it)"
    for tool, package in (("chromium", "chromium"), ("chromedriver", "chromium-driver")):
        if not shutil.which(tool):
            return f"{tool} is not installed (Debian's {package}; .ci/run installs it)"
    return None


@contextlib.contextmanager
def jupyterlab(notebook_name: str, run_dir, tmp_path, profile: str = "smoke"):
    """The notebook as a user opens it, its parameters pointing at ``run_dir``, on this
    environment's own kernel, in JupyterLab driven by headless Chromium, all its cells run; yields
    (driver, a wait that retries a stale element). Skips, saying why, without a browser."""
    missing = _missing_browser()
    if missing:
        pytest.skip(f"no browser for the JupyterLab test: {missing}")
    from selenium import webdriver
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    notebook = nbformat.read(pipeline.NOTEBOOK_DIR / notebook_name, as_version=4)
    cell = next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
    cell.source = (
        f"PROFILE = {profile!r}\nRUN_DIR = {str(run_dir)!r}\nFIGURES_DIR = "
        f"{str(tmp_path / 'figures')!r}\n"
        + "\n".join(
            line
            for line in cell.source.splitlines()
            if not line.startswith(("PROFILE", "RUN_DIR", "FIGURES_DIR"))
        )
    )
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(notebook, tmp_path / notebook_name)
    port, token = _free_port(), "explorer-test"
    # the notebook's kernel starts by itself: without this setting JupyterLab may ask which kernel
    # to start, in a dialog that blocks "Run All Cells" (it did in 3 of 5 runs on a loaded machine)
    settings = tmp_path / "lab-settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    (settings / "tracker.jupyterlab-settings").write_text(
        json.dumps({"autoStartDefaultKernel": True})
    )
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter-config"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "lab-settings"),
    }
    env.pop("MPLBACKEND", None)  # figures inline, as in a user's JupyterLab
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyter",
            "lab",
            "--no-browser",
            "--allow-root",
            f"--ServerApp.port={port}",
            "--ServerApp.ip=127.0.0.1",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={tmp_path}",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "lab.log", "w"),
    )
    options = webdriver.ChromeOptions()
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
    ):
        options.add_argument(flag)
    options.binary_location = shutil.which("chromium")
    driver = None
    screenshot = tmp_path / f"{Path(notebook_name).stem}.png"
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            if server.poll() is not None:
                raise RuntimeError(f"JupyterLab stopped (exit {server.returncode})")
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.5)
        driver = webdriver.Chrome(
            options=options,
            service=webdriver.ChromeService(executable_path=shutil.which("chromedriver")),
        )
        driver.get(f"http://127.0.0.1:{port}/lab/tree/{notebook_name}?token={token}")
        wait = WebDriverWait(driver, 240)
        wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, ".jp-Notebook .jp-Cell")))
        # the panel re-renders while it is read: a text is read through a wait
        # that retries a stale element
        stable = WebDriverWait(driver, 240, ignored_exceptions=(StaleElementReferenceException,))
        # the kernel itself idle (the status bar), not merely the notebook drawn: Run All Cells sent
        # before the kernel is ready can run nothing (it did, in 1 of 5 runs on a loaded machine)
        stable.until(lambda d: "| Idle" in d.find_element(By.ID, "jp-main-statusbar").text)

        def cells_started(d) -> bool:
            prompts = [p.text for p in d.find_elements(By.CSS_SELECTOR, ".jp-InputPrompt")]
            return any(p.startswith("[") and p.strip() not in ("[ ]:", "[ ]") for p in prompts)

        for attempt in range(3):  # Run All Cells again only if no cell started
            wait.until(
                EC.element_to_be_clickable(
                    (By.XPATH, "//div[contains(@class,'lm-MenuBar-itemLabel') and text()='Run']")
                )
            ).click()
            wait.until(
                EC.element_to_be_clickable(
                    (
                        By.XPATH,
                        "//div[contains(@class,'lm-Menu-itemLabel') and text()='Run All Cells']",
                    )
                )
            ).click()
            try:
                WebDriverWait(
                    driver, 30, ignored_exceptions=(StaleElementReferenceException,)
                ).until(cells_started)
                break
            except TimeoutException:
                if attempt == 2:
                    raise
        yield driver, stable
        driver.save_screenshot(str(screenshot))  # for a look when the test is run by hand
    except Exception:
        if driver is not None:
            driver.save_screenshot(str(screenshot))
        print(f"JupyterLab log: {(tmp_path / 'lab.log').read_text()[-3000:]}")
        raise
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.slow
def test_the_w_slider_changes_the_prediction_in_jupyterlab(smoke_run, data, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    # the image the explorer shows first, and its fused class once w is 0
    proposed = data.outputs(explore.PROPOSED)
    first = int(explore.select(proposed.table(0.6))["index"].iloc[0])
    expected = CLASSES[int(proposed.refuse(0.0)[0][first].argmax())]

    with jupyterlab("10_explore.ipynb", smoke_run, tmp_path) as (driver, stable):

        def prediction_text(d) -> str:
            return d.find_element(By.CSS_SELECTOR, ".fer-prediction").text

        stable.until(lambda d: "w = 0.60" in prediction_text(d))

        def type_w_zero(d) -> bool:
            readout = d.find_element(By.CSS_SELECTOR, ".widget-slider .widget-readout")
            readout.click()
            readout.send_keys(Keys.CONTROL, "a")
            readout.send_keys("0" + Keys.ENTER)
            return True

        stable.until(type_w_zero)
        stable.until(lambda d: "w = 0.00" in prediction_text(d))
        assert stable.until(prediction_text) == f"fused at w = 0.00: {expected}"


@pytest.mark.slow
def test_dragging_a_landmark_changes_the_landmark_head_in_jupyterlab(smoke_run, data, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    # the editor's first face: the proposed model's first test image of the explorer's order
    proposed = data.outputs(explore.PROPOSED)
    first = int(explore.select(proposed.table())["index"].iloc[0])
    unedited = whatif.face_of(data, proposed, first).answer().summary()

    with jupyterlab("11_what_if.ipynb", smoke_run, tmp_path) as (driver, stable):

        def readout(d) -> str:
            return d.find_element(By.CSS_SELECTOR, ".fer-whatif").text

        def change(d) -> dict[str, float]:
            """Each head's largest change of a probability, as the page shows it."""
            text = d.find_element(By.CSS_SELECTOR, ".fer-whatif-change").text
            return {
                head: float(value)
                for head, value in re.findall(r"(RGB head|landmark head|fused) ([-+.e0-9]+)", text)
            }

        stable.until(lambda d: readout(d) == unedited)
        assert stable.until(change) == {"RGB head": 0.0, "landmark head": 0.0, "fused": 0.0}
        # bqplot draws each point as an SVG path of class "dot"; the last one is a mouth point
        dots = stable.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".bqplot path.dot"))
        assert len(dots) == len(data.ex.test.points[first])
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", dots[-1])
        ActionChains(driver).click_and_hold(dots[-1]).move_by_offset(0, -40).move_by_offset(
            0, -40
        ).release().perform()
        moved = stable.until(lambda d: change(d)["landmark head"] > 0 and change(d))
        # the landmark head's probabilities changed, the RGB head's not at all
        assert moved["RGB head"] == 0.0
        assert readout(driver).split(", landmark")[0] == unedited.split(", landmark")[0]
