"""This machine's side of ``make pi-check``: the answers each architecture's
are compared with, given by the same interpreter the Pi runs.

arm64 runs ai-edge-litert, as this machine does, so its reference is this
venv. armhf runs tflite-runtime 2.14.0, whose int8 kernels are TFLite's
built-in ones (XNNPACK takes no int8 graph in that build), and those round
differently from LiteRT's XNNPACK kernels: on x86_64 the two interpreters
give the same int8 model scores that differ by up to 0.04 (about ten
output steps) on 40% of faces, which moves a label wherever the two best
scores were that close. Comparing armhf with LiteRT would therefore test
the interpreter, not the processor. So armhf is compared with
tflite-runtime 2.14.0 run here (a venv of its own with armhf's
requirements, ``numpy<2`` among them), and the faces on which the two
interpreters disagree on this machine are listed beside it
(:func:`interpreter_differences`), so a reader sees which answers depend
on the interpreter a Pi has.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from happysad.edge.errors import HappysadError

from .pi_roots import requirements


def reference_python(interpreter: str | None, wheel: Path, cache: Path) -> str:
    """The Python whose ``happysad-edge`` gives the reference answers.

    Args:
        interpreter: None (this venv: ai-edge-litert and onnxruntime) or
            "tflite-runtime" (a venv ``cache/host-tflite-runtime`` made once
            with the requirements ``wheel[edge]`` brings on armv7l, then the
            wheel itself reinstalled every run).
        wheel: this checkout's wheel.
        cache: ``~/.cache/happysad`` or the ``--cache`` given.

    Returns:
        The path of the interpreter's Python.

    Raises:
        HappysadError: the venv cannot be made or pip cannot install into it.
    """
    if interpreter is None:
        return sys.executable
    venv = cache / f"host-{interpreter}"
    python = venv / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    if not (venv / ".installed").exists():
        print(f"pi-check: making {venv} ({interpreter} on this machine, once)", file=sys.stderr)
        _run([sys.executable, "-m", "venv", "--clear", str(venv)], f"creating {venv}")
        _run([*pip, *requirements(wheel, "edge", "armv7l")], f"pip install of armhf's requirements into {venv}")
        (venv / ".installed").touch()
    _run([*pip, "--no-deps", "--force-reinstall", str(wheel)], f"pip install of the wheel into {venv}")
    return str(python)


def _run(cmd: list[str], what: str) -> None:
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode:
        last = (res.stderr or res.stdout).strip().splitlines()[-1:] or [""]
        raise HappysadError(f"pi-check: {what} failed: {last[0][:200]}")


def margin(scores: dict) -> float:
    """The best score less the second best (0 on a tie): how near the decision the answer was."""
    top = sorted(scores.values(), reverse=True)
    return top[0] - top[1] if len(top) > 1 else top[0]


def interpreter_differences(litert: dict, other: dict) -> dict:
    """Where two interpreters' answers on this machine differ.

    Args:
        litert, other: {image: (label, scores, basis)} from
            :func:`benchmarks.pi_check.parse_classify`, same images.

    Returns:
        {"images", "scores_differ" (count differing by more than 1e-6),
        "max_score_diff", "labels_differ": [{"image", "litert", "other",
        "litert_margin", "other_margin"}, ...] every image whose label
        differs, with both answers and how near the decision each was}.
    """
    common = sorted(set(litert) & set(other))
    diff = {k: max(abs(litert[k][1][c] - other[k][1].get(c, 0.0)) for c in litert[k][1]) for k in common}
    flips = [
        {
            "image": k,
            "litert": [litert[k][0], litert[k][1]],
            "other": [other[k][0], other[k][1]],
            "litert_margin": round(margin(litert[k][1]), 6),
            "other_margin": round(margin(other[k][1]), 6),
        }
        for k in common
        if litert[k][0] != other[k][0]
    ]
    return {
        "images": len(common),
        "scores_differ": sum(d > 1e-6 for d in diff.values()),
        "max_score_diff": max(diff.values(), default=0.0),
        "labels_differ": flips,
    }
