"""Verification of an exported file against the Keras model it came from.

Both see the same validation images through the same preprocessing
(:func:`edge.runtime.preprocess`); the file runs in the edge runtime
(:class:`edge.Classifier`), exactly as a device would run it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from happysad.edge import Classifier, HappysadError, load_image, preprocess
from happysad.edge.console import progress
from happysad.edge.dataset import split_items, split_votes
from happysad.edge.metrics import class_probabilities, decide, suggest_min_confidence
from happysad.edge.votes import emotion_of, majorities

#: The split every file is verified on. The test split stays untouched by
#: the export, so the benchmark's figures on it remain an independent check.
VERIFY_SPLIT = "val"


def validation_set(split: dict, part: str = VERIFY_SPLIT) -> tuple[np.ndarray, np.ndarray]:
    """The images and labels of one part of a split, preprocessed.

    Returns:
        (pixels, labels): uint8 (N, H, W, C) pixels 0..255 (NHWC, the model
        input), int64 (N,) class indices into ``split["labels"]``: the
        folder labels, or for a run on crowd votes the FER+ majority (faces
        whose majority is none of the model's classes left out).

    Raises:
        HappysadError: the part is empty, or an image no longer decodes.
    """
    items = split_items(split, part)
    votes = split_votes(split, part)
    if votes is not None:
        # A run trained on crowd votes is verified on the labels it learnt:
        # the FER+ majority, on the faces whose majority is one of its classes.
        emotions = [emotion_of(lab) for lab in split["labels"]]
        truth = [emotions.index(m) if m in emotions else -1 for m in majorities(votes)]
        items = [(path, t) for (path, _), t in zip(items, truth) if t >= 0]
    if not items:
        raise HappysadError(
            f"the split has no {part} images to verify the exported files with; "
            "train again with a non-zero validation ratio"
        )
    size, color = tuple(split["image"]["size"]), split["image"]["color"]
    bar = progress(len(items), f"reading the {part} split")
    pixels = []
    for path, _ in items:
        bar.update()
        pixels.append(preprocess(load_image(path), size, color))
    bar.close()
    pixels = np.stack(pixels)
    return pixels, np.array([label for _, label in items], dtype=np.int64)


def output_kind(model) -> str:
    """``"sigmoid"`` for a Keras model with one output unit, else ``"softmax"``
    (:data:`edge.runtime.metadata.OUTPUTS`)."""
    return "sigmoid" if model.output_shape[-1] == 1 else "softmax"


def keras_probabilities(model, pixels: np.ndarray) -> np.ndarray:
    """The Keras model's class probabilities for each image.

    Args:
        model: the run's Keras model (it rescales 0..255 to 0..1 itself).
        pixels: uint8 (N, H, W, C).

    Returns:
        float32 (N, C): p(labels[i]) per image (:func:`edge.metrics.class_probabilities`).
    """
    raw = model.predict(pixels.astype(np.float32), batch_size=256, verbose=0)
    return class_probabilities(raw, output_kind(model))


def file_probabilities(clf: Classifier, pixels: np.ndarray) -> np.ndarray:
    """The exported file's class probabilities per image, one image per
    invoke as on a device.

    Args:
        clf: the file loaded by the edge runtime.
        pixels: uint8 (N, H, W, C).

    Returns:
        float32 (N, C).
    """
    return np.array([clf.scores(x) for x in pixels], dtype=np.float32).reshape(len(pixels), -1)


def onnx_probabilities(path, pixels: np.ndarray, batch: int = 256) -> np.ndarray:
    """An ONNX file's class probabilities per image, ``batch`` images per run.

    Each image's arithmetic is the same as one image per run, at a fraction
    of the per-call overhead: for trying several quantizations of a file,
    and for running it under CPU emulation, where that overhead is large.

    Args:
        path: a float or QDQ ONNX file with the ``image`` input (float32 NHWC 0..255).
        pixels: uint8 (N, H, W, C).

    Returns:
        float32 (N, C); a one-unit output is read as a sigmoid.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = pixels.astype(np.float32)
    raw = np.concatenate(
        [
            session.run(None, {"image": x[i : i + batch]})[0].reshape(len(x[i : i + batch]), -1)
            for i in range(0, len(x), batch)
        ]
    )
    return class_probabilities(raw, "sigmoid" if raw.shape[1] == 1 else "softmax")


def compare(
    reference: np.ndarray, probs: np.ndarray, labels: np.ndarray, threshold: float = 0.5, split: str = VERIFY_SPLIT
) -> dict:
    """Figures of a file against the float reference on the same images.

    Args:
        reference: float (N, C) the Keras model's class probabilities.
        probs: float (N, C) the file's.
        labels: int (N,) true class indices.
        threshold: the two-class decision threshold (:func:`edge.metrics.decide`).
        split: name of the part the images come from, recorded as is.

    Returns:
        dict: ``split``, ``n``; ``float_accuracy`` and ``accuracy`` (the
        reference's and the file's share of correct labels, 0..1);
        ``drop_pp`` = (float_accuracy - accuracy) * 100, percentage points,
        positive when the file is worse; ``agreement`` (share of images where
        both give the same label, 0..1); ``max_abs_diff`` (largest
        |probs - reference|, in probability units).
    """
    ref_label = decide(reference, threshold)
    label = decide(probs, threshold)
    float_acc = float(np.mean(ref_label == labels))
    acc = float(np.mean(label == labels))
    return {
        "split": split,
        "n": int(len(labels)),
        "float_accuracy": round(float_acc, 6),
        "accuracy": round(acc, 6),
        "drop_pp": round((float_acc - acc) * 100, 4),
        "agreement": round(float(np.mean(label == ref_label)), 6),
        "max_abs_diff": round(float(np.max(np.abs(probs - reference))), 6),
    }


@dataclass
class Reference:
    """What every exported file is measured against: the validation images,
    the Keras model's probabilities on them and its figures."""

    pixels: np.ndarray
    labels: np.ndarray
    probs: np.ndarray
    threshold: float
    figures: dict
    suggestion: dict

    @property
    def judge(self) -> tuple:
        """(pixels, labels, Keras probabilities, threshold), as :func:`model_body` takes them."""
        return self.pixels, self.labels, self.probs, self.threshold


def reference(model, split: dict, metrics: dict, run_dir: Path, min_accuracy: float) -> Reference:
    """The Keras model run on the validation split, checked before anything is converted.

    Raises:
        HappysadError: a non-finite output, or accuracy under ``min_accuracy``.
    """
    pixels, labels = validation_set(split)
    probs = keras_probabilities(model, pixels)
    if not np.all(np.isfinite(probs)):
        bad = int(np.sum(~np.isfinite(probs)))
        raise HappysadError(
            f"{run_dir / 'model.keras'}: gives a non-finite score (NaN or infinity) on {bad} "
            f"of {len(probs)} validation images; its weights are broken; train it again"
        )
    threshold = float(metrics.get("threshold", 0.5))
    figures = compare(probs, probs, labels, threshold)
    if figures["float_accuracy"] < min_accuracy:
        raise HappysadError(
            f"{run_dir / 'model.keras'}: the Keras model is right on only {figures['float_accuracy']:.1%} "
            f"of the {len(labels)} validation images, under --min-accuracy {min_accuracy:g} "
            "(near chance: trained too briefly, or on mislabelled data); train it longer, or pass "
            "--min-accuracy 0 to export it anyway"
        )
    suggestion = suggest_min_confidence(labels, probs, threshold)
    return Reference(pixels, labels, probs, threshold, figures, suggestion)


def missed_by(figures: dict, max_drop: float) -> float | None:
    """How many percentage points a file's drop exceeds ``max_drop`` by; None if it does not."""
    over = figures["drop_pp"] - max_drop
    return round(over, 4) if over > 0 else None
