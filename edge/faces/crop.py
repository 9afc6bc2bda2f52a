"""The face crop: a detected face levelled by its eyes and cut square, the
way the training faces are framed."""

from __future__ import annotations

import math

import cv2
import numpy as np

from happysad.edge.faces.base import Face
from happysad.edge.runtime.metadata import DEFAULT_FACE_MARGIN, DEFAULT_FACE_SHIFT

#: Largest tilt levelled, degrees; beyond it the eye keypoints are more
#: likely wrong than the head that tilted.
MAX_LEVEL_DEG = 45.0


def eye_angle(face: Face) -> float:
    """The tilt of the line from the subject's right eye to the left eye,
    degrees, counter-clockwise positive in image coordinates; 0 with no
    keypoints or beyond :data:`MAX_LEVEL_DEG`."""
    if face.keypoints is None:
        return 0.0
    (rx, ry), (lx, ly) = face.keypoints[0], face.keypoints[1]
    angle = math.degrees(math.atan2(ly - ry, lx - rx))
    return angle if abs(angle) <= MAX_LEVEL_DEG else 0.0


def face_crop(
    image: np.ndarray,
    face: Face,
    input_size: tuple[int, int],
    margin: float = DEFAULT_FACE_MARGIN,
    shift: float = DEFAULT_FACE_SHIFT,
    level: bool = True,
) -> np.ndarray:
    """The face as the classifier wants it: levelled, square, framed like the
    training faces.

    The crop is a square of side S = (w + h) / 2 * (1 + 2 * margin) about the
    box centre (moved down by shift * S), rotated so the eyes lie on a
    horizontal line (when the face has keypoints and ``level``). It is
    sampled at k times the model input, k = round(S / input width) >= 1,
    so :func:`edge.runtime.preprocess` then shrinks it by a whole factor (INTER_AREA
    averaging whole k x k blocks). Parts outside the image repeat its edge.
    The one crop function serves ``classify``, ``camera`` and evaluation.

    Args:
        image: uint8 (H, W) gray or (H, W, 3) BGR.
        input_size: the model's (height, width).

    Returns:
        uint8 (k*height, k*width) or (k*height, k*width, 3), same channels as ``image``.
    """
    x, y, w, h = face.box
    side = max((w + h) / 2, 1) * (1 + 2 * margin)
    cx, cy = x + w / 2, y + h / 2
    angle = eye_angle(face) if level else 0.0
    # The shift is along the face's own vertical axis, so a tilted face
    # moves towards its chin, not straight down the image.
    rad = math.radians(angle)
    cx, cy = cx - math.sin(rad) * shift * side, cy + math.cos(rad) * shift * side
    in_h, in_w = input_size
    k = max(1, round(side / in_w))
    out_w, out_h = k * in_w, k * in_h
    # Rotate by the eye angle about the crop centre, scale the square to
    # the output, and move the centre to the output's centre.
    m = cv2.getRotationMatrix2D((cx, cy), angle, out_w / side)
    m[0, 2] += out_w / 2 - cx
    m[1, 2] += out_h / 2 - cy
    interp = cv2.INTER_LINEAR if out_w >= side * 0.75 else cv2.INTER_AREA
    return cv2.warpAffine(image, m, (out_w, out_h), flags=interp, borderMode=cv2.BORDER_REPLICATE)


def face_region(
    image: np.ndarray,
    detector,
    input_size: tuple[int, int],
    margin: float = DEFAULT_FACE_MARGIN,
    shift: float = DEFAULT_FACE_SHIFT,
) -> tuple[np.ndarray, Face | None]:
    """The pixels a photo is classified by, as ``happysad-edge classify`` chooses them.

    An image no larger than the model input is a face crop already and is
    used whole. A larger one is searched with ``detector``: the largest
    face, levelled and framed by :func:`face_crop`; with no face found, the
    whole image. The edge runtime (:meth:`edge.Classifier.classify_photo`)
    and the benchmark's Keras model both go through this, so they always
    see the same pixels.

    Args:
        image: uint8 (H, W) gray or (H, W, 3) BGR.
        detector: anything with ``detect(image) -> list[Face]``, largest first.
        input_size: the model input (height, width), pixels.

    Returns:
        (uint8 region, the face it came from or None when the image is used whole).
    """
    height, width = input_size
    if image.shape[0] <= height and image.shape[1] <= width:
        return image, None
    faces = detector.detect(image)
    if not faces:
        return image, None
    face = Face.of(faces[0])
    return face_crop(image, face, input_size, margin, shift), face
