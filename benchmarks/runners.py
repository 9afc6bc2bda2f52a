"""One interface over the models a benchmark compares.

:class:`EdgeRunner` measures a .tflite or .onnx file through
:class:`edge.Classifier`, the code a device runs. :class:`KerasRunner` runs
the float Keras model the files were exported from, as the reference every
edge figure can be read against; it imports Keras (and so TensorFlow) only
when it is built.

Each runner splits one image's path into three stages, timed apart:

- ``preprocess``: :func:`edge.runtime.preprocess` of the decoded image, then the
  write into the input tensor (quantized with the input's scale and zero
  point for an int8 model);
- ``invoke``: the interpreter run;
- ``postprocess``: the read of the output (dequantized for an int8 model),
  the class scores and the decision threshold.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from happysad.edge import Classifier, HappysadError, preprocess
from happysad.edge.errors import UsageError
from happysad.edge.faces import DEFAULT_DETECTOR, make_detector
from happysad.edge.faces.crop import face_region
from happysad.edge.metrics import class_probabilities, decide
from happysad.edge.runtime.metadata import ModelMetadata

from .cost import file_size_mb, keras_cost, onnx_cost, tflite_cost
from .timing import time_once

TRAIN_EXTRA = "pip install 'happysad[train]' (the train extra)"


def is_keras_path(path: str | os.PathLike) -> bool:
    """True for a ``.keras`` file (the float model happysad-train writes)."""
    return Path(path).suffix.lower() == ".keras"


def import_keras():
    """Import Keras, or say how to install it.

    Raises:
        HappysadError: TensorFlow/Keras is not installed.
    """
    try:
        import keras
    except ImportError:
        raise HappysadError(
            f"a .keras model needs TensorFlow; {TRAIN_EXTRA}, or benchmark the exported .tflite/.onnx files"
        ) from None
    return keras


class EdgeRunner:
    """A .tflite or .onnx file, loaded through :class:`edge.Classifier`.

    Attributes:
        path, name (file name), format (``tflite-int8``...), backend (runtime name),
        threads (None: the interpreter's default), load_ms (constructing the
        Classifier: reading the file, its metadata, preparing the interpreter),
        labels, size (H, W), color, size_mb, params and macs (None where not
        available; see :mod:`benchmarks.cost`).

    Raises:
        HappysadError: the file cannot be loaded (see :class:`edge.Classifier`).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        threads: int | None = None,
        backend: str | None = None,
        detector: str = DEFAULT_DETECTOR,
        tta: str = "none",
    ):
        self.path = Path(path)
        self.threads = threads
        self.load_ms, self.clf = time_once(lambda: Classifier(path, threads, backend, detector, tta=tta))
        meta = self.clf.metadata
        self.labels = list(meta.labels)
        self.size, self.color = meta.image_size, meta.color
        self.name = self.path.name
        self.format = meta.extra.get("format", self.path.suffix[1:])
        self.backend = self.clf.backend.name
        self.size_mb = file_size_mb(path)
        self._cost = None

    def cost(self) -> tuple[int | None, int | None]:
        """(parameters, MACs per image), read from the graph once."""
        if self._cost is None:
            if self.clf.backend.name == "onnxruntime":
                self._cost = onnx_cost(self.path)
            else:  # the TFLite interpreter edge's backend holds
                self._cost = tflite_cost(getattr(self.clf.backend, "interpreter", None))
        return self._cost

    def stages(self, image: np.ndarray) -> tuple:
        """The three stage callables for one decoded image (see module doc)."""
        clf, backend = self.clf, self.clf.backend
        meta = clf.metadata

        if clf.tta != "none":
            # Both inferences (and writing the mirrored input) count as invoke.
            def pre_tta():
                return preprocess(image, meta.image_size, meta.color)

            return pre_tta, clf.scores, clf.predict_index

        def pre():
            backend.set_input(preprocess(image, meta.image_size, meta.color))

        def invoke(_):
            backend.invoke()

        def post(_):
            return clf.predict_index(clf.scores_from_output(backend.get_output()))

        return pre, invoke, post

    def predict(self, images: list) -> np.ndarray:
        """Class indices (int64 (N,)) the way ``happysad-edge classify`` gives
        them: the largest face of an image larger than the input, else the whole."""
        return self.predict_scores(images)[0]

    def predict_scores(self, images: list) -> tuple[np.ndarray, np.ndarray]:
        """(class indices int64 (N,) as :meth:`predict`, float32 (N, C)
        class probabilities in ``labels`` order), in one pass."""
        preds = [self.clf.classify_image(im) for im in images]
        probs = np.array([[p.scores[lab] for lab in self.labels] for p in preds], dtype=np.float32)
        probs = probs.reshape(len(preds), len(self.labels))
        # The class index even where the label is "uncertain" (a tie): the
        # folder-label figures keep their first-of-equals rule; the FER+
        # figures count a tie as uncertain (edge.metrics.vote_metrics).
        idx = np.array([self.clf.predict_index(p) for p in probs], dtype=np.int64)
        return idx, probs


