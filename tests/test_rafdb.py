import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fer_lib.cli.main import main
from fer_lib.data import rafdb
from tests.conftest import write_tiny_rafdb


def test_reads_a_valid_copy(tiny_rafdb):
    data = rafdb.load_rafdb(tiny_rafdb)
    assert len(data) == 14
    assert data.class_counts("train") == [1] * 7 and data.class_counts("test") == [1] * 7
    assert data.manual5.shape == (14, 5, 2) and data.auto37.shape == (14, 37, 2)
    assert np.isfinite(data.auto37).all()
    assert data.attributes[0].tolist() == [1, 2, 3]
    assert data.labels.min() == 0 and data.labels.max() == 6
    assert data.aligned_path(0).exists() and data.original_path(0).exists()
    assert set(data.split("test").splits) == {"test"}
    assert data.landmarks("both").shape == (14, 42, 2)


def test_a_cached_read_equals_a_fresh_one_until_a_file_changes(tmp_path):
    root = write_tiny_rafdb(tmp_path / "basic")
    fresh = rafdb.load_rafdb(root)
    first = rafdb.load_rafdb(root, cache_dir=tmp_path / "cache")
    (cached,) = (tmp_path / "cache").glob("annotations_*.npz")
    again = rafdb.load_rafdb(root, cache_dir=tmp_path / "cache")
    for read in (first, again):
        for field in dataclasses.fields(rafdb.RafDb):
            a, b = getattr(fresh, field.name), getattr(read, field.name)
            assert np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b, field.name
    replace_line(auto_file(root), 1, "1.5 2.5")  # one point moved: the copy is read again
    moved = rafdb.load_rafdb(root, cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("annotations_*.npz"))) == 2
    index = moved.names.index("train_00003.jpg")
    assert moved.auto37[index, 0].tolist() == [1.5, 2.5] != again.auto37[index, 0].tolist()
    broken = manual_file(root)
    broken.write_text("not a point\n")
    with pytest.raises(rafdb.RafDbError):  # a broken copy is never served from the cache
        rafdb.load_rafdb(root, cache_dir=tmp_path / "cache")
    assert cached.exists()


def test_parent_folder_is_accepted(tiny_rafdb):
    assert rafdb.resolve_root(tiny_rafdb.parent) == tiny_rafdb


@pytest.mark.parametrize("newline,sep", [("\r\n", "\t"), ("\n", " "), ("\r\n", "  ")])
def test_crlf_and_spaces_are_tolerated(tmp_path, newline, sep):
    root = write_tiny_rafdb(tmp_path / "basic", newline=newline, sep=sep)
    reference = write_tiny_rafdb(tmp_path / "ref" / "basic")
    np.testing.assert_allclose(rafdb.load_rafdb(root).auto37, rafdb.load_rafdb(reference).auto37)


