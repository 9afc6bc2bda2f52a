"""ONNX conversion: float32 through tf2onnx, static QDQ int8 through
onnxruntime's quantizer (calibration methods tried and chosen on the
validation split), and the per-layer quantization error report."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from happysad.edge.metrics import decide

from . import CALIBRATION_METHODS
from .validate import onnx_probabilities

#: ONNX opset: 17 is run by every onnxruntime release of the last three years.
OPSET = 17


def _fmt(x) -> str:
    return "" if x is None else f"{float(x):.4f}"


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


CALIBRATION_NAMES = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


def _val_accuracy(path: Path, judge) -> tuple[float, float]:
    """(accuracy, agreement with the Keras model) of an ONNX file on the
    validation images ``judge`` holds: (pixels, labels, reference, threshold)."""
    pixels, labels, reference, threshold = judge
    label = decide(onnx_probabilities(path, pixels), threshold)
    return float(np.mean(label == labels)), float(np.mean(label == decide(reference, threshold)))


def onnx_int8_body(
    cache: dict, calib, calibration: str, per_channel: bool, tmp_dir: Path, debug_pixels, judge
) -> tuple:
    """(quantized model bytes, debug CSV bytes or None).

    With ``calibration == "auto"`` every method of
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
    methods = CALIBRATION_METHODS if calibration == "auto" else (calibration,)
    trials = {}
    for method in methods:
        q8 = tmp_dir / f"int8-{method}.onnx"
        onnx_int8(f32, q8, calib, per_channel, method, pre=pre)
        if len(methods) > 1:
            trials[method] = _val_accuracy(q8, judge)
    best = max(methods, key=lambda m: (*trials.get(m, (0, 0)), -methods.index(m)))
    cache["calibration_chosen"] = best
    cache["calibration_trials"] = {m: round(a, 6) for m, (a, _) in trials.items()}
    q8 = tmp_dir / f"int8-{best}.onnx"
    debug = onnx_debug_csv(pre, q8, debug_pixels) if debug_pixels is not None else None
    return q8.read_bytes(), debug
