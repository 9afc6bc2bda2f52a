"""TEST-ONLY stand-ins that let Picamera2 open libcamera's virtual camera on
an ordinary x86_64 machine. Never imported by the product (``happysad.edge``
knows nothing of it); ``make picamera-check`` and tests/test_picamera.py load
it into the process that runs the camera, before Picamera2 is imported.

Each stand-in is a difference from a Raspberry Pi (docs/raspberry-pi.md):

1. ``pykms``: a stub module. Raspberry Pi OS ships kms++'s Python bindings
   (python3-kms++, not on PyPI); Picamera2 imports them for its DRM preview.
   With the stub that preview cannot run (the camera loop never uses it).
2. Sensor modes: Picamera2 probes them with the ``Raw`` stream role at
   start-up; the virtual pipeline has no raw stream and refuses the role
   (``'NoneType' object has no attribute 'at'``). The stand-in falls back to
   the camera's largest processed size. A Pi sensor answers the probe.
3. Buffers: Picamera2 allocates frame buffers from ``/dev/dma_heap``, which
   a PC has not; the stand-in allocates them with ``os.memfd_create``, one
   plane per plane of the pixel format (NV12: Y, then UV, in one memfd),
   and maps them without dma-buf sync ioctls.
4. Pace: the virtual pipeline completes requests as fast as they are queued
   and ignores frame rates; the stand-in hands completed requests to
   Picamera2 no more often than ``fps`` times a second, as a sensor
   delivers frames (the buffers are held meanwhile, so the pipeline waits).
5. Colour space: the virtual pipeline reports its NV12 frames as
   ``Rec709`` (limited range) but fills them with the JPEG's own YCbCr,
   which is full range (``Sycc``): read as limited range, they came out
   2.6 grey levels from the JPEG on average, as full range 0.1. The
   stand-in reports ``Sycc``, what a Pi's ISP gives for Picamera2's
   preview configuration.

Also here: where the cached build lives (:func:`find_build`) and the
environment a process needs to load it (:func:`libcamera_env`).
"""

from __future__ import annotations

import json
import mmap
import os
import sys
import time
import types
from pathlib import Path

#: Where ``make picamera-check`` caches the build and its venv.
CACHE = Path(os.environ.get("HAPPYSAD_CACHE", Path.home() / ".cache" / "happysad"))
#: Bytes per pixel of each plane, as (width factor, height factor), per format.
PLANES = {
    "NV12": ((1, 1), (1, 0.5)),
    "NV21": ((1, 1), (1, 0.5)),
    "YUV420": ((1, 1), (0.5, 0.5), (0.5, 0.5)),
    "YVU420": ((1, 1), (0.5, 0.5), (0.5, 0.5)),
}


def find_build(cache: Path = CACHE) -> dict | None:
    """The newest complete cached build's record (``build.json`` with
    ``prefix``, ``pythonpath``, ``libdir``, ``venv``), or None. Only looks:
    never fetches or builds, so a test can skip at once."""
    for record in sorted(cache.glob("libcamera-*/build.json"), reverse=True):
        try:
            info = json.loads(record.read_text())
        except (OSError, ValueError):
            continue
        python = Path(info.get("venv", "")) / "bin" / "python"
        if info.get("ok") and Path(info.get("pythonpath", "")).is_dir() and python.exists():
            return info
    return None


def libcamera_env(info: dict, extra_path: list[str] = ()) -> dict:
    """os.environ plus what loads the built libcamera: its library folder on
    LD_LIBRARY_PATH (read at process start, so for a child process), its
    Python bindings, this folder (for this module) and ``extra_path`` on PYTHONPATH."""
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [info["libdir"], env.get("LD_LIBRARY_PATH")]))
    paths = [*extra_path, str(Path(__file__).resolve().parent), info["pythonpath"]]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [*paths, env.get("PYTHONPATH")]))
    env.setdefault("LIBCAMERA_LOG_LEVELS", "*:ERROR")
    return env


class _Anything(type):
    """A class whose every attribute is another such class (pykms.PixelFormat.RGB888...)."""

    def __getattr__(cls, name):
        return _Anything(name, (), {})


def _stub_pykms() -> None:
    stub = types.ModuleType("pykms")
    stub.__doc__ = "TEST-ONLY stub of kms++'s bindings: the DRM preview cannot run."
    stub.__getattr__ = lambda name: _Anything(name, (), {})
    sys.modules.setdefault("pykms", stub)


