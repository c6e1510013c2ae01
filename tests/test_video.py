"""Videos: every k-th frame's faces followed under a stable id, one row per face and frame (a frame
without a face says so), written as it goes so that a broken video keeps what was read."""

from __future__ import annotations

import av
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fer_lib.apps.video import POINT_NAMES, FaceTracker, columns, predict_video
from fer_lib.cli.main import main
from tests.test_export import small_fusion

FACELESS = (3, 4)  # frames of the test video without a face


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """8 frames at 5 fps, 320 x 256: a real face (scikit-image's astronaut) moving right 4 px per
    frame, and two grey frames without it."""
    from skimage import data as samples

    face = Image.fromarray(samples.astronaut()).resize((256, 256))
    path = tmp_path_factory.mktemp("video") / "clip.avi"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=5)
        stream.width, stream.height, stream.pix_fmt = 320, 256, "yuv420p"
        for k in range(8):
            canvas = Image.new("RGB", (320, 256), (90, 90, 90))
            if k not in FACELESS:
                canvas.paste(face, (4 * k, 0))
            container.mux(stream.encode(av.VideoFrame.from_image(canvas)))
        container.mux(stream.encode())
    return path


def test_a_face_keeps_its_id_while_it_moves_and_a_new_face_gets_the_next():
    tracker = FaceTracker()
    assert tracker.assign([(0, 0, 10, 10)]) == [0]
    # the known face moved a little, listed second; a new face far away first
    assert tracker.assign([(50, 50, 60, 60), (1, 0, 11, 10)]) == [1, 0]
    assert tracker.assign([]) == []
    # after a frame without faces, each continues from its last box
    assert tracker.assign([(2, 0, 12, 10), (51, 50, 61, 60)]) == [0, 1]
    assert tracker.assign([(200, 200, 210, 210)]) == [2]


def test_the_columns_use_py_feat_names_for_the_box_and_the_fused_emotions():
    names = columns(("Surprise", "Happiness"), ["rgb", "landmark", "fused"])
    assert names[:10] == [
        *("input", "frame", "time", "face", "status"),
        *("FaceRectX", "FaceRectY", "FaceRectWidth", "FaceRectHeight", "FaceScore"),
    ]
    assert [f"x_{POINT_NAMES[0]}", f"y_{POINT_NAMES[0]}"] == names[10:12]
    assert {"surprise", "happiness", "rgb_surprise", "landmark_happiness"} <= set(names)
    assert names[-1] == "prediction"


def test_every_frame_is_a_row_and_the_moving_face_keeps_one_id(clip, tmp_path):
    pytest.importorskip("dlib", reason="dlib-bin is a dependency: ./run_all.sh test installs it")
    model, config = small_fusion()
    frames = predict_video(clip, model.baseline, model, config, tmp_path, progress=False)
    assert frames["frame"].tolist() == list(range(8))
    assert np.allclose(frames["time"], np.arange(8) / 5)
    assert frames.loc[list(FACELESS), "status"].tolist() == ["no face", "no face"]
    found = frames[frames["status"] == "predicted"]
    assert found["face"].tolist() == [0] * 6
    # the box follows the face: 4 px per frame, within the detector's jitter
    assert np.polyfit(found["frame"], found["FaceRectX"], 1)[0] == pytest.approx(4, abs=1.5)
    for prefix in ("", "rgb_", "landmark_"):
        heads = found[[f"{prefix}{c.lower()}" for c in model.baseline.classes]]
        assert np.allclose(heads.sum(axis=1), 1, atol=1e-5)
    fused = found[[c.lower() for c in model.baseline.classes]].to_numpy()
    assert found["prediction"].tolist() == [model.baseline.classes[k] for k in fused.argmax(1)]
    saved = pd.read_csv(tmp_path / "clip_frames.csv")
    assert len(saved) == 8 and (tmp_path / "clip_timeline.png").stat().st_size > 10_000
    assert (tmp_path / "clip_timeline.pdf").is_file()


def test_every_kth_frame_and_a_broken_video_keeps_the_frames_read(clip, tmp_path, capsys):
    pytest.importorskip("dlib", reason="dlib-bin is a dependency: ./run_all.sh test installs it")
    model, config = small_fusion()
    model.save_pretrained(tmp_path / "model", config)
    cut = tmp_path / "cut.avi"
    cut.write_bytes(clip.read_bytes()[: int(clip.stat().st_size * 0.6)])
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    command = ["predict", str(clip), str(cut), str(text), "--model", str(tmp_path / "model")]
    assert main([*command, "--every", "2", "--out", str(tmp_path / "out"), "--device", "cpu"]) == 0
    every = pd.read_csv(tmp_path / "out" / "clip_frames.csv")
    assert every["frame"].tolist() == [0, 2, 4, 6]
    broken = pd.read_csv(tmp_path / "out" / "cut_frames.csv")
    assert 0 < len(broken) < 4 and broken["frame"].tolist() == list(range(0, 2 * len(broken), 2))
    err = capsys.readouterr().err
    assert f"{cut}: broken after frame" in err and f"{text}: not a readable video" in err
    assert len(pd.read_csv(tmp_path / "out" / "notes_frames.csv")) == 0
