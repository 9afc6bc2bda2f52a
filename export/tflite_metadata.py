"""The TFLite Model Metadata block (``TFLITE_METADATA``), so tools of the
TFLite ecosystem read a model's labels and input without this project.

The block is a FlatBuffer of the TFLite metadata schema
(``metadata_schema.fbs`` of TFLite Support, now in MediaPipe; file
identifier ``M001``), stored as a buffer of the model and named in the
model's ``metadata`` list, with the labels as an associated file
(``labels.txt``, type ``TENSOR_AXIS_LABELS``) in the zip appended to the
model, the layout TFLite Support's ``MetadataPopulator`` writes and
Netron, the Task Library and MediaPipe read.

Written here with the ``flatbuffers`` package from the schema's field slots
(each noted below): the well-kept writers (``tflite-support``,
``mediapipe``'s ``metadata_writers``) do not install beside this project's
pins (tflite-support needs protobuf < 4, TensorFlow 2.21 needs 5 or later;
mediapipe brings opencv-contrib-python, which overwrites the pinned
OpenCV). The model's own tables are rewritten with TensorFlow's
``flatbuffer_utils`` (export runs where TensorFlow is).
"""

from __future__ import annotations

import flatbuffers

from happysad.edge.metadata import ModelMetadata

#: The name TFLite tools look the block up by (``MetadataPopulator.METADATA_FIELD_NAME``).
METADATA_NAME = "TFLITE_METADATA"
#: The schema's file identifier (``file_identifier "M001"`` in metadata_schema.fbs).
FILE_IDENTIFIER = b"M001"
#: The associated file holding the labels, one per line in output order.
LABEL_FILE = "labels.txt"
#: Oldest metadata parser that reads every field written here (all are in schema 1.0).
MIN_PARSER_VERSION = "1.0.0"

# Enum values of metadata_schema.fbs.
_GRAYSCALE, _RGB = 2, 1  # ColorSpaceType
_FEATURE_PROPERTIES, _IMAGE_PROPERTIES = 1, 2  # ContentProperties
_NORMALIZATION_OPTIONS = 1  # ProcessUnitOptions
_TENSOR_AXIS_LABELS = 2  # AssociatedFileType


def _floats(b: flatbuffers.Builder, values) -> int:
    b.StartVector(4, len(values), 4)
    for v in reversed(values):
        b.PrependFloat32(float(v))
    return b.EndVector()


def _tables(b: flatbuffers.Builder, offsets) -> int:
    b.StartVector(4, len(offsets), 4)
    for o in reversed(offsets):
        b.PrependUOffsetTRelative(o)
    return b.EndVector()


def _table(b: flatbuffers.Builder, slots: int, fields) -> int:
    """A table of ``slots`` fields; ``fields``: (slot, kind, value), kind one
    of "off" (table, string or vector), "i8", "u8", "u32"."""
    b.StartObject(slots)
    for slot, kind, value in fields:
        if kind == "off":
            b.PrependUOffsetTRelativeSlot(slot, value, 0)
        elif kind == "i8":
            b.PrependInt8Slot(slot, value, 0)
        elif kind == "u8":
            b.PrependUint8Slot(slot, value, 0)
        else:
            b.PrependUint32Slot(slot, value, 0)
    return b.EndObject()


def output_labels(meta: ModelMetadata) -> list[str]:
    """The labels of the output tensor's axis: every label of a softmax model;
    of a sigmoid model (one unit, the probability of the second label), that label."""
    return list(meta.labels) if meta.output == "softmax" else [meta.labels[1]]


def _input_tensor(b: flatbuffers.Builder, meta: ModelMetadata) -> int:
    name = b.CreateString("image")
    h, w = meta.image_size
    desc = b.CreateString(
        f"{'Gray' if meta.color == 'gray' else 'RGB'} face crop, {w}x{h}, NHWC, raw pixels 0-255 "
        "(the model rescales them itself)"
    )
    size = _table(b, 2, [(0, "u32", w), (1, "u32", h)])  # ImageSize: width 0, height 1
    props = _table(b, 2, [(0, "i8", _GRAYSCALE if meta.color == "gray" else _RGB), (1, "off", size)])  # ImageProperties
    content = _table(b, 3, [(0, "u8", _IMAGE_PROPERTIES), (1, "off", props)])  # Content: type 0, properties 1
    # NormalizationOptions (mean 0, std 1): pixels go in as they are.
    norm = _table(b, 2, [(0, "off", _floats(b, [0.0])), (1, "off", _floats(b, [1.0]))])
    unit = _table(b, 2, [(0, "u8", _NORMALIZATION_OPTIONS), (1, "off", norm)])  # ProcessUnit: type 0, options 1
    units = _tables(b, [unit])
    stats = _table(b, 2, [(0, "off", _floats(b, [255.0])), (1, "off", _floats(b, [0.0]))])  # Stats: max 0, min 1
    # TensorMetadata: name 0, description 1, content 3, process_units 4, stats 5, associated_files 6.
    return _table(b, 7, [(0, "off", name), (1, "off", desc), (3, "off", content), (4, "off", units), (5, "off", stats)])


