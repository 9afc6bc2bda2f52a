"""The machine a benchmark ran on: CPU, cores, OS, Python and the runtimes' versions."""

from __future__ import annotations

import os
import platform
from importlib import metadata as md
from pathlib import Path


def _cpu_model() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        fields = {}
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip().lower(), value.strip())
        # x86: "model name"; Raspberry Pi OS: "Model" (the board) or "Hardware".
        cpu = fields.get("model name") or fields.get("model") or fields.get("hardware") or cpu
    except OSError:
        pass
    return cpu


def machine_info() -> dict:
    """CPU model, cores, OS, Python and the installed runtimes' versions."""
    versions = {}
    for name in (
        "ai-edge-litert",
        "tflite-runtime",
        "onnxruntime",
        "numpy",
        "opencv-python-headless",
        "tensorflow-cpu",
        "tensorflow",
        "keras",
        "onnx",
    ):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    return {
        "cpu": _cpu_model(),
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": versions,
    }
