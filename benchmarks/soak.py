"""``python -m happysad.benchmarks.soak``: the camera loop over a long recorded video.

Reports frames processed, frames whose classification failed, and the
process's resident memory after warm-up and at the end. Goal: growth under
5 MB over at least 10,000 frames (exit status 3 when missed).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from happysad.edge import Classifier
from happysad.edge.camera.loop import run as run_camera
from happysad.edge.camera.options import CAMERA_DETECTOR, DETECT_WIDTH, MIN_FACE, CameraOptions
from happysad.edge.console import ArgumentParser, positive_int, run_main
from happysad.edge.faces import make_detector

from .video import face_frames, write_video

PROG = "python -m happysad.benchmarks.soak"
#: Frames before the first memory reading: interpreter arenas, OpenCV's
#: buffers and Python's caches have settled by then.
WARMUP_FRAMES = 500
GOAL_GROWTH_MB = 5.0


def rss_mb() -> float:
    """This process's resident memory (VmRSS), MB (10^6 bytes); 0 where /proc is absent."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        pass
    return 0.0


class MemorySink:
    """Takes the loop's JSON lines; notes RSS after warm-up and at every 1,000th frame."""

    def __init__(self):
        self.lines = 0
        self.samples: list[tuple[int, float]] = []

    def write(self, text: str) -> int:
        self.lines += text.count("\n")
        if self.lines == WARMUP_FRAMES or (self.lines > WARMUP_FRAMES and self.lines % 1000 == 0):
            self.samples.append((self.lines, rss_mb()))
        return len(text)

    def flush(self) -> None:
        pass


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("model", metavar="MODEL", help="the .tflite or .onnx file a device runs")
    p.add_argument(
        "--data",
        metavar="DIR",
        required=True,
        help="labelled face photos to build the video from (make passes ../shared/data/fer2013-happy-sad)",
    )
    p.add_argument("--frames", type=positive_int, default=10000, help="frames in the video")
    p.add_argument("--workdir", metavar="DIR", default="runs/soak", help="where the video goes")
    return p


def _body(argv) -> int:
    args = build_parser().parse_args(argv)
    # The camera's own defaults, as `happysad-edge camera` sets them up.
    clf = Classifier(args.model, detector=make_detector(CAMERA_DETECTOR, MIN_FACE, DETECT_WIDTH, fallback=False))
    video = Path(args.workdir) / f"soak-{args.frames}.avi"
    if not video.exists():
        print(f"writing a {args.frames}-frame video to {video}", file=sys.stderr, flush=True)
        write_video(video, face_frames(args.data, 240, size=(320, 240), face_px=144), total=args.frames)
    sink = MemorySink()
    start_rss = rss_mb()
    t0 = time.perf_counter()
    summary = run_camera(clf, CameraOptions(source=str(video), headless=True), out=sink)
    seconds = time.perf_counter() - t0
    # Both readings inside the loop, at the same point of a frame's work.
    first = sink.samples[0][1] if sink.samples else start_rss
    last = sink.samples[-1][1] if sink.samples else rss_mb()
    growth = last - first
    print(
        f"frames {summary['frames']} ({summary['frames_with_face']} with a face), errors {summary['errors']}, "
        f"{summary['frames'] / seconds:.1f} FPS over {seconds:.0f} s"
    )
    print(
        f"resident memory: {start_rss:.1f} MB at start, {first:.1f} MB after {WARMUP_FRAMES} frames, "
        f"{last:.1f} MB at frame {sink.samples[-1][0] if sink.samples else summary['frames']}: "
        f"growth {growth:+.2f} MB (goal < {GOAL_GROWTH_MB:g} MB)"
    )
    print("samples (frame: MB): " + ", ".join(f"{n}: {mb:.1f}" for n, mb in sink.samples))
    if summary["frames"] < args.frames or growth >= GOAL_GROWTH_MB or summary["errors"]:
        print(
            f"{PROG}: missed: {summary['frames']} of {args.frames} frames, {summary['errors']} errors, "
            f"growth {growth:+.2f} MB",
            file=sys.stderr,
        )
        return 3
    return 0


def main(argv=None) -> int:
    """Entry point; returns the exit code (3 when the goal is missed)."""
    return run_main(PROG, _body, argv)


if __name__ == "__main__":
    sys.exit(main())
