"""Fitting one run's model: TensorFlow started and seeded, the ``tf.data``
pipelines, the model built and compiled (with its augmentation, and its
teachers when distilling), the callbacks, the fit, and the saved model."""

from __future__ import annotations

import os
import platform
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from happysad.edge import __version__
from happysad.edge.console import log as _log
from happysad.edge.errors import HappysadError
from happysad.edge.fileio import atomic_path, write_bytes, write_json
from happysad.edge.runtime.preprocess import channels_of

from . import plots
from .options import TrainOptions
from .pipeline import (
    balanced_class_weights,
    eta_callback,
    history_csv,
    image_dataset,
    load_teacher,
    shipped_loss_callback,
)
from .split import RunData


def start_tensorflow(opts: TrainOptions, out: Path):
    """Import TensorFlow and Keras (only after the cheap checks have passed),
    write ``config.json``, seed every generator.

    Returns:
        (the keras module, the tensorflow module).

    Raises:
        HappysadError: ``config.json`` cannot be written.
    """
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


def make_optimizer(keras, opts: TrainOptions, steps_per_epoch: int, lr_schedule=None):
    """Adam on a warm-up (the first 5% of the steps) + cosine-decay schedule
    peaking at ``opts.lr``, over ``opts.epochs * steps_per_epoch`` steps;
    or on ``lr_schedule`` when given (:func:`train.budget.schedule`)."""
    if lr_schedule is not None:
        return keras.optimizers.Adam(lr_schedule)
    steps = opts.epochs * steps_per_epoch
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, max(1, steps), warmup_target=opts.lr, warmup_steps=max(1, steps // 20)
    )
    return keras.optimizers.Adam(schedule)


def _compile(keras, opts: TrainOptions, model, n_classes: int, optimizer, soft: bool = False):
    """The model wrapped for training (augmentation, and the teacher when
    distilling), compiled with ``optimizer`` (:func:`make_optimizer`)."""
    from .distill import distillation_trainer
    from .models import augmentation

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


def _callbacks(keras, opts: TrainOptions, out: Path, model, val_ds, data: RunData, plan=None) -> tuple[list, str]:
    """(callbacks, the monitored quantity): early stopping, TensorBoard, the
    ETA (over ``plan["planned_epochs"]`` once a time budget has set it)."""
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
        eta_callback(keras, opts.epochs, plan),
    ]
    return callbacks, monitor


def make_datasets(opts: TrainOptions, data: RunData, size, cache_dir: Path):
    """The ``tf.data`` pipelines of a run, cached under ``cache_dir`` (on disk
    or, with ``opts.cache == "memory"``, in RAM; any stale cache removed first).

    Args:
        size: (height, width) of the model input, pixels.

    Returns:
        (training pipeline: shuffled, augmented batches of ``opts.batch_size``;
        validation pipeline in order, batches of 256, or None without
        validation images).
    """
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


def fit_model(keras, tf, opts: TrainOptions, out: Path, data: RunData, size, train_ds, val_ds):
    """Build, compile and fit the model (:func:`train.models.build_model`),
    with early stopping on the validation loss, in the run's precision and
    within its time budget (:mod:`train.budget`).

    Returns:
        (the trained float32 model, without augmentation; history: {metric:
        [float per epoch]}; the monitored history key; the fit's wall time,
        s; a dict for ``metrics.json``: ``train_precision``, and with a budget the
        planned epochs and each epoch's seconds).

    Raises:
        HappysadError: a teacher cannot be loaded or does not fit this run.
    """
    from . import budget
    from .models import build_model

    mirrored = opts.strategy == "mirrored"
    strategy = tf.distribute.MirroredStrategy() if mirrored else tf.distribute.get_strategy()
    plain = not mirrored and not opts.teachers
    precision = budget.resolve_precision(opts.precision, plain, n_images=len(data.train_y))
    info = {"train_precision": precision}
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if precision == "bfloat16" else "float32")
    steps_per_epoch = int(np.ceil(len(data.train_y) / opts.batch_size))

    def build():
        return build_model(opts.arch, size, channels_of(opts.color), len(data.labels))

    try:
        with strategy.scope():
            model = build()
            lr_schedule = budget.schedule(keras, opts.lr, steps_per_epoch, opts.epochs) if opts.time_budget else None
            optimizer = make_optimizer(keras, opts, steps_per_epoch, lr_schedule)
            trainer = _compile(keras, opts, model, len(data.labels), optimizer, data.soft)
        callbacks, monitor = _callbacks(keras, opts, out, model, val_ds, data, info)
        if lr_schedule is not None:
            info["time_budget_min"] = opts.time_budget
            # First, so that the ETA's line already knows the new plan.
            callbacks.insert(0, budget.budget_callback(keras, lr_schedule, opts.time_budget * 60, opts.epochs, info))
        history, seconds = _fit(keras, opts, strategy, model, trainer, data, (train_ds, val_ds), callbacks, precision)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    if precision == "bfloat16":
        model = budget.float32_copy(keras, model, build)
    return model, history, monitor, seconds, info


def _fit(keras, opts, strategy, model, trainer, data, datasets, callbacks, precision):
    """The fit itself on (training, validation) ``datasets``, logged first.
    Returns (history, wall time in s)."""
    from .models import count_macs

    train_ds, val_ds = datasets
    mirrored = opts.strategy == "mirrored"
    _log(
        f"model {opts.arch}: {model.count_params():,} parameters, {count_macs(model) / 1e6:.1f}M "
        f"multiply-accumulates per image; {len(data.labels)} classes ({', '.join(data.labels)}); training up to "
        f"{opts.epochs} epochs"
        + (f" or {opts.time_budget:g} minutes" if opts.time_budget else "")
        + f" on {len(data.train_y)} images in {precision}"
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
    return history, time.perf_counter() - start


def save_model(model, out: Path, data: RunData, history: dict, flip_average: bool = False):
    """Write ``model.keras`` (and with auxiliary classes ``model_full.keras``),
    ``history.csv`` and ``curves.png``, each atomically.

    Returns:
        the shipped model: ``model``, or with auxiliary classes its head
        restricted to the shipped classes; with ``flip_average``, averaged
        with its mirror image (:func:`train.models.with_mirror`).
    """
    from .models import restrict_head, with_mirror

    if len(data.labels) > len(data.shipped):
        # Kept whole as a teacher for a later run with the same --aux; the
        # shipped model answers for the model's own classes only.
        with atomic_path(out / "model_full.keras") as tmp:
            model.save(tmp)
        model = restrict_head(model, list(range(len(data.shipped))))
    if flip_average:
        model = with_mirror(model)
    with atomic_path(out / "model.keras") as tmp:
        model.save(tmp)
    write_bytes(out / "history.csv", history_csv(history))
    plots.curves(history, out / "curves.png")
    return model
