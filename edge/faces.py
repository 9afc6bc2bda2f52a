"""Face detection (YuNet, BlazeFace, Haar) and the crop that frames a face
the way the training faces are framed. BlazeFace's decoding lives in
:mod:`edge.blazeface`.

Every detector returns :class:`Face` records in pixels of the image it was
given, largest first. The DNN detectors also give keypoints (the eyes first),
which :func:`face_crop` uses to level the face before cropping.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .errors import HappysadError, UsageError

_log = logging.getLogger(__name__)

CASCADE = "haarcascade_frontalface_default.xml"
#: Folder of the vendored detector models (see ``assets/NOTICE``).
ASSETS = Path(__file__).resolve().parent / "assets"
#: Vendored model files and their sha256, checked every time one is loaded
#: (source and licence of each: ``edge/assets/NOTICE``).
ASSET_SHA256 = {
    "face_detection_yunet_2023mar.onnx": "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4",
    "face_detection_short_range.tflite": "3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633",
    "face_detection_full_range.tflite": "99bf9494d84f50acc6617d89873f71bf6635a841ea699c17cb3377f9507cfec3",
}
#: ``--detector`` names. The default was chosen on wild-dev
#: (docs/photos.md): most faces found, best accuracy, a third of Haar's time.
DETECTORS = ("yunet", "blazeface", "blazeface-full", "haar")
DEFAULT_DETECTOR = "yunet"

Box = tuple[int, int, int, int]  # x, y, width, height in pixels


@dataclass(frozen=True)
class Face:
    """One detected face.

    Attributes:
        box: (x, y, w, h) in pixels of the image searched, ints.
        score: the detector's confidence 0..1 (1.0 for Haar, which has none).
        keypoints: float32 (K, 2) x, y in the same pixels, or None (Haar).
            K = 5 for YuNet (right eye, left eye, nose tip, right and left
            mouth corner) and 6 for BlazeFace (right eye, left eye, nose tip,
            mouth centre, right and left ear tragion); "right" is the
            subject's right, on the image's left. The eyes are always rows 0, 1.
    """

    box: Box
    score: float = 1.0
    keypoints: np.ndarray | None = None

    @classmethod
    def of(cls, face: Face | Box) -> Face:
        """``face`` itself, or a bare (x, y, w, h) box as a Face without keypoints."""
        return face if isinstance(face, Face) else cls(tuple(face))


def asset_path(name: str) -> Path:
    """A vendored model file, its sha256 checked.

    Raises:
        HappysadError: the file is missing or its sha256 differs from
            :data:`ASSET_SHA256` (a damaged or replaced install).
    """
    import hashlib  # here, not at import: OpenSSL's libcrypto adds 4 MB to every edge process

    path = ASSETS / name
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise HappysadError(
            f"{path}: face detector model missing ({exc.strerror or exc}); reinstall happysad"
        ) from None
    if hashlib.sha256(data).hexdigest() != ASSET_SHA256[name]:
        raise HappysadError(
            f"{path}: face detector model fails its sha256 check (damaged or replaced); reinstall happysad"
        )
    return path


def _downscale(image: np.ndarray, width: int) -> tuple[np.ndarray, float]:
    """(image scaled down to ``width`` if wider, the factor applied)."""
    if not width or image.shape[1] <= width:
        return image, 1.0
    scale = width / image.shape[1]
    size = (width, max(1, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale


def _bgr(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image


def _largest_first(faces: list[Face]) -> list[Face]:
    return sorted(faces, key=lambda f: f.box[2] * f.box[3], reverse=True)


def plausible(box: tuple[float, float, float, float], shape: tuple[int, ...]) -> bool:
    """Whether a detector's (x, y, w, h) box, in pixels, can be a face in an
    image of ``shape`` (H, W[, C]): finite, positive size, its centre inside
    the image and neither side over twice the image's larger side.

    A face cut by the frame's edge passes (its centre is still inside); what
    fails is the garbage a DNN detector can decode from a degenerate input
    (YuNet on a 640x1 sliver has returned a 6.6e13 px box with score 0.99).
    """
    x, y, w, h = box
    if not all(np.isfinite(v) for v in box) or min(w, h) <= 0:
        return False
    limit = 2 * max(shape[:2])
    return 0 <= x + w / 2 <= shape[1] and 0 <= y + h / 2 <= shape[0] and max(w, h) <= limit


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
        gray, scale = _downscale(gray, self.detect_width)
        min_px = max(1, int(round(self.min_size * scale)))
        found = self._cascade.detectMultiScale(
            gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors, minSize=(min_px, min_px)
        )
        return _largest_first(
            [Face(tuple(int(round(v / scale)) for v in box)) for box in np.asarray(found).reshape(-1, 4)]
        )


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
        small, scale = _downscale(_bgr(image), self.detect_width)
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
        return _largest_first(faces)


def make_detector(
    name: str = DEFAULT_DETECTOR,
    min_size: int = 16,
    detect_width: int = 640,
    threads: int | None = None,
    fallback: bool = True,
):
    """A face detector by ``--detector`` name.

    Args:
        name: one of :data:`DETECTORS`.
        min_size: smallest face kept, pixels of the original image.
        detect_width: YuNet and Haar search a copy scaled down to this width.
        threads: BlazeFace's interpreter threads.
        fallback: where a DNN detector cannot run (no interpreter, an OpenCV
            older than 4.8 for YuNet, a damaged model file), use BlazeFace
            full range instead of YuNet, else Haar, and say so on stderr;
            else raise.

    Raises:
        UsageError: an unknown name.
        HappysadError: the detector cannot be built (and no fallback).
    """
    if name not in DETECTORS:
        raise UsageError(f"unknown face detector {name!r}; choose one of {', '.join(DETECTORS)}")
    try:
        if name == "yunet":
            return YuNetDetector(detect_width=detect_width, min_size=min_size)
        if name.startswith("blazeface"):
            from .blazeface import BlazeFaceDetector

            return BlazeFaceDetector(name, threads=threads, min_size=min_size)
    except HappysadError as exc:
        if not fallback:
            raise
        if name == "yunet":  # BlazeFace full range runs on the interpreter, whatever the OpenCV
            try:
                from .blazeface import BlazeFaceDetector

                detector = BlazeFaceDetector("blazeface-full", threads=threads, min_size=min_size)
                _log.warning("happysad: warning: %s; falling back to --detector blazeface-full", exc)
                return detector
            except HappysadError:
                pass
        _log.warning("happysad: warning: %s; falling back to --detector haar", exc)
    return HaarDetector(max(min_size, 32), detect_width)
