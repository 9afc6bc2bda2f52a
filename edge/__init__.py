"""happysad on the device: numpy, OpenCV and one interpreter, never TensorFlow.

The pieces, each importable alone:

- :func:`preprocess`: the one preprocessing function (training, calibration,
  evaluation and the device all call it).
- :func:`load_image`, :func:`find_images`: decode files, with reasons for bad ones.
- :class:`Classifier`, :class:`Prediction`: load a model once, classify many.
- :func:`read_metadata`, :class:`ModelMetadata`: what a model file says about itself.
- :class:`HappysadError`: the one-line, user-fixable error.
"""

import os as _os

# OpenCV reads its decoders' pixel limit once, when it loads: set it before
# any edge module imports cv2, as a second gate behind edge.images' own
# header check (50 megapixels, edge.images.MAX_PIXELS). A program that
# imported cv2 before edge keeps OpenCV's default (2^30 pixels).
_os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", "50000000")

from .classifier import Classifier, read_metadata  # noqa: E402
from .errors import HappysadError  # noqa: E402
from .images import IMAGE_SUFFIXES, find_images, load_image  # noqa: E402
from .metadata import ModelMetadata  # noqa: E402
from .prediction import Prediction  # noqa: E402
from .preprocess import preprocess  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "Classifier",
    "Prediction",
    "read_metadata",
    "HappysadError",
    "IMAGE_SUFFIXES",
    "find_images",
    "load_image",
    "ModelMetadata",
    "preprocess",
    "__version__",
]
