"""Cold start: a fresh Python process, from its start to its first prediction.

The child imports the runtime (``edge``, or Keras and TensorFlow for a
.keras model), loads the model, decodes one image and classifies it, then
reports the time and its own peak resident memory. The parent notes
``time.monotonic()`` just before starting it and the child notes it just
after the prediction: the monotonic clock is one system-wide clock on Linux
and macOS, so the difference is the wall time from process start to first
prediction (interpreter start and imports included). The model file is
likely in the OS page cache after the first run, as it would be on a device
that restarts its service; a first read from disk after a reboot is slower.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import edge
from edge import HappysadError

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
def done(label):
    t = time.monotonic()
    print(json.dumps({"t_end": t, "peak_rss_mb": peak_rss_mb(), "label": label}))
"""

_CHILD_EDGE = _CHILD_COMMON + """
from edge import Classifier, load_image
clf = Classifier(sys.argv[1])
done(clf.classify(load_image(sys.argv[2])).label)
"""

_CHILD_KERAS = _CHILD_COMMON + """
import keras, numpy as np
from edge import load_image, preprocess
model = keras.saving.load_model(sys.argv[1], safe_mode=True, compile=False)
_, h, w, c = model.input_shape
x = preprocess(load_image(sys.argv[2]), (h, w), "gray" if c == 1 else "rgb")
p = float(model.predict_on_batch(x[None].astype("float32")).reshape(-1)[0])
done(int(p >= 0.5))
"""


def child_env() -> dict:
    """The child's environment: this ``edge`` first on the path, TensorFlow's
    info logs off."""
    env = dict(os.environ)
    root = str(Path(edge.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def cold_start_once(model: str | os.PathLike, image: str | os.PathLike,
                    timeout_s: float = 300.0) -> dict:
    """One fresh process: {"ms": start to first prediction, "peak_rss_mb": MB (10^6 bytes)}.

    Raises:
        HappysadError: the child failed; the message carries its last line.
    """
    script = _CHILD_KERAS if is_keras_path(model) else _CHILD_EDGE
    t0 = time.monotonic()
    try:
        res = subprocess.run([sys.executable, "-c", script, str(model), str(image)],
                             capture_output=True, text=True, env=child_env(), timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise HappysadError(f"{model}: cold start took over {timeout_s:.0f} s; "
                            "run with --cold-runs 0 to skip it") from None
    lines = [line for line in res.stdout.splitlines() if line.startswith("{")]
    if res.returncode != 0 or not lines:
        last = (res.stderr.strip().splitlines() or ["no output"])[-1][:200]
        raise HappysadError(f"{model}: cold-start process failed ({last})")
    out = json.loads(lines[-1])
    return {"ms": (out["t_end"] - t0) * 1e3, "peak_rss_mb": out["peak_rss_mb"]}


def cold_start(model: str | os.PathLike, image: str | os.PathLike, runs: int) -> dict | None:
    """Median cold start over ``runs`` fresh processes (None when runs is 0).

    Returns:
        {"ms", "peak_rss_mb"}: medians, in ms and MB; {"runs_ms",
        "runs_peak_rss_mb"}: every run's figures.
    """
    if runs < 1:
        return None
    samples = [cold_start_once(model, image) for _ in range(runs)]
    ms = [s["ms"] for s in samples]
    rss = [s["peak_rss_mb"] for s in samples]
    return {"ms": float(np.median(ms)), "peak_rss_mb": float(np.median(rss)),
            "runs_ms": ms, "runs_peak_rss_mb": rss}
