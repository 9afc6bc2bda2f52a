"""Convert a trained run to float32 and int8 TFLite and ONNX files that
carry their own metadata.

Every file is written atomically; ``manifest.json`` lists each with its size
and sha256.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge import HappysadError, __version__, load_image, preprocess
from edge.dataset import read_split, split_items
from edge.fileio import read_json, write_bytes, write_json
from edge.metadata import ONNX_KEY, ModelMetadata, append_to_tflite, encode

from . import FORMATS
FILENAMES = {"tflite-float32": "model_float32.tflite", "tflite-int8": "model_int8.tflite",
             "onnx-float32": "model_float32.onnx", "onnx-int8": "model_int8.onnx"}
#: ONNX opset: 17 is run by every onnxruntime release of the last three years.
OPSET = 17
#: Default size of the representative dataset. TFLite's post-training
#: quantization guide suggests "around 100-500" samples.
CALIB_SAMPLES = 300


@dataclass
class ExportOptions:
    """Settings of :func:`export_run`.

    Attributes:
        run_dir: folder written by happysad-train.
        out_dir: where to write; default ``run_dir/export``.
        calib_samples: images in the representative dataset, drawn (seeded)
            from the train split only.
        formats: subset of :data:`FORMATS`.
        seed: seed of the calibration draw.
        verbose: show the converters' own output.
    """

    run_dir: str
    out_dir: str | None = None
    calib_samples: int = CALIB_SAMPLES
    formats: tuple = FORMATS
    seed: int = 0
    verbose: bool = False


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def load_run(run_dir: Path):
    """Read a run folder: (keras model, split dict, metrics dict or {}).

    Raises:
        HappysadError: the folder, its model or its split are missing.
    """
    model_path = run_dir / "model.keras"
    if not run_dir.is_dir():
        raise HappysadError(f"{run_dir}: no such run folder; train one with happysad-train DATA_DIR --out {run_dir}")
    if not model_path.is_file():
        raise HappysadError(f"{model_path}: no trained model in this run folder; run happysad-train first")
    split = read_split(run_dir / "split.json")
    metrics = read_json(run_dir / "metrics.json", "metrics file") if (run_dir / "metrics.json").is_file() else {}
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    try:
        model = keras.saving.load_model(model_path, safe_mode=True, compile=False)
    except Exception as exc:  # Keras raises many types for a bad archive
        raise HappysadError(f"{model_path}: cannot load the Keras model ({type(exc).__name__}); "
                            "train the run again") from None
    return model, split, metrics


def calibration_images(split: dict, samples: int, seed: int = 0) -> np.ndarray:
    """The representative dataset: ``samples`` train-split images, preprocessed.

    Returns:
        float32 (N, H, W, C) pixels 0..255, the model's input.

    Raises:
        HappysadError: the split has no train images, or one does not decode.
    """
    items = split_items(split, "train")
    if not items:
        raise HappysadError("the split has no train images to calibrate with")
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(items), size=min(samples, len(items)), replace=False)
    size = tuple(split["image"]["size"])
    color = split["image"]["color"]
    calib = np.stack([preprocess(load_image(items[i][0]), size, color) for i in sorted(pick)]).astype(np.float32)
    # The int8 input's scale and zero point come from the smallest and largest
    # pixel the calibration sees. Pinning that range to the full 0..255 (one
    # pixel each) gives scale 1, zero point -128 on any data, so a device can
    # feed raw pixels minus 128; on real photos, which span 0..255, this
    # changes nothing.
    calib[0].flat[0], calib[0].flat[1] = 0.0, 255.0
    return calib


def data_fingerprint(split: dict) -> str:
    """sha256 over the sorted sha256 of every image in the split (hex)."""
    digests = sorted(e["sha256"] for part in ("train", "val", "test") for e in split[part])
    return hashlib.sha256("\n".join(digests).encode()).hexdigest()


def base_metadata(split: dict, metrics: dict, run_dir: Path) -> dict:
    """Fields shared by every exported file's metadata."""
    return {
        "run": {"name": run_dir.resolve().name, "arch": metrics.get("arch"),
                "keras_test_accuracy": metrics.get("accuracy"),
                "keras_test_balanced_accuracy": metrics.get("balanced_accuracy"),
                "data_fingerprint": data_fingerprint(split)},
        "package_version": __version__,
        "exported_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _metadata(split, extra: dict, fmt: str, quant: dict) -> ModelMetadata:
    size = tuple(split["image"]["size"])
    return ModelMetadata(tuple(split["labels"]), size, split["image"]["color"], 0.5, 0.1,
                         extra={**extra, "format": fmt, "quantization": quant})


@contextlib.contextmanager
def converter_output_held(verbose: bool = False):
    """Hold what the converters print (TensorFlow's C++ log lines, the
    SavedModel signature dump) and show it only if the conversion fails.

    Works on file descriptors 1 and 2, since most of it comes from C++.
    """
    if verbose:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = (os.dup(1), os.dup(2))
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 1)
        os.dup2(held.fileno(), 2)

        def restore():
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)

        try:
            yield
        except BaseException:
            restore()
            held.seek(0)
            sys.stderr.write(held.read().decode(errors="replace")[-20000:])
            raise
        else:
            restore()
        finally:
            os.close(saved[0])
            os.close(saved[1])


