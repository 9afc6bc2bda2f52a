"""One training run: scan, split, fit, evaluate, write the run folder."""
from __future__ import annotations

import csv
import io
import os
import platform
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edge import __version__
from edge.fileio import atomic_path, write_bytes, write_json
from edge.metrics import classification_metrics

from .data import Scan, make_split, scan


@dataclass
class TrainOptions:
    """Settings of one training run (all written to ``config.json``).

    Attributes:
        data_dir: folder with one sub-folder of photos per class.
        out: the run folder to write.
        arch: "compact" (default) or "seed".
        epochs: most epochs; EarlyStopping may end sooner.
        seed: seeds the split, the weights and the augmentation.
        img_size: model input height = width, pixels.
        color: "gray" or "rgb".
        ratios: train, validation, test fractions.
        batch_size: images per step.
        lr: peak learning rate of the warm-up + cosine schedule.
        patience: epochs without a better validation loss before stopping.
    """

    data_dir: str
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
    verbose: int = field(default=1, compare=False)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _progress(done: int, total: int) -> None:
    if sys.stderr.isatty() and (done % 500 == 0 or done == total):
        print(f"\rscanning images {done}/{total}", end="\n" if done == total else "",
              file=sys.stderr, flush=True)


def data_summary(s: Scan) -> str:
    """A few lines: files per class, skipped files by reason, duplicates, conflicts."""
    counts = np.bincount(s.y, minlength=len(s.labels))
    lines = [f"data: {s.data_dir}: " + ", ".join(f"{n} {name}" for name, n in zip(s.labels, counts))
             + f" ({len(s.y)} images)"]
    if s.skipped:
        reasons = Counter(x["reason"] for x in s.skipped)
        lines.append(f"skipped {len(s.skipped)} files: "
                     + "; ".join(f"{n} {r}" for r, n in reasons.most_common()))
        for x in s.skipped[:5]:
            lines.append(f"  skipped {x['path']}: {x['reason']}")
    sizes = [n for n in Counter(s.sha256).values() if n > 1]
    if sizes:
        lines.append(f"{len(sizes)} groups of byte-identical files ({sum(sizes)} files): "
                     "each group kept within one part of the split")
    for c in s.conflicts:
        lines.append(f"left out, same image under both labels: {', '.join(c['paths'])}")
    return "\n".join(lines)


def _split_record(s: Scan, part: np.ndarray, opts: TrainOptions) -> dict:
    entries = {name: [] for name in ("train", "val", "test")}
    for i, p in enumerate(part):
        entries[("train", "val", "test")[p]].append(
            {"path": s.paths[i], "label": s.labels[s.y[i]], "sha256": s.sha256[i]})
    return {"data_dir": str(Path(s.data_dir).resolve()), "labels": s.labels, "seed": opts.seed,
            "ratios": list(opts.ratios),
            "image": {"size": [opts.img_size, opts.img_size], "color": opts.color},
            "grouped_by": "sha256", **entries, "skipped": s.skipped, "excluded": s.conflicts}


