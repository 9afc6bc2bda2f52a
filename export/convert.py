"""Convert a trained run to TFLite and ONNX files that carry their own
metadata, each verified against the Keras model before it is shipped.

Each file is written under a temporary name, loaded by the edge runtime and
run on the validation split; its figures (accuracy, drop against the Keras
model, agreement) go into its metadata, and only a file within
``max_drop`` percentage points is renamed to its final name.
``manifest.json`` lists each file with its size, sha256 and figures.
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
from edge.backends import is_tflite_bytes, load_backend
from edge.cli_util import log as _log
from edge.dataset import read_split, split_items
from edge.errors import UsageError
from edge.faces import DEFAULT_FACE_MARGIN, DEFAULT_FACE_SHIFT
from edge.fileio import atomic_path, read_json, write_bytes, write_json
from edge.metadata import ONNX_KEY, ModelMetadata, append_to_tflite, encode, strip_tflite_metadata
from edge.metrics import decide, suggest_min_confidence
from edge.verify import MANIFEST_NAME, file_digest

from . import CALIBRATION_METHODS, CALIBRATIONS, FORMATS, IO_TYPES, MIN_ACCURACY
from .validate import (
    VERIFY_SPLIT,
    compare,
    file_probabilities,
    keras_probabilities,
    missed_by,
    onnx_probabilities,
    output_kind,
    validation_set,
)

FILENAMES = {
    "tflite-float32": "model_float32.tflite",
    "tflite-float16": "model_float16.tflite",
    "tflite-int8": "model_int8.tflite",
    "onnx-float32": "model_float32.onnx",
    "onnx-int8": "model_int8.onnx",
}
#: Per-layer quantization error reports written by ``--debug-quant``.
DEBUG_FILENAMES = {"tflite-int8": "quant_debug_tflite_int8.csv", "onnx-int8": "quant_debug_onnx_int8.csv"}
#: ONNX opset: 17 is run by every onnxruntime release of the last three years.
OPSET = 17
#: Default size of the representative dataset. TFLite's post-training
#: quantization guide suggests "around 100-500" samples.
CALIB_SAMPLES = 300
#: Below this many calibration images (the default) the export warns: with
#: fewer, the activation ranges depend more on which faces were drawn, and
#: a 1-image calibration cost the demo run's int8 ONNX file 32 points on the
#: validation split (measured; its int8 TFLite file, 0.1).
CALIB_WARN_BELOW = 300
#: Default largest accuracy drop (percentage points) a file may have on the
#: validation split against the Keras model and still be written.
MAX_DROP_PP = 1.0
#: Validation images the per-layer error reports run on. onnxruntime's
#: debugger keeps every intermediate tensor of every image in memory: on the
#: demo run's 2409 validation images it passed 7 GB and was stopped; with
#: the first 200 the whole export peaks at 1.7 GB (measured).
DEBUG_IMAGES = 200


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
        io_type: ``"int8"`` or ``"uint8"``, input and output type of the
            full-integer TFLite file (see :func:`tflite_bytes`).
        per_channel: int8 ONNX weights quantized per output channel (else
            one scale per tensor).
        calibration: ``"minmax"``, ``"entropy"`` or ``"percentile"``, how
            onnxruntime picks the int8 ONNX activation ranges; ``"auto"``
            tries each and keeps the file that loses least on the
            validation split (the choice is recorded in its metadata).
        max_drop: largest accuracy drop, percentage points on the validation
            split against the Keras model, for a file to be written.
        debug_quant: also write a per-layer quantization error CSV for each
            int8 format.
        min_accuracy: least validation accuracy (0..1) of the Keras model
            for anything to be exported.
    """

    run_dir: str
    out_dir: str | None = None
    calib_samples: int = CALIB_SAMPLES
    formats: tuple = FORMATS
    seed: int = 0
    verbose: bool = False
    io_type: str = "int8"
    per_channel: bool = True
    calibration: str = "auto"
    max_drop: float = MAX_DROP_PP
    debug_quant: bool = False
    min_accuracy: float = MIN_ACCURACY


