"""The parts of ``make pi-check`` that need no root or emulation: which
requirements each Pi architecture resolves to, and how answers are compared."""

from __future__ import annotations

import importlib.metadata
import json
import zipfile

from happysad.benchmarks.pi_check import compare, parse_classify
from happysad.benchmarks.pi_roots import requirements


def _wheel_with_this_metadata(tmp_path):
    """A zip laid out as a wheel whose METADATA holds the installed package's own requirements."""
    path = tmp_path / "happysad-0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        requires = importlib.metadata.distribution("happysad").requires
        z.writestr("happysad-0.dist-info/METADATA", "".join(f"Requires-Dist: {r}\n" for r in requires))
    return path


def test_each_pi_resolves_to_its_interpreter_by_markers(tmp_path):
    wheel = _wheel_with_this_metadata(tmp_path)
    names = lambda reqs: {r.split("=")[0].split("<")[0].split(">")[0] for r in reqs}  # noqa: E731
    armhf = requirements(wheel, "edge", "armv7l")
    assert "tflite-runtime==2.14.0" in armhf and "numpy<2,>=1.24" in armhf
    assert not names(armhf) & {"ai-edge-litert", "onnxruntime"}
    arm64 = requirements(wheel, "edge-onnx", "aarch64")
    assert {"ai-edge-litert", "onnxruntime", "numpy", "opencv-python-headless"} <= names(arm64)
    assert "tflite-runtime" not in names(arm64)
    assert "onnxruntime" not in names(requirements(wheel, "edge", "aarch64"))


def test_answers_are_compared_per_group_with_its_tolerance():
    line = lambda path, label, p_sad, basis: json.dumps(  # noqa: E731
        {"path": path, "label": label, "scores": {"happy": 1 - p_sad, "sad": p_sad}, "basis": basis}
    )
    host = parse_classify(
        "\n".join(
            [line("/a/face-sad/1.jpg", "sad", 0.75, "whole-image"), line("/a/photo-happy/2.jpg", "happy", 0.1, "face")]
        ),
        "/a",
    )
    assert set(host) == {"face-sad/1.jpg", "photo-happy/2.jpg"}
    same = compare(host, dict(host))
    assert same["ok"] and same["labels_agree"] == 2 and same["max_score_diff"] == 0
    photo_moved = dict(host, **{"photo-happy/2.jpg": ("happy", {"happy": 0.88, "sad": 0.12}, "face")})
    assert compare(host, photo_moved)["ok"]  # within the photos' 0.05
    face_moved = dict(host, **{"face-sad/1.jpg": ("sad", {"happy": 0.24, "sad": 0.76}, "whole-image")})
    result = compare(host, face_moved)
    assert not result["ok"] and result["groups"]["face"]["differ"] == ["face-sad/1.jpg"]
    flipped = dict(host, **{"photo-happy/2.jpg": ("sad", {"happy": 0.49, "sad": 0.51}, "face")})
    assert not compare(host, flipped)["ok"]
    missing = {k: v for k, v in host.items() if k.startswith("face")}
    assert not compare(host, missing)["ok"]
