"""Shipping a converted file: metadata embedded, written under a temporary
name, verified in the edge runtime, renamed only if it passes; the manifest
records of the files in an export folder."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from happysad.edge import HappysadError
from happysad.edge.device.verify import MANIFEST_NAME, file_digest
from happysad.edge.fileio import atomic_path, write_json
from happysad.edge.jsonfile import read_json
from happysad.edge.runtime.backends import is_tflite_bytes, load_backend
from happysad.edge.runtime.embedding import append_to_tflite, strip_tflite_metadata
from happysad.edge.runtime.metadata import ONNX_KEY, ModelMetadata, encode

from .validate import compare, file_probabilities, missed_by


def embed(data: bytes, meta: ModelMetadata) -> bytes:
    """A model file's bytes with ``meta`` embedded, replacing any metadata it had.

    TFLite: the TFLite Model Metadata block set in the flatbuffer
    (:mod:`export.tflite_metadata`), then the zip of this project's metadata
    and ``labels.txt`` appended. ONNX: the JSON set in ``metadata_props``
    under :data:`edge.runtime.metadata.ONNX_KEY`. Either way the graph and weights
    are what they were (TFLite's tables are re-serialized, values unchanged).
    """
    if is_tflite_bytes(data):
        from happysad.edge import __version__

        from .tflite_metadata import LABEL_FILE, metadata_buffer, output_labels, with_metadata_buffer

        body = with_metadata_buffer(strip_tflite_metadata(data), metadata_buffer(meta, __version__))
        labels = ("\n".join(output_labels(meta)) + "\n").encode()
        return append_to_tflite(body, meta, {LABEL_FILE: labels})
    import onnx

    proto = onnx.load_model_from_string(data)
    for entry in [e for e in proto.metadata_props if e.key == ONNX_KEY]:
        proto.metadata_props.remove(entry)
    entry = proto.metadata_props.add()
    entry.key, entry.value = ONNX_KEY, encode(meta).decode()
    proto.producer_name = "happysad"
    return proto.SerializeToString()


def file_record(path: Path) -> dict:
    """{"size_bytes", "sha256"} of a written file (:func:`edge.fileio.file_digest`, which verify checks against)."""
    size, digest = file_digest(path)
    return {"size_bytes": size, "sha256": digest}


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


class _Refused(Exception):
    """Raised inside :func:`atomic_path` so the verified-but-refused file is never renamed."""


def ship(
    path: Path,
    body: bytes,
    meta_for,
    reference: np.ndarray,
    pixels: np.ndarray,
    labels: np.ndarray,
    max_drop: float,
    threshold: float = 0.5,
) -> tuple[dict, bool]:
    """Write one model file under a temporary name, verify it, rename it if it passes.

    The temporary file is loaded by :class:`edge.Classifier`, as a device
    would load it, and run on ``pixels``; its figures are compared with the
    Keras model's ``reference`` on the same images, then embedded in its
    metadata. A file whose accuracy drops more than ``max_drop`` percentage
    points is removed and whatever was at ``path`` stays as it was.

    Args:
        body: model bytes without metadata.
        meta_for: (io, verification) -> :class:`ModelMetadata`, where io is
            (input dtype name, scale or None, zero point or None) as read
            from the loaded model's input tensor.
        reference: float32 (N, C) Keras class probabilities.
        pixels: uint8 (N, H, W, C); labels: int (N,) true classes.

    Returns:
        (verification figures, True if written to ``path``).

    Raises:
        HappysadError: the file cannot be written, or the edge runtime
            cannot load what was converted.
    """
    from happysad.edge import Classifier

    try:
        with atomic_path(path) as tmp:
            _write_synced(tmp, body)
            backend = load_backend(tmp)
            quant = backend.input_quant
            io = (
                np.dtype(backend.input_dtype).name,
                float(quant[0]) if quant else None,
                int(quant[1]) if quant else None,
            )
            del backend
            _write_synced(tmp, embed(body, meta_for(io, None)))
            figures = compare(reference, file_probabilities(Classifier(tmp), pixels), labels, threshold)
            _write_synced(tmp, embed(tmp.read_bytes(), meta_for(io, figures)))
            if missed_by(figures, max_drop) is not None:
                raise _Refused()
    except _Refused:
        return figures, False
    return figures, True


def refusal_message(manifest: dict) -> str:
    """One line naming each refused file and by how much it missed ``--max-drop``."""
    max_drop = manifest["verification"]["max_drop_pp"]
    parts = []
    for name, rec in manifest["refused"].items():
        v = rec["verification"]
        parts.append(
            f"{name} loses {v['drop_pp']:.2f} pp on the {v['split']} split "
            f"({v['float_accuracy']:.4f} -> {v['accuracy']:.4f}, n={v['n']}), "
            f"{rec['missed_by_pp']:.2f} pp over --max-drop {max_drop:g}"
        )
    kept = (
        "; the file of that name, if any, was left as it was"
        if len(parts) == 1
        else "; files of those names, if any, were left as they were"
    )
    return (
        "not written: "
        + "; ".join(parts)
        + kept
        + "; raise --calib-samples, try another --calibration, or find the layer with --debug-quant"
    )


def previous_records(out: Path) -> dict:
    """The file records of the manifest already in ``out`` ({} if none or unreadable)."""
    path = out / MANIFEST_NAME
    if not path.is_file():
        return {}
    try:
        old = read_json(path, "manifest")
    except HappysadError:
        return {}
    files = old.get("files")
    return {n: r for n, r in files.items() if isinstance(r, dict)} if isinstance(files, dict) else {}


def _carried_over(out: Path, records: dict, skip) -> dict:
    """The ``records`` whose files are still in ``out``, unchanged, except the names in ``skip``.

    An export of some formats, or one that refused a file, leaves the other
    files in place; they stay listed so ``happysad-edge verify`` still
    finds them.
    """
    kept = {}
    for name, rec in records.items():
        if name in skip or not (out / name).is_file():
            continue
        if file_record(out / name) == {"size_bytes": rec.get("size_bytes"), "sha256": rec.get("sha256")}:
            kept[name] = rec
    return kept


class Manifest:
    """``manifest.json`` of an export folder, written again around every file.

    Whenever the export stops (a crash, SIGKILL) the manifest lists only
    files that match it: a file's old record is dropped before its new file
    can land, and the records of earlier exports stay while their files are
    still there unchanged.

    Attributes:
        out: the export folder. written, refused: {file name: record} of
        this export. debug_reports: {CSV name: format}. cache: what the
        conversions share (the float ONNX proto, the calibration choice).
    """

    def __init__(self, out: Path, order: list[str], fields: dict):
        self.out, self.order, self.fields = out, order, fields
        self.previous = previous_records(out)
        self.written, self.refused, self.debug_reports, self.cache = {}, {}, {}, {}

    def save(self, pending: str | None = None) -> dict:
        """Write the manifest (``pending``: a file about to be replaced, not listed) and return it."""
        files = {**_carried_over(self.out, self.previous, {*self.written, pending}), **self.written}
        rank = {name: i for i, name in enumerate(self.order)}
        files = dict(sorted(files.items(), key=lambda kv: rank.get(kv[0], len(rank))))
        manifest = {
            **self.fields,
            "files": files,
            "written": sorted(self.written),
            "refused": self.refused,
            "debug_reports": self.debug_reports,
        }
        if "calibration_chosen" in self.cache:
            manifest["options"] = {**manifest["options"], "calibration_chosen": self.cache["calibration_chosen"]}
        write_json(self.out / MANIFEST_NAME, manifest)
        return manifest
