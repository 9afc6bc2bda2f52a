"""Convert a trained run to TFLite and ONNX files that carry their own
metadata, each verified against the Keras model before it is shipped.

Each file is written under a temporary name, loaded by the edge runtime and
run on the validation split; its figures (accuracy, drop against the Keras
model, agreement) go into its metadata, and only a file within
``max_drop`` percentage points is renamed to its final name.
``manifest.json`` lists each file with its size, sha256 and figures.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from happysad.edge import HappysadError, __version__, load_image, preprocess
from happysad.edge.console import log as _log
from happysad.edge.dataset import read_split, split_items
from happysad.edge.errors import UsageError
from happysad.edge.fileio import write_bytes
from happysad.edge.jsonfile import read_json

from . import CALIB_SAMPLES, CALIBRATIONS, FORMATS, IO_TYPES, MAX_DROP_PP, MIN_ACCURACY
from .describe import base_metadata, file_metadata, quantization_record
from .ship import Manifest, file_record, ship
from .to_onnx import onnx_float, onnx_int8_body
from .to_tflite import converter_output_held, tflite_bytes, tflite_debug_csv
from .validate import VERIFY_SPLIT, Reference, missed_by, output_kind, reference

FILENAMES = {
    "tflite-float32": "model_float32.tflite",
    "tflite-float16": "model_float16.tflite",
    "tflite-int8": "model_int8.tflite",
    "onnx-float32": "model_float32.onnx",
    "onnx-int8": "model_int8.onnx",
}


#: Per-layer quantization error reports written by ``--debug-quant``.
DEBUG_FILENAMES = {"tflite-int8": "quant_debug_tflite_int8.csv", "onnx-int8": "quant_debug_onnx_int8.csv"}


#: Below this many calibration images (the default) the export warns: with
#: fewer, the activation ranges depend more on which faces were drawn, and
#: a 1-image calibration cost the demo run's int8 ONNX file 32 points on the
#: validation split (measured; its int8 TFLite file, 0.1).
CALIB_WARN_BELOW = CALIB_SAMPLES


#: Validation images the per-layer error reports run on. onnxruntime's
#: debugger keeps every intermediate tensor of every image in memory: on the
#: demo run's 2409 validation images it passed 7 GB and was stopped; with
#: the first 200 the whole export peaks at 1.7 GB (measured).
DEBUG_IMAGES = 200


@dataclass(kw_only=True)
class ExportOptions:
    """Settings of :func:`export_run`.

    Attributes:
        run_dir: folder written by happysad-train.
        out_dir: where to write; default ``run_dir/export``.
        calib_samples: images in the representative dataset, drawn (seeded)
            from the train split only.
        formats: subset of :data:`FORMATS`.
        seed: seed of the calibration draw.
        verbose: show the converters' own output.
        io_type: ``"int8"`` or ``"uint8"``, input and output type of the
            full-integer TFLite file (see :func:`tflite_bytes`).
        per_channel: int8 ONNX weights quantized per output channel (else
            one scale per tensor).
        calibration: ``"minmax"``, ``"entropy"`` or ``"percentile"``, how
            onnxruntime picks the int8 ONNX activation ranges; ``"auto"``
            tries each and keeps the file that loses least on the
            validation split (the choice is recorded in its metadata).
        max_drop: largest accuracy drop, percentage points on the validation
            split against the Keras model, for a file to be written.
        debug_quant: also write a per-layer quantization error CSV for each
            int8 format.
        min_accuracy: least validation accuracy (0..1) of the Keras model
            for anything to be exported.
        sign: an Ed25519 private key file (:func:`edge.runtime.signing.keygen`):
            each written file gets ``MODEL.sig``; None: unsigned (a stale
            ``.sig`` of a replaced file is removed).
    """

    run_dir: str
    out_dir: str | None = None
    calib_samples: int = CALIB_SAMPLES
    formats: tuple = FORMATS
    seed: int = 0
    verbose: bool = False
    io_type: str = "int8"
    per_channel: bool = True
    calibration: str = "auto"
    max_drop: float = MAX_DROP_PP
    debug_quant: bool = False
    min_accuracy: float = MIN_ACCURACY
    sign: str | None = None


def load_run(run_dir: Path):
    """Read a run folder: (keras model, split dict, metrics dict or {}).

    Raises:
        HappysadError: the folder, its model or its split are missing.
    """
    model_path = run_dir / "model.keras"
    if not run_dir.is_dir():
        raise UsageError(f"{run_dir}: no such run folder; train one with happysad-train DATA_DIR --out {run_dir}")
    if not model_path.is_file():
        raise HappysadError(f"{model_path}: no trained model in this run folder; run happysad-train first")
    split = read_split(run_dir / "split.json")
    metrics = read_json(run_dir / "metrics.json", "metrics") if (run_dir / "metrics.json").is_file() else {}
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    try:
        model = keras.saving.load_model(model_path, safe_mode=True, compile=False)
    except Exception as exc:  # Keras raises many types for a bad archive
        raise HappysadError(
            f"{model_path}: cannot load the Keras model ({type(exc).__name__}); train the run again"
        ) from None
    return model, split, metrics


def calibration_images(split: dict, samples: int, seed: int = 0) -> np.ndarray:
    """The representative dataset: ``samples`` train-split images, preprocessed.

    Returns:
        float32 (N, H, W, C) pixels 0..255, the model's input.

    Raises:
        HappysadError: the split has no train images, or one does not decode.
    """
    items = split_items(split, "train")
    if not items:
        raise HappysadError("the split has no train images to calibrate with")
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(items), size=min(samples, len(items)), replace=False)
    size = tuple(split["image"]["size"])
    color = split["image"]["color"]
    calib = np.stack([preprocess(load_image(items[i][0]), size, color) for i in sorted(pick)]).astype(np.float32)
    # The int8 input's scale and zero point come from the smallest and largest
    # pixel the calibration sees. Pinning that range to the full 0..255 (one
    # pixel each) gives scale 1, zero point -128 on any data, so a device can
    # feed raw pixels minus 128; on real photos, which span 0..255, this
    # changes nothing.
    calib[0].flat[0], calib[0].flat[1] = 0.0, 255.0
    return calib


def model_body(
    fmt: str,
    model,
    calib,
    opts: ExportOptions,
    cache: dict,
    out: Path,
    debug_pixels: np.ndarray | None = None,
    judge=None,
) -> tuple:
    """Convert one format.

    Args:
        debug_pixels: uint8 (M, H, W, C) to measure per-layer error on, for
            an int8 format; None for no report.
        judge: (pixels, labels, Keras reference, threshold) of the
            validation split, for ``--calibration auto``.

    Returns:
        (model bytes without metadata, per-layer error CSV bytes or None).
        ``cache`` keeps the float ONNX proto between formats.
    """
    if fmt.startswith("tflite"):
        kind = fmt.split("-")[1]
        body = tflite_bytes(model, kind, calib if kind == "int8" else None, opts.io_type)
        debug = (
            tflite_debug_csv(model, calib, debug_pixels, opts.io_type)
            if kind == "int8" and debug_pixels is not None
            else None
        )
        return body, debug
    if "onnx" not in cache:
        cache["onnx"] = onnx_float(model)
    if fmt == "onnx-float32":
        return cache["onnx"].SerializeToString(), None
    with tempfile.TemporaryDirectory(dir=out, prefix=".onnx-int8-") as tmp:
        return onnx_int8_body(cache, calib, opts.calibration, opts.per_channel, Path(tmp), debug_pixels, judge)


def _calibration(split: dict, opts: ExportOptions) -> np.ndarray | None:
    """The representative dataset when an int8 format is asked for, else None."""
    if not any(f.endswith("int8") for f in opts.formats):
        return None
    calib = calibration_images(split, opts.calib_samples, opts.seed)
    _log(f"representative dataset: {len(calib)} images from the train split")
    if len(calib) < CALIB_WARN_BELOW:
        _log(
            f"warning: {len(calib)} calibration images, fewer than {CALIB_WARN_BELOW}; the int8 "
            "scales and zero points may not cover real inputs (raise --calib-samples)"
        )
    return calib


def _signature(path: Path, key) -> dict:
    """Sign a written file (``MODEL.sig``) and return the manifest's
    ``signature`` and ``signed_by`` fields; without a key remove a stale
    signature and return {}."""
    from happysad.edge.runtime.signing import key_fingerprint, sign_file, signature_path

    if key is None:
        signature_path(path).unlink(missing_ok=True)
        return {}
    sig = sign_file(path, key)
    _log(f"  signed: {sig.name}")
    return {"signature": sig.name, "signed_by": key_fingerprint(key.public_key())}


def _export_format(fmt: str, model, split, extra, calib, ref: Reference, opts, manifest: Manifest) -> None:
    """Convert, ship and record one format (written or refused) in ``manifest``."""
    path = manifest.out / FILENAMES[fmt]
    _log(f"exporting {fmt} -> {path}")
    manifest.save(pending=path.name)
    debug_pixels = ref.pixels[:DEBUG_IMAGES] if opts.debug_quant and fmt in DEBUG_FILENAMES else None
    with converter_output_held(opts.verbose):
        body, debug = model_body(fmt, model, calib, opts, manifest.cache, manifest.out, debug_pixels, ref.judge)
    if debug is not None:
        write_bytes(manifest.out / DEBUG_FILENAMES[fmt], debug)
        manifest.debug_reports[DEBUG_FILENAMES[fmt]] = fmt
    cache = manifest.cache
    quant = quantization_record(fmt, opts, len(calib) if calib is not None else 0, cache)
    if fmt == "onnx-int8" and cache.get("calibration_trials"):
        trials = ", ".join(f"{m} {a:.4f}" for m, a in cache["calibration_trials"].items())
        _log(f"  calibration (val accuracy): {trials}; kept {cache['calibration_chosen']}")

    def meta_for(io, figures):
        return file_metadata(split, extra, fmt, quant, io, figures)

    figures, ok = ship(path, body, meta_for, ref.probs, ref.pixels, ref.labels, opts.max_drop, ref.threshold)
    _log(
        f"  {VERIFY_SPLIT}: accuracy {figures['accuracy']:.4f} (Keras {figures['float_accuracy']:.4f}), "
        f"drop {figures['drop_pp']:+.2f} pp, agreement {figures['agreement']:.4f}: {'ok' if ok else 'REFUSED'}"
    )
    if ok:
        manifest.written[path.name] = {
            "format": fmt,
            **file_record(path),
            "exported_at": extra["exported_at"],
            "verification": figures,
            **_signature(path, manifest.cache.get("signing_key")),
        }
    else:
        manifest.refused[path.name] = {
            "format": fmt,
            "verification": figures,
            "missed_by_pp": missed_by(figures, opts.max_drop),
        }


def _manifest_fields(run_dir: Path, out: Path, extra: dict, calib, opts: ExportOptions, ref: Reference) -> dict:
    """The manifest's fields other than its file lists: run, versions, options, verification settings."""
    return {
        "run": os.path.relpath(run_dir.resolve(), out.resolve()),
        "package_version": __version__,
        "exported_at": extra["exported_at"],
        "options": {
            "calib_samples": len(calib) if calib is not None else 0,
            "seed": opts.seed,
            "io_type": opts.io_type,
            "per_channel": opts.per_channel,
            "calibration": opts.calibration,
        },
        "verification": {
            "split": VERIFY_SPLIT,
            "n": int(len(ref.labels)),
            "keras_accuracy": ref.figures["float_accuracy"],
            "max_drop_pp": opts.max_drop,
        },
    }


