"""The camera loop: frames in, largest face classified, annotated out."""
from __future__ import annotations

import collections
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .classifier import Classifier, Prediction
from .errors import HappysadError

#: Frames over which the displayed FPS is averaged, as the TFLite Raspberry
#: Pi examples do, so the figure does not jitter frame to frame.
FPS_WINDOW = 10


@dataclass
class CameraOptions:
    """Settings of :func:`run`.

    Attributes:
        source: camera index ("0"), video file path, or stream URL.
        headless: print one JSON line per frame instead of showing a window.
        max_frames: stop after this many frames (0: run until the source ends).
    """

    source: str = "0"
    headless: bool = False
    max_frames: int = 0


def open_source(source: str) -> cv2.VideoCapture:
    """Open a camera index, video file or stream URL.

    Raises:
        HappysadError: the source cannot be opened.
    """
    if source.isdigit():
        # OpenCV logs a warning per backend it tries; the error below says it once.
        log = cv2.utils.logging
        level = log.getLogLevel()
        log.setLogLevel(log.LOG_LEVEL_ERROR)
        try:
            cap = cv2.VideoCapture(int(source))
        finally:
            log.setLogLevel(level)
        if not cap.isOpened():
            raise HappysadError(f"camera {source} could not be opened; check that it is "
                                "connected (ls /dev/video*) or pass a video file with --source")
        return cap
    if "://" not in source and not Path(source).is_file():
        raise HappysadError(f"{source}: no such video file; pass a camera index, a video file or a stream URL")
    cap = cv2.VideoCapture(source)
    if not cap.isOpened():
        raise HappysadError(f"{source}: cannot open as video; check the file or stream URL")
    return cap


def annotate(frame: np.ndarray, results: list[Prediction], fps: float) -> np.ndarray:
    """Draw face boxes, label, confidence and FPS onto ``frame`` in place."""
    for r in results:
        if r.face is None:
            continue
        x, y, w, h = r.face
        color = (0, 200, 0) if r.label == "happy" else (0, 0, 220)
        cv2.rectangle(frame, (x, y), (x + w, y + h), color, 2)
        cv2.putText(frame, f"{r.label} {r.confidence:.0%}", (x, max(12, y - 6)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.6, color, 2)
    cv2.putText(frame, f"{fps:.1f} FPS", (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2)
    return frame


def _display_available() -> bool:
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    try:
        cv2.namedWindow("happysad")
        return True
    except cv2.error:  # opencv-python-headless has no GUI
        return False


def run(classifier: Classifier, options: CameraOptions, out=sys.stdout) -> dict:
    """Classify frames from ``options.source`` until it ends or is stopped.

    Returns:
        summary dict: frames, faces (frames with a face), seconds, fps.

    Raises:
        HappysadError: the source cannot be opened.
    """
    cap = open_source(options.source)
    headless = options.headless
    if not headless and not _display_available():
        print("note: no display available; printing one JSON line per frame (use --headless "
              "to say so)", file=sys.stderr)
        headless = True
    stop = []
    old = signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    times = collections.deque(maxlen=FPS_WINDOW)
    frames = with_face = 0
    start = time.perf_counter()
    try:
        while not stop and (not options.max_frames or frames < options.max_frames):
            t0 = time.perf_counter()
            ok, frame = cap.read()
            if not ok:
                break
            capture_ms = (time.perf_counter() - t0) * 1e3
            results = classifier.classify_faces(frame, largest_only=True)
            frames += 1
            with_face += bool(results)
            times.append(time.perf_counter())
            fps = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
            if headless:
                ms = dict(results[0].timings) if results else {}
                ms["capture"] = capture_ms
                ms["total"] = (time.perf_counter() - t0) * 1e3
                record = {"frame": frames, "faces": [r.to_dict() for r in results],
                          "fps": round(fps, 2), "ms": {k: round(v, 3) for k, v in ms.items()}}
                out.write(json.dumps(record) + "\n")
                out.flush()
            else:
                cv2.imshow("happysad", annotate(frame, results, fps))
                if cv2.waitKey(1) & 0xFF in (27, ord("q")):
                    break
    except KeyboardInterrupt:
        pass
    finally:
        cap.release()
        signal.signal(signal.SIGTERM, old)
        if not headless:
            cv2.destroyAllWindows()
    seconds = time.perf_counter() - start
    return {"frames": frames, "frames_with_face": with_face, "seconds": round(seconds, 3),
            "fps": round(frames / seconds, 2) if seconds > 0 else 0.0}
