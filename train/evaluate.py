"""A trained model measured on its split: probabilities, metrics, the
metrics file and the report images."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from happysad.edge import load_image, preprocess
from happysad.edge.fileio import write_json
from happysad.edge.metrics import best_threshold, class_probabilities, classification_metrics, decide, roc_auc

from . import plots


def macro_roc_auc(y: np.ndarray, probs: np.ndarray) -> float:
    """ROC AUC of p(second class) for two classes; for more, the mean of each
    class's one-vs-rest AUC (scikit-learn's ``multi_class="ovr"``,
    ``average="macro"``), over the classes present."""
    if probs.shape[1] == 2:
        return roc_auc(y, probs[:, 1])
    aucs = [roc_auc(y == c, probs[:, c]) for c in range(probs.shape[1])]
    aucs = [a for a in aucs if np.isfinite(a)]
    return float(np.mean(aucs)) if aucs else float("nan")


def format_metrics(m: dict, labels) -> str:
    """Metrics as a short printed block."""
    return (
        f"accuracy {m['accuracy']:.4f}  balanced accuracy {m['balanced_accuracy']:.4f}  "
        f"precision {m['precision']:.4f}  recall {m['recall']:.4f}  F1 {m['f1']:.4f}  "
        f"ROC AUC {m['roc_auc']:.4f}  (n={m['n']}, threshold {m['threshold']:.3f})\n"
        f"confusion matrix (rows true, columns predicted {list(labels)}): {m['confusion_matrix']}"
    )


def format_vote_metrics(v: dict) -> str:
    """The figures of :func:`edge.metrics.vote_metrics` on one line."""

    def pct(x):
        return "n/a" if x is None else f"{100 * x:.2f}%"

    return (
        f"forced {pct(v['forced'])}, three-way balanced {pct(v['three_way'])}, neutral faces called an "
        f"expression {pct(v['neutral_called_expression'])}, majority accuracy {pct(v['majority'])}, "
        f"score-vote MAE {v['vote_mae']:.3f} (n={v['n']})"
        if v["vote_mae"] is not None
        else f"no faces with votes on the model's classes (n={v['n']})"
    )


def probabilities(model, paths: np.ndarray, size, color: str, ds=None, parallel: bool = True) -> np.ndarray:
    """float32 (N, C) class probabilities of ``model`` on image files, in order
    (``ds``: an in-order, already built pipeline of the same files)."""
    from .pipeline import image_dataset

    n_classes = max(2, int(model.output_shape[-1]))
    if not len(paths):
        return np.zeros((0, n_classes), np.float32)
    if ds is None:
        ds = image_dataset(paths, None, size, color, 256, parallel=parallel)
    output = "sigmoid" if model.output_shape[-1] == 1 else "softmax"
    return class_probabilities(model.predict(ds, verbose=0), output)


def evaluate_run(model, out: Path, labels: list, y_val, p_val, y_test, p_test, tune_threshold: bool) -> dict:
    """Test and validation metrics of a trained model.

    Args:
        y_val, y_test: int (N,) true classes; p_val, p_test: float (N, C).
        tune_threshold: choose the two-class threshold on validation
            (best balanced accuracy) instead of 0.5.

    Returns:
        the test metrics (:func:`edge.metrics.classification_metrics`,
        ``roc_auc``, ``threshold``) with ``threshold_source``, ``output``
        and ``validation`` (the same on the validation split, or None).
    """
    binary = len(labels) == 2
    tuned = tune_threshold and binary and len(y_val)
    threshold = best_threshold(y_val, p_val[:, 1]) if tuned else 0.5

    def figures(y, p):
        if not len(y):
            return None
        m = classification_metrics(y, decide(p, threshold), labels)
        return {**m, "roc_auc": macro_roc_auc(y, p), "threshold": threshold}

    return {
        "split": "test",
        **figures(y_test, p_test),
        "threshold_source": "validation" if tuned else "default",
        "output": "sigmoid" if model.output_shape[-1] == 1 else "softmax",
        "validation": figures(y_val, p_val),
    }


def write_report(out: Path, metrics: dict, labels: list, test_paths, y_test, p_test, size, color, seed: int) -> None:
    """``metrics.json``, ``confusion_matrix.png`` and ``samples.png`` (up to 16
    test images of each class, drawn with the run's seed)."""
    write_json(out / "metrics.json", metrics)
    plots.confusion_matrix(np.array(metrics["confusion_matrix"]), labels, out / "confusion_matrix.png")
    order = np.random.default_rng(seed).permutation(len(y_test))
    pick = np.concatenate([order[y_test[order] == c][:16] for c in range(len(labels))])
    predicted = decide(p_test, metrics["threshold"])
    plots.samples(
        [preprocess(load_image(test_paths[k]), size, color) for k in pick],
        [labels[y_test[k]] for k in pick],
        [labels[predicted[k]] for k in pick],
        out / "samples.png",
    )
