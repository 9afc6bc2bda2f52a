"""The Raspberry Pi camera source: the pixel conversion from each format a
camera may negotiate (pure numpy, everywhere), PicameraSource against a
scripted Picamera2 (everywhere), and PicameraSource on libcamera's virtual
camera (where ``make picamera-check`` has built it; skipped otherwise)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import cv2
import numpy as np
import pytest
from picamera_virtual import find_build, libcamera_env

from happysad.edge.camera.picamera import PicameraSource, is_full_range, to_bgr
from happysad.edge.errors import HappysadError

from helpers import REAL_DATA, REPO

#: Round trip BGR -> YCbCr 4:2:0 -> to_bgr on a smooth image: mean and
#: largest difference per channel, grey levels. Chroma at half resolution
#: is what costs (measured: full range NV12 0.41 / 3, limited I420 1.18 / 5).
ROUND_TRIP_MEAN, ROUND_TRIP_MAX = 1.5, 6
W, H = 64, 48


def _image() -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W]
    bgr = np.dstack([(xx * 4) % 256, (yy * 5) % 256, ((xx + yy) * 2) % 256]).astype(np.uint8)
    return cv2.GaussianBlur(bgr, (5, 5), 0)


def _full_range_planes(bgr):
    """Y, Cb, Cr planes, full range (JPEG's YCbCr, libcamera's sYCC), chroma halved."""
    ycc = cv2.cvtColor(bgr, cv2.COLOR_BGR2YCrCb)
    half = lambda p: cv2.resize(p, (W // 2, H // 2), interpolation=cv2.INTER_AREA)  # noqa: E731
    return ycc[..., 0], half(ycc[..., 2]), half(ycc[..., 1])


def _pack(fmt: str, y, u, v, stride: int = W) -> np.ndarray:
    """The frame as Picamera2's capture_array returns it for ``fmt``."""
    if fmt in ("NV12", "NV21"):
        first, second = (u, v) if fmt == "NV12" else (v, u)
        return np.vstack([y, np.dstack([first, second]).reshape(H // 2, W)])
    first, second = (u, v) if fmt == "YUV420" else (v, u)
    pad = lambda p, s: np.pad(p, ((0, 0), (0, s - p.shape[1])))  # noqa: E731
    chroma = np.concatenate([pad(first, stride // 2).reshape(-1), pad(second, stride // 2).reshape(-1)])
    return np.vstack([pad(y, stride), chroma.reshape(H // 2, stride)])


def _close(out, bgr):
    assert out.shape == bgr.shape and out.dtype == np.uint8
    diff = np.abs(out.astype(int) - bgr)
    assert diff.mean() <= ROUND_TRIP_MEAN and diff.max() <= ROUND_TRIP_MAX, (diff.mean(), diff.max())


@pytest.mark.parametrize("fmt", ["NV12", "NV21", "YUV420", "YVU420"])
@pytest.mark.parametrize("stride", [W, W + 64])
def test_full_range_yuv_round_trips(fmt, stride):
    bgr = _image()
    # Picamera2 cuts an NV12 frame's padding off; a YUV420 frame keeps it.
    packed = _pack(fmt, *_full_range_planes(bgr), stride=stride if fmt in ("YUV420", "YVU420") else W)
    _close(to_bgr(packed, fmt, (W, H)), bgr)


def test_limited_range_round_trips_and_the_range_matters():
    bgr = _image()
    i420 = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)  # OpenCV's encoder: BT.601, limited range
    _close(to_bgr(i420, "YUV420", (W, H), full_range=False), bgr)
    y, u, v = i420[:H], i420[H : H + H // 4].reshape(H // 2, W // 2), i420[H + H // 4 :].reshape(H // 2, W // 2)
    _close(to_bgr(_pack("NV12", y, u, v), "NV12", (W, H), full_range=False), bgr)
    # Full-range frames read as limited (what the old code did): 7.8 grey levels off on average.
    wrong = to_bgr(_pack("NV12", *_full_range_planes(bgr)), "NV12", (W, H), full_range=False)
    assert np.abs(wrong.astype(int) - bgr).mean() > 4


@pytest.mark.parametrize(
    "fmt, memory", [("RGB888", "BGR"), ("BGR888", "RGB"), ("XRGB8888", "BGRX"), ("XBGR8888", "RGBX")]
)
def test_rgb_formats_follow_libcamera_naming(fmt, memory):
    # libcamera names components from the most significant byte: its RGB888 is B, G, R in memory.
    bgr = _image()
    channels = {"B": bgr[..., 0], "G": bgr[..., 1], "R": bgr[..., 2], "X": np.full((H, W), 255, np.uint8)}
    array = np.dstack([channels[c] for c in memory])
    assert np.array_equal(to_bgr(array, fmt, (W, H)), bgr)
    padded = np.pad(array, ((0, 0), (0, 8), (0, 0)))  # a stride wider than the width
    assert np.array_equal(to_bgr(padded, fmt, (W, H)), bgr)


def test_unknown_format_and_wrong_shape_are_one_line_errors():
    with pytest.raises(HappysadError, match="MJPEG"):
        to_bgr(np.zeros(100, np.uint8), "MJPEG", (W, H))
    with pytest.raises(HappysadError, match="does not hold"):
        to_bgr(np.zeros((H, W), np.uint8), "NV12", (W, H))
    assert is_full_range("sYCC") and not is_full_range("Rec709") and not is_full_range("Smpte170m")
    assert is_full_range(types.SimpleNamespace(range="Range.Full"))
    assert not is_full_range(types.SimpleNamespace(range="Range.Limited"))


class FakePicamera2:
    """What PicameraSource uses of Picamera2, scripted: ``offers`` the
    streams a camera can give, ``gives`` the format it negotiates."""

    offers = ("main", "lores")
    gives = "NV12"
    controls = {"FrameDurationLimits": (33333, 1000000)}
    instances: list = []

    def __init__(self):
        self.camera_controls = dict(self.controls)
        self.config, self.closed, self.started, self.captured = None, False, False, 0
        FakePicamera2.instances.append(self)

    def create_preview_configuration(self, main, lores=None, controls=None):
        return {"main": dict(main, format="XBGR8888"), "lores": lores, "controls": controls or {}}

    def configure(self, config):
        if config["lores"] is not None and "lores" not in self.offers:
            raise AttributeError("'NoneType' object has no attribute 'orientation'")
        self.config = config
        for name in ("main", "lores"):
            if config.get(name):
                w, h = (640, 480) if name == "main" else config[name]["size"]
                config[name] = {"format": self.gives, "size": (w, h), "stride": w}
        config["colour_space"] = "sYCC"

    def camera_configuration(self):
        return self.config

    def start(self):
        self.started = True

    def capture_array(self, name, wait=None):
        if self.gives == "stall":
            raise TimeoutError("timed out")
        self.captured += 1
        w, h = self.config[name]["size"]
        y, u, v = (np.full((hh, ww), 128, np.uint8) for hh, ww in ((h, w), (h // 2, w // 2), (h // 2, w // 2)))
        y[:, : w // 2] = 200
        return np.vstack([y, np.dstack([u, v]).reshape(h // 2, w)])

    def stop(self):
        self.started = False

    def close(self):
        self.closed = True


@pytest.fixture
def fake(monkeypatch):
    module = types.ModuleType("picamera2")
    module.Picamera2 = type("Picamera2", (FakePicamera2,), {})
    monkeypatch.setitem(sys.modules, "picamera2", module)
    FakePicamera2.instances = []
    return module.Picamera2


def test_reads_the_negotiated_format_not_the_one_asked(fake):
    # The source asks lores YUV420; the camera gives NV12 (libcamera's virtual camera does).
    src = PicameraSource((320, 240), fps=None)
    frame = src.read()
    assert (src.stream, src.format, src.size) == ("lores", "NV12", (320, 240))
    assert frame.shape == (240, 320, 3)
    assert frame[:, :160].mean() > 190 and frame[:, 160:].mean() < 140  # not a YUV420 reading of NV12
    assert src.negotiated["read"] == "lores" and src.negotiated["lores"]["format"] == "NV12"
    src.release()
    src.release()  # twice is harmless
    assert FakePicamera2.instances[0].closed


def test_a_camera_without_lores_is_read_from_main(fake):
    fake.offers = ("main",)
    src = PicameraSource((640, 480))
    assert src.stream == "main" and src.read().shape == (480, 640, 3)
    src.release()


def test_frame_rate_control_and_pace(fake):
    src = PicameraSource((64, 48), fps=20)
    assert src.negotiated["frame_duration_limits"] == (50000, 50000)
    t0 = time.monotonic()
    for _ in range(5):
        src.read()
    assert time.monotonic() - t0 >= 4 / 20 - 0.01  # never handed on faster than asked
    src.release()
    fake.controls = {}
    src = PicameraSource((64, 48), fps=20)  # a camera without the control: pace only
    assert src.negotiated["frame_duration_limits"] is None
    src.release()


def test_a_stalled_camera_reads_none_and_a_failed_start_closes_it(fake):
    fake.gives = "stall"
    with pytest.raises(HappysadError, match="does not start.*stall"):
        PicameraSource((64, 48))  # 'stall' is no format: refused at configure
    assert FakePicamera2.instances[-1].closed  # not left holding the camera
    fake.gives = "NV12"
    src = PicameraSource((64, 48))
    fake.gives = "stall"
    assert src.read() is None
    src.release()


# The virtual camera: libcamera built by make picamera-check.
BUILD = find_build()
needs_build = pytest.mark.skipif(
    BUILD is None, reason="no cached libcamera virtual-camera build: run make picamera-check (root, Debian)"
)
MODEL = REPO / "runs" / "demo" / "export" / "model_int8.tflite"


@pytest.fixture
def virtual_camera(tmp_path, request):
    """(python, env, model): the virtual camera serving enlarged real faces
    (drawn ones without the shared data), the venv and a model."""
    frames = tmp_path / "frames"
    frames.mkdir()
    faces = sorted((REAL_DATA / "happy").glob("*.jpg"))[:4] + sorted((REAL_DATA / "sad").glob("*.jpg"))[:4]
    if not faces:
        from synth import make_dataset

        faces = sorted(make_dataset(tmp_path / "drawn", per_class=4).rglob("*.png"))
    for i, face in enumerate(faces):
        frame = np.full((480, 640, 3), 128, np.uint8)
        frame[100:340, 160 + 8 * i : 400 + 8 * i] = cv2.resize(cv2.imread(str(face)), (240, 240))
        cv2.imwrite(str(frames / f"{i}.jpg"), frame, [cv2.IMWRITE_JPEG_QUALITY, 95])
    yaml = Path(BUILD["virtual_yaml"])
    saved = yaml.read_text() if yaml.exists() else None
    from happysad.benchmarks.picamera_build import virtual_yaml

    virtual_yaml(BUILD, frames)
    model = MODEL if MODEL.is_file() else request.getfixturevalue("export_dir") / "model_int8.tflite"
    tree = tmp_path / "tree" / "happysad"  # this checkout's code, ahead of the venv's wheel
    tree.mkdir(parents=True)
    for package in ("edge", "train", "export", "benchmarks"):
        (tree / package).symlink_to(REPO / package, target_is_directory=True)
    yield Path(BUILD["venv"]) / "bin" / "python", libcamera_env(BUILD, [str(tree.parent)]), model
    if saved is not None:
        yaml.write_text(saved)


#: happysad-edge with the test-only stand-ins loaded.
WRAPPER = "import sys, picamera_virtual; sys.exit(picamera_virtual.main())"
CLASSIFY_30 = """
import json, sys, picamera_virtual
picamera_virtual.install(fps=60)
from happysad.edge.camera.sources import PicameraSource
from happysad.edge.classifier import Classifier
clf, src = Classifier(sys.argv[1]), PicameraSource((640, 480))
labels = []
for _ in range(30):
    frame = src.read()
    assert frame is not None and frame.shape == (480, 640, 3), None if frame is None else frame.shape
    labels.append(clf.classify_image(frame).label)
print(json.dumps({"negotiated": src.negotiated, "labels": labels}, default=str))
src.release()
"""


@needs_build
def test_picamera_source_on_the_virtual_camera_classifies_30_frames(virtual_camera):
    python, env, model = virtual_camera
    cmd = [str(python), "-c", CLASSIFY_30, str(model)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert len(out["labels"]) == 30
    assert out["negotiated"]["read"] == "lores" and out["negotiated"]["lores"]["format"] == "NV12"


@needs_build
def test_camera_on_the_virtual_camera_stops_cleanly_on_sigterm(virtual_camera):
    python, env, model = virtual_camera
    cmd = [str(python), "-c", WRAPPER, "camera", str(model), "--source", "picamera", "--headless", "--fps", "20"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = [proc.stdout.readline() for _ in range(5)]
    assert all(ln.startswith("{") for ln in lines), lines
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "frames" in err.splitlines()[-1], err[-2000:]


def test_a_camera_frame_agrees_by_label_and_box_and_a_flip_only_by_a_small_movement():
    from happysad.benchmarks.picamera_check import SCORE_TOLERANCE, compare

    def answer(box, happy, sad, neutral, label):
        return {"face": box, "label": label, "scores": {"happy": happy, "sad": sad, "neutral": neutral}}

    files = {
        "0.jpg": answer([10, 10, 100, 100], 0.70, 0.20, 0.10, "happy"),
        "1.jpg": answer([300, 200, 120, 120], 0.10, 0.47, 0.43, "sad"),
    }

    def frame(i, box, happy, sad, neutral, label):
        return {"frame": i, "faces": [answer(box, happy, sad, neutral, label)]}

    records = [
        frame(0, [11, 10, 100, 101], 0.70, 0.20, 0.10, "happy"),  # the same
        frame(1, [10, 10, 100, 100], 0.55, 0.30, 0.15, "happy"),  # scores moved 0.15, label kept
        frame(2, [300, 200, 120, 120], 0.10, 0.44, 0.46, "neutral"),  # flip, moved 0.03 > margin 0.04 / 2
        frame(3, [300, 200, 121, 120], 0.10, 0.30, 0.60, "neutral"),  # flip, moved 0.17: not explained
        frame(4, [20, 10, 100, 100], 0.70, 0.20, 0.10, "happy"),  # box 10 px off
        {"frame": 5, "faces": []},
    ]
    c = compare(records, files)
    assert [r["ok"] for r in c["rows"]] == [True, True, True, False, False, False]
    assert [r["frame"] for r in c["near_ties"]] == [2]
    assert c["scores_moved"] == ["0.jpg", "1.jpg"] and c["max_score_diff"] > SCORE_TOLERANCE
    assert [r["why"] for r in c["disagree"]] == ["label", "box", "no face"]
    assert c["labels_equal"] == 3 and c["agree"] == 3 and c["pictures_seen"] == 2
