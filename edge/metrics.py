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
        per_class[name] = {
            "precision": float(precision),
            "recall": float(recall),
            "f1": float(f1),
            "support": int(support),
        }
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


def class_probabilities(raw, output: str = "sigmoid") -> np.ndarray:
    """Model outputs as class probabilities, one row per image.

    Args:
        raw: float (N, K) or (K,) outputs of a model: K = 1 for a
            ``sigmoid`` model (p of the second label), K = the number of
            labels for a ``softmax`` model.
        output: ``"sigmoid"`` or ``"softmax"`` (:data:`edge.runtime.metadata.OUTPUTS`).

    Returns:
        float32 (N, C) (or (C,) for a 1-D ``raw``), each row in 0..1 and
        summing to 1: ``[1 - p, p]`` for a sigmoid, the softmax row clipped
        to 0..1 and renormalised (an int8 output's rounding can leave a sum
        of 0.996) for a softmax.
    """
    a = np.asarray(raw, dtype=np.float32)
    one = a.ndim == 1
    a = a.reshape(1, -1) if one else a.reshape(a.shape[0], -1)
    if output == "sigmoid":
        p = np.clip(a[:, :1], 0.0, 1.0)
        probs = np.concatenate([1.0 - p, p], axis=1)
    else:
        probs = np.clip(a, 0.0, 1.0)
        total = probs.sum(axis=1, keepdims=True)
        uniform = np.where(np.isnan(total), np.nan, 1.0 / probs.shape[1])  # NaN stays visible
        probs = np.where(total > 0, probs / np.where(total > 0, total, 1.0), uniform)
    probs = probs.astype(np.float32)
    return probs[0] if one else probs


def decide(probs, threshold: float = 0.5) -> np.ndarray:
    """Predicted class indices from class probabilities.

    With two classes the second is chosen where its probability is at or
    above ``threshold`` (0.5, or the one ``--tune-threshold`` chose); with
    more, the most probable class (the first of equals).

    Args:
        probs: float (N, C) or (C,) from :func:`class_probabilities`.

    Returns:
        int64 (N,), or an int64 scalar array for one row.
    """
    p = np.asarray(probs)
    if p.shape[-1] == 2:
        return (p[..., 1] >= threshold).astype(np.int64)
    return np.argmax(p, axis=-1).astype(np.int64)


def tied(probs) -> np.ndarray:
    """bool (N,), or a bool scalar for one row (C,): the two best of three or
    more class scores are equal, as int8 outputs can be (steps of 1/256; two
    logits in one quantization step): no class is ahead, and the device
    answers ``"uncertain"`` (:meth:`edge.classifier.Classifier.label_of`)."""
    p = np.asarray(probs)
    if p.shape[-1] < 3:
        return np.zeros(p.shape[:-1], bool)
    top = np.sort(p, axis=-1)
    return top[..., -1] == top[..., -2]


def suggest_min_confidence(y_true, probs, threshold: float = 0.5, target: float = 0.97) -> dict:
    """The lowest confidence at and above which predictions are right at
    least ``target`` of the time (selective classification: Geifman and
    El-Yaniv, "Selective Classification for Deep Neural Networks", NeurIPS
    2017, choose the threshold on held-out data the same way).

    Meant for the validation split. The confidence of a prediction is the
    probability of the class it gives.

    Args:
        y_true: int (N,) true classes. probs: float (N, C).
        threshold: the model's two-class decision threshold.
        target: accuracy wanted on the predictions kept, 0..1.

    Returns:
        {"min_confidence": t (0.0 when every prediction together already
        meets the target), "accuracy_kept": accuracy at and above t,
        "coverage": share of images kept, "target": target}; rates 0..1.
    """
    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)
    pred = decide(p, threshold)
    conf = p[np.arange(len(p)), pred] if len(p) else np.zeros(0)
    right = pred == y
    best = {"min_confidence": 0.0, "accuracy_kept": float(right.mean()) if len(y) else 0.0, "coverage": 1.0}
    best["target"] = target
    if not len(y) or best["accuracy_kept"] >= target:
        return best
    order = np.argsort(-conf, kind="mergesort")
    kept_right = np.cumsum(right[order])
    kept = np.arange(1, len(y) + 1)
    ok = np.flatnonzero(kept_right / kept >= target)
    if not len(ok):
        return {"min_confidence": 1.0, "accuracy_kept": 0.0, "coverage": 0.0, "target": target}
    k = ok[-1]  # the most predictions kept that still meet the target
    t = float(conf[order[k]])
    keep = conf >= t
    kept_stats = {"accuracy_kept": float(right[keep].mean()), "coverage": float(keep.mean()), "target": target}
    return {"min_confidence": round(t, 4), **kept_stats}


