"""The annotation drawn on the frames the window, the preview and the recording show."""

from __future__ import annotations

import cv2
import numpy as np

from happysad.edge.runtime.metadata import UNCERTAIN
from happysad.edge.runtime.prediction import Prediction


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
LABEL_COLORS = {"happy": (0, 160, 0), "sad": (0, 0, 200), "neutral": (150, 110, 40), UNCERTAIN: (110, 110, 110)}


PALETTE = ((200, 120, 0), (0, 140, 200), (160, 0, 160), (0, 160, 160), (120, 60, 0))


def label_color(label: str) -> tuple[int, int, int]:
    """The BGR colour a label is drawn in: fixed for happy, sad, neutral
    and uncertain, else one of :data:`PALETTE` chosen by the label's name (the
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
