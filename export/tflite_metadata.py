"""The TFLite Model Metadata block (``TFLITE_METADATA``), so tools of the
TFLite ecosystem read a model's labels and input without this project.

The block is a FlatBuffer of the TFLite metadata schema
(``metadata_schema.fbs`` of TFLite Support, now in MediaPipe; file
identifier ``M001``), stored as a buffer of the model and named in the
model's ``metadata`` list, with the labels as an associated file
(``labels.txt``, type ``TENSOR_AXIS_LABELS``) in the zip appended to the
model, the layout TFLite Support's ``MetadataPopulator`` writes and
Netron, the Task Library and MediaPipe read.

Built with the schema's own generated Python code (its object API:
``ModelMetadataT``, ``SubGraphMetadataT``, ``TensorMetadataT``, ...,
packed with the ``flatbuffers`` package), vendored unmodified from the
mediapipe wheel in :mod:`happysad.export._vendor` (provenance, licence and
checksum in its NOTICE): the well-kept writers (``tflite-support``,
``mediapipe``'s ``metadata_writers``) do not install beside this project's
pins (tflite-support needs protobuf < 4, TensorFlow 2.21 needs 5 or later;
mediapipe brings opencv-contrib-python, which overwrites the pinned
OpenCV). The model's own tables are rewritten with TensorFlow's
``flatbuffer_utils`` (export runs where TensorFlow is).
"""

from __future__ import annotations

import flatbuffers

from happysad.edge.runtime.metadata import ModelMetadata

from ._vendor import metadata_schema_py_generated as schema

#: The name TFLite tools look the block up by (``MetadataPopulator.METADATA_FIELD_NAME``).
METADATA_NAME = "TFLITE_METADATA"
#: The schema's file identifier (``file_identifier "M001"`` in metadata_schema.fbs).
FILE_IDENTIFIER = b"M001"
#: The associated file holding the labels, one per line in output order.
LABEL_FILE = "labels.txt"
#: Oldest metadata parser that reads every field written here (all are in schema 1.0).
MIN_PARSER_VERSION = "1.0.0"


def output_labels(meta: ModelMetadata) -> list[str]:
    """The labels of the output tensor's axis: every label of a softmax model;
    of a sigmoid model (one unit, the probability of the second label), that label."""
    return list(meta.labels) if meta.output == "softmax" else [meta.labels[1]]


def _stats(max_: float, min_: float) -> schema.StatsT:
    stats = schema.StatsT()
    stats.max, stats.min = [max_], [min_]
    return stats


def _input_tensor(meta: ModelMetadata) -> schema.TensorMetadataT:
    h, w = meta.image_size
    size = schema.ImageSizeT()
    size.width, size.height = w, h
    image = schema.ImagePropertiesT()
    image.colorSpace = schema.ColorSpaceType.GRAYSCALE if meta.color == "gray" else schema.ColorSpaceType.RGB
    image.defaultSize = size
    content = schema.ContentT()
    content.contentPropertiesType, content.contentProperties = schema.ContentProperties.ImageProperties, image
    # NormalizationOptions (mean 0, std 1): pixels go in as they are.
    norm = schema.NormalizationOptionsT()
    norm.mean, norm.std = [0.0], [1.0]
    unit = schema.ProcessUnitT()
    unit.optionsType, unit.options = schema.ProcessUnitOptions.NormalizationOptions, norm
    tensor = schema.TensorMetadataT()
    tensor.name = "image"
    tensor.description = (
        f"{'Gray' if meta.color == 'gray' else 'RGB'} face crop, {w}x{h}, NHWC, raw pixels 0-255 "
        "(the model rescales them itself)"
    )
    tensor.content, tensor.processUnits, tensor.stats = content, [unit], _stats(255.0, 0.0)
    return tensor


def _output_tensor(meta: ModelMetadata) -> schema.TensorMetadataT:
    labels = schema.AssociatedFileT()
    labels.name, labels.description = LABEL_FILE, "Labels of the output's last axis, one a line."
    labels.type = schema.AssociatedFileType.TENSOR_AXIS_LABELS
    content = schema.ContentT()
    content.contentPropertiesType = schema.ContentProperties.FeatureProperties
    content.contentProperties = schema.FeaturePropertiesT()  # no fields
    tensor = schema.TensorMetadataT()
    tensor.name = "probability"
    if meta.output == "softmax":
        tensor.description = "Probability of each label, in the order of labels.txt (softmax)."
    else:
        tensor.description = f"Probability of '{meta.labels[1]}' (sigmoid); '{meta.labels[0]}' is 1 minus it."
    tensor.content, tensor.stats, tensor.associatedFiles = content, _stats(1.0, 0.0), [labels]
    return tensor


def metadata_buffer(meta: ModelMetadata, version: str) -> bytes:
    """The ``TFLITE_METADATA`` FlatBuffer of a model, built with the schema's
    generated object API (``ModelMetadataT`` ... packed).

    Args:
        meta: the model's own metadata (labels, output kind, image size, colour).
        version: the package version, written as the metadata's version.

    Returns:
        the FlatBuffer bytes, file identifier ``M001``.
    """
    subgraph = schema.SubGraphMetadataT()
    subgraph.inputTensorMetadata, subgraph.outputTensorMetadata = [_input_tensor(meta)], [_output_tensor(meta)]
    root = schema.ModelMetadataT()
    root.name = f"happysad {'/'.join(meta.labels)} expression classifier"
    root.description = (
        f"Classifies a face crop as {', '.join(meta.labels)}. Labels in labels.txt; this project's own "
        "metadata (preprocessing, threshold, figures) in happysad_metadata.json beside it."
    )
    root.version, root.subgraphMetadata = version, [subgraph]
    root.author, root.license, root.minParserVersion = "happysad", "Apache-2.0", MIN_PARSER_VERSION
    b = flatbuffers.Builder(1024)
    b.Finish(root.Pack(b), file_identifier=FILE_IDENTIFIER)
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
