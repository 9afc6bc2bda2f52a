"""The CSV face log of the camera loop (``happysad-edge camera --log``)."""

from __future__ import annotations

import csv
import datetime as _dt
import io
import logging
from pathlib import Path

from happysad.edge.camera.outputs.base import FrameResult, Output
from happysad.edge.errors import HappysadError
from happysad.edge.fileio import output_target
from happysad.edge.runtime.prediction import Prediction

_log = logging.getLogger(__name__)


class FaceLog(Output):
    """Appends one CSV row per classified face; writes the header to a new file.

    Columns: time (UTC, ISO 8601), frame, label, confidence, one score per
    label, x, y, w, h (empty when the whole frame was classified). A FIFO
    or device is written without blocking (:class:`edge.camera.outputs.pipe.PipeWriter`:
    no reader or a full pipe drops the frame's rows and counts them); each
    new reader of a FIFO gets the header first.

    Attributes:
        dropped: rows not written (no reader, a full pipe, a full disk).

    Raises:
        HappysadError: the file cannot be opened for appending (a folder, permissions).
    """

    def __init__(self, path: str, labels):
        from happysad.edge.camera.outputs.pipe import PipeWriter

        self.labels = tuple(labels)
        self.failing = False
        self.dropped = 0
        target, direct = output_target(path)
        header = self._format([self._header()])
        self._pipe = PipeWriter(target, "--log", "rows", preamble=header.encode()) if direct else None
        if direct:
            return
        new = not Path(path).exists() or Path(path).stat().st_size == 0
        try:
            self._fh = open(path, "a", newline="", buffering=1)
        except OSError as exc:
            raise HappysadError(f"--log {path}: cannot open for appending ({exc.strerror or exc})") from None
        if new:
            self._guarded(lambda: self._fh.write(header), 0)

    def _header(self) -> list[str]:
        return ["time", "frame", "label", "confidence", *(f"score_{name}" for name in self.labels), "x", "y", "w", "h"]

    @staticmethod
    def _format(rows: list[list]) -> str:
        """``rows`` as CSV text (``\\r\\n`` line ends, quoted where needed)."""
        buf = io.StringIO()
        csv.writer(buf).writerows(rows)
        return buf.getvalue()

    def drops(self) -> dict[str, int]:
        return {"log": self._pipe.dropped if self._pipe else self.dropped}

    def emit(self, result: FrameResult) -> bool:
        """:meth:`write` of the frame's predictions."""
        self.write(result.number, result.predictions)
        return False

    def write(self, frame_no: int, results: list[Prediction]) -> None:
        """Append the rows; a full disk or an I/O error is reported once on
        stderr (and again when it clears), and the camera loop goes on."""
        if not results:  # a frame with no face writes nothing, and proves nothing about the disk
            return
        now = _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")
        text = self._format(
            [
                [
                    now,
                    frame_no,
                    r.label,
                    f"{r.confidence:.4f}",
                    *(f"{r.scores.get(name, 0.0):.4f}" for name in self.labels),
                    *(list(r.face) if r.face else ["", "", "", ""]),
                ]
                for r in results
            ]
        )
        if self._pipe is not None:
            self._pipe.write(text.encode(), len(results))
        else:
            self._guarded(lambda: self._fh.write(text), len(results))

    def _guarded(self, write, rows: int) -> None:
        """Run ``write``; an OSError is reported on stderr once (and again
        when writing works again), never raised; its ``rows`` are counted lost."""
        try:
            write()
        except OSError as exc:
            self.dropped += rows
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
        if self._pipe is not None:
            self._pipe.close()
            return
        try:
            self._fh.close()
        except OSError:  # the last buffered row on a full disk: already reported
            pass