#: The class that is no expression: "neither" in the three-way figure.
NEUTRAL = "neutral"


def vote_metrics(probs, labels, votes, bins: int = 10) -> dict:
    """Figures against crowd votes (FER+ majority, :mod:`edge.votes`).

    The model's *expression classes* are its labels other than
    :data:`NEUTRAL` (happy and sad for a happy/sad/neutral model).

    - ``majority``: accuracy of the answer (the most probable class; a tie
      of the two best is "uncertain", :func:`tied`) where the majority is a class.
    - ``forced``: on faces whose majority is an expression class, the
      expression class with the highest score (neutral's ignored), as a
      two-way happy/sad model answers.
    - ``three_way``: balanced accuracy over expression classes + "neither",
      on faces whose majority is an expression class or neutral; an answer
      that is no expression class (neutral, uncertain) counts as "neither".
      ``three_way_recall``: its recall per class ("neither" for the
      faces whose majority is neutral); ``forced_recall``: the forced
      figure per expression class.
    - ``neutral_called_expression``: share of neutral-majority faces
      answered an expression class.
    - ``vote_mae``: mean over faces and classes of |score - vote share|,
      the shares taken over the model's classes only (faces with no vote on
      them left out); 0 is a model whose scores are the crowd's shares.
    - ``reliability``: per confidence bin (the top score, ``bins`` equal
      bins over 0..1), the mean confidence, the mean vote share of the
      class given, and the face count: a reliability diagram's points.

    Args:
        probs: float (N, C) class probabilities in ``labels`` order.
        labels: the model's class names (:func:`edge.votes.emotion_of` each).
        votes: float (N, 10) FER+ counts, NaN rows for faces without votes.

    Returns:
        dict of the figures above (rates 0..1; None where no face
        qualifies) and ``n`` (faces with votes), ``counts`` (faces per
        majority used).
    """
    from happysad.edge.votes import emotion_of, majorities

    p = np.asarray(probs, dtype=np.float64).reshape(len(votes), -1)
    emotions = [emotion_of(lab) for lab in labels]
    maj = majorities(votes)
    pred = np.argmax(p, axis=1) if len(p) else np.zeros(0, np.int64)
    answer = np.where(tied(p), -1, pred) if len(p) else pred  # a tie: "uncertain", as the device answers
    expr = [i for i, lab in enumerate(labels) if lab != NEUTRAL]
    majority, forced, forced_recall = _majority_and_forced(p, answer, maj, labels, emotions, expr)
    three_way, three_way_recall, neutral_called = _three_way(answer, maj, labels, emotions, expr)
    vote_mae, reliability = _against_shares(p, pred, votes, labels, bins)
    return {
        "n": int(sum(m is not None for m in maj)),
        "majority": majority,
        "forced": forced,
        "three_way": three_way,
        "three_way_recall": three_way_recall,
        "forced_recall": forced_recall,
        "neutral_called_expression": neutral_called,
        "vote_mae": vote_mae,
        "reliability": reliability,
        "counts": {m: int(sum(x == m for x in maj)) for m in sorted({m for m in maj if m is not None})},
    }