def tflite_bytes(model, calib: np.ndarray | None) -> bytes:
    """Convert to a TFLite flatbuffer: float32, or full-integer int8 when
    ``calib`` (float32 NHWC representative dataset) is given.

    Full-integer: int8 weights (per-channel for convolutions) and
    activations, int8 input and output; since the model begins with
    Rescaling(1/255) over a 0..255 calibration range, the input gets scale 1
    and zero point -128, and the output (a probability) scale 1/256.
    """
    import tensorflow as tf
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if calib is not None:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([calib[i:i + 1]] for i in range(len(calib)))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    return conv.convert()


def onnx_float(model):
    """Convert to a float32 ONNX ModelProto with tf2onnx.

    Goes through ``tf2onnx.convert.from_function``: ``from_keras`` fails on
    Keras 3 models. Input ``image``: float32 (N, H, W, C), pixels 0..255;
    one output: float32 (N, 1), the sigmoid probability of ``labels[1]``.
    """
    import logging

    import tensorflow as tf
    import tf2onnx
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name="image")
    fn = tf.function(lambda image: model(image, training=False))
    proto, _ = tf2onnx.convert.from_function(fn, input_signature=[spec], opset=OPSET)
    return proto


def onnx_int8(float_path: Path, out_path: Path, calib: np.ndarray) -> None:
    """Static int8 quantization in QDQ format with onnxruntime.

    Shape inference and graph optimization first (``quant_pre_process``), as
    onnxruntime's quantization guide advises; then int8 weights (per-channel)
    and int8 activations calibrated with MinMax on ``calib``.
    """
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quant_pre_process, quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(calib[i:i + 1] for i in range(len(calib)))

        def get_next(self):
            x = next(self._it, None)
            return None if x is None else {"image": x}

    pre = out_path.with_name(f"{out_path.stem}.pre.onnx")
    quant_pre_process(str(float_path), str(pre))
    quantize_static(str(pre), str(out_path), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    per_channel=True)


def _write_onnx(proto, path: Path, meta: ModelMetadata) -> None:
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = ONNX_KEY, encode(meta).decode()
    proto.producer_name = "happysad"
    write_bytes(path, proto.SerializeToString())


def file_record(path: Path) -> dict:
    """{"size_bytes", "sha256"} of a written file."""
    data = path.read_bytes()
    return {"size_bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def export_run(opts: ExportOptions) -> dict:
    """Write the chosen formats and ``manifest.json`` into the export folder.

    Returns:
        the manifest dict.

    Raises:
        HappysadError: the run folder is incomplete or a file cannot be written.
    """
    run_dir = Path(opts.run_dir)
    out = Path(opts.out_dir) if opts.out_dir else run_dir / "export"
    model, split, metrics = load_run(run_dir)
    calib = calibration_images(split, opts.calib_samples, opts.seed)
    _log(f"representative dataset: {len(calib)} images from the train split")
    extra = base_metadata(split, metrics, run_dir)
    written = {}
    cache = {}
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HappysadError(f"{out}: cannot create the export folder ({exc.strerror or exc})") from None
    for fmt in FORMATS:
        if fmt not in opts.formats:
            continue
        path = out / FILENAMES[fmt]
        _log(f"exporting {fmt} -> {path}")
        with converter_output_held(opts.verbose):
            _export_one(fmt, path, model, calib, split, extra, cache)
        written[FILENAMES[fmt]] = {"format": fmt, **file_record(path)}
    manifest = {"run": str(run_dir.resolve()), "package_version": __version__,
                "exported_at": extra["exported_at"], "files": written}
    write_json(out / "manifest.json", manifest)
    return manifest


def _export_one(fmt, path, model, calib, split, extra, cache) -> None:
    """Convert and write one format; ``cache`` keeps the float ONNX proto."""
    if fmt.startswith("tflite"):
        int8 = fmt.endswith("int8")
        quant = ({"type": "full-integer int8", "weights": "int8, per-channel",
                  "activations": "int8", "input": "int8 scale 1 zero point -128: raw pixels - 128",
                  "calibration_samples": len(calib)} if int8 else {"type": "none"})
        data = tflite_bytes(model, calib if int8 else None)
        write_bytes(path, append_to_tflite(data, _metadata(split, extra, fmt, quant)))
    elif fmt == "onnx-float32":
        if "onnx" not in cache:
            cache["onnx"] = onnx_float(model)
        _write_onnx(cache["onnx"], path, _metadata(split, extra, fmt, {"type": "none"}))
    else:
        import onnx
        if "onnx" not in cache:
            cache["onnx"] = onnx_float(model)
        quant = {"type": "static QDQ", "weights": "int8, per-channel", "activations": "int8",
                 "calibration": "MinMax", "calibration_samples": len(calib)}
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=".onnx-int8-") as tmp:
            f32, q8 = Path(tmp) / "float.onnx", Path(tmp) / "int8.onnx"
            onnx.save(cache["onnx"], str(f32))
            onnx_int8(f32, q8, calib)
            _write_onnx(onnx.load(str(q8)), path, _metadata(split, extra, fmt, quant))
