"""happysad on the workstation: convert a trained run to TFLite and ONNX.

TensorFlow is imported only when a conversion starts, so ``--help`` and
bad-input errors answer at once.
"""

#: Format names accepted by ``happysad-export --formats``.
FORMATS = ("tflite-float32", "tflite-int8", "onnx-float32", "onnx-int8")
