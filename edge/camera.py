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
import csv
import datetime as _dt
import functools
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .classifier import Classifier, Prediction, stat_stamp
from .errors import HappysadError
from .fileio import output_target, temp_name
from .metadata import UNCERTAIN
from .preprocess import channels_of
from .smoothing import ScoreSmoother
from .sources import Capture, open_source

#: Frames over which the displayed FPS is averaged, as the TFLite Raspberry
#: Pi examples do, so the figure does not jitter frame to frame.
FPS_WINDOW = 10
#: Camera defaults (``happysad-edge camera``): faces are searched on a copy
#: this wide, no smaller than this (pixels of the frame), on every Nth frame.
DETECT_WIDTH = 320
MIN_FACE = 48
DETECT_EVERY = 2
#: The camera's default face detector: BlazeFace short range, made for
#: faces within a couple of metres of the lens. On the 640x480 camera test
#: frames it found a face in the most frames (296 of 300; YuNet 291, Haar
#: 223) in the least time (1.6 ms, YuNet 3.1, Haar 7.9); photos of any
#: kind keep YuNet (edge.faces.DEFAULT_DETECTOR), which finds more faces
#: farther away (README, "Faces in ordinary photos").
CAMERA_DETECTOR = "blazeface"
#: How often the model file is checked for a replacement, seconds.
RELOAD_CHECK_S = 1.0


@dataclass
class CameraOptions:
    """Settings of :func:`run`.

    Attributes:
        source: camera index ("0"), video file, stream URL, or "picamera".
        headless: print one JSON line per frame instead of showing a window.
        max_frames: stop after this many frames (0: until the source ends).
        faces: "largest" or "all".
        no_face: classify the whole frame, no face detection.
        smooth: weight of the history in each face's score average, 0..1 (0: off).
        serve: "HOST:PORT" of the MJPEG preview, or None.
        serve_token: the token every preview request must carry, or None.
        metrics: "HOST:PORT" (or "PORT", loopback) of the Prometheus
            metrics endpoint (:mod:`edge.metrics_server`), or None.
        record: video file for the annotated frames (.avi: MJPG, .mp4: mp4v), or None.
        log: CSV file, one row appended per classified face, or None.
        reconnect_tries: reopen attempts for a live source that stops.
        pace: play a video file at its own frame rate.
        detect_every: search for faces on every Nth frame; the frames in
            between classify the faces found last (their boxes held), so the
            loop keeps up with the camera while the detector runs less often.
        width, height, fps: frame size (pixels) and rate (Hz) asked of a
            camera; None leaves the camera's own.
    """

    source: str = "0"
    headless: bool = False
    max_frames: int = 0
    faces: str = "largest"
    no_face: bool = False
    smooth: float = 0.0
    serve: str | None = None
    serve_token: str | None = None
    metrics: str | None = None
    record: str | None = None
    log: str | None = None
    reconnect_tries: int = 5
    pace: bool = False
    detect_every: int = DETECT_EVERY
    width: int | None = None
    height: int | None = None
    fps: float | None = None


class FaceTracker:
    """Detect on every ``every``-th frame and hold those faces in between.

    A face moves little in 1/15 s, and the crop's margin absorbs it: holding
    the boxes for a frame or two costs nothing in accuracy that was measured
    and takes the detector's time off those frames.
    """

    def __init__(self, every: int = 1):
        self.every = max(1, every)
        self._faces: list = []
        self._age = 0

    def faces(self, clf: Classifier, frame, largest_only: bool) -> tuple[list, float]:
        """(faces for this frame, detection ms: 0 on a frame that reused the last ones)."""
        if self._age % self.every == 0 or not self._faces:
            self._faces, detect_ms = clf.detect_faces(frame, largest_only)
            self._age = 1
            return self._faces, detect_ms
        self._age += 1
        return self._faces, 0.0


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
LABEL_COLORS = {"happy": (0, 160, 0), "sad": (0, 0, 200), UNCERTAIN: (110, 110, 110)}
PALETTE = ((200, 120, 0), (0, 140, 200), (160, 0, 160), (0, 160, 160), (120, 60, 0))


