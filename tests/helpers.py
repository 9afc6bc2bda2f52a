"""Helpers shared by the test modules (on pytest's ``pythonpath``; tests import
from here, never from ``conftest`` or from each other)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import cv2

#: The repository's root folder.
REPO = Path(__file__).resolve().parent.parent
#: The shared real faces, where the development checkout has them.
REAL_DATA = REPO.parent / "shared" / "data" / "fer2013-happy-sad"
#: ``make fuzz`` sets HAPPYSAD_FUZZ_EXAMPLES to run the property-based tests
#: far longer than ``make test`` does.
FUZZ_EXAMPLES = int(os.environ.get("HAPPYSAD_FUZZ_EXAMPLES", "0") or 0)


def examples(n: int) -> int:
    """Hypothesis examples for a property test: ``n`` in ``make test``, the fuzz count in ``make fuzz``."""
    return FUZZ_EXAMPLES or n


def assert_one_line_error(res, code, pattern):
    """A finished command exited ``code`` with one stderr line matching ``pattern`` and no traceback."""
    assert res.returncode == code, (res.returncode, res.stderr)
    lines = [
        line
        for line in res.stderr.splitlines()
        if line.strip() and not line.startswith("INFO: Created TensorFlow Lite")
    ]
    assert len(lines) == 1, res.stderr
    assert re.search(pattern, lines[0]), lines[0]
    assert "Traceback" not in res.stderr


def write_video(path, frames, fps=15):
    """An MJPG .avi of uint8 gray or BGR frames."""
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert writer.isOpened()
    for f in frames:
        writer.write(f if f.ndim == 3 else cv2.cvtColor(f, cv2.COLOR_GRAY2BGR))
    writer.release()


def camera_cmd(model, source, *extra):
    """The ``happysad-edge camera --headless`` command line."""
    return [sys.executable, "-m", "happysad.edge", "camera", str(model), "--source", str(source), "--headless", *extra]


def run_camera(model, video, *extra):
    """Run the headless camera loop to its end; the finished process."""
    return subprocess.run(camera_cmd(model, video, *extra), capture_output=True, text=True, cwd=REPO, timeout=120)


def run_module(module: str, *args, timeout=120, env=None):
    """``python -m happysad.MODULE ARGS`` from the repository, run to its end."""
    return subprocess.run(
        [sys.executable, "-m", f"happysad.{module}", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout,
        env=env,
    )


def build_wheel(tmp_path) -> Path:
    """The wheel, built from a copy of the tracked files (so setuptools' build/
    folder is not left in the checkout)."""
    src = tmp_path / "src"
    tracked = subprocess.run(["git", "ls-files"], capture_output=True, text=True, cwd=REPO).stdout.split("\n")
    for name in filter(None, tracked):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, src / name)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        str(tmp_path / "dist"),
    ]
    res = subprocess.run([*cmd, str(src)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    (wheel,) = (tmp_path / "dist").glob("happysad-*.whl")
    return wheel


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
