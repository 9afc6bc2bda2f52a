"""Face detection (YuNet, BlazeFace, Haar) and the crop that frames a face
the way the training faces are framed. One module per detector
(:mod:`.haar`, :mod:`.yunet`, :mod:`.blazeface`), the shared types in
:mod:`.base`, the crop in :mod:`.crop`; this module is the factory.

Every detector returns :class:`Face` records in pixels of the image it was
given, largest first. The DNN detectors also give keypoints (the eyes first),
which :func:`face_crop` uses to level the face before cropping.
"""

from __future__ import annotations

import logging

from happysad.edge.errors import HappysadError, UsageError
from happysad.edge.faces.base import ASSET_SHA256, ASSETS, Face, asset_path, plausible
from happysad.edge.faces.haar import HaarDetector
from happysad.edge.faces.yunet import YuNetDetector
from happysad.edge.images import Box

__all__ = [
    "ASSETS",
    "ASSET_SHA256",
    "Box",
    "DEFAULT_DETECTOR",
    "DETECTORS",
    "Face",
    "HaarDetector",
    "YuNetDetector",
    "asset_path",
    "make_detector",
    "plausible",
]

_log = logging.getLogger(__name__)

#: ``--detector`` names. The default was chosen on wild-dev
#: (docs/photos.md): most faces found, best accuracy, a third of Haar's time.
DETECTORS = ("yunet", "blazeface", "blazeface-full", "haar")
DEFAULT_DETECTOR = "yunet"


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
            from happysad.edge.faces.blazeface import BlazeFaceDetector

            return BlazeFaceDetector(name, threads=threads, min_size=min_size)
    except HappysadError as exc:
        if not fallback:
            raise
        if name == "yunet":  # BlazeFace full range runs on the interpreter, whatever the OpenCV
            try:
                from happysad.edge.faces.blazeface import BlazeFaceDetector

                detector = BlazeFaceDetector("blazeface-full", threads=threads, min_size=min_size)
                _log.warning("happysad: warning: %s; falling back to --detector blazeface-full", exc)
                return detector
            except HappysadError:
                pass
        _log.warning("happysad: warning: %s; falling back to --detector haar", exc)
    return HaarDetector(max(min_size, 32), detect_width)
