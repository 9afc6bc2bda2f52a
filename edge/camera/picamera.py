"""The Raspberry Pi camera through Picamera2, and the pixel formats it gives.

libcamera may adjust a configuration: a size, a pixel format, the colour
space, a stream it cannot offer. So :class:`PicameraSource` reads back what
was negotiated after ``configure()`` and converts each frame from that
(:func:`to_bgr`), never from what it asked for.
"""

from __future__ import annotations

import logging
import time

import cv2
import numpy as np

from happysad.edge.errors import HappysadError

_log = logging.getLogger(__name__)

#: Seconds ``read`` waits for a frame before calling the camera stalled
#: (raised to three frame intervals at a low frame rate).
FRAME_TIMEOUT_S = 2.0
#: 4:2:0 formats: Y plane then chroma. NV12/NV21 interleave U and V in one
#: plane; YUV420/YVU420 give them as two planes (I420 / YV12).
YUV_FORMATS = ("NV12", "NV21", "YUV420", "YVU420")
#: libcamera's RGB names give the components from the most significant
#: byte of a little-endian word, so the bytes in memory (numpy's last axis)
#: run the other way: RGB888 and XRGB8888 are B, G, R(, X): OpenCV's BGR already.
RGB_FORMATS = {"RGB888": None, "XRGB8888": None, "BGR888": cv2.COLOR_RGB2BGR, "XBGR8888": cv2.COLOR_RGBA2BGR}


