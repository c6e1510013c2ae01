"""The training and evaluation commands end to end on a tiny data set
(narrow networks, 1-2 epochs)."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from fer_lib import settings
from fer_lib.cli.main import build_parser, main
from fer_lib.data import rafdb
from tests.conftest import write_tiny_rafdb


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    base = tmp_path_factory.mktemp("cli")
    data = write_tiny_rafdb(base / "basic", n_per_class=2)
    common = ["--data", str(data), "--device", "cpu"]
    assert (
        main(
            [
                "train-baseline",
                *common,
                "--run-dir",
                str(base / "baseline"),
                "--input-size",
                "128",
                "--width",
                "4",
                "--epochs",
                "1",
                "--batch-size",
                "8",
                "--val-fraction",
                "0.3",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "train-fusion",
                *common,
                "--baseline",
                str(base / "baseline" / "best.pt"),
                "--run-dir",
                str(base / "fusion"),
                "--width",
                "2",
                "--epochs",
                "1",
                "--batch-size",
                "8",
                "--val-fraction",
                "0.3",
                "--holdout",
                str(base / "baseline" / "split.json"),
            ]
        )
        == 0
    )
    return base, common


def test_the_fusion_validates_on_the_baselines_holdout_and_follows_table1(trained):
    base, _ = trained
    baseline_split = json.loads((base / "baseline" / "split.json").read_text())
    fusion_split = json.loads((base / "fusion" / "split.json").read_text())
    assert fusion_split["validation"] == baseline_split["validation"] and fusion_split[
        "holdout_of"
    ].endswith("baseline")
    # Table 1 as printed
    assert json.loads((base / "fusion" / "config.json").read_text())["batch_norm"] is False


def test_training_commands_write_checkpoints_and_predictions(trained):
    base, _ = trained
    for path in (
        "baseline/best.pt",
        "baseline/last.pt",
        "baseline/predictions_test.csv",
        "fusion/best.pt",
        "fusion/predictions_fused.csv",
    ):
        assert (base / path).exists(), path
    frame = pd.read_csv(base / "fusion" / "predictions_fused.csv")
    assert len(frame) == 14 and {"image", "label", "predicted", "p_Surprise", "weight"} <= set(
        frame.columns
    )


def test_the_beyond_the_paper_models_from_the_command_line(trained, capsys):
    base, common = trained
    baseline = str(base / "baseline" / "best.pt")
    assert (
        main(
            [
                "train-fusion",
                *common,
                "--baseline",
                baseline,
                "--run-dir",
                str(base / "coords"),
                "--landmark-input",
                "coords",
                "--weighting",
                "calibrated",
                "--width",
                "2",
                "--epochs",
                "1",
                "--batch-size",
                "8",
                "--val-fraction",
                "0.3",
            ]
        )
        == 0
    )
    assert "temperature" in pd.read_csv(base / "coords" / "history.csv")
    assert (
        main(
            [
                "fit-gate",
                *common,
                "--baseline",
                baseline,
                "--base-run",
                str(base / "fusion"),
                "--run-dir",
                str(base / "gate"),
            ]
        )
        == 0
    )
    assert "fused, test set" in capsys.readouterr().out
    assert len(pd.read_csv(base / "gate" / "predictions_fused.csv")) == 14
    assert (
        main(
            [
                "fit-gate",
                *common,
                "--baseline",
                baseline,
                "--base-run",
                str(base / "baseline"),
                "--run-dir",
                str(base / "g2"),
            ]
        )
        == 1
    )
    # a baseline folder passed by mistake
    assert "not a fusion checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("affinity", ["batch", "fixed"])
def test_evaluate_with_fusion(trained, affinity, capsys):
    base, common = trained
    out = base / f"eval_{affinity}"
    assert (
        main(
            [
                "evaluate",
                *common,
                "--baseline",
                str(base / "baseline" / "best.pt"),
                "--fusion",
                str(base / "fusion" / "best.pt"),
                "--affinity",
                affinity,
                "--batch-size",
                "4",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert f"affinity {affinity}" in capsys.readouterr().out
    assert len(pd.read_csv(out / "predictions_fused.csv")) == 14


def test_evaluate_refuses_a_fusion_checkpoint_of_another_baseline(trained, tmp_path, capsys):
    base, common = trained
    other = tmp_path / "other"
    assert (
        main(
            [
                "train-baseline",
                *common,
                "--run-dir",
                str(other),
                "--input-size",
                "128",
                "--width",
                "4",
                "--epochs",
                "1",
                "--batch-size",
                "8",
                "--val-fraction",
                "0.3",
                "--seed",
                "5",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "evaluate",
                *common,
                "--baseline",
                str(other / "best.pt"),
                "--fusion",
                str(base / "fusion" / "best.pt"),
                "--out",
                str(tmp_path / "e"),
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "another baseline" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "command, extra, says",
    [
        ("train-baseline", ["--width", "5"], "--width: ARM needs one of the widths 1, 4, 9, 16"),
        ("train-baseline", ["--batch-size", "0"], "--batch-size: must be at least 2"),
        ("train-baseline", ["--epochs", "0"], "--epochs: must be at least 1"),
        ("train-baseline", ["--input-size", "100"], "--input-size: the networks take one of"),
        (
            "train-baseline",
            ["--val-fraction", "1"],
            "--val-fraction: must lie strictly between 0 and 1",
        ),
        (
            "train-baseline",
            ["--pretrained", "missing.pth"],
            "--pretrained: missing.pth: no such file",
        ),
        (
            "train-fusion",
            ["--baseline", "missing.pt", "--width", "4"],
            "--baseline: missing.pt: no such file",
        ),
        ("train-fusion", ["--w", "1.5"], "--w: must lie between 0 and 1"),
    ],
)
def test_a_bad_argument_is_one_line_and_exit_2(tmp_path, capsys, command, extra, says):
    data = write_tiny_rafdb(tmp_path / "basic", n_per_class=1)
    required = {
        "train-baseline": ["--run-dir", str(tmp_path / "run")],
        "train-fusion": [
            "--run-dir",
            str(tmp_path / "run"),
            "--baseline",
            str(data / "EmoLabel" / "list_patition_label.txt"),
        ],
    }[command]
    with pytest.raises(SystemExit) as exit_:
        main([command, "--data", str(data), *required, *extra])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0]
    assert not (tmp_path / "run").exists()  # refused before any work


def test_missing_data_folder_and_a_broken_data_set(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(
            [
                "train-baseline",
                "--data",
                str(tmp_path / "nonexistent"),
                "--run-dir",
                str(tmp_path / "run"),
            ]
        )
    assert exit_.value.code == 2 and "no such file or folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert (
        main(
            [
                "train-baseline",
                "--data",
                str(tmp_path / "empty"),
                "--run-dir",
                str(tmp_path / "run"),
                "--width",
                "4",
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert err.startswith("train-baseline: ") and "Traceback" not in err


def test_data_commands_refuse_bad_arguments(tmp_path, capsys):
    for argv, says in (
        (["check-data", str(tmp_path / "nowhere")], "no such file or folder"),
        (["demo-data", str(tmp_path / "out"), "--train", "3"], "--train: must be at least 7"),
    ):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert exit_.value.code == 2 and len(err) == 1 and says in err[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "layout, mine",
    [("rafdb", "EmoLabel/list_patition_label.txt"), ("rafdb", "notes.jpg")]
    + [(layout, "notes.txt") for layout in ("ferplus", "affectnet", "ckplus")],
)
def test_demo_data_into_a_folder_of_other_files_says_so_without_a_traceback(
    tmp_path, capsys, layout, mine
):
    out = tmp_path / "mine"
    out.mkdir()
    # a label file (RAF-DB's: it may be a real copy) or any file the demo did not write
    mine = out / mine
    mine.parent.mkdir(exist_ok=True)
    mine.write_text("mine\n")
    argv = ["demo-data", str(out), "--train", "7", "--test", "7", "--layout", layout]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("demo-data: ") and str(out) in err and "Traceback" not in err
    assert [p for p in out.rglob("*") if p.is_file()] == [mine]


def test_the_fer_lib_kernel_starts_by_name_and_imports_the_library(tmp_path, monkeypatch):
    from jupyter_client.manager import start_new_kernel

    assert (
        subprocess.run(
            [sys.executable, "-m", "fer_lib", "install-kernel", "--prefix", str(tmp_path)],
            capture_output=True,
            text=True,
        ).returncode
        == 0
    )
    # found there, as a user-wide install is found
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "share" / "jupyter"))
    manager, client = start_new_kernel(kernel_name="fer-lib")
    try:
        outputs = []
        client.execute_interactive(
            "import fer_lib, sys; print(fer_lib.__name__, sys.executable)",
            timeout=60,
            output_hook=lambda message: outputs.append(message["content"].get("text", "")),
        )
        assert f"fer_lib {sys.executable}" in "".join(outputs)
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    notebook = json.loads(
        (Path(__file__).parent.parent / "notebooks" / "04_fusion.ipynb").read_text()
    )
    assert notebook["metadata"]["kernelspec"]["name"] == "fer-lib"


def test_predict_explains_every_face_of_a_real_photo_on_both_branches(
    trained, tmp_path, monkeypatch
):
    pytest.importorskip("dlib", reason="dlib-bin is a dependency: ./run_all.sh test installs it")
    from matplotlib.figure import Figure
    from skimage import data as samples

    saved, savefig = [], Figure.savefig

    def record_titles(figure, path, *args, **kwargs):
        titles = [axis.get_title() for axis in figure.axes]
        saved.append((Path(path).name, figure._suptitle.get_text(), titles))
        return savefig(figure, path, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", record_titles)
    base, _ = trained
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(samples.astronaut()).save(photos / "astronaut.png")
    Image.new("RGB", (80, 60), (30, 120, 200)).save(photos / "sky.png")
    out = tmp_path / "out"
    assert (
        main(
            [
                "predict",
                str(photos),
                "--baseline",
                str(base / "baseline" / "best.pt"),
                "--fusion",
                str(base / "fusion" / "best.pt"),
                "--out",
                str(out),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    table = pd.read_csv(out / "predictions.csv")
    face = table[table["image"].str.endswith("astronaut.png")].iloc[0]
    assert face["face"] == 0 and face["x1"] < face["x2"] and face["y1"] < face["y2"]
    probabilities = {
        head: face[[c for c in table.columns if c.startswith(f"p_{head}_")]].to_numpy(float)
        for head in ("rgb", "landmark", "fused")
    }
    # 21 probabilities
    assert all(len(p) == 7 and abs(p.sum() - 1) < 1e-4 for p in probabilities.values())
    assert face["fused class"] in (
        "Surprise",
        "Fear",
        "Disgust",
        "Happiness",
        "Sadness",
        "Anger",
        "Neutral",
    )
    assert table.loc[table["image"].str.endswith("sky.png"), "status"].tolist() == ["no face"]
    assert (out / "astronaut_face0.png").stat().st_size > 20_000
    # the figure names its photo and face above the panels, each panel its own view
    name, suptitle, titles = next(entry for entry in saved if entry[0] == "astronaut_face0.png")
    assert suptitle.startswith("astronaut.png, face 0. ARM batch-independent"), suptitle
    assert titles[0] == "photo, face and 68 points" and titles[-1].startswith(
        "Grad-CAM++ landmarks"
    )
    alone = tmp_path / "alone"  # without a fusion run: the RGB baseline alone
    assert (
        main(
            [
                "predict",
                str(photos / "astronaut.png"),
                "--baseline",
                str(base / "baseline" / "best.pt"),
                "--out",
                str(alone),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert "fused class" not in pd.read_csv(alone / "predictions.csv").columns


def test_predict_refuses_a_checkpoint_without_a_population_mean(trained, tmp_path, capsys):
    base, _ = trained
    state = torch.load(base / "baseline" / "best.pt", weights_only=True)
    state["population_means"] = {
        k: torch.full_like(v, float("nan")) for k, v in state["population_means"].items()
    }
    torch.save(state, tmp_path / "old.pt")
    assert (
        main(
            [
                "predict",
                str(base),
                "--baseline",
                str(tmp_path / "old.pt"),
                "--out",
                str(tmp_path / "out"),
            ]
        )
        == 1
    )
    said = capsys.readouterr().err
    assert "population mean" in said and "--data" in said and "Traceback" not in said
    out = tmp_path / "estimated"
    args = [
        "predict",
        str(base / "basic" / rafdb.ALIGNED_DIR),
        "--baseline",
        str(tmp_path / "old.pt"),
    ]
    assert main([*args, "--out", str(out), "--data", str(base / "basic"), "--device", "cpu"]) == 0
    said = capsys.readouterr().out
    assert "carries no population mean: estimated over the 14 training images" in said


def test_predict_lists_unreadable_photos_and_goes_on_and_names_figures_apart(
    trained, tmp_path, capsys
):
    pytest.importorskip("dlib", reason="dlib-bin is a dependency: ./run_all.sh test installs it")
    from skimage import data as samples

    base, _ = trained
    photos = tmp_path / "photos"
    for folder in ("a", "b"):
        (photos / folder).mkdir(parents=True)
        Image.fromarray(samples.astronaut()).save(photos / folder / "face.jpg")
    (photos / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    out = tmp_path / "out"
    args = ["--baseline", str(base / "baseline" / "best.pt"), "--device", "cpu"]
    assert main(["predict", str(photos), *args, "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"predict: skipped {photos / 'a' / 'broken.jpg'}: unreadable" in err
    assert "Traceback" not in err
    table = pd.read_csv(out / "predictions.csv")
    broken = table[table["image"].str.endswith("broken.jpg")]
    assert broken["status"].tolist() == ["unreadable"] and broken["reason"].notna().all()
    assert (table["status"] == "predicted").sum() == 2
    # two photos named face.jpg in two folders: two figures
    assert {p.name for p in out.glob("*.png")} == {"a__face_face0.png", "b__face_face0.png"}
    (tmp_path / "notes.txt").write_text("not a photo")
    assert main(["predict", str(tmp_path / "notes.txt"), *args, "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "notes.txt: not a photo this command reads" in err[0]


@pytest.mark.parametrize(
    "command, config",
    [("train-baseline", "BaselineConfig"), ("train-fusion", "FusionConfig")],
)
def test_the_training_options_default_to_the_recipes(command, config, tmp_path):
    """Each option of a training command that sets a field of its recipe
    defaults to the recipe's default."""
    required = ["--data", str(tmp_path), "--run-dir", str(tmp_path)]
    if command == "train-fusion":
        required += ["--baseline", str(tmp_path)]
    args = vars(build_parser().parse_args([command, *required]))
    recipe = dataclasses.asdict(getattr(settings, config)())
    compared = {
        name: (args[name], value)
        for name, value in recipe.items()
        if name in args and name not in ("input_size", "seed")
    }
    assert len(compared) >= 8, compared
    assert {k: a for k, (a, _) in compared.items()} == {k: v for k, (_, v) in compared.items()}


