"""Frame sources: camera index, video file, stream URL, or Picamera2
(:class:`PicameraSource`, in :mod:`.picamera`, importable from here).

Live sources (a camera or a stream) are read by a capture thread that keeps
only the newest frame, so the classifier never works on a stale one, and
that reconnects with backoff when the source stops giving frames. A video
file is read frame by frame, every frame, and its end is the end of the run.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from happysad.edge.camera.picamera import PicameraSource
from happysad.edge.errors import HappysadError, UsageError
from happysad.edge.images import opencv_errors_only

_log = logging.getLogger(__name__)

#: Frames of a video file decoded ahead of the loop.
PREFETCH = 4
#: Seconds to wait before reconnect try k (k = 1, 2, ...): 0.5, 1, 2, 4, then 5.
BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 5.0)


class FrameSource:
    """One opened source. ``read`` returns a BGR uint8 frame (H, W, 3), or
    None when the source gave no frame."""

    live = True
    name = ""

    def read(self) -> np.ndarray | None:  # pragma: no cover - interface
        raise NotImplementedError

    def release(self) -> None:  # pragma: no cover - interface
        pass


class OpenCVSource(FrameSource):
    """A camera index, video file or stream URL through ``cv2.VideoCapture``.

    Raises:
        HappysadError: the source does not open.
    """

    def __init__(self, spec: str, width: int | None = None, height: int | None = None, fps: float | None = None):
        self.name = spec
        if spec.isdigit():
            with opencv_errors_only():
                self._cap = cv2.VideoCapture(int(spec))
            if not self._cap.isOpened():
                raise HappysadError(
                    f"camera {spec} could not be opened; check that it is connected "
                    "(ls /dev/video*) or pass a video file with --source"
                )
            # Requests: the driver picks the nearest mode it has; the size
            # it gave is read back from the first frame and printed.
            for prop, value in (
                (cv2.CAP_PROP_FRAME_WIDTH, width),
                (cv2.CAP_PROP_FRAME_HEIGHT, height),
                (cv2.CAP_PROP_FPS, fps),
            ):
                if value:
                    self._cap.set(prop, float(value))
            self.live = True
            return
        self.live = "://" in spec
        if not self.live and not Path(spec).is_file():
            raise UsageError(f"{spec}: no such video file; pass a camera index, a video file, a stream URL or picamera")
        self._cap = cv2.VideoCapture(spec)
        if not self._cap.isOpened():
            what = "stream" if self.live else "video file"
            raise HappysadError(f"{spec}: cannot open the {what}; check the path or URL")

    @property
    def fps(self) -> float:
        """Frame rate the source reports (Hz), 0 when unknown."""
        return float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)

    def read(self):
        ok, frame = self._cap.read()
        if not ok or frame is None:
            return None
        if frame.ndim == 2:
            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
        return frame

    def release(self):
        self._cap.release()


def open_source(
    spec: str, width: int | None = None, height: int | None = None, fps: float | None = None
) -> FrameSource:
    """Open ``spec``: a camera index ("0"), ``picamera``, a stream URL or a video file.

    Args:
        width, height: frame size asked of a camera (pixels; for
            ``picamera`` the stream classified, 640x480 when not given).
        fps: frame rate asked of a camera, Hz. A video file or stream has
            its own size and rate; these are ignored there.

    Raises:
        HappysadError: it does not open; the message says what to check.
    """
    if spec == "picamera":
        return PicameraSource((width or 640, height or 480), fps)
    return OpenCVSource(spec, width, height, fps)


class Capture:
    """Frames from a source, with reconnects for live ones.

    For a live source a daemon thread reads continuously and keeps only the
    newest frame; frames replaced before the loop took them are counted in
    ``dropped``. When the source stops giving frames the thread closes it and
    reopens it after :data:`BACKOFF_S` waits, saying so on stderr; after
    ``reconnect_tries`` failed tries in a row it gives up and :meth:`read`
    raises. A video file is read every frame, :data:`PREFETCH` frames ahead.

    Args:
        spec: what :func:`open_source` takes.
        reconnect_tries: reopen attempts before giving up (0: never retry).
        pace: play a video file at its own frame rate instead of as fast as
            it decodes (for previews and demos).
        opener: function spec -> FrameSource (for other kinds of source).

    Raises:
        HappysadError: the source does not open at the start.
    """

    def __init__(self, spec: str, reconnect_tries: int = 5, pace: bool = False, opener=open_source):
        self.spec = spec
        self._pace = pace
        self._started = None
        self._read_count = 0
        self.reconnect_tries = reconnect_tries
        self._opener = opener
        self._source = opener(spec)
        self.live = self._source.live
        self.dropped = 0
        self.reconnects = 0
        self._lock = threading.Condition()
        self._frame = None
        self._seq = 0
        self._taken = 0
        self._failed: str | None = None
        self._stop = threading.Event()
        # A live source drops stale frames; a file keeps every frame, decoded
        # a few ahead so decoding overlaps classification (OpenCV releases
        # the GIL while it decodes and detects).
        self._queue = None if self.live else queue.Queue(maxsize=PREFETCH)
        target = self._run if self.live else self._prefetch
        self._thread = threading.Thread(target=target, name="capture", daemon=True)
        self._thread.start()

    def _reopen(self) -> bool:
        self._source.release()
        for k in range(1, self.reconnect_tries + 1):
            wait = BACKOFF_S[min(k - 1, len(BACKOFF_S) - 1)]
            _log.warning(
                "source %s stopped giving frames; reconnecting in %g s (try %d/%d)",
                self.spec,
                wait,
                k,
                self.reconnect_tries,
            )
            if self._stop.wait(wait):
                return False
            try:
                self._source = self._opener(self.spec)
            except HappysadError:
                continue
            frame = self._source.read()
            if frame is not None:
                self.reconnects += 1
                _log.warning("source %s is back", self.spec)
                self._publish(frame)
                return True
            self._source.release()
        return False

    def _publish(self, frame):
        with self._lock:
            if self._frame is not None and self._seq > self._taken:
                self.dropped += 1
            self._frame = frame
            self._seq += 1
            self._lock.notify_all()

    def _prefetch(self):
        while not self._stop.is_set():
            if self._pace:
                self._wait_for_frame_time()
            frame = self._source.read()
            while not self._stop.is_set():
                try:
                    self._queue.put(frame, timeout=0.2)
                    break
                except queue.Full:
                    continue
            if frame is None:
                return

    def _run(self):
        while not self._stop.is_set():
            frame = self._source.read()
            if frame is not None:
                self._publish(frame)
                continue
            if self._stop.is_set() or not self._reopen():
                with self._lock:
                    if not self._stop.is_set():
                        self._failed = (
                            f"source {self.spec} gave no frames after "
                            f"{self.reconnect_tries} reconnect tries; check the camera "
                            "or stream and start again"
                        )
                    self._lock.notify_all()
                return

    def read(self) -> np.ndarray | None:
        """The next frame: the newest one for a live source (waiting for one
        newer than the last taken), the next one for a video file.

        Returns:
            BGR uint8 (H, W, 3), or None at the end of a video file or after
            :meth:`close`.

        Raises:
            HappysadError: a live source gave up after its reconnect tries.
        """
        if not self.live:
            while not self._stop.is_set():
                try:
                    return self._queue.get(timeout=0.2)
                except queue.Empty:
                    if not self._thread.is_alive() and self._queue.empty():
                        return None
            return None
        with self._lock:
            while self._seq == self._taken and self._failed is None and not self._stop.is_set():
                self._lock.wait(0.5)
            if self._failed is not None:
                raise HappysadError(self._failed)
            if self._seq == self._taken:
                return None
            self._taken = self._seq
            return self._frame

    @property
    def fps(self) -> float:
        """The source's own frame rate (Hz), 0 when it does not say."""
        return getattr(self._source, "fps", 0.0)

    def _wait_for_frame_time(self) -> None:
        fps = self.fps or 30.0
        now = time.monotonic()
        if self._started is None:
            self._started = now
        due = self._started + self._read_count / fps
        self._read_count += 1
        if due > now:
            self._stop.wait(due - now)

    def request_stop(self) -> None:
        """Make :meth:`read` return None soon; safe to call from a signal handler."""
        self._stop.set()

    def close(self) -> None:
        """Stop the capture thread and release the source."""
        self._stop.set()
        with self._lock:
            self._lock.notify_all()
        self._thread.join(timeout=5)
        self._source.release()
