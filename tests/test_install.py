"""happysad-edge install / rollback: DIR/current is always a whole, verifiable model."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest

from happysad.edge import Classifier

from helpers import REPO, assert_one_line_error, run_module


def edge(*args):
    return run_module("edge", *args)


def sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture(scope="module")
def two_models(export_dir, tmp_path_factory):
    """Two different model files with their manifests: the int8 TFLite and the int8 ONNX file."""
    root = tmp_path_factory.mktemp("two")
    for name in ("model_int8.tflite", "model_int8.onnx", "manifest.json"):
        shutil.copy(export_dir / name, root / name)
    return root / "model_int8.tflite", root / "model_int8.onnx"


def test_install_keeps_the_previous_and_rollback_swaps(two_models, tmp_path):
    a, b = two_models
    to = tmp_path / "device"
    res = edge("install", a, "--to", to)
    assert res.returncode == 0, res.stderr
    assert sha(to / "current") == sha(a) and not (to / "previous").exists()
    res = edge("install", b, "--to", to)
    assert res.returncode == 0, res.stderr
    assert sha(to / "current") == sha(b) and sha(to / "previous") == sha(a)
    assert Classifier(to / "current").metadata.extra["format"] == "onnx-int8"
    res = edge("rollback", "--to", to)
    assert res.returncode == 0, res.stderr
    assert sha(to / "current") == sha(a) and sha(to / "previous") == sha(b)


def test_a_file_that_fails_verification_changes_nothing(two_models, tmp_path):
    a, _ = two_models
    to = tmp_path / "device"
    assert edge("install", a, "--to", to).returncode == 0
    bad = tmp_path / "model_int8.tflite"
    data = bytearray(a.read_bytes())
    data[len(data) // 2] ^= 0x01
    bad.write_bytes(bytes(data))
    shutil.copy(a.parent / "manifest.json", tmp_path / "manifest.json")
    assert_one_line_error(edge("install", bad, "--to", to), 1, r"sha256")
    assert sha(to / "current") == sha(a)
    assert_one_line_error(edge("rollback", "--to", to), 1, r"no previous model to go back to")


def test_sigkill_at_random_points_leaves_current_whole(two_models, tmp_path):
    """20 installs killed at random instants: `current` always names one of
    the two files, whole, and it loads."""
    a, b = two_models
    to = tmp_path / "device"
    start = time.perf_counter()
    assert edge("install", a, "--to", to).returncode == 0
    took = time.perf_counter() - start  # kill anywhere from the start to the end of an install
    rng = random.Random(0)
    whole = {sha(a), sha(b)}
    outcomes = set()
    for i in range(20):
        src = b if i % 2 == 0 else a
        proc = subprocess.Popen(
            [sys.executable, "-m", "happysad.edge", "install", str(src), "--to", str(to)],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.0, took))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert sha(to / "current") in whole
        outcomes.add(sha(to / "current") == sha(src))
        Classifier(to / "current")
    # Some kills landed before the switch, some after it.
    assert outcomes == {True, False}
    leftovers = [p.name for p in (to / "models").iterdir() if ".tmp-" in p.name]
    # A killed copy may leave its temporary file; it is never what a link names.
    links = [os.readlink(to / link) for link in ("current", "previous") if (to / link).is_symlink()]
    assert not any(target == f"models/{name}" for target in links for name in leftovers)
