"""Finding and decoding image files, with one-line reasons for the bad ones."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from .errors import HappysadError

#: File suffixes read as images (case-insensitive).
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".bmp")


def is_image_path(path: Path) -> bool:
    """True when ``path`` has one of :data:`IMAGE_SUFFIXES`."""
    return path.suffix.lower() in IMAGE_SUFFIXES


def find_images(path: str | os.PathLike) -> list[Path]:
    """List the image files at ``path``.

    Args:
        path: an image file, or a folder searched recursively (symlinked
            folders are not followed, so a link loop cannot hang the search).

    Returns:
        Paths with an image suffix, sorted; a file given directly is returned
        whatever its suffix, so that a bad one gets reported rather than
        silently ignored.

    Raises:
        HappysadError: ``path`` does not exist.
    """
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise HappysadError(f"{path}: no such file or folder; check the path")
    found = []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        found.extend(Path(root) / name for name in files if is_image_path(Path(name)))
    return sorted(found)


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Decode one image file.

    Args:
        path: a JPEG, PNG or BMP file.

    Returns:
        uint8 array of shape (H, W, 3) in BGR order, with EXIF orientation
        applied and any alpha channel dropped; gray files come back with three
        equal channels, which :func:`edge.preprocess` turns back into the
        same gray values exactly.

    Raises:
        HappysadError: the file cannot be read, is empty, or does not decode
            as an image; the message names the file and the reason.
    """
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise HappysadError(f"{path}: cannot read ({reason})") from None
    if data.size == 0:
        raise HappysadError(f"{path}: empty file")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise HappysadError(f"{path}: not a decodable image (corrupt, truncated or not an image)")
    return image
