"""``--record FILE``: the annotated video, written atomically."""

from __future__ import annotations

import os

import cv2
import numpy as np

from happysad.edge.camera.outputs.base import FrameResult, Output
from happysad.edge.errors import HappysadError
from happysad.edge.fileio import output_target, temp_name


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
