"""One training run: scan and report the data, split, fit, evaluate, write the run folder.

The run's settings are :class:`train.options.TrainOptions`; the fit itself
(TensorFlow, the pipelines, the model, the saved files) is
:mod:`train.fitting`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from happysad.edge.errors import UsageError
from happysad.edge.metrics import vote_metrics

from . import plots
from .evaluate import evaluate_run, format_metrics, format_vote_metrics, probabilities, write_report
from .fitting import fit_model, make_datasets, save_model, start_tensorflow
from .options import TrainOptions as TrainOptions
from .pipeline import check_teacher_split, require_teacher_file, weights_sha256
from .split import RunData, prepare_data


def _vote_figures(model, data: RunData, size, opts: TrainOptions, p_val, p_test, parallel: bool) -> dict:
    """The figures against the FER+ majority (:func:`edge.metrics.vote_metrics`):
    ``ferplus`` on the test part of DATA_DIR (the same faces as a run on
    folder labels), ``ferplus_validation``, and with ``--aux`` folders
    ``ferplus_all_held_out``: the test parts of every folder together."""
    va, te = data.indices(1), data.indices(2)
    out = {
        "ferplus": vote_metrics(p_test, data.shipped, data.votes[te]),
        "ferplus_validation": vote_metrics(p_val, data.shipped, data.votes[va]),
    }
    if data.aux_test_paths is not None and len(data.aux_test_paths):
        p_aux = probabilities(model, data.aux_test_paths, size, opts.color, None, parallel)
        out["ferplus_all_held_out"] = vote_metrics(
            np.concatenate([p_test, p_aux]), data.shipped, np.concatenate([data.votes[te], data.aux_test_votes])
        )
    return out


def _print_summary(out: Path, opts: TrainOptions, metrics: dict, seconds: float, macs: int) -> None:
    print(
        f"test split ({opts.arch}, {metrics['epochs_run']} epochs, {seconds / 60:.1f} min, "
        f"{metrics['parameters']:,} parameters, {macs / 1e6:.1f}M MACs per image):"
    )
    print(format_metrics(metrics, metrics["labels"]))
    for key, what in (("ferplus", "test split"), ("ferplus_all_held_out", "every folder's test part")):
        if key in metrics:
            print(f"against the FER+ majority, {what}: {format_vote_metrics(metrics[key])}")
    # A time budget's epoch count depends on the machine's speed: the seed
    # alone does not repeat such a run.
    repeatable = opts.deterministic and not opts.time_budget
    print(f"weights sha256 {metrics['weights_sha256']}" + (" (deterministic)" if repeatable else ""))
    if opts.time_budget:
        print(
            f"time budget {opts.time_budget:g} min: {metrics['epochs_run']} epochs of {metrics.get('planned_epochs')} "
            f"planned, in {metrics.get('train_precision')}; --epochs {metrics['epochs_run']} without "
            "--time-budget trains a fixed count"
        )
    print(
        f"wrote {out}/: model.keras, metrics.json, split.json, data_report.json, config.json, "
        "history.csv, curves.png, confusion_matrix.png, samples.png, logs/"
    )


def train(opts: TrainOptions) -> dict:
    """Run training end to end and write the run folder.

    Writes, each atomically: ``data_report.json``, ``split.json``,
    ``config.json``, ``model.keras`` (the inference model, without
    augmentation; with auxiliary classes also ``model_full.keras``),
    ``history.csv``, ``curves.png``, ``confusion_matrix.png``,
    ``samples.png``, ``metrics.json``; TensorBoard logs under ``logs/``.

    Returns:
        the metrics dict written to ``metrics.json``.

    Raises:
        HappysadError: bad data folder, or an output that cannot be written.
        UsageError: ``out`` holds a trained run and ``overwrite`` is off.
    """
    if opts.strategy == "multi-worker":
        from .multiworker import train_multi_worker

        return train_multi_worker(opts, _prepare, finish_run)
    out = Path(opts.out)
    size = (opts.img_size, opts.img_size)
    data = _prepare(opts, out, size)
    keras, tf = start_tensorflow(opts, out)
    train_ds, val_ds = make_datasets(opts, data, size, out / "cache")
    model, history, monitor, seconds, info = fit_model(keras, tf, opts, out, data, size, train_ds, val_ds)
    return finish_run(model, opts, out, data, history, monitor, seconds, val_ds, info)


def finish_run(model, opts: TrainOptions, out: Path, data: RunData, history, monitor, seconds, val_ds, extra=None):
    """Save the trained model, evaluate it on the validation and test parts
    and write the rest of the run folder (:func:`train`); ``extra``: more
    entries for ``metrics.json``.

    Returns:
        the metrics dict written to ``metrics.json``.
    """
    from .models import count_macs

    size = (opts.img_size, opts.img_size)
    s, va, te = data.scan, data.indices(1), data.indices(2)
    model = save_model(model, out, data, history, opts.flip_average)
    # The validation pipeline is in order and already cached: no second decode
    # (on votes it holds other images: every folder's validation part).
    parallel = not opts.deterministic
    p_val = probabilities(model, data.paths[va], size, opts.color, None if data.soft else val_ds, parallel)
    p_test = probabilities(model, data.paths[te], size, opts.color, None, parallel)
    # Folder labels as the shipped model's class indices (-1: a folder that
    # is none of its classes, left out of the folder-label figures).
    y = np.array([data.shipped.index(c) if c in data.shipped else -1 for c in s.labels])[s.y]
    kv, kt = y[va] >= 0, y[te] >= 0
    metrics = evaluate_run(model, out, data.shipped, y[va][kv], p_val[kv], y[te][kt], p_test[kt], opts.tune_threshold)
    if data.soft:
        metrics.update(_vote_figures(model, data, size, opts, p_val, p_test, parallel))
    macs = count_macs(model)
    metrics.update(_run_figures(model, opts, data, history, monitor, seconds, macs))
    metrics.update(extra or {})
    write_report(out, metrics, data.shipped, data.paths[te][kt], y[te][kt], p_test[kt], size, opts.color, opts.seed)
    if data.soft:
        plots.reliability(metrics["ferplus"]["reliability"], out / "reliability.png")
    shutil.rmtree(out / "cache", ignore_errors=True)
    _print_summary(out, opts, metrics, seconds, macs)
    return metrics


def _prepare(opts: TrainOptions, out: Path, size) -> RunData:
    """The checks that need no TensorFlow, then the data (:func:`train.split.prepare_data`).

    Raises:
        UsageError: ``out`` holds a trained run and ``overwrite`` is off.
        HappysadError: a teacher's file is missing or was trained on this
            run's validation or test images, or the data is bad.
    """
    if (out / "model.keras").exists() and not opts.overwrite:
        raise UsageError(
            f"{out}: holds a trained run already (model.keras); pass --overwrite to replace it, or choose another --out"
        )
    for path in opts.teachers:
        require_teacher_file(path)
    data = prepare_data(opts, out, size)
    if opts.teachers:
        split = json.loads((out / "split.json").read_text())
        for path in opts.teachers:
            check_teacher_split(path, split)
    return data


def _run_figures(
    model, opts: TrainOptions, data: RunData, history: dict, monitor: str, seconds: float, macs: int
) -> dict:
    """What ``metrics.json`` says of the run beside the figures: the model's
    size and cost (MACs per image), its weights' hash, the epochs, the
    training time (s) and the classes."""
    return {
        "arch": opts.arch,
        "parameters": int(model.count_params()),
        "macs_per_image": macs,
        "weights_sha256": weights_sha256(model),
        "deterministic": opts.deterministic,
        "epochs_run": len(history["loss"]),
        "best_epoch": int(np.argmin(history[monitor])) + 1,
        "train_seconds": round(seconds, 1),
        "labels": data.shipped,
        **({"folder_labels": data.scan.labels} if data.soft else {}),
        **({"trained_with": data.labels} if len(data.labels) > len(data.shipped) else {}),
    }
