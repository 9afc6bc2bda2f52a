"""TFLite conversion: float32, float16 and full-integer int8 files, and the
per-layer quantization error report."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile

import numpy as np


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
