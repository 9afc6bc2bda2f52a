"""``happysad-edge``: classify photos or camera frames on the device."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np

from .backends import BACKENDS
from .camera import CAMERA_DETECTOR, DETECT_EVERY, DETECT_WIDTH, MIN_FACE, CameraOptions
from .camera import run as run_camera
from .classifier import TTA_MODES, Classifier
from .cli_util import ArgumentParser, Progress, non_negative_int, positive_int, run_main
from .errors import HappysadError
from .faces import DEFAULT_DETECTOR, DETECTORS
from .images import IMAGE_SUFFIXES, display_path, find_images, load_image

PROG = "happysad-edge"


def _fraction(text: str) -> float:
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"{value} must be in 0..1 (1 excluded)")
    return value


def _min_confidence(text: str):
    import argparse

    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or 'auto'") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{value} must be in 0..1")
    return value


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog=PROG, description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def detector_arg(p, default=DEFAULT_DETECTOR):
        p.add_argument(
            "-d",
            "--detector",
            choices=DETECTORS,
            default=default,
            help="face detector (haar is the fallback where a DNN detector cannot run)",
        )

    def model_args(p):
        p.add_argument("model", metavar="MODEL", help="a .tflite or .onnx file from happysad-export")
        p.add_argument(
            "-t",
            "--threads",
            type=positive_int,
            default=None,
            help="interpreter threads (default: the interpreter's own)",
        )
        p.add_argument(
            "-b",
            "--backend",
            choices=BACKENDS,
            default=None,
            help="force an interpreter (default: chosen from the file)",
        )

    def decision_args(p):
        p.add_argument(
            "--min-confidence",
            type=_min_confidence,
            default=None,
            metavar="P|auto",
            help="label a face 'uncertain' when its best score is under P (0..1); auto: the "
            "value the model's metadata suggests, chosen on validation data at export",
        )
        p.add_argument(
            "--tta",
            choices=TTA_MODES,
            default="none",
            help="flip: average each face's scores with its mirror image's (2 inferences per face)",
        )

    p = sub.add_parser(
        "classify",
        help="classify image files or folders",
        description="Classify images: the largest face in each, or the whole image.",
    )
    model_args(p)
    p.add_argument("paths", nargs="+", metavar="PATH", help="image file or folder (searched recursively)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    detector_arg(p)
    p.add_argument(
        "--faces",
        choices=("largest", "all"),
        default="largest",
        help="classify the largest face of each image, or every face",
    )
    p.add_argument(
        "--no-face",
        choices=("whole", "skip"),
        default="whole",
        help="when no face is found: classify the whole image (marked basis whole-image), or give no label",
    )
    decision_args(p)

    p = sub.add_parser(
        "camera",
        help="classify faces in camera, stream or video frames",
        description="Classify the faces in each frame of a camera, stream or video file.",
    )
    model_args(p)
    p.add_argument(
        "-s", "--source", default="0", help="camera index, video file, stream URL (rtsp://, http://) or picamera"
    )
    p.add_argument("--headless", action="store_true", help="print one JSON line per frame, no window")
    p.add_argument(
        "--width",
        type=positive_int,
        default=None,
        help="frame width asked of the camera, pixels (default: the camera's own; picamera 640)",
    )
    p.add_argument(
        "--height",
        type=positive_int,
        default=None,
        help="frame height asked of the camera, pixels (default: the camera's own; picamera 480)",
    )
    p.add_argument(
        "--fps", type=positive_int, default=None, help="frame rate asked of the camera, Hz (default: the camera's own)"
    )
    p.add_argument(
        "-n",
        "--max-frames",
        type=non_negative_int,
        default=0,
        help="stop after N frames (0: until the source ends or Ctrl-C)",
    )
    p.add_argument("--faces", choices=("largest", "all"), default="largest", help="which faces to classify")
    detector_arg(p, CAMERA_DETECTOR)
    p.add_argument(
        "--detect-every",
        type=positive_int,
        default=DETECT_EVERY,
        metavar="N",
        help="search for faces on every Nth frame and hold the boxes in between",
    )
    p.add_argument("--no-face", action="store_true", help="classify the whole frame; no face detection")
    p.add_argument(
        "--detect-width",
        type=non_negative_int,
        default=DETECT_WIDTH,
        help="search faces on a copy scaled down to this width, pixels (0: full size)",
    )
    p.add_argument(
        "--min-face",
        type=positive_int,
        default=MIN_FACE,
        help="smallest face searched for, pixels of the original frame",
    )
    p.add_argument(
        "--smooth",
        type=_fraction,
        default=0.0,
        metavar="ALPHA",
        help="average each face's scores over frames, weight ALPHA on the history (0: off)",
    )
    decision_args(p)
    p.add_argument("--serve", metavar="HOST:PORT", default=None, help="MJPEG preview page; PORT alone binds 127.0.0.1")
    p.add_argument(
        "--serve-token",
        metavar="TOKEN",
        default=None,
        help="require this token on every preview request (?token=TOKEN or a Bearer header); "
        "@FILE reads it from a file. Needed for an address other than loopback",
    )
    p.add_argument(
        "--serve-insecure",
        action="store_true",
        help="serve a non-loopback address without a token (anyone on the network sees the camera)",
    )
    p.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        default=None,
        help="serve Prometheus metrics at /metrics (frames, faces, labels, stage latencies, the "
        "model); PORT alone binds 127.0.0.1",
    )
    p.add_argument("--record", metavar="FILE", default=None, help="save the annotated video (.avi or .mp4)")
    p.add_argument("--log", metavar="FILE.csv", default=None, help="append one row per classified face")
    p.add_argument(
        "--reconnect-tries",
        type=non_negative_int,
        default=5,
        help="reopen attempts when a camera or stream stops giving frames",
    )
    p.add_argument(
        "--pace", action="store_true", help="play a video file at its own frame rate (default: as fast as it decodes)"
    )

    p = sub.add_parser(
        "doctor",
        help="check interpreters, CPU features, camera and face cascade",
        description="Check what this device has; print a fix for each problem.",
    )
    p.add_argument("-s", "--source", default="0", help="camera to try: index, URL or picamera")

    p = sub.add_parser("info", help="show a model file's metadata and tensors")
    model_args(p)

    p = sub.add_parser(
        "verify",
        help="check a copied model file against its export's manifest",
        description="Check a model file's size and sha256 against the export's "
        "manifest, then that its metadata parses and it loads and runs. "
        "Exit 1 with one line saying what is wrong, else print OK.",
    )
    model_args(p)
    p.add_argument(
        "-m",
        "--manifest",
        default=None,
        metavar="FILE",
        help="manifest.json written by happysad-export, if not the one next to MODEL",
    )
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    return parser


def _classify(args) -> int:
    from .faces import make_detector

    clf = Classifier(
        args.model,
        args.threads,
        args.backend,
        detector=make_detector(args.detector, threads=args.threads),
        min_confidence=args.min_confidence,
        tta=args.tta,
    )
    status = 0  # the worst exit code met: 1 for a bad file, 2 for a missing path
    for root in args.paths:
        try:
            paths = find_images(root)
        except HappysadError as exc:
            print(f"{PROG}: error: {exc}", file=sys.stderr)
            status = max(status, exc.exit_code)
            continue
        if not paths:
            print(
                f"{PROG}: error: {display_path(root)}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this "
                "folder or below it",
                file=sys.stderr,
            )
            status = max(status, 1)
            continue
        # Drawn only when stdout goes elsewhere (a file, a pipe): on one
        # terminal the results themselves show the progress.
        progress = Progress(len(paths), "classified") if not sys.stdout.isatty() else None
        for path in paths:
            if progress:
                progress.update()
            try:
                preds = clf.classify_photo(load_image(path), args.faces, args.no_face)
            except HappysadError as exc:
                if progress:
                    progress.close()  # the error starts its own line; the counter redraws after it
                print(f"{PROG}: error: {exc}", file=sys.stderr)
                status = max(status, exc.exit_code)
                continue
            _print_photo(path, preds, args)
        if progress:
            progress.close()
    return status


def _print_photo(path, preds, args) -> None:
    """One JSON line per image, or one text line per face (a line saying
    "no face" when ``--no-face skip`` left the image without a label)."""
    if args.json:
        record = {"path": os.fsdecode(path)}  # JSON escapes control characters and undecodable bytes
        if args.faces == "all":
            record["faces"] = [p.to_dict() for p in preds]
        else:
            record.update(
                preds[0].to_dict() if preds else {"label": None, "confidence": None, "basis": "no-face", "face": None}
            )
        print(json.dumps(record), flush=True)
        return
    shown = display_path(path)  # a newline or an escape in a name must not reach the terminal raw
    if not preds:
        print(f"{shown}\t-\t-\tno face", flush=True)
    for pred in preds:
        face = "face " + ",".join(map(str, pred.face)) if pred.face else "whole image"
        print(f"{shown}\t{pred.label}\t{pred.confidence:.3f}\t{face}\t{pred.timings['total']:.2f} ms", flush=True)


def _listen_host(flag: str, value: str) -> str:
    """The host of a ``--serve`` or ``--metrics`` HOST:PORT (usage error exit 2 when malformed)."""
    from .preview import parse_address

    try:
        return parse_address(value)[0]
    except ValueError:
        build_parser().error(f"argument {flag}: {value!r} is not HOST:PORT")


def _camera(args) -> int:
    from .faces import make_detector
    from .preview import is_loopback

    token = _serve_token(args.serve_token)
    if args.serve and not is_loopback(host := _listen_host("--serve", args.serve)):
        if token is None and not args.serve_insecure:
            build_parser().error(
                f"argument --serve: {host} is reachable from the network; pass "
                "--serve-token TOKEN (or @FILE), or --serve-insecure to publish the "
                "camera to anyone who can reach this machine"
            )
        print(
            "warning: the camera preview is reachable from the network"
            + (" (token required)" if token else " WITHOUT authentication (--serve-insecure)"),
            file=sys.stderr,
        )
    if args.metrics and not is_loopback(_listen_host("--metrics", args.metrics)):
        print("warning: the metrics are reachable from the network (no authentication)", file=sys.stderr)
    clf = Classifier(
        args.model,
        args.threads,
        args.backend,
        detector=None if args.no_face else make_detector(args.detector, args.min_face, args.detect_width, args.threads),
        min_confidence=args.min_confidence,
        tta=args.tta,
    )
    options = CameraOptions(
        source=args.source,
        headless=args.headless,
        max_frames=args.max_frames,
        faces=args.faces,
        no_face=args.no_face,
        smooth=args.smooth,
        serve=args.serve,
        serve_token=token,
        metrics=args.metrics,
        record=args.record,
        log=args.log,
        reconnect_tries=args.reconnect_tries,
        pace=args.pace,
        detect_every=args.detect_every,
        width=args.width,
        height=args.height,
        fps=args.fps,
    )
    summary = run_camera(clf, options, threads=args.threads, backend=args.backend)
    print(
        f"{PROG}: {summary['frames']} frames, {summary['frames_with_face']} with a face, "
        f"{summary['dropped']} dropped, {summary['reconnects']} reconnects, {summary['fps']} FPS",
        file=sys.stderr,
    )
    # Stopped by a signal: outputs are closed and whole, and the exit status
    # says it was interrupted (130), as for every other command.
    return 130 if summary.get("stopped_by_signal") else 0


def _serve_token(text: str | None) -> str | None:
    """The --serve-token value: TOKEN, or the first line of FILE for @FILE.

    Raises:
        HappysadError: the file cannot be read or holds no token.
    """
    if text is None or not text.startswith("@"):
        return text or None
    path = Path(text[1:])
    try:
        token = path.read_text().strip().splitlines()[0].strip() if path.read_text().strip() else ""
    except OSError as exc:
        raise HappysadError(f"--serve-token {path}: cannot read ({exc.strerror or exc})") from None
    if not token:
        raise HappysadError(f"--serve-token {path}: the file holds no token")
    return token


def _info(args) -> int:
    clf = Classifier(args.model, args.threads, args.backend)
    data = Path(args.model).read_bytes()
    b = clf.backend
    info = {
        "path": str(args.model),
        "size_bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "backend": b.name,
        "input": {
            "shape": list(b.input_shape),
            "layout": "NHWC",
            "dtype": np.dtype(b.input_dtype).name,
            "scale": b.input_quant[0] if b.input_quant else None,
            "zero_point": b.input_quant[1] if b.input_quant else None,
        },
        "output": {
            "shape": list(b.output_shape),
            "dtype": np.dtype(b.output_dtype).name,
            "scale": b.output_quant[0] if b.output_quant else None,
            "zero_point": b.output_quant[1] if b.output_quant else None,
        },
        "metadata": clf.metadata.to_dict(),
    }
    print(json.dumps(info, indent=2))
    return 0


def _verify(args) -> int:
    from .verify import summary_line, verify

    try:
        report = verify(args.model, args.manifest, args.backend, args.threads)
    except HappysadError as exc:
        if args.json:  # a script reading stdout gets an answer too, not silence
            print(json.dumps({"ok": False, "path": os.fsdecode(args.model), "error": str(exc)}))
        raise
    print(json.dumps({"ok": True, **report}) if args.json else summary_line(report))
    return 0


def _body(argv) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "doctor":
        from .doctor import report

        return report(args.source)
    return {"classify": _classify, "camera": _camera, "info": _info, "verify": _verify}[args.command](args)


def main(argv=None) -> int:
    """Entry point of ``happysad-edge``; returns the exit code."""
    return run_main(PROG, _body, argv)


if __name__ == "__main__":
    sys.exit(main())
