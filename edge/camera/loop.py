"""The camera loop: frames in, faces classified, annotated frames and
readings out, for days on end.

One interpreter for the whole run (never one per frame). Outputs: a window
where a display exists, or one JSON line per frame (``--headless``); an
MJPEG preview page (``--serve``); a recorded video (``--record``); a CSV
row per classified face (``--log``). A model file replaced under the
running loop is verified and switched to between frames.
"""

from __future__ import annotations

import collections
import functools
import logging
import signal
import sys
import time

import cv2
import numpy as np

from happysad.edge.camera.hotswap import ModelWatcher
from happysad.edge.camera.options import CameraOptions
from happysad.edge.camera.outputs import open_outputs
from happysad.edge.camera.outputs.base import FrameResult, Output
from happysad.edge.camera.outputs.draw import annotate
from happysad.edge.camera.outputs.mqtt_output import Mqtt
from happysad.edge.camera.outputs.prometheus import Metrics, record_model
from happysad.edge.camera.outputs.window import display_available
from happysad.edge.camera.smoothing import ScoreSmoother
from happysad.edge.camera.sources import Capture, open_source
from happysad.edge.classifier import Classifier
from happysad.edge.errors import HappysadError
from happysad.edge.runtime.prediction import Prediction

_log = logging.getLogger(__name__)

#: Frames over which the displayed FPS is averaged, as the TFLite Raspberry
#: Pi examples do, so the figure does not jitter frame to frame.
FPS_WINDOW = 10


class FaceTracker:
    """Detect on every ``every``-th frame and hold those faces in between.

    A face moves little in 1/15 s, and the crop's margin absorbs it: holding
    the boxes for a frame or two costs nothing in accuracy that was measured
    and takes the detector's time off those frames. A frame of another size
    (a stream reconnected at another resolution) is always searched anew.
    """

    def __init__(self, every: int = 1):
        self.every = max(1, every)
        self._faces: list = []
        self._age = 0
        self._shape: tuple = ()

    def faces(self, clf: Classifier, frame, largest_only: bool) -> tuple[list, float]:
        """(faces for this frame, detection ms: 0 on a frame that reused the last ones)."""
        if self._age % self.every == 0 or not self._faces or frame.shape != self._shape:
            self._faces, detect_ms = clf.detect_faces(frame, largest_only)
            self._age, self._shape = 1, frame.shape
            return self._faces, detect_ms
        self._age += 1
        return self._faces, 0.0


def _classify_frame(
    clf: Classifier, frame, options: CameraOptions, tracker: FaceTracker
) -> tuple[list[Prediction], float]:
    """The frame's predictions and the detection time (ms, 0 with --no-face
    and on frames that held the last faces)."""
    if options.no_face:
        return [clf.classify(frame)], 0.0
    faces, detect_ms = tracker.faces(clf, frame, largest_only=options.faces == "largest")
    return clf.classify_boxes(frame, faces, detect_ms), detect_ms


def _stage_ms(results: list[Prediction], capture_ms: float, detect_ms: float, total_ms: float) -> dict:
    ms = {"capture": capture_ms, "detect": detect_ms, "crop": 0.0, "preprocess": 0.0, "inference": 0.0}
    for r in results:
        ms["crop"] += r.timings.get("crop", 0.0)
        ms["preprocess"] += r.timings.get("preprocess", 0.0)
        ms["inference"] += r.timings.get("inference", 0.0)
    ms["total"] = total_ms
    return {k: round(v, 3) for k, v in ms.items()}


def _source_line(options: CameraOptions, frame: np.ndarray, fps: float) -> str:
    """What the source gave (and what was asked of it), for the first frame."""
    asked = ""
    if options.width or options.height or options.fps:
        asked = f" (asked {options.width or '-'}x{options.height or '-'}" + (
            f" at {options.fps:g} FPS)" if options.fps else ")"
        )
    return f"source {options.source}: {frame.shape[1]}x{frame.shape[0]}" + (f" at {fps:g} FPS" if fps else "") + asked


class _Loop:
    """The state carried from frame to frame: the classifier in use, the
    smoother, the tracker, the FPS window and the counts."""

    def __init__(self, clf: Classifier, options: CameraOptions, watcher: ModelWatcher, metrics):
        self.options, self.watcher, self.metrics = options, watcher, metrics
        self.tracker = FaceTracker(options.detect_every)
        self.times = collections.deque(maxlen=FPS_WINDOW)
        self.frames = self.with_face = self.errors = 0
        self.use(clf)

    def use(self, clf: Classifier) -> None:
        """Classify with ``clf`` from now on (a new smoother for its labels)."""
        self.clf = clf
        self.smoother = ScoreSmoother(self.options.smooth, clf.labels, clf.metadata.threshold, clf.min_confidence)
        if self.metrics is not None:
            record_model(self.metrics, clf)

    def step(self, frame: np.ndarray, capture_ms: float, timings: bool) -> tuple[list[Prediction], float, dict]:
        """Classify one frame: (predictions, FPS, stage ms or {} when not ``timings``).

        A frame whose classification fails gives no prediction and is
        counted; the loop goes on (one bad frame must not end a run meant
        to last months).
        """
        new = self.watcher.poll()
        if new is not None:
            self.use(new)
        t1 = time.perf_counter()
        detect_ms = 0.0
        try:
            found, detect_ms = _classify_frame(self.clf, frame, self.options, self.tracker)
            results = self.smoother.update(found)
        except (HappysadError, cv2.error) as exc:
            self.errors += 1
            if self.metrics is not None:
                self.metrics.error()
            if self.errors <= 3 or self.errors % 1000 == 0:
                _log.warning("frame %d: %s (%d errors so far)", self.frames + 1, str(exc).splitlines()[0], self.errors)
            results = []
        self.frames += 1
        self.with_face += bool(results) and not self.options.no_face
        self.times.append(time.perf_counter())
        span = self.times[-1] - self.times[0]
        fps = (len(self.times) - 1) / span if len(self.times) > 1 and span > 0 else 0.0
        ms = _stage_ms(results, capture_ms, detect_ms, (time.perf_counter() - t1) * 1e3 + capture_ms) if timings else {}
        return results, fps, ms


