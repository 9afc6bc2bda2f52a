"""Load a model once, classify many images or frames."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .backends import Backend, load_backend, model_format
from .errors import HappysadError
from .faces import Box, FaceDetector, crop, expand_box
from .metadata import ModelMetadata, read_onnx_metadata, read_tflite_metadata
from .preprocess import preprocess


@dataclass(frozen=True)
class Prediction:
    """One classified image or face.

    Attributes:
        label: the predicted class name.
        confidence: the predicted class's score, 0..1.
        scores: {label: probability} for every class, summing to 1.
        face: (x, y, w, h) of the detected face in the input image's pixels,
            or None when the whole image was classified.
        timings: per stage, in ms: ``detect`` (when faces were searched),
            ``preprocess``, ``inference``, ``total``.
    """

    label: str
    confidence: float
    scores: dict
    face: Box | None = None
    timings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready dict: label, confidence, scores, face (list or null), ms."""
        return {"label": self.label, "confidence": round(self.confidence, 6),
                "scores": {k: round(v, 6) for k, v in self.scores.items()},
                "face": list(self.face) if self.face is not None else None,
                "ms": round(self.timings.get("total", 0.0), 3)}


def read_metadata(path: str | os.PathLike) -> ModelMetadata:
    """Read the metadata embedded in a .tflite or .onnx model file.

    Raises:
        HappysadError: the file is missing, unreadable, or carries no valid metadata.
    """
    fmt = model_format(path)
    if fmt == "tflite":
        return read_tflite_metadata(path)
    from .backends import OnnxBackend
    return _onnx_metadata(OnnxBackend(path), path)


def _onnx_metadata(backend, path) -> ModelMetadata:
    custom = backend.session.get_modelmeta().custom_metadata_map
    return read_onnx_metadata(custom, str(path))


