"""MediaPipe's BlazeFace face detectors (short and full range) in the TFLite
interpreter the classifier uses, decoded with numpy after MediaPipe's graph
configs (``face_detection_short_range.pbtxt``, ``face_detection_full_range.pbtxt``):
SSD anchors, box and keypoint offsets from the anchor centre, a sigmoid
score, and MediaPipe's weighted non-maximum suppression.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from happysad.edge.faces.base import Face, asset_path, bgr, largest_first
from happysad.edge.runtime.backends import tflite_interpreter_class


@dataclass(frozen=True)
class AnchorSpec:
    """MediaPipe's SSD anchor options for one BlazeFace model
    (``face_detection_*_range.pbtxt``, ``SsdAnchorsCalculator``)."""

    input_size: int
    strides: tuple[int, ...]
    interpolated: bool  # interpolated_scale_aspect_ratio 1.0 adds a second anchor per cell
    min_score: float


BLAZEFACE = {
    "blazeface": ("face_detection_short_range.tflite", AnchorSpec(128, (8, 16, 16, 16), True, 0.5)),
    "blazeface-full": ("face_detection_full_range.tflite", AnchorSpec(192, (4,), False, 0.6)),
}


def ssd_anchors(spec: AnchorSpec) -> np.ndarray:
    """Anchor centres of MediaPipe's ``SsdAnchorsCalculator`` with
    ``fixed_anchor_size: true`` (every anchor is 1 x 1, only its centre matters).

    Consecutive layers with the same stride share one grid; each layer adds
    one anchor per cell (aspect ratio 1.0) and one more with the
    interpolated scale, all at the cell centre (anchor offset 0.5).

    Returns:
        float32 (N, 2): x, y centres in 0..1 of the input, in the model's
        output order (N = 896 for short range, 2304 for full range).
    """
    out, i = [], 0
    strides = spec.strides
    while i < len(strides):
        j = i
        while j < len(strides) and strides[j] == strides[i]:
            j += 1
        per_cell = (j - i) * (2 if spec.interpolated else 1)
        cells = math.ceil(spec.input_size / strides[i])
        ys, xs = np.meshgrid((np.arange(cells) + 0.5) / cells, (np.arange(cells) + 0.5) / cells, indexing="ij")
        centres = np.stack([xs.ravel(), ys.ravel()], axis=1)
        out.append(np.repeat(centres, per_cell, axis=0))
        i = j
    return np.concatenate(out).astype(np.float32)


def decode_blazeface(
    regressors: np.ndarray, scores: np.ndarray, anchors: np.ndarray, input_size: int, min_score: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes, keypoints and scores from BlazeFace's raw outputs (MediaPipe's
    ``TensorsToDetectionsCalculator``, ``reverse_output_order: true``).

    Args:
        regressors: float32 (N, 16): per anchor x, y, w, h of the box and
            6 keypoints (x, y), in input pixels, the centre and keypoints
            relative to the anchor centre.
        scores: float32 (N,) raw logits; the score is sigmoid(clip(logit, -100, 100)).
        anchors: float32 (N, 2) from :func:`ssd_anchors`.

    Returns:
        (boxes float32 (M, 4) as x0, y0, x1, y1; keypoints float32 (M, 6, 2);
        scores float32 (M,)), in 0..1 of the input, for the M anchors
        scoring at least ``min_score``.
    """
    prob = 1.0 / (1.0 + np.exp(-np.clip(scores.astype(np.float64), -100.0, 100.0)))
    keep = prob >= min_score
    r, a = regressors[keep] / input_size, anchors[keep]
    cx, cy = r[:, 0] + a[:, 0], r[:, 1] + a[:, 1]
    w, h = r[:, 2], r[:, 3]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    kps = r[:, 4:16].reshape(-1, 6, 2) + a[:, None, :]
    return boxes.astype(np.float32), kps.astype(np.float32), prob[keep].astype(np.float32)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one x0, y0, x1, y1 box against (M, 4) boxes."""
    x0, y0 = np.maximum(box[0], boxes[:, 0]), np.maximum(box[1], boxes[:, 1])
    x1, y1 = np.minimum(box[2], boxes[:, 2]), np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = lambda b: np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)  # noqa: E731
    return inter / np.maximum(area(box) + area(boxes) - inter, 1e-9)


def weighted_nms(
    boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, iou_threshold: float = 0.3
) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """MediaPipe's ``NonMaxSuppressionCalculator`` with ``algorithm: WEIGHTED``.

    The best remaining box and every box overlapping it by more than
    ``iou_threshold`` are merged into one: box and keypoints averaged,
    weighted by score, keeping the best score. BlazeFace fires on many
    neighbouring anchors for one face; averaging them (rather than keeping
    the best, as ``cv2.dnn.NMSBoxes`` would) steadies the box and keypoints
    from frame to frame, which the crop and the levelling depend on.

    Returns:
        list of (box (4,), keypoints (K, 2), score), best first.
    """
    order = np.argsort(-scores)
    boxes, keypoints, scores = boxes[order], keypoints[order], scores[order]
    out = []
    while len(scores):
        overlap = _iou(boxes[0], boxes) > iou_threshold
        overlap[0] = True
        w = scores[overlap][:, None]
        box = (boxes[overlap] * w).sum(0) / w.sum()
        kp = (keypoints[overlap] * w[:, :, None]).sum(0) / w.sum()
        out.append((box, kp, float(scores[0])))
        boxes, keypoints, scores = boxes[~overlap], keypoints[~overlap], scores[~overlap]
    return out


class BlazeFaceDetector:
    """MediaPipe's BlazeFace (short or full range) in the TFLite interpreter
    the classifier uses, decoded with numpy (:func:`decode_blazeface`,
    :func:`weighted_nms`).

    Args:
        variant: ``"blazeface"`` (short range, 128 px input, faces within
            about 2 m) or ``"blazeface-full"`` (192 px, about 5 m).
        score_threshold: lowest score kept (None: MediaPipe's, 0.5 / 0.6).
        threads: interpreter threads.

    Raises:
        HappysadError: no TFLite interpreter, or the vendored model is
            missing or fails its sha256 check.
    """

    def __init__(
        self,
        variant: str = "blazeface",
        score_threshold: float | None = None,
        threads: int | None = None,
        min_size: int = 16,
    ):
        model, self.spec = BLAZEFACE[variant]
        self.name = variant
        interpreter = tflite_interpreter_class()
        self._interp = interpreter(model_path=str(asset_path(model)), num_threads=threads)
        self._interp.allocate_tensors()
        self._input = self._interp.get_input_details()[0]["index"]
        outs = self._interp.get_output_details()
        self._regressors = next(o["index"] for o in outs if o["shape"][-1] == 16)
        self._scores = next(o["index"] for o in outs if o["shape"][-1] == 1)
        self._anchors = ssd_anchors(self.spec)
        self.score_threshold = self.spec.min_score if score_threshold is None else score_threshold
        self.min_size = min_size

    def detect(self, image: np.ndarray) -> list[Face]:
        """All faces, largest first.

        The image is letterboxed into the square input (aspect ratio kept,
        black border), converted BGR -> RGB and scaled to [-1, 1], as
        MediaPipe's graph does; boxes come back in the image's pixels.

        Args:
            image: uint8 (H, W) gray or (H, W, 3) BGR.
        """
        n = self.spec.input_size
        h, w = image.shape[:2]
        scale = n / max(h, w)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        ox, oy = (n - nw) // 2, (n - nh) // 2
        box = np.zeros((n, n, 3), np.uint8)
        box[oy : oy + nh, ox : ox + nw] = cv2.resize(bgr(image), (nw, nh), interpolation=cv2.INTER_AREA)
        x = cv2.cvtColor(box, cv2.COLOR_BGR2RGB).astype(np.float32) * np.float32(2 / 255) - 1
        self._interp.set_tensor(self._input, x[None])
        self._interp.invoke()
        boxes, kps, scores = decode_blazeface(
            self._interp.get_tensor(self._regressors)[0],
            self._interp.get_tensor(self._scores)[0, :, 0],
            self._anchors,
            n,
            self.score_threshold,
        )
        faces = []
        offset = np.array([ox, oy], np.float32)
        for b, kp, score in weighted_nms(boxes, kps, scores):
            x0, y0 = (b[:2] * n - offset) / scale
            x1, y1 = (b[2:] * n - offset) / scale
            x0, y0, x1, y1 = max(0.0, x0), max(0.0, y0), min(float(w), x1), min(float(h), y1)
            if min(x1 - x0, y1 - y0) < self.min_size:
                continue
            faces.append(
                Face(
                    (int(round(x0)), int(round(y0)), int(round(x1 - x0)), int(round(y1 - y0))),
                    score,
                    ((kp * n - offset) / scale).astype(np.float32),
                )
            )
        return largest_first(faces)
