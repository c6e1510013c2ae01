"""AffectNet (both releases), FERPlus and CK+: tiny synthetic copies of every layout read back,
checked, converted into RAF-DB's layout, and every kind of broken copy refused with one line naming
the file and the row."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from fer_lib import models, training
from fer_lib.apps import crossdata
from fer_lib.cli.main import main
from fer_lib.data import affectnet, ckplus, datasets, ferplus, landmarks, layouts, rafdb
from fer_lib.data.demo_layouts import WRITERS
from fer_lib.data.tensors import SplitTensors, split_tensors
from fer_lib.report import figures, tables
from fer_lib.report.landing import write_landing_page
from fer_lib.run import pipeline
from fer_lib.run.fusion_runs import read_fusion_predictions
from fer_lib.run.pipeline import describe_data
from fer_lib.runtime import precision
from tests.conftest import write_tiny_rafdb

N_TRAIN, N_TEST = 14, 7


@pytest.fixture(scope="module")
def copies(tmp_path_factory) -> dict[str, Path]:
    """One pristine synthetic copy per layout; tests that break one work on
    their own copy (``broken``)."""
    base = tmp_path_factory.mktemp("layouts")
    return {
        layout: write(base / layout, N_TRAIN, N_TEST, seed=0, progress=False)
        for layout, write in WRITERS.items()
    }


@pytest.fixture
def broken(copies, tmp_path):
    def copy(layout: str) -> Path:
        return Path(shutil.copytree(copies[layout], tmp_path / layout))

    return copy


def check_json(path: Path, capsys, *options: str) -> tuple[int, dict]:
    status = main(["check-data", str(path), "--json", *options])
    return status, json.loads(capsys.readouterr().out)


# -----------------------------------------------------------------------------------------------
# detection, counts


def test_every_layout_is_detected_and_named(copies, tmp_path):
    for layout, root in copies.items():
        assert layouts.detect_layout(root) == layout
    assert layouts.detect_layout(write_tiny_rafdb(tmp_path / "raf" / "basic")) == "rafdb"
    assert layouts.detect_layout(tmp_path / "raf") == "rafdb"
    # a folder of folders without photos is no data set
    (tmp_path / "empty" / "notes").mkdir(parents=True)
    (tmp_path / "empty" / "notes" / "a.txt").write_text("x")
    with pytest.raises(layouts.DataSetError, match="no known layout"):
        layouts.detect_layout(tmp_path / "empty")

    for folder in ("happy", "train/sad"):
        (tmp_path / "photos" / folder).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "photos" / folder / "a.jpg")
    assert layouts.detect_layout(tmp_path / "photos") == "photos"
    assert layouts.detect_layout(tmp_path / "photos" / "train") == "photos"


def test_affectnet_csv_counts_match_the_files_read_independently(copies, capsys):
    status, report = check_json(copies["affectnet"], capsys)
    assert status == 0 and report["errors"] == []
    assert report["layout"] == "AffectNet (CSV release)" and report["classes"] == list(
        rafdb.CLASSES_8
    )
    for split, name in (("train", "training.csv"), ("test", "validation.csv")):
        codes = pd.read_csv(copies["affectnet"] / "Manually_Annotated_file_lists" / name)[
            "expression"
        ]
        expected = [int((codes == affectnet.CODES.index(c)).sum()) for c in rafdb.CLASSES_8]
        assert report[split] == expected
    excluded = sum(v for k, v in report["excluded"].items() if "not an expression class" in k)
    lists = (copies["affectnet"] / "Manually_Annotated_file_lists").glob("*.csv")
    all_codes = pd.concat([pd.read_csv(p)["expression"] for p in lists])
    assert excluded == int((all_codes >= 8).sum()) > 0


def test_seven_classes_exclude_contempt_and_count_it(copies, capsys):
    for layout in ("affectnet", "affectnet-npy", "ferplus"):
        _, eight = check_json(copies[layout], capsys)
        status, seven = check_json(copies[layout], capsys, "--classes", "7")
        assert status == 0 and seven["classes"] == list(rafdb.CLASSES)
        contempt = eight["train"][7] + eight["test"][7]
        assert contempt > 0 and seven["train"] == eight["train"][:7]
        assert sum(v for k, v in seven["excluded"].items() if "Contempt" in k) == contempt


def test_npy_release_detects_its_class_order_and_says_so(copies, broken, capsys):
    _, reference = check_json(copies["affectnet-npy"], capsys)
    root = broken("affectnet-npy")
    # the same labels in a repack's alphabetical order
    for path in root.glob("*/annotations/*_exp.npy"):
        code = int(np.load(path).item())
        if code < 8:
            np.save(path, np.array(str(affectnet.ALPHABETICAL.index(affectnet.CODES[code]))))
    reader = affectnet.AffectNetNpy(root)
    report = reader.check(progress=False)
    assert report.ok and (report.train, report.test) == (reference["train"], reference["test"])
    assert any("alphabetical" in line and "detected" in line for line in report.notes)
    # no Happy majority: undecidable
    for path in (root / "train_set" / "annotations").glob("*_exp.npy"):
        np.save(path, np.array("2"))
    status, result = check_json(root, capsys)
    assert status == 1 and any("--class-order" in e for e in result["errors"])
    status, result = check_json(root, capsys, "--class-order", "affectnet")
    assert status == 0


def test_ferplus_label_modes_follow_the_reference_rules():
    def votes(*counts):  # neutral, happiness, surprise, ... unknown, NF
        return np.array(list(counts) + [0] * (10 - len(counts)))

    assert ferplus.label_votes(votes(6, 2, 2), "majority")[0] == 0
    assert ferplus.label_votes(votes(5, 5), "majority")[0] is None  # a tie has no majority
    # 4 of 10 is not more than half
    assert ferplus.label_votes(votes(4, 3, 3), "majority")[0] is None
    assert ferplus.label_votes(votes(4, 3, 3), "plurality")[0] == 0
    assert ferplus.label_votes(votes(4, 4, 2), "plurality")[0] is None
    # single votes are dropped first: 5 of the 8 remaining votes is a majority
    assert ferplus.label_votes(votes(5, 3, 1, 1), "majority")[0] == 0
    assert "NF" in ferplus.label_votes(votes(2, 0, 0, 0, 0, 0, 0, 0, 0, 8), "majority")[1]
    assert "unknown" in ferplus.label_votes(votes(2, 0, 0, 0, 0, 0, 0, 0, 8), "majority")[1]
    top, _, soft = ferplus.label_votes(votes(6, 4), "probability")
    assert top == 0 and np.allclose(soft[:2], [0.6, 0.4]) and np.isclose(soft.sum(), 1)


# ten votes (neutral, happiness, surprise, sadness, anger, disgust, fear, contempt, unknown, NF)
# and, by hand, the class FERPlus's majority and plurality rules give (None: excluded); single votes
# are dropped first
VOTE_PATTERNS = [
    ([0, 6, 1, 1, 1, 1, 0, 0, 0, 0], "Happiness", "Happiness"),
    ([4, 3, 1, 1, 1, 0, 0, 0, 0, 0], "Neutral", "Neutral"),  # 4 of the 7 votes left
    ([5, 5, 0, 0, 0, 0, 0, 0, 0, 0], None, None),  # a tie
    ([2, 2, 2, 2, 2, 0, 0, 0, 0, 0], None, None),
    ([0, 0, 0, 0, 0, 0, 0, 7, 3, 0], "Contempt", "Contempt"),
    ([2, 0, 0, 0, 0, 0, 0, 0, 8, 0], None, None),  # mostly unknown
    ([3, 0, 0, 0, 0, 0, 0, 0, 0, 7], None, None),  # mostly not a face
    ([0, 0, 3, 2, 1, 1, 1, 1, 1, 0], "Surprise", "Surprise"),  # 3 of the 5 votes left
    ([4, 3, 3, 0, 0, 0, 0, 0, 0, 0], None, "Neutral"),  # the most votes, not more than half
]


def test_ferplus_counts_use_the_votes_and_publictest_joins_training(broken, capsys):
    root = broken("ferplus")
    old, new = pd.read_csv(root / "fer2013.csv"), pd.read_csv(root / "fer2013new.csv")
    assert len(old) == len(new) and set(old["Usage"]) == {"Training", "PublicTest", "PrivateTest"}
    patterns = [VOTE_PATTERNS[row % len(VOTE_PATTERNS)] for row in range(len(new))]
    new[list(ferplus.VOTE_COLUMNS)] = [votes for votes, _, _ in patterns]
    new.to_csv(root / "fer2013new.csv", index=False)
    for mode, column in (("majority", 1), ("plurality", 2)):
        status, report = check_json(root, capsys, "--label-mode", mode)
        expected = {"train": [0] * 8, "test": [0] * 8}
        for usage, pattern in zip(old["Usage"], patterns):
            if pattern[column] is not None:  # PublicTest is trained on, PrivateTest tested on
                split = "test" if usage == "PrivateTest" else "train"
                expected[split][rafdb.CLASSES_8.index(pattern[column])] += 1
        assert status == 0 and report["classes"] == list(rafdb.CLASSES_8), mode
        assert (report["train"], report["test"]) == (expected["train"], expected["test"]), mode
        excluded = sum(pattern[column] is None for pattern in patterns)
        assert sum(report["excluded"].values()) == excluded > 0, mode
    public = [p[1] for usage, p in zip(old["Usage"], patterns) if usage == "PublicTest"]
    assert any(label is not None for label in public)  # the copy tests that PublicTest is kept


def test_ferplus_demo_faces_are_48x48_grey(copies):
    pixels = pd.read_csv(copies["ferplus"] / "fer2013.csv")["pixels"]
    assert all(len(p.split()) == 48 * 48 for p in pixels)


def test_ckplus_takes_three_peak_frames_and_a_neutral_one_with_subject_wise_folds(copies, capsys):
    root = copies["ckplus"]
    labelled = sorted((root / "Emotion").glob("S*/*/*_emotion.txt"))
    status, report = check_json(root, capsys, "--folds", "2")
    assert status == 0 and sum(report["train"]) + sum(report["test"]) == 4 * len(labelled)
    status, without = check_json(root, capsys, "--folds", "2", "--no-first-neutral")
    assert sum(without["train"]) + sum(without["test"]) == 3 * len(labelled)
    reader = ckplus.CkPlus(root, folds=2, fold=1)
    splits = {}
    for sample in reader.samples():
        splits.setdefault(sample.source.split("/")[1], set()).add(sample.split)
    assert all(len(s) == 1 for s in splits.values()) and {"train", "test"} == set.union(
        *splits.values()
    )
    status, result = check_json(root, capsys)  # 10 folds need 10 subjects
    assert status == 1 and "fewer folds" in result["errors"][0]


# -----------------------------------------------------------------------------------------------
# broken copies


def rewrite_csv(path: Path, edit) -> None:
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    rows = edit(rows)
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows(rows)


def column_dropped(rows, name):
    k = rows[0].index(name)
    return [row[:k] + row[k + 1 :] for row in rows]


def set_cell(rows, line, name, value):
    rows[line - 1][rows[0].index(name)] = value
    return rows


def assert_refused(path: Path, capsys, *fragments: str, options=()) -> None:
    """check-data exits 1 without a traceback; one error line names every fragment
    (file, row, what is wrong)."""
    assert main(["check-data", str(path), *options]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert any(all(f in line for f in fragments) for line in lines), (fragments, lines)


def test_broken_affectnet_csv_copies_are_refused(broken, capsys):
    cases = {
        "missing column": (
            lambda r: column_dropped(r, "expression"),
            ("training.csv:1", "expression", "Restore"),
        ),
        "row count": (
            lambda r: r[:2] + [r[2][:-1]] + r[3:],
            ("training.csv:3", "fields where the header has 9"),
        ),
        "label out of range": (
            lambda r: set_cell(r, 4, "expression", "11"),
            ("training.csv:4", "outside 0..10"),
        ),
        "landmarks": (
            lambda r: set_cell(r, 5, "facial_landmarks", ";".join(r[4][5].split(";")[:-2])),
            ("training.csv:5", "134 values", "136"),
        ),
    }
    for edit, fragments in cases.values():
        root = broken("affectnet")
        rewrite_csv(root / "Manually_Annotated_file_lists" / "training.csv", edit)
        assert_refused(root, capsys, *fragments)
        shutil.rmtree(root)
    root = broken("affectnet")
    first = pd.read_csv(root / "Manually_Annotated_file_lists" / "validation.csv")[
        "subDirectory_filePath"
    ][0]
    (root / "Manually_Annotated_Images" / first).unlink()
    assert_refused(root, capsys, "validation.csv:2", first, "missing", options=["--no-decode"])


def test_broken_affectnet_npy_copies_are_refused(broken, capsys):
    root = broken("affectnet-npy")
    (root / "train_set" / "annotations" / "3_exp.npy").unlink()
    assert_refused(root, capsys, "3_exp.npy", "row counts")
    shutil.rmtree(root)
    root = broken("affectnet-npy")
    np.save(root / "val_set" / "annotations" / "2_lnd.npy", np.zeros(134))
    assert_refused(root, capsys, "2_lnd.npy", "134 values", "136")
    shutil.rmtree(root)
    root = broken("affectnet-npy")
    np.save(root / "val_set" / "annotations" / "1_exp.npy", np.array("12"))
    assert_refused(root, capsys, "1_exp.npy", "outside 0..10")
    shutil.rmtree(root)
    root = broken("affectnet-npy")
    (root / "val_set" / "images" / "4.jpg").unlink()
    assert_refused(root, capsys, "4.jpg", "missing", "row counts")


def test_broken_ferplus_copies_are_refused(broken, capsys):
    cases = {
        ("fer2013new.csv", "missing column"): (
            lambda r: column_dropped(r, "contempt"),
            ("fer2013new.csv:1", "contempt"),
        ),
        ("fer2013new.csv", "row count"): (
            lambda r: r[:-1],
            ("fer2013new.csv", "row count mismatch"),
        ),
        ("fer2013new.csv", "votes"): (
            lambda r: set_cell(r, 3, "anger", "-1"),
            ("fer2013new.csv:3", "out of range"),
        ),
        ("fer2013.csv", "label"): (
            lambda r: set_cell(r, 4, "emotion", "9"),
            ("fer2013.csv:4", "outside FER2013's 0..6"),
        ),
        ("fer2013.csv", "image"): (
            lambda r: set_cell(r, 5, "pixels", " ".join(r[4][1].split()[:-1])),
            ("fer2013.csv:5", "2303 pixel values"),
        ),
    }
    for (file, _), (edit, fragments) in cases.items():
        root = broken("ferplus")
        rewrite_csv(root / file, edit)
        assert_refused(root, capsys, *fragments)
        shutil.rmtree(root)


def test_broken_ckplus_copies_are_refused(broken, capsys):
    root = broken("ckplus")
    landmark = sorted((root / "Landmarks").glob("S*/*/*_00000010_landmarks.txt"))[0]
    landmark.write_text("".join(landmark.read_text().splitlines(keepends=True)[:67]))
    assert_refused(root, capsys, landmark.name, "67 points", "68", options=["--folds", "2"])
    shutil.rmtree(root)
    root = broken("ckplus")
    emotion = sorted((root / "Emotion").glob("S*/*/*_emotion.txt"))[0]
    emotion.write_text("   9.0000000e+00\n")
    assert_refused(root, capsys, emotion.name, ":1", "outside CK+'s 0..7", options=["--folds", "2"])
    shutil.rmtree(root)
    root = broken("ckplus")
    frame = sorted((root / "cohn-kanade-images").glob("S*/*/*_00000009.png"))[0]
    frame.unlink()
    assert_refused(root, capsys, frame.name, "missing", "its landmarks", options=["--folds", "2"])
    shutil.rmtree(root)
    root = broken("ckplus")
    shutil.rmtree(root / "Emotion")
    assert_refused(root, capsys, "Emotion: missing", options=["--folds", "2"])


def test_a_raw_layout_is_refused_by_the_training_commands_with_the_way_out(copies, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["train-baseline", "--data", str(copies["affectnet"]), "--run-dir", "unused"])
    assert stop.value.code == 2 and "convert-data" in capsys.readouterr().err


# -----------------------------------------------------------------------------------------------
# conversion


@pytest.fixture(scope="module")
def converted(copies, tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("converted")
    out = {}
    for layout in ("affectnet", "affectnet-npy", "ferplus", "ckplus"):
        options = {"folds": 2} if layout == "ckplus" else {}
        out[layout] = base / layout
        layouts.convert(
            datasets.reader_for(layout, copies[layout], **options),
            out[layout],
            workers=1,
            progress=False,
        )
    return out


def test_converted_copies_read_as_raf_db_with_their_class_list(copies, converted, capsys):
    for layout, root in converted.items():
        options = ["--folds", "2"] if layout == "ckplus" else []
        _, source = check_json(copies[layout], capsys, *options)
        status, report = check_json(root, capsys)
        assert status == 0 and report["classes"] == list(rafdb.CLASSES_8)
        assert (
            report["layout"].startswith(layouts.LAYOUT_NAMES[layout])
            and "converted" in report["layout"]
        )
        data = rafdb.load_rafdb(root)
        assert data.classes == rafdb.CLASSES_8 and len(
            pd.read_csv(root / layouts.SOURCES_FILE)
        ) == len(data)
        failed = pd.read_csv(root / layouts.REPORT_FILE)
        # every usable row is converted or listed with the reason: none dropped silently
        assert len(data) + len(failed) == sum(source["train"]) + sum(source["test"])
        if layout != "ferplus":
            assert len(failed) == 0 and (report["train"], report["test"]) == (
                source["train"],
                source["test"],
            )


def test_ferplus_faces_the_detector_misses_are_listed(converted):
    failed = pd.read_csv(converted["ferplus"] / layouts.REPORT_FILE)
    assert set(failed["status"]) <= {"no face"} and all(
        s.startswith("fer2013.csv:") for s in failed["source"]
    )
    info = json.loads((converted["ferplus"] / rafdb.CLASSES_FILE).read_text())
    assert sum(v for k, v in info["excluded"].items() if "not converted" in k) == len(failed)


def test_affectnet_landmarks_go_through_the_import_images_mapping(copies, converted):
    """The converted 37 and 5 points are the CSV's own 68 points, shifted into the crop, through
    import-images' mapping (faces.Face uses the same functions)."""
    sources = pd.read_csv(converted["affectnet"] / layouts.SOURCES_FILE)
    first = sources.iloc[0]
    line = int(first["source"].split(":")[1])
    rows = pd.read_csv(
        copies["affectnet"] / "Manually_Annotated_file_lists" / first["source"].split(":")[0]
    )
    row = rows.iloc[line - 2]
    points = layouts.parse_points68(row["facial_landmarks"])

    size = Image.open(
        copies["affectnet"] / "Manually_Annotated_Images" / row["subDirectory_filePath"]
    ).size
    left, top, _, _ = layouts._crop_box(
        tuple(row[["face_x", "face_y", "face_width", "face_height"]]), points, size
    )
    data = rafdb.load_rafdb(converted["affectnet"])
    i = data.names.index(first["name"])
    assert np.allclose(
        data.auto37[i], landmarks.auto37_from_ibug68(points - [left, top]), atol=0.006
    )
    assert np.allclose(
        data.manual5[i], landmarks.manual5_from_ibug68(points - [left, top]), atol=0.006
    )


