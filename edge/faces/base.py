"""What every face detector shares: the :class:`Face` record, the vendored
model files (sha256-checked), and small helpers on images and boxes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from happysad.edge.errors import HappysadError
from happysad.edge.images import Box

#: Folder of the vendored detector models (see ``assets/NOTICE``).
ASSETS = Path(__file__).resolve().parent.parent / "assets"
#: Vendored model files and their sha256, checked every time one is loaded
#: (source and licence of each: ``edge/assets/NOTICE``).
ASSET_SHA256 = {
    "face_detection_yunet_2023mar.onnx": "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4",
    "face_detection_short_range.tflite": "3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633",
    "face_detection_full_range.tflite": "99bf9494d84f50acc6617d89873f71bf6635a841ea699c17cb3377f9507cfec3",
}
#: ``--detector`` names. The default was chosen on wild-dev
#: (docs/photos.md): most faces found, best accuracy, a third of Haar's time.


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


def downscale(image: np.ndarray, width: int) -> tuple[np.ndarray, float]:
    """(image scaled down to ``width`` if wider, the factor applied)."""
    if not width or image.shape[1] <= width:
        return image, 1.0
    scale = width / image.shape[1]
    size = (width, max(1, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale


def bgr(image: np.ndarray) -> np.ndarray:
    """``image`` as uint8 (H, W, 3) BGR: a gray (H, W) one converted, a BGR one as it is."""
    return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image


def largest_first(faces: list[Face]) -> list[Face]:
    """``faces`` sorted by box area, largest first."""
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
