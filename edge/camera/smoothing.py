"""Temporal smoothing of each face's scores across frames, so a label does
not flicker from one frame to the next."""

from __future__ import annotations

import dataclasses

from happysad.edge.images import Box
from happysad.edge.metrics import decide, tied
from happysad.edge.runtime.metadata import UNCERTAIN
from happysad.edge.runtime.prediction import Prediction

#: Two boxes in consecutive frames are the same face when their
#: intersection-over-union is at least this (the PASCAL VOC match criterion).
MATCH_IOU = 0.3
#: A face unseen for this many frames is forgotten.
MAX_MISSES = 5


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two (x, y, w, h) boxes, 0..1."""
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0, min(ax1, bx1) - max(a[0], b[0]))
    ih = max(0, min(ay1, by1) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


class ScoreSmoother:
    """Exponential moving average of each tracked face's scores.

    ``smoothed = alpha * previous + (1 - alpha) * new``; alpha 0 turns it off.
    Faces are matched to the previous frame's by box overlap
    (:data:`MATCH_IOU`), greedily, largest overlap first.

    Args:
        alpha: weight of the history, 0..1 (0.6 settles within about 5
            frames: 0.6^5 < 0.08).
        labels: class names in score order; threshold: the model's
            two-class decision threshold (:func:`edge.metrics.decide`).
        min_confidence: a smoothed best score under it gives ``"uncertain"``,
            as does a tie of the two best (:func:`edge.metrics.tied`).
    """

    def __init__(self, alpha: float, labels, threshold: float = 0.5, min_confidence: float = 0.0):
        self.alpha = alpha
        self.labels = tuple(labels)
        self.threshold = threshold
        self.min_confidence = min_confidence
        self._tracks: list[dict] = []

    def update(self, predictions: list[Prediction]) -> list[Prediction]:
        """Smooth one frame's predictions; returns them with smoothed scores,
        label and confidence (boxes and timings unchanged)."""
        if self.alpha <= 0:
            return predictions
        pairs = sorted(
            (
                (iou(p.face, t["box"]), i, j)
                for i, p in enumerate(predictions)
                if p.face
                for j, t in enumerate(self._tracks)
            ),
            reverse=True,
        )
        matched_p, matched_t, match = set(), set(), {}
        for overlap, i, j in pairs:
            if overlap < MATCH_IOU:
                break
            if i not in matched_p and j not in matched_t:
                matched_p.add(i)
                matched_t.add(j)
                match[i] = j
        out, tracks = [], []
        for i, p in enumerate(predictions):
            new = [p.scores[name] for name in self.labels]
            if i in match:
                old = self._tracks[match[i]]["scores"]
                new = [self.alpha * o + (1 - self.alpha) * n for o, n in zip(old, new)]
            tracks.append({"box": p.face, "scores": new, "misses": 0})
            idx = int(decide(new, self.threshold))
            label = UNCERTAIN if new[idx] < self.min_confidence or tied(new) else self.labels[idx]
            out.append(
                dataclasses.replace(
                    p, label=label, confidence=float(new[idx]), scores=dict(zip(self.labels, map(float, new)))
                )
            )
        for j, t in enumerate(self._tracks):
            if j not in matched_t and t["misses"] + 1 < MAX_MISSES:
                tracks.append({**t, "misses": t["misses"] + 1})
        self._tracks = [t for t in tracks if t["box"] is not None]
        return out
