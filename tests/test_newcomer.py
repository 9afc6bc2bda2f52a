"""A newcomer's first hour, scripted: the built wheel installed into a fresh
venv that sees only the ``edge`` extra's distributions (as on a device),
each tool run on the ordinary mistakes of a first session, and the message
and exit code of each asserted. The training-side cases (a model at chance
level, ``--out`` over an earlier run, the export summary) need TensorFlow
and are in test_export.py and test_cli_errors.py."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from happysad.edge import __version__

from helpers import build_wheel


def _edge_distributions() -> set[str]:
    """The distributions ``pip install happysad[edge]`` brings here, dependencies included."""
    from packaging.requirements import Requirement

    todo = [
        r.name
        for r in map(Requirement, importlib.metadata.distribution("happysad").requires)
        if r.marker is not None and r.marker.evaluate({"extra": "edge"})
    ]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for req in importlib.metadata.distribution(name).requires or []:
            r = Requirement(req)
            if r.marker is None or r.marker.evaluate({"extra": ""}):
                todo.append(r.name)
    return seen


@pytest.fixture(scope="module")
def device(tmp_path_factory):
    """(console scripts folder, work folder) of a fresh venv holding the wheel
    and, through links, only the edge extra's distributions of this environment."""
    tmp = tmp_path_factory.mktemp("newcomer")
    site = tmp / "edge-site"
    site.mkdir()
    for name in _edge_distributions():
        dist = importlib.metadata.distribution(name)
        for top in {Path(str(f)).parts[0] for f in dist.files or []}:
            src = Path(dist.locate_file(top))
            if src.exists() and not (site / top).exists() and top not in ("..", "bin", "__pycache__"):
                (site / top).symlink_to(src)
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    purelib = Path(sysconfig.get_paths(vars={"base": str(venv), "platbase": str(venv)})["purelib"])
    (purelib / "edge-deps.pth").write_text(f"{site}\n")
    pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--no-deps", "-q"]
    res = subprocess.run([*pip, str(build_wheel(tmp))], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    work = tmp / "work"
    work.mkdir()
    return venv / "bin", work


def run(device, tool, *args, env=None):
    bin_dir, work = device
    return subprocess.run(
        [str(bin_dir / tool), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=work,
        timeout=180,
        env={**os.environ, **(env or {})},
    )


def error_lines(res):
    return [ln for ln in res.stderr.splitlines() if ln.strip() and not ln.startswith("INFO: Created TensorFlow Lite")]


def test_the_device_has_no_tensorflow(device):
    res = run(device, "python", "-c", "import keras")
    assert res.returncode == 1 and "No module named 'keras'" in res.stderr


@pytest.mark.parametrize("tool", ["happysad-edge", "happysad-bench", "happysad-train", "happysad-export"])
def test_every_tool_says_its_version(device, tool):
    res = run(device, tool, "--version")
    assert res.returncode == 0, res.stderr
    assert __version__ in res.stdout


@pytest.mark.parametrize("tool", ["happysad-train", "happysad-export"])
def test_workstation_tools_on_a_device_say_which_extra(device, tool):
    bin_dir, work = device
    for cls in ("happy", "sad"):
        (work / "photos" / cls).mkdir(parents=True, exist_ok=True)
    args = ["photos", "--out", "runs/mine"] if tool == "happysad-train" else ["runs/mine"]
    res = run(device, tool, *args)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    (line,) = error_lines(res)
    assert "pip install 'happysad[train]'" in line


def test_an_empty_folder_is_an_error_not_silence(device, export_dir):
    bin_dir, work = device
    (work / "empty").mkdir(exist_ok=True)
    res = run(device, "happysad-edge", "classify", export_dir / "model_int8.tflite", "empty")
    assert res.returncode == 1 and res.stdout == ""
    (line,) = error_lines(res)
    assert re.search(r"empty: no image files \(.*\.jpg.*\) in this folder", line)


def test_verify_json_speaks_when_the_file_fails(device, export_dir):
    bin_dir, work = device
    (work / "broken.tflite").write_bytes((export_dir / "model_int8.tflite").read_bytes()[:1000])
    res = run(device, "happysad-edge", "verify", "broken.tflite", "--json")
    assert res.returncode != 0
    report = json.loads(res.stdout)
    assert report["ok"] is False and report["error"]


def test_a_window_on_headless_opencv_says_why_and_goes_on(device, export_dir, tmp_path):
    import cv2
    import numpy as np

    from helpers import write_video

    video = tmp_path / "v.avi"
    write_video(video, [np.full((120, 160, 3), 90, np.uint8)] * 3)
    res = run(
        device,
        "happysad-edge",
        "camera",
        export_dir / "model_int8.tflite",
        "--source",
        video,
        "--max-frames",
        "2",
        env={"DISPLAY": ":0"},
    )
    assert res.returncode == 0, res.stderr
    assert "opencv-python-headless" in res.stderr and "--serve" in res.stderr
    assert len(res.stdout.splitlines()) == 2  # one JSON line per frame instead
    assert cv2.__version__


def test_bench_with_only_a_model_file(device, export_dir):
    res = run(device, "happysad-bench", export_dir / "model_int8.tflite")
    assert res.returncode == 0, res.stderr
    header = next(ln for ln in res.stdout.splitlines() if ln.startswith("model "))
    for column in ("p50 ms", "p90 ms", "p99 ms", "peak RSS MB"):
        assert column in header
    assert "no accuracy: no data" in res.stdout


def test_a_model_folder_moved_elsewhere_verifies_and_classifies(device, export_dir, tmp_path):
    bin_dir, work = device
    moved = work / "elsewhere" / "export"
    shutil.copytree(export_dir, moved)
    res = run(device, "happysad-edge", "verify", moved / "model_int8.tflite")
    assert res.returncode == 0, res.stderr
    import cv2
    import numpy as np

    cv2.imwrite(str(work / "face.png"), np.full((48, 48), 128, np.uint8))
    res = run(device, "happysad-edge", "classify", moved / "model_int8.tflite", "face.png", "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["label"] in ("happy", "sad"), res.stderr
