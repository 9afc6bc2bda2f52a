"""Latency and memory of model files on a synthetic input, with no labelled
data (what TFLite's ``benchmark_model`` and ``onnxruntime_perf_test`` measure)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from happysad.edge.console import log as _log

from .bench import BenchOptions, check_models, latency_row
from .coldstart import cold_start
from .machine import machine_info
from .runners import is_keras_path, load_runner


def run_latency_only(opts: BenchOptions, workdir: Path) -> dict:
    """Latency, load time and peak memory with no labelled data, as TFLite's
    ``benchmark_model`` and ``onnxruntime_perf_test`` measure a bare model
    file: the input is a synthetic image of the model's own size (seeded
    uniform noise, 0..255), written to ``workdir`` for the cold-start processes.

    Returns:
        {"machine", "settings", "results"}: per model and thread count the
        :func:`latency_row` figures, load_ms, size_mb, and cold_start ({ms,
        peak_rss_mb}, None with ``cold_runs`` 0); no accuracy.

    Raises:
        HappysadError: a model cannot be loaded.
    """
    import cv2

    check_models(opts.models)
    results = []
    start = time.perf_counter()
    rng = np.random.default_rng(0)
    for i, path in enumerate(opts.models, 1):
        _log(f"[{i}/{len(opts.models)}] {path} (no data: a synthetic input of the model's size)")
        name = Path(path).name
        sweep = [None] if is_keras_path(path) else list(opts.threads)
        image_path = None
        for threads in sweep:
            runner = load_runner(path, None, threads, opts.detector)
            image = rng.integers(0, 256, (*runner.size, 3), dtype=np.uint8)
            if image_path is None:
                image_path = workdir / f"synthetic-{i}.png"
                cv2.imwrite(str(image_path), image)
            lat = latency_row(runner, image, opts)
            _log(f"  {name}, threads {threads or 'default'}: p50 {lat['latency_ms']['p50']:.3f} ms")
            results.append(
                {
                    "model": str(path),
                    "name": name,
                    "format": runner.format,
                    "backend": runner.backend,
                    "threads": threads,
                    "size_mb": runner.size_mb,
                    "load_ms": runner.load_ms,
                    **lat,
                }
            )
            del runner
        cold = cold_start(path, image_path, opts.cold_runs)
        for row in results:
            if row["model"] == str(path):
                row["cold_start"] = cold
    return {"machine": machine_info(), "settings": _settings(opts, start), "results": results}


def _settings(opts: BenchOptions, start: float) -> dict:
    """The report's settings: no data, the latency options, the date, the time taken (s)."""
    return {
        "images": 0,
        "source": None,
        "accuracy": "no accuracy: no data",
        "threads": opts.threads,
        "runs": opts.runs,
        "warmup": opts.warmup,
        "min_seconds": opts.min_seconds,
        "cold_runs": opts.cold_runs,
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "seconds": time.perf_counter() - start,
    }


def format_latency_only(report: dict) -> str:
    """The latency table of :func:`run_latency_only`, plain text."""
    head = (
        "model",
        "runtime",
        "threads",
        "size MB",
        "load ms",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "FPS",
        "cold start ms",
        "peak RSS MB",
    )
    rows = [head]
    for r in report["results"]:
        lat, cold = r["latency_ms"], r.get("cold_start")
        rows.append(
            (
                r["name"],
                r["backend"],
                str(r["threads"] or "default"),
                f"{r['size_mb']:.3f}",
                f"{r['load_ms']:.1f}",
                f"{lat['p50']:.3f}",
                f"{lat['p90']:.3f}",
                f"{lat['p99']:.3f}",
                f"{r['fps']:.0f}",
                f"{cold['ms']:.0f}" if cold else "n/a",
                f"{cold['peak_rss_mb']:.1f}" if cold else "n/a",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = [
        "  ".join(c.ljust(w) if j < 3 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths))) for row in rows
    ]
    s = report["settings"]
    lines.append(
        f"no accuracy: no data (give --data DIR or --split FILE for it); latency: one synthetic image of "
        f"the model's size, {s['warmup']} warm-up runs excluded, at least {s['runs']} timed runs; "
        f"cold start and peak RSS: median of {s['cold_runs']} fresh processes"
        if s["cold_runs"]
        else "no accuracy: no data; cold start: not measured (--cold-runs 0)"
    )
    return "\n".join(lines)