def _plot_curves(history: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    epochs = np.arange(1, len(history["loss"]) + 1)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, title in ((axes[0], "loss", "loss (binary cross-entropy)"), (axes[1], "accuracy", "accuracy")):
        ax.plot(epochs, history[key], label="train")
        if f"val_{key}" in history:
            ax.plot(epochs, history[f"val_{key}"], label="validation")
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


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
    cm = m["confusion_matrix"]
    return (f"accuracy {m['accuracy']:.4f}  balanced accuracy {m['balanced_accuracy']:.4f}  "
            f"precision {m['precision']:.4f}  recall {m['recall']:.4f}  F1 {m['f1']:.4f}  (n={m['n']})\n"
            f"confusion matrix (rows true, columns predicted {list(labels)}): {cm}")


def train(opts: TrainOptions) -> dict:
    """Run training end to end and write the run folder.

    Writes ``split.json``, ``config.json``, ``model.keras`` (the inference
    model, without augmentation), ``history.csv``, ``curves.png`` and
    ``metrics.json`` into ``opts.out``, each atomically.

    Returns:
        the metrics dict written to ``metrics.json``.

    Raises:
        HappysadError: bad data folder, or an output that cannot be written.
    """
    out = Path(opts.out)
    size = (opts.img_size, opts.img_size)
    s = scan(opts.data_dir, size, opts.color, progress=_progress)
    _log(data_summary(s))
    part = make_split(s.y, s.sha256, opts.ratios, opts.seed)
    split = _split_record(s, part, opts)
    write_json(out / "split.json", split)
    _log("split: " + ", ".join(f"{name} {len(split[name])}" for name in ("train", "val", "test"))
         + f" (seed {opts.seed}) -> {out / 'split.json'}")

    # TensorFlow is imported only now, after the cheap checks have passed.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    from .models import augmentation, build_model, count_macs

    write_json(out / "config.json", {**asdict(opts), "ratios": list(opts.ratios),
                                     "versions": {"python": platform.python_version(),
                                                  "tensorflow": tf.__version__,
                                                  "keras": keras.__version__,
                                                  "happysad": __version__}})
    keras.utils.set_random_seed(opts.seed)
    x = s.pixels.astype(np.float32)
    y = s.y.astype(np.float32)
    tr, va, te = (np.flatnonzero(part == p) for p in range(3))
    channels = 1 if opts.color == "gray" else 3
    model = build_model(opts.arch, size, channels)
    trainer = keras.Sequential([keras.Input((*size, channels)), augmentation(opts.seed), model])
    steps = opts.epochs * int(np.ceil(len(tr) / opts.batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, max(1, steps), warmup_target=opts.lr, warmup_steps=max(1, steps // 20))
    trainer.compile(optimizer=keras.optimizers.Adam(schedule), loss="binary_crossentropy",
                    metrics=["accuracy"])
    # Balanced class weights, n / (k * n_c), as scikit-learn's "balanced".
    counts = np.bincount(s.y[tr], minlength=2)
    class_weight = {c: float(len(tr) / (2 * max(1, n))) for c, n in enumerate(counts)}
    monitor = "val_loss" if len(va) else "loss"
    stopper = keras.callbacks.EarlyStopping(monitor=monitor, patience=opts.patience,
                                            restore_best_weights=True)
    macs = count_macs(model)
    _log(f"model {opts.arch}: {model.count_params():,} parameters, {macs / 1e6:.1f}M "
         f"multiply-accumulates per image; training up to {opts.epochs} epochs")
    start = time.perf_counter()
    hist = trainer.fit(x[tr], y[tr], validation_data=(x[va], y[va]) if len(va) else None,
                       epochs=opts.epochs, batch_size=opts.batch_size, class_weight=class_weight,
                       callbacks=[stopper], verbose=opts.verbose)
    train_seconds = time.perf_counter() - start
    history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}

    with atomic_path(out / "model.keras") as tmp:
        model.save(tmp)
    write_bytes(out / "history.csv", _history_csv(history))
    _plot_curves(history, out / "curves.png")

    def evaluate(idx):
        if not len(idx):
            return None
        p = model.predict(x[idx], batch_size=256, verbose=0).ravel()
        return classification_metrics(s.y[idx], (p >= 0.5).astype(np.int64), s.labels)

    test = evaluate(te)
    metrics = {"split": "test", "threshold": 0.5, **test,
               "validation": evaluate(va), "arch": opts.arch, "parameters": int(model.count_params()),
               "macs_per_image": macs, "epochs_run": len(history["loss"]),
               "best_epoch": int(np.argmin(history[monitor])) + 1,
               "train_seconds": round(train_seconds, 1), "labels": s.labels}
    write_json(out / "metrics.json", metrics)
    print(f"test split ({opts.arch}, {metrics['epochs_run']} epochs, {train_seconds / 60:.1f} min):")
    print(format_metrics(test, s.labels))
    print(f"wrote {out}/: model.keras, split.json, history.csv, curves.png, metrics.json, config.json")
    return metrics
