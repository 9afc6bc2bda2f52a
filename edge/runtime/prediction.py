"""One classified image or face."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from happysad.edge.images import Box


@dataclass(frozen=True)
class Prediction:
    """One classified image or face.

    Attributes:
        label: the predicted class name, or ``"uncertain"`` when the
            classifier has a minimum confidence and the best class's score
            is under it.
        confidence: the best class's score, 0..1 (also when uncertain).
        scores: {label: probability} for every class, summing to 1.
        face: (x, y, w, h) of the detected face in the input image's pixels,
            or None when the whole image was classified.
        timings: per stage, in ms: ``detect`` (when faces were searched),
            ``crop`` (for a face), ``preprocess``, ``inference``, ``total``.
        keypoints: float32 (K, 2) of the face in image pixels (eyes first),
            or None (whole image, or a detector without keypoints).
        face_score: the detector's score of the face, 0..1, or None.
    """

    label: str
    confidence: float
    scores: dict
    face: Box | None = None
    timings: dict = field(default_factory=dict)
    keypoints: np.ndarray | None = None
    face_score: float | None = None

    @property
    def basis(self) -> str:
        """``"face"`` when a detected face was classified, else ``"whole-image"``."""
        return "face" if self.face is not None else "whole-image"

    def to_dict(self) -> dict:
        """JSON-ready dict: label, confidence, scores, basis, face (list or
        null), face_score, keypoints (list of [x, y] or null), ms."""
        kp = None if self.keypoints is None else [[round(float(x), 1), round(float(y), 1)] for x, y in self.keypoints]
        return {
            "label": self.label,
            "confidence": round(self.confidence, 6),
            "scores": {k: round(v, 6) for k, v in self.scores.items()},
            "basis": self.basis,
            "face": list(self.face) if self.face is not None else None,
            "face_score": None if self.face_score is None else round(self.face_score, 4),
            "keypoints": kp,
            "ms": round(self.timings.get("total", 0.0), 3),
        }
