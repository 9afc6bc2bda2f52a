"""Finding and decoding image files, with one-line reasons for the bad ones."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import cv2
import numpy as np

from .errors import HappysadError, UsageError

#: File suffixes read as images (case-insensitive).
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".bmp")
#: Largest image decoded, in pixels (width x height). A 48x48 model never
#: needs more; 50 MP decodes to 150 MB of BGR, where a hostile 30000x30000
#: PNG of a few kB would ask for 2.7 GB.
MAX_PIXELS = 50_000_000
#: JPEG start-of-frame markers (SOF0..SOF15 without DHT C4, JPG C8, DAC CC),
#: ITU-T T.81 table B.1; the frame header gives height then width.
_JPEG_SOF = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def image_dimensions(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG, JPEG or BMP header, without decoding.

    Returns:
        the size in pixels, or None when the header is not recognized (the
        decoder then decides).
    """
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:2] == b"BM" and len(data) >= 26:
        w = int.from_bytes(data[18:22], "little", signed=True)
        h = int.from_bytes(data[22:26], "little", signed=True)
        return abs(w), abs(h)
    if data[:2] == b"\xff\xd8":
        i = 2
        while i + 9 <= len(data):
            if data[i] != 0xFF:
                return None
            marker = data[i + 1]
            if marker == 0xFF:  # fill byte
                i += 1
                continue
            if marker in _JPEG_SOF:
                return int.from_bytes(data[i + 7:i + 9], "big"), int.from_bytes(data[i + 5:i + 7], "big")
            i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return None


@contextlib.contextmanager
def opencv_errors_only():
    """Silence OpenCV's warnings (a broken PNG, each backend a camera index
    tries) for the duration; our own one-line error says it once."""
    log = cv2.utils.logging
    level = log.getLogLevel()
    log.setLogLevel(log.LOG_LEVEL_ERROR)
    try:
        yield
    finally:
        log.setLogLevel(level)


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
        raise UsageError(f"{path}: no such file or folder; check the path")
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
        HappysadError: the file cannot be read, is empty, has more than
            :data:`MAX_PIXELS` pixels, or does not decode as an image; the
            message names the file and the reason.
    """
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise HappysadError(f"{path}: cannot read ({reason})") from None
    if data.size == 0:
        raise HappysadError(f"{path}: empty file")
    dims = image_dimensions(data[:65536].tobytes())
    if dims and dims[0] * dims[1] > MAX_PIXELS:
        raise HappysadError(f"{path}: {dims[0]}x{dims[1]} pixels is over the {MAX_PIXELS // 1_000_000}-megapixel "
                            "limit; scale the image down first")
    with opencv_errors_only():
        image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise HappysadError(f"{path}: not a decodable image (corrupt, truncated or not an image)")
    return image
