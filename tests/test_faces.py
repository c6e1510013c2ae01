"""Faces on real pixels (scikit-image's astronaut photo): dlib's detection and 68 points, the 5
points derived from them, the project's alignment, and import-images end to end through check-data,
bad inputs included."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fer_lib.cli.main import main
from fer_lib.data import landmarks, rafdb
from fer_lib.data.landmarks import similarity_from_points

dlib = pytest.importorskip("dlib", reason="dlib-bin is a dependency: ./run_all.sh test installs it")
faces = pytest.importorskip("fer_lib.data.faces")


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.astronaut())


@pytest.fixture(scope="module")
def face(astronaut):
    found = faces.detect_faces(astronaut)
    assert found, "dlib found no face on the astronaut photo"
    return found[0]


def test_a_weak_false_detection_is_not_taken_for_the_largest_face(tmp_path, astronaut):
    # as JPEG the mission patch is detected too, weakly, and larger
    astronaut.save(tmp_path / "a.jpg", quality=75)
    photo = faces.load_photo(tmp_path / "a.jpg")
    assert len(faces.detect_faces(photo, min_score=0.0)) == 2
    kept = faces.detect_faces(photo)
    assert len(kept) == 1 and kept[0].box[3] < 200 and kept[0].score > 1


def test_the_largest_face_is_found_with_its_five_points_in_place(face):
    x1, y1, x2, y2 = face.box
    assert 150 < x1 < x2 < 300 and 50 < y1 < y2 < 200  # Eileen Collins' face in the 512x512 photo
    left_eye, right_eye, nose, left_mouth, right_mouth = face.manual5
    assert left_eye[0] < right_eye[0] and left_mouth[0] < right_mouth[0]  # image left = smaller x
    # eyes above the mouth
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(left_mouth[1], right_mouth[1])
    for x, y in face.manual5:
        assert x1 <= x <= x2 and y1 <= y <= y2
    assert face.auto37.shape == (37, 2)


def test_the_aligned_crop_puts_the_eyes_within_two_pixels_of_their_targets(astronaut, face):
    crop = faces.align(astronaut, face)
    assert crop.size == (landmarks.ALIGNED_SIZE, landmarks.ALIGNED_SIZE)
    # what the crop was warped with
    matrix = similarity_from_points(
        landmarks.alignment_anchors(face.manual5), landmarks.ALIGN_TARGETS
    )
    eyes = landmarks.apply_affine(matrix, face.manual5[:2])
    assert np.abs(eyes - np.array([[25.0, 35.0], [75.0, 35.0]])).max() < 2.0
    redetected = faces.detect_faces(crop)  # a face is still there, where the crop says
    assert redetected and np.abs(redetected[0].manual5[:2] - eyes).max() < 5.0


def _photo_set(root, astronaut):
    """A tiny class-folder set: two RGB JPEGs, grayscale, RGBA, 16-bit, EXIF-rotated, no face,
    unreadable, unknown class."""
    for folder in ("Happy", "sad", "ANGRY", "neutral", "surprised", "fearful", "bored"):
        (root / folder).mkdir(parents=True)
    astronaut.save(root / "Happy" / "a.jpg", quality=92)
    astronaut.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(root / "Happy" / "b.jpg", quality=92)
    astronaut.convert("L").save(root / "sad" / "gray.png")
    rgba = astronaut.convert("RGBA")
    rgba.putalpha(200)
    rgba.save(root / "ANGRY" / "rgba.png")
    sixteen = np.asarray(astronaut.convert("L"), dtype=np.uint16) * 257
    Image.fromarray(sixteen).save(root / "sad" / "sixteen.png")  # uint16: a 16-bit PNG
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": the pixels are stored rotated the other way
    astronaut.rotate(90, expand=True).save(root / "neutral" / "rotated.jpg", exif=exif, quality=92)
    Image.new("RGB", (120, 90), (90, 140, 200)).save(root / "surprised" / "sky.png")
    (root / "fearful" / "broken.jpg").write_bytes(b"not a jpeg at all")
    astronaut.save(root / "bored" / "c.jpg")


def test_a_class_folder_set_imports_into_rafdb_layout_and_passes_check_data(tmp_path, astronaut):
    src, out = tmp_path / "photos", tmp_path / "imported"
    _photo_set(src, astronaut)
    counts = faces.import_images(src, out, test_fraction=0.5, seed=0, workers=1, progress=False)
    assert counts["photos"] == 9 and counts["imported"] == 6 and counts["not imported"] == 3
    report = pd.read_csv(out / "import_report.csv").set_index("status")
    assert {"unknown class", "no face", "unreadable"} <= set(report.index)
    assert (
        "bored" in report.loc["unknown class", "reason"]
        and "sky.png" in report.loc["no face", "image"]
    )
    check = rafdb.check_rafdb(out, progress=False)
    assert check.ok, check.errors
    # Happy's two photos: one held out
    assert sum(check.train) + sum(check.test) == 6 and sum(check.test) >= 1
    assert len(rafdb.load_rafdb(out)) == 6


def test_the_label_file_s_other_spelling_is_read_and_named(tmp_path, astronaut):
    src, out = tmp_path / "photos", tmp_path / "imported"
    (src / "happy").mkdir(parents=True)
    astronaut.save(src / "happy" / "a.jpg")
    faces.import_images(src, out, workers=1, progress=False)
    (out / rafdb.LABEL_FILE).rename(out / rafdb.LABEL_FILE_OTHER_SPELLING)
    check = rafdb.check_rafdb(out, progress=False)
    assert check.ok and "list_partition_label.txt" in check.table()


def test_bad_inputs_are_refused_in_one_line(tmp_path, astronaut, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["import-images", str(tmp_path / "nowhere"), str(tmp_path / "out")])
    assert exit_info.value.code == 2 and "no such file or folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["import-images", str(tmp_path / "empty"), str(tmp_path / "out")]) == 1
    assert "no class folders" in capsys.readouterr().err
    (tmp_path / "list.csv").write_text("path,label\nmissing.jpg\n")
    assert main(["import-images", str(tmp_path / "list.csv"), str(tmp_path / "out2")]) == 1
    assert "list.csv:2" in capsys.readouterr().err
    (tmp_path / "src" / "happy").mkdir(parents=True)
    astronaut.save(tmp_path / "src" / "happy" / "a.jpg")
    assert (
        main(["import-images", str(tmp_path / "src"), str(tmp_path / "done"), "--workers", "1"])
        == 0
    )
    assert (
        main(["import-images", str(tmp_path / "src"), str(tmp_path / "done"), "--workers", "1"])
        == 1
    )
    assert "already holds a data set" in capsys.readouterr().err