def run(classifier: Classifier, options: CameraOptions, out=sys.stdout, threads=None, backend=None) -> dict:
    """Classify frames from ``options.source`` until it ends or is stopped.

    Each frame is captured, classified (:meth:`_Loop.step`) and handed to
    every output (:mod:`edge.camera.outputs`). SIGINT, SIGTERM and SIGHUP end the
    loop between frames; the camera is released and every output flushed
    and closed.

    Returns:
        summary dict: frames, frames_with_face, errors (frames whose
        classification failed; the loop goes on), dropped (live frames
        replaced before they were classified), reconnects, seconds, fps
        (Hz), stopped_by_signal (SIGINT, SIGTERM or SIGHUP ended it); with
        MQTT, ``mqtt``: the publisher's final counts (events, delivered,
        dropped, :meth:`edge.camera.outputs.mqtt.MqttPublisher.stats`); with a
        FIFO output, ``outputs_dropped``: records not written, by output.

    Raises:
        HappysadError: the source cannot be opened, an output cannot be
            opened, or a live source gave up after its reconnect tries
            (outputs are closed first).
    """
    opener = functools.partial(open_source, width=options.width, height=options.height, fps=options.fps)
    capture = Capture(options.source, options.reconnect_tries, options.pace, opener=opener)
    headless = options.headless
    why = None if headless else display_available()
    if why:
        _log.warning("note: no window: %s; printing one JSON line per frame (use --headless to say so)", why)
        headless = True
    stop: list = []
    handlers = _stop_on_signals(stop, capture)
    outputs: list[Output] = []
    start = time.perf_counter()
    loop = None
    try:
        outputs = open_outputs(options, classifier, out, headless)
        metrics = next((o.server for o in outputs if isinstance(o, Metrics)), None)
        loop = _Loop(classifier, options, ModelWatcher(classifier, threads, backend), metrics)
        timings = any(o.needs_timings for o in outputs)
        while not stop and (not options.max_frames or loop.frames < options.max_frames):
            t0 = time.perf_counter()
            frame = capture.read()
            if frame is None:
                break
            if loop.frames == 0:
                _log.info("%s", _source_line(options, frame, capture.fps))
            results, fps, ms = loop.step(frame, (time.perf_counter() - t0) * 1e3, timings)
            result = FrameResult(
                loop.frames, frame, results, fps, capture.dropped, capture.reconnects, ms, capture.fps or 0.0
            )
            if _emit(outputs, result):
                break
    finally:
        capture.close()
        for sig, old in handlers.items():
            signal.signal(sig, old)
        for output in outputs:
            output.close()
        out.flush()
    return _summary(loop, capture, bool(stop), time.perf_counter() - start, outputs)


def _stop_on_signals(stop: list, capture) -> dict:
    """SIGTERM, SIGINT and SIGHUP append to ``stop`` and wake the capture;
    returns the previous handlers. SIGHUP too: a closed terminal or a
    service manager's reload ends the loop like Ctrl-C, the recording
    renamed into place and the log closed."""

    def on_signal(*_):
        stop.append(True)
        capture.request_stop()

    return {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}


def _emit(outputs: list[Output], result: FrameResult) -> bool:
    """Hand one frame's result to every output, the frame annotated once
    before the first that shows it; True when an output asks to stop."""
    drawn = quit_asked = False
    for output in outputs:
        if output.shows_frame and not drawn:
            annotate(result.image, result.predictions, result.fps)
            drawn = True
        quit_asked |= output.emit(result)
    return quit_asked


def _summary(loop, capture, stopped_by_signal: bool, seconds: float, outputs: list) -> dict:
    """What :func:`run` returns (see there)."""
    frames = loop.frames if loop else 0
    mqtt = next((o.final for o in outputs if isinstance(o, Mqtt)), None)
    drops = {name: n for o in outputs for name, n in o.drops().items()}
    return {
        **({"mqtt": mqtt} if mqtt is not None else {}),
        **({"outputs_dropped": drops} if drops else {}),
        "frames": frames,
        "frames_with_face": loop.with_face if loop else 0,
        "errors": loop.errors if loop else 0,
        "dropped": capture.dropped,
        "stopped_by_signal": stopped_by_signal,
        "reconnects": capture.reconnects,
        "seconds": round(seconds, 3),
        "fps": round(frames / seconds, 2) if seconds > 0 else 0.0,
    }
