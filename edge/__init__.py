"""happysad on the device: numpy, OpenCV and one interpreter, never TensorFlow.

The pieces, each importable alone:

- :func:`preprocess`: the one preprocessing function (training, calibration,
  evaluation and the device all call it).
- :func:`load_image`, :func:`find_images`: decode files, with reasons for bad ones.
- :class:`Classifier`, :class:`Prediction`: load a model once, classify many.
- :func:`read_metadata`, :class:`ModelMetadata`: what a model file says about itself.
- :class:`HappysadError`: the one-line, user-fixable error.
"""
from .classifier import Classifier, Prediction, read_metadata
from .errors import HappysadError
from .images import IMAGE_SUFFIXES, find_images, load_image
from .metadata import ModelMetadata
from .preprocess import preprocess

__version__ = "0.1.0"

__all__ = ["Classifier", "Prediction", "read_metadata", "HappysadError", "IMAGE_SUFFIXES",
           "find_images", "load_image", "ModelMetadata", "preprocess", "__version__"]
