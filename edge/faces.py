"""Face detection with OpenCV's Haar cascade, and the crop that matches the
framing of the training faces."""
from __future__ import annotations

import os

import cv2
import numpy as np

from .errors import HappysadError

CASCADE = "haarcascade_frontalface_default.xml"

Box = tuple[int, int, int, int]  # x, y, width, height in pixels


class FaceDetector:
    """Finds frontal faces in gray or BGR uint8 images.

    Args:
        min_size: smallest face searched for, in pixels of the original image.
        detect_width: images wider than this are searched on a copy scaled
            down to this width (Haar cost grows with the pixel count); boxes
            are scaled back. 0 searches at full size.
        scale_factor, min_neighbors: ``CascadeClassifier.detectMultiScale``
            parameters; 1.1 and 5 are OpenCV's documented defaults for faces.

    Raises:
        HappysadError: the cascade file is not found or does not load
            (opencv-python-headless 5.x ships none; install 4.14.0.94).
    """

    def __init__(self, min_size: int = 32, detect_width: int = 640,
                 scale_factor: float = 1.1, min_neighbors: int = 5):
        data_dir = getattr(getattr(cv2, "data", None), "haarcascades", "")
        path = os.path.join(data_dir, CASCADE)
        if not data_dir or not os.path.isfile(path) or not hasattr(cv2, "CascadeClassifier"):
            raise HappysadError("OpenCV's Haar face cascade is missing: "
                                "pip install opencv-python-headless==4.14.0.94")
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise HappysadError(f"{path}: Haar cascade does not load; reinstall opencv-python-headless")
        self.min_size = min_size
        self.detect_width = detect_width
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors

    def detect(self, image: np.ndarray) -> list[Box]:
        """All faces, largest first.

        Args:
            image: uint8 array (H, W) or (H, W, 3) BGR.

        Returns:
            list of (x, y, w, h) boxes in the image's pixel coordinates.
        """
        gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        scale = 1.0
        if self.detect_width and gray.shape[1] > self.detect_width:
            scale = self.detect_width / gray.shape[1]
            gray = cv2.resize(gray, (self.detect_width, max(1, round(gray.shape[0] * scale))),
                              interpolation=cv2.INTER_AREA)
        min_px = max(1, int(round(self.min_size * scale)))
        found = self._cascade.detectMultiScale(gray, scaleFactor=self.scale_factor,
                                               minNeighbors=self.min_neighbors,
                                               minSize=(min_px, min_px))
        boxes = [tuple(int(round(v / scale)) for v in box) for box in np.asarray(found).reshape(-1, 4)]
        return sorted(boxes, key=lambda b: b[2] * b[3], reverse=True)


def expand_box(box: Box, margin: float, width: int, height: int, multiple: tuple[int, int] | None = None) -> Box:
    """Grow ``box`` by ``margin`` times its size on each side, clipped to the image.

    FER2013 faces are framed a little wider than the Haar cascade's box (the
    cascade stops at the brows and the chin), so the crop adds a margin;
    0.1 of the box on each side is the default recorded in each model's
    metadata as ``face_margin``.

    Args:
        multiple: (height, width) of the model input. When given, the grown
            box's sides are rounded to whole multiples of it, about the same
            centre, so shrinking the crop averages whole k x k blocks:
            OpenCV's INTER_AREA takes its fast integer-ratio path (about 4x
            faster for a 230-pixel face), and the framing moves by at most
            half an input size.
    """
    x, y, w, h = box
    dx, dy = int(round(w * margin)), int(round(h * margin))
    x0, y0, x1, y1 = x - dx, y - dy, x + w + dx, y + h + dy
    if multiple:
        mh, mw = multiple
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        sw = max(1, round((x1 - x0) / mw)) * mw
        sh = max(1, round((y1 - y0) / mh)) * mh
        x0, y0 = int(round(cx - sw / 2)), int(round(cy - sh / 2))
        x1, y1 = x0 + sw, y0 + sh
    x0, y0 = max(0, x0), max(0, y0)
    x1, y1 = min(width, x1), min(height, y1)
    return x0, y0, x1 - x0, y1 - y0


def crop(image: np.ndarray, box: Box) -> np.ndarray:
    """The pixels of ``image`` inside ``box`` (a view, no copy)."""
    x, y, w, h = box
    return image[y:y + h, x:x + w]