def export_run(opts: ExportOptions) -> dict:
    """Convert, verify and write the chosen formats and ``manifest.json``.

    Returns:
        the manifest dict: ``files`` (every model file in the folder that
        passed, with size, sha256 and verification figures, those of earlier
        exports that are still there unchanged included), ``written`` (the
        names this export wrote) and ``refused``
        (files that lost more than ``opts.max_drop``, with their figures and
        ``missed_by_pp``). The caller decides how to report refusals; see
        :func:`export.ship.refusal_message`.

    Raises:
        HappysadError: the run folder is incomplete, a file cannot be
            written, or a converted file does not load.
    """
    if opts.io_type not in IO_TYPES or opts.calibration not in CALIBRATIONS:
        raise HappysadError(f"io_type must be one of {IO_TYPES} and calibration one of {CALIBRATIONS}")
    run_dir = Path(opts.run_dir)
    out = Path(opts.out_dir) if opts.out_dir else run_dir / "export"
    signing_key = None
    if opts.sign:
        from happysad.edge.runtime.signing import load_private_key

        signing_key = load_private_key(opts.sign)  # before minutes of converting, not after
    model, split, metrics = load_run(run_dir)
    calib = _calibration(split, opts)
    ref = reference(model, split, metrics, run_dir, opts.min_accuracy)
    _log(
        f"verifying on the {VERIFY_SPLIT} split: {len(ref.labels)} images, Keras accuracy "
        f"{ref.figures['float_accuracy']:.4f}, max drop {opts.max_drop:g} pp"
    )
    s = ref.suggestion
    extra = base_metadata(split, metrics, run_dir)
    extra["run"].update(output=output_kind(model), min_confidence={"split": VERIFY_SPLIT, **s})
    _log(
        f"suggested --min-confidence {s['min_confidence']:.3f}: the Keras model is right on "
        f"{s['accuracy_kept']:.1%} of the {VERIFY_SPLIT} faces it keeps ({s['coverage']:.1%} "
        f"of them), target {s['target']:.0%}"
    )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HappysadError(f"{out}: cannot create the export folder ({exc.strerror or exc})") from None
    manifest = Manifest(out, list(FILENAMES.values()), _manifest_fields(run_dir, out, extra, calib, opts, ref))
    manifest.cache["signing_key"] = signing_key
    for fmt in FORMATS:
        if fmt in opts.formats:
            _export_format(fmt, model, split, extra, calib, ref, opts, manifest)
    return manifest.save()
