"""The interface every camera output implements, and the frame result it is given."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


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
            :meth:`edge.camera.outputs.mqtt.MqttPublisher.stats`).
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

    def drops(self) -> dict[str, int]:
        """Records this output could not write so far, by output name
        (``{"log": 3}``: no reader on its FIFO, a full pipe or disk); {} for
        an output that never drops."""
        return {}

    def close(self) -> None:
        """Flush and release; called once, however the loop ended."""
