"""Latency and accuracy of exported models, measured through ``edge``.

Every model is loaded with :class:`edge.Classifier`, the code a device runs,
and judged on the same decoded images, so the accuracy drop between a float
and an int8 file is measured, not estimated.
"""
from __future__ import annotations

import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge import Classifier, HappysadError, load_image, preprocess
from edge.backends import default_backend, model_format
from edge.dataset import labelled_images, read_split, split_items
from edge.metrics import classification_metrics


@dataclass
class BenchOptions:
    """Settings of :func:`run_bench`.

    Attributes:
        models: .tflite / .onnx files.
        data: labelled folder (one sub-folder per class), or None.
        split: ``RUN_DIR/split.json``, or None (one of data/split is needed).
        part: which part of the split to use.
        data_root: where the split's images are, if moved.
        threads: interpreter threads (None: the interpreter's default).
        runs: timed inferences per model, after ``warmup`` untimed ones.
        warmup: untimed inferences first (allocation, caches, XNNPACK packing).
    """

    models: list
    data: str | None = None
    split: str | None = None
    part: str = "test"
    data_root: str | None = None
    threads: int | None = None
    runs: int = 200
    warmup: int = 20
    backends: dict = field(default_factory=dict)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def load_labelled(opts: BenchOptions):
    """Decode the labelled images once for all models.

    Returns:
        (labels, paths, y int64 (N,), images: list of uint8 BGR arrays).
        Files that do not decode are reported on stderr and left out.

    Raises:
        HappysadError: no data given, or no image decodes.
    """
    if opts.split:
        split = read_split(opts.split, opts.data_root)
        labels, items = split["labels"], split_items(split, opts.part)
    elif opts.data:
        labels, items = labelled_images(opts.data)
    else:
        raise HappysadError("give labelled images with --data DIR or --split RUN_DIR/split.json")
    paths, ys, images = [], [], []
    for path, y in items:
        try:
            images.append(load_image(path))
        except HappysadError as exc:
            _log(f"skipped: {exc}")
            continue
        paths.append(path)
        ys.append(y)
    if not images:
        raise HappysadError("no labelled image could be read; check --data or --split")
    return list(labels), paths, np.array(ys, dtype=np.int64), images


def percentiles(samples_ms) -> dict:
    """mean, std, min, max, p50, p90, p99 of latency samples (ms).

    Percentiles use numpy's default linear interpolation between ranks.
    """
    a = np.asarray(samples_ms, dtype=np.float64)
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {"mean": float(a.mean()), "std": float(a.std()), "min": float(a.min()),
            "max": float(a.max()), "p50": float(p50), "p90": float(p90), "p99": float(p99)}


def latency(clf: Classifier, pixels: np.ndarray, runs: int, warmup: int) -> dict:
    """Single-image inference latency in ms: write input, invoke, read output.

    Args:
        pixels: one preprocessed input (uint8 H, W, C).
        runs: timed runs; warmup: untimed runs before them.
    """
    for _ in range(warmup):
        clf.scores(pixels)
    samples = np.empty(runs)
    for i in range(runs):
        t0 = time.perf_counter()
        clf.scores(pixels)
        samples[i] = (time.perf_counter() - t0) * 1e3
    return percentiles(samples)


def bench_model(path: str, labels, y, images, opts: BenchOptions) -> dict:
    """Size, load time, latency and accuracy of one model file.

    Returns:
        dict with model, format, backend, size_mb (10^6 bytes), load_ms,
        latency_ms (see :func:`percentiles`), fps (1000 / p50), predictions
        (int list), and the :func:`edge.metrics.classification_metrics` figures.

    Raises:
        HappysadError: the model cannot be loaded, or its labels differ from the data's.
    """
    t0 = time.perf_counter()
    clf = Classifier(path, opts.threads)
    load_ms = (time.perf_counter() - t0) * 1e3
    if list(clf.labels) != list(labels):
        raise HappysadError(f"{path}: model labels {list(clf.labels)} differ from the data's {labels}")
    preds = np.array([clf.labels.index(clf.classify_image(im).label) for im in images], dtype=np.int64)
    pixels = preprocess(images[0], clf.metadata.image_size, clf.metadata.color)
    lat = latency(clf, pixels, opts.runs, opts.warmup)
    meta = clf.metadata.extra
    return {"model": str(path), "format": meta.get("format", Path(path).suffix[1:]),
            "backend": clf.backend.name, "size_mb": os.path.getsize(path) / 1e6,
            "load_ms": load_ms, "latency_ms": lat, "fps": 1e3 / lat["p50"] if lat["p50"] else 0.0,
            **classification_metrics(y, preds, labels), "predictions": preds.tolist()}


