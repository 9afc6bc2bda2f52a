"""The pieces a training run is built from: the ``tf.data`` pipeline, class
weights, the callbacks (ETA, the shipped model's validation loss), the
teacher's loading and split check, and the weights' hash."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

import numpy as np

from happysad.edge import load_image, preprocess
from happysad.edge.console import log as _log
from happysad.edge.errors import HappysadError
from happysad.edge.jsonfile import read_json
from happysad.edge.runtime.preprocess import channels_of


def weights_sha256(model) -> str:
    """sha256 (hex) over every weight tensor of ``model``, in layer order.

    Each tensor's shape, dtype and raw bytes are hashed, so two models agree
    exactly when every weight agrees bit for bit. The ``.keras`` zip is not
    compared: it holds a timestamp and compresses differently from run to run.
    """
    import hashlib

    digest = hashlib.sha256()
    for w in model.get_weights():
        a = np.ascontiguousarray(w)
        digest.update(f"{a.dtype.str}{a.shape}".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


def load_teacher(keras, path: str):
    """The teacher model, loaded with safe_mode.

    Raises:
        HappysadError: the file is missing or not a Keras model.
    """
    require_teacher_file(path)
    try:
        return keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as exc:  # Keras raises many types for a bad file
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise HappysadError(f"--teacher {path}: not a loadable Keras model ({first})") from None


def require_teacher_file(path: str) -> None:
    """Raises HappysadError when the teacher's model file does not exist."""
    if not Path(path).is_file():
        raise HappysadError(f"--teacher {path}: no such file; give a run's model.keras (or model_full.keras)")


def check_teacher_split(path: str, split: dict) -> None:
    """Refuse a teacher that was trained on this run's validation or test images.

    A teacher's outputs on images it trained on are near its labels; a
    student taught on them would score its own test split with the
    teacher's memory. The teacher run's ``split.json`` (beside its model
    file) lists what it trained on, by sha256; it is compared with this
    run's ``split`` (validation and test parts, auxiliary ones included).

    Raises:
        HappysadError: the teacher's train part holds images of this run's
            validation or test part (another ``--seed`` or data folder).
    """
    own = Path(path).parent / "split.json"
    if not own.is_file():
        _log(f"--teacher {path}: no split.json beside it, so it cannot be checked against this run's test split")
        return
    theirs = read_json(own, "split")  # bounded: a regular file, size and depth capped

    def digests(record, part):
        aux = record.get("auxiliary") if isinstance(record.get("auxiliary"), dict) else {}
        rows = [r for rows in (record.get(part), aux.get(part)) if isinstance(rows, list) for r in rows]
        return {r["sha256"] for r in rows if isinstance(r, dict) and isinstance(r.get("sha256"), str)}

    trained = digests(theirs, "train")
    held_out = digests(split, "val") | digests(split, "test")
    common = len(trained & held_out)
    if common:
        raise HappysadError(
            f"--teacher {path}: it trained on {common} images of this run's validation or test part; "
            "train the teacher with the same data and --seed as this run"
        )


def balanced_class_weights(y: np.ndarray, n_classes: int, cap: float = 4.0) -> dict:
    """Class weights n / (k * n_c), scikit-learn's "balanced", each at most
    ``cap`` times the smallest (a class of a few hundred images beside
    thousands would otherwise weigh ten times more and dominate the loss).

    Returns:
        {class index: weight}; a class with no image gets the cap.
    """
    counts = np.bincount(np.asarray(y, np.int64), minlength=n_classes)
    w = np.array([len(y) / (n_classes * n) if n else np.inf for n in counts], dtype=np.float64)
    w = np.minimum(w, cap * w[np.isfinite(w)].min())
    return {c: float(v) for c, v in enumerate(w)}


def history_csv(history: dict) -> bytes:
    buf = io.StringIO()
    keys = list(history)
    w = csv.writer(buf)
    w.writerow(["epoch", *keys])
    for i in range(len(history[keys[0]])):
        w.writerow([i + 1, *(f"{history[k][i]:.6f}" for k in keys)])
    return buf.getvalue().encode()


