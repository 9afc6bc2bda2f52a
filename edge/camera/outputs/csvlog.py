"""The CSV face log of the camera loop (``happysad-edge camera --log``)."""

from __future__ import annotations

import csv
import datetime as _dt
import logging
from pathlib import Path

from happysad.edge.camera.outputs.base import FrameResult, Output
from happysad.edge.errors import HappysadError
from happysad.edge.runtime.prediction import Prediction

_log = logging.getLogger(__name__)


class FaceLog(Output):
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

    def emit(self, result: FrameResult) -> bool:
        """:meth:`write` of the frame's predictions."""
        self.write(result.number, result.predictions)
        return False

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
                _log.warning(
                    "--log: cannot write (%s); rows are lost until it can, the camera goes on", exc.strerror or exc
                )
            self.failing = True
        else:
            if self.failing:
                _log.warning("--log: writing again")
            self.failing = False

    def close(self) -> None:
        try:
            self._fh.close()
        except OSError:  # the last buffered row on a full disk: already reported
            pass
