"""``happysad-export``: write TFLite (float32, float16, int8) and ONNX (float32,
int8) files from a run, each verified on the validation split before it is
written."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from happysad.edge.console import ArgumentParser, float_range, positive_int, require_workstation, run_main
from happysad.edge.errors import HappysadError

from . import CALIB_SAMPLES, CALIBRATIONS, FORMATS, IO_TYPES, MAX_DROP_PP, MIN_ACCURACY

PROG = "happysad-export"


def _formats(text: str) -> tuple:
    names = tuple(x.strip() for x in text.split(",") if x.strip())
    bad = [x for x in names if x not in FORMATS]
    if bad or not names:
        shown = ", ".join(bad) if bad else repr(text)
        raise argparse.ArgumentTypeError(f"unknown format {shown}; valid formats: {', '.join(FORMATS)}")
    return names


#: --max-drop: negative asks a file to beat the Keras model (a forced refusal, for trying the gate).
_percentage_points = float_range(-100.0, 100.0, unit="percentage points")
_fraction = float_range(0.0, 1.0, hint="0.6 for 60%")


def _quantization_args(p) -> None:
    p.add_argument(
        "--io-type",
        choices=IO_TYPES,
        default="int8",
        help="input and output type of model_int8.tflite: int8 takes pixel - 128 "
        "(zero point -128), uint8 takes the raw camera pixels as they are (zero point 0)",
    )
    p.add_argument(
        "--per-channel",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="model_int8.onnx weights with one scale per output channel (else per tensor)",
    )
    p.add_argument(
        "--calibration",
        choices=CALIBRATIONS,
        default="auto",
        help="how model_int8.onnx's activation ranges are calibrated; auto tries minmax, "
        "entropy and percentile and keeps the one that loses least on the validation split",
    )


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description=__doc__)
    p.add_argument("run_dir", metavar="RUN_DIR", help="run folder written by happysad-train")
    p.add_argument("-o", "--out", default=None, metavar="DIR", help="output folder, if not RUN_DIR/export")
    p.add_argument(
        "--formats",
        type=_formats,
        default=",".join(FORMATS),
        metavar="LIST",
        help="comma-separated subset of: " + ", ".join(FORMATS),
    )
    p.add_argument(
        "--calib-samples",
        type=positive_int,
        default=CALIB_SAMPLES,
        metavar="N",
        help=f"representative dataset size, drawn from the train split only; below {CALIB_SAMPLES} warns",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration draw")
    _quantization_args(p)
    p.add_argument(
        "--max-drop",
        type=_percentage_points,
        default=MAX_DROP_PP,
        metavar="PP",
        help="largest accuracy drop against the Keras model on the validation split, in "
        "percentage points, for a file to be written",
    )
    p.add_argument(
        "--min-accuracy",
        type=_fraction,
        default=MIN_ACCURACY,
        metavar="A",
        help="least validation accuracy (0..1) of the Keras model for the export to go ahead",
    )
    p.add_argument(
        "--debug-quant", action="store_true", help="also write a per-layer quantization error CSV for each int8 file"
    )
    p.add_argument(
        "--sign",
        metavar="KEY",
        default=None,
        help="sign each written file with this Ed25519 private key (happysad-edge keygen): MODEL.sig beside it",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="show the converters' own log output")
    return p


def _body(argv) -> int:
    args = build_parser().parse_args(argv)
    require_workstation()
    from .convert import ExportOptions, export_run
    from .ship import refusal_message

    manifest = export_run(
        ExportOptions(
            run_dir=args.run_dir,
            out_dir=args.out,
            calib_samples=args.calib_samples,
            formats=args.formats,
            seed=args.seed,
            verbose=args.verbose,
            io_type=args.io_type,
            per_channel=args.per_channel,
            calibration=args.calibration,
            max_drop=args.max_drop,
            debug_quant=args.debug_quant,
            min_accuracy=args.min_accuracy,
            sign=args.sign,
        )
    )
    out = Path(args.out) if args.out else Path(args.run_dir) / "export"
    files = manifest["files"]
    print(f"wrote {out}/:")
    for name, rec in files.items():
        v = rec.get("verification") or {}
        figures = f"  {v['split']} accuracy {v['accuracy']:.4f}, drop {v['drop_pp']:+.2f} pp" if "accuracy" in v else ""
        kept = "" if name in manifest["written"] else "  (from an earlier export, unchanged)"
        print(f"  {name:28s} {rec['size_bytes'] / 1e6:8.3f} MB  sha256 {rec['sha256'][:16]}…{figures}{kept}")
    for name in manifest.get("debug_reports", {}):
        print(f"  {name:28s} {(out / name).stat().st_size / 1e6:8.3f} MB  per-layer quantization error")
    print(
        f"  {'manifest.json':28s} {(out / 'manifest.json').stat().st_size / 1e6:8.3f} MB  "
        f"{len(files)} files with size, sha256 and verification figures"
    )
    if files:
        pick = next((n for n in ("model_int8.tflite", "model_int8.onnx") if n in files), next(iter(files)))
        print("next:")
        print(f"  happysad-edge verify {out / pick}")
        print(f"  happysad-edge classify {out / pick} PHOTO_OR_FOLDER")
        print(f"  happysad-bench {' '.join(str(out / n) for n in files)} --split {Path(args.run_dir) / 'split.json'}")
    if manifest["refused"]:
        raise HappysadError(refusal_message(manifest))
    return 0


def main(argv=None) -> int:
    """Entry point of ``happysad-export``; returns the exit code."""
    return run_main(PROG, _body, argv)


if __name__ == "__main__":
    sys.exit(main())