class KerasRunner:
    """The float Keras model (``RUN_DIR/model.keras``), loaded with safe_mode.

    Its input is float32 NHWC pixels 0..255 (the model rescales by 1/255
    itself); size and color come from its input shape (1 channel: gray),
    labels from the labelled data, and the decision threshold and face margin
    are the defaults every exported file records. Inference uses
    ``predict_on_batch``, Keras' compiled path (a plain ``model(x)`` call
    runs eagerly and is several times slower for one image).

    Attributes: as :class:`EdgeRunner`; backend is ``keras-<backend>``.

    Raises:
        HappysadError: Keras is not installed, or the file does not load.
    """

    threads = None  # TensorFlow fixes its thread pools when it starts

    def __init__(self, path: str | os.PathLike, labels: list[str], detector: str = DEFAULT_DETECTOR):
        keras = import_keras()
        self.path = Path(path)
        if not self.path.is_file():
            raise UsageError(f"{path}: no such model file; check the path")

        def load():
            return keras.saving.load_model(str(path), safe_mode=True, compile=False)

        try:
            self.load_ms, self.model = time_once(load)
        except Exception as exc:  # Keras raises many types for a bad file
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise HappysadError(f"{path}: not a loadable Keras model ({first})") from None
        _, height, width, channels = self.model.input_shape
        units = int(self.model.output_shape[-1])
        self.output = "sigmoid" if units == 1 else "softmax"
        n_classes = 2 if units == 1 else units
        # No data: any names, one per class.
        self.labels = list(labels) if labels is not None else [f"class {i}" for i in range(n_classes)]
        if len(self.labels) != n_classes:
            raise HappysadError(
                f"{path}: the model has {n_classes} classes, the data {len(self.labels)} ({', '.join(self.labels)})"
            )
        labels = self.labels
        self.size, self.color = (int(height), int(width)), "gray" if channels == 1 else "rgb"
        self.meta = ModelMetadata(tuple(labels), self.size, self.color, output=self.output)
        self.name = self.path.name
        self.format = "keras-float32"
        self.backend = f"keras-{keras.backend.backend()}"
        self.size_mb = file_size_mb(path)
        self._detector = detector

    def cost(self) -> tuple[int, int]:
        """(parameters, MACs per image); see :func:`benchmarks.cost.keras_cost`."""
        return keras_cost(self.model)

    def _input(self, image: np.ndarray) -> np.ndarray:
        """float32 (1, H, W, C) 0..255 for one decoded image."""
        return preprocess(image, self.size, self.color)[None].astype(np.float32)

    def stages(self, image: np.ndarray) -> tuple:
        """The three stage callables for one decoded image (see module doc)."""
        model, threshold = self.model, self.meta.threshold

        def pre():
            return self._input(image)

        def invoke(x):
            return model.predict_on_batch(x)

        def post(out):
            return int(decide(class_probabilities(np.asarray(out)[0], self.output), threshold))

        return pre, invoke, post

    def _face_or_whole(self, image: np.ndarray) -> np.ndarray:
        """The pixels :func:`edge.faces.crop.face_region` chooses, as the edge runtime does."""
        if isinstance(self._detector, str):
            self._detector = make_detector(self._detector)
        return face_region(image, self._detector, self.size, self.meta.face_margin, self.meta.face_shift)[0]

    def predict(self, images: list, batch_size: int = 256) -> np.ndarray:
        """Class indices (int64 (N,)), in batches of ``batch_size``."""
        return self.predict_scores(images, batch_size)[0]

    def predict_scores(self, images: list, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """(class indices int64 (N,), float32 (N, C) class probabilities), in one pass."""
        x = np.stack([preprocess(self._face_or_whole(im), self.size, self.color) for im in images])
        raw = self.model.predict(x.astype(np.float32), batch_size=batch_size, verbose=0)
        probs = class_probabilities(raw, self.output)
        return decide(probs, self.meta.threshold), probs


def load_runner(
    path: str | os.PathLike,
    labels: list[str],
    threads: int | None = None,
    detector: str = DEFAULT_DETECTOR,
    tta: str = "none",
):
    """An :class:`EdgeRunner`, or a :class:`KerasRunner` for a .keras file
    (which ignores ``threads`` and ``tta``); ``detector`` finds the faces in
    images larger than the model input, for both. ``labels`` None (no data)
    skips the label check. ``tta``: see :class:`edge.Classifier`.

    Raises:
        HappysadError: the model cannot be loaded, or its labels differ from
            the data's.
    """
    if is_keras_path(path):
        return KerasRunner(path, labels, detector)
    runner = EdgeRunner(path, threads, detector=detector, tta=tta)
    if labels is not None and runner.labels != list(labels):
        raise HappysadError(f"{path}: model labels {runner.labels} differ from the data's {list(labels)}")
    return runner
