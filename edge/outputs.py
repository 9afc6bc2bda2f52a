"""What the camera loop gives out, frame by frame: each output takes a
:class:`FrameResult` (``emit``) and is closed at the end (``close``).

JSON lines (``--headless``), the window, the MJPEG preview (``--serve``),
the recorded video (``--record``), the CSV log (``--log``) and the
Prometheus metrics (``--metrics``) all sit behind that one interface, so
the loop itself only captures, classifies and hands the result on.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .errors import HappysadError
from .fileio import output_target, temp_name
from .metadata import UNCERTAIN
from .prediction import Prediction

_log = logging.getLogger(__name__)


@dataclass
class FrameResult:
    """One frame, classified.

    Attributes:
        number: 1 for the first frame.
        image: the uint8 BGR frame (drawn on by :func:`annotate` for the
            outputs that show it).
        predictions: the faces' (or the whole frame's) :class:`Prediction`.
        fps: frames per second over the last few frames, Hz.
        dropped, reconnects: the capture's counts so far.
        ms: per-stage times in ms (capture, detect, crop, preprocess,
            inference, total); empty when no output reads them.
        source_fps: the source's own frame rate, Hz (0 when unknown).
        extra: what an output adds for the outputs after it (``"mqtt"``:
            :meth:`edge.mqtt.MqttPublisher.stats`).
    """

    number: int
    image: np.ndarray
    predictions: list
    fps: float
    dropped: int = 0
    reconnects: int = 0
    ms: dict = field(default_factory=dict)
    source_fps: float = 0.0
    extra: dict = field(default_factory=dict)


class Output:
    """An output of the camera loop."""

    #: Draws on the frame: :func:`annotate` runs before it is given the frame.
    shows_frame = False
    #: Reads :attr:`FrameResult.ms`.
    needs_timings = False

    def emit(self, result: FrameResult) -> bool:
        """Take one frame's result; True asks the loop to stop (a key in the window)."""
        raise NotImplementedError  # pragma: no cover

    def close(self) -> None:
        """Flush and release; called once, however the loop ended."""


class JsonLines(Output):
    """One JSON object per frame: ``{"frame", "faces", "fps", "dropped", "ms"}``."""

    needs_timings = True

    def __init__(self, stream):
        self.stream = stream

    def emit(self, result: FrameResult) -> bool:
        record = {
            "frame": result.number,
            "faces": [r.to_dict() for r in result.predictions],
            "fps": round(result.fps, 2),
            "dropped": result.dropped,
            "ms": result.ms,
            **result.extra,
        }
        self.stream.write(json.dumps(record) + "\n")
        self.stream.flush()
        return False

    def close(self) -> None:
        self.stream.flush()


class Window(Output):
    """The annotated frames in a window; Esc or q stops the loop."""

    shows_frame = True

    def emit(self, result: FrameResult) -> bool:
        cv2.imshow("happysad", result.image)
        return cv2.waitKey(1) & 0xFF in (27, ord("q"))

    def close(self) -> None:
        cv2.destroyAllWindows()


class Preview(Output):
    """The annotated frames on the MJPEG preview page (:class:`edge.preview.PreviewServer`)."""

    shows_frame = True

    def __init__(self, server):
        self.server = server

    def emit(self, result: FrameResult) -> bool:
        self.server.publish(result.image)
        return False

    def close(self) -> None:
        self.server.close()


class Metrics(Output):
    """Counters and stage latencies for Prometheus (:class:`edge.metrics_server.MetricsServer`)."""

    needs_timings = True

    def __init__(self, server):
        self.server = server

    def emit(self, result: FrameResult) -> bool:
        self.server.observe(result.predictions, result.ms, result.dropped, result.reconnects)
        if "mqtt" in result.extra:
            self.server.observe_mqtt(result.extra["mqtt"])
        return False

    def close(self) -> None:
        self.server.close()


class Mqtt(Output):
    """State, events and availability over MQTT (:class:`edge.mqtt.MqttPublisher`);
    its counts go into ``result.extra["mqtt"]`` for the JSON line and the metrics."""

    def __init__(self, publisher):
        self.publisher = publisher
        self.final: dict | None = None

    def emit(self, result: FrameResult) -> bool:
        self.publisher.update(result.predictions, result.number)
        result.extra["mqtt"] = self.publisher.stats()
        return False

    def close(self) -> None:
        self.final = self.publisher.close()


class Recording(Output):
    """The annotated video (:class:`Recorder`), opened at the first frame's size."""

    shows_frame = True

    def __init__(self, path: str):
        self.path = path
        self.recorder = None

    def emit(self, result: FrameResult) -> bool:
        if self.recorder is None:
            size = (result.image.shape[1], result.image.shape[0])
            self.recorder = Recorder(self.path, result.source_fps, size)
        self.recorder.write(result.image)
        return False

    def close(self) -> None:
        if self.recorder is not None:
            self.recorder.close()


def _label(frame: np.ndarray, text: str, org: tuple[int, int], color, scale: float) -> None:
    """``text`` in white on a filled box of ``color``, its bottom-left at ``org``:
    readable on any background, at any frame size."""
    thickness = max(1, round(scale * 2))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    x, y = org
    y = max(th + base + 2, y)
    cv2.rectangle(frame, (x, y - th - base - 4), (x + tw + 6, y + 2), color, cv2.FILLED)
    cv2.putText(
        frame, text, (x + 3, y - base), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness, cv2.LINE_AA
    )


