"""happysad on the workstation: convert a trained run to TFLite and ONNX.

TensorFlow is imported only when a conversion starts, so ``--help`` and
bad-input errors answer at once.
"""

#: Format names accepted by ``happysad-export --formats``.
FORMATS = ("tflite-float32", "tflite-float16", "tflite-int8", "onnx-float32", "onnx-int8")
#: Input and output types of the full-integer TFLite file (``--io-type``).
IO_TYPES = ("int8", "uint8")
#: Calibration methods of the int8 ONNX file (``--calibration``), onnxruntime's names lower-cased.
#: ``auto`` (the default) calibrates with each and keeps the file that loses
#: least on the validation split.
CALIBRATIONS = ("auto", "minmax", "entropy", "percentile")
#: The methods ``auto`` tries, in order of preference on a tie.
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
#: Least validation accuracy (0..1) of the Keras model for an export to go
#: ahead (``--min-accuracy``): a two-class model near chance (a 3-epoch run,
#: shuffled labels) is not worth shipping, whatever its files lose against it.
MIN_ACCURACY = 0.6
#: Default size of the representative dataset (``--calib-samples``).
#: TFLite's post-training quantization guide suggests "around 100-500" samples.
CALIB_SAMPLES = 300
#: Default largest accuracy drop (percentage points) a file may have on the
#: validation split against the Keras model and still be written (``--max-drop``).
MAX_DROP_PP = 1.0
