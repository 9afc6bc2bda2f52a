"""Where a model file keeps its metadata: a zip appended to a TFLite flatbuffer, or an ONNX model's metadata_props."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from happysad.edge.errors import HappysadError
from happysad.edge.reading import read_regular
from happysad.edge.runtime.metadata import MAX_METADATA_BYTES, ONNX_KEY, TFLITE_MEMBER, ModelMetadata, decode, encode


def append_to_tflite(model: bytes, meta: ModelMetadata, files: dict[str, bytes] | None = None) -> bytes:
    """Return the TFLite flatbuffer ``model`` with the metadata zip appended.

    ``model`` must be the bare flatbuffer; to replace the metadata of a file
    that has some, pass :func:`strip_tflite_metadata` of it. ``files``: more
    members of the zip (name: bytes), e.g. the associated ``labels.txt`` of
    the TFLite Model Metadata, which keeps its associated files in the same
    appended zip.
    """
    buf = io.BytesIO()
    # Stored, not deflated: the TFLite metadata readers (MediaPipe's among
    # them) map associated files in place and refuse a compressed archive.
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(TFLITE_MEMBER, encode(meta))
        for name, data in (files or {}).items():
            zf.writestr(name, data)
    return model + buf.getvalue()


def strip_tflite_metadata(data: bytes) -> bytes:
    """The flatbuffer of a TFLite file without the zip :func:`append_to_tflite` added.

    The zip begins with a local file header (``PK\\x03\\x04``); its offset is
    read from the archive's own central directory, so bytes of the
    flatbuffer that happen to look like a header are never mistaken for it.
    A file with no archive is returned unchanged.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = zf.infolist()
    except zipfile.BadZipFile:
        return data
    if not infos:
        return data
    # ZipFile shifts header offsets by the bytes before the archive
    # (``concat``), so they are offsets from the start of ``data``.
    start = min(i.header_offset for i in infos)
    return data[:start]


def read_tflite_metadata(path: str | Path, content: bytes | None = None) -> ModelMetadata:
    """Read the metadata appended to a TFLite file (from ``content``, the
    file's bytes already read, when given; ``path`` names it in messages).

    Only the member :data:`TFLITE_MEMBER` is read, and only up to
    :data:`MAX_METADATA_BYTES`.

    Raises:
        UsageError: the file is missing (exit status 2).
        HappysadError: not a regular file (:func:`edge.reading.read_regular`),
            unreadable, or carries no valid metadata.
    """
    path = Path(path)
    if content is None:  # through the regular-file gate, never an open that waits on a FIFO
        content = read_regular(path, "model")
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as zf:
            info = zf.getinfo(TFLITE_MEMBER)
            if info.flag_bits & 0x1 or info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise HappysadError(
                    f"{path}: model metadata is encrypted or compressed with an unsupported method; re-export the model"
                )
            if info.file_size > MAX_METADATA_BYTES:
                raise HappysadError(
                    f"{path}: model metadata is {info.file_size} bytes, over the "
                    f"{MAX_METADATA_BYTES}-byte limit; re-export the model"
                )
            with zf.open(info) as fh:
                raw = fh.read(MAX_METADATA_BYTES + 1)
    except (zipfile.BadZipFile, KeyError, EOFError, zipfile.LargeZipFile, NotImplementedError, RuntimeError):
        raise HappysadError(
            f"{path}: no happysad metadata in this model file (truncated, or not exported by happysad-export)"
        ) from None
    except OSError as exc:
        raise HappysadError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return decode(raw, str(path))


def read_onnx_metadata(custom_map: dict, source: str) -> ModelMetadata:
    """Parse the metadata from an ONNX model's ``metadata_props`` map.

    Args:
        custom_map: ``onnxruntime.InferenceSession.get_modelmeta().custom_metadata_map``.
        source: file name for messages.

    Raises:
        HappysadError: the key is missing or the metadata is invalid.
    """
    raw = custom_map.get(ONNX_KEY)
    if raw is None:
        raise HappysadError(f"{source}: no happysad metadata in this model file (not exported by happysad-export)")
    return decode(raw.encode(), source)
