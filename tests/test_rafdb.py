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
