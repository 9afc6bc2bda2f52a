"""What the MJPEG preview costs the camera loop: CPU per frame of
``happysad-edge camera`` without ``--serve``, with ``--serve`` and no viewer,
and with ``--serve`` and one viewer reading the stream.

The preview encodes (and the loop annotates) only while someone watches, so
with no viewer it should cost next to nothing: the run fails (exit 3) when
the loop with ``--serve`` and no viewer uses more than ``--max-ratio`` times
the CPU per frame of the loop without it. The three modes are run in turn,
``--repeats`` times each, and medians compared (one run, one machine)::

    python -m happysad.benchmarks.preview_cost runs/demo/export/model_int8.tflite --data DIR
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from happysad.edge.console import ArgumentParser, positive_int, run_main
from happysad.edge.errors import HappysadError, UsageError

from .video import face_frames, write_video

PROG = "happysad-bench preview-cost"
MODES = ("no --serve", "--serve, no viewer", "--serve, one viewer")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _watch(url: str, stop: threading.Event) -> None:
    """Read the MJPEG stream until ``stop`` or the server ends (a viewer)."""
    deadline = time.monotonic() + 60
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=10) as stream:
                while not stop.is_set() and stream.read(65536):
                    pass
            return
        except OSError:
            time.sleep(0.05)  # the server is not up yet


def cpu_per_frame(model: Path, video: Path, frames: int, mode: str) -> float:
    """The loop's CPU time (user + system) per frame, ms: of a camera run over
    ``2 * frames`` frames less that of one over ``frames``, divided by
    ``frames``, so the start (imports, model load, the server) cancels out.

    Raises:
        HappysadError: a camera run fails.
    """
    return (_cpu_ms(model, video, 2 * frames, mode) - _cpu_ms(model, video, frames, mode)) / frames


def _cpu_ms(model: Path, video: Path, frames: int, mode: str) -> float:
    """CPU time (user + system) of one whole camera run, ms."""
    cmd = [sys.executable, "-m", "happysad.edge", "camera", str(model), "--source", str(video), "--headless"]
    cmd += ["--max-frames", str(frames)]
    port = _free_port()
    if mode != MODES[0]:
        cmd += ["--serve", f"127.0.0.1:{port}"]
    stop = threading.Event()
    viewer = None
    if mode == MODES[2]:
        viewer = threading.Thread(target=_watch, args=(f"http://127.0.0.1:{port}/stream.mjpg", stop), daemon=True)
        viewer.start()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read()
    stop.set()
    if viewer is not None:
        viewer.join(timeout=30)
    if proc.returncode:
        raise HappysadError(f"camera run ({mode}) failed: {err.strip().splitlines()[-1] if err.strip() else '?'}")
    return (usage.ru_utime + usage.ru_stime) * 1000


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("model", type=Path, help="model file (.tflite or .onnx)")
    p.add_argument("--data", type=Path, help="labelled face photos (DIR/<label>/*) to build the test video from")
    p.add_argument("--video", type=Path, help="a video file to use instead of --data")
    p.add_argument("--frames", type=positive_int, default=300, help="frames per figure (runs of N and 2N)")
    p.add_argument("--repeats", type=positive_int, default=5, help="runs of each mode")
    p.add_argument("--max-ratio", type=float, default=1.05, help="largest CPU ratio of --serve with no viewer")
    return p


def _body(argv) -> int:
    args = build_parser().parse_args(argv)
    if not args.model.is_file():
        raise UsageError(f"{args.model}: no such model file; check the path")
    with tempfile.TemporaryDirectory() as tmp:
        video = args.video
        if video is None:
            if args.data is None:
                raise UsageError("give --data DIR (labelled face photos) or --video FILE")
            video = write_video(Path(tmp) / "faces.avi", face_frames(args.data, 60), total=2 * args.frames)
        runs = {mode: [] for mode in MODES}
        for _ in range(args.repeats):
            for mode in MODES:
                runs[mode].append(cpu_per_frame(args.model, video, args.frames, mode))
    med = {mode: statistics.median(v) for mode, v in runs.items()}
    print(f"{'mode':<22} {'CPU ms/frame (median)':>22} {'ratio':>7}")
    for mode in MODES:
        print(f"{mode:<22} {med[mode]:>22.2f} {med[mode] / med[MODES[0]]:>7.3f}")
    ratio = med[MODES[1]] / med[MODES[0]]
    if ratio > args.max_ratio:
        print(f"{PROG}: gate missed: --serve with no viewer costs {ratio:.3f}x (limit {args.max_ratio})")
        return 3
    return 0


def main(argv=None) -> int:
    """Entry point; returns the exit code (3: the gate missed)."""
    return run_main(PROG, _body, argv)


if __name__ == "__main__":
    sys.exit(main())
