"""Latency, cost and accuracy of model files, measured through ``edge``.

Every .tflite/.onnx model is loaded with :class:`edge.Classifier`, the code
a device runs, and judged on the same decoded images, so the accuracy drop
between a float and an int8 file is measured, not estimated. A .keras model
(where TensorFlow is installed) gets a row too, the reference for speed-up
and memory ratios.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from happysad.edge import HappysadError, read_metadata
from happysad.edge.console import log as _log
from happysad.edge.console import progress
from happysad.edge.dataset import labelled_images, read_split, split_digests, split_items, split_votes
from happysad.edge.errors import UsageError
from happysad.edge.faces import DEFAULT_DETECTOR
from happysad.edge.fileio import report_path
from happysad.edge.images import decode_image, read_image_bytes
from happysad.edge.metrics import classification_metrics, vote_metrics
from happysad.edge.runtime.backends import default_backend, model_format

from .coldstart import cold_start
from .comparisons import add_comparisons
from .comparisons import reference_for as reference_for
from .machine import machine_info
from .runners import import_keras, is_keras_path, load_runner
from .timing import STAGES, fps, percentiles, time_once, time_stages


@dataclass(kw_only=True)
class BenchOptions:
    """Settings of :func:`run_bench`.

    Attributes:
        models: .tflite / .onnx files, and optionally a .keras model.
        data: labelled folder (one sub-folder per class), or None.
        split: ``RUN_DIR/split.json``, or None (one of data/split is needed).
        part: which part of the split to use.
        data_root: where the split's images are, if moved.
        threads: interpreter thread counts to sweep; None in the list means
            the interpreter's default. A .keras model runs once, at
            TensorFlow's default.
        runs: least number of timed inferences per model and thread count,
            after ``warmup`` untimed ones.
        warmup: untimed inferences first (allocation, caches, XNNPACK packing).
        min_seconds: least timed wall time per model and thread count, s.
        cold_runs: fresh processes per model for the cold start (0: skip).
        detector: the face detector for images larger than the model input
            (one of :data:`edge.faces.DETECTORS`).
        tta: also measure each model file with this test-time augmentation
            (``"flip"``: the face and its mirror image averaged, two
            inferences), in rows of their own; None: not.
        allow_changed: score a split's images whose sha256 differs from
            the one it records (reported in the settings), instead of refusing.
    """

    models: list
    data: str | None = None
    split: str | None = None
    part: str = "test"
    data_root: str | None = None
    threads: list = field(default_factory=lambda: [None])
    runs: int = 200
    warmup: int = 20
    min_seconds: float = 0.0
    cold_runs: int = 3
    detector: str = DEFAULT_DETECTOR
    tta: str | None = None
    allow_changed: bool = False


def model_labels(models) -> list[str] | None:
    """The labels, in output order, of the first model file that records
    them (a .keras model does not); None when none does."""
    for model in models:
        if not is_keras_path(model):
            return list(read_metadata(model).labels)
    return None


def load_labelled(opts: BenchOptions):
    """Decode the labelled images once for all models.

    A ``data`` folder's classes are taken in the order of the first model
    file's labels (its sub-folders of those names; others are left out), so
    any folder with the model's classes can be measured. A split's entries
    are checked (:func:`edge.dataset.split_items`), each image's bytes
    against the sha256 the split records.

    Returns:
        (labels, paths, y int64 (N,), images: list of uint8 BGR arrays,
        votes: float (N, 10) FER+ counts of a split that records them, NaN
        rows for files without, else None, changed: paths of images scored
        though changed, with ``allow_changed``). Files that do not decode
        are reported on stderr and left out.

    Raises:
        HappysadError: no data given, a malformed split, an image changed
            since the split was written (without ``allow_changed``), or no
            image decodes.
    """
    votes = digests = None
    if opts.split:
        split = read_split(opts.split, opts.data_root)
        labels, items = split["labels"], split_items(split, opts.part)
        votes, digests = split_votes(split, opts.part), split_digests(split, opts.part)
    elif opts.data:
        labels, items = labelled_images(opts.data, model_labels(opts.models))
    else:
        raise HappysadError("give labelled images with --data DIR or --split RUN_DIR/split.json")
    kept, images, changed = _decode(items, digests)
    if changed and not opts.allow_changed:
        more = f" and {len(changed) - 1} more" if len(changed) > 1 else ""
        raise HappysadError(
            f"{report_path(changed[0])}{more}: changed since {report_path(opts.split)} was written (sha256 "
            "differs), so the scores would be of other images than the split names; restore the images, "
            "or score them anyway with --allow-changed"
        )
    if changed:
        _log(f"note: {len(changed)} images changed since the split was written, scored anyway (--allow-changed)")
    if not images:
        raise HappysadError("no labelled image could be read; check --data or --split")
    paths, ys = [items[k][0] for k in kept], [items[k][1] for k in kept]
    return list(labels), paths, np.array(ys, dtype=np.int64), images, None if votes is None else votes[kept], changed


def _decode(items, digests) -> tuple[list, list, list]:
    """Decode each (path, label) of ``items``, checking its bytes against
    ``digests`` (sha256 hex per item, None: not recorded) where given.

    Returns:
        (indices of the items decoded, their uint8 BGR images, the paths
        whose sha256 differs); a file that does not decode is logged and left out.
    """
    import hashlib

    kept, images, changed = [], [], []
    bar = progress(len(items), "decoding")
    for k, (path, _) in enumerate(items):
        bar.update()
        try:
            data = read_image_bytes(path)
            if digests and digests[k] and hashlib.sha256(data).hexdigest() != digests[k]:
                changed.append(path)
            images.append(decode_image(data, path))
        except HappysadError as exc:
            _log(f"skipped: {exc}")
            continue
        kept.append(k)
    bar.close()
    return kept, images, changed


def check_models(models) -> None:
    """Fail fast, before any image is decoded, on a model that cannot run here.

    Imports each runtime once, so the first model's load time does not carry
    the import.

    Raises:
        UsageError: a model file is missing (exit status 2).
        HappysadError: a model's runtime is not installed.
    """
    for model in models:
        if is_keras_path(model):
            if not Path(model).is_file():
                raise UsageError(f"{model}: no such model file; check the path")
            import_keras()
        elif model_format(model) == "tflite":
            default_backend("tflite")
        else:
            try:
                import onnxruntime  # noqa: F401
            except ImportError:
                raise HappysadError("backend onnxruntime is not installed: pip install onnxruntime") from None


def latency_row(runner, image: np.ndarray, opts: BenchOptions) -> dict:
    """First-inference time and timed latency of one loaded model.

    Returns:
        dict with first_ms (the first inference after load, untimed warm-up
        excluded, ms), latency_ms (:func:`~benchmarks.timing.percentiles` of
        whole runs), stages_ms ({stage: percentiles}), fps (1000 / p50, Hz),
        samples_ms (every timed run, ms).
    """
    pre, invoke, post = runner.stages(image)
    first_ms, _ = time_once(lambda: post(invoke(pre())))
    per_stage = time_stages((pre, invoke, post), opts.runs, opts.warmup, opts.min_seconds)
    total = per_stage.sum(axis=1)
    lat = percentiles(total)
    return {
        "first_ms": first_ms,
        "latency_ms": lat,
        "stages_ms": {s: percentiles(per_stage[:, i]) for i, s in enumerate(STAGES)},
        "fps": fps(lat["p50"]),
        "samples_ms": [round(float(v), 5) for v in total],
    }


def bench_model(path: str, labels, y, images, image_path, opts: BenchOptions, votes=None) -> list[dict]:
    """Every figure of one model file: one row per thread count.

    Accuracy is measured once, with the first thread count (the labels do not
    depend on it); cost and cold start are per file.

    Returns:
        list of dicts with model, name, format, backend, threads, size_mb
        (10^6 bytes), params and macs per face (None where not available;
        twice the model's with ``--tta flip``), load_ms,
        the :func:`latency_row` figures, cold_start ({ms, peak_rss_mb} or
        None), predictions (int list) and the
        :func:`edge.metrics.classification_metrics` figures.

    Raises:
        HappysadError: the model cannot be loaded, or its labels differ from the data's.
    """
    rows = _bench_rows(path, labels, y, images, opts, "none", votes)
    if opts.tta and not is_keras_path(path):
        rows += _bench_rows(path, labels, y, images, opts, opts.tta, votes)
    cold = cold_start(path, image_path, opts.cold_runs)
    if cold:
        _log(
            f"  {Path(path).name}: cold start {cold['ms']:.0f} ms, peak RSS {cold['peak_rss_mb']:.0f} MB "
            f"(median of {opts.cold_runs})"
        )
    for row in rows:
        row["cold_start"] = cold
    return rows


def _bench_rows(path: str, labels, y, images, opts: BenchOptions, tta: str, votes=None) -> list[dict]:
    """:func:`bench_model`'s rows for one test-time augmentation, without the cold start."""
    name = Path(path).name + (f" +{tta}" if tta != "none" else "")
    sweep = [None] if is_keras_path(path) else list(opts.threads)
    rows, metrics, cost = [], None, None
    for threads in sweep:
        runner = load_runner(path, labels, threads, opts.detector, tta)
        if metrics is None:
            t0 = time.perf_counter()
            preds, probs = runner.predict_scores(images)
            metrics = accuracy_figures(y, preds, probs, labels, votes)
            cost = runner.cost()
            _log(
                f"  {name}: accuracy {metrics['accuracy']:.4f} on {len(images)} images "
                f"({time.perf_counter() - t0:.1f} s)"
            )
        lat = latency_row(runner, images[0], opts)
        _log(
            f"  {name}, threads {threads or 'default'}: load {runner.load_ms:.1f} ms, "
            f"p50 {lat['latency_ms']['p50']:.3f} ms over {len(lat['samples_ms'])} runs"
        )
        rows.append(
            {
                "model": str(path),
                "name": name,
                "format": runner.format,
                "tta": tta,
                "backend": runner.backend,
                "threads": threads,
                "size_mb": runner.size_mb,
                "params": cost[0],
                # Per face: --tta flip runs the model twice.
                "macs": None if cost[1] is None else cost[1] * (2 if tta == "flip" else 1),
                "load_ms": runner.load_ms,
                **lat,
            }
        )
        del runner
    for row in rows:
        row.update(metrics)
    return rows


def accuracy_figures(y, preds, probs, labels, votes=None) -> dict:
    """The accuracy figures of one model on the labelled images.

    Args:
        y: int64 (N,) folder labels as indices into ``labels`` (-1: a folder
            that is none of the model's classes, left out of these).
        preds: int64 (N,) predicted indices. probs: float (N, C).
        votes: float (N, 10) FER+ counts (NaN rows: none), or None.

    Returns:
        :func:`edge.metrics.classification_metrics` on the folder labels;
        ``forced_accuracy``: the class with the highest score among those
        the folders hold (happy vs sad on photos of happy and sad people),
        0..1; ``called``: {label: share of images given it}; ``predictions``;
        and ``ferplus`` (:func:`edge.metrics.vote_metrics`) where votes are known.
    """
    y, preds, probs = np.asarray(y), np.asarray(preds), np.asarray(probs)
    known = y >= 0
    out = {**classification_metrics(y[known], preds[known], labels), "predictions": preds.tolist()}
    present = sorted(set(y[known].tolist()))
    forced = np.array(present)[np.argmax(probs[known][:, present], axis=1)] if present else preds[known]
    out["forced_accuracy"] = float(np.mean(forced == y[known])) if known.any() else None
    out["called"] = {lab: float(np.mean(preds == i)) for i, lab in enumerate(labels)}
    if votes is not None and np.isfinite(votes).any():
        out["ferplus"] = vote_metrics(probs, labels, votes)
    return out


def run_bench(opts: BenchOptions) -> dict:
    """Measure every model on the same images.

    Returns:
        {"machine", "settings", "results": [...]}: one result per model and
        thread count (see :func:`bench_model` and :func:`add_comparisons`).

    Raises:
        HappysadError: bad data, or a model that cannot be loaded.
    """
    check_models(opts.models)
    labels, paths, y, images, votes, changed = load_labelled(opts)
    _log(
        f"{len(images)} labelled images; per model and thread count: {opts.warmup} warm-up + "
        f"at least {opts.runs} timed runs"
        + (f" and {opts.min_seconds:g} s" if opts.min_seconds else "")
        + f"; {opts.cold_runs} cold starts per model"
    )
    results = []
    start = time.perf_counter()
    for i, model in enumerate(opts.models, 1):
        _log(f"[{i}/{len(opts.models)}] {model} ({time.perf_counter() - start:.0f} s elapsed)")
        results.extend(bench_model(model, labels, y, images, paths[0], opts, votes))
    add_comparisons(results)
    settings = {
        "images": len(images),
        "labels": labels,
        "source": report_path(opts.split or opts.data),
        "part": opts.part if opts.split else None,
        "allow_changed": opts.allow_changed,
        "changed_images": [report_path(p) for p in changed],
        "threads": opts.threads,
        "runs": opts.runs,
        "warmup": opts.warmup,
        "min_seconds": opts.min_seconds,
        "cold_runs": opts.cold_runs,
        "latency_image": report_path(paths[0]),
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "seconds": time.perf_counter() - start,
    }
    return {"machine": machine_info(), "settings": settings, "results": results}