def _raw_mode_fallback(picamera2_cls) -> None:
    import libcamera

    original = picamera2_cls._get_raw_modes

    def _get_raw_modes(self):
        try:
            return original(self)
        except Exception:  # the virtual pipeline refuses the Raw role
            config = self.camera.generate_configuration([libcamera.StreamRole.Viewfinder])
            formats = config.at(0).formats
            pixels = formats.pixel_formats
            return [{"format": str(p), "size": (s.width, s.height)} for p in pixels for s in formats.sizes(p)]

    picamera2_cls._get_raw_modes = _get_raw_modes


def memfd_allocator_class():
    """A Picamera2 allocator on ``os.memfd_create`` (see the module's note 3)."""
    import libcamera
    from picamera2.allocators.allocator import Allocator, Sync

    class MappedSync(Sync):
        def __init__(self, allocator, fb, write):
            self.buffer = allocator.mapped_buffers.get(fb)

        def __enter__(self):
            return self.buffer

        def __exit__(self, *exc):
            return None

    class MemfdAllocator(Allocator):
        def __init__(self):
            super().__init__()
            self.sync = MappedSync
            self.frame_buffers, self.mapped_buffers, self.fds = {}, {}, []

        def allocate(self, libcamera_config, _use_case):
            self.close()
            for stream_config in libcamera_config:
                fmt, stride = str(stream_config.pixel_format), stream_config.stride
                height, size = stream_config.size.height, stream_config.frame_size
                lengths = [int(stride * w * height * h) for w, h in PLANES.get(fmt, ((1, 1),))]
                lengths[-1] = size - sum(lengths[:-1])
                buffers = []
                for i in range(stream_config.buffer_count):
                    fd = os.memfd_create(f"happysad-test-{i}", os.MFD_CLOEXEC)
                    os.ftruncate(fd, size)
                    self.fds.append(fd)
                    planes, offset = [], 0
                    for length in lengths:
                        plane = libcamera.FrameBuffer.Plane()
                        plane.fd, plane.offset, plane.length = fd, offset, length
                        planes.append(plane)
                        offset += length
                    buffers.append(libcamera.FrameBuffer(planes))
                    self.mapped_buffers[buffers[-1]] = mmap.mmap(fd, size, mmap.MAP_SHARED)
                self.frame_buffers[stream_config.stream] = buffers

        def buffers(self, stream):
            return self.frame_buffers[stream]

        def close(self):
            for m in self.mapped_buffers.values():
                m.close()
            for fd in self.fds:
                os.close(fd)
            self.frame_buffers, self.mapped_buffers, self.fds = {}, {}, []

    return MemfdAllocator


def _pace(picamera2_cls, fps: float) -> None:
    original = picamera2_cls.process_requests

    def process_requests(self, display):
        now = time.monotonic()
        due = getattr(self, "_virtual_due", 0.0)
        if due > now:
            time.sleep(due - now)
        self._virtual_due = max(now, due) + 1.0 / fps
        return original(self, display)

    picamera2_cls.process_requests = process_requests


def _honest_colour_space(picamera2_cls) -> None:
    import libcamera

    original = picamera2_cls._update_camera_config

    def _update_camera_config(self, camera_config, libcamera_config):
        original(self, camera_config, libcamera_config)
        camera_config["colour_space"] = libcamera.ColorSpace.Sycc()

    picamera2_cls._update_camera_config = _update_camera_config


def install(fps: float | None = None) -> None:
    """Apply the stand-ins to Picamera2 in this process (idempotent).

    Args:
        fps: queue requests no faster than this (Hz), as a sensor would
            deliver frames; None: ``HAPPYSAD_VIRTUAL_FPS`` or 30.
    """
    if getattr(install, "done", False):
        return
    _stub_pykms()
    import picamera2.picamera2 as module

    _raw_mode_fallback(module.Picamera2)
    _honest_colour_space(module.Picamera2)
    module.DmaAllocator = memfd_allocator_class()
    _pace(module.Picamera2, float(fps or os.environ.get("HAPPYSAD_VIRTUAL_FPS") or 30))
    install.done = True


def main(argv=None) -> int:
    """``happysad-edge`` with the stand-ins loaded first: run as
    ``python -c "import sys, picamera_virtual; sys.exit(picamera_virtual.main())" camera ...``."""
    install()
    from happysad.edge.cli import main as cli

    return cli(argv)
