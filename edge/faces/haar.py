"""OpenCV's Haar cascade face detector (frontal faces, no keypoints)."""

from __future__ import annotations

import os

import cv2
import numpy as np

from happysad.edge.errors import HappysadError
from happysad.edge.faces.base import Face, downscale, largest_first

CASCADE = "haarcascade_frontalface_default.xml"


class HaarDetector:
    """OpenCV's Haar cascade: frontal faces, no keypoints, no score.

    Args:
        min_size: smallest face searched for, in pixels of the original image.
        detect_width: images wider than this are searched on a copy scaled
            down to this width (the cost grows with the pixel count); boxes
            are scaled back. 0 searches at full size.
        scale_factor, min_neighbors: ``CascadeClassifier.detectMultiScale``
            parameters; 1.1 and 5 are OpenCV's documented defaults for faces.

    Raises:
        HappysadError: the cascade file is not found or does not load
            (opencv-python-headless 5.x ships none; install 4.14.0.94).
    """

    name = "haar"

    def __init__(self, min_size: int = 32, detect_width: int = 640, scale_factor: float = 1.1, min_neighbors: int = 5):
        data_dir = getattr(getattr(cv2, "data", None), "haarcascades", "")
        path = os.path.join(data_dir, CASCADE)
        if not data_dir or not os.path.isfile(path) or not hasattr(cv2, "CascadeClassifier"):
            raise HappysadError("OpenCV's Haar face cascade is missing: pip install opencv-python-headless==4.14.0.94")
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise HappysadError(f"{path}: Haar cascade does not load; reinstall opencv-python-headless")
        self.min_size = min_size
        self.detect_width = detect_width
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors

    def detect(self, image: np.ndarray) -> list[Face]:
        """All faces, largest first.

        Args:
            image: uint8 (H, W) gray or (H, W, 3) BGR.
        """
        gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        gray, scale = downscale(gray, self.detect_width)
        min_px = max(1, int(round(self.min_size * scale)))
        found = self._cascade.detectMultiScale(
            gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors, minSize=(min_px, min_px)
        )
        return largest_first(
            [Face(tuple(int(round(v / scale)) for v in box)) for box in np.asarray(found).reshape(-1, 4)]
        )