def reference_for(result: dict, results: list) -> dict:
    """The float model a result is compared with: the float32 file of the
    same format family (TFLite or ONNX) when one was measured, else the first."""
    family = result["format"].split("-")[0]
    for r in results:
        if r["format"] == f"{family}-float32":
            return r
    return results[0]


def machine_info() -> dict:
    """CPU model, cores, OS, Python and interpreter versions."""
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
    versions = {}
    for mod, name in (("ai_edge_litert", "ai-edge-litert"), ("tflite_runtime", "tflite-runtime"),
                      ("onnxruntime", "onnxruntime"), ("numpy", "numpy"), ("cv2", "opencv")):
        try:
            from importlib import metadata as md
            dist = {"cv2": "opencv-python-headless"}.get(mod, name)
            versions[name] = md.version(dist)
        except Exception:
            continue
    return {"cpu": cpu, "machine": platform.machine(), "cores": os.cpu_count(),
            "os": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
            "versions": versions}


def run_bench(opts: BenchOptions) -> dict:
    """Measure every model on the same images.

    Returns:
        {"machine", "settings", "results": [...]} where each result also has
        reference (model compared with), drop_pp (reference accuracy minus
        this accuracy, in percentage points) and agreement (share of images
        given the reference's label).
    """
    labels, paths, y, images = load_labelled(opts)
    # Import the interpreters before timing, so the first model's load time
    # does not carry the import.
    for fmt in sorted({model_format(m) for m in opts.models}):
        if fmt == "tflite":
            default_backend("tflite")
        else:
            import onnxruntime  # noqa: F401
    _log(f"{len(images)} labelled images; {opts.warmup} warm-up + {opts.runs} timed runs per model")
    results = []
    for i, model in enumerate(opts.models, 1):
        _log(f"[{i}/{len(opts.models)}] {model}")
        results.append(bench_model(model, labels, y, images, opts))
    for r in results:
        ref = reference_for(r, results)
        r["reference"] = ref["model"]
        r["drop_pp"] = (ref["accuracy"] - r["accuracy"]) * 100
        r["agreement"] = float(np.mean(np.array(r["predictions"]) == np.array(ref["predictions"])))
    settings = {"images": len(images), "source": opts.split or opts.data,
                "part": opts.part if opts.split else None, "threads": opts.threads,
                "runs": opts.runs, "warmup": opts.warmup}
    return {"machine": machine_info(), "settings": settings, "results": results}


COLUMNS = [("model", "{}"), ("backend", "{}"), ("size MB", "{:.3f}"), ("load ms", "{:.1f}"),
           ("mean ms", "{:.3f}"), ("p50 ms", "{:.3f}"), ("p90 ms", "{:.3f}"), ("p99 ms", "{:.3f}"),
           ("accuracy", "{:.4f}"), ("precision", "{:.4f}"), ("recall", "{:.4f}"), ("F1", "{:.4f}"),
           ("drop pp", "{:+.2f}"), ("agreement", "{:.4f}")]


def table_rows(report: dict) -> list[list[str]]:
    """The table's cells, one list per model, in :data:`COLUMNS` order."""
    rows = []
    for r in report["results"]:
        lat = r["latency_ms"]
        values = [Path(r["model"]).name, r["backend"], r["size_mb"], r["load_ms"], lat["mean"],
                  lat["p50"], lat["p90"], lat["p99"], r["accuracy"], r["precision"], r["recall"],
                  r["f1"], r["drop_pp"], r["agreement"]]
        rows.append([fmt.format(v) for (_, fmt), v in zip(COLUMNS, values)])
    return rows


def format_table(report: dict) -> str:
    """A plain-text table, columns aligned."""
    header = [name for name, _ in COLUMNS]
    rows = table_rows(report)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.rjust(w) if i else c.ljust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    s = report["settings"]
    m = report["machine"]
    notes = (f"latency: single image, {s['warmup']} warm-up + {s['runs']} timed runs; "
             f"accuracy on {s['images']} images of {s['source']}"
             + (f" ({s['part']})" if s.get("part") else "")
             + f"; drop pp: accuracy below the float reference, in percentage points\n"
             f"machine: {m['cpu']}, {m['cores']} cores, {m['os']}, Python {m['python']}")
    return "\n".join([line(header), *(line(r) for r in rows), notes])
