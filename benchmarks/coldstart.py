"""Cold start: a fresh Python process, from its start to its first prediction.

The child imports the runtime (``edge``, or Keras and TensorFlow for a
.keras model), loads the model, decodes one image and classifies it, then
reports the time and its own peak resident memory. The parent notes
``time.monotonic()`` just before starting it and the child notes it after
each stage: the monotonic clock is one system-wide clock on Linux and
macOS, so the differences are wall times from process start (interpreter
start and imports included). The stages (Python itself, numpy, OpenCV,
``edge`` or TensorFlow, the interpreter library, the model, decoding, the
prediction) show where the time and the memory go; numpy, OpenCV and the
interpreter are imported on their own only so that their share is seen
apart, as the runtime imports them anyway.

Each measurement starts with one untimed process, so the files are in the
OS page cache, as on a device that restarts its service (a first read from
disk after a reboot is slower), and Python's compiled bytecode is cached as
an installed package has it: the children run with bytecode writing on even
where ``PYTHONDONTWRITEBYTECODE`` is set, or a checkout's modules would be
compiled again in every timed process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np

from happysad.edge import HappysadError

from .runners import is_keras_path

# Peak RSS on Linux is VmHWM of /proc/self/status (KiB), the high-water mark
# of this process's own memory: ru_maxrss would not do, since Linux carries
# the parent's peak into it across fork and exec (getrusage(2), execve(2)).
# Elsewhere ru_maxrss is the best there is (bytes on macOS).
_CHILD_COMMON = """
import json, resource, sys, time
def peak_rss_mb():
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1e6 if sys.platform == "darwin" else rss * 1024 / 1e6
stages = []
def mark(stage):
    stages.append([stage, time.monotonic(), peak_rss_mb()])
def done(label):
    print(json.dumps({"stages": stages, "label": label}))
mark("python")
import numpy
mark("numpy")
import cv2
mark("opencv")
"""

_CHILD_EDGE = (
    _CHILD_COMMON
    + """
from happysad.edge import Classifier, load_image
from happysad.edge.runtime.backends import default_backend, model_format
mark("edge")
if model_format(sys.argv[1]) == "onnx":
    import onnxruntime
else:
    default_backend("tflite")  # imports ai-edge-litert, else tflite-runtime
mark("interpreter library")
clf = Classifier(sys.argv[1])
mark("model")
image = load_image(sys.argv[2])
mark("decode")
label = clf.classify(image).label
mark("classify")
done(label)
"""
)

_CHILD_KERAS = (
    _CHILD_COMMON
    + """
import keras
mark("tensorflow + keras")
from happysad.edge import load_image, preprocess
mark("edge")
model = keras.saving.load_model(sys.argv[1], safe_mode=True, compile=False)
_, h, w, c = model.input_shape
mark("model")
x = preprocess(load_image(sys.argv[2]), (h, w), "gray" if c == 1 else "rgb")
mark("decode")
p = float(model.predict_on_batch(x[None].astype("float32")).reshape(-1)[0])
mark("classify")
done(int(p >= 0.5))
"""
)


def child_env() -> dict:
    """The child's environment: bytecode caching on (as an installed package
    has it), TensorFlow's info logs off. The child imports ``happysad.edge``
    as installed (a wheel, or the development checkout's editable install)."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def cold_start_once(model: str | os.PathLike, image: str | os.PathLike, timeout_s: float = 300.0) -> dict:
    """One fresh process, from its start to its first prediction.

    Returns:
        {"ms": ms, "peak_rss_mb": MB (10^6 bytes), "stages": [{"stage",
        "ms" (this stage alone), "peak_rss_mb" (the process's peak so far)}]}.

    Raises:
        HappysadError: the child failed; the message carries its last line.
    """
    script = _CHILD_KERAS if is_keras_path(model) else _CHILD_EDGE
    t0 = time.monotonic()
    try:
        res = subprocess.run(
            [sys.executable, "-c", script, str(model), str(image)],
            capture_output=True,
            text=True,
            env=child_env(),
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        raise HappysadError(
            f"{model}: cold start took over {timeout_s:.0f} s; run with --cold-runs 0 to skip it"
        ) from None
    lines = [line for line in res.stdout.splitlines() if line.startswith("{")]
    if res.returncode != 0 or not lines:
        last = (res.stderr.strip().splitlines() or ["no output"])[-1][:200]
        raise HappysadError(f"{model}: cold-start process failed ({last})")
    marks = json.loads(lines[-1])["stages"]
    stages, before = [], t0
    for name, t, peak in marks:
        stages.append({"stage": name, "ms": (t - before) * 1e3, "peak_rss_mb": peak})
        before = t
    return {"ms": (marks[-1][1] - t0) * 1e3, "peak_rss_mb": marks[-1][2], "stages": stages}


def _summary(samples: list[dict]) -> dict:
    ms = [s["ms"] for s in samples]
    rss = [s["peak_rss_mb"] for s in samples]
    stages = [
        {
            "stage": first["stage"],
            "ms": float(np.median([s["stages"][k]["ms"] for s in samples])),
            "peak_rss_mb": float(np.median([s["stages"][k]["peak_rss_mb"] for s in samples])),
        }
        for k, first in enumerate(samples[0]["stages"])
    ]
    return {
        "ms": float(np.median(ms)),
        "peak_rss_mb": float(np.median(rss)),
        "runs_ms": ms,
        "runs_peak_rss_mb": rss,
        "stages": stages,
    }


def cold_start(model: str | os.PathLike, image: str | os.PathLike, runs: int) -> dict | None:
    """Median cold start over ``runs`` fresh processes, after one untimed one
    (None when runs is 0).

    Returns:
        {"ms", "peak_rss_mb"}: medians, in ms and MB; {"runs_ms",
        "runs_peak_rss_mb"}: every run's figures; "stages": per stage, the
        median of its own ms and of the peak RSS so far (MB).

    Raises:
        HappysadError: a child failed.
    """
    return cold_starts([model], image, runs)[0]


def cold_starts(models: list, image: str | os.PathLike, runs: int) -> list[dict | None]:
    """:func:`cold_start` for several models, their processes interleaved
    (a, b, a, b, ...) so that a burst of load on a shared machine falls on
    every model alike and their ratios hold.

    Returns:
        one :func:`cold_start` dict per model, in order (None each when runs is 0).

    Raises:
        HappysadError: a child failed.
    """
    if runs < 1:
        return [None] * len(models)
    for model in models:
        cold_start_once(model, image)  # page cache and bytecode cache, untimed
    samples = [[] for _ in models]
    for _ in range(runs):
        for k, model in enumerate(models):
            samples[k].append(cold_start_once(model, image))
    return [_summary(s) for s in samples]
