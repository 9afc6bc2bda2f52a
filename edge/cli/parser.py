"""``happysad-edge``: classify photos or camera frames on the device."""

from __future__ import annotations

import sys

from happysad.edge.camera.options import CAMERA_DETECTOR, DETECT_EVERY, DETECT_WIDTH, MIN_FACE
from happysad.edge.classifier import TTA_MODES
from happysad.edge.console import ArgumentParser, float_range, non_negative_int, positive_int, run_main
from happysad.edge.device.install import KEEP
from happysad.edge.faces import DEFAULT_DETECTOR, DETECTORS
from happysad.edge.runtime.backends import BACKENDS

PROG = "happysad-edge"


_fraction = float_range(0.0, 1.0, open_hi=True, hint="1 excluded")


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


def _detector_arg(p, default=DEFAULT_DETECTOR):
    p.add_argument(
        "-d",
        "--detector",
        choices=DETECTORS,
        default=default,
        help="face detector (haar is the fallback where a DNN detector cannot run)",
    )


def _model_args(p):
    p.add_argument("model", metavar="MODEL", help="a .tflite or .onnx file from happysad-export")
    p.add_argument(
        "-t", "--threads", type=positive_int, default=None, help="interpreter threads (default: the interpreter's own)"
    )
    p.add_argument(
        "-b", "--backend", choices=BACKENDS, default=None, help="force an interpreter (default: chosen from the file)"
    )
    p.add_argument(
        "--public-key",
        metavar="FILE.pub",
        default=None,
        help="refuse a model file without a matching MODEL.sig (Ed25519), before any interpreter reads it "
        "(default: $HAPPYSAD_PUBLIC_KEY, else no signature asked for)",
    )


def _decision_args(p):
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


def _classify_parser(sub) -> None:
    p = sub.add_parser(
        "classify",
        help="classify image files or folders",
        description="Classify images: the largest face in each, or the whole image.",
    )
    _model_args(p)
    p.add_argument("paths", nargs="+", metavar="PATH", help="image file or folder (searched recursively)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    _detector_arg(p)
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
    _decision_args(p)


def _camera_parser(sub) -> None:
    p = sub.add_parser(
        "camera",
        help="classify faces in camera, stream or video frames",
        description="Classify the faces in each frame of a camera, stream or video file.",
    )
    _model_args(p)
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
    _camera_face_args(p)
    _camera_output_args(p)


def _camera_face_args(p) -> None:
    p.add_argument("--faces", choices=("largest", "all"), default="largest", help="which faces to classify")
    _detector_arg(p, CAMERA_DETECTOR)
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
    _decision_args(p)


def _camera_mqtt_args(p) -> None:
    g = p.add_argument_group("MQTT and Home Assistant")
    g.add_argument(
        "--mqtt",
        metavar="URL",
        default=None,
        help="publish state, events and availability to mqtt://[user[:pass]@]host[:port] (mqtts:// for TLS); "
        "a password left out is read from $HAPPYSAD_MQTT_PASSWORD",
    )
    g.add_argument("--mqtt-topic", metavar="TOPIC", default=None, help="base topic (default: happysad/<hostname>)")
    g.add_argument(
        "--mqtt-ca", metavar="FILE", default=None, help="CA certificates (PEM) for mqtts:// (default: the system's)"
    )
    g.add_argument(
        "--mqtt-min-interval",
        metavar="S",
        type=float_range(0.0, 3600.0),
        default=1.0,
        help="least time between two messages of this device, s; events wait their turn, state keeps the newest",
    )
    g.add_argument(
        "--mqtt-queue",
        metavar="N",
        type=positive_int,
        default=100,
        help="most events held while the broker is slow or away; more are dropped and counted",
    )
    g.add_argument(
        "--ha-discovery",
        nargs="?",
        const="on",
        choices=("on", "remove"),
        default=None,
        help="announce a label sensor, a confidence sensor and a face binary sensor to Home Assistant; "
        "'remove' deletes them and exits",
    )
    g.add_argument("--ha-prefix", metavar="PREFIX", default="homeassistant", help="Home Assistant's discovery prefix")


def _camera_output_args(p) -> None:
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
    _camera_mqtt_args(p)
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


def _tool_parsers(sub) -> None:
    p = sub.add_parser(
        "doctor",
        help="check interpreters, CPU features, camera and face cascade",
        description="Check what this device has; print a fix for each problem.",
    )
    p.add_argument("-s", "--source", default="0", help="camera to try: index, URL or picamera")
    p.add_argument("-m", "--model", default=None, help="also say whether this install can run this model file")

    p = sub.add_parser(
        "keygen",
        help="make an Ed25519 key pair for signing model files",
        description="Write NAME.key (private, mode 0600) and NAME.pub (public); never overwrites a key.",
    )
    p.add_argument("-o", "--out", default=".", metavar="DIR", help="folder to write the keys into")
    p.add_argument("--name", default="happysad", help="file name of the keys, without suffix")

    p = sub.add_parser(
        "install",
        help="verify a model file and make it DIR/current, keeping the one before",
        description="Copy MODEL into DIR/models/, verify the copy (manifest size and sha256, signature, "
        "metadata, a self-test inference), then point DIR/current at it by an atomic rename; the "
        "model that was current becomes DIR/previous. A camera started on DIR/current switches to it. "
        "A file that fails is removed with its .sig; older versions beyond --keep are removed.",
    )
    p.add_argument("model", metavar="MODEL", help="a .tflite or .onnx file from happysad-export")
    p.add_argument("--to", required=True, metavar="DIR", help="the install folder (DIR/current, DIR/previous)")
    p.add_argument(
        "-m", "--manifest", default=None, metavar="FILE", help="the export's manifest.json, if not beside MODEL"
    )
    p.add_argument("--public-key", metavar="FILE.pub", default=None, help="the signature must match this key")
    keep = "older versions kept in DIR/models/ besides current and previous (the oldest others are removed)"
    p.add_argument("--keep", type=non_negative_int, default=KEEP, metavar="N", help=keep)
    p = sub.add_parser(
        "rollback", help="make DIR/previous current again", description="Swap DIR/current and DIR/previous."
    )
    p.add_argument("--to", required=True, metavar="DIR", help="the install folder")

    p = sub.add_parser("info", help="show a model file's metadata and tensors")
    _model_args(p)

    p = sub.add_parser(
        "verify",
        help="check a copied model file against its export's manifest",
        description="Check a model file's size and sha256 against the export's "
        "manifest, then that its metadata parses and it loads and runs. "
        "Exit 1 with one line saying what is wrong, else print OK.",
    )
    _model_args(p)
    p.add_argument(
        "-m",
        "--manifest",
        default=None,
        metavar="FILE",
        help="manifest.json written by happysad-export, if not the one next to MODEL",
    )
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object")


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog=PROG, description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _classify_parser(sub)
    _camera_parser(sub)
    _tool_parsers(sub)
    return parser


def _body(argv) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "doctor":
        from happysad.edge.cli.doctor import report

        return report(args.source, model=args.model)
    from happysad.edge.cli import commands

    run = {
        "classify": commands.classify,
        "camera": commands.camera,
        "info": commands.info,
        "verify": commands.verify,
        "keygen": commands.keygen,
        "install": commands.install,
        "rollback": commands.rollback,
    }
    return run[args.command](args)


def main(argv=None) -> int:
    """Entry point of ``happysad-edge``; returns the exit code."""
    return run_main(PROG, _body, argv)


if __name__ == "__main__":
    sys.exit(main())
