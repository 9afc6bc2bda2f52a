"""Metadata embedded in every exported model file, so a device needs the
model file alone.

TFLite: a JSON file in a zip archive appended to the flatbuffer, the way the
TFLite Metadata convention packs associated files (the interpreter ignores
bytes after the flatbuffer; ``zipfile`` finds an archive at the end of any
file). ONNX: the same JSON in the model's ``metadata_props`` under the key
:data:`ONNX_KEY`.

Schema versions: 1 has labels, input size and color, preprocessing,
threshold and face margin. 2 adds the input tensor's dtype, scale and zero
point, and the verification figures measured at export (accuracy of the
float model and of this file on the validation split, the drop in
percentage points, the agreement). 3 adds the output kind (``sigmoid``:
one unit, two labels; ``softmax``: one unit per label, any number of
labels) and the suggested ``min_confidence``. A reader of version 3 reads
all three; files of versions 1 and 2 are sigmoid models.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from happysad.edge.errors import HappysadError
from happysad.edge.jsonfile import parse_json
from happysad.edge.runtime.preprocess import COLOR_MODES, channels_of

SCHEMA = "happysad.model-metadata"
SCHEMA_VERSION = 3
#: Output kinds: one sigmoid unit giving p(labels[1]), or a softmax over the labels.
OUTPUTS = ("sigmoid", "softmax")
#: dtypes a model input may have: float32 pixels 0..255, or integers that map
#: to pixels through the input's scale and zero point.
INPUT_DTYPES = ("float32", "int8", "uint8")
_INT_RANGES = {"int8": (-128, 127), "uint8": (0, 255)}
#: Member name of the JSON file inside the zip appended to a TFLite model.
TFLITE_MEMBER = "happysad_metadata.json"
#: Key of the JSON string in an ONNX model's ``metadata_props``.
ONNX_KEY = "happysad"
#: The label given to a prediction under the minimum confidence asked for.
UNCERTAIN = "uncertain"
#: Largest metadata JSON read, in bytes; a larger one is refused.
MAX_METADATA_BYTES = 256 * 1024

#: How a face is framed for the classifier, chosen on wild-dev with the
#: demo model (docs/photos.md): the square crop's side
#: is the mean of the detector box's width and height times (1 + 2 *
#: margin), its centre the box's centre moved down by ``shift`` times the
#: side. YuNet's boxes are taller than wide; FER2013's faces are square
#: crops about as wide as the face: of the framings tried (margin -0.1..0.1,
#: shift 0 or 0.05, side from the longer side, the mean or the width) this
#: one was right most often where a face was found (92.4% against 88.9% for
#: the earlier 0.1 margin on the longer side).
DEFAULT_FACE_MARGIN = 0.0
DEFAULT_FACE_SHIFT = 0.0


@dataclass(frozen=True)
class ModelMetadata:
    """What a model file says about itself.

    Attributes:
        labels: class names in output order. A ``sigmoid`` model has two
            labels and one output p, the probability of ``labels[1]``
            (``labels[0]`` has 1 - p); a ``softmax`` model has one output
            per label, in this order.
        image_size: input (height, width) in pixels.
        color: ``"gray"`` or ``"rgb"``, as understood by :func:`edge.runtime.preprocess`.
        threshold: with two labels, p(labels[1]) at or above which the
            label is ``labels[1]``; with more, unused (the largest wins).
        face_margin: fraction of the detected face box's width and height
            added on each side before cropping (the framing of the training
            faces).
        face_shift: the square crop's centre moved down from the face
            box's centre by this fraction of the crop side
            (:func:`edge.faces.crop.face_crop`).
        extra: every other field of the JSON (run, format, quantization...).
        input_dtype: the model input's dtype, one of :data:`INPUT_DTYPES`;
            None in a version-1 file, which did not record it.
        input_scale, input_zero_point: the affine quantization of an integer
            input, pixel = scale * (q - zero_point); None for a float input.
        verification: figures measured at export on the validation split
            (``split``, ``n``, ``float_accuracy``, ``accuracy``, ``drop_pp``,
            ``agreement``; accuracies and agreement are fractions 0..1, the
            drop is in percentage points); None when not measured.
        output: ``"sigmoid"`` or ``"softmax"`` (:data:`OUTPUTS`).
        min_confidence: the confidence (0..1) below which a prediction is
            suggested to be read as ``"uncertain"``, chosen at export on the
            validation split (:func:`edge.metrics.suggest_min_confidence`);
            0.0 when not chosen. Applied only when asked for
            (``--min-confidence auto``).
    """

    labels: tuple[str, ...]
    image_size: tuple[int, int]
    color: str
    threshold: float = 0.5
    face_margin: float = DEFAULT_FACE_MARGIN
    extra: dict = field(default_factory=dict, compare=False)
    input_dtype: str | None = None
    input_scale: float | None = None
    input_zero_point: int | None = None
    verification: dict | None = None
    face_shift: float = DEFAULT_FACE_SHIFT
    output: str = "sigmoid"
    min_confidence: float = 0.0

    def to_dict(self) -> dict:
        """The JSON-ready dict, schema name and version included."""
        d = dict(self.extra)
        d.update(
            {
                "schema": SCHEMA,
                # Metadata read from a version-1 file does not know its input
                # dtype; it is written back as version 1 rather than invent one.
                "schema_version": SCHEMA_VERSION if self.input_dtype else 1,
                "labels": list(self.labels),
                "output": self.output,
                "input": {
                    "layout": "NHWC",
                    "height": self.image_size[0],
                    "width": self.image_size[1],
                    "channels": channels_of(self.color),
                    "color": self.color,
                    "pixel_range": [0, 255],
                },
                "preprocessing": (
                    "edge.runtime.preprocess: decode to BGR, convert to "
                    f"{self.color}, resize with INTER_AREA, keep uint8 0..255; "
                    "the model divides by 255 itself"
                ),
                "threshold": self.threshold,
                "face_margin": self.face_margin,
                "face_shift": self.face_shift,
                "min_confidence": self.min_confidence,
            }
        )
        if self.input_dtype:
            d["input"].update(
                {"dtype": self.input_dtype, "scale": self.input_scale, "zero_point": self.input_zero_point}
            )
        if self.verification is not None:
            d["verification"] = dict(self.verification)
        else:
            d.pop("verification", None)
        return d

    @classmethod
    def from_dict(cls, d: dict, source: str = "metadata") -> ModelMetadata:
        """Validate and parse the JSON dict.

        Raises:
            HappysadError: a field is missing or has the wrong type, or the
                schema version is newer than this reader knows.
        """
        try:
            version = _version(d)
            output, labels = _output_and_labels(d, version)
            inp = d["input"]
            size = (int(inp["height"]), int(inp["width"]))
            if min(size) < 1 or max(size) > 4096:
                raise ValueError(f"input size {size} is out of range")
            color = inp["color"]
            if color not in COLOR_MODES:
                raise ValueError(f"unknown color mode {color!r}")
            threshold = _within(d, "threshold", 0.5, 0.0, 1.0)
            margin = _within(d, "face_margin", 0.1, 0.0, 1.0)  # version 1 and 2 files: 0.1
            shift = _within(d, "face_shift", 0.0, -0.5, 0.5)
            min_conf = _within(d, "min_confidence", 0.0, 0.0, 1.0)
            dtype, scale, zero_point = _input_quantization(inp, version)
            verification = _verification(d.get("verification"))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            missing = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            raise HappysadError(f"{source}: bad model metadata ({missing}); re-export the model") from None
        return cls(
            tuple(labels),
            size,
            color,
            threshold,
            margin,
            extra=dict(d),
            input_dtype=dtype,
            input_scale=scale,
            input_zero_point=zero_point,
            verification=verification,
            face_shift=shift,
            output=output,
            min_confidence=min_conf,
        )


def _version(d: dict) -> int:
    """The schema version, checked against what this reader knows.

    Raises:
        ValueError: another schema, or a version outside 1..:data:`SCHEMA_VERSION`.
    """
    if d.get("schema") != SCHEMA:
        raise ValueError(f"schema is {d.get('schema')!r}, expected {SCHEMA!r}")
    version = d.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION or version < 1:
        raise ValueError(
            f"schema_version {version!r} is not supported (this reader knows 1..{SCHEMA_VERSION}); upgrade happysad"
        )
    return version


def _output_and_labels(d: dict, version: int) -> tuple[str, list]:
    """(output kind, labels), checked: 2 to 1000 distinct names (two for a
    sigmoid), none of them ``uncertain``, none holding a character that is
    not printable (a newline, an ESC, a tab: refused at load rather than
    escaped in each output).

    Raises:
        ValueError, KeyError: a bad or missing field.
    """
    output = d.get("output", "sigmoid") if version >= 3 else "sigmoid"
    if output not in OUTPUTS:
        raise ValueError(f"output {output!r} is not one of {', '.join(OUTPUTS)}")
    labels = d["labels"]
    if (
        not isinstance(labels, list)
        or not 2 <= len(labels) <= 1000
        or not all(isinstance(x, str) and x for x in labels)
        or len(set(labels)) != len(labels)
    ):
        raise ValueError("labels must be a list of 2 to 1000 distinct names")
    if output == "sigmoid" and len(labels) != 2:
        raise ValueError(f"a sigmoid model has two labels, not {len(labels)}")
    if UNCERTAIN in labels:
        raise ValueError(f"{UNCERTAIN!r} is reserved and cannot be a label")
    # Refused, not escaped: a label is printed in text lines, CSV rows, MQTT
    # payloads and metric labels; a newline or an escape in one would forge
    # an output line or drive the terminal in each of them.
    unprintable = next((x for x in labels if not x.isprintable()), None)
    if unprintable is not None:
        raise ValueError(f"label {unprintable!r} holds a control character (a newline, an escape)")
    return output, labels


def _within(d: dict, key: str, default: float, lo: float, hi: float) -> float:
    """``d[key]`` (``default`` when absent) as a float in lo..hi.

    Raises:
        ValueError, TypeError: not a number, or out of range.
    """
    value = float(d.get(key, default))
    if not lo <= value <= hi:
        raise ValueError(f"{key} {value:g} is outside {lo:g}..{hi:g}")
    return value


def _input_quantization(inp: dict, version: int) -> tuple:
    """(dtype, scale, zero point) of the ``input`` object; all None in version 1.

    Raises:
        KeyError, ValueError, TypeError: a field is missing or out of range.
    """
    if version < 2:
        return None, None, None
    dtype = inp["dtype"]
    if dtype not in INPUT_DTYPES:
        raise ValueError(f"input dtype {dtype!r} is not one of {', '.join(INPUT_DTYPES)}")
    scale, zero_point = inp.get("scale"), inp.get("zero_point")
    if dtype == "float32":
        if scale is not None or zero_point is not None:
            raise ValueError("a float32 input has no scale or zero point")
        return dtype, None, None
    scale = float(scale)
    if not (isinstance(zero_point, int) and scale > 0):
        raise ValueError(f"{dtype} input needs a scale > 0 and an integer zero point")
    low, high = _INT_RANGES[dtype]
    if not low <= zero_point <= high:
        raise ValueError(f"zero point {zero_point} is outside the {dtype} range {low}..{high}")
    return dtype, scale, zero_point


def _verification(v) -> dict | None:
    """Check the optional ``verification`` object (see :class:`ModelMetadata`).

    Raises:
        ValueError, TypeError, KeyError: a figure is missing or out of range.
    """
    if v is None:
        return None
    if not isinstance(v, dict):
        raise ValueError("verification must be an object")
    if not (isinstance(v["n"], int) and v["n"] >= 1):
        raise ValueError("verification n must be a positive integer")
    for key in ("float_accuracy", "accuracy", "agreement"):
        if not 0.0 <= float(v[key]) <= 1.0:
            raise ValueError(f"verification {key} {v[key]} is outside 0..1")
    if not -100.0 <= float(v["drop_pp"]) <= 100.0:
        raise ValueError(f"verification drop_pp {v['drop_pp']} is outside -100..100")
    return dict(v)


def encode(meta: ModelMetadata) -> bytes:
    """The metadata as UTF-8 JSON bytes."""
    return json.dumps(meta.to_dict(), indent=1, sort_keys=True).encode()


def decode(raw: bytes, source: str) -> ModelMetadata:
    """Parse metadata JSON bytes through the shared bounded reader
    (:func:`edge.jsonfile.parse_json`): at most :data:`MAX_METADATA_BYTES`,
    nested at most :data:`edge.jsonfile.MAX_JSON_DEPTH` deep.

    Raises:
        HappysadError: too large, too deep, not JSON, not an object, or
            fails :meth:`ModelMetadata.from_dict`.
    """
    hint = "re-export the model"
    d = parse_json(raw, source, "model metadata", MAX_METADATA_BYTES, hint)
    if not isinstance(d, dict):
        raise HappysadError(f"{source}: model metadata is not a JSON object; {hint}")
    return ModelMetadata.from_dict(d, source)
