"""The one preprocessing function shared by training, calibration, evaluation
and the device, so the device sees exactly what training saw.

Pixels stay uint8 in the range 0..255: every model begins with
``Rescaling(1/255)``, so the scaling to 0..1 lives inside the model graph, and
an int8 model with input scale 1 can take raw pixels with no float math.
"""

from __future__ import annotations

import cv2
import numpy as np

from happysad.edge.errors import HappysadError

COLOR_MODES = ("gray", "rgb")


def channels_of(color: str) -> int:
    """Channels of the model input for a color mode: 1 for ``gray``, 3 for ``rgb``."""
    return 1 if color == "gray" else 3


def preprocess(image: np.ndarray, size: tuple[int, int] = (48, 48), color: str = "gray") -> np.ndarray:
    """Turn one image into one model input.

    Args:
        image: uint8 array, HxW (gray), HxWx1, HxWx3 (BGR, OpenCV's order) or
            HxWx4 (BGRA; alpha is dropped). Frames from ``cv2.VideoCapture``
            and ``cv2.imdecode`` are in this form.
        size: model input (height, width) in pixels.
        color: ``"gray"`` (one channel, ITU-R BT.601 luma as computed by
            ``cv2.cvtColor``) or ``"rgb"`` (three channels in RGB order).

    Returns:
        uint8 array of shape (height, width, C), C = 1 for gray and 3 for
        rgb, values 0..255 (NHWC without the batch axis).

    Raises:
        HappysadError: the array is not uint8, has a shape other than the
            above, or ``color`` is unknown.

    Resizing uses ``cv2.INTER_AREA``, the interpolation OpenCV recommends for
    shrinking (it averages pixel areas, so a face cut from a large frame does
    not alias); an image already at ``size`` is left untouched.
    """
    if color not in COLOR_MODES:
        raise HappysadError(f"unknown color mode {color!r}; use one of {', '.join(COLOR_MODES)}")
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise HappysadError("expected a uint8 image array; decode the file with edge.load_image first")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if (
        image.ndim not in (2, 3)
        or (image.ndim == 3 and image.shape[2] not in (3, 4))
        or image.shape[0] < 1
        or image.shape[1] < 1
    ):
        raise HappysadError(f"expected an HxW, HxWx3 or HxWx4 image, got shape {image.shape}")
    if color == "gray":
        if image.ndim == 3:
            code = cv2.COLOR_BGR2GRAY if image.shape[2] == 3 else cv2.COLOR_BGRA2GRAY
            image = cv2.cvtColor(image, code)
    else:
        # OpenCV decodes and captures in BGR order; the models are trained on
        # RGB. This is the one place that converts.
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
        else:
            code = cv2.COLOR_BGR2RGB if image.shape[2] == 3 else cv2.COLOR_BGRA2RGB
            image = cv2.cvtColor(image, code)
    height, width = size
    if image.shape[:2] != (height, width):
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    if image.ndim == 2:
        image = image[:, :, None]
    return np.ascontiguousarray(image)