#: BGR colours of the preview's labels; other labels take :data:`PALETTE` in turn.
LABEL_COLORS = {"happy": (0, 160, 0), "sad": (0, 0, 200), "neutral": (150, 110, 40), UNCERTAIN: (110, 110, 110)}


PALETTE = ((200, 120, 0), (0, 140, 200), (160, 0, 160), (0, 160, 160), (120, 60, 0))


def label_color(label: str) -> tuple[int, int, int]:
    """The BGR colour a label is drawn in: fixed for happy, sad, neutral
    and uncertain, else one of :data:`PALETTE` chosen by the label's name (the
    same colour in every frame and run)."""
    if label in LABEL_COLORS:
        return LABEL_COLORS[label]
    return PALETTE[sum(label.encode()) % len(PALETTE)]


def annotate(frame: np.ndarray, results: list[Prediction], fps: float) -> np.ndarray:
    """Draw face boxes, label, confidence and FPS onto ``frame`` in place.

    Text is drawn white on a filled box in the label's colour, its size
    scaled to the frame (0.6 at 640 px wide, never under 0.45), so it reads
    on a 1080p preview as on a 320 px one."""
    scale = max(0.45, frame.shape[1] / 640 * 0.6)
    for r in results:
        color = label_color(r.label)
        text = f"{r.label} {r.confidence:.0%}"
        if r.face is None:
            _label(frame, text, (8, int(50 * scale / 0.6)), color, scale)
            continue
        x, y, w, h = r.face
        cv2.rectangle(frame, (x, y), (x + w, y + h), color, max(2, round(scale * 3)))
        _label(frame, text, (x, y - 4), color, scale)
    _label(frame, f"{fps:.1f} FPS", (8, int(24 * scale / 0.6)), (60, 60, 60), scale)
    return frame


def display_available() -> str | None:
    """None when a window can be shown, else why not (one line): no display,
    or an OpenCV built without a GUI (opencv-python-headless, the edge extra's)."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "no display ($DISPLAY and $WAYLAND_DISPLAY are unset)"
    try:
        cv2.namedWindow("happysad")
        return None
    except cv2.error:
        return "this OpenCV has no GUI (opencv-python-headless); use --serve PORT to watch in a browser"


class Recorder:
    """The annotated video, written under a temporary name and renamed on close.

    Raises:
        HappysadError: the writer cannot be opened.
    """

    def __init__(self, path: str, fps: float, size: tuple[int, int]):
        self.path, direct = output_target(path)
        fourcc = "mp4v" if self.path.suffix.lower() in (".mp4", ".m4v", ".mov") else "MJPG"
        # A FIFO or device is written as it is (a pipe to a streaming program), never replaced.
        self._tmp = self.path if direct else temp_name(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter_fourcc(*fourcc), fps or 15.0, size)
        if not self._writer.isOpened():
            raise HappysadError(
                f"--record {path}: cannot write video here; use a .avi or .mp4 file in a writable folder"
            )

    def write(self, frame: np.ndarray) -> None:
        self._writer.write(frame)

    def close(self) -> None:
        self._writer.release()
        if self._tmp != self.path:
            os.replace(self._tmp, self.path)


def record_model(metrics, clf) -> None:
    """Set the metrics' model info from ``clf`` (the sha256 of the file loaded)."""
    from . import __version__
    from .verify import file_digest

    try:
        digest = file_digest(clf.path)[1]
    except HappysadError:
        digest = "unreadable"
    metrics.set_model(clf.path, digest, clf.metadata.extra.get("format", "?"), __version__)


def open_outputs(options, clf, out, headless: bool) -> list[Output]:
    """The outputs a :class:`edge.camera.CameraOptions` asks for, in the order
    they take each frame (MQTT first: its counts go to the JSON line and the metrics).

    Raises:
        HappysadError: an output cannot be opened (its address or file); those
            opened already are closed.
    """
    outputs: list[Output] = []
    try:
        _open_each(options, clf, out, headless, outputs)
    except BaseException:
        for output in outputs:
            output.close()
        raise
    return outputs


def _open_each(options, clf, out, headless: bool, outputs: list) -> None:
    from .facelog import FaceLog
    from .preview import PreviewServer, parse_address

    if options.mqtt:
        from .mqtt import MqttPublisher

        publisher = MqttPublisher(options.mqtt, clf.labels, Path(clf.path).name)
        publisher.start()
        outputs.append(Mqtt(publisher))
    if options.log:
        outputs.append(FaceLog(options.log, clf.labels))
    if options.metrics:
        from .metrics_server import MetricsServer

        server = MetricsServer(*parse_address(options.metrics), clf.labels)
        outputs.append(Metrics(server))
        record_model(server, clf)
        _log.info("metrics: http://%s:%s/metrics", *server.address[:2])
    if headless:
        outputs.append(JsonLines(out))
    if options.serve:
        preview = PreviewServer(*parse_address(options.serve), token=options.serve_token)
        outputs.append(Preview(preview))
        _log.info("preview: %s", preview.url)
    if options.record:
        outputs.append(Recording(options.record))
    if not headless:
        outputs.append(Window())
