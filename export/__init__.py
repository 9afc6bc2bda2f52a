"""happysad on the workstation: convert a trained run to TFLite and ONNX.

TensorFlow is imported only when a conversion starts, so ``--help`` and
bad-input errors answer at once.
"""

#: Format names accepted by ``happysad-export --formats``.
FORMATS = ("tflite-float32", "tflite-float16", "tflite-int8", "onnx-float32", "onnx-int8")
#: Input and output types of the full-integer TFLite file (``--io-type``).
IO_TYPES = ("int8", "uint8")
#: Calibration methods of the int8 ONNX file (``--calibration``), onnxruntime's names lower-cased.
CALIBRATIONS = ("minmax", "entropy", "percentile")