def label_color(label: str) -> tuple[int, int, int]:
    """The BGR colour a label is drawn in: fixed for happy, sad and
    uncertain, else one of :data:`PALETTE` chosen by the label's name (the
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


class ModelWatcher:
    """Switch to a new model file when the one in use is replaced.

    Shipping a model means copying it in under a temporary name and renaming
    it over the old one. The watcher notices the new file (inode, size or
    mtime changed), loads it, checks that it classifies, and only then hands
    it over; a file that fails is refused with a message and the old model
    keeps running. A model being copied in place (no rename) is picked up
    once its size has stopped changing.
    """

    def __init__(self, classifier: Classifier, threads=None, backend=None):
        self.classifier = classifier
        self._threads, self._backend = threads, backend
        # The file as it was when the classifier loaded it, so a replacement
        # made before the loop started is noticed too.
        self._stamp = classifier.file_stamp
        self._next = time.monotonic() + RELOAD_CHECK_S

    def poll(self) -> Classifier | None:
        """Call between frames; returns the new classifier when it switched, else None."""
        now = time.monotonic()
        if now < self._next:
            return None
        self._next = now + RELOAD_CHECK_S
        stamp = stat_stamp(self.classifier.path)
        if stamp is None or stamp == self._stamp:
            return None
        self._stamp = stamp
        old = self.classifier
        try:
            new = Classifier(
                old.path,
                self._threads,
                self._backend,
                detector=old._detector,
                min_confidence=old.min_confidence,
                tta=old.tta,
            )
            h, w = new.metadata.image_size
            channels = channels_of(new.metadata.color)
            # It must run, not only load: the edge cases of the input range
            # (the Classifier ran a mid-grey self-test already).
            for value in (0, 255):
                if not np.all(np.isfinite(new.scores(np.full((h, w, channels), value, np.uint8)))):
                    raise HappysadError(f"{old.path}: the new model gives a non-finite score")
        except Exception as exc:  # whatever a bad file raises, the running model stays
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            print(f"refused the new model file: {reason}; still running the previous one", file=sys.stderr, flush=True)
            return None
        self.classifier = new
        print(
            f"switched to the new model file {old.path} ({new.metadata.extra.get('format', '?')}, "
            f"exported {new.metadata.extra.get('exported_at', '?')})",
            file=sys.stderr,
            flush=True,
        )
        return new


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


class FaceLog:
    """Appends one CSV row per classified face; writes the header to a new file.

    Columns: time (UTC, ISO 8601), frame, label, confidence, one score per
    label, x, y, w, h (empty when the whole frame was classified).
    """

    def __init__(self, path: str, labels):
        self.labels = tuple(labels)
        new = not Path(path).exists() or Path(path).stat().st_size == 0
        try:
            self._fh = open(path, "a", newline="", buffering=1)
        except OSError as exc:
            raise HappysadError(f"--log {path}: cannot open for appending ({exc.strerror or exc})") from None
        self._csv = csv.writer(self._fh)
        self.failing = False
        if new:
            self._guarded(
                lambda: self._csv.writerow(
                    [
                        "time",
                        "frame",
                        "label",
                        "confidence",
                        *(f"score_{name}" for name in self.labels),
                        "x",
                        "y",
                        "w",
                        "h",
                    ]
                )
            )

    def write(self, frame_no: int, results: list[Prediction]) -> None:
        """Append the rows; a full disk or an I/O error is reported once on
        stderr (and again when it clears), and the camera loop goes on."""
        now = _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")

        def rows():
            for r in results:
                box = list(r.face) if r.face else ["", "", "", ""]
                self._csv.writerow(
                    [
                        now,
                        frame_no,
                        r.label,
                        f"{r.confidence:.4f}",
                        *(f"{r.scores.get(name, 0.0):.4f}" for name in self.labels),
                        *box,
                    ]
                )

        if results:  # a frame with no face writes nothing, and proves nothing about the disk
            self._guarded(rows)

    def _guarded(self, write) -> None:
        """Run ``write``; an OSError is reported on stderr once (and again
        when writing works again), never raised."""
        try:
            write()
        except OSError as exc:
            if not self.failing:
                print(
                    f"--log: cannot write ({exc.strerror or exc}); rows are lost until it can, the camera goes on",
                    file=sys.stderr,
                    flush=True,
                )
            self.failing = True
        else:
            if self.failing:
                print("--log: writing again", file=sys.stderr, flush=True)
            self.failing = False

    def close(self) -> None:
        try:
            self._fh.close()
        except OSError:  # the last buffered row on a full disk: already reported
            pass


def _classify_frame(
    clf: Classifier, frame, options: CameraOptions, tracker: FaceTracker
) -> tuple[list[Prediction], float]:
    """The frame's predictions and the detection time (ms, 0 with --no-face
    and on frames that held the last faces)."""
    if options.no_face:
        return [clf.classify(frame)], 0.0
    faces, detect_ms = tracker.faces(clf, frame, largest_only=options.faces == "largest")
    return clf.classify_boxes(frame, faces, detect_ms), detect_ms


def _record_model(metrics, clf: Classifier) -> None:
    """The model in use, as the metrics' info (sha256 of the file loaded)."""
    from . import __version__
    from .verify import file_digest

    try:
        digest = file_digest(clf.path)[1]
    except HappysadError:
        digest = "unreadable"
    metrics.set_model(clf.path, digest, clf.metadata.extra.get("format", "?"), __version__)


