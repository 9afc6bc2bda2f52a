"""``happysad-edge doctor``: what this device has, and a fix for each problem."""

from __future__ import annotations

import importlib
import importlib.util
import platform
import struct
import sys
from importlib import metadata as md
from pathlib import Path

#: CPU flags that matter for int8 inference, with what they mean.
#: x86: VNNI adds 8-bit dot-product instructions (oneDNN and XNNPACK use
#: them); Arm: the ARMv8.2 dot-product extension (asimddp), present on the
#: Raspberry Pi 5's Cortex-A76 and absent on the Pi 4's Cortex-A72.
INT8_FLAGS = {
    "avx2": "AVX2 SIMD",
    "avx512_vnni": "AVX-512 VNNI: fast int8 dot products",
    "avx_vnni": "AVX-VNNI: fast int8 dot products",
    "asimd": "NEON SIMD",
    "asimddp": "Arm dot product (ARMv8.2): fast int8",
    "neon": "NEON SIMD (32-bit)",
}


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def cpu_flags() -> set[str]:
    """The CPU feature flags from /proc/cpuinfo (empty where it does not exist)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    flags = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return flags


def _interpreter_lines() -> list[tuple[str, str, str]]:
    """One line per interpreter (usable or not, with the fix), and a FAIL
    when none imports."""
    lines = []
    interpreters = []
    for module, dist, fix in (
        ("ai_edge_litert.interpreter", "ai-edge-litert", "pip install ai-edge-litert==2.3.0 (64-bit OS)"),
        (
            "tflite_runtime.interpreter",
            "tflite-runtime",
            "pip install tflite-runtime==2.14.0 'numpy<2' (32-bit Raspberry Pi OS only)",
        ),
        ("onnxruntime", "onnxruntime", "pip install onnxruntime==1.31.1 (for .onnx models)"),
    ):
        try:
            importlib.import_module(module)
            interpreters.append(dist)
            lines.append(("ok", dist, _version(dist) or "imported"))
        except Exception as exc:  # ImportError, or a broken wheel's OSError
            if dist == "tflite-runtime" and "ai-edge-litert" in interpreters:
                lines.append(("note", dist, "not installed; not needed, ai-edge-litert runs .tflite"))
            else:
                lines.append(("note", dist, f"not usable ({type(exc).__name__}); {fix}"))
    if not interpreters:
        lines.append(
            (
                "FAIL",
                "interpreter",
                "no interpreter imports; pip install ai-edge-litert==2.3.0 "
                "(64-bit) or tflite-runtime==2.14.0 'numpy<2' (32-bit)",
            )
        )
    elif not {"ai-edge-litert", "tflite-runtime"} & set(interpreters):
        lines.append(("note", "interpreter", "only onnxruntime: .tflite models will not run"))
    return lines


#: The extras of the package and a distribution each one installs that
#: the others do not (``pip install 'happysad[NAME]'``).
EXTRAS = {"edge": ("opencv-python-headless",), "edge-onnx": ("onnxruntime",), "train": ("tensorflow-cpu", "tensorflow")}


def extras_line() -> tuple[str, str, str]:
    """Which of the package's extras are installed (read from the installed
    distributions' metadata; nothing is imported)."""
    have = [name for name, dists in EXTRAS.items() if any(_version(d) for d in dists)]
    tflite = _version("ai-edge-litert") or _version("tflite-runtime")
    if not tflite and "edge" in have:
        have.remove("edge")
    if not have and _importable("cv2") and (_importable("ai_edge_litert") or _importable("tflite_runtime")):
        # 32-bit Raspberry Pi OS: numpy and OpenCV from apt, no pip distribution to read.
        return "note", "extras", "none installed by pip, but OpenCV and an interpreter import (from the system?)"
    return (
        "ok" if have else "FAIL",
        "extras",
        (", ".join(have) or "none") + ("" if have else "; pip install 'happysad[edge]'"),
    )


