"""happysad on the device: numpy, OpenCV and one interpreter, never TensorFlow.

The public API, each name loaded on first use (PEP 562), so that importing
one small module (``happysad.edge.errors``, say) loads neither OpenCV nor an
interpreter:

- :func:`preprocess`: the one preprocessing function (training, calibration,
  evaluation and the device all call it).
- :func:`load_image`, :func:`find_images`: decode files, with reasons for bad ones.
- :class:`Classifier`, :class:`Prediction`: load a model once, classify many.
- :func:`read_metadata`, :class:`ModelMetadata`: what a model file says about itself.
- :class:`HappysadError`: the one-line, user-fixable error.

The rooms, lowest first (the import contracts in ``pyproject.toml`` keep
this order; ``docs/reference.md`` says what each module holds):

- this package's own modules (``errors``, ``fileio``, ``images``,
  ``dataset``, ``votes``, ``metrics``): what training, export and the
  benchmarks share with the device; no interpreter;
- :mod:`.runtime`: interpreters, model metadata, preprocessing, prediction,
  signatures;
- :mod:`.faces`: the face detectors and the crop;
- :mod:`.classifier`: a model plus a face finder;
- :mod:`.camera` (the camera loop and its outputs) and :mod:`.device`
  (install, verify);
- :mod:`.cli`: ``happysad-edge``.
"""

import importlib as _importlib
import os as _os

# OpenCV reads its decoders' pixel limit once, when it loads: set it before
# any edge module imports cv2, as a second gate behind edge.images' own
# header check (50 megapixels, edge.images.MAX_PIXELS). A program that
# imported cv2 before edge keeps OpenCV's default (2^30 pixels).
_os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", "50000000")

__version__ = "0.1.0"

#: Public name -> module that defines it.
_PUBLIC = {
    "Classifier": "classifier",
    "read_metadata": "classifier",
    "HappysadError": "errors",
    "IMAGE_SUFFIXES": "images",
    "find_images": "images",
    "load_image": "images",
    "ModelMetadata": "runtime.metadata",
    "Prediction": "runtime.prediction",
    "preprocess": "runtime.preprocess",
}

__all__ = [*_PUBLIC, "__version__"]


def __getattr__(name: str):
    """PEP 562: the public names, imported on first use."""
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])