def replace_line(path: Path, line_no: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[line_no - 1] = text
    path.write_text("\n".join(lines) + "\n")


def manual_file(root, name="train_00003.jpg"):
    return root / rafdb.MANUAL_DIR / rafdb.manual_name(name)


def auto_file(root, name="train_00003.jpg"):
    return root / rafdb.AUTO_DIR / rafdb.auto_name(name)


def break_bad_number(root):
    replace_line(manual_file(root), 2, "12.5\tabc")
    return f"{manual_file(root)}:2: y = 'abc' is not a finite number"


def break_nan(root):
    replace_line(auto_file(root), 7, "nan 3")
    return f"{auto_file(root)}:7: x = 'nan' is not a finite number"


def break_row_count(root):
    lines = auto_file(root).read_text().splitlines()[:36]
    auto_file(root).write_text("\n".join(lines) + "\n")
    return f"{auto_file(root)}: expected 37 rows of 'x y', found 36"


def break_three_columns(root):
    replace_line(auto_file(root), 4, "1 2 3")
    return f"{auto_file(root)}:4: expected 'x y' (two numbers)"


def break_attribute(root):
    replace_line(manual_file(root), 7, "9")
    return f"{manual_file(root)}:7: race code '9' is not an integer in 0..2"


def break_label_range(root):
    replace_line(root / rafdb.LABEL_FILE, 2, "train_00002.jpg 8")
    return f"{root / rafdb.LABEL_FILE}:2: label 8 is outside 1..7"


def break_label_zero(root):  # 0-based by mistake: as out of range as 8, not a crash in a count
    replace_line(root / rafdb.LABEL_FILE, 2, "train_00002.jpg 0")
    return f"{root / rafdb.LABEL_FILE}:2: label 0 is outside 1..7"


def break_label_negative(root):
    replace_line(root / rafdb.LABEL_FILE, 5, "train_00005.jpg -1")
    return f"{root / rafdb.LABEL_FILE}:5: label -1 is outside 1..7"


def break_label_text(root):
    replace_line(root / rafdb.LABEL_FILE, 3, "train_00003.jpg happy")
    return f"{root / rafdb.LABEL_FILE}:3: label 'happy' is not an integer"


def break_duplicate(root):
    replace_line(root / rafdb.LABEL_FILE, 4, "train_00001.jpg 4")
    return "train_00001.jpg is listed twice (first on line 1)"


def break_missing_image(root):
    path = root / rafdb.ALIGNED_DIR / "test_0002_aligned.jpg"
    path.unlink()
    return f"{path}: listed image missing"


def break_missing_annotation(root):
    auto_file(root, "test_0005.jpg").unlink()
    return f"{auto_file(root, 'test_0005.jpg')}: missing"


def break_jpeg(root):
    path = root / rafdb.ALIGNED_DIR / "train_00006_aligned.jpg"
    path.write_bytes(path.read_bytes()[:200])
    return f"{path}: unreadable image"


def break_garbage_image(root):
    path = root / rafdb.ALIGNED_DIR / "train_00007_aligned.jpg"
    path.write_bytes(b"this is not a jpeg")
    return f"{path}: unreadable image"


BREAKERS = [
    break_bad_number,
    break_nan,
    break_row_count,
    break_three_columns,
    break_attribute,
    break_label_range,
    break_label_zero,
    break_label_negative,
    break_label_text,
    break_duplicate,
    break_missing_image,
    break_missing_annotation,
    break_jpeg,
    break_garbage_image,
]


@pytest.mark.parametrize("breaker", BREAKERS, ids=lambda f: f.__name__)
def test_broken_input_is_named_with_file_and_line(tiny_rafdb, breaker):
    expected = breaker(tiny_rafdb)
    report = rafdb.check_rafdb(tiny_rafdb, progress=False)
    assert not report.ok
    assert any(expected in problem for problem in report.errors), report.errors
    if breaker not in (break_jpeg, break_garbage_image):  # decoding is check-data's job
        with pytest.raises(rafdb.RafDbError, match="problem"):
            rafdb.load_rafdb(tiny_rafdb)


def test_zipped_folder_gets_an_unzip_hint(tiny_rafdb):
    aligned = tiny_rafdb / rafdb.ALIGNED_DIR
    for path in aligned.iterdir():
        path.unlink()
    aligned.rmdir()
    (aligned.parent / "aligned.zip").write_bytes(b"PK")
    with pytest.raises(rafdb.RafDbError, match="unzip"):
        rafdb.load_rafdb(tiny_rafdb)


def test_wrong_folder_is_explained(tmp_path):
    with pytest.raises(rafdb.RafDbError, match="EmoLabel"):
        rafdb.resolve_root(tmp_path)


def test_swapped_eyes_are_warned_about(tiny_rafdb):
    replace_line(manual_file(tiny_rafdb), 1, "200\t50")
    data = rafdb.load_rafdb(tiny_rafdb)
    assert any("left eye" in w for w in data.warnings)


def test_check_data_json_and_exit_status(tiny_rafdb, capsys):
    assert main(["check-data", str(tiny_rafdb), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result == {
        "layout": "RAF-DB",
        "classes": list(rafdb.CLASSES),
        "train": [1] * 7,
        "test": [1] * 7,
        "excluded": {},
        "errors": [],
    }
    for breaker in (break_label_range, break_label_zero):
        expected = breaker(tiny_rafdb)
        assert main(["check-data", str(tiny_rafdb), "--json"]) == 1
        result = json.loads(capsys.readouterr().out)
        assert result["errors"] == [expected] and sum(result["train"]) == 6


def test_check_data_table_names_paper_counts(tiny_rafdb):
    out = subprocess.run(
        [sys.executable, "-m", "fer_lib", "check-data", str(tiny_rafdb.parent)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    paper = rafdb.paper_results()["table3_class_counts"]
    rows = {line.split()[0]: line.split()[1:] for line in out.stdout.splitlines() if line.strip()}
    assert rows["Happiness"] == ["1", str(paper["train"][3]), "1", str(paper["test"][3])]
    assert "OK" in out.stdout


# --------------------------------------------------------------------------------------------------
# Writing the layout, soft labels and the check's table, against text written out by hand


def test_a_sample_is_written_in_rafdbs_annotation_format_and_reads_back(tmp_path):
    rafdb.make_layout_dirs(tmp_path)
    rafdb.make_layout_dirs(tmp_path)  # again: the folders exist already
    for folder in (
        "EmoLabel",
        "Image/original",
        "Image/aligned",
        "Annotation/manual",
        "Annotation/auto",
        "Annotation/boundingbox",
    ):
        assert (tmp_path / folder).is_dir(), folder
    manual5 = np.array([[10.123, 20.456], [30.0, 21.5], [25.25, 30.0], [12.0, 40.0], [31.0, 41.0]])
    auto37 = np.arange(74, dtype=float).reshape(37, 2) + 0.5
    rafdb.write_annotations(
        tmp_path, "train_00042.jpg", manual5, (1, 0, 4), auto37, (1.5, 2.25, 30, 40.126)
    )
    manual = tmp_path / "Annotation/manual/train_00042_manu_attri.txt"
    assert manual.read_text() == (
        "10.12\t20.46\n30.00\t21.50\n25.25\t30.00\n12.00\t40.00\n31.00\t41.00\n1\n0\n4\n"
    )
    auto = tmp_path / "Annotation/auto/train_00042_auto_attri.txt"
    assert auto.read_text().splitlines()[:2] == ["0.50\t1.50", "2.50\t3.50"]
    assert len(auto.read_text().splitlines()) == 37
    box = tmp_path / "Annotation/boundingbox/train_00042_boundingbox.txt"
    assert box.read_text() == "1.50 2.25 30.00 40.13\n"
    problems = []
    points, attributes = rafdb.parse_manual_file(manual, problems)
    np.testing.assert_allclose(points, manual5, atol=0.005)
    assert attributes.tolist() == [1, 0, 4] and problems == []
    np.testing.assert_array_equal(rafdb.parse_auto_file(auto, problems), auto37)


def _soft_labels(tmp_path, rows, header="name,A,B,C"):
    path = tmp_path / "soft_labels.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_soft_labels_are_read_in_the_listed_order_and_normalised(tmp_path):
    path = _soft_labels(tmp_path, ["b.jpg,0.1,0.2,0.704", "a.jpg,0.5,0.3,0.2"])
    problems = []
    soft = rafdb.read_soft_labels(
        path, ["a.jpg", "b.jpg"], np.array([0, 2]), ("A", "B", "C"), problems
    )
    assert problems == []
    # by hand: b's shares sum to 1.004 (within 1e-2 of 1), divided by it
    np.testing.assert_allclose(soft, [[0.5, 0.3, 0.2], [0.1 / 1.004, 0.2 / 1.004, 0.704 / 1.004]])


@pytest.mark.parametrize(
    "row",
    [
        "b.jpg,0.1,0.2",  # too few shares
        "b.jpg,0.1,0.2,0.7,0.0",  # too many
        "b.jpg,0.1,abc,0.9",  # not a number
        "b.jpg,0.1,nan,0.9",  # not finite
        "b.jpg,-0.1,0.4,0.7",  # negative (sums to 1)
        "b.jpg,0.1,0.2,0.72",  # sums to 1.02
        "b.jpg,0.1,0.6,0.3",  # largest share not the label (C)
        "c.jpg,0.1,0.2,0.7",  # not a listed image
        "",  # an empty row
    ],
)
def test_a_soft_label_row_that_is_not_a_distribution_over_its_label_is_named(tmp_path, row):
    path = _soft_labels(tmp_path, ["a.jpg,0.5,0.3,0.2", row])
    problems = []
    names, labels = ["a.jpg", "b.jpg"], np.array([0, 2])
    assert rafdb.read_soft_labels(path, names, labels, ("A", "B", "C"), problems) is None
    assert problems == [
        f"{path}:3: not a listed image with 3 shares summing to 1 whose largest is its label; "
        "convert the data set again"
    ]


def test_soft_labels_need_the_copys_classes_and_a_row_for_every_image(tmp_path):
    problems = []
    path = _soft_labels(tmp_path, ["a.jpg,0.5,0.3,0.2"], header="name,A,C,B")
    assert rafdb.read_soft_labels(path, ["a.jpg"], np.array([0]), ("A", "B", "C"), problems) is None
    assert problems == [
        f"{path}:1: header must be name,A,B,C (the copy's classes); convert the data set again"
    ]
    problems.clear()
    path = _soft_labels(tmp_path, ["a.jpg,0.5,0.3,0.2"])
    names = ["a.jpg", "b.jpg", "c.jpg"]
    assert (
        rafdb.read_soft_labels(path, names, np.array([0, 1, 2]), ("A", "B", "C"), problems) is None
    )
    assert problems == [
        f"{path}: no soft label for 2 listed image(s), e.g. b.jpg; convert the data set again"
    ]
    # a share of 0 is a share
    problems.clear()
    path = _soft_labels(tmp_path, ["a.jpg,0.7,0.3,0"])
    assert (
        rafdb.read_soft_labels(path, ["a.jpg"], np.array([0]), ("A", "B", "C"), problems)
        is not None
    )
    assert problems == []
    # a tolerance of 1e-2 on the sum: 1.009 is read
    problems.clear()
    path = _soft_labels(tmp_path, ["a.jpg,0.509,0.3,0.2"])
    assert (
        rafdb.read_soft_labels(path, ["a.jpg"], np.array([0]), ("A", "B", "C"), problems)
        is not None
    )
    assert problems == []


def test_the_check_table_sets_rafdbs_counts_beside_the_papers_table_3(tiny_rafdb):
    report = rafdb.CheckReport(tiny_rafdb, [1, 2, 3, 4, 5, 6, 7], [7, 6, 5, 4, 3, 2, 1], [], [])
    assert report.table() == "\n".join(
        [
            "class        train   paper    test   paper",
            "Surprise         1    1290       7     329",
            "Fear             2     281       6      74",
            "Disgust          3     717       5     160",
            "Happiness        4    4772       4    1185",
            "Sadness          5    1982       3     478",
            "Anger            6     705       2     162",
            "Neutral          7    2524       1     680",
            "total           28   12271      28    3068",
            "labels read from EmoLabel/list_patition_label.txt",
        ]
    )


def test_the_check_table_of_a_converted_copy_lists_its_classes_exclusions_and_protocol(tmp_path):
    report = rafdb.CheckReport(
        tmp_path,
        [3, 12],
        [1, 4],
        [],
        [],
        classes=("Happiness", "A much longer name"),
        layout="FERPlus, converted to RAF-DB's layout",
        excluded={"no majority": 5, "unknown": 2},
        notes=["majority vote of 10 annotators"],
    )
    assert report.table() == "\n".join(
        [
            "class                train    test",
            "Happiness                3       1",
            "A much longer name      12       4",
            "total                   15       5",
            "excluded: 5 row(s): no majority",
            "excluded: 2 row(s): unknown",
            "majority vote of 10 annotators",
        ]
    )
    short = dataclasses.replace(report, classes=("a", "b"), excluded={}, notes=[])
    assert short.table().splitlines()[0] == "class        train    test"  # at least 10 wide
    assert dataclasses.replace(report, layout="RAF-DB").table() == report.table()  # not 7 classes
    seven = rafdb.CheckReport(tmp_path, [1] * 7, [1] * 7, [], [], layout="AffectNet, converted")
    assert "paper" not in seven.table()  # RAF-DB's classes, but not RAF-DB: no Table 3 beside it


def test_a_subset_keeps_every_field_of_the_samples_it_names(tiny_rafdb):
    data = rafdb.load_rafdb(tiny_rafdb)
    data.warnings = ["a warning"]
    data.soft = np.arange(14 * 7, dtype=float).reshape(14, 7)
    data.classes = rafdb.CLASSES_8  # not the default
    index = np.array([9, 2])
    part = data.subset(index)
    assert part.root == tiny_rafdb and part.names == [data.names[9], data.names[2]]
    for name in ("splits", "labels", "manual5", "attributes", "auto37", "soft"):
        np.testing.assert_array_equal(getattr(part, name), getattr(data, name)[index], err_msg=name)
    assert part.warnings == ["a warning"] and part.classes == rafdb.CLASSES_8
    assert data.split("train").names == [n for n in data.names if n.startswith("train_")]
    with pytest.raises(ValueError, match=r"^split 'val' is not one of \('train', 'test'\)$"):
        data.split("val")


def test_the_landmark_sets_are_the_automatic_the_manual_or_both_points(tiny_rafdb):
    data = rafdb.load_rafdb(tiny_rafdb)
    assert data.landmarks() is data.auto37 and data.landmarks("auto37") is data.auto37
    assert data.landmarks("manual5") is data.manual5
    both = data.landmarks("both")
    np.testing.assert_array_equal(both[:, :37], data.auto37)
    np.testing.assert_array_equal(both[:, 37:], data.manual5)
    message = r"^landmark set 'ibug68' is not one of \('auto37', 'manual5', 'both'\)$"
    with pytest.raises(ValueError, match=message):
        data.landmarks("ibug68")


def test_a_missing_folder_is_named_with_what_basic_must_hold(tiny_rafdb):
    folder = tiny_rafdb / rafdb.AUTO_DIR
    for path in folder.iterdir():
        path.unlink()
    folder.rmdir()
    with pytest.raises(rafdb.RafDbError) as error:
        rafdb.load_rafdb(tiny_rafdb, cache_dir=tiny_rafdb.parent / "cache")
    assert error.value.problems == [
        f"{tiny_rafdb}/Annotation/auto: missing. RAF-DB's basic/ must hold Annotation/auto/."
    ]
    (tiny_rafdb / "Annotation" / "auto.zip").write_bytes(b"PK")
    assert rafdb.check_rafdb(tiny_rafdb, progress=False).errors == [
        f"{tiny_rafdb}/Annotation/auto: missing, but {tiny_rafdb}/Annotation/auto.zip exists: "
        f"unzip it in place (`cd {tiny_rafdb}/Annotation && unzip auto.zip`)."
    ]


def test_the_annotation_cache_follows_the_root_files_and_the_original_images_when_required(
    tmp_path,
):
    root = write_tiny_rafdb(tmp_path / "basic")
    cache = tmp_path / "deeper" / "cache"  # made with its parents
    rafdb.load_rafdb(root, cache_dir=cache)
    rafdb.load_rafdb(root, require_original=True, cache_dir=cache)
    assert len(list(cache.glob("annotations_*.npz"))) == 2
    # an original image gone: the read that requires them is redone (and fails), not the other
    (root / rafdb.ORIGINAL_DIR / "test_0003.jpg").unlink()
    rafdb.load_rafdb(root, cache_dir=cache)
    assert len(list(cache.glob("annotations_*.npz"))) == 2
    with pytest.raises(rafdb.RafDbError, match="test_0003.jpg: listed image missing"):
        rafdb.load_rafdb(root, require_original=True, cache_dir=cache)
    # a file at the root (here soft labels, read with the copy) changes the key; soft labels are
    # kept in the cache
    names = rafdb.load_rafdb(root).names
    labels = rafdb.load_rafdb(root).labels
    soft = np.full((len(names), 7), 0.05)
    soft[np.arange(len(names)), labels] = 0.7
    rows = [",".join([name, *(f"{v:g}" for v in row)]) for name, row in zip(names, soft)]
    (root / rafdb.SOFT_LABELS_FILE).write_text(
        "\n".join([",".join(["name", *rafdb.CLASSES]), *rows]) + "\n"
    )
    first = rafdb.load_rafdb(root, cache_dir=cache)
    again = rafdb.load_rafdb(root, cache_dir=cache)
    assert len(list(cache.glob("annotations_*.npz"))) == 3
    np.testing.assert_allclose(first.soft, soft)
    np.testing.assert_array_equal(again.soft, first.soft)


def test_the_error_lists_twenty_problems_and_counts_the_rest():
    one = rafdb.RafDbError(["a: broken"], Path("/data/basic"))
    assert str(one) == (
        "1 problem(s) with the RAF-DB copy in /data/basic:\n  a: broken\n"
        "Run `python -m fer_lib check-data ROOT` for the full list."
    )
    many = rafdb.RafDbError([f"p{i}" for i in range(22)])
    shown = "\n  ".join(f"p{i}" for i in range(20))
    assert str(many) == (
        f"22 problem(s) with the RAF-DB copy:\n  {shown}\n  ... and 2 more\n"
        "Run `python -m fer_lib check-data ROOT` for the full list."
    )
    assert many.problems == [f"p{i}" for i in range(22)]
    exactly = rafdb.RafDbError([f"p{i}" for i in range(20)])
    assert "more" not in str(exactly) and "p19" in str(exactly)
    assert "\n  ... and 1 more\n" in str(rafdb.RafDbError([f"p{i}" for i in range(21)]))


def test_the_check_reports_a_converted_copys_layout_classes_exclusions_and_protocol(tiny_rafdb):
    plain = rafdb.check_rafdb(tiny_rafdb, decode_images=False, progress=False)
    assert plain.layout == "RAF-DB" and plain.excluded == {} and plain.notes == []
    info = {
        "classes": list(rafdb.CLASSES),
        "layout": "AffectNet",
        "excluded": {"no face": 3},
        "protocol": ["the validation set is the test set"],
    }
    (tiny_rafdb / rafdb.CLASSES_FILE).write_text(json.dumps(info))
    report = rafdb.check_rafdb(tiny_rafdb, decode_images=False, progress=False)
    assert report.layout == "AffectNet, converted to RAF-DB's layout"
    assert report.classes == rafdb.CLASSES and report.ok
    assert report.excluded == {"no face": 3}
    assert report.notes == ["the validation set is the test set"]
    assert report.train == [1] * 7 and report.test == [1] * 7
    (tiny_rafdb / rafdb.CLASSES_FILE).write_text(json.dumps({"classes": ["only one"]}))
    broken = rafdb.check_rafdb(tiny_rafdb, progress=False)
    assert broken.root == tiny_rafdb and broken.train == [0] * 7 and broken.test == [0] * 7
    assert broken.warnings == [] and len(broken.errors) == 1
    assert "'classes' must be a list of two or more distinct class names" in broken.errors[0]


def test_the_check_requires_the_original_images_and_names_a_decoding_error(tiny_rafdb):
    (tiny_rafdb / rafdb.ORIGINAL_DIR / "train_00004.jpg").unlink()
    (tiny_rafdb / rafdb.ALIGNED_DIR / "test_0001_aligned.jpg").write_bytes(b"not a jpeg")
    report = rafdb.check_rafdb(tiny_rafdb, progress=False)
    original = tiny_rafdb / rafdb.ORIGINAL_DIR / "train_00004.jpg"
    assert f"{original}: listed image missing" in report.errors
    (decoding,) = [e for e in report.errors if "unreadable" in e]
    aligned = tiny_rafdb / rafdb.ALIGNED_DIR / "test_0001_aligned.jpg"
    assert decoding.startswith(f"{aligned}: unreadable image (UnidentifiedImageError: ")
    assert rafdb.load_rafdb(tiny_rafdb).names  # load_rafdb needs neither


def test_a_copy_without_its_label_file_is_checked_as_read_nothing_in_its_own_classes(tiny_rafdb):
    info = {"classes": list(rafdb.CLASSES_8), "layout": "FERPlus", "protocol": ["majority"]}
    (tiny_rafdb / rafdb.CLASSES_FILE).write_text(json.dumps(info))
    (tiny_rafdb / rafdb.LABEL_FILE).unlink()
    report = rafdb.check_rafdb(tiny_rafdb, progress=False)
    assert report.root == tiny_rafdb and report.read_nothing and not report.ok
    assert report.train == [0] * 8 and report.test == [0] * 8 and report.warnings == []
    assert report.errors == [
        f"{tiny_rafdb / rafdb.LABEL_FILE}: missing. It lists every image and its label; restore "
        "it from RAF-DB's EmoLabel/."
    ]
    assert report.layout == "FERPlus, converted to RAF-DB's layout" and report.notes == ["majority"]
    assert report.classes == rafdb.CLASSES_8


def test_class_counts_cover_every_class_of_the_copy_in_either_split_or_both(tiny_rafdb):
    data = rafdb.load_rafdb(tiny_rafdb)
    assert data.class_counts() == [2] * 7
    no_neutral = data.subset(np.flatnonzero(data.labels != 6))
    assert no_neutral.class_counts() == [2, 2, 2, 2, 2, 2, 0]
    assert no_neutral.class_counts("test") == [1, 1, 1, 1, 1, 1, 0]


def test_a_refused_copy_is_named_in_the_error_and_a_checked_one_in_the_report(tiny_rafdb):
    replace_line(manual_file(tiny_rafdb), 1, "200\t50")  # swapped eyes: a warning, not an error
    report = rafdb.check_rafdb(tiny_rafdb, progress=False)
    assert report.root == tiny_rafdb and report.ok
    assert report.warnings == [
        f"{manual_file(tiny_rafdb)}: 'left eye' (row 1) lies right of 'right eye' (row 2); "
        "alignment follows the file's order"
    ]
    break_label_text(tiny_rafdb)
    with pytest.raises(rafdb.RafDbError) as error:
        rafdb.load_rafdb(tiny_rafdb)
    assert str(error.value).startswith(f"1 problem(s) with the RAF-DB copy in {tiny_rafdb}:\n")


def test_the_split_is_the_names_prefix_before_its_first_underscore():
    assert (
        rafdb.split_of("train_00001.jpg") == "train" and rafdb.split_of("test_0001.jpg") == "test"
    )
    assert rafdb.split_of("train_face_01.jpg") == "train"
    assert rafdb.split_of("val_0001.jpg") is None and rafdb.split_of("train.jpg") is None


@pytest.mark.parametrize(
    "text,problem",
    [
        ("{not json", "not readable JSON"),
        ('["Happiness", "Sadness"]', "'classes' must be a list"),  # not an object
        ('{"classes": ["Happiness"]}', "'classes' must be a list"),  # one class
        ('{"classes": ["A", "B", "A"]}', "'classes' must be a list"),  # twice the same
        ('{"classes": ["A", ""]}', "'classes' must be a list"),  # an empty name
        ('{"classes": ["A", 2]}', "'classes' must be a list"),  # not a name
    ],
)
def test_a_class_list_that_cannot_name_the_labels_is_refused(tmp_path, text, problem):
    (tmp_path / rafdb.CLASSES_FILE).write_text(text)
    with pytest.raises(rafdb.RafDbError) as error:
        rafdb.read_classes(tmp_path)
    (message,) = error.value.problems
    assert message.startswith(f"{tmp_path / rafdb.CLASSES_FILE}: {problem}")
    assert message.endswith(
        "Convert the data set again, or delete the file if this is RAF-DB itself."
        if problem == "not readable JSON"
        else "Convert the data set again."
    )


def test_two_distinct_classes_are_a_class_list_and_no_file_is_rafdb_itself(tmp_path):
    assert rafdb.read_classes(tmp_path) == (rafdb.CLASSES, {"layout": "RAF-DB"})
    info = {"classes": ["Calm", "Élan"], "layout": "mine"}
    (tmp_path / rafdb.CLASSES_FILE).write_text(json.dumps(info, ensure_ascii=False), "utf-8")
    assert rafdb.read_classes(tmp_path) == (("Calm", "Élan"), info)


def test_every_bad_line_of_the_label_file_is_named_not_only_the_first(tmp_path):
    path = tmp_path / "labels.txt"
    lines = [
        "train_00001.jpg",  # 1: one field
        "train_00002.png 3",  # 2: not a .jpg
        "val_00003.jpg 3",  # 3: not a split
        "train_00004.jpg x",  # 4: not an integer
        "train_00005.jpg 9",  # 5: out of range
        "train_00006.jpg 2",  # 6: fine
        "train_00006.jpg 2",  # 7: twice
        "train_00007.jpg 1 2",  # 8: three fields
        "train_00008.jpg 8",  # 9: fine with 8 classes
    ]
    path.write_text("\n".join(lines) + "\n")
    names, labels, problems = rafdb.read_label_file(path, num_classes=8)
    assert names == ["train_00006.jpg", "train_00008.jpg"] and labels == [1, 7]
    form = "is not of the form train_NNNNN.jpg or test_NNNN.jpg"
    assert problems == [
        f"{path}:1: expected '<image name> <label>', got 'train_00001.jpg'",
        f"{path}:2: image name 'train_00002.png' {form}",
        f"{path}:3: image name 'val_00003.jpg' {form}",
        f"{path}:4: label 'x' is not an integer",
        f"{path}:5: label 9 is outside 1..8",
        f"{path}:7: train_00006.jpg is listed twice (first on line 6)",
        f"{path}:8: expected '<image name> <label>', got 'train_00007.jpg 1 2'",
    ]
    path.write_text("\n\n")
    assert rafdb.read_label_file(path) == ([], [], [f"{path}: lists no image"])
    path.write_text("train_00001.jpg 1\n\ntrain_00002.jpg 2\n")  # a blank line is skipped
    assert rafdb.read_label_file(path) == (["train_00001.jpg", "train_00002.jpg"], [0, 1], [])
    path.write_text("train_00001.jpg 0\n")  # refused, and not also "lists no image"
    assert rafdb.read_label_file(path)[2] == [f"{path}:1: label 0 is outside 1..7"]


def test_an_eight_class_copy_without_original_images_loads(tiny_rafdb):
    (tiny_rafdb / rafdb.CLASSES_FILE).write_text(json.dumps({"classes": list(rafdb.CLASSES_8)}))
    replace_line(tiny_rafdb / rafdb.LABEL_FILE, 2, "train_00002.jpg 8")
    for path in (tiny_rafdb / rafdb.ORIGINAL_DIR).iterdir():
        path.unlink()
    (tiny_rafdb / rafdb.ORIGINAL_DIR).rmdir()
    data = rafdb.load_rafdb(tiny_rafdb)
    assert data.labels[data.names.index("train_00002.jpg")] == 7
    assert data.class_counts("train") == [1, 0, 1, 1, 1, 1, 1, 1]
    assert data.classes == rafdb.CLASSES_8
    # a class list without a layout: RAF-DB's layout
    assert rafdb.check_rafdb(tiny_rafdb, decode_images=False, progress=False).layout == "RAF-DB"


@pytest.mark.parametrize(
    "left,right,warned",
    [("60\t50", "58\t70", True), ("58\t50", "58\t70", False), ("40\t50", "58\t70", False)],
)
def test_the_eyes_are_warned_about_when_the_left_lies_right_of_the_right(
    tiny_rafdb, left, right, warned
):
    replace_line(manual_file(tiny_rafdb), 1, left)
    replace_line(manual_file(tiny_rafdb), 2, right)
    assert bool(rafdb.load_rafdb(tiny_rafdb).warnings) == warned


def test_a_broken_soft_label_file_refuses_the_copy(tiny_rafdb):
    (tiny_rafdb / rafdb.SOFT_LABELS_FILE).write_text("name,A\ntrain_00001.jpg,1\n")
    with pytest.raises(rafdb.RafDbError) as error:
        rafdb.load_rafdb(tiny_rafdb)
    (problem,) = error.value.problems
    assert problem.startswith(f"{tiny_rafdb / rafdb.SOFT_LABELS_FILE}:1: header must be name,")


def test_a_wrong_or_missing_root_is_explained_in_full(tmp_path):
    with pytest.raises(rafdb.RafDbError) as error:
        rafdb.resolve_root(tmp_path / "nowhere")
    assert error.value.problems == [
        f"{tmp_path / 'nowhere'}: no such folder. Pass RAF-DB's basic/ folder (or its parent)."
    ]
    with pytest.raises(rafdb.RafDbError) as error:
        rafdb.resolve_root(tmp_path)
    assert error.value.problems == [
        f"{tmp_path}: neither it nor {tmp_path / 'basic'} holds EmoLabel/. Pass RAF-DB's basic/ "
        "folder, the one holding EmoLabel/, Image/ and Annotation/; a folder of class folders of "
        f"photos becomes one with `python -m fer_lib import-images {tmp_path} OUT`."
    ]


def test_every_bad_row_of_an_annotation_file_is_named_and_nothing_is_returned(tmp_path):
    path = tmp_path / "x_auto_attri.txt"
    rows = [f"{i}.5\t{i}.25" for i in range(37)]
    rows[3], rows[30] = "1 2 3", "4.0\tinf"
    path.write_text("\n".join(rows) + "\n")
    problems = []
    assert rafdb.parse_auto_file(path, problems) is None
    assert problems == [
        f"{path}:4: expected 'x y' (two numbers), got '1 2 3'",
        f"{path}:31: y = 'inf' is not a finite number",
    ]
    for bad in ("1 2 3", "4.0\tinf"):  # each alone
        path.write_text("\n".join([*rows[:3], bad, *rows[4:30], rows[0], *rows[31:]]) + "\n")
        problems.clear()
        assert rafdb.parse_auto_file(path, problems) is None and len(problems) == 1
    problems.clear()
    assert rafdb.parse_auto_file(tmp_path / "z_auto_attri.txt", problems) is None
    assert problems == [
        f"{tmp_path / 'z_auto_attri.txt'}: missing (the automatic landmarks of this listed image)"
    ]
    path.write_bytes(b"\xff\xfe1 2\n")
    problems.clear()
    assert rafdb.parse_auto_file(path, problems) is None
    assert problems == [f"{path}: not a text file (bad encoding)"]
    problems.clear()
    assert rafdb.parse_manual_file(tmp_path / "y_manu_attri.txt", problems) is None
    assert problems == [
        f"{tmp_path / 'y_manu_attri.txt'}: missing (the manual annotation of this listed image)"
    ]


def test_the_label_file_may_be_spelt_as_rafdbs_readme_spells_it(tiny_rafdb):
    other = tiny_rafdb / rafdb.LABEL_FILE_OTHER_SPELLING
    assert rafdb.label_file(tiny_rafdb) == tiny_rafdb / rafdb.LABEL_FILE
    other.write_text("train_00001.jpg 1\n")  # both: the file as shipped is read
    assert rafdb.label_file(tiny_rafdb) == tiny_rafdb / rafdb.LABEL_FILE
    (tiny_rafdb / rafdb.LABEL_FILE).rename(other)
    assert rafdb.label_file(tiny_rafdb) == other
    assert len(rafdb.load_rafdb(tiny_rafdb)) == 14


@pytest.mark.parametrize(
    "row,text,accepted",
    [
        (6, "2", True),  # gender 0..2
        (6, "3", False),
        (8, "4", True),  # age 0..4
        (8, "5", False),
        (7, "-1", True),  # unknown
        (7, "-2", False),
        (7, "x", False),  # not an integer: refused, not read as unknown
        (7, "", False),
    ],
)
def test_an_attribute_code_is_an_integer_in_its_range_or_minus_one(tmp_path, row, text, accepted):
    rows = [f"{10 * i}.0\t{5 * i}.0" for i in range(5)] + ["1", "2", "3"]
    rows[row - 1] = text
    path = tmp_path / "x_manu_attri.txt"
    path.write_text("\n".join(rows) + "\n")
    problems = []
    read = rafdb.parse_manual_file(path, problems)
    assert (read is not None) == accepted and (problems == []) == accepted
    if accepted:
        assert read[1][row - 6] == int(text)
    else:
        name = rafdb.ATTRIBUTE_NAMES[row - 6]
        top = rafdb.ATTRIBUTE_RANGES[name] - 1
        assert problems == [
            f"{path}:{row}: {name} code {text!r} is not an integer in 0..{top} (or -1, unknown)"
        ]


def test_an_empty_soft_label_file_is_named_not_a_crash(tmp_path):
    path = tmp_path / "soft_labels.csv"
    path.write_text("")
    problems = []
    assert rafdb.read_soft_labels(path, ["a.jpg"], np.array([0]), ("A", "B"), problems) is None
    assert problems == [
        f"{path}:1: header must be name,A,B (the copy's classes); convert the data set again"
    ]