def _output_tensor(b: flatbuffers.Builder, meta: ModelMetadata) -> int:
    name = b.CreateString("probability")
    if meta.output == "softmax":
        text = "Probability of each label, in the order of labels.txt (softmax)."
    else:
        text = f"Probability of '{meta.labels[1]}' (sigmoid); '{meta.labels[0]}' is 1 minus it."
    desc = b.CreateString(text)
    file_name, file_desc = b.CreateString(LABEL_FILE), b.CreateString("Labels of the output's last axis, one a line.")
    labels = _table(b, 5, [(0, "off", file_name), (1, "off", file_desc), (2, "i8", _TENSOR_AXIS_LABELS)])
    files = _tables(b, [labels])
    features = _table(b, 0, [])  # FeatureProperties: no fields
    content = _table(b, 3, [(0, "u8", _FEATURE_PROPERTIES), (1, "off", features)])
    stats = _table(b, 2, [(0, "off", _floats(b, [1.0])), (1, "off", _floats(b, [0.0]))])
    return _table(b, 7, [(0, "off", name), (1, "off", desc), (3, "off", content), (5, "off", stats), (6, "off", files)])


def metadata_buffer(meta: ModelMetadata, version: str) -> bytes:
    """The ``TFLITE_METADATA`` FlatBuffer of a model.

    Args:
        meta: the model's own metadata (labels, output kind, image size, colour).
        version: the package version, written as the metadata's version.

    Returns:
        the FlatBuffer bytes, file identifier ``M001``.
    """
    b = flatbuffers.Builder(1024)
    inp, out = _input_tensor(b, meta), _output_tensor(b, meta)
    inputs, outputs = _tables(b, [inp]), _tables(b, [out])
    # SubGraphMetadata: input_tensor_metadata 2, output_tensor_metadata 3.
    subgraph = _table(b, 10, [(2, "off", inputs), (3, "off", outputs)])
    subgraphs = _tables(b, [subgraph])
    name = b.CreateString(f"happysad {'/'.join(meta.labels)} expression classifier")
    desc = b.CreateString(
        f"Classifies a face crop as {', '.join(meta.labels)}. Labels in labels.txt; this project's own "
        "metadata (preprocessing, threshold, figures) in happysad_metadata.json beside it."
    )
    ver, author, lic, parser = (b.CreateString(s) for s in (version, "happysad", "Apache-2.0", MIN_PARSER_VERSION))
    # ModelMetadata: name 0, description 1, version 2, subgraph_metadata 3, author 4, license 5, min_parser_version 7.
    root = _table(
        b,
        8,
        [
            (0, "off", name),
            (1, "off", desc),
            (2, "off", ver),
            (3, "off", subgraphs),
            (4, "off", author),
            (5, "off", lic),
            (7, "off", parser),
        ],
    )
    b.Finish(root, file_identifier=FILE_IDENTIFIER)
    return bytes(b.Output())


def with_metadata_buffer(model: bytes, block: bytes) -> bytes:
    """The bare TFLite flatbuffer ``model`` with ``block`` as its
    ``TFLITE_METADATA`` (replacing one it had); graph and weights unchanged."""
    import numpy as np
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    obj = flatbuffer_utils.convert_bytearray_to_object(bytearray(model))
    obj.metadata = obj.metadata or []
    old = [m for m in obj.metadata if m.name in (METADATA_NAME, METADATA_NAME.encode())]
    if old:  # written before (export embeds twice): its buffer takes the new block
        index = old[0].buffer
    else:
        obj.buffers.append(schema.BufferT())
        index = len(obj.buffers) - 1
        entry = schema.MetadataT()
        entry.name, entry.buffer = METADATA_NAME, index
        obj.metadata.append(entry)
    obj.buffers[index].data = np.frombuffer(block, dtype=np.uint8)
    return flatbuffer_utils.convert_object_to_bytearray(obj)