def _rate(mask, ok) -> float | None:
    """The share (0..1) of ``ok`` among the faces of bool (N,) ``mask``; None where none is masked."""
    return float(np.mean(ok[mask])) if mask.any() else None


def _majority_and_forced(p, pred, maj: list, labels, emotions: list, expr: list) -> tuple:
    """:func:`vote_metrics`'s ``majority``, ``forced`` and ``forced_recall``
    (float (N, C) scores ``p``, int (N,) most probable classes ``pred``,
    majorities ``maj``, expression classes at indices ``expr``): rates
    0..1 or None, and {label: rate}."""
    truth = np.array([emotions.index(m) if m in emotions else -1 for m in maj])
    in_model = np.array([m in emotions for m in maj], bool)
    emo_expr = [emotions[i] for i in expr]
    is_expr = np.array([m in emo_expr for m in maj], bool)
    forced = np.array(expr)[np.argmax(p[:, expr], axis=1)] if len(p) and expr else pred
    recall = {labels[i]: _rate(is_expr & (truth == i), forced == truth) for i in expr}
    recall = {k: v for k, v in recall.items() if v is not None}
    return _rate(in_model, pred == truth), _rate(is_expr, forced == truth), recall


def _three_way(pred, maj: list, labels, emotions: list, expr: list) -> tuple:
    """:func:`vote_metrics`'s ``three_way``, ``three_way_recall`` and
    ``neutral_called_expression``: answers (int (N,) ``pred``) and
    majorities as expression classes 0..E-1 (indices ``expr``) or
    "neither" E, scored on faces whose majority is an expression class or
    neutral; rates 0..1 or None, and {class or "neither": recall}."""
    from happysad.edge.votes import emotion_of

    emo_expr = [emotions[i] for i in expr]
    is_expr = np.array([m in emo_expr for m in maj], bool)
    is_neutral = np.array([m == emotion_of(NEUTRAL) for m in maj], bool)
    answer = np.array([expr.index(k) if k in expr else len(expr) for k in pred], np.int64)
    true3 = np.array([emo_expr.index(m) if m in emo_expr else len(expr) for m in maj], np.int64)
    names3 = [labels[i] for i in expr] + ["neither"]
    recall3 = {
        names3[c]: float(np.mean(answer[(true3 == c) & (is_expr | is_neutral)] == c))
        for c in range(len(expr) + 1)
        if np.any((true3 == c) & (is_expr | is_neutral))
    }
    three_way = float(np.mean(list(recall3.values()))) if recall3 else None
    return three_way, recall3, _rate(is_neutral, answer < len(expr))


def _against_shares(p, pred, votes, labels, bins: int) -> tuple[float | None, list]:
    """:func:`vote_metrics`'s ``vote_mae`` and ``reliability``: float (N, C)
    scores ``p`` against the vote shares over ``labels`` (faces with no vote
    on them left out), and per confidence bin of the top score the mean
    confidence, the mean share of the class given (int (N,) ``pred``) and
    the face count."""
    from happysad.edge.votes import shares

    s = shares(votes, labels)
    known = np.all(np.isfinite(s), axis=1)
    vote_mae = float(np.mean(np.abs(p[known] - s[known]))) if known.any() else None
    conf = p[known].max(axis=1) if known.any() else np.zeros(0)
    given = s[known][np.arange(int(known.sum())), pred[known]] if known.any() else np.zeros(0)
    which = np.minimum((conf * bins).astype(np.int64), bins - 1)
    reliability = [
        {
            "bin": [b / bins, (b + 1) / bins],
            "confidence": float(conf[which == b].mean()),
            "vote_share": float(given[which == b].mean()),
            "n": int(np.sum(which == b)),
        }
        for b in range(bins)
        if np.any(which == b)
    ]
    return vote_mae, reliability
