"""Finding and decoding image files, with one-line reasons for the bad ones."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

import cv2
import numpy as np

from happysad.edge.errors import HappysadError, UsageError

#: File suffixes read as images (case-insensitive).
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".bmp", ".webp")
#: Largest image decoded, in pixels (width x height). A 48x48 model never
#: needs more; 50 MP decodes to 150 MB of BGR, where a hostile 30000x30000
#: PNG of a few kB would ask for 2.7 GB.
MAX_PIXELS = 50_000_000
#: Largest image file read, in bytes. A 50-megapixel photo is a JPEG of
#: 5-25 MB; 64 MB leaves room for a lightly compressed PNG, and a file of
#: gigabytes named .jpg is refused before a byte is read into memory.
MAX_FILE_BYTES = 64 * 1024 * 1024
#: JPEG segments walked looking for the frame header; past this many the
#: decoder decides, under OpenCV's own pixel limit (``OPENCV_IO_MAX_IMAGE_PIXELS``,
#: set by ``edge/__init__.py``).
MAX_JPEG_SEGMENTS = 100_000
#: Formats decoded, by their magic bytes (whatever the file's suffix):
#: OpenCV's imdecode also reads TIFF, JPEG 2000, OpenEXR, HDR, PNM, GIF and
#: more, each a parser a hostile file could reach; a photo from a camera,
#: phone or web form is one of these.
FORMATS = "JPEG, PNG, BMP or WebP"
#: JPEG start-of-frame markers (SOF0..SOF15 without DHT C4, JPG C8, DAC CC),
#: ITU-T T.81 table B.1; the frame header gives height then width.
_JPEG_SOF = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}

#: A rectangle in an image: x, y, width, height in pixels (ints); a face's box.
Box = tuple[int, int, int, int]


def image_format(data: bytes) -> str | None:
    """``"jpeg"``, ``"png"``, ``"bmp"`` or ``"webp"`` from the first 12 bytes, else None."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:2] == b"BM":
        return "bmp"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def _webp_dimensions(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a WebP file: the VP8X canvas, or the VP8 / VP8L
    frame (Google's WebP container and bitstream specifications)."""
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
    if chunk == b"VP8 " and len(data) >= 30:
        return (int.from_bytes(data[26:28], "little") & 0x3FFF, int.from_bytes(data[28:30], "little") & 0x3FFF)
    if chunk == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    return None


def image_dimensions(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG, JPEG, BMP or WebP header, without decoding.

    A JPEG's frame header may sit after any number of APPn segments (a
    hostile file pads them to hide it from a scan of the first bytes), so
    the markers are walked over the whole of ``data``, segment by segment.

    Returns:
        the size in pixels, or None when the header is not recognized (the
        decoder then decides, under OpenCV's own pixel limit).
    """
    if data[:4] == b"RIFF":
        return _webp_dimensions(data)
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:2] == b"BM" and len(data) >= 26:
        w = int.from_bytes(data[18:22], "little", signed=True)
        h = int.from_bytes(data[22:26], "little", signed=True)
        return abs(w), abs(h)
    if data[:2] == b"\xff\xd8":
        i, segments = 2, 0
        while i + 9 <= len(data) and segments < MAX_JPEG_SEGMENTS:
            segments += 1
            if data[i] != 0xFF:
                return None
            marker = data[i + 1]
            if marker == 0xFF:  # fill byte
                i += 1
                continue
            if marker in _JPEG_SOF:
                return int.from_bytes(data[i + 7 : i + 9], "big"), int.from_bytes(data[i + 5 : i + 7], "big")
            i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None


@contextlib.contextmanager
def opencv_errors_only():
    """Silence OpenCV's warnings (a broken PNG, each backend a camera index
    tries) for the duration; our own one-line error says it once. OpenCV
    builds without ``cv2.utils.logging`` (Debian's 4.6, what 32-bit
    Raspberry Pi OS installs with apt) stay as they are."""
    log = getattr(cv2.utils, "logging", None)
    if log is None:
        yield
        return
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
        Paths with an image suffix, sorted; a file given directly (or a
        pipe, device or socket) is returned whatever its suffix, so that a
        bad one gets reported rather than silently ignored.

    Raises:
        HappysadError: ``path`` does not exist or cannot be looked at (a
            name too long, a symlink loop, no permission).
    """
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UsageError(f"{display_path(path)}: no such file or folder; check the path") from None
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise HappysadError(f"{display_path(path)}: cannot read ({reason})") from None
    if not stat.S_ISDIR(st.st_mode):
        return [path]
    found = []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        found.extend(Path(root) / name for name in files if is_image_path(Path(name)))
    return sorted(found)


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Decode one image file.

    Args:
        path: a JPEG, PNG, BMP or WebP file (by content, whatever its suffix).

    Returns:
        uint8 array of shape (H, W, 3) in BGR order, with EXIF orientation
        applied and any alpha channel dropped; gray files come back with three
        equal channels, which :func:`edge.runtime.preprocess` turns back into the
        same gray values exactly.

    Raises:
        HappysadError: the file is not a regular file, cannot be read, is
            empty or over :data:`MAX_FILE_BYTES`, is not one of
            :data:`FORMATS`, declares more than :data:`MAX_PIXELS` pixels,
            or does not decode; the message names the file and the reason.
    """
    return decode_image(read_image_bytes(path), path)


def decode_image(data: np.ndarray, path: str | os.PathLike = "image") -> np.ndarray:
    """Decode the bytes of an image file read by :func:`read_image_bytes`
    (the format and pixel-limit checks of :func:`load_image`).

    Args:
        data: uint8 (N,) the file's bytes. path: named in errors.

    Returns:
        uint8 (H, W, 3) BGR.

    Raises:
        HappysadError: not one of :data:`FORMATS`, over :data:`MAX_PIXELS`,
            or does not decode.
    """
    if image_format(data[:12].tobytes()) is None:
        raise HappysadError(f"{display_path(path)}: not a decodable image (not a {FORMATS} file)")
    dims = image_dimensions(data.tobytes())
    if dims and dims[0] * dims[1] > MAX_PIXELS:
        raise HappysadError(
            f"{display_path(path)}: {dims[0]}x{dims[1]} pixels is over the "
            f"{MAX_PIXELS // 1_000_000}-megapixel limit; scale the image down first"
        )
    try:
        with opencv_errors_only():
            image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    except cv2.error:
        # OpenCV's own gate (OPENCV_IO_MAX_IMAGE_PIXELS) refused a size the
        # header check above could not read, or the decoder failed outright.
        raise HappysadError(
            f"{display_path(path)}: not a decodable image (over the "
            f"{MAX_PIXELS // 1_000_000}-megapixel limit, or corrupt)"
        ) from None
    if image is None:
        raise HappysadError(f"{display_path(path)}: not a decodable image (corrupt, truncated or not an image)")
    return image


def read_image_bytes(path: str | os.PathLike) -> np.ndarray:
    """The bytes of an image file, read only if it is a regular file of at
    most :data:`MAX_FILE_BYTES`.

    The file is opened non-blocking and checked with ``fstat`` before a
    byte is read, so a FIFO, a device or a socket named ``photo.jpg`` is
    refused rather than read forever.

    Returns:
        uint8 (N,) the file's bytes, N >= 1.

    Raises:
        HappysadError: not a regular file, empty, too large, or unreadable
            (the reason from the OS: permission, a symlink loop, a name too long).
    """
    shown = display_path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise HappysadError(f"{shown}: cannot read ({reason})") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise HappysadError(f"{shown}: not a regular file (a pipe, device or socket); give an image file")
        if st.st_size > MAX_FILE_BYTES:
            raise HappysadError(
                f"{shown}: {st.st_size / 1e6:.0f} MB is over the {MAX_FILE_BYTES // 2**20} MiB "
                "limit for an image file; scale the image down first"
            )
        try:
            data = fh.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise HappysadError(f"{shown}: cannot read ({exc.strerror or exc})") from None
    if not data:
        raise HappysadError(f"{shown}: empty file")
    if len(data) > MAX_FILE_BYTES:  # grew after the stat
        raise HappysadError(f"{shown}: over the {MAX_FILE_BYTES // 2**20} MiB limit for an image file")
    return np.frombuffer(data, np.uint8)


def display_path(path: str | os.PathLike) -> str:
    """A path as it may be printed: bytes that are not UTF-8 as ``\\xNN``,
    control characters (a newline, a terminal escape) as ``\\n``, ``\\x1b``.

    A file name is whatever bytes its creator chose; printed raw, a newline
    forges an extra output line and an escape sequence drives the terminal.
    """
    text = os.fsencode(os.fspath(path)).decode("utf-8", "backslashreplace")
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