def stat_stamp(path: Path):
    """(inode, size, mtime in ns) of a file, or None when it cannot be read.

    A file renamed over ``path`` changes the inode; one rewritten in place
    changes the size or the mtime."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


class Classifier:
    """A happy/sad model, loaded once, ready for many images.

    Args:
        model_path: a .tflite or .onnx file exported by happysad-export.
        threads: interpreter threads (None: the interpreter's default).
        backend: force ``litert``, ``tflite-runtime`` or ``onnxruntime``.
        detector: face detector to use; created on first need when None.

    Raises:
        HappysadError: the file is missing, not a model, carries no valid
            metadata, or its input shape disagrees with its metadata.
    """

    def __init__(self, model_path: str | os.PathLike, threads: int | None = None,
                 backend: str | None = None, detector: FaceDetector | None = None):
        self.path = Path(model_path)
        self.file_stamp = stat_stamp(self.path)  # which file was loaded, for noticing a replacement
        fmt = model_format(self.path)
        meta = read_tflite_metadata(self.path) if fmt == "tflite" else None
        self.backend: Backend = load_backend(self.path, threads, backend)
        self.metadata: ModelMetadata = meta or _onnx_metadata(self.backend, self.path)
        channels = 1 if self.metadata.color == "gray" else 3
        expected = (*self.metadata.image_size, channels)
        if tuple(self.backend.input_shape[1:]) != expected:
            raise HappysadError(f"{self.path}: model input {self.backend.input_shape[1:]} does not "
                                f"match its metadata {expected}; re-export the model")
        self.labels = self.metadata.labels
        self._detector = detector

    @property
    def detector(self) -> FaceDetector:
        """The face detector, created on first use."""
        if self._detector is None:
            self._detector = FaceDetector()
        return self._detector

    def scores(self, pixels: np.ndarray) -> np.ndarray:
        """Class probabilities for one preprocessed input.

        Args:
            pixels: uint8 (H, W, C) from :func:`edge.preprocess` with this
                model's size and color.

        Returns:
            float32 array (2,): [p(labels[0]), p(labels[1])].
        """
        return self.scores_from_output(self.backend.run(pixels))

    def scores_from_output(self, output: np.ndarray) -> np.ndarray:
        """Class probabilities from the backend's float32 output (1,), as
        :meth:`scores` computes them; for timing the stages apart.

        Returns:
            float32 array (2,): [p(labels[0]), p(labels[1])].
        """
        p = float(np.clip(output[0], 0.0, 1.0))
        return np.array([1.0 - p, p], dtype=np.float32)

    def predict_index(self, scores: np.ndarray) -> int:
        """Class index for a score pair, applying the model's threshold."""
        return int(scores[1] >= self.metadata.threshold)

    def classify(self, image: np.ndarray, face: Box | None = None,
                 timings: dict | None = None) -> Prediction:
        """Classify a whole image (or an already cropped face).

        Args:
            image: uint8 (H, W) gray or (H, W, 3) BGR.
            face: box to report in the result (the caller cropped it).
            timings: stage times (ms) measured so far, merged into the result.

        Returns:
            a :class:`Prediction`.
        """
        t0 = time.perf_counter()
        pixels = preprocess(image, self.metadata.image_size, self.metadata.color)
        t1 = time.perf_counter()
        s = self.scores(pixels)
        t2 = time.perf_counter()
        idx = self.predict_index(s)
        ms = dict(timings or {})
        ms["preprocess"] = (t1 - t0) * 1e3
        ms["inference"] = (t2 - t1) * 1e3
        ms["total"] = ms.get("detect", 0.0) + (time.perf_counter() - t0) * 1e3
        return Prediction(self.labels[idx], float(s[idx]),
                          {name: float(v) for name, v in zip(self.labels, s)}, face, ms)

    def classify_faces(self, frame: np.ndarray, largest_only: bool = True) -> list[Prediction]:
        """Detect faces in a frame and classify each (or the largest).

        Args:
            frame: uint8 (H, W) gray or (H, W, 3) BGR.
            largest_only: classify only the largest face.

        Returns:
            one :class:`Prediction` per face, largest first; empty when no
            face is found.
        """
        return self.classify_boxes(frame, *self.detect_faces(frame, largest_only))

    def detect_faces(self, frame: np.ndarray, largest_only: bool = True) -> tuple[list[Box], float]:
        """Find the faces in a frame, timed.

        Args:
            frame: uint8 (H, W) gray or (H, W, 3) BGR.
            largest_only: keep only the largest face.

        Returns:
            (boxes as (x, y, w, h) in frame pixels, largest first; the
            detection time in ms, spent whether a face was found or not).
        """
        t0 = time.perf_counter()
        boxes = self.detector.detect(frame)
        return (boxes[:1] if largest_only else boxes), (time.perf_counter() - t0) * 1e3

    def classify_boxes(self, frame: np.ndarray, boxes: list[Box], detect_ms: float = 0.0) -> list[Prediction]:
        """Classify each detected face of a frame.

        Args:
            frame: uint8 (H, W) gray or (H, W, 3) BGR.
            boxes: faces from :meth:`detect_faces`; each is widened by the
                model's face margin before cropping, as in training.
            detect_ms: the detection time, carried into each prediction's timings.

        Returns:
            one :class:`Prediction` per box, in order.
        """
        height, width = frame.shape[:2]
        results = []
        for box in boxes:
            region = expand_box(box, self.metadata.face_margin, width, height, self.metadata.image_size)
            results.append(self.classify(crop(frame, region), face=box,
                                         timings={"detect": detect_ms}))
        return results

    def classify_image(self, image: np.ndarray) -> Prediction:
        """Classify a photo the way ``happysad-edge classify`` does.

        An image larger than the model input is searched for faces and the
        largest is classified; with no face found, or for an image no larger
        than the input (already a face crop), the whole image is classified.
        """
        height, width = self.metadata.image_size
        if image.shape[0] <= height and image.shape[1] <= width:
            return self.classify(image)
        boxes, detect_ms = self.detect_faces(image, largest_only=True)
        if boxes:
            return self.classify_boxes(image, boxes, detect_ms)[0]
        return self.classify(image, timings={"detect": detect_ms})