@pytest.fixture(scope="module")
def soft_copy(copies, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("soft") / "ferplus"
    layouts.convert(
        ferplus.FerPlus(copies["ferplus"], label_mode="probability"), out, workers=1, progress=False
    )
    return out


def test_probability_mode_writes_soft_labels(soft_copy):
    soft = pd.read_csv(soft_copy / layouts.SOFT_LABELS_FILE)
    assert list(soft.columns) == ["name", *rafdb.CLASSES_8]
    assert np.allclose(soft[list(rafdb.CLASSES_8)].sum(axis=1), 1, atol=1e-3)
    assert len(soft) == len(rafdb.load_rafdb(soft_copy))


def test_convert_refuses_a_broken_copy_before_writing(broken, tmp_path, capsys):
    root = broken("ferplus")
    rewrite_csv(root / "fer2013new.csv", lambda r: r[:-1])
    assert main(["convert-data", str(root), str(tmp_path / "out")]) == 1
    assert (
        "row count mismatch" in capsys.readouterr().err
        and not (tmp_path / "out" / rafdb.LABEL_FILE).exists()
    )


# ----------------------------------------------------------------------------------------------- 7
# or 8 classes


def tiny_checkpoint(path: Path, classes) -> Path:
    torch.manual_seed(0)
    model = models.ARMNet(128, num_classes=len(classes), width=4)
    model.classes = tuple(classes)
    return models.save_arm_checkpoint(model, path)


def test_a_checkpoint_carries_its_class_list_and_another_list_is_refused_naming_both(tmp_path):
    path = tiny_checkpoint(tmp_path / "eight.pt", rafdb.CLASSES_8)
    assert models.load_arm_checkpoint(path).classes == rafdb.CLASSES_8
    with pytest.raises(models.CheckpointError) as refused:
        models.load_arm_checkpoint(path, classes=rafdb.CLASSES)
    message = str(refused.value)
    assert (
        "8 classes (Surprise" in message and "Contempt" in message and "has 7 (Surprise" in message
    )
    state = torch.load(path, weights_only=True)
    # a file without the entry (the ARM authors', or older ones) is RAF-DB's 7: refused too
    del state["classes"]
    torch.save(state, tmp_path / "old.pt")
    with pytest.raises(models.CheckpointError):
        models.load_arm_checkpoint(tmp_path / "old.pt")


def test_cross_dataset_mapping_drops_contempt_and_says_so():
    probabilities = np.zeros((3, 8))
    # Contempt most probable: the shared prediction is Happiness
    probabilities[0, [3, 7]] = [0.3, 0.7]
    probabilities[1, 0] = probabilities[2, 6] = 1
    result = crossdata.cross_result(
        "a", "b", rafdb.CLASSES_8, rafdb.CLASSES, np.array([3, 0, 5]), probabilities
    )
    assert result.shared == rafdb.CLASSES and np.isclose(result.oa, 2 / 3)
    assert result.confusion[5, 6] == 1 and "Contempt dropped" in result.notes[0]
    back = crossdata.cross_result(
        "b", "a", rafdb.CLASSES, rafdb.CLASSES_8, np.array([7, 0, 6]), np.eye(7)[[0, 0, 6]]
    )
    assert (
        back.images == 2
        and back.oa == 1
        and "1 test image(s) of Contempt left out" in back.notes[0]
    )


def test_a_report_runs_cross_table_gives_each_head_over_the_seeds_and_the_fused_confusion():
    labels = np.array([0, 1, 2, 3])
    right, wrong = np.eye(8)[[0, 1, 2, 3]], np.eye(8)[[0, 1, 2, 2]]
    results = [
        crossdata.cross_result(
            "A", "B", rafdb.CLASSES_8, rafdb.CLASSES, labels, p, model=name, seed=seed
        )
        for seed, p in ((0, wrong), (1, right))
        for _, name in crossdata.HEADS
    ]
    table = crossdata.run_table(results).set_index("model")
    fused = table.loc["fused (proposed)"]
    assert fused["seeds"] == 2 and fused["OA"] == pytest.approx(0.875)
    assert fused["OA sd"] == pytest.approx(np.std([0.75, 1.0], ddof=1))
    assert "Contempt dropped" in fused["notes"] and len(crossdata.run_rows(results)) == 6
    picks = crossdata.confusion_picks(results)
    assert list(picks) == ["cross_confusion_B"] and picks["cross_confusion_B"].seed == 0


def test_evaluate_across_data_sets_writes_the_table(converted, tmp_path, capsys):
    raf = write_tiny_rafdb(tmp_path / "raf" / "basic")
    eight = tiny_checkpoint(tmp_path / "an8" / "best.pt", rafdb.CLASSES_8).parent
    seven = tiny_checkpoint(tmp_path / "raf7" / "best.pt", rafdb.CLASSES).parent
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(eight),
                str(seven),
                "--data",
                str(raf),
                str(converted["affectnet"]),
                "--out",
                str(tmp_path / "cross"),
                "--device",
                "cpu",
                "--batch-size",
                "8",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "Contempt dropped" in out and "of Contempt left out" in out
    table = pd.read_csv(tmp_path / "cross" / "cross_dataset.csv")
    assert len(table) == 4 and set(table["classes"]) == {7, 8}
    assert (tmp_path / "cross" / "confusion_an8_on_affectnet.csv").exists()
    assert (
        main(
            [
                "evaluate",
                "--baseline",
                str(eight / "best.pt"),
                "--data",
                str(raf),
                "--out",
                str(tmp_path / "e"),
                "--device",
                "cpu",
            ]
        )
        == 1
    )
    assert "trained for 8 classes" in capsys.readouterr().err


def test_run_all_refuses_a_raw_layout_before_any_work(copies, converted, capsys):
    assert main(["run-all", "--profile", "smoke", "--data", str(copies["ckplus"])]) == 2
    assert "--data" in (err := capsys.readouterr().err) and "convert it first" in err
    # an 8-class converted copy is taken (the slow test below runs it); a raw
    # one to test on is refused too
    other = ["--cross-data", str(copies["ferplus"])]
    assert (
        main(["run-all", "--profile", "smoke", "--data", str(converted["affectnet"]), *other]) == 2
    )
    assert "--cross-data" in (err := capsys.readouterr().err) and "convert it first" in err
    missing = ["--cross-data", str(copies["ferplus"] / "nothing")]
    assert main(["run-all", "--profile", "smoke", *missing]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_the_landing_page_names_a_converted_set_and_its_protocol(converted, tmp_path):
    info = describe_data(converted["ckplus"])
    run = tmp_path / "run"
    (run / "report").mkdir(parents=True)
    (run / "run_info.json").write_text(
        json.dumps(
            {
                "data": "<data_root>",
                "data_layout": info["layout"],
                "data_protocol": info["protocol"],
                "data_excluded": {"Contempt: x": 3},
            }
        )
    )
    (run / "settings.json").write_text(json.dumps({"name": "paper", "seeds": 1}))
    page = write_landing_page(run, run / "report", [], tmp_path / "figures").read_text()
    assert "CK+, converted into RAF-DB&#x27;s layout" in page and "subject-wise 2 folds" in page
    assert "excluded: 3 row(s), Contempt: x" in page and "RAF-DB (basic)" not in page
    # the class list, where it is not RAF-DB's: every per-class table follows it
    assert info["classes"] == list(rafdb.CLASSES_8)
    info = json.loads((run / "run_info.json").read_text())
    (run / "run_info.json").write_text(json.dumps({**info, "data_classes": list(rafdb.CLASSES_8)}))
    page = write_landing_page(run, run / "report", [], tmp_path / "figures").read_text()
    assert "8 classes: Surprise, Fear" in page and "Neutral, Contempt" in page


def test_the_report_tables_follow_the_data_sets_class_list(tmp_path):
    """Eight classes through the report's tables: Table 3 and the per-class tables list Contempt,
    which RAF-DB's paper numbers lack (left empty, never typed in); the confusion matrix labels it;
    a mismatch is refused."""
    eight = rafdb.CLASSES_8
    table3 = tables.class_count_table([5] * 8, [2] * 8, eight)
    assert list(table3["class"]) == list(eight) and table3["paper train"].isna().tolist() == [
        False
    ] * 7 + [True]
    labels = np.arange(16) % 8
    probabilities = np.eye(8)[(labels + (labels == 7)) % 8]  # every Contempt image called Surprise
    values = tables.metric_values(labels, probabilities, eight)
    assert (
        values["Contempt"] == 0 and values["Surprise"] == 1 and values["aa"] == pytest.approx(7 / 8)
    )
    with pytest.raises(ValueError, match="8 probabilities per image for 7 classes"):
        tables.metric_values(labels, probabilities, rafdb.CLASSES)
    fig = figures.plot_confusion(labels, probabilities.argmax(1), "eight", eight)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()][-1] == "Con"
    plt.close(fig)

    tables_dir = tmp_path / "tables"
    tables.save_table(table3, "table3_class_counts", tables_dir)
    row = tables.mean_sd_row("baseline", pd.DataFrame([values]), eight)
    tables.save_table(pd.DataFrame([row]), "table5_per_class", tables_dir)
    compared = tables.paper_comparison(tables_dir)
    table5 = compared["table5"].set_index("metric")
    paper = tables.paper_results()["table5_per_class_accuracy"]["baseline"]
    assert list(table5.index) == list(eight) and table5.loc["Surprise", "paper"] == paper[0]
    assert pd.isna(table5.loc["Contempt", "paper"]) and table5.loc["Contempt", "ours"] == 0
    shares = compared["table3"].set_index("metric")
    assert pd.isna(shares.loc["share Contempt", "paper"]).all()

    folder = tmp_path / "fusion"
    predictions = training.FusionPredictions(
        [f"{k}.jpg" for k in range(16)], labels, *[probabilities] * 3, np.ones(16), eight
    )
    training.save_fusion_predictions(predictions, folder)
    assert read_fusion_predictions(folder).classes == eight  # the saved tables' own list


@pytest.mark.slow
def test_run_all_takes_eight_classes_under_bf16_and_tests_on_another_data_set(
    converted, tmp_path, monkeypatch
):
    """The smoke profile on a converted AffectNet-8, every notebook (07 checks that Grad-CAM
    explains the reported probabilities), on the CUDA path's precision (``FER_PRECISION=bf16``: bf16
    autocast of the trained trunks, run on the CPU; the frozen network's caches stay fp32): the
    per-class tables list its 8 classes, the landing page names the data set, its protocol and
    classes, and notebook 09 tests the models on a 7-class RAF-DB, saying that Contempt is dropped.
    One pipeline for the three, as each costs minutes here."""
    # inherited by the training workers and the notebook kernels
    monkeypatch.setenv(precision.ENV, "bf16")
    monkeypatch.setenv("MPLBACKEND", "Agg")  # as run_all.sh sets it
    raf = write_tiny_rafdb(tmp_path / "raf" / "basic")
    run = tmp_path / "run"
    # one seed, the paper's w and no design ablations: every notebook and kind of model still runs,
    # in half the time
    settings = {"seeds": "1", "w_grid": "0.6", "design_ablations": "false"}
    assert (
        pipeline.run_all(
            "smoke",
            data=converted["affectnet"],
            settings=settings,
            run_dir=run,
            figures_dir=run / "figures",
            cross_data=[raf],
        )
        == 0
    )
    for path in pipeline.notebooks():
        assert (run / "executed" / path.name).exists(), path.name
    caches = sorted(p.name for p in (run / "cache").glob("rgb_cache_*.pt"))
    # the frozen RGB network's features are fp32 on every path
    assert caches and all(name.endswith("_cpu_fp32.pt") for name in caches), caches
    tables_dir = run / "tables"
    table5 = pd.read_csv(tables_dir / "table5_per_class.csv")
    per_class = [c for c in table5.columns if c not in ("model", "seeds") and not c.endswith(" sd")]
    assert per_class == list(rafdb.CLASSES_8) and table5["Contempt"].notna().all()
    assert list(pd.read_csv(tables_dir / "table3_class_counts.csv")["class"]) == list(
        rafdb.CLASSES_8
    )
    assert "Contempt" in pd.read_csv(tables_dir / "table7_ablation_per_class.csv").columns
    page = (run / "report" / "index.html").read_text()
    assert "AffectNet (CSV release), converted into RAF-DB&#x27;s layout" in page
    assert "AffectNet-8" in page and "8 classes: Surprise" in page and "Contempt" in page

    cross = pd.read_csv(tables_dir / "cross_dataset.csv").set_index(["tested on", "model"])
    own = [name for name in cross.index.levels[0] if "its own test split" in name]
    other = [name for name in cross.index.levels[0] if name.startswith("raf: RAF-DB")]
    assert len(own) == len(other) == 1
    table6 = pd.read_csv(tables_dir / "table6_overall.csv").set_index("model")
    fused = "fused (proposed)"
    assert cross.loc[(own[0], fused), "OA"] == pytest.approx(table6.loc["proposed", "oa_top1"])
    assert (
        cross.loc[(own[0], fused), "classes"] == 8 and cross.loc[(other[0], fused), "classes"] == 7
    )
    assert "Contempt dropped" in cross.loc[(other[0], fused), "notes"]
    assert cross.loc[(other[0], fused), "test images"] == 7
    confusion = sorted(run.glob("figures/cross_confusion_*.png"))
    assert len(confusion) == 2 and (tables_dir / f"{confusion[1].stem}.csv").exists()


def test_demo_data_writes_each_layout_from_the_command_line(tmp_path, capsys):
    for layout in ("affectnet", "affectnet-npy", "ferplus", "ckplus"):
        assert (
            main(
                [
                    "demo-data",
                    str(tmp_path / layout),
                    "--layout",
                    layout,
                    "--train",
                    "7",
                    "--test",
                    "7",
                ]
            )
            == 0
        )
        assert layouts.detect_layout(tmp_path / layout) == layout
    capsys.readouterr()
    status, report = check_json(tmp_path / "ferplus", capsys)
    assert status == 0 and report["layout"] == "FERPlus"
    with pytest.raises(FileExistsError):  # a folder that holds something else is not written into
        WRITERS["ferplus"](write_tiny_rafdb(tmp_path / "raf"), 7, 7, progress=False)


def test_soft_labels_are_read_checked_and_trained_on(soft_copy, tmp_path):
    data = rafdb.load_rafdb(soft_copy)
    assert data.soft.shape == (len(data), 8) and (data.soft.argmax(1) == data.labels).all()
    train = split_tensors(data.split("train"), 128, progress=False).subset(np.arange(8))
    assert torch.equal(train.targets(torch.arange(2)), train.soft[:2])
    losses = {}
    # half the mass spread evenly: unlike most of the demo's votes (one class
    # after the single votes are dropped)
    spread = torch.nn.functional.one_hot(train.labels, 8).float() * 0.5 + 0.5 / 8
    for name, soft in (("hard", None), ("soft", spread)):
        split = SplitTensors(
            train.names,
            train.images,
            train.points,
            train.labels,
            train.landmark_set,
            train.classes,
            soft,
        )
        config = training.BaselineConfig(
            input_size=128, width=4, epochs=1, batch_size=4, val_fraction=0.3
        )
        training.train_baseline(
            split, config, tmp_path / name, device=torch.device("cpu"), progress=False
        )
        losses[name] = pd.read_csv(tmp_path / name / "history.csv")["train_loss"].iloc[0]
    # the same images, seed and model: only the targets differ
    assert losses["hard"] != losses["soft"]

    broken = Path(shutil.copytree(soft_copy, tmp_path / "broken"))
    path = broken / rafdb.SOFT_LABELS_FILE
    rows = path.read_text().splitlines()
    rows[1] = rows[1].rsplit(",", 1)[0] + ",0.9000"  # no longer sums to 1
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(rafdb.RafDbError, match="soft_labels.csv:2"):
        rafdb.load_rafdb(broken)


def test_every_ckplus_fold_is_converted_and_evaluated_with_the_mean_over_folds(
    copies, tmp_path, capsys
):
    out = tmp_path / "ck"
    assert (
        main(
            [
                "convert-data",
                str(copies["ckplus"]),
                str(out),
                "--folds",
                "2",
                "--fold",
                "all",
                "--workers",
                "1",
            ]
        )
        == 0
    )
    folds = [out / "fold_00", out / "fold_01"]
    tests = [set(rafdb.load_rafdb(f).split("test").names) for f in folds]
    sources = [pd.read_csv(f / layouts.SOURCES_FILE) for f in folds]
    subjects = [set(s[s["split"] == "test"]["source"].str.split("/").str[1]) for s in sources]
    # each subject is tested in one fold only
    assert tests[0] and tests[1] and not subjects[0] & subjects[1]
    runs = [
        tiny_checkpoint(tmp_path / f"run{k}" / "best.pt", rafdb.CLASSES_8).parent for k in range(2)
    ]
    capsys.readouterr()
    assert (
        main(
            [
                "evaluate",
                "--paired",
                "--checkpoint",
                *map(str, runs),
                "--data",
                *map(str, folds),
                "--out",
                str(tmp_path / "eval"),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    table = pd.read_csv(tmp_path / "eval" / "cross_dataset.csv")
    assert list(table["trained on"]) == ["run0", "run1", "mean over 2 folds", "sd over the folds"]
    assert (
        np.isclose(table["OA"][2], table["OA"][:2].mean())
        and "mean over 2 folds" in capsys.readouterr().out
    )
    assert (
        main(
            [
                "evaluate",
                "--paired",
                "--checkpoint",
                str(runs[0]),
                "--data",
                *map(str, folds),
                "--out",
                str(tmp_path / "eval2"),
            ]
        )
        == 2
    )


def test_csv_files_saved_with_a_byte_order_mark_and_crlf_are_read(copies, tmp_path, capsys):
    for layout, files in (
        ("affectnet", ["Manually_Annotated_file_lists/training.csv"]),
        ("ferplus", ["fer2013.csv", "fer2013new.csv"]),
    ):
        _, reference = check_json(copies[layout], capsys)
        root = Path(shutil.copytree(copies[layout], tmp_path / layout))
        for name in files:
            text = (root / name).read_text().replace("\r\n", "\n")
            (root / name).write_bytes("\ufeff".encode() + text.replace("\n", "\r\n").encode())
        status, report = check_json(root, capsys, "--no-decode")
        assert status == 0 and (report["train"], report["test"]) == (
            reference["train"],
            reference["test"],
        )


def test_a_fused_model_is_evaluated_across_data_sets_head_by_head(converted, tmp_path, capsys):
    raf = write_tiny_rafdb(tmp_path / "raf" / "basic")
    baseline_path = tiny_checkpoint(tmp_path / "base" / "best.pt", rafdb.CLASSES_8)
    config = training.FusionConfig(width=2)
    fusion = models.FusionModel.from_config(models.load_arm_checkpoint(baseline_path), config)
    (tmp_path / "fusion").mkdir()
    torch.save(
        {"model": fusion.state_dict(), "config": dataclasses.asdict(config)},
        tmp_path / "fusion" / "best.pt",
    )
    arguments = [
        "evaluate",
        "--checkpoint",
        str(tmp_path / "fusion"),
        "--data",
        str(raf),
        "--out",
        str(tmp_path / "x"),
        "--device",
        "cpu",
        "--batch-size",
        "8",
    ]
    assert main(arguments) == 1 and "pass --baseline" in capsys.readouterr().err
    assert main(arguments + ["--baseline", str(baseline_path)]) == 0
    table = pd.read_csv(tmp_path / "x" / "cross_dataset.csv")
    assert list(table["trained on"]) == ["fusion (rgb)", "fusion (landmark)", "fusion (fused)"]
    assert (table["classes"] == 7).all() and "Contempt dropped" in capsys.readouterr().out
    assert (tmp_path / "x" / "confusion_fusion_fused_on_raf.csv").exists()


def test_an_unreadable_image_is_named_by_the_full_check(broken, capsys):
    for layout, pattern in (
        ("affectnet", "Manually_Annotated_Images/*/*.jpg"),
        ("affectnet-npy", "val_set/images/*.jpg"),
        ("ckplus", "cohn-kanade-images/S*/*/*_00000010.png"),
    ):
        root = broken(layout)
        image = sorted(root.glob(pattern))[0]
        image.write_bytes(b"not an image")
        options = ["--folds", "2"] if layout == "ckplus" else []
        assert_refused(root, capsys, image.name, "unreadable image", options=options)
        # present, so the quick check passes
        assert main(["check-data", str(root), "--no-decode", *options]) == 0
        capsys.readouterr()


def test_run_all_on_cks_folds_runs_every_fold_then_the_mean_over_them(
    copies, tmp_path, monkeypatch, capsys
):
    """``run-all --data OUT`` where ``convert-data --fold all`` wrote OUT: each fold's copy gets its
    own report, and the folds' Table 6 values (read back from their saved tables) give the mean and
    sd over the folds."""
    assert (
        main(
            [
                "convert-data",
                str(copies["ckplus"]),
                str(tmp_path / "ck"),
                "--folds",
                "2",
                "--fold",
                "all",
            ]
        )
        == 0
    )
    folds = pipeline.fold_copies(tmp_path / "ck")
    assert [fold.name for fold in folds] == ["fold_00", "fold_01"]
    assert pipeline.fold_copies(folds[0]) == []  # a copy itself is one data set
    ran = []

    # stands in for the notebooks: writes Table 6
    def one_report(profile, *, data, run_dir, **options):
        ran.append((profile, Path(data).name, Path(run_dir).name))
        oa = {"fold_00": 0.5, "fold_01": 0.7}[Path(data).name]
        table = pd.DataFrame(
            {"model": ["baseline", "proposed"], "oa_top1": [oa, oa + 0.1], "aa": [oa - 0.1, oa]}
        )
        (Path(run_dir) / "tables").mkdir(parents=True)
        table.to_csv(Path(run_dir) / "tables" / "table6_overall.csv", index=False)
        return 0

    monkeypatch.setattr(pipeline, "run_all", one_report)
    run = tmp_path / "run"
    assert (
        main(
            ["run-all", "--profile", "smoke", "--data", str(tmp_path / "ck"), "--run-dir", str(run)]
        )
        == 0
    )
    assert ran == [("smoke", "fold_00", "fold_00"), ("smoke", "fold_01", "fold_01")]
    summary = pd.read_csv(run / "tables" / "folds_summary.csv").set_index(["model", "fold"])
    assert summary.loc[("proposed", "mean over 2 folds"), "OA"] == pytest.approx(0.7)
    assert summary.loc[("baseline", "sd over the folds"), "AA"] == pytest.approx(0.1 * 2**0.5)
    assert "folds summary" in capsys.readouterr().out
