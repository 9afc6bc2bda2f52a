"""Shared fixtures: one small synthetic dataset, trained and exported once per session."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from helpers import REAL_DATA, train_args
from synth import make_dataset

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def dataset(tmp_path_factory) -> Path:
    """60 happy + 60 sad drawn faces, plus a duplicate and four bad files."""
    root = make_dataset(tmp_path_factory.mktemp("faces"), per_class=60)
    (root / "happy" / "notes.txt").write_text("not an image")
    (root / "happy" / "empty.jpg").write_bytes(b"")
    good = (root / "sad" / "sad_000.png").read_bytes()
    (root / "sad" / "truncated.png").write_bytes(good[: len(good) // 3])
    import cv2

    jpeg = cv2.imencode(".jpg", cv2.imread(str(root / "sad" / "sad_001.png")))[1].tobytes()
    (root / "sad" / "corrupt.jpg").write_bytes(jpeg[:-200])  # cut off mid-scan
    shutil.copy(root / "happy" / "happy_001.png", root / "happy" / "copy_of_001.png")
    return root


@pytest.fixture(scope="session")
def run_dir(dataset, tmp_path_factory) -> Path:
    """A training run on the synthetic faces (compact model, a few epochs)."""
    from happysad.train.cli import main

    out = tmp_path_factory.mktemp("run") / "run"
    # basic augmentation: 8 epochs on 120 drawn faces are too few to learn
    # through the camera distortions (a 16 px low-resolution copy loses the
    # drawn mouth); tests/test_pipeline.py trains with them.
    assert main(train_args(dataset, out, 8, "--patience", "8")) == 0
    return out


@pytest.fixture(scope="session")
def export_dir(run_dir) -> Path:
    """The four exported files of :func:`run_dir`."""
    from happysad.export.cli import main

    # The gate is tested on its own (tests/test_export.py); here 24 validation images
    # would make one changed label a 4 pp drop, so it is opened wide.
    assert main([str(run_dir), "--calib-samples", "60", "--max-drop", "100"]) == 0
    return run_dir / "export"


@pytest.fixture(scope="session")
def real_data() -> Path:
    if not REAL_DATA.is_dir():
        pytest.skip(f"real faces not present at {REAL_DATA}")
    return REAL_DATA


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    """An amqtt MQTT broker on a free loopback port; its port."""
    from helpers import free_port, start_broker

    pytest.importorskip("amqtt")
    port = free_port()
    proc = start_broker(tmp_path_factory.mktemp("broker"), port)
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def two_models(export_dir, tmp_path_factory):
    """Two different model files beside their manifest (install tests): the int8 TFLite and the int8 ONNX file."""
    root = tmp_path_factory.mktemp("two")
    for name in ("model_int8.tflite", "model_int8.onnx", "manifest.json"):
        shutil.copy(export_dir / name, root / name)
    return root / "model_int8.tflite", root / "model_int8.onnx"
