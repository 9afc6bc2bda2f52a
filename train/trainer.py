"""One training run: scan and report the data, split, fit, evaluate, write the run folder."""

from __future__ import annotations

import csv
import io
import os
import platform
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edge import __version__, load_image, preprocess
from edge.cli_util import log as _log
from edge.errors import HappysadError, UsageError
from edge.fileio import atomic_path, write_bytes, write_json
from edge.metrics import best_threshold, class_probabilities, classification_metrics, decide, roc_auc
from edge.preprocess import channels_of

from . import plots
from .data import Scan, auxiliary, data_report, make_split, report_summary, scan

STRATEGIES = ("default", "mirrored")


@dataclass
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
        teacher: a trained ``.keras`` model to distil from
            (:func:`train.models.distillation_trainer`): its outputs must
            match this run's training outputs (one sigmoid unit for two
            classes; with auxiliary classes, the teacher run's
            ``model_full.keras``); None: no distillation.
        distill_alpha: weight of the true labels against the teacher's, 0..1.
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
    teacher: str | None = None
    distill_alpha: float = 0.5
    verbose: int = field(default=1, compare=False)


def split_record(s: Scan, part: np.ndarray, opts: TrainOptions) -> dict:
    """The contents of ``split.json``: every kept file's part, label and sha256."""
    entries = {name: [] for name in ("train", "val", "test")}
    for i, p in enumerate(part):
        entries[("train", "val", "test")[p]].append(
            {"path": s.paths[i], "label": s.labels[s.y[i]], "sha256": s.sha256[i]}
        )
    data_dir = Path(s.data_dir).resolve()
    return {
        "data_dir": os.path.relpath(data_dir, Path(opts.out).resolve()),
        "data_dir_absolute": str(data_dir),
        "labels": s.labels,
        "seed": opts.seed,
        "ratios": list(opts.ratios),
        "image": {"size": [opts.img_size, opts.img_size], "color": opts.color},
        "grouped_by": "exact (sha256) and near (pHash) duplicates",
        **entries,
        "skipped": s.skipped,
        "excluded": s.conflicts,
    }


def check_data(data_dir, report_path: Path, size=(48, 48), color="gray", classes=None) -> tuple[Scan, dict]:
    """Scan a folder (or several: :func:`train.data.scan`), write its data
    report (JSON) and print the summary.

    Returns:
        (scan, report dict).
    """
    s = scan(data_dir, size, color, progress=True, classes=classes)
    report = data_report(s)
    write_json(report_path, report)
    print(report_summary(report))
    print(f"data report: {report_path}")
    return s, report


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


def _load_teacher(keras, path: str):
    """The teacher model, loaded with safe_mode.

    Raises:
        HappysadError: the file is missing or not a Keras model.
    """
    if not Path(path).is_file():
        raise HappysadError(f"--teacher {path}: no such file; give a run's model.keras (or model_full.keras)")
    try:
        return keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as exc:  # Keras raises many types for a bad file
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise HappysadError(f"--teacher {path}: not a loadable Keras model ({first})") from None


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


def macro_roc_auc(y: np.ndarray, probs: np.ndarray) -> float:
    """ROC AUC of p(second class) for two classes; for more, the mean of each
    class's one-vs-rest AUC (scikit-learn's ``multi_class="ovr"``,
    ``average="macro"``), over the classes present."""
    if probs.shape[1] == 2:
        return roc_auc(y, probs[:, 1])
    aucs = [roc_auc(y == c, probs[:, c]) for c in range(probs.shape[1])]
    aucs = [a for a in aucs if np.isfinite(a)]
    return float(np.mean(aucs)) if aucs else float("nan")


def _history_csv(history: dict) -> bytes:
    buf = io.StringIO()
    keys = list(history)
    w = csv.writer(buf)
    w.writerow(["epoch", *keys])
    for i in range(len(history[keys[0]])):
        w.writerow([i + 1, *(f"{history[k][i]:.6f}" for k in keys)])
    return buf.getvalue().encode()


def format_metrics(m: dict, labels) -> str:
    """Metrics as a short printed block."""
    return (
        f"accuracy {m['accuracy']:.4f}  balanced accuracy {m['balanced_accuracy']:.4f}  "
        f"precision {m['precision']:.4f}  recall {m['recall']:.4f}  F1 {m['f1']:.4f}  "
        f"ROC AUC {m['roc_auc']:.4f}  (n={m['n']}, threshold {m['threshold']:.3f})\n"
        f"confusion matrix (rows true, columns predicted {list(labels)}): {m['confusion_matrix']}"
    )


