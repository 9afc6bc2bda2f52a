"""Test videos made from labelled face photos, for the camera-loop benchmarks."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from happysad.edge import HappysadError, load_image
from happysad.edge.dataset import labelled_images
from happysad.edge.fileio import atomic_path


def face_frames(data_dir, count: int, size=(640, 480), face_px: int = 192, seed: int = 0) -> list[np.ndarray]:
    """``count`` BGR frames, each with one labelled photo enlarged to
    ``face_px`` pixels and pasted at a random spot on a gray background.

    FER2013's 48x48 faces are tight crops; enlarged, the Haar cascade finds
    them as it finds a face in front of a camera.

    Raises:
        HappysadError: the folder holds no readable image.
    """
    _, items = labelled_images(data_dir)
    if not items:
        raise HappysadError(f"{data_dir}: no images to build a video from")
    rng = np.random.default_rng(seed)
    w, h = size
    frames = []
    for k in rng.choice(len(items), size=count, replace=len(items) < count):
        face = cv2.resize(load_image(items[k][0]), (face_px, face_px), interpolation=cv2.INTER_CUBIC)
        frame = np.full((h, w, 3), 96, np.uint8)
        x, y = int(rng.integers(0, w - face_px)), int(rng.integers(0, h - face_px))
        frame[y : y + face_px, x : x + face_px] = face
        frames.append(frame)
    return frames


def write_video(path: str | os.PathLike, frames, total: int | None = None, fps: float = 30.0) -> Path:
    """Write frames as an MJPG .avi (atomically), cycling them up to ``total`` frames.

    Returns:
        the path written.
    """
    path = Path(path)
    total = total or len(frames)
    h, w = frames[0].shape[:2]
    with atomic_path(path) as tmp:
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
        if not writer.isOpened():
            raise HappysadError(f"{path}: cannot write a video here")
        for i in range(total):
            writer.write(frames[i % len(frames)])
        writer.release()
    return path
