"""``--headless``: one JSON object per frame on stdout."""

from __future__ import annotations

import json

from happysad.edge.camera.outputs.base import FrameResult, Output


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