def test_a_device_that_is_not_there_is_one_line_and_the_paper_profile_asks_before_a_cpu(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as a torch that lost its GPU
    # unset; run-all --device sets it, and the test's end restores it
    monkeypatch.setenv("FER_DEVICE", "")
    data = write_tiny_rafdb(tmp_path / "basic", n_per_class=1)
    run = ["run-all", "--data", str(data), "--run-dir", str(tmp_path / "run")]
    for argv, says in (
        ([*run, "--device", "cuda"], "device cuda: this torch"),
        ([*run, "--device", "tpu"], "device 'tpu': expected cpu, cuda or cuda:N"),
        ([*run, "--profile", "paper"], "Pass --device cpu to train on the CPU anyway"),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and says in err[0] and err[0].startswith("run-all: "), err
        assert not (tmp_path / "run").exists()  # refused before any work
    train = ["train-baseline", "--data", str(data), "--run-dir", str(tmp_path / "run")]
    assert main([*train, "--device", "cuda:1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("train-baseline: device cuda:1: this torch")


def test_a_training_command_says_which_device_and_precision_it_trains_on(trained, capsys):
    base, common = trained
    out = base / "evaluated"
    args = ["--baseline", str(base / "baseline" / "best.pt"), "--out", str(out)]
    assert main(["evaluate", *common, *args]) == 0
    said = capsys.readouterr().out
    assert "device: cpu, " in said and "fp32 for the frozen RGB network" in said


def test_a_folder_that_is_no_data_set_is_one_line_and_makes_no_run_folder(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("FER_DEVICE", "")  # run-all --device sets it; the test's end restores it

    (tmp_path / "empty").mkdir()
    mirror = tmp_path / "mirror"
    for name in ("happy", "sad"):
        (mirror / name).mkdir(parents=True)
        Image.new("RGB", (40, 40)).save(mirror / name / "a.jpg")
    assert main(["check-data", str(tmp_path / "empty")]) == 1
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert captured.out == "" and len(err) == 1 and "no known layout" in err[0]
    run = tmp_path / "runs" / "paper"
    argv = ["run-all", "--profile", "paper", "--device", "cpu", "--run-dir", str(run)]
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--data", str(tmp_path / "empty")])
    said = str(exit_.value.code)
    assert len(said.splitlines()) == 1 and "holds EmoLabel/" in said
    assert "labels read from" not in capsys.readouterr().out
    assert not run.exists()
    with pytest.raises(SystemExit) as exit_:
        main(argv)  # no --data at all
    assert "needs a real RAF-DB" in str(exit_.value.code) and not run.exists()
    train = [
        "train-baseline",
        "--data",
        str(mirror),
        "--run-dir",
        str(tmp_path / "t"),
        "--device",
        "cpu",
    ]
    assert main(train) == 1
    err = capsys.readouterr().err
    assert f"python -m fer_lib import-images {mirror} OUT" in err and "Traceback" not in err


def test_predict_with_a_model_folder_writes_the_same_table_as_with_the_checkpoints(
    trained, tmp_path
):
    pytest.importorskip("dlib", reason="dlib-bin is a dependency: ./run_all.sh test installs it")
    from skimage import data as samples

    from fer_lib.apps.predict import load_models

    base, _ = trained
    photo = tmp_path / "astronaut.png"
    Image.fromarray(samples.astronaut()).save(photo)
    baseline, fusion, config = load_models(
        base / "baseline" / "best.pt", base / "fusion" / "best.pt", torch.device("cpu")
    )
    fusion.save_pretrained(tmp_path / "model", config)
    checkpoints = ["--baseline", str(base / "baseline" / "best.pt")]
    checkpoints += ["--fusion", str(base / "fusion" / "best.pt")]
    for name, source in (("folder", ["--model", str(tmp_path / "model")]), ("files", checkpoints)):
        command = ["predict", str(photo), *source, "--out", str(tmp_path / name), "--device", "cpu"]
        assert main(command) == 0
    table = (tmp_path / "folder" / "predictions.csv").read_bytes()
    assert table == (tmp_path / "files" / "predictions.csv").read_bytes()
    assert main(["predict", str(photo), "--model", str(tmp_path / "model"), "--out", "x",
                 "--fusion", str(base / "fusion" / "best.pt")]) == 2  # fmt: skip


def test_predict_resumes_a_stopped_run_and_batches_faces_without_figures(trained, tmp_path, capsys):
    pytest.importorskip("dlib", reason="dlib-bin is a dependency: ./run_all.sh test installs it")
    from skimage import data as samples

    base, _ = trained
    photos = tmp_path / "photos"
    photos.mkdir()
    for k in range(4):
        Image.fromarray(samples.astronaut()).rotate(3 * k).save(photos / f"face{k}.png")
    Image.new("RGB", (80, 60), (30, 120, 200)).save(photos / "sky.png")
    models_ = ["--baseline", str(base / "baseline" / "best.pt")]
    models_ += ["--fusion", str(base / "fusion" / "best.pt")]
    figures = tmp_path / "figures"
    assert main(["predict", str(photos), *models_, "--out", str(figures), "--device", "cpu"]) == 0
    bulk = tmp_path / "bulk"
    command = ["predict", str(photos), *models_, "--out", str(bulk), "--device", "cpu"]
    assert main([*command, "--no-figures", "--batch-size", "3"]) == 0
    whole = pd.read_csv(bulk / "predictions.csv")
    expected = pd.read_csv(figures / "predictions.csv")
    assert whole["image"].tolist() == expected["image"].tolist()  # the photos' order
    probabilities = [c for c in whole.columns if c.startswith("p_")]
    assert np.allclose(whole[probabilities], expected[probabilities], atol=1e-5, equal_nan=True)
    assert not list(bulk.glob("*.png"))
    # stopped after two photos: the rerun predicts the other three and keeps the two
    lines = (bulk / "predictions.csv").read_text().splitlines()
    (bulk / "predictions.csv").write_text("\n".join(lines[:3]) + "\n")
    capsys.readouterr()
    assert main([*command, "--no-figures"]) == 0
    assert "resuming: 2 of 5 photo(s) already in" in capsys.readouterr().out
    resumed = pd.read_csv(bulk / "predictions.csv")
    assert sorted(resumed["image"]) == sorted(expected["image"])
    # another model's table is not appended to: other heads, or the same heads with other weights
    baseline_only = ["predict", str(photos), models_[0], models_[1], "--out", str(bulk)]
    assert main([*baseline_only, "--no-figures"]) == 1
    assert "holds another model's predictions" in capsys.readouterr().err
    saved = torch.load(base / "fusion" / "best.pt", weights_only=True)
    saved["model"]["fusion.bias"] = saved["model"]["fusion.bias"] + 0.01
    torch.save(saved, tmp_path / "retrained.pt")
    retrained = ["predict", str(photos), *models_[:3], str(tmp_path / "retrained.pt")]
    assert main([*retrained, "--out", str(bulk), "--no-figures"]) == 1
    assert "holds another model's predictions" in capsys.readouterr().err
    assert len(pd.read_csv(bulk / "predictions.csv")) == len(resumed)  # nothing appended


def test_the_command_line_answers_help_without_loading_torch_or_pandas():
    """The command line's import policy (fer_lib/cli/common.py): its modules load torch, pandas and
    matplotlib only inside the commands that use them, so `--help` and a mistyped option answer at
    once. A library import at the top of a cli module that pulls one of them in fails here."""
    heavy = ("torch", "pandas", "matplotlib", "dlib")
    code = (
        "import sys, fer_lib.cli.main as m; m.build_parser(); "
        f"print(','.join(name for name in {heavy!r} if name in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == "", f"importing the command line loads {loaded}"
