"""Check a copied model file before trusting it: size and sha256 against the
export's ``manifest.json``, then its metadata, then that it loads and runs.

The bytes are checked first, so a tampered or truncated file is refused
before any interpreter parses it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from happysad.edge.classifier import Classifier
from happysad.edge.errors import HappysadError, UsageError
from happysad.edge.fileio import file_digest
from happysad.edge.jsonfile import read_json
from happysad.edge.reading import check_regular
from happysad.edge.runtime.preprocess import channels_of
from happysad.edge.runtime.signing import configured_key, signature_path, verify_file

MANIFEST_NAME = "manifest.json"


def manifest_record(model: Path, manifest: Path) -> dict:
    """The manifest's record of ``model`` (looked up by file name).

    Raises:
        HappysadError: the manifest is missing or broken, or does not list the file.
    """
    obj = read_json(manifest, "manifest")
    files = obj.get("files")
    if not isinstance(files, dict):
        raise HappysadError(
            f"{manifest}: not a happysad manifest (no files); pass the one happysad-export wrote with --manifest FILE"
        )
    rec = files.get(model.name)
    if not isinstance(rec, dict) or not {"size_bytes", "sha256"} <= set(rec):
        listed = ", ".join(map(str, files)) or "none"
        raise HappysadError(
            f"{manifest}: does not list {model.name} (it lists {listed}); "
            "pass the manifest of the export this file came from with --manifest FILE"
        )
    size, digest = rec["size_bytes"], rec["sha256"]
    if (
        not isinstance(size, int)
        or isinstance(size, bool)
        or size < 0
        or not isinstance(digest, str)
        or len(digest) != 64
        or any(c not in "0123456789abcdef" for c in digest)
    ):
        raise HappysadError(
            f"{manifest}: the record of {model.name} is malformed (size_bytes must be a "
            "whole number, sha256 64 hex digits); export again or copy the manifest again"
        )
    return rec


def check_bytes(model: Path, rec: dict, manifest: Path) -> tuple[int, str]:
    """Compare a file's size and sha256 with its manifest record.

    Returns:
        (size in bytes, sha256 hex).

    Raises:
        HappysadError: size or sha256 differ; the message says which.
    """
    size, digest = file_digest(model)
    if size != rec["size_bytes"]:
        how = "truncated" if size < rec["size_bytes"] else "grown"
        raise HappysadError(
            f"{model}: {size} bytes, but {manifest.name} says {rec['size_bytes']} "
            f"({how} in copying or changed); copy the file again"
        )
    if digest != rec["sha256"]:
        raise HappysadError(
            f"{model}: sha256 {digest[:16]}… does not match {manifest.name} "
            f"({str(rec['sha256'])[:16]}…): the file was changed or corrupted; copy it again"
        )
    return size, digest


def check_model(model: Path, rec: dict, backend: str | None = None, threads: int | None = None) -> Classifier:
    """Load the file, check its metadata against its tensors and the manifest, run it once.

    The one run is on a mid-gray image (all pixels 128), whose output must be
    a probability in 0..1.

    Raises:
        HappysadError: the metadata does not parse or disagrees with the
            model's input tensor or with the manifest's format, the model
            does not load, or its output is not a probability.
    """
    clf = Classifier(model, threads, backend)
    meta, b = clf.metadata, clf.backend
    fmt = meta.extra.get("format")
    if rec.get("format") and fmt != rec["format"]:
        raise HappysadError(
            f"{model}: its metadata says format {fmt!r}, the manifest {rec['format']!r}; "
            "the file was renamed or mixed up with another; copy it again"
        )
    if meta.input_dtype is not None:
        dtype = np.dtype(b.input_dtype).name
        quant = (meta.input_scale, meta.input_zero_point) if meta.input_scale is not None else None
        actual = (float(b.input_quant[0]), int(b.input_quant[1])) if b.input_quant else None
        if dtype != meta.input_dtype or quant != actual:
            raise HappysadError(
                f"{model}: input tensor is {dtype} {actual}, its metadata says "
                f"{meta.input_dtype} {quant}; re-export the model"
            )
    channels = channels_of(meta.color)
    gray = np.full((*meta.image_size, channels), 128, np.uint8)
    # The backend's own output, before Classifier.scores clips it to 0..1:
    # each value a probability, and a softmax's summing to 1 (within an
    # int8 output's rounding, 1/256 per class).
    raw = np.asarray(b.run(gray), dtype=np.float64).reshape(-1)
    total_ok = meta.output != "softmax" or abs(raw.sum() - 1) <= 0.01 + len(raw) / 256
    if not (np.all(np.isfinite(raw)) and np.all((-1e-3 <= raw) & (raw <= 1 + 1e-3)) and total_ok):
        shown = ", ".join(f"{v:.4g}" for v in raw[:8])
        raise HappysadError(
            f"{model}: output [{shown}] on a gray image is not {meta.output} probabilities; re-export the model"
        )
    return clf


def verify(
    model: str | os.PathLike,
    manifest: str | os.PathLike | None = None,
    backend: str | None = None,
    threads: int | None = None,
    public_key: str | os.PathLike | None = None,
) -> dict:
    """Verify a model file: bytes, then its signature, then metadata, then that it loads and runs.

    Args:
        model: a .tflite or .onnx file.
        manifest: the export's manifest; default ``manifest.json`` next to the model.
        backend, threads: as for :class:`edge.Classifier`.
        public_key: an Ed25519 public key file (else ``$HAPPYSAD_PUBLIC_KEY``):
            ``MODEL.sig`` must match it. Without one, the report says whether
            the file is signed, unchecked.

    Returns:
        dict: ``path``, ``manifest``, ``size_bytes``, ``sha256``, ``format``,
        ``schema_version``, ``backend``, ``input`` ({dtype, scale,
        zero_point}; the tensor's own), ``verification`` (the figures
        measured at export, or None).

    Raises:
        UsageError: the model or the manifest does not exist (exit status 2).
        HappysadError: any check fails; the message says which and what to do.
    """
    model = Path(model)
    manifest = Path(manifest) if manifest else model.parent / MANIFEST_NAME
    check_regular(model, "model")
    if not manifest.exists():
        raise UsageError(
            f"{manifest}: no such manifest file; copy the export's manifest.json "
            "next to the model or pass it with --manifest FILE"
        )
    rec = manifest_record(model, manifest)
    size, digest = check_bytes(model, rec, manifest)
    signature = signature_status(model, public_key)
    clf = check_model(model, rec, backend, threads)
    b = clf.backend
    return {
        "path": str(model),
        "manifest": str(manifest),
        "size_bytes": size,
        "sha256": digest,
        "format": clf.metadata.extra.get("format"),
        "schema_version": clf.metadata.extra.get("schema_version"),
        "backend": b.name,
        "input": {
            "dtype": np.dtype(b.input_dtype).name,
            "scale": float(b.input_quant[0]) if b.input_quant else None,
            "zero_point": int(b.input_quant[1]) if b.input_quant else None,
        },
        "verification": clf.metadata.verification,
        "signature": signature,
    }


def signature_status(model: Path, public_key=None) -> str:
    """Check ``MODEL.sig`` when a public key is configured (the file, else
    ``$HAPPYSAD_PUBLIC_KEY``); else say whether there is one.

    Raises:
        HappysadError: a key is configured and the file is unsigned or wrongly signed.
    """
    key, key_name = configured_key(public_key)
    if key is not None:
        return f"valid, key {verify_file(model, key, key_name)}"
    return "present, not checked (no public key)" if signature_path(model).exists() else "unsigned"


def summary_line(report: dict) -> str:
    """One line for a verified file: ``OK``, the bytes, the input, the export's figures."""
    inp = report["input"]
    quant = f" scale {inp['scale']:g} zero point {inp['zero_point']}" if inp["scale"] is not None else ""
    line = (
        f"OK {report['path']}: {report['size_bytes']} bytes, sha256 {report['sha256'][:16]}… "
        f"matches {Path(report['manifest']).name}; metadata v{report['schema_version']} "
        f"({report['format']}); loads with {report['backend']}, input {inp['dtype']}{quant}"
    )
    v = report["verification"]
    if v:
        line += (
            f"; at export on {v['n']} {v['split']} images: accuracy {v['accuracy']:.4f} vs float "
            f"{v['float_accuracy']:.4f}, drop {v['drop_pp']:+.2f} pp, agreement {v['agreement']:.4f}"
        )
    return line + f"; signature {report.get('signature', 'unsigned')}"
