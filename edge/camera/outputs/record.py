"""``--record FILE``: the annotated video, written atomically."""

from __future__ import annotations

import os

import cv2
import numpy as np

from happysad.edge.camera.outputs.base import FrameResult, Output
from happysad.edge.errors import HappysadError
from happysad.edge.fileio import output_target, temp_name

#: JPEG quality of the frames streamed into a FIFO or device, 0..100.
STREAM_JPEG_QUALITY = 90


class Recording(Output):
    """The annotated video (:class:`Recorder`), opened at the first frame's size.

    Into a FIFO or device, an MJPEG stream instead (one JPEG per frame, no
    container: an AVI or MP4 index cannot be written into a pipe; read it
    with ``ffplay -f mjpeg FIFO``), written without blocking
    (:class:`edge.camera.outputs.pipe.PipeWriter`: no reader or a full pipe
    drops the frame and counts it).

    Raises:
        HappysadError: ``path`` is a folder, or a FIFO that cannot be opened
            for another reason than having no reader.
    """

    shows_frame = True

    def __init__(self, path: str):
        from happysad.edge.camera.outputs.pipe import PipeWriter

        self.path = path
        self.recorder = None
        target, direct = output_target(path)
        if target.is_dir():
            raise HappysadError(f"--record {path}: is a folder; name a video file (.avi or .mp4) in it")
        self.stream = PipeWriter(target, "--record", "frames") if direct else None

    def emit(self, result: FrameResult) -> bool:
        if self.stream is not None:
            ok, jpeg = cv2.imencode(".jpg", result.image, [cv2.IMWRITE_JPEG_QUALITY, STREAM_JPEG_QUALITY])
            if ok:
                self.stream.write(jpeg.tobytes())
            return False
        if self.recorder is None:
            size = (result.image.shape[1], result.image.shape[0])
            self.recorder = Recorder(self.path, result.source_fps, size)
        self.recorder.write(result.image)
        return False

    def drops(self) -> dict[str, int]:
        return {"record": self.stream.dropped} if self.stream is not None else {}

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()
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
