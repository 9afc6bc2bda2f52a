"""Load a model once, classify many images or frames."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from happysad.edge.errors import HappysadError, UsageError
from happysad.edge.faces import DEFAULT_DETECTOR, Box, Face, make_detector, plausible
from happysad.edge.faces.crop import face_crop
from happysad.edge.metrics import class_probabilities, decide, tied
from happysad.edge.reading import read_regular
from happysad.edge.runtime.backends import Backend, load_backend, model_format
from happysad.edge.runtime.embedding import read_onnx_metadata, read_tflite_metadata
from happysad.edge.runtime.metadata import UNCERTAIN, ModelMetadata
from happysad.edge.runtime.prediction import Prediction
from happysad.edge.runtime.preprocess import channels_of, preprocess

#: ``tta`` choices: none, or the face and its mirror image averaged (two inferences).
TTA_MODES = ("none", "flip")


def read_metadata(path: str | os.PathLike) -> ModelMetadata:
    """Read the metadata embedded in a .tflite or .onnx model file.

    Raises:
        HappysadError: the file is missing, unreadable, or carries no valid metadata.
    """
    fmt = model_format(path)
    if fmt == "tflite":
        return read_tflite_metadata(path)
    from happysad.edge.runtime.backends import OnnxBackend

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
    """An image classifier (happy/sad, or any labels its metadata names),
    loaded once, ready for many images.

    Args:
        model_path: a .tflite or .onnx file exported by happysad-export.
        threads: interpreter threads (None: the interpreter's default).
        backend: force ``litert``, ``tflite-runtime`` or ``onnxruntime``.
        detector: a name from :data:`edge.faces.DETECTORS` or a detector
            object (anything with ``detect(image) -> list[Face]``); a named
            one is created on first need.
        min_confidence: a score 0..1 under which the label is
            ``"uncertain"``; ``"auto"`` takes the one the model's metadata
            suggests (chosen on validation data at export); None or 0: off.
        tta: ``"none"`` or ``"flip"``: average the scores of the face and
            its mirror image (two inferences per face).
        public_key: an Ed25519 public key (:func:`edge.runtime.signing.load_public_key`):
            the file must carry a matching ``MODEL.sig``, checked before any
            interpreter reads it; None: no signature asked for.

    Raises:
        HappysadError: the file is missing, not a model, carries no valid
            metadata, its input or output shape disagrees with its metadata,
            or a public key is given and the file is unsigned or wrongly signed.
        ValueError: ``min_confidence`` or ``tta`` is not one of the values above.
    """

    def __init__(
        self,
        model_path: str | os.PathLike,
        threads: int | None = None,
        backend: str | None = None,
        detector=DEFAULT_DETECTOR,
        min_confidence: float | str | None = None,
        tta: str = "none",
        public_key=None,
    ):
        if tta not in TTA_MODES:
            raise ValueError(f"tta={tta!r} is not one of {TTA_MODES}")
        self.path = Path(model_path)
        self.file_stamp = stat_stamp(self.path)  # which file was loaded, for noticing a replacement
        self.public_key = public_key
        # A link (an install's DIR/current) is read through once: the file
        # checked is the file loaded, even if the link moves meanwhile.
        real = self.path.resolve() if self.path.is_symlink() else self.path
        fmt = model_format(real)
        # Read once, through the regular-file gate (a FIFO put in the
        # model's place is refused, never waited on), and loaded from those
        # very bytes: a file swapped in after the checks is never what runs.
        content = read_regular(real, "model")
        if public_key is not None:
            from happysad.edge.runtime.signing import verify_file

            verify_file(real, public_key, content=content)
        meta = read_tflite_metadata(real, content) if fmt == "tflite" else None
        self.backend: Backend = load_backend(real, threads, backend, content)
        self.metadata: ModelMetadata = meta or _onnx_metadata(self.backend, self.path)
        channels = channels_of(self.metadata.color)
        expected = (*self.metadata.image_size, channels)
        if tuple(self.backend.input_shape[1:]) != expected:
            raise HappysadError(
                f"{self.path}: model input {self.backend.input_shape[1:]} does not "
                f"match its metadata {expected}; re-export the model"
            )
        units = 1 if self.metadata.output == "sigmoid" else len(self.metadata.labels)
        if tuple(self.backend.output_shape) not in ((1, units), (units,)):
            raise HappysadError(
                f"{self.path}: model output {self.backend.output_shape} does not give "
                f"{units} {self.metadata.output} score{'s' * (units > 1)} for "
                f"{len(self.metadata.labels)} labels; re-export the model"
            )
        self.labels = self.metadata.labels
        if min_confidence == "auto":
            min_confidence = self.metadata.min_confidence
        elif isinstance(min_confidence, str) or not 0.0 <= (min_confidence or 0.0) <= 1.0:
            raise ValueError(f"min_confidence={min_confidence!r} is not 'auto' or a number in 0..1")
        self.min_confidence = float(min_confidence or 0.0)
        self.tta = tta
        self._self_test()
        self._detector = detector if detector is not None else DEFAULT_DETECTOR
        self._threads = threads

    def _self_test(self) -> None:
        """One inference on a mid-grey image before any real one: a model
        with NaN weights, or one that fails at its first invoke, is refused
        at load, not at the first frame.

        Raises:
            HappysadError: the inference fails or gives a non-finite score.
        """
        h, w = self.metadata.image_size
        pixels = np.full((h, w, channels_of(self.metadata.color)), 128, np.uint8)
        try:
            out = self.backend.run(pixels)
        except Exception as exc:  # interpreters raise their own types
            raise HappysadError(
                f"{self.path}: the model fails its first inference ({type(exc).__name__}); export it again"
            ) from None
        if not np.all(np.isfinite(out)):
            raise HappysadError(
                f"{self.path}: the model gives a non-finite score (NaN or infinity); "
                "its weights are broken; export it again"
            )

    @property
    def detector(self):
        """The face detector, created on first use."""
        if isinstance(self._detector, str):
            self._detector = make_detector(self._detector, threads=self._threads)
        return self._detector

    def scores(self, pixels: np.ndarray) -> np.ndarray:
        """Class probabilities for one preprocessed input (with ``tta="flip"``,
        the mean of the input's and its mirror image's).

        Args:
            pixels: uint8 (H, W, C) from :func:`edge.runtime.preprocess` with this
                model's size and color.

        Returns:
            float32 array (C,): p(labels[i]) in label order, summing to 1.
        """
        s = self.scores_from_output(self.backend.run(pixels))
        if self.tta == "flip":
            s = (s + self.scores_from_output(self.backend.run(np.ascontiguousarray(pixels[:, ::-1])))) / 2
        return s

    def scores_from_output(self, output: np.ndarray) -> np.ndarray:
        """Class probabilities from the backend's float32 output ((1,) for a
        sigmoid model, (C,) for a softmax one), as :meth:`scores` computes
        them (:func:`edge.metrics.class_probabilities`); for timing the
        stages apart.

        Returns:
            float32 array (C,): p(labels[i]) in label order.
        """
        return class_probabilities(output, self.metadata.output)

    def predict_index(self, scores: np.ndarray) -> int:
        """Class index for one image's scores (C,): the model's threshold with
        two classes, the largest score with more (:func:`edge.metrics.decide`)."""
        return int(decide(scores, self.metadata.threshold))

    def label_of(self, scores: np.ndarray) -> tuple[str, float]:
        """(label, confidence) for one image's scores (C,): the predicted
        class and its score, or ``"uncertain"`` and that score when it is
        under :attr:`min_confidence` or the two best of three or more
        scores are equal (:func:`edge.metrics.tied`: an int8 model can give
        two classes one output step, and the first of equals would always
        win, a bias towards the first labels)."""
        idx = self.predict_index(scores)
        confidence = float(scores[idx])
        unsure = confidence < self.min_confidence or bool(tied(scores))
        return (UNCERTAIN if unsure else self.labels[idx]), confidence

    def classify(self, image: np.ndarray, face: Box | Face | None = None, timings: dict | None = None) -> Prediction:
        """Classify a whole image (or an already cropped face).

        Args:
            image: uint8 (H, W) gray or (H, W, 3) BGR.
            face: the box or :class:`Face` to report in the result (the
                caller cropped it).
            timings: stage times (ms) measured so far, merged into the result.

        Returns:
            a :class:`Prediction`.
        """
        t0 = time.perf_counter()
        pixels = preprocess(image, self.metadata.image_size, self.metadata.color)
        t1 = time.perf_counter()
        s = self.scores(pixels)
        t2 = time.perf_counter()
        label, confidence = self.label_of(s)
        ms = dict(timings or {})
        ms["preprocess"] = (t1 - t0) * 1e3
        ms["inference"] = (t2 - t1) * 1e3
        ms["total"] = ms.get("detect", 0.0) + ms.get("crop", 0.0) + (time.perf_counter() - t0) * 1e3
        f = Face.of(face) if face is not None else None
        return Prediction(
            label,
            confidence,
            {name: float(v) for name, v in zip(self.labels, s)},
            f.box if f else None,
            ms,
            f.keypoints if f else None,
            f.score if f and f.keypoints is not None else None,
        )

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

    def detect_faces(self, frame: np.ndarray, largest_only: bool = True) -> tuple[list[Face], float]:
        """Find the faces in a frame, timed.

        Args:
            frame: uint8 (H, W) gray or (H, W, 3) BGR.
            largest_only: keep only the largest face.

        Returns:
            (faces in frame pixels, largest first; the detection time in ms,
            spent whether a face was found or not).
        """
        t0 = time.perf_counter()
        faces = self.detector.detect(frame)
        return (faces[:1] if largest_only else faces), (time.perf_counter() - t0) * 1e3

    def crop_face(self, frame: np.ndarray, face: Face | Box) -> np.ndarray:
        """The face cut out, levelled and framed as this model's metadata
        says (``face_margin``, ``face_shift``): :func:`edge.faces.crop.face_crop`.

        Raises:
            UsageError: the box is not on the frame (:func:`edge.faces.plausible`).
        """
        face, (h, w) = Face.of(face), frame.shape[:2]
        if not plausible(face.box, frame.shape):
            raise UsageError(f"face box {tuple(face.box)} is not on the {w}x{h} frame: give (x, y, w, h) in its pixels")
        return face_crop(frame, face, self.metadata.image_size, self.metadata.face_margin, self.metadata.face_shift)

    def classify_boxes(self, frame: np.ndarray, faces: list, detect_ms: float = 0.0) -> list[Prediction]:
        """Classify each detected face of a frame.

        Args:
            frame: uint8 (H, W) gray or (H, W, 3) BGR.
            faces: :class:`Face` records (or bare (x, y, w, h) boxes) from
                :meth:`detect_faces`; each is cropped by :meth:`crop_face`.
            detect_ms: the detection time, carried into each prediction's timings.

        Returns:
            one :class:`Prediction` per face, in order.
        """
        results = []
        for face in faces:
            face = Face.of(face)
            t0 = time.perf_counter()
            region = self.crop_face(frame, face)
            crop_ms = (time.perf_counter() - t0) * 1e3
            results.append(self.classify(region, face=face, timings={"detect": detect_ms, "crop": crop_ms}))
        return results

    def classify_photo(self, image: np.ndarray, faces: str = "largest", no_face: str = "whole") -> list[Prediction]:
        """Classify a photo the way ``happysad-edge classify`` does.

        An image no larger than the model input is taken as a face crop
        already and classified whole. A larger one is searched for faces:
        the largest (``faces="largest"``) or each (``"all"``) is classified.
        With no face found, ``no_face="whole"`` classifies the whole image
        (its prediction's ``basis`` is ``"whole-image"``, ``face`` None) and
        ``"skip"`` gives no prediction.

        Returns:
            predictions, largest face first; empty only with ``no_face="skip"``.

        Raises:
            ValueError: ``faces`` or ``no_face`` is not one of the values above.
        """
        if faces not in ("largest", "all") or no_face not in ("whole", "skip"):
            raise ValueError(f"faces={faces!r} or no_face={no_face!r} is not supported")
        height, width = self.metadata.image_size
        if image.shape[0] <= height and image.shape[1] <= width:
            return [self.classify(image)]
        found, detect_ms = self.detect_faces(image, largest_only=faces == "largest")
        if found:
            return self.classify_boxes(image, found, detect_ms)
        return [self.classify(image, timings={"detect": detect_ms})] if no_face == "whole" else []

    def classify_image(self, image: np.ndarray) -> Prediction:
        """The largest face of a photo classified, else the whole photo
        (:meth:`classify_photo` with its defaults)."""
        return self.classify_photo(image)[0]
