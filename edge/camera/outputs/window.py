"""The annotated frames in a desktop window (OpenCV's HighGUI)."""

from __future__ import annotations

import os
import sys

import cv2

from happysad.edge.camera.outputs.base import FrameResult, Output


class Window(Output):
    """The annotated frames in a window; Esc or q stops the loop."""

    shows_frame = True

    def emit(self, result: FrameResult) -> bool:
        cv2.imshow("happysad", result.image)
        return cv2.waitKey(1) & 0xFF in (27, ord("q"))

    def close(self) -> None:
        cv2.destroyAllWindows()


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
