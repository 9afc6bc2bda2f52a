"""``--headless``: one JSON object per frame on stdout."""

from __future__ import annotations

import json

from happysad.edge.camera.outputs.base import FrameResult, Output


class JsonLines(Output):
    """One JSON object per frame: ``{"frame", "faces", "fps", "dropped", "ms"}``.

    On a pipe (``camera --headless | consumer``) written without blocking
    (:func:`edge.camera.outputs.pipe.nonblocking_stdout`): a line the pipe
    has no room for (its reader is not reading) is dropped and counted, and
    the frame goes on; a reader gone ends the run as before (``| head``).
    """

    needs_timings = True

    def __init__(self, stream):
        from happysad.edge.camera.outputs.pipe import nonblocking_stdout

        self.stream = stream
        self.pipe = nonblocking_stdout(stream)

    def drops(self) -> dict[str, int]:
        return {"stdout": self.pipe.dropped} if self.pipe is not None else {}

    def emit(self, result: FrameResult) -> bool:
        record = {
            "frame": result.number,
            "faces": [r.to_dict() for r in result.predictions],
            "fps": round(result.fps, 2),
            "dropped": result.dropped,
            "ms": result.ms,
            **result.extra,
        }
        if self.pipe is not None:
            self.pipe.write((json.dumps(record) + "\n").encode())
            return False
        self.stream.write(json.dumps(record) + "\n")
        self.stream.flush()
        return False

    def close(self) -> None:
        if self.pipe is not None:
            self.pipe.close()
        self.stream.flush()
