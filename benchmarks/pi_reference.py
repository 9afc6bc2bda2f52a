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

import json
import sys
from pathlib import Path

from .pi_roots import check_ok, requirements, run_cmd


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
    check_ok(run_cmd(cmd), what)


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


#: Run by the reference Python here and by the root's venv: for each whole
#: face (``face-*/``), a digest of the model input and the raw int8 outputs
#: of TFLite's reference kernels (``BUILTIN_REF``) and of the default ones.
KERNELS_SCRIPT = r"""
import glob, hashlib, json, os, sys
import numpy as np
try:
    from tflite_runtime.interpreter import Interpreter, OpResolverType
except ImportError:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
from happysad.edge.images import load_image
from happysad.edge.runtime.preprocess import preprocess
model, images = sys.argv[1], sys.argv[2]
content = open(model, "rb").read()
kinds = {"reference": OpResolverType.BUILTIN_REF, "default": OpResolverType.AUTO}
its = {k: Interpreter(model_content=content, experimental_op_resolver_type=v) for k, v in kinds.items()}
for it in its.values():
    it.allocate_tensors()
d = its["default"].get_input_details()[0]
scale, zero = d["quantization"]
for f in sorted(glob.glob(os.path.join(images, "face-*", "*"))):
    px = preprocess(load_image(f), tuple(d["shape"][1:3]), "gray" if d["shape"][3] == 1 else "rgb")
    x = np.round(px / scale + zero) if scale else px
    row = {"image": os.path.relpath(f, images), "pixels": hashlib.sha256(px.tobytes()).hexdigest()}
    for k, it in its.items():
        it.set_tensor(d["index"], x.astype(d["dtype"]).reshape(d["shape"]))
        it.invoke()
        row[k] = it.get_tensor(it.get_output_details()[0]["index"]).ravel().tolist()
    print(json.dumps(row))
"""


def parse_kernels(stdout: str) -> dict:
    """{image: row} from :data:`KERNELS_SCRIPT`'s JSON lines."""
    rows = (json.loads(line) for line in stdout.splitlines() if line.startswith("{"))
    return {r["image"]: r for r in rows}


def compare_kernels(here: dict, arm: dict) -> dict:
    """Whole faces' model inputs and raw outputs, this machine against the Pi's.

    Returns:
        {"faces", "pixels_equal", "reference_equal" (TFLite's reference
        kernels, bit for bit), "default_equal", "default_max_steps" (largest
        difference of an output, in quantization steps)}.
    """
    common = sorted(set(here) & set(arm))
    steps = [max(abs(a - b) for a, b in zip(here[k]["default"], arm[k]["default"])) for k in common]
    return {
        "faces": len(common),
        "pixels_equal": sum(here[k]["pixels"] == arm[k]["pixels"] for k in common),
        "reference_equal": sum(here[k]["reference"] == arm[k]["reference"] for k in common),
        "default_equal": sum(s == 0 for s in steps),
        "default_max_steps": max(steps, default=0),
    }
