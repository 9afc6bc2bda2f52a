"""The camera loop on a recorded video: how it is tested without a camera."""
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import REPO
from edge.camera import annotate
from edge.classifier import Prediction
from synth import draw_face


def write_video(path, frames, fps=15):
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert writer.isOpened()
    for f in frames:
        writer.write(f if f.ndim == 3 else cv2.cvtColor(f, cv2.COLOR_GRAY2BGR))
    writer.release()


def run_camera(model, video, *extra):
    return subprocess.run([sys.executable, "-m", "edge", "camera", str(model), "--source", str(video),
                           "--headless", *extra], capture_output=True, text=True, cwd=REPO, timeout=120)


def test_headless_prints_one_json_line_per_frame(export_dir, tmp_path):
    rng = np.random.default_rng(0)
    frames = [cv2.resize(draw_face(rng, i % 2 == 0), (160, 120)) for i in range(12)]
    write_video(tmp_path / "v.avi", frames)
    res = run_camera(export_dir / "model_int8.tflite", tmp_path / "v.avi")
    assert res.returncode == 0, res.stderr
    records = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["frame"] for r in records] == list(range(1, 13))
    for r in records:
        assert set(r) == {"frame", "faces", "fps", "ms"}
        assert isinstance(r["faces"], list) and r["ms"]["capture"] >= 0
    assert "12 frames" in res.stderr


def test_max_frames_stops_early(export_dir, tmp_path):
    rng = np.random.default_rng(1)
    write_video(tmp_path / "v.avi", [cv2.resize(draw_face(rng, True), (160, 120)) for _ in range(10)])
    res = run_camera(export_dir / "model_int8.tflite", tmp_path / "v.avi", "--max-frames", "4")
    assert res.returncode == 0, res.stderr
    assert len(res.stdout.splitlines()) == 4


def test_real_faces_are_found_and_classified(export_dir, real_data, tmp_path):
    """Real FER2013 faces, enlarged into a larger frame, are detected by the Haar cascade."""
    files = sorted((real_data / "happy").glob("*.jpg"))[:40]
    frames = []
    for f in files:
        face = cv2.resize(cv2.imread(str(f)), (192, 192), interpolation=cv2.INTER_CUBIC)
        frame = np.full((240, 320, 3), 90, np.uint8)
        frame[24:216, 64:256] = face
        frames.append(frame)
    write_video(tmp_path / "real.avi", frames)
    res = run_camera(export_dir / "model_int8.tflite", tmp_path / "real.avi")
    assert res.returncode == 0, res.stderr
    records = [json.loads(line) for line in res.stdout.splitlines()]
    with_face = [r for r in records if r["faces"]]
    assert len(with_face) >= len(records) // 2
    for r in with_face:
        x, y, w, h = r["faces"][0]["face"]
        # The box lies on the pasted face.
        assert 24 <= x + w / 2 <= 296 and 0 <= y + h / 2 <= 240
        assert r["faces"][0]["label"] in ("happy", "sad")
        assert {"detect", "preprocess", "inference", "total"} <= set(r["ms"])


def test_annotate_draws_box_label_and_fps():
    frame = np.zeros((120, 160, 3), np.uint8)
    pred = Prediction("sad", 0.9, {"happy": 0.1, "sad": 0.9}, (40, 40, 50, 50))
    out = annotate(frame.copy(), [pred], 12.5)
    changed = np.any(out != frame, axis=2)
    assert changed[40, 40:90].all() and changed[40:90, 40].all()  # the box edges
    assert changed[5:25, 5:80].any()                                # the FPS text
    assert changed[20:38, 40:120].any()                             # the label above the box
    assert out[40, 60].tolist() == [0, 0, 220]                      # sad is drawn in red (BGR)