def image_dataset(
    paths, y, size, color, batch_size, shuffle_seed=None, cache=None, distort=None, parallel: bool = True
):
    """A ``tf.data`` pipeline of (float32 NHWC pixels 0..255, float32 label) batches.

    Files are decoded and preprocessed by :func:`edge.runtime.preprocess` (inside
    ``tf.numpy_function``) on the first pass and cached as uint8, to
    ``cache`` (a file prefix) or to memory when ``cache`` is "".

    Args:
        paths: absolute file paths. y: int class indices, or None for unlabelled.
        shuffle_seed: shuffle every epoch with this seed; None keeps order.
        cache: None for no caching.
        distort: a map over (index, uint8 image, label) returning (float32
            image, label), applied after the shuffle to each training image
            (:func:`train.models.camera_distortions`); None for none.
        parallel: map on several threads. Off for ``--deterministic``, where
            TensorFlow's op determinism would turn the parallel maps into
            sequential ones anyway, and logs an ERROR-level line
            ("NodeDef mentions attribute use_unbounded_threadpool") each time
            it rewrites one; asking for sequential maps keeps the log clean.
    """
    import tensorflow as tf

    calls = tf.data.AUTOTUNE if parallel else None
    ds = decoded_dataset(paths, y, size, color, cache, parallel)
    if shuffle_seed is not None:
        ds = ds.shuffle(min(len(paths), 20000), seed=shuffle_seed, reshuffle_each_iteration=True)
    if distort is not None:
        # A running index (across epochs, since the counter is not reset)
        # keys each image's distortions: another draw every epoch, the same
        # draws in every run.
        counter = tf.data.Dataset.counter()
        ds = tf.data.Dataset.zip(counter, ds).map(
            lambda i, xy: distort(i, *xy), num_parallel_calls=calls, deterministic=True
        )
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    to_float = (lambda x, t: (tf.cast(x, tf.float32), t)) if y is not None else (lambda x: tf.cast(x, tf.float32))
    return ds.map(to_float).batch(batch_size).prefetch(tf.data.AUTOTUNE)


def decoded_dataset(paths, y, size, color, cache=None, parallel: bool = True):
    """A ``tf.data`` pipeline of uint8 (H, W, C) images (with float32 labels
    when ``y`` is given), in file order, decoded and preprocessed by
    :func:`edge.runtime.preprocess`; cached as :func:`image_dataset` says."""
    import tensorflow as tf

    channels = channels_of(color)

    def load(path):
        return preprocess(load_image(path.decode()), size, color)

    def decode(path):
        pixels = tf.numpy_function(load, [path], tf.uint8)
        return tf.ensure_shape(pixels, (*size, channels))

    ds = tf.data.Dataset.from_tensor_slices([str(p) for p in paths])
    calls = tf.data.AUTOTUNE if parallel else None
    ds = ds.map(decode, num_parallel_calls=calls, deterministic=True if calls else None)
    if y is not None:
        ds = tf.data.Dataset.zip(ds, tf.data.Dataset.from_tensor_slices(np.asarray(y, np.float32)))
    return ds if cache is None else ds.cache(cache)


def shipped_loss_callback(keras, model, val_ds, y_val: np.ndarray, n_own: int):
    """A Keras callback adding ``val_shipped_loss`` and ``val_shipped_accuracy``
    to each epoch's logs: the cross-entropy and accuracy, on the validation
    images, of ``model`` (the network being trained) restricted to its first ``n_own`` classes (the
    softmax renormalised over them, as :func:`train.models.restrict_head`
    ships it)."""

    class ShippedLoss(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            p = model.predict(val_ds, verbose=0)[:, :n_own].astype(np.float64)
            p = np.clip(p / np.maximum(p.sum(axis=1, keepdims=True), 1e-12), 1e-7, 1.0)
            if logs is not None:
                logs["val_shipped_loss"] = float(-np.mean(np.log(p[np.arange(len(y_val)), y_val])))
                logs["val_shipped_accuracy"] = float(np.mean(np.argmax(p, axis=1) == y_val))

    return ShippedLoss()


def eta_callback(keras, epochs: int, plan: dict | None = None):
    """A Keras callback logging, after each epoch, the time so far and an
    estimate of the time left (the mean epoch so far times the epochs left;
    early stopping may end sooner). The epochs are ``plan["planned_epochs"]``
    where a time budget has set it (:func:`train.budget.budget_callback`),
    else ``epochs``."""

    class Eta(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            done = epoch + 1
            total = (plan or {}).get("planned_epochs", epochs)
            elapsed = time.perf_counter() - self.start
            left = elapsed / done * (total - done)
            _log(
                f"epoch {done}/{total}: {_clock(elapsed)} elapsed, about {_clock(left)} left"
                + (" (early stopping may end sooner)" if done < total else "")
            )

    return Eta()


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"