def load_run(run_dir: Path):
    """Read a run folder: (keras model, split dict, metrics dict or {}).

    Raises:
        HappysadError: the folder, its model or its split are missing.
    """
    model_path = run_dir / "model.keras"
    if not run_dir.is_dir():
        raise UsageError(f"{run_dir}: no such run folder; train one with happysad-train DATA_DIR --out {run_dir}")
    if not model_path.is_file():
        raise HappysadError(f"{model_path}: no trained model in this run folder; run happysad-train first")
    split = read_split(run_dir / "split.json")
    metrics = read_json(run_dir / "metrics.json", "metrics file") if (run_dir / "metrics.json").is_file() else {}
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    try:
        model = keras.saving.load_model(model_path, safe_mode=True, compile=False)
    except Exception as exc:  # Keras raises many types for a bad archive
        raise HappysadError(
            f"{model_path}: cannot load the Keras model ({type(exc).__name__}); train the run again"
        ) from None
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


def _metadata(split, extra: dict, fmt: str, quant: dict, io: tuple, verification: dict | None = None) -> ModelMetadata:
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
        except KeyboardInterrupt:  # stopped, not failed: the converters' chatter is not news
            restore()
            raise
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


def _tflite_converter(model, kind: str, calib: np.ndarray | None, io_type: str = "int8"):
    """A configured ``tf.lite.TFLiteConverter`` (see :func:`tflite_bytes`)."""
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if kind == "float16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif kind == "int8":
        if calib is None:
            raise ValueError("int8 conversion needs a representative dataset")
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([calib[i : i + 1]] for i in range(len(calib)))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        dtype = {"int8": tf.int8, "uint8": tf.uint8}[io_type]
        conv.inference_input_type = dtype
        conv.inference_output_type = dtype
    return conv


def tflite_bytes(model, kind: str = "float32", calib: np.ndarray | None = None, io_type: str = "int8") -> bytes:
    """Convert to a TFLite flatbuffer.

    Args:
        model: the run's Keras model.
        kind: ``"float32"``; ``"float16"`` (weights stored as float16,
            dequantized to float32 when the interpreter loads them, float32
            input and output: half the size, float accuracy); or ``"int8"``
            (full-integer: int8 weights, per-channel for convolutions, int8
            activations, integer input and output).
        calib: float32 (N, H, W, C) representative dataset, pixels 0..255;
            needed for int8.
        io_type: ``"int8"`` or ``"uint8"``, the int8 file's input and output
            type. The model begins with Rescaling(1/255) over a calibrated
            0..255 range, so the input gets scale 1 and zero point -128 (int8:
            the device feeds pixel - 128) or zero point 0 (uint8: the device
            feeds the raw pixels, no arithmetic at all; the converter adds
            the uint8 -> int8 requantize op inside the graph). The output, a
            probability, gets scale 1/256.

    Returns:
        the flatbuffer bytes, without metadata.
    """
    return _tflite_converter(model, kind, calib, io_type).convert()


def tflite_debug_csv(model, calib: np.ndarray, pixels: np.ndarray, io_type: str = "int8") -> bytes:
    """Per-layer quantization error of the int8 TFLite model, as CSV.

    Runs ``tf.lite.experimental.QuantizationDebugger``, which executes the
    float and the quantized graph side by side on ``pixels`` and, for each
    quantized op's output, reports the error against the float output:
    ``stddev``, ``mean_error``, ``max_abs_error``, ``mean_squared_error`` (in
    the tensor's float units), with the op's ``scale`` and ``zero_point``. The
    layer whose ``mean_squared_error / scale**2`` stands out is the one at
    fault (TFLite's quantization debugger guide).

    Args:
        calib: float32 (N, H, W, C) representative dataset.
        pixels: uint8 (M, H, W, C) images to measure the error on.

    Returns:
        UTF-8 CSV bytes, one row per quantized op.
    """
    import io

    import tensorflow as tf

    conv = _tflite_converter(model, "int8", calib, io_type)
    data = pixels.astype(np.float32)
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=conv, debug_dataset=lambda: ([data[i : i + 1]] for i in range(len(data)))
    )
    debugger.run()
    out = io.StringIO()
    debugger.layer_statistics_dump(out)
    return out.getvalue().encode()


def onnx_float(model):
    """Convert to a float32 ONNX ModelProto with tf2onnx.

    Goes through ``tf2onnx.convert.from_function``: ``from_keras`` fails on
    Keras 3 models. Input ``image``: float32 (N, H, W, C), pixels 0..255;
    one output: float32 (N, 1), the sigmoid probability of ``labels[1]``,
    or (N, C), the softmax over the labels.
    """
    import logging

    import tensorflow as tf
    import tf2onnx

    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name="image")
    fn = tf.function(lambda image: model(image, training=False))
    proto, _ = tf2onnx.convert.from_function(fn, input_signature=[spec], opset=OPSET)
    return proto


