"""Face detection (YuNet, BlazeFace, Haar) and the crop that frames a face
the way the training faces are framed.

Every detector returns :class:`Face` records in pixels of the image it was
given, largest first. The DNN detectors also give keypoints (the eyes first),
which :func:`face_crop` uses to level the face before cropping.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .errors import HappysadError, UsageError

CASCADE = "haarcascade_frontalface_default.xml"
#: Folder of the vendored detector models (see ``assets/NOTICE``).
ASSETS = Path(__file__).resolve().parent / "assets"
#: Vendored model files and their sha256, checked every time one is loaded
#: (source and licence of each: ``edge/assets/NOTICE``).
ASSET_SHA256 = {
    "face_detection_yunet_2023mar.onnx": "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4",
    "face_detection_short_range.tflite": "3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633",
    "face_detection_full_range.tflite": "99bf9494d84f50acc6617d89873f71bf6635a841ea699c17cb3377f9507cfec3",
}
#: ``--detector`` names. The default was chosen on wild-dev (README, "Faces
#: in ordinary photos"): most faces found, best accuracy, a third of Haar's time.
DETECTORS = ("yunet", "blazeface", "blazeface-full", "haar")
DEFAULT_DETECTOR = "yunet"

Box = tuple[int, int, int, int]  # x, y, width, height in pixels


@dataclass(frozen=True)
class Face:
    """One detected face.

    Attributes:
        box: (x, y, w, h) in pixels of the image searched, ints.
        score: the detector's confidence 0..1 (1.0 for Haar, which has none).
        keypoints: float32 (K, 2) x, y in the same pixels, or None (Haar).
            K = 5 for YuNet (right eye, left eye, nose tip, right and left
            mouth corner) and 6 for BlazeFace (right eye, left eye, nose tip,
            mouth centre, right and left ear tragion); "right" is the
            subject's right, on the image's left. The eyes are always rows 0, 1.
    """

    box: Box
    score: float = 1.0
    keypoints: np.ndarray | None = None

    def to_dict(self) -> dict:
        """JSON-ready: box, score and keypoints (list of [x, y] or null)."""
        kp = None if self.keypoints is None else [[round(float(x), 1), round(float(y), 1)]
                                                   for x, y in self.keypoints]
        return {"box": list(self.box), "score": round(float(self.score), 4), "keypoints": kp}


def asset_path(name: str) -> Path:
    """A vendored model file, its sha256 checked.

    Raises:
        HappysadError: the file is missing or its sha256 differs from
            :data:`ASSET_SHA256` (a damaged or replaced install).
    """
    import hashlib  # here, not at import: OpenSSL's libcrypto adds 4 MB to every edge process
    path = ASSETS / name
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise HappysadError(f"{path}: face detector model missing ({exc.strerror or exc}); "
                            "reinstall happysad") from None
    if hashlib.sha256(data).hexdigest() != ASSET_SHA256[name]:
        raise HappysadError(f"{path}: face detector model fails its sha256 check (damaged or "
                            "replaced); reinstall happysad")
    return path


def _downscale(image: np.ndarray, width: int) -> tuple[np.ndarray, float]:
    """(image scaled down to ``width`` if wider, the factor applied)."""
    if not width or image.shape[1] <= width:
        return image, 1.0
    scale = width / image.shape[1]
    size = (width, max(1, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale


def _bgr(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image


def _largest_first(faces: list[Face]) -> list[Face]:
    return sorted(faces, key=lambda f: f.box[2] * f.box[3], reverse=True)


class HaarDetector:
    """OpenCV's Haar cascade: frontal faces, no keypoints, no score.

    Args:
        min_size: smallest face searched for, in pixels of the original image.
        detect_width: images wider than this are searched on a copy scaled
            down to this width (the cost grows with the pixel count); boxes
            are scaled back. 0 searches at full size.
        scale_factor, min_neighbors: ``CascadeClassifier.detectMultiScale``
            parameters; 1.1 and 5 are OpenCV's documented defaults for faces.

    Raises:
        HappysadError: the cascade file is not found or does not load
            (opencv-python-headless 5.x ships none; install 4.14.0.94).
    """

    name = "haar"

    def __init__(self, min_size: int = 32, detect_width: int = 640,
                 scale_factor: float = 1.1, min_neighbors: int = 5):
        data_dir = getattr(getattr(cv2, "data", None), "haarcascades", "")
        path = os.path.join(data_dir, CASCADE)
        if not data_dir or not os.path.isfile(path) or not hasattr(cv2, "CascadeClassifier"):
            raise HappysadError("OpenCV's Haar face cascade is missing: "
                                "pip install opencv-python-headless==4.14.0.94")
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise HappysadError(f"{path}: Haar cascade does not load; reinstall opencv-python-headless")
        self.min_size = min_size
        self.detect_width = detect_width
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors

    def detect(self, image: np.ndarray) -> list[Face]:
        """All faces, largest first.

        Args:
            image: uint8 (H, W) gray or (H, W, 3) BGR.
        """
        gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        gray, scale = _downscale(gray, self.detect_width)
        min_px = max(1, int(round(self.min_size * scale)))
        found = self._cascade.detectMultiScale(gray, scaleFactor=self.scale_factor,
                                               minNeighbors=self.min_neighbors,
                                               minSize=(min_px, min_px))
        return _largest_first([Face(tuple(int(round(v / scale)) for v in box))
                               for box in np.asarray(found).reshape(-1, 4)])


class YuNetDetector:
    """YuNet (OpenCV Zoo, 2023mar, float32) through ``cv2.FaceDetectorYN``,
    which decodes the boxes and five keypoints and runs NMS itself.

    Args:
        score_threshold: lowest face score kept, 0..1 (0.6: on wild-dev it
            finds a face in as many photos as any higher value keeps right;
            OpenCV Zoo's demo uses 0.9, which misses most sad faces there).
        nms_threshold: IoU above which the weaker of two boxes is dropped.
        detect_width: search a copy scaled down to this width, pixels; the
            model was trained on faces of about 10-300 px.
        min_size: faces smaller than this (pixels of the original) are dropped.

    Raises:
        HappysadError: the vendored model is missing or fails its sha256
            check, or this OpenCV has no ``FaceDetectorYN`` (needs >= 4.8).
    """

    name = "yunet"
    MODEL = "face_detection_yunet_2023mar.onnx"

    def __init__(self, score_threshold: float = 0.6, nms_threshold: float = 0.3,
                 detect_width: int = 640, min_size: int = 16):
        if not hasattr(cv2, "FaceDetectorYN"):
            raise HappysadError("this OpenCV has no FaceDetectorYN (needs 4.8 or newer): "
                                "pip install opencv-python-headless==4.14.0.94, or use --detector haar")
        self._net = cv2.FaceDetectorYN.create(str(asset_path(self.MODEL)), "", (320, 320),
                                              score_threshold, nms_threshold, 5000)
        self._size = (320, 320)
        self.detect_width = detect_width
        self.min_size = min_size

    def detect(self, image: np.ndarray) -> list[Face]:
        """All faces, largest first.

        Args:
            image: uint8 (H, W) gray or (H, W, 3) BGR.
        """
        small, scale = _downscale(_bgr(image), self.detect_width)
        size = (small.shape[1], small.shape[0])
        if size != self._size:
            self._net.setInputSize(size)
            self._size = size
        _, rows = self._net.detect(np.ascontiguousarray(small))
        faces = []
        for row in ([] if rows is None else rows):
            x, y, w, h = (float(v) / scale for v in row[:4])
            if min(w, h) < self.min_size:
                continue
            box = (int(round(x)), int(round(y)), int(round(w)), int(round(h)))
            kp = (row[4:14].reshape(5, 2) / scale).astype(np.float32)
            faces.append(Face(box, float(row[14]), kp))
        return _largest_first(faces)


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
        ys, xs = np.meshgrid((np.arange(cells) + 0.5) / cells, (np.arange(cells) + 0.5) / cells,
                             indexing="ij")
        centres = np.stack([xs.ravel(), ys.ravel()], axis=1)
        out.append(np.repeat(centres, per_cell, axis=0))
        i = j
    return np.concatenate(out).astype(np.float32)


def decode_blazeface(regressors: np.ndarray, scores: np.ndarray, anchors: np.ndarray,
                     input_size: int, min_score: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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


def weighted_nms(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray,
                 iou_threshold: float = 0.3) -> list[tuple[np.ndarray, np.ndarray, float]]:
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

    def __init__(self, variant: str = "blazeface", score_threshold: float | None = None,
                 threads: int | None = None, min_size: int = 16):
        import importlib

        from .backends import _TFLITE_MODULES, default_backend
        model, self.spec = BLAZEFACE[variant]
        self.name = variant
        module = importlib.import_module(_TFLITE_MODULES[default_backend("tflite")])
        self._interp = module.Interpreter(model_path=str(asset_path(model)), num_threads=threads)
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
        box[oy:oy + nh, ox:ox + nw] = cv2.resize(_bgr(image), (nw, nh), interpolation=cv2.INTER_AREA)
        x = cv2.cvtColor(box, cv2.COLOR_BGR2RGB).astype(np.float32) * np.float32(2 / 255) - 1
        self._interp.set_tensor(self._input, x[None])
        self._interp.invoke()
        boxes, kps, scores = decode_blazeface(self._interp.get_tensor(self._regressors)[0],
                                              self._interp.get_tensor(self._scores)[0, :, 0],
                                              self._anchors, n, self.score_threshold)
        faces = []
        offset = np.array([ox, oy], np.float32)
        for b, kp, score in weighted_nms(boxes, kps, scores):
            x0, y0 = (b[:2] * n - offset) / scale
            x1, y1 = (b[2:] * n - offset) / scale
            x0, y0, x1, y1 = max(0.0, x0), max(0.0, y0), min(float(w), x1), min(float(h), y1)
            if min(x1 - x0, y1 - y0) < self.min_size:
                continue
            faces.append(Face((int(round(x0)), int(round(y0)), int(round(x1 - x0)), int(round(y1 - y0))),
                              score, ((kp * n - offset) / scale).astype(np.float32)))
        return _largest_first(faces)


def make_detector(name: str = DEFAULT_DETECTOR, min_size: int = 16, detect_width: int = 640,
                  threads: int | None = None, fallback: bool = True):
    """A face detector by ``--detector`` name.

    Args:
        name: one of :data:`DETECTORS`.
        min_size: smallest face kept, pixels of the original image.
        detect_width: YuNet and Haar search a copy scaled down to this width.
        threads: BlazeFace's interpreter threads.
        fallback: where a DNN detector cannot run (no interpreter, an OpenCV
            without FaceDetectorYN, a damaged model file), use Haar instead
            and say so on stderr; else raise.

    Raises:
        UsageError: an unknown name.
        HappysadError: the detector cannot be built (and no fallback).
    """
    if name not in DETECTORS:
        raise UsageError(f"unknown face detector {name!r}; choose one of {', '.join(DETECTORS)}")
    try:
        if name == "yunet":
            return YuNetDetector(detect_width=detect_width, min_size=min_size)
        if name.startswith("blazeface"):
            return BlazeFaceDetector(name, threads=threads, min_size=min_size)
    except HappysadError as exc:
        if not fallback:
            raise
        import sys
        print(f"happysad: warning: {exc}; falling back to --detector haar", file=sys.stderr)
    return HaarDetector(max(min_size, 32), detect_width)


#: How a face is framed for the classifier, chosen on wild-dev with the
#: demo model (README, "Faces in ordinary photos"): the square crop's side
#: is the mean of the detector box's width and height times (1 + 2 *
#: margin), its centre the box's centre moved down by ``shift`` times the
#: side. YuNet's boxes are taller than wide; FER2013's faces are square
#: crops about as wide as the face: of the framings tried (margin -0.1..0.1,
#: shift 0 or 0.05, side from the longer side, the mean or the width) this
#: one was right most often where a face was found (92.4% against 88.9% for
#: the earlier 0.1 margin on the longer side).
DEFAULT_FACE_MARGIN = 0.0
DEFAULT_FACE_SHIFT = 0.0
#: Largest tilt levelled, degrees; beyond it the eye keypoints are more
#: likely wrong than the head that tilted.
MAX_LEVEL_DEG = 45.0


def eye_angle(face: Face) -> float:
    """The tilt of the line from the subject's right eye to the left eye,
    degrees, counter-clockwise positive in image coordinates; 0 with no
    keypoints or beyond :data:`MAX_LEVEL_DEG`."""
    if face.keypoints is None:
        return 0.0
    (rx, ry), (lx, ly) = face.keypoints[0], face.keypoints[1]
    angle = math.degrees(math.atan2(ly - ry, lx - rx))
    return angle if abs(angle) <= MAX_LEVEL_DEG else 0.0


def face_crop(image: np.ndarray, face: Face, input_size: tuple[int, int],
              margin: float = DEFAULT_FACE_MARGIN, shift: float = DEFAULT_FACE_SHIFT,
              level: bool = True) -> np.ndarray:
    """The face as the classifier wants it: levelled, square, framed like the
    training faces.

    The crop is a square of side S = (w + h) / 2 * (1 + 2 * margin) about the
    box centre (moved down by shift * S), rotated so the eyes lie on a
    horizontal line (when the face has keypoints and ``level``). It is
    sampled at k times the model input, k = round(S / input width) >= 1,
    so :func:`edge.preprocess` then shrinks it by a whole factor (INTER_AREA
    averaging whole k x k blocks). Parts outside the image repeat its edge.
    The one crop function serves ``classify``, ``camera`` and evaluation.

    Args:
        image: uint8 (H, W) gray or (H, W, 3) BGR.
        input_size: the model's (height, width).

    Returns:
        uint8 (k*height, k*width) or (k*height, k*width, 3), same channels as ``image``.
    """
    x, y, w, h = face.box
    side = max((w + h) / 2, 1) * (1 + 2 * margin)
    cx, cy = x + w / 2, y + h / 2
    angle = eye_angle(face) if level else 0.0
    # The shift is along the face's own vertical axis, so a tilted face
    # moves towards its chin, not straight down the image.
    rad = math.radians(angle)
    cx, cy = cx - math.sin(rad) * shift * side, cy + math.cos(rad) * shift * side
    in_h, in_w = input_size
    k = max(1, round(side / in_w))
    out_w, out_h = k * in_w, k * in_h
    # Rotate by the eye angle about the crop centre, scale the square to
    # the output, and move the centre to the output's centre.
    m = cv2.getRotationMatrix2D((cx, cy), angle, out_w / side)
    m[0, 2] += out_w / 2 - cx
    m[1, 2] += out_h / 2 - cy
    interp = cv2.INTER_LINEAR if out_w >= side * 0.75 else cv2.INTER_AREA
    return cv2.warpAffine(image, m, (out_w, out_h), flags=interp, borderMode=cv2.BORDER_REPLICATE)
