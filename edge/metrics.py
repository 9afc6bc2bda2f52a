"""Classification metrics in plain numpy, shared by training and benchmarks."""
from __future__ import annotations

import numpy as np


def classification_metrics(y_true, y_pred, labels: list[str]) -> dict:
    """Accuracy, balanced accuracy, precision, recall, F1 and confusion matrix.

    Args:
        y_true: int array (N,), true class indices into ``labels``.
        y_pred: int array (N,), predicted class indices.
        labels: class names in index order.

    Returns:
        dict with ``n``; ``accuracy``; ``balanced_accuracy`` (mean of the
        per-class recalls); ``precision``, ``recall``, ``f1`` (macro averages
        over classes, as in scikit-learn's ``average="macro"``);
        ``per_class`` ({label: {precision, recall, f1, support}}); and
        ``confusion_matrix`` (rows true class, columns predicted, in
        ``labels`` order). All rates are fractions 0..1; a rate with a zero
        denominator is 0.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    k = len(labels)
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    per_class = {}
    for i, name in enumerate(labels):
        tp = cm[i, i]
        support = cm[i].sum()
        predicted = cm[:, i].sum()
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": float(precision), "recall": float(recall),
                           "f1": float(f1), "support": int(support)}
    n = int(cm.sum())
    return {
        "n": n,
        "accuracy": float(np.trace(cm) / n) if n else 0.0,
        "balanced_accuracy": float(np.mean([c["recall"] for c in per_class.values()])),
        "precision": float(np.mean([c["precision"] for c in per_class.values()])),
        "recall": float(np.mean([c["recall"] for c in per_class.values()])),
        "f1": float(np.mean([c["f1"] for c in per_class.values()])),
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
    }
