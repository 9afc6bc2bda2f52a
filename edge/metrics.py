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


def roc_auc(y_true, scores) -> float:
    """Area under the ROC curve for binary labels.

    Computed as the Mann-Whitney U statistic over ranks (ties get their
    average rank): the probability that a random positive scores above a
    random negative (Hanley and McNeil, Radiology 143:29, 1982).

    Args:
        y_true: int (N,), 1 for the positive class (``labels[1]``), else 0.
        scores: float (N,), the model's probability of the positive class.

    Returns:
        AUC in 0..1; NaN when only one class is present.
    """
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    # Average rank (1-based) over each run of tied scores.
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_s)) + 1]
    ends = np.r_[starts[1:], len(s)]
    for a, b in zip(starts, ends):
        ranks[order[a:b]] = (a + b + 1) / 2.0
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def best_threshold(y_true, scores) -> float:
    """The decision threshold on ``scores`` that maximizes balanced accuracy.

    Candidates are 0.5 and every midpoint between consecutive distinct
    scores; ties go to the candidate closest to 0.5. Meant for the
    validation split, never the test split.

    Args:
        y_true: int (N,) 0/1 labels. scores: float (N,) probabilities of class 1.

    Returns:
        threshold t: predict class 1 where score >= t.
    """
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    uniq = np.unique(s)
    candidates = np.r_[0.5, (uniq[1:] + uniq[:-1]) / 2.0] if len(uniq) > 1 else np.array([0.5])
    best, best_t = -1.0, 0.5
    for t in candidates:
        pred = s >= t
        tpr = (pred & y).sum() / max(1, y.sum())
        tnr = (~pred & ~y).sum() / max(1, (~y).sum())
        bal = (tpr + tnr) / 2.0
        if bal > best + 1e-12 or (abs(bal - best) <= 1e-12 and abs(t - 0.5) < abs(best_t - 0.5)):
            best, best_t = bal, float(t)
    return best_t
