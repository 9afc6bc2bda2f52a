"""One training run: scan and report the data, split, fit, evaluate, write the run folder."""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from happysad.edge import __version__
from happysad.edge.cli_util import log as _log
from happysad.edge.errors import HappysadError, UsageError
from happysad.edge.fileio import atomic_path, write_bytes, write_json
from happysad.edge.metrics import vote_metrics
from happysad.edge.preprocess import channels_of

from . import plots
from .evaluate import evaluate_run, format_metrics, format_vote_metrics, probabilities, write_report
from .pipeline import (
    balanced_class_weights,
    check_teacher_split,
    eta_callback,
    history_csv,
    image_dataset,
    load_teacher,
    require_teacher_file,
    shipped_loss_callback,
    weights_sha256,
)
from .split import RunData, prepare_data


@dataclass(kw_only=True)
class TrainOptions:
    """Settings of one training run (all written to ``config.json``).

    Attributes:
        data_dir: folder with one sub-folder of photos per class, or a list
            of such folders (a class is its sub-folders in all of them).
        out: the run folder to write.
        arch: "compact" (default) or "seed".
        epochs: most epochs; EarlyStopping may end sooner.
        seed: seeds the split, the weights, the shuffling and the augmentation.
        img_size: model input height = width, pixels.
        color: "gray" or "rgb".
        ratios: train, validation, test fractions.
        batch_size: images per step (global, across replicas).
        lr: peak learning rate of the warm-up + cosine schedule.
        patience: epochs without a better validation loss before stopping.
        tune_threshold: choose the decision threshold on the validation split
            (maximum balanced accuracy) instead of 0.5.
        strategy: "default" (one device) or "mirrored"
            (``tf.distribute.MirroredStrategy`` over the local GPUs).
        cache: "disk" caches decoded images in the run folder (memory stays
            flat however large the folder), "memory" keeps them in RAM.
        deterministic: make two runs with the same seed on the same machine
            give bit-identical weights (``tf.config.experimental.
            enable_op_determinism``); see :func:`weights_sha256`.
        augment: ``"basic"`` or ``"camera"`` (:data:`train.models.AUGMENTS`).
        overwrite: replace a run already in ``out`` (else that is a usage error).
        classes: the classes to train on, in output order; None: every
            class folder, sorted.
        aux_dirs: labelled folders of auxiliary classes, trained on beside
            the model's own (one softmax over all) and dropped from the
            shipped model (:func:`train.models.restrict_head`); their images
            only ever join the train part, and any that is a copy or
            near-copy of an image of ``data_dir`` is left out. They are
            split in the same ratios, and only their train part is trained
            on.
        teachers: trained ``.keras`` models to distil from, their outputs
            averaged (:func:`train.distill.distillation_trainer`): each
            answers for this run's classes (with auxiliary classes, a
            ``--aux`` run's ``model_full.keras``) or for its own classes
            only (a two-class ``model.keras`` teaching a ``--aux`` run);
            empty: no distillation.
        distill_alpha: weight of the true labels against the teachers', 0..1.
        teacher_flip: average each teacher over the image and its mirror.
        votes: a crowd-votes table (:func:`edge.votes.read_votes`): train on
            each face's vote shares over ``classes`` (default happy, sad,
            neutral) plus one "other" output that is trained, not shipped
            (:func:`train.split.prepare_vote_data`); None: folder labels.
        votes_root: the folder the table's paths are relative to (default:
            the folder above the table's).
    """

    data_dir: str | list
    out: str
    arch: str = "compact"
    epochs: int = 30
    seed: int = 0
    img_size: int = 48
    color: str = "gray"
    ratios: tuple = (0.7, 0.2, 0.1)
    batch_size: int = 64
    lr: float = 2e-3
    patience: int = 8
    tune_threshold: bool = False
    strategy: str = "default"
    cache: str = "disk"
    deterministic: bool = False
    augment: str = "camera"
    overwrite: bool = False
    classes: tuple | None = None
    aux_dirs: tuple = ()
    teachers: tuple = ()
    distill_alpha: float = 0.5
    teacher_flip: bool = False
    votes: str | None = None
    votes_root: str | None = None
    verbose: int = field(default=1, compare=False)