def _planes(array: np.ndarray, fmt: str, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Y, U, V) views of a 4:2:0 frame as Picamera2 returns it: NV12/NV21
    as (H * 3 / 2, W or stride), YUV420/YVU420 as (H * 3 / 2, stride), the
    chroma planes of the latter at half the stride."""
    w, h = size
    if array.ndim != 2 or array.shape[0] < h * 3 // 2 or array.shape[1] < w:
        raise HappysadError(f"picamera: a {fmt} frame of shape {array.shape} does not hold {w}x{h} pixels")
    y = array[:h, :w]
    if fmt in ("NV12", "NV21"):
        uv = array[h : h + h // 2, :w].reshape(h // 2, w // 2, 2)
        u, v = (uv[..., 0], uv[..., 1]) if fmt == "NV12" else (uv[..., 1], uv[..., 0])
        return y, u, v
    stride = array.shape[1]
    chroma = np.ascontiguousarray(array[h:]).reshape(-1)
    half = (stride // 2) * (h // 2)
    first = chroma[:half].reshape(h // 2, stride // 2)[:, : w // 2]
    second = chroma[half : 2 * half].reshape(h // 2, stride // 2)[:, : w // 2]
    return (y, first, second) if fmt == "YUV420" else (y, second, first)


def to_bgr(array: np.ndarray, fmt: str, size: tuple[int, int], full_range: bool = True) -> np.ndarray:
    """A Picamera2 frame in the negotiated format as OpenCV's BGR uint8 (H, W, 3).

    Args:
        array: what ``Picamera2.capture_array`` returned for the stream.
        fmt: the stream's negotiated pixel format (libcamera's name).
        size: the stream's negotiated (width, height); row padding beyond
            it (the stride) is dropped.
        full_range: YUV data in full range (0..255, libcamera's ``Sycc``,
            Picamera2's default for previews; JPEG's YCbCr) rather than
            limited (16..235, ``Smpte170m``, ``Rec709``). BT.601 weights either way.

    Raises:
        HappysadError: a format this does not convert, or a frame of the wrong shape.
    """
    w, h = size
    if fmt in RGB_FORMATS:
        channels = 4 if fmt.startswith("X") else 3
        if array.ndim != 3 or array.shape[2] != channels or array.shape[0] < h or array.shape[1] < w:
            raise HappysadError(f"picamera: a {fmt} frame of shape {array.shape} does not hold {w}x{h} pixels")
        array = array[:h, :w]
        code = RGB_FORMATS[fmt]
        return np.ascontiguousarray(array[..., :3]) if code is None else cv2.cvtColor(array, code)
    if fmt not in YUV_FORMATS:
        raise HappysadError(f"picamera: the camera gives {fmt} frames, which this cannot convert; pass another camera")
    y, u, v = _planes(array, fmt, size)
    if full_range:
        chroma = cv2.resize(np.dstack([v, u]), (w, h), interpolation=cv2.INTER_LINEAR)
        return cv2.cvtColor(np.dstack([y, chroma]), cv2.COLOR_YCrCb2BGR)
    i420 = np.concatenate([y.reshape(-1), np.ascontiguousarray(u).reshape(-1), np.ascontiguousarray(v).reshape(-1)])
    return cv2.cvtColor(i420.reshape(h * 3 // 2, w), cv2.COLOR_YUV2BGR_I420)


def is_full_range(colour_space) -> bool:
    """Whether a libcamera ColorSpace (or its name) is full range: ``Sycc``
    and ``Jpeg`` are, ``Smpte170m`` and ``Rec709`` are not; True when unknown."""
    range_ = getattr(colour_space, "range", None)
    text = str(range_ if range_ is not None else colour_space).lower()
    return not ("limited" in text or text in ("smpte170m", "rec709", "rec2020"))


def _describe(config: dict) -> str:
    parts = []
    for name in ("main", "lores"):
        stream = config.get(name)
        if stream:
            w, h = stream["size"]
            parts.append(f"{name} {w}x{h} {stream['format']} stride {stream.get('stride')}")
    return ", ".join(parts) + f", colour space {config.get('colour_space')}"


class PicameraSource:
    """A Raspberry Pi camera through Picamera2, imported only when asked for.

    As the Picamera2 TensorFlow examples do, it configures a full-size
    ``main`` stream and a small ``lores`` stream and classifies the lores
    frames, so inference never pays for pixels it does not use; a camera
    that offers no second stream is configured with ``main`` alone, at
    ``size``. Frames are converted from the format, size and colour space
    the camera negotiated (:attr:`negotiated`, logged once).

    Args:
        size: (width, height) asked of the stream that is read, pixels.
        fps: frame rate asked, Hz: the camera's ``FrameDurationLimits``
            where it has that control, and frames never handed on faster.

    Raises:
        HappysadError: picamera2 is not installed or the camera does not start.
    """

    live = True

    def __init__(self, size=(640, 480), fps: float | None = None):
        self.name = "picamera"
        self.fps = float(fps or 0.0)
        self._due = 0.0
        try:
            from picamera2 import Picamera2
        except ImportError:
            raise HappysadError(
                "picamera2 is not importable: install python3-picamera2 with apt and "
                "create the venv with --system-site-packages (see docs/raspberry-pi.md)"
            ) from None
        self._cam = None
        try:
            self._cam = Picamera2()
            self._configure(tuple(size))
            self._cam.start()
        except Exception as exc:  # libcamera raises RuntimeError and others
            self.release()
            raise HappysadError(
                f"picamera: the camera does not start ({exc}); check the ribbon "
                "cable and that no other program holds the camera"
            ) from None

    def _configure(self, size: tuple[int, int]) -> None:
        cam = self._cam
        controls = {}
        if self.fps and "FrameDurationLimits" in cam.camera_controls:
            # (min, max) microseconds per frame, libcamera's control.
            controls["FrameDurationLimits"] = (int(1e6 / self.fps), int(1e6 / self.fps))
        main = {"size": (max(1280, size[0]), max(960, size[1]))}
        try:
            cam.configure(
                cam.create_preview_configuration(main=main, lores={"size": size, "format": "YUV420"}, controls=controls)
            )
        except Exception as exc:  # a camera with one stream (generate_configuration gives None)
            _log.info("picamera: no lores stream (%s); reading main at %dx%d", exc, *size)
            cam.configure(cam.create_preview_configuration(main={"size": size}, controls=controls))
        config = cam.camera_configuration()
        self.stream = "lores" if config.get("lores") else "main"
        chosen = config[self.stream]
        self.format, self.size = chosen["format"], tuple(chosen["size"])
        if self.format not in YUV_FORMATS and self.format not in RGB_FORMATS:
            raise RuntimeError(f"the {self.stream} stream was negotiated as {self.format}, which this cannot convert")
        self.full_range = is_full_range(config.get("colour_space"))
        self.negotiated = {
            **{k: dict(config[k]) for k in ("main", "lores") if config.get(k)},
            "colour_space": str(config.get("colour_space")),
            "read": self.stream,
            "frame_duration_limits": controls.get("FrameDurationLimits"),
        }
        _log.info("picamera: negotiated %s; reading %s", _describe(config), self.stream)

    def read(self):
        """The next frame as BGR uint8, or None when the camera gave none in time."""
        if self.fps:
            now = time.monotonic()
            if self._due > now:
                time.sleep(self._due - now)
            self._due = max(now, self._due) + 1.0 / self.fps
        timeout = max(FRAME_TIMEOUT_S, 3.0 / self.fps) if self.fps else FRAME_TIMEOUT_S
        try:
            array = self._cam.capture_array(self.stream, wait=timeout)
        except Exception as exc:  # a timeout, or the camera stopped under us
            _log.debug("picamera: no frame: %s", exc)
            return None
        try:
            return to_bgr(array, self.format, self.size, self.full_range)
        except HappysadError as exc:  # a frame not as negotiated: counted as no frame
            _log.warning("%s", exc)
            return None

    def release(self):
        """Stop and close the camera (safe to call twice)."""
        cam, self._cam = self._cam, None
        if cam is None:
            return
        for step in (cam.stop, cam.close):
            try:
                step()
            except Exception as exc:
                _log.debug("picamera: %s: %s", step.__name__, exc)
