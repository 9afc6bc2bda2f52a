"""``happysad-export``: write float32 and int8 TFLite and ONNX files from a run."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edge.cli_util import ArgumentParser, positive_int, run_main

PROG = "happysad-export"
from . import FORMATS


def _formats(text: str) -> tuple:
    names = tuple(x.strip() for x in text.split(",") if x.strip())
    bad = [x for x in names if x not in FORMATS]
    if bad or not names:
        shown = ", ".join(bad) if bad else repr(text)
        raise argparse.ArgumentTypeError(f"unknown format {shown}; "
                                         f"valid formats: {', '.join(FORMATS)}")
    return names


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description=__doc__)
    p.add_argument("run_dir", metavar="RUN_DIR", help="run folder written by happysad-train")
    p.add_argument("-o", "--out", default=None, metavar="DIR", help="output folder (default: RUN_DIR/export)")
    p.add_argument("--calib-samples", type=positive_int, default=300,
                   help="representative dataset size, drawn from the train split only")
    p.add_argument("--formats", type=_formats, default=FORMATS, metavar="LIST",
                   help="comma-separated subset of: " + ", ".join(FORMATS))
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration draw")
    p.add_argument("-v", "--verbose", action="store_true", help="show the converters' own log output")
    return p


def _body(argv) -> int:
    args = build_parser().parse_args(argv)
    from .convert import ExportOptions, export_run
    manifest = export_run(ExportOptions(args.run_dir, args.out, args.calib_samples, args.formats, args.seed,
                                        args.verbose))
    out = Path(args.out) if args.out else Path(args.run_dir) / "export"
    print(f"wrote {out}/:")
    for name, rec in manifest["files"].items():
        print(f"  {name:24s} {rec['size_bytes'] / 1e6:8.3f} MB  sha256 {rec['sha256'][:16]}…")
    print(f"  {'manifest.json':24s}")
    first = next(iter(manifest["files"]), None)
    if first:
        pick = "model_int8.tflite" if "model_int8.tflite" in manifest["files"] else first
        print("next:")
        print(f"  happysad-edge classify {out / pick} PHOTO_OR_FOLDER")
        print(f"  happysad-bench {' '.join(str(out / n) for n in manifest['files'])} "
              f"--split {Path(args.run_dir) / 'split.json'}")
    return 0


def main(argv=None) -> int:
    """Entry point of ``happysad-export``; returns the exit code."""
    return run_main(PROG, _body, argv)


if __name__ == "__main__":
    sys.exit(main())