def _reader(images: np.ndarray):
    """An onnxruntime CalibrationDataReader over float32 (N, H, W, C) images, one per batch."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(images[i : i + 1] for i in range(len(images)))

        def get_next(self):
            x = next(self._it, None)
            return None if x is None else {"image": x}

    return Reader()


#: Histogram settings of the Entropy calibration: 2048 bins searched for the
#: threshold whose 128-bin quantized histogram is closest (KL divergence)
#: to the float one, as in TensorRT's "8-bit Inference with TensorRT" (GTC
#: 2017). onnxruntime's own defaults (128 and 128) leave one candidate, the
#: full range, which makes Entropy give exactly MinMax's ranges (measured).
ENTROPY_BINS = {"num_bins": 2048, "num_quantized_bins": 128}


def _ort_method(calibration: str):
    """onnxruntime's CalibrationMethod for one of :data:`export.CALIBRATIONS`."""
    from onnxruntime.quantization import CalibrationMethod

    return {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[calibration]


def activation_ranges(model_path: Path, calib: np.ndarray, calibration: str, cache: Path) -> Path:
    """Calibrate the activation ranges of a float ONNX model; write them to ``cache``.

    Args:
        model_path: the pre-processed float model.
        calib: float32 (N, H, W, C) representative dataset, pixels 0..255.
        calibration: ``minmax`` (the observed range), ``entropy`` (the range
            minimizing the KL divergence between float and quantized
            histograms, :data:`ENTROPY_BINS`) or ``percentile`` (the
            99.999th percentile of |x|, onnxruntime's default).
        cache: where to write onnxruntime's calibration cache (JSON).

    Returns:
        ``cache``, for ``quantize_static(calibration_cache_path=...)``.
    """
    from onnxruntime.quantization import create_calibrator, save_tensors_data

    calibrator = create_calibrator(
        model_path,
        augmented_model_path=str(cache.with_suffix(".aug.onnx")),
        calibrate_method=_ort_method(calibration),
        extra_options=ENTROPY_BINS if calibration == "entropy" else {},
    )
    calibrator.collect_data(_reader(calib))
    save_tensors_data(calibrator.compute_data(), cache)
    return cache


def onnx_int8(
    float_path: Path,
    out_path: Path,
    calib: np.ndarray,
    per_channel: bool = True,
    calibration: str = "minmax",
    pre: Path | None = None,
) -> Path:
    """Static int8 quantization in QDQ format with onnxruntime.

    Shape inference and graph optimization first (``quant_pre_process``), as
    onnxruntime's quantization guide advises; then int8 weights (one scale
    per output channel, or per tensor) and int8 activations whose ranges
    :func:`activation_ranges` calibrates on ``calib``.

    The weights use 7 bits of the int8 range (``reduce_range``: -64..64).
    On x86-64 CPUs without VNNI (AVX2, and AVX-512 without VNNI)
    onnxruntime's int8 convolutions multiply uint8 activations by int8
    weights with VPMADDUBSW, which adds two products into a saturating
    int16: 255 * 127 * 2 = 64,770 overflows 32,767, while 255 * 64 * 2 =
    32,640 does not. With full 8-bit weights the demo model's file lost
    7.3 pp on the validation split on an emulated Haswell CPU (0.9203 ->
    0.8472) and nothing on this VNNI CPU; with 7-bit weights it gave 0.9228
    on both (onnxruntime's quantization guide: "reduce_range ... is designed
    for the U8S8 format on AVX2 and AVX512 (non-VNNI) machines to mitigate
    saturation issues"). One file then gives the same answers on every CPU.

    Args:
        calib: float32 (N, H, W, C) representative dataset, pixels 0..255.
        pre: the pre-processed float model when already made (``auto``
            calibration quantizes it several times).

    Returns:
        the pre-processed float model's path (``out_path``'s folder), whose
        tensor names the quantized model keeps, for :func:`onnx_debug_csv`.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quant_pre_process, quantize_static

    if pre is None:
        pre = out_path.with_name(f"{out_path.stem}.pre.onnx")
        quant_pre_process(str(float_path), str(pre))
    ranges = activation_ranges(pre, calib, calibration, out_path.with_name(f"calibration-{calibration}.json"))
    quantize_static(
        str(pre),
        str(out_path),
        None,
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        per_channel=per_channel,
        reduce_range=True,
        calibrate_method=_ort_method(calibration),
        calibration_cache_path=str(ranges),
    )
    return pre


def onnx_debug_csv(float_path: Path, qdq_path: Path, pixels: np.ndarray) -> bytes:
    """Per-tensor quantization error of the int8 ONNX model, as CSV.

    onnxruntime's ``qdq_loss_debug`` runs the float and the QDQ model on
    ``pixels`` with every intermediate tensor exposed and matches them by
    name; each row gives a signal-to-quantization-noise ratio in dB,
    20 log10(||x|| / ||x - y||) (onnxruntime's formula; higher is better), of
    the QDQ tensor against the float one (``sqnr_vs_float_db``). The first
    tensor where ``sqnr_vs_float_db`` falls is the layer at fault.
    (``sqnr_qdq_db`` compares the tensor onnxruntime matched as the input of
    the QuantizeLinear with the output of its DequantizeLinear, both in the
    QDQ model; ``xmodel_err`` and ``qdq_err`` in onnxruntime's names.)

    Args:
        float_path: the pre-processed float model :func:`onnx_int8` returned.
        qdq_path: the quantized model.
        pixels: uint8 (M, H, W, C).

    Returns:
        UTF-8 CSV bytes, one row per matched tensor, in graph order.
    """
    import csv
    import io

    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_activation_error,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    data = pixels.astype(np.float32)
    f_aug, q_aug = float_path.with_name("float.aug.onnx"), qdq_path.with_name("qdq.aug.onnx")
    modify_model_output_intermediate_tensors(str(float_path), str(f_aug))
    modify_model_output_intermediate_tensors(str(qdq_path), str(q_aug))
    float_acts = collect_activations(str(f_aug), _reader(data))
    qdq_acts = collect_activations(str(q_aug), _reader(data))
    errors = compute_activation_error(create_activation_matching(qdq_acts, float_acts))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["tensor_name", "sqnr_vs_float_db", "sqnr_qdq_db"])
    for name, err in errors.items():
        writer.writerow([name, _fmt(err.get("xmodel_err")), _fmt(err.get("qdq_err"))])
    return out.getvalue().encode()


def _fmt(x) -> str:
    return "" if x is None else f"{float(x):.4f}"


def quantization_record(fmt: str, opts: ExportOptions, samples: int, cache: dict | None = None) -> dict:
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


CALIBRATION_NAMES = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


def _val_accuracy(path: Path, judge) -> tuple[float, float]:
    """(accuracy, agreement with the Keras model) of an ONNX file on the
    validation images ``judge`` holds: (pixels, labels, reference, threshold)."""
    pixels, labels, reference, threshold = judge
    label = decide(onnx_probabilities(path, pixels), threshold)
    return float(np.mean(label == labels)), float(np.mean(label == decide(reference, threshold)))


def _onnx_int8_body(cache: dict, calib, opts: ExportOptions, tmp_dir: Path, debug_pixels, judge) -> tuple:
    """(quantized model bytes, debug CSV bytes or None).

    With ``opts.calibration == "auto"`` every method of
    :data:`CALIBRATION_METHODS` is tried on the same representative dataset
    and the file with the best validation accuracy (then agreement with the
    Keras model, then the earlier method) is kept; ``cache`` records the
    choice and each method's figures.
    """
    import onnx
    from onnxruntime.quantization import quant_pre_process

    f32, pre = tmp_dir / "float.onnx", tmp_dir / "float.pre.onnx"
    onnx.save(cache["onnx"], str(f32))
    quant_pre_process(str(f32), str(pre))
    methods = CALIBRATION_METHODS if opts.calibration == "auto" else (opts.calibration,)
    trials = {}
    for method in methods:
        q8 = tmp_dir / f"int8-{method}.onnx"
        onnx_int8(f32, q8, calib, opts.per_channel, method, pre=pre)
        if len(methods) > 1:
            trials[method] = _val_accuracy(q8, judge)
    best = max(methods, key=lambda m: (*trials.get(m, (0, 0)), -methods.index(m)))
    cache["calibration_chosen"] = best
    cache["calibration_trials"] = {m: round(a, 6) for m, (a, _) in trials.items()}
    q8 = tmp_dir / f"int8-{best}.onnx"
    debug = onnx_debug_csv(pre, q8, debug_pixels) if debug_pixels is not None else None
    return q8.read_bytes(), debug


def model_body(
    fmt: str,
    model,
    calib,
    opts: ExportOptions,
    cache: dict,
    out: Path,
    debug_pixels: np.ndarray | None = None,
    judge=None,
) -> tuple:
    """Convert one format.

    Args:
        debug_pixels: uint8 (M, H, W, C) to measure per-layer error on, for
            an int8 format; None for no report.
        judge: (pixels, labels, Keras reference, threshold) of the
            validation split, for ``--calibration auto``.

    Returns:
        (model bytes without metadata, per-layer error CSV bytes or None).
        ``cache`` keeps the float ONNX proto between formats.
    """
    if fmt.startswith("tflite"):
        kind = fmt.split("-")[1]
        body = tflite_bytes(model, kind, calib if kind == "int8" else None, opts.io_type)
        debug = (
            tflite_debug_csv(model, calib, debug_pixels, opts.io_type)
            if kind == "int8" and debug_pixels is not None
            else None
        )
        return body, debug
    if "onnx" not in cache:
        cache["onnx"] = onnx_float(model)
    if fmt == "onnx-float32":
        return cache["onnx"].SerializeToString(), None
    with tempfile.TemporaryDirectory(dir=out, prefix=".onnx-int8-") as tmp:
        return _onnx_int8_body(cache, calib, opts, Path(tmp), debug_pixels, judge)


def embed(data: bytes, meta: ModelMetadata) -> bytes:
    """A model file's bytes with ``meta`` embedded, replacing any metadata it had.

    TFLite: the metadata zip re-appended to the bare flatbuffer. ONNX: the
    JSON set in ``metadata_props`` under :data:`edge.metadata.ONNX_KEY`.
    Either way the graph and weights stay byte-for-byte what they were.
    """
    if is_tflite_bytes(data):
        return append_to_tflite(strip_tflite_metadata(data), meta)
    import onnx

    proto = onnx.load_model_from_string(data)
    for entry in [e for e in proto.metadata_props if e.key == ONNX_KEY]:
        proto.metadata_props.remove(entry)
    entry = proto.metadata_props.add()
    entry.key, entry.value = ONNX_KEY, encode(meta).decode()
    proto.producer_name = "happysad"
    return proto.SerializeToString()


def file_record(path: Path) -> dict:
    """{"size_bytes", "sha256"} of a written file (:func:`edge.verify.file_digest`, which verify checks against)."""
    size, digest = file_digest(path)
    return {"size_bytes": size, "sha256": digest}


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


class _Refused(Exception):
    """Raised inside :func:`atomic_path` so the verified-but-refused file is never renamed."""


def ship(
    path: Path,
    body: bytes,
    meta_for,
    reference: np.ndarray,
    pixels: np.ndarray,
    labels: np.ndarray,
    max_drop: float,
    threshold: float = 0.5,
) -> tuple[dict, bool]:
    """Write one model file under a temporary name, verify it, rename it if it passes.

    The temporary file is loaded by :class:`edge.Classifier`, as a device
    would load it, and run on ``pixels``; its figures are compared with the
    Keras model's ``reference`` on the same images, then embedded in its
    metadata. A file whose accuracy drops more than ``max_drop`` percentage
    points is removed and whatever was at ``path`` stays as it was.

    Args:
        body: model bytes without metadata.
        meta_for: (io, verification) -> :class:`ModelMetadata`, where io is
            (input dtype name, scale or None, zero point or None) as read
            from the loaded model's input tensor.
        reference: float32 (N, C) Keras class probabilities.
        pixels: uint8 (N, H, W, C); labels: int (N,) true classes.

    Returns:
        (verification figures, True if written to ``path``).

    Raises:
        HappysadError: the file cannot be written, or the edge runtime
            cannot load what was converted.
    """
    from edge import Classifier

    try:
        with atomic_path(path) as tmp:
            _write_synced(tmp, body)
            backend = load_backend(tmp)
            quant = backend.input_quant
            io = (
                np.dtype(backend.input_dtype).name,
                float(quant[0]) if quant else None,
                int(quant[1]) if quant else None,
            )
            del backend
            _write_synced(tmp, embed(body, meta_for(io, None)))
            figures = compare(reference, file_probabilities(Classifier(tmp), pixels), labels, threshold)
            _write_synced(tmp, embed(tmp.read_bytes(), meta_for(io, figures)))
            if missed_by(figures, max_drop) is not None:
                raise _Refused()
    except _Refused:
        return figures, False
    return figures, True


def refusal_message(manifest: dict) -> str:
    """One line naming each refused file and by how much it missed ``--max-drop``."""
    max_drop = manifest["verification"]["max_drop_pp"]
    parts = []
    for name, rec in manifest["refused"].items():
        v = rec["verification"]
        parts.append(
            f"{name} loses {v['drop_pp']:.2f} pp on the {v['split']} split "
            f"({v['float_accuracy']:.4f} -> {v['accuracy']:.4f}, n={v['n']}), "
            f"{rec['missed_by_pp']:.2f} pp over --max-drop {max_drop:g}"
        )
    kept = (
        "; the file of that name, if any, was left as it was"
        if len(parts) == 1
        else "; files of those names, if any, were left as they were"
    )
    return (
        "not written: "
        + "; ".join(parts)
        + kept
        + "; raise --calib-samples, try another --calibration, or find the layer with --debug-quant"
    )


def previous_records(out: Path) -> dict:
    """The file records of the manifest already in ``out`` ({} if none or unreadable)."""
    path = out / MANIFEST_NAME
    if not path.is_file():
        return {}
    try:
        old = read_json(path, "manifest")
    except HappysadError:
        return {}
    files = old.get("files")
    return {n: r for n, r in files.items() if isinstance(r, dict)} if isinstance(files, dict) else {}


def _carried_over(out: Path, records: dict, skip) -> dict:
    """The ``records`` whose files are still in ``out``, unchanged, except the names in ``skip``.

    An export of some formats, or one that refused a file, leaves the other
    files in place; they stay listed so ``happysad-edge verify`` still
    finds them.
    """
    kept = {}
    for name, rec in records.items():
        if name in skip or not (out / name).is_file():
            continue
        if file_record(out / name) == {"size_bytes": rec.get("size_bytes"), "sha256": rec.get("sha256")}:
            kept[name] = rec
    return kept


def export_run(opts: ExportOptions) -> dict:
    """Convert, verify and write the chosen formats and ``manifest.json``.

    Returns:
        the manifest dict: ``files`` (every model file in the folder that
        passed, with size, sha256 and verification figures, those of earlier
        exports that are still there unchanged included), ``written`` (the
        names this export wrote) and ``refused``
        (files that lost more than ``opts.max_drop``, with their figures and
        ``missed_by_pp``). The caller decides how to report refusals; see
        :func:`refusal_message`.

    Raises:
        HappysadError: the run folder is incomplete, a file cannot be
            written, or a converted file does not load.
    """
    if opts.io_type not in IO_TYPES or opts.calibration not in CALIBRATIONS:
        raise HappysadError(f"io_type must be one of {IO_TYPES} and calibration one of {CALIBRATIONS}")
    run_dir = Path(opts.run_dir)
    out = Path(opts.out_dir) if opts.out_dir else run_dir / "export"
    model, split, metrics = load_run(run_dir)
    int8 = any(f.endswith("int8") for f in opts.formats)
    calib = calibration_images(split, opts.calib_samples, opts.seed) if int8 else None
    if int8:
        _log(f"representative dataset: {len(calib)} images from the train split")
        if len(calib) < CALIB_WARN_BELOW:
            _log(
                f"warning: {len(calib)} calibration images, fewer than {CALIB_WARN_BELOW}; the int8 "
                "scales and zero points may not cover real inputs (raise --calib-samples)"
            )
    pixels, labels = validation_set(split)
    reference = keras_probabilities(model, pixels)
    if not np.all(np.isfinite(reference)):
        bad = int(np.sum(~np.isfinite(reference)))
        raise HappysadError(
            f"{run_dir / 'model.keras'}: gives a non-finite score (NaN or infinity) on {bad} "
            f"of {len(reference)} validation images; its weights are broken; train it again"
        )
    threshold = float(metrics.get("threshold", 0.5))
    ref = compare(reference, reference, labels, threshold)
    suggestion = suggest_min_confidence(labels, reference, threshold)
    if ref["float_accuracy"] < opts.min_accuracy:
        raise HappysadError(
            f"{run_dir / 'model.keras'}: the Keras model is right on only {ref['float_accuracy']:.1%} "
            f"of the {len(labels)} validation images, under --min-accuracy {opts.min_accuracy:g} "
            "(near chance: trained too briefly, or on mislabelled data); train it longer, or pass "
            "--min-accuracy 0 to export it anyway"
        )
    _log(
        f"verifying on the {VERIFY_SPLIT} split: {len(labels)} images, Keras accuracy "
        f"{ref['float_accuracy']:.4f}, max drop {opts.max_drop:g} pp"
    )
    extra = base_metadata(split, metrics, run_dir)
    extra["run"].update(output=output_kind(model), min_confidence={"split": VERIFY_SPLIT, **suggestion})
    _log(
        f"suggested --min-confidence {suggestion['min_confidence']:.3f}: the Keras model is right on "
        f"{suggestion['accuracy_kept']:.1%} of the {VERIFY_SPLIT} faces it keeps ({suggestion['coverage']:.1%} "
        f"of them), target {suggestion['target']:.0%}"
    )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HappysadError(f"{out}: cannot create the export folder ({exc.strerror or exc})") from None
    written, refused, debug_files, cache = {}, {}, {}, {}
    previous = previous_records(out)
    order = list(FILENAMES.values())

    def save_manifest(pending: str | None = None) -> dict:
        # Written again around every file, so that whenever the export
        # stops (a crash, SIGKILL) the manifest lists only files that match
        # it: a file's old record is dropped before its new file can land.
        files = {**_carried_over(out, previous, {*written, pending}), **written}
        files = dict(sorted(files.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))
        manifest = {
            "run": os.path.relpath(run_dir.resolve(), out.resolve()),
            "package_version": __version__,
            "exported_at": extra["exported_at"],
            "options": {
                "calib_samples": len(calib) if calib is not None else 0,
                "seed": opts.seed,
                "io_type": opts.io_type,
                "per_channel": opts.per_channel,
                "calibration": opts.calibration,
                **({"calibration_chosen": cache["calibration_chosen"]} if "calibration_chosen" in cache else {}),
            },
            "verification": {
                "split": VERIFY_SPLIT,
                "n": int(len(labels)),
                "keras_accuracy": ref["float_accuracy"],
                "max_drop_pp": opts.max_drop,
            },
            "files": files,
            "written": sorted(written),
            "refused": refused,
            "debug_reports": debug_files,
        }
        write_json(out / MANIFEST_NAME, manifest)
        return manifest

    for fmt in FORMATS:
        if fmt not in opts.formats:
            continue
        name = FILENAMES[fmt]
        path = out / name
        _log(f"exporting {fmt} -> {path}")
        save_manifest(pending=name)
        debug_pixels = pixels[:DEBUG_IMAGES] if opts.debug_quant and fmt in DEBUG_FILENAMES else None
        with converter_output_held(opts.verbose):
            body, debug = model_body(
                fmt, model, calib, opts, cache, out, debug_pixels, (pixels, labels, reference, threshold)
            )
        if debug is not None:
            write_bytes(out / DEBUG_FILENAMES[fmt], debug)
            debug_files[DEBUG_FILENAMES[fmt]] = fmt
        quant = quantization_record(fmt, opts, len(calib) if calib is not None else 0, cache)
        if fmt == "onnx-int8" and cache.get("calibration_trials"):
            _log(
                "  calibration (val accuracy): "
                + ", ".join(f"{m} {a:.4f}" for m, a in cache["calibration_trials"].items())
                + f"; kept {cache['calibration_chosen']}"
            )

        def meta_for(io, figures, fmt=fmt, quant=quant):
            return _metadata(split, extra, fmt, quant, io, figures)

        figures, ok = ship(path, body, meta_for, reference, pixels, labels, opts.max_drop, threshold)
        verdict = "ok" if ok else "REFUSED"
        _log(
            f"  {VERIFY_SPLIT}: accuracy {figures['accuracy']:.4f} (Keras {figures['float_accuracy']:.4f}), "
            f"drop {figures['drop_pp']:+.2f} pp, agreement {figures['agreement']:.4f}: {verdict}"
        )
        if ok:
            written[name] = {
                "format": fmt,
                **file_record(path),
                "exported_at": extra["exported_at"],
                "verification": figures,
            }
        else:
            refused[name] = {"format": fmt, "verification": figures, "missed_by_pp": missed_by(figures, opts.max_drop)}
    return save_manifest()