def image_dataset(
    paths, y, size, color, batch_size, shuffle_seed=None, cache=None, distort=None, parallel: bool = True
):
    """A ``tf.data`` pipeline of (float32 NHWC pixels 0..255, float32 label) batches.

    Files are decoded and preprocessed by :func:`edge.preprocess` (inside
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

    channels = channels_of(color)

    def load(path):
        return preprocess(load_image(path.decode()), size, color)

    def decode(path):
        pixels = tf.numpy_function(load, [path], tf.uint8)
        return tf.ensure_shape(pixels, (*size, channels))

    ds = tf.data.Dataset.from_tensor_slices([str(p) for p in paths])
    calls = tf.data.AUTOTUNE if parallel else None
    ds = ds.map(decode, num_parallel_calls=calls, deterministic=True)
    if y is not None:
        ds = tf.data.Dataset.zip(ds, tf.data.Dataset.from_tensor_slices(np.asarray(y, np.float32)))
    if cache is not None:
        ds = ds.cache(cache)
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


def _shipped_loss_callback(keras, model, val_ds, y_val: np.ndarray, n_own: int):
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


def _eta_callback(keras, epochs: int):
    """A Keras callback logging, after each epoch, the time so far and an
    estimate of the time left (the mean epoch so far times the epochs left;
    early stopping may end sooner)."""

    class Eta(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            done = epoch + 1
            elapsed = time.perf_counter() - self.start
            left = elapsed / done * (epochs - done)
            _log(
                f"epoch {done}/{epochs}: {_clock(elapsed)} elapsed, about {_clock(left)} left"
                + (" (early stopping may end sooner)" if done < epochs else "")
            )

    return Eta()


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"


def train(opts: TrainOptions) -> dict:
    """Run training end to end and write the run folder.

    Writes, each atomically: ``data_report.json``, ``split.json``,
    ``config.json``, ``model.keras`` (the inference model, without
    augmentation), ``history.csv``, ``curves.png``, ``confusion_matrix.png``,
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
    s, report = check_data(opts.data_dir, out / "data_report.json", size, opts.color, opts.classes)
    part = make_split(s.y, s.groups, opts.ratios, opts.seed)
    split = split_record(s, part, opts)
    aux = None
    if opts.aux_dirs:
        aux, aux_dropped = auxiliary(s, opts.aux_dirs, size, opts.color, progress=True)
        # Split like the model's own classes: only the train part is trained
        # on; the test part measures, unseen, how the shipped model treats
        # faces of the auxiliary classes (benchmarks/neither.py).
        aux_part = make_split(aux.y, aux.groups, opts.ratios, opts.seed)
        split["auxiliary"] = {
            "data_dir": os.path.relpath(Path(aux.data_dir).resolve(), Path(opts.out).resolve()),
            "data_dir_absolute": str(Path(aux.data_dir).resolve()),
            "labels": aux.labels,
            **{
                name: [
                    {"path": aux.paths[i], "label": aux.labels[aux.y[i]], "sha256": aux.sha256[i]}
                    for i in np.flatnonzero(aux_part == k)
                ]
                for k, name in enumerate(("train", "val", "test"))
            },
            "left_out_as_copies": aux_dropped,
        }
        _log(
            f"auxiliary classes {', '.join(aux.labels)}: {len(aux.paths)} images, "
            f"{int(np.sum(aux_part == 0))} in the train part (trained on); {len(aux_dropped)} left out as copies "
            f"or near-copies of {', '.join(s.labels)} images"
        )
    write_json(out / "split.json", split)
    _log(
        "split: "
        + ", ".join(f"{name} {len(split[name])}" for name in ("train", "val", "test"))
        + f" (seed {opts.seed}) -> {out / 'split.json'}"
    )

    # TensorFlow is imported only now, after the cheap checks have passed.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    from .models import augmentation, build_model, camera_distortions, count_macs, distillation_trainer, restrict_head

    write_json(
        out / "config.json",
        {
            **asdict(opts),
            "ratios": list(opts.ratios),
            "versions": {
                "python": platform.python_version(),
                "tensorflow": tf.__version__,
                "keras": keras.__version__,
                "happysad": __version__,
            },
        },
    )
    # Python's, numpy's and TensorFlow's generators; file order is fixed
    # already (the scan sorts, the split is seeded, tf.data maps in order).
    keras.utils.set_random_seed(opts.seed)
    if opts.deterministic:
        # Picks deterministic kernels and makes the ones with none raise,
        # rather than differ silently between runs.
        tf.config.experimental.enable_op_determinism()
    root = Path(s.data_dir)
    paths = np.array([root / p for p in s.paths])
    tr, va, te = (np.flatnonzero(part == p) for p in range(3))
    # Training classes: the model's own, then the auxiliary ones not among them.
    all_labels = list(s.labels) + ([c for c in aux.labels if c not in s.labels] if aux else [])
    train_paths, train_y = paths[tr], s.y[tr]
    if aux is not None and np.any(aux_part == 0):
        aux_tr = np.flatnonzero(aux_part == 0)
        aux_y = np.array([all_labels.index(aux.labels[c]) for c in aux.y[aux_tr]], np.int64)
        train_paths = np.concatenate([train_paths, [Path(aux.data_dir) / aux.paths[i] for i in aux_tr]])
        train_y = np.concatenate([train_y, aux_y])
    n_classes = len(all_labels)
    channels = channels_of(opts.color)
    cache_dir = out / "cache"
    shutil.rmtree(cache_dir, ignore_errors=True)  # a stale cache from a killed run
    if opts.cache == "disk":
        cache_dir.mkdir(parents=True, exist_ok=True)

    def cache_for(name):
        return str(cache_dir / name) if opts.cache == "disk" else ""

    parallel = not opts.deterministic
    train_ds = image_dataset(
        train_paths,
        train_y,
        size,
        opts.color,
        opts.batch_size,
        parallel=parallel,
        shuffle_seed=opts.seed,
        cache=cache_for("train"),
        distort=camera_distortions(opts.seed) if opts.augment == "camera" else None,
    )
    val_ds = (
        image_dataset(paths[va], s.y[va], size, opts.color, 256, cache=cache_for("val"), parallel=parallel)
        if len(va)
        else None
    )

    strategy = tf.distribute.MirroredStrategy() if opts.strategy == "mirrored" else tf.distribute.get_strategy()
    with strategy.scope():
        model = build_model(opts.arch, size, channels, n_classes)
        steps = opts.epochs * int(np.ceil(len(train_y) / opts.batch_size))
        schedule = keras.optimizers.schedules.CosineDecay(
            0.0, max(1, steps), warmup_target=opts.lr, warmup_steps=max(1, steps // 20)
        )
        if opts.teacher:
            teacher = _load_teacher(keras, opts.teacher)
            try:
                trainer, loss, metrics = distillation_trainer(
                    augmentation(opts.seed, opts.augment), model, teacher, opts.distill_alpha
                )
            except ValueError as exc:
                raise HappysadError(
                    f"--teacher {opts.teacher}: {exc}; use a teacher trained on the same classes "
                    "(with --aux: its model_full.keras)"
                ) from None
            trainer.compile(optimizer=keras.optimizers.Adam(schedule), loss=loss, metrics=metrics)
        else:
            trainer = keras.Sequential([keras.Input((*size, channels)), augmentation(opts.seed, opts.augment), model])
            trainer.compile(
                optimizer=keras.optimizers.Adam(schedule),
                loss="binary_crossentropy" if n_classes == 2 else "sparse_categorical_crossentropy",
                metrics=["accuracy"],
            )
    class_weight = balanced_class_weights(train_y, n_classes)
    monitor = "val_loss" if len(va) else "loss"
    callbacks = []
    if n_classes > len(s.labels) and len(va):
        # With auxiliary classes the validation loss is a loss over all the
        # classes, on faces of the model's own: it rises as the model learns
        # that a sad face also looks fearful, while the shipped choice
        # between its own classes improves. Stop on the shipped model's loss.
        callbacks.append(_shipped_loss_callback(keras, model, val_ds, s.y[va], len(s.labels)))
        monitor = "val_shipped_loss"
    callbacks += [
        keras.callbacks.EarlyStopping(monitor=monitor, mode="min", patience=opts.patience, restore_best_weights=True),
        keras.callbacks.TensorBoard(log_dir=str(out / "logs")),
        _eta_callback(keras, opts.epochs),
    ]
    macs = count_macs(model)
    _log(
        f"model {opts.arch}: {model.count_params():,} parameters, {macs / 1e6:.1f}M "
        f"multiply-accumulates per image; {n_classes} classes ({', '.join(all_labels)}); training up to "
        f"{opts.epochs} epochs on {len(train_y)} images"
        + (f" on {strategy.num_replicas_in_sync} replicas" if opts.strategy == "mirrored" else "")
    )
    start = time.perf_counter()
    hist = trainer.fit(
        train_ds,
        validation_data=val_ds,
        epochs=opts.epochs,
        class_weight=class_weight,
        callbacks=callbacks,
        verbose=opts.verbose,
        shuffle=False,
    )  # train_ds shuffles itself, seeded
    train_seconds = time.perf_counter() - start
    history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    if n_classes > len(s.labels):
        # Kept whole as a teacher for a later run with the same --aux; the
        # shipped model answers for the model's own classes only.
        with atomic_path(out / "model_full.keras") as tmp:
            model.save(tmp)
        model = restrict_head(model, list(range(len(s.labels))))
        macs = count_macs(model)

    with atomic_path(out / "model.keras") as tmp:
        model.save(tmp)
    write_bytes(out / "history.csv", _history_csv(history))
    plots.curves(history, out / "curves.png")

    output = "sigmoid" if model.output_shape[-1] == 1 else "softmax"

    def probabilities(idx, ds=None):
        if not len(idx):
            return np.zeros((0, len(s.labels)), np.float32)
        if ds is None:
            ds = image_dataset(paths[idx], None, size, opts.color, 256, parallel=parallel)
        return class_probabilities(model.predict(ds, verbose=0), output)

    # The validation pipeline is in order and already cached: no second decode.
    p_val, p_test = probabilities(va, val_ds), probabilities(te)
    binary = len(s.labels) == 2
    threshold = best_threshold(s.y[va], p_val[:, 1]) if opts.tune_threshold and binary and len(va) else 0.5

    def evaluate(idx, p):
        if not len(idx):
            return None
        m = classification_metrics(s.y[idx], decide(p, threshold), s.labels)
        return {**m, "roc_auc": macro_roc_auc(s.y[idx], p), "threshold": threshold}

    test = evaluate(te, p_test)
    metrics = {
        "split": "test",
        **test,
        "threshold_source": "validation" if opts.tune_threshold and binary else "default",
        "output": output,
        "validation": evaluate(va, p_val),
        "arch": opts.arch,
        "parameters": int(model.count_params()),
        "macs_per_image": macs,
        "weights_sha256": weights_sha256(model),
        "deterministic": opts.deterministic,
        "epochs_run": len(history["loss"]),
        "best_epoch": int(np.argmin(history[monitor])) + 1,
        "train_seconds": round(train_seconds, 1),
        "labels": s.labels,
        **({"trained_with": all_labels} if len(all_labels) > len(s.labels) else {}),
    }
    write_json(out / "metrics.json", metrics)
    plots.confusion_matrix(np.array(test["confusion_matrix"]), s.labels, out / "confusion_matrix.png")
    # Up to 16 test images of each class, drawn with the run's seed.
    order = np.random.default_rng(opts.seed).permutation(len(te))
    pick = np.concatenate([order[s.y[te[order]] == c][:16] for c in range(len(s.labels))])
    predicted = decide(p_test, threshold)
    plots.samples(
        [preprocess(load_image(paths[te[k]]), size, opts.color) for k in pick],
        [s.labels[s.y[te[k]]] for k in pick],
        [s.labels[predicted[k]] for k in pick],
        out / "samples.png",
    )
    shutil.rmtree(cache_dir, ignore_errors=True)
    print(
        f"test split ({opts.arch}, {metrics['epochs_run']} epochs, {train_seconds / 60:.1f} min, "
        f"{model.count_params():,} parameters, {macs / 1e6:.1f}M MACs per image):"
    )
    print(format_metrics(test, s.labels))
    print(f"weights sha256 {metrics['weights_sha256']}" + (" (deterministic)" if opts.deterministic else ""))
    print(
        f"wrote {out}/: model.keras, metrics.json, split.json, data_report.json, config.json, "
        "history.csv, curves.png, confusion_matrix.png, samples.png, logs/"
    )
    return metrics