def model_line(model: str) -> tuple[str, str, str]:
    """Whether this install can run ``model``, and the install that is missing if not."""
    from happysad.edge.errors import HappysadError
    from happysad.edge.runtime.backends import default_backend, model_format

    try:
        fmt = model_format(model)
        if fmt == "onnx":
            importlib.import_module("onnxruntime")
        else:
            default_backend(fmt)
    except ImportError:
        return "FAIL", "model", f"{model}: an .onnx file needs onnxruntime: pip install 'happysad[edge-onnx]'"
    except HappysadError as exc:
        return "FAIL", "model", str(exc)
    return "ok", "model", f"{model}: this install runs {fmt} files"


def checks(source: str = "0", model: str | None = None) -> list[tuple[str, str, str]]:
    """Run every check (and, given a model file, whether it can run here).

    Returns:
        (status, what, detail) per line; status is "ok", "note" or "FAIL",
        and a FAIL's detail ends with the fix.
    """
    lines = []
    bits = struct.calcsize("P") * 8
    lines.append(
        (
            "ok",
            "python",
            f"{platform.python_version()} on {platform.machine()} ({bits}-bit), "
            f"{platform.system()} {platform.release()}",
        )
    )
    import numpy as np

    lines.append(("ok", "numpy", np.__version__))
    lines.append(extras_line())
    lines += _interpreter_lines()
    if model:
        lines.append(model_line(model))
    flags = cpu_flags()
    found = [f"{flag} ({meaning})" for flag, meaning in INT8_FLAGS.items() if flag in flags]
    lines.append(
        (
            "ok" if found else "note",
            "cpu features",
            "; ".join(found) or "none of " + ", ".join(INT8_FLAGS) + " (int8 runs, without fast dot products)",
        )
    )
    try:
        import cv2

        lines.append(("ok", "opencv", cv2.__version__))
        lines.append(_detectors_line())
    except Exception as exc:
        lines.append(("FAIL", "face detectors", f"{exc}"))
    lines.append(_camera_line(source))
    return lines


def _importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _detectors_line() -> tuple[str, str, str]:
    """Which face detectors load: ok when all, a note when some (the others
    fall back), FAIL when none."""
    from happysad.edge.errors import HappysadError
    from happysad.edge.faces import DETECTORS, make_detector

    failed = {}
    for name in DETECTORS:
        try:
            make_detector(name, fallback=False)
        except HappysadError as exc:
            failed[name] = str(exc)
    loaded = [n for n in DETECTORS if n not in failed]
    if not failed:
        return "ok", "face detectors", ", ".join(DETECTORS) + " load (models pass their sha256)"
    why = "; ".join(f"{n}: {w}" for n, w in failed.items())
    if not loaded:
        return "FAIL", "face detectors", why
    return "note", "face detectors", f"{', '.join(loaded)} load; {why}"


def _camera_line(source: str) -> tuple[str, str, str]:
    from happysad.edge.camera.sources import open_source
    from happysad.edge.errors import HappysadError

    try:
        src = open_source(source)
    except HappysadError as exc:
        fix = (
            "connect a camera (ls /dev/video*), enable it in raspi-config, or use --source picamera"
            if source.isdigit()
            else "check --source"
        )
        return "FAIL", f"camera {source}", f"does not open ({str(exc).split(';')[0]}); {fix}"
    try:
        frame = src.read()
    finally:
        src.release()
    if frame is None:
        return "FAIL", f"camera {source}", "opens but gives no frame; is another program using it?"
    return "ok", f"camera {source}", f"gives {frame.shape[1]}x{frame.shape[0]} frames"


def report(source: str = "0", out=sys.stdout, model: str | None = None) -> int:
    """Print one line per check; returns 1 when any check failed, else 0."""
    lines = checks(source, model)
    for status, what, detail in lines:
        out.write(f"{status:4s}  {what:15s} {detail}\n")
    return 1 if any(status == "FAIL" for status, _, _ in lines) else 0