def _start_tensorflow(opts: TrainOptions, out: Path):
    """Import TensorFlow and Keras (only after the cheap checks have passed),
    write ``config.json``, seed every generator; returns (keras, tf)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    versions = {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "happysad": __version__,
    }
    write_json(out / "config.json", {**asdict(opts), "ratios": list(opts.ratios), "versions": versions})
    # Python's, numpy's and TensorFlow's generators; file order is fixed
    # already (the scan sorts, the split is seeded, tf.data maps in order).
    keras.utils.set_random_seed(opts.seed)
    if opts.deterministic:
        # Picks deterministic kernels and makes the ones with none raise,
        # rather than differ silently between runs.
        tf.config.experimental.enable_op_determinism()
    return keras, tf


def _compile(keras, opts: TrainOptions, model, n_classes: int, n_images: int, soft: bool = False):
    """The model wrapped for training (augmentation, and the teacher when
    distilling), compiled with Adam on a warm-up + cosine schedule."""
    from .distill import distillation_trainer
    from .models import augmentation

    steps = opts.epochs * int(np.ceil(n_images / opts.batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, max(1, steps), warmup_target=opts.lr, warmup_steps=max(1, steps // 20)
    )
    optimizer = keras.optimizers.Adam(schedule)
    if opts.teachers:
        teachers = [load_teacher(keras, path) for path in opts.teachers]
        try:
            trainer, loss, metrics = distillation_trainer(
                augmentation(opts.seed, opts.augment), model, teachers, opts.distill_alpha, opts.teacher_flip
            )
        except ValueError as exc:
            raise HappysadError(
                f"--teacher {' '.join(map(str, opts.teachers))}: {exc}; use teachers trained on this run's "
                "classes (with --aux: a --aux run's model_full.keras) or on its own classes (model.keras)"
            ) from None
        trainer.compile(optimizer=optimizer, loss=loss, metrics=metrics)
        return trainer
    trainer = keras.Sequential([keras.Input(model.input_shape[1:]), augmentation(opts.seed, opts.augment), model])
    # Soft targets (vote shares): cross-entropy against the distribution, as
    # FER+'s paper trains ("probabilistic label drawing" aside).
    loss = (
        "categorical_crossentropy"
        if soft
        else "binary_crossentropy"
        if n_classes == 2
        else "sparse_categorical_crossentropy"
    )
    trainer.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])
    return trainer


def _callbacks(keras, opts: TrainOptions, out: Path, model, val_ds, data: RunData) -> tuple[list, str]:
    """(callbacks, the monitored quantity): early stopping, TensorBoard, the ETA."""
    va = data.indices(1)
    monitor = "val_loss" if len(data.val_paths) else "loss"
    callbacks = []
    if not data.soft and len(data.labels) > len(data.scan.labels) and len(va):
        # With auxiliary classes the validation loss is a loss over all the
        # classes, on faces of the model's own: it rises as the model learns
        # that a sad face also looks fearful, while the shipped choice
        # between its own classes improves. Stop on the shipped model's loss.
        callbacks.append(shipped_loss_callback(keras, model, val_ds, data.scan.y[va], len(data.scan.labels)))
        monitor = "val_shipped_loss"
    callbacks += [
        keras.callbacks.EarlyStopping(monitor=monitor, mode="min", patience=opts.patience, restore_best_weights=True),
        keras.callbacks.TensorBoard(log_dir=str(out / "logs")),
        eta_callback(keras, opts.epochs),
    ]
    return callbacks, monitor


def _datasets(opts: TrainOptions, data: RunData, size, cache_dir: Path):
    """(training pipeline, validation pipeline or None), cached under ``cache_dir``."""
    from .models import camera_distortions

    shutil.rmtree(cache_dir, ignore_errors=True)  # a stale cache from a killed run
    if opts.cache == "disk":
        cache_dir.mkdir(parents=True, exist_ok=True)
    cache = {name: str(cache_dir / name) if opts.cache == "disk" else "" for name in ("train", "val")}
    parallel = not opts.deterministic
    distort = camera_distortions(opts.seed) if opts.augment == "camera" else None
    train_ds = image_dataset(
        data.train_paths,
        data.train_y,
        size,
        opts.color,
        opts.batch_size,
        shuffle_seed=opts.seed,
        cache=cache["train"],
        distort=distort,
        parallel=parallel,
    )
    if not len(data.val_paths):
        return train_ds, None
    return train_ds, image_dataset(
        data.val_paths, data.val_y, size, opts.color, 256, cache=cache["val"], parallel=parallel
    )


def _fit(keras, tf, opts: TrainOptions, out: Path, data: RunData, size, train_ds, val_ds):
    """Build, compile and fit the model; returns (model, history dict, monitored key, seconds)."""
    from .models import build_model, count_macs

    mirrored = opts.strategy == "mirrored"
    strategy = tf.distribute.MirroredStrategy() if mirrored else tf.distribute.get_strategy()
    with strategy.scope():
        model = build_model(opts.arch, size, channels_of(opts.color), len(data.labels))
        trainer = _compile(keras, opts, model, len(data.labels), len(data.train_y), data.soft)
    callbacks, monitor = _callbacks(keras, opts, out, model, val_ds, data)
    _log(
        f"model {opts.arch}: {model.count_params():,} parameters, {count_macs(model) / 1e6:.1f}M "
        f"multiply-accumulates per image; {len(data.labels)} classes ({', '.join(data.labels)}); training up to "
        f"{opts.epochs} epochs on {len(data.train_y)} images"
        + (f" on {strategy.num_replicas_in_sync} replicas" if mirrored else "")
    )
    start = time.perf_counter()
    # With vote shares, each face weighs as its most voted class (as Keras
    # itself maps class_weight onto one-hot targets).
    hard = np.argmax(data.train_y, axis=1) if data.soft else data.train_y
    weights = balanced_class_weights(hard, len(data.labels))
    # train_ds shuffles itself, seeded.
    hist = trainer.fit(
        train_ds,
        validation_data=val_ds,
        epochs=opts.epochs,
        class_weight=weights,
        callbacks=callbacks,
        verbose=opts.verbose,
        shuffle=False,
    )
    history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    return model, history, monitor, time.perf_counter() - start


def _save(model, out: Path, data: RunData, history: dict):
    """Write ``model.keras`` (and with auxiliary classes ``model_full.keras``),
    ``history.csv`` and ``curves.png``; returns the shipped model."""
    from .models import restrict_head

    if len(data.labels) > len(data.shipped):
        # Kept whole as a teacher for a later run with the same --aux; the
        # shipped model answers for the model's own classes only.
        with atomic_path(out / "model_full.keras") as tmp:
            model.save(tmp)
        model = restrict_head(model, list(range(len(data.shipped))))
    with atomic_path(out / "model.keras") as tmp:
        model.save(tmp)
    write_bytes(out / "history.csv", history_csv(history))
    plots.curves(history, out / "curves.png")
    return model


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
    print(f"weights sha256 {metrics['weights_sha256']}" + (" (deterministic)" if opts.deterministic else ""))
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
    out = Path(opts.out)
    if (out / "model.keras").exists() and not opts.overwrite:
        raise UsageError(
            f"{out}: holds a trained run already (model.keras); pass --overwrite to replace it, or choose another --out"
        )
    size = (opts.img_size, opts.img_size)
    for path in opts.teachers:
        require_teacher_file(path)
    data = prepare_data(opts, out, size)
    if opts.teachers:
        split = json.loads((out / "split.json").read_text())
        for path in opts.teachers:
            check_teacher_split(path, split)
    keras, tf = _start_tensorflow(opts, out)
    from .models import count_macs

    s, va, te = data.scan, data.indices(1), data.indices(2)
    train_ds, val_ds = _datasets(opts, data, size, out / "cache")
    model, history, monitor, seconds = _fit(keras, tf, opts, out, data, size, train_ds, val_ds)
    model = _save(model, out, data, history)
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
    metrics.update(
        {
            "arch": opts.arch,
            "parameters": int(model.count_params()),
            "macs_per_image": macs,
            "weights_sha256": weights_sha256(model),
            "deterministic": opts.deterministic,
            "epochs_run": len(history["loss"]),
            "best_epoch": int(np.argmin(history[monitor])) + 1,
            "train_seconds": round(seconds, 1),
            "labels": data.shipped,
            **({"folder_labels": s.labels} if data.soft else {}),
            **({"trained_with": data.labels} if len(data.labels) > len(data.shipped) else {}),
        }
    )
    write_report(out, metrics, data.shipped, data.paths[te][kt], y[te][kt], p_test[kt], size, opts.color, opts.seed)
    if data.soft:
        plots.reliability(metrics["ferplus"]["reliability"], out / "reliability.png")
    shutil.rmtree(out / "cache", ignore_errors=True)
    _print_summary(out, opts, metrics, seconds, macs)
    return metrics
