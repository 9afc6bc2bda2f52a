"""The parts of ``make pi-check`` that need no root or emulation: which
requirements each Pi architecture resolves to, and how answers are compared."""

from __future__ import annotations

import importlib.metadata
import json
import zipfile

from happysad.benchmarks.pi_check import compare, parse_classify, report_md
from happysad.benchmarks.pi_reference import interpreter_differences, margin
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


def _answer(label, happy, sad, neutral, basis="whole-image"):
    return (label, {"happy": happy, "sad": sad, "neutral": neutral}, basis)


def test_a_label_may_differ_only_where_the_two_best_scores_were_within_the_tolerance():
    host = {
        "face-sad/tie.jpg": _answer("happy", 0.375, 0.25, 0.375),  # a tie: the first class wins
        "face-sad/clear.jpg": _answer("sad", 0.1, 0.8, 0.1),
    }
    tie_broken_otherwise = dict(host, **{"face-sad/tie.jpg": _answer("neutral", 0.3748, 0.25, 0.3752)})
    result = compare(host, tie_broken_otherwise, {"face": 1e-3})
    assert result["ok"] and result["groups"]["face"]["near_threshold"] == ["face-sad/tie.jpg"]
    assert result["labels_agree"] == 1
    flipped_far = dict(host, **{"face-sad/clear.jpg": _answer("happy", 0.8, 0.1, 0.1)})
    result = compare(host, flipped_far, {"face": 1e-3})
    assert not result["ok"] and result["groups"]["face"]["differ"] == ["face-sad/clear.jpg"]
    # Within the tolerance of the decision but with a score moved beyond it: a fault.
    near_but_moved = dict(host, **{"face-sad/tie.jpg": _answer("neutral", 0.30, 0.25, 0.45)})
    assert not compare(host, near_but_moved, {"face": 1e-3})["ok"]


def test_interpreter_differences_list_every_flipped_label_with_its_margins():
    litert = {
        "face-happy/a.jpg": _answer("happy", 0.9, 0.05, 0.05),
        "face-sad/b.jpg": _answer("neutral", 0.359375, 0.257812, 0.382812),
        "face-sad/c.jpg": _answer("sad", 0.1, 0.6, 0.3),
    }
    other = dict(litert)
    other["face-sad/b.jpg"] = _answer("happy", 0.375, 0.25, 0.375)
    other["face-sad/c.jpg"] = _answer("sad", 0.1, 0.62, 0.28)
    found = interpreter_differences(litert, other)
    assert found["images"] == 3 and found["scores_differ"] == 2
    assert abs(found["max_score_diff"] - 0.02) < 1e-9
    assert [f["image"] for f in found["labels_differ"]] == ["face-sad/b.jpg"]
    flip = found["labels_differ"][0]
    assert flip["other_margin"] == 0 and abs(flip["litert_margin"] - 0.023437) < 1e-6
    assert margin({"happy": 0.7, "sad": 0.2, "neutral": 0.1}) == 0.7 - 0.2

    install = {"ok": True, "extra": "edge", "route": "pip", "missing_wheels": []}
    model = {
        "verify_rc": 0,
        "reference": "tflite-runtime",
        **compare(other, other, {"face": 1e-3}),
        "interpreters_here": found,
    }
    md = report_md([{"arch": "armhf", "qemu_cpu": "cortex-a15", "install": install, "models": {"m.tflite": model}}], 3)
    assert "| armhf | cortex-a15 | edge | m.tflite | tflite-runtime | ok | 3/3 |" in md
    assert "differ on 2 of 3 images" in md and "- face-sad/b.jpg: LiteRT neutral" in md


def test_kernel_script_runs_here_and_its_answers_compare(export_dir, dataset, tmp_path):
    import shutil
    import subprocess
    import sys

    from happysad.benchmarks.pi_reference import KERNELS_SCRIPT, compare_kernels, parse_kernels

    images = tmp_path / "images"
    for cls in ("happy", "sad"):
        (images / f"face-{cls}").mkdir(parents=True)
        for f in sorted((dataset / cls).glob(f"{cls}_00*.png"))[:3]:
            shutil.copy(f, images / f"face-{cls}" / f.name)
    (images / "photo-happy").mkdir()  # photos are not the kernels' business
    shutil.copy(dataset / "happy" / "happy_010.png", images / "photo-happy" / "p.png")
    script = tmp_path / "kernels.py"
    script.write_text(KERNELS_SCRIPT)
    res = subprocess.run(
        [sys.executable, str(script), str(export_dir / "model_int8.tflite"), str(images)],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr[-500:]
    rows = parse_kernels(res.stdout)
    assert sorted(rows) == sorted(f"face-{c}/{c}_00{i}.png" for c in ("happy", "sad") for i in range(3))
    first = rows["face-happy/happy_000.png"]
    assert len(first["reference"]) == len(first["default"]) >= 1
    assert all(isinstance(v, int) for v in first["reference"])  # raw int8 outputs, not dequantized
    same = compare_kernels(rows, rows)
    assert same == {"faces": 6, "pixels_equal": 6, "reference_equal": 6, "default_equal": 6, "default_max_steps": 0}
    moved = {k: dict(v) for k, v in rows.items()}
    moved["face-sad/sad_001.png"]["default"] = [v + 3 for v in moved["face-sad/sad_001.png"]["default"]]
    moved["face-sad/sad_002.png"]["reference"] = [v - 1 for v in moved["face-sad/sad_002.png"]["reference"]]
    found = compare_kernels(rows, moved)
    assert found["default_equal"] == 5 and found["default_max_steps"] == 3 and found["reference_equal"] == 5


def test_the_arm64_camera_check_reuses_the_root_and_the_build_it_recorded(tmp_path):
    from happysad.benchmarks.pi_picamera import RECORDS, ROOT_NAME, ensure_build, ensure_root

    root = tmp_path / ROOT_NAME
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "usr" / "bin" / "python3").write_text("")
    assert ensure_root(tmp_path) == root  # no copy, no debootstrap
    records = root / RECORDS.lstrip("/")
    failed = records / "libcamera-0.7.1-1" / "build.json"
    failed.parent.mkdir(parents=True)
    failed.write_text(json.dumps({"ok": False}))
    done = records / "libcamera-0.7.2-1" / "build.json"
    done.parent.mkdir(parents=True)
    done.write_text(json.dumps({"ok": True, "version": "0.7.2-1", "build_seconds": 1796.3}))
    info = ensure_build(root, tmp_path)
    assert info["reused"] and info["version"] == "0.7.2-1" and info["build_seconds"] == 1796.3
