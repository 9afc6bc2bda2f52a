"""What each exported file says about itself: the metadata fields shared by
every file of a run, and each format's quantization record."""

from __future__ import annotations

import datetime as _dt
import hashlib
from pathlib import Path

from happysad.edge import __version__
from happysad.edge.faces.crop import DEFAULT_FACE_MARGIN, DEFAULT_FACE_SHIFT
from happysad.edge.runtime.metadata import ModelMetadata

from .to_onnx import CALIBRATION_NAMES


def data_fingerprint(split: dict) -> str:
    """sha256 over the sorted sha256 of every image in the split (hex)."""
    digests = sorted(e["sha256"] for part in ("train", "val", "test") for e in split[part])
    return hashlib.sha256("\n".join(digests).encode()).hexdigest()


def base_metadata(split: dict, metrics: dict, run_dir: Path) -> dict:
    """Fields shared by every exported file's metadata."""
    return {
        "run": {
            "name": run_dir.resolve().name,
            "arch": metrics.get("arch"),
            "keras_test_accuracy": metrics.get("accuracy"),
            "keras_test_balanced_accuracy": metrics.get("balanced_accuracy"),
            # 0.5, or the one --tune-threshold chose on the validation split.
            "threshold": float(metrics.get("threshold", 0.5)),
            "data_fingerprint": data_fingerprint(split),
        },
        "package_version": __version__,
        "exported_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }


def file_metadata(
    split, extra: dict, fmt: str, quant: dict, io: tuple, verification: dict | None = None
) -> ModelMetadata:
    """The metadata of one file; ``io`` is (input dtype name, scale, zero point)."""
    size = tuple(split["image"]["size"])
    return ModelMetadata(
        tuple(split["labels"]),
        size,
        split["image"]["color"],
        extra["run"]["threshold"],
        DEFAULT_FACE_MARGIN,
        extra={**extra, "format": fmt, "quantization": quant},
        input_dtype=io[0],
        input_scale=io[1],
        input_zero_point=io[2],
        verification=verification,
        face_shift=DEFAULT_FACE_SHIFT,
        output=extra["run"]["output"],
        min_confidence=extra["run"]["min_confidence"]["min_confidence"],
    )


def quantization_record(fmt: str, opts, samples: int, cache: dict | None = None) -> dict:
    """The ``quantization`` field of a file's metadata: how it was quantized
    (``cache``: what :func:`model_body` recorded, the ``auto`` calibration choice)."""
    cache = cache or {}
    if fmt in ("tflite-float32", "onnx-float32"):
        return {"type": "none"}
    if fmt == "tflite-float16":
        return {
            "type": "float16 weights",
            "weights": "float16",
            "activations": "float32",
            "input": "float32 pixels 0..255",
        }
    if fmt == "tflite-int8":
        feed = "raw pixels - 128" if opts.io_type == "int8" else "raw pixels"
        return {
            "type": "full-integer int8",
            "weights": "int8, per-channel",
            "activations": "int8",
            "input": f"{opts.io_type}, {feed}",
            "calibration": "MinMax",
            "calibration_samples": samples,
        }
    method = cache.get("calibration_chosen", opts.calibration)
    record = {
        "type": "static QDQ",
        "weights": "int8 (7-bit range, reduce_range), " + ("per-channel" if opts.per_channel else "per-tensor"),
        "activations": "int8",
        "input": "float32 pixels 0..255",
        "calibration": CALIBRATION_NAMES[method],
        "calibration_samples": samples,
    }
    if opts.calibration == "auto":
        record["calibration_choice"] = {
            "how": "auto: the method losing least on the validation split",
            "val_accuracy": cache.get("calibration_trials", {}),
        }
    return record
