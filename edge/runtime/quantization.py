"""The affine int8/uint8 mapping of a quantized tensor: value = scale * (q - zero_point)."""

from __future__ import annotations

import numpy as np


def quantize(pixels: np.ndarray, scale: float, zero_point: int, dtype) -> np.ndarray:
    """Quantize uint8 pixels for an integer model input.

    The affine quantization of TFLite and ONNX: ``q = round(x / scale) + zero_point``,
    clipped to the dtype's range. The models begin with ``Rescaling(1/255)``,
    so the calibrated input range is 0..255 and the converter picks
    scale 1, zero point -128 (int8) or 0 (uint8): then q = x - 128 or q = x,
    exact integers, computed in int16 with no float math.

    Args:
        pixels: uint8 array, any shape.
        scale, zero_point: from the model's input tensor.
        dtype: numpy int8 or uint8.

    Returns:
        array of ``dtype`` and the same shape.
    """
    info = np.iinfo(dtype)
    if scale == 1.0:
        q = pixels.astype(np.int16) + np.int16(zero_point)
    else:
        q = np.round(pixels.astype(np.float32) / np.float32(scale)) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(values: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """``x = scale * (q - zero_point)`` as float32.

    Converted to int64 first so the subtraction cannot overflow the integer
    type (as pycoral's classify adapter does).
    """
    return (scale * (values.astype(np.int64) - zero_point)).astype(np.float32)
