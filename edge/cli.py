"""``happysad-edge``: classify photos or camera frames on the device."""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from .backends import BACKENDS
from .camera import CameraOptions, run as run_camera
from .classifier import Classifier
from .cli_util import ArgumentParser, non_negative_int, positive_int, run_main
from .errors import HappysadError
from .images import find_images, load_image

PROG = "happysad-edge"


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog=PROG, description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def model_args(p):
        p.add_argument("model", metavar="MODEL", help="a .tflite or .onnx file from happysad-export")
        p.add_argument("-t", "--threads", type=positive_int, default=None,
                       help="interpreter threads (default: the interpreter's own)")
        p.add_argument("-b", "--backend", choices=BACKENDS, default=None,
                       help="force an interpreter (default: chosen from the file)")

    p = sub.add_parser("classify", help="classify image files or folders",
                       description="Classify images: the largest face in each, or the whole image.")
    model_args(p)
    p.add_argument("paths", nargs="+", metavar="PATH", help="image file or folder (searched recursively)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")

    p = sub.add_parser("camera", help="classify the largest face in each camera or video frame",
                       description="Classify the largest face in each frame of a camera or video.")
    model_args(p)
    p.add_argument("-s", "--source", default="0", help="camera index, video file or stream URL")
    p.add_argument("--headless", action="store_true", help="print one JSON line per frame, no window")
    p.add_argument("-n", "--max-frames", type=non_negative_int, default=0,
                   help="stop after N frames (0: until the source ends or Ctrl-C)")

    p = sub.add_parser("info", help="show a model file's metadata and tensors")
    model_args(p)
    return parser


def _classify(args) -> int:
    clf = Classifier(args.model, args.threads, args.backend)
    failed = 0
    for root in args.paths:
        try:
            paths = find_images(root)
        except HappysadError as exc:
            print(f"{PROG}: error: {exc}", file=sys.stderr)
            failed += 1
            continue
        for path in paths:
            try:
                pred = clf.classify_image(load_image(path))
            except HappysadError as exc:
                print(f"{PROG}: error: {exc}", file=sys.stderr)
                failed += 1
                continue
            if args.json:
                print(json.dumps({"path": str(path), **pred.to_dict()}), flush=True)
            else:
                face = "face " + ",".join(map(str, pred.face)) if pred.face else "whole image"
                print(f"{path}\t{pred.label}\t{pred.confidence:.3f}\t{face}\t{pred.timings['total']:.2f} ms",
                      flush=True)
    return 1 if failed else 0


def _camera(args) -> int:
    clf = Classifier(args.model, args.threads, args.backend)
    summary = run_camera(clf, CameraOptions(args.source, args.headless, args.max_frames))
    print(f"{PROG}: {summary['frames']} frames, {summary['frames_with_face']} with a face, "
          f"{summary['fps']} FPS", file=sys.stderr)
    return 0


def _info(args) -> int:
    clf = Classifier(args.model, args.threads, args.backend)
    data = Path(args.model).read_bytes()
    b = clf.backend
    info = {
        "path": str(args.model), "size_bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(), "backend": b.name,
        "input": {"shape": list(b.input_shape), "layout": "NHWC",
                  "dtype": np.dtype(b.input_dtype).name,
                  "scale": b.input_quant[0] if b.input_quant else None,
                  "zero_point": b.input_quant[1] if b.input_quant else None},
        "output": {"scale": b.output_quant[0] if b.output_quant else None,
                   "zero_point": b.output_quant[1] if b.output_quant else None},
        "metadata": clf.metadata.to_dict(),
    }
    print(json.dumps(info, indent=2))
    return 0


def _body(argv) -> int:
    args = build_parser().parse_args(argv)
    return {"classify": _classify, "camera": _camera, "info": _info}[args.command](args)


def main(argv=None) -> int:
    """Entry point of ``happysad-edge``; returns the exit code."""
    return run_main(PROG, _body, argv)


if __name__ == "__main__":
    sys.exit(main())