def _stage_ms(results: list[Prediction], capture_ms: float, detect_ms: float, total_ms: float) -> dict:
    ms = {"capture": capture_ms, "detect": detect_ms, "crop": 0.0, "preprocess": 0.0, "inference": 0.0}
    for r in results:
        ms["crop"] += r.timings.get("crop", 0.0)
        ms["preprocess"] += r.timings.get("preprocess", 0.0)
        ms["inference"] += r.timings.get("inference", 0.0)
    ms["total"] = total_ms
    return {k: round(v, 3) for k, v in ms.items()}


def run(classifier: Classifier, options: CameraOptions, out=sys.stdout, threads=None, backend=None) -> dict:
    """Classify frames from ``options.source`` until it ends or is stopped.

    SIGINT and SIGTERM end the loop between frames; the camera is released
    and every output flushed and closed.

    Returns:
        summary dict: frames, frames_with_face, errors (frames whose
        classification failed; the loop goes on), dropped (live frames
        replaced before they were classified), reconnects, seconds, fps
        (Hz), stopped_by_signal (SIGINT, SIGTERM or SIGHUP ended it).

    Raises:
        HappysadError: the source cannot be opened, or a live source gave up
            after its reconnect tries (outputs are closed first).
    """
    from .preview import PreviewServer, parse_address

    opener = functools.partial(open_source, width=options.width, height=options.height, fps=options.fps)
    capture = Capture(options.source, options.reconnect_tries, options.pace, opener=opener)
    headless = options.headless
    why = None if headless else display_available()
    if why:
        print(f"note: no window: {why}; printing one JSON line per frame (use --headless to say so)", file=sys.stderr)
        headless = True
    server = recorder = log = metrics = None
    stop = []

    def on_signal(*_):
        stop.append(True)
        capture.request_stop()

    # SIGHUP too: a closed terminal or a service manager's reload ends the
    # loop like Ctrl-C, the recording renamed into place and the log closed.
    handlers = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    watcher = ModelWatcher(classifier, threads, backend)
    clf = classifier
    smoother = ScoreSmoother(options.smooth, clf.labels, clf.metadata.threshold, clf.min_confidence)
    tracker = FaceTracker(options.detect_every)
    times = collections.deque(maxlen=FPS_WINDOW)
    frames = with_face = errors = 0
    start = time.perf_counter()
    try:
        if options.metrics:
            from .metrics_server import MetricsServer

            metrics = MetricsServer(*parse_address(options.metrics), clf.labels)
            _record_model(metrics, clf)
            print(f"metrics: http://{metrics.address[0]}:{metrics.address[1]}/metrics", file=sys.stderr, flush=True)
        if options.serve:
            server = PreviewServer(*parse_address(options.serve), token=options.serve_token)
            print(f"preview: {server.url}", file=sys.stderr, flush=True)
        if options.log:
            log = FaceLog(options.log, clf.labels)
        while not stop and (not options.max_frames or frames < options.max_frames):
            t0 = time.perf_counter()
            frame = capture.read()
            if frame is None:
                break
            capture_ms = (time.perf_counter() - t0) * 1e3
            if frames == 0:
                asked = (
                    f" (asked {options.width or '-'}x{options.height or '-'}"
                    + (f" at {options.fps:g} FPS)" if options.fps else ")")
                    if options.width or options.height or options.fps
                    else ""
                )
                print(
                    f"source {options.source}: {frame.shape[1]}x{frame.shape[0]}"
                    + (f" at {capture.fps:g} FPS" if capture.fps else "")
                    + asked,
                    file=sys.stderr,
                    flush=True,
                )
            new = watcher.poll()
            if new is not None:
                clf = new
                smoother = ScoreSmoother(options.smooth, clf.labels, clf.metadata.threshold, clf.min_confidence)
                if metrics:
                    _record_model(metrics, clf)
            t1 = time.perf_counter()
            detect_ms = 0.0
            try:
                found, detect_ms = _classify_frame(clf, frame, options, tracker)
                results = smoother.update(found)
            except (HappysadError, cv2.error) as exc:
                # One bad frame must not end a run that is meant to last months.
                errors += 1
                if metrics:
                    metrics.error()
                if errors <= 3 or errors % 1000 == 0:
                    print(
                        f"frame {frames + 1}: {str(exc).splitlines()[0]} ({errors} errors so far)",
                        file=sys.stderr,
                        flush=True,
                    )
                results = []
            frames += 1
            with_face += bool(results) and not options.no_face
            times.append(time.perf_counter())
            fps = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
            if log:
                log.write(frames, results)
            if metrics or headless:  # the stage times, for whoever reads them
                ms = _stage_ms(results, capture_ms, detect_ms, (time.perf_counter() - t1) * 1e3 + capture_ms)
            if metrics:
                metrics.observe(results, ms, capture.dropped, capture.reconnects)
            if headless:
                record = {
                    "frame": frames,
                    "faces": [r.to_dict() for r in results],
                    "fps": round(fps, 2),
                    "dropped": capture.dropped,
                    "ms": ms,
                }
                out.write(json.dumps(record) + "\n")
                out.flush()
            if server or options.record or not headless:
                annotate(frame, results, fps)
            if server:
                server.publish(frame)
            if options.record:
                if recorder is None:
                    recorder = Recorder(options.record, capture.fps, (frame.shape[1], frame.shape[0]))
                recorder.write(frame)
            if not headless:
                cv2.imshow("happysad", frame)
                if cv2.waitKey(1) & 0xFF in (27, ord("q")):
                    break
    finally:
        capture.close()
        for sig, old in handlers.items():
            signal.signal(sig, old)
        for closer in (recorder, log, server, metrics):
            if closer is not None:
                closer.close()
        if not headless:
            cv2.destroyAllWindows()
        out.flush()
    seconds = time.perf_counter() - start
    return {
        "frames": frames,
        "frames_with_face": with_face,
        "errors": errors,
        "dropped": capture.dropped,
        "stopped_by_signal": bool(stop),
        "reconnects": capture.reconnects,
        "seconds": round(seconds, 3),
        "fps": round(frames / seconds, 2) if seconds > 0 else 0.0,
    }
