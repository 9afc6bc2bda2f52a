"""How far the virtual camera's frames, read through ``PicameraSource``,
are from OpenCV's decoding of the JPEG each was made from: the pixel
difference :mod:`.picamera_check`'s tolerance rests on, measured on every
run (x86_64, and the arm64 root of ``make pi-check PICAMERA=1``)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

#: Run by the camera's venv: frames read through PicameraSource, each
#: against OpenCV's decoding of the picture it best matches; JSON rows.
PIXELS_SCRIPT = r"""
import glob, json, sys
import cv2, numpy as np, picamera_virtual
picamera_virtual.install()
from happysad.edge.camera.picamera import PicameraSource
pics = [cv2.imread(p).astype(np.int16) for p in sorted(glob.glob(sys.argv[1] + "/*.jpg"))]
src, rows = PicameraSource((640, 480), 15), []
for _ in range(int(sys.argv[2])):
    f = src.read()
    if f is not None:
        d = min((np.abs(f.astype(np.int16) - p) for p in pics), key=np.mean)
        rows.append([float(d.mean()), float(np.percentile(d, 99)), int(d.max())])
src.release()
print(json.dumps(rows))
"""


def pixel_differences(python: Path, env: dict, frames: Path, n: int = 40) -> dict:
    """Grey-level differences between ``n`` camera frames and OpenCV's
    decoding of the JPEG each was made from: {"frames", "mean" [least,
    most] per frame, "p99" (largest 99th percentile), "max"}."""
    res = subprocess.run(
        [str(python), "-c", PIXELS_SCRIPT, str(frames), str(n)], capture_output=True, text=True, env=env
    )
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("[")]
    rows = json.loads(lines[-1]) if lines else []
    if not rows:
        return {"frames": 0}
    means = [r[0] for r in rows]
    return {
        "frames": len(rows),
        "mean": [round(min(means), 3), round(max(means), 3)],
        "p99": max(r[1] for r in rows),
        "max": max(r[2] for r in rows),
    }


def pixels_line(px: dict) -> str:
    """The report's line for :func:`pixel_differences`' result."""
    if not px.get("frames"):
        return "- camera pixels against OpenCV's decoding: not measured"
    return (
        f"- camera pixels against OpenCV's decoding of the same JPEG ({px['frames']} frames): mean "
        f"{px['mean'][0]}-{px['mean'][1]} grey levels per frame, 99th percentile at most {px['p99']:g}, "
        f"largest {px['max']}"
    )
