"""YuNet (OpenCV Zoo) through ``cv2.FaceDetectorYN``."""

from __future__ import annotations

import cv2
import numpy as np

from happysad.edge.errors import HappysadError
from happysad.edge.faces.base import Face, asset_path, bgr, downscale, largest_first, plausible


class YuNetDetector:
    """YuNet (OpenCV Zoo, 2023mar, float32) through ``cv2.FaceDetectorYN``,
    which decodes the boxes and five keypoints and runs NMS itself.

    Args:
        score_threshold: lowest face score kept, 0..1 (0.6: on wild-dev it
            finds a face in as many photos as any higher value keeps right;
            OpenCV Zoo's demo uses 0.9, which misses most sad faces there).
        nms_threshold: IoU above which the weaker of two boxes is dropped.
        detect_width: search a copy scaled down to this width, pixels; the
            model was trained on faces of about 10-300 px.
        min_size: faces smaller than this (pixels of the original) are dropped.

    Raises:
        HappysadError: the vendored model is missing or fails its sha256
            check, or this OpenCV has no ``FaceDetectorYN`` (needs >= 4.8).
    """

    name = "yunet"
    MODEL = "face_detection_yunet_2023mar.onnx"

    def __init__(
        self, score_threshold: float = 0.6, nms_threshold: float = 0.3, detect_width: int = 640, min_size: int = 16
    ):
        version = tuple(int(v) for v in cv2.__version__.split(".")[:2] if v.isdigit())
        if not hasattr(cv2, "FaceDetectorYN") or version < (4, 8):
            # YuNet 2023mar's graph fails shape inference in older dnn modules
            # (OpenCV 4.6, Debian bookworm's: an eltwise assertion on the first frame).
            raise HappysadError(
                f"OpenCV {cv2.__version__} cannot run YuNet (needs 4.8 or newer): "
                "pip install opencv-python-headless==4.14.0.94, or use --detector blazeface-full"
            )
        self._net = cv2.FaceDetectorYN.create(
            str(asset_path(self.MODEL)), "", (320, 320), score_threshold, nms_threshold, 5000
        )
        self._size = (320, 320)
        self.detect_width = detect_width
        self.min_size = min_size

    def detect(self, image: np.ndarray) -> list[Face]:
        """All faces, largest first.

        Args:
            image: uint8 (H, W) gray or (H, W, 3) BGR.
        """
        if min(image.shape[:2]) < self.min_size:  # no room for a face this detector keeps
            return []
        small, scale = downscale(bgr(image), self.detect_width)
        size = (small.shape[1], small.shape[0])
        if size != self._size:
            self._net.setInputSize(size)
            self._size = size
        _, rows = self._net.detect(np.ascontiguousarray(small))
        faces = []
        for row in [] if rows is None else rows:
            x, y, w, h = (float(v) / scale for v in row[:4])
            if not plausible((x, y, w, h), image.shape) or min(w, h) < self.min_size:
                continue
            box = (int(round(x)), int(round(y)), int(round(w)), int(round(h)))
            kp = (row[4:14].reshape(5, 2) / scale).astype(np.float32)
            faces.append(Face(box, float(row[14]), kp))
        return largest_first(faces)
