"""The bodies of ``happysad-edge``'s commands: classify, camera, info, verify."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np

from happysad.edge.camera.loop import run as run_camera
from happysad.edge.camera.options import CameraOptions
from happysad.edge.classifier import Classifier
from happysad.edge.console import progress
from happysad.edge.errors import HappysadError, UsageError
from happysad.edge.images import IMAGE_SUFFIXES, display_path, find_images, load_image
from happysad.edge.reading import read_regular

PROG = "happysad-edge"


def _usage_error(message: str):
    """Exit 2 with ``message``, as a bad flag does (:class:`UsageError`)."""
    raise UsageError(message)


def _classifier(args, detector=None) -> Classifier:
    """The :class:`Classifier` a command's flags ask for (``--threads``,
    ``--backend``, ``--public-key``, and ``--min-confidence`` and ``--tta``
    where the command has them), with ``detector`` (None: no face search)."""
    return Classifier(
        args.model,
        args.threads,
        args.backend,
        detector=detector,
        min_confidence=getattr(args, "min_confidence", None),
        tta=getattr(args, "tta", "none"),
        public_key=_public_key(args),
    )


def classify(args) -> int:
    """``happysad-edge classify``; returns the exit code."""
    from happysad.edge.faces import make_detector

    clf = _classifier(args, detector=make_detector(args.detector, threads=args.threads))
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
        bar = progress(len(paths), "classified") if not sys.stdout.isatty() else None
        for path in paths:
            if bar is not None:
                bar.update()
            try:
                preds = clf.classify_photo(load_image(path), args.faces, args.no_face)
            except HappysadError as exc:
                if bar is not None:
                    bar.clear()  # the error starts its own line; the counter redraws after it
                print(f"{PROG}: error: {exc}", file=sys.stderr)
                status = max(status, exc.exit_code)
                continue
            _print_photo(path, preds, args)
        if bar is not None:
            bar.close()
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
    from happysad.edge.camera.outputs.preview import parse_address

    try:
        return parse_address(value)[0]
    except ValueError:
        _usage_error(f"argument {flag}: {value!r} is not HOST:PORT")


def camera(args) -> int:
    """``happysad-edge camera``; returns the exit code."""
    from happysad.edge.camera.outputs.preview import is_loopback
    from happysad.edge.faces import make_detector

    token = _serve_token(args.serve_token)
    if args.serve and not is_loopback(host := _listen_host("--serve", args.serve)):
        if token is None and not args.serve_insecure:
            _usage_error(
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
    mqtt = _mqtt_options(args)
    if args.ha_discovery == "remove":
        return _remove_discovery(args, mqtt)
    detector = None if args.no_face else make_detector(args.detector, args.min_face, args.detect_width, args.threads)
    clf = _classifier(args, detector=detector)
    # The flags are named as the options' fields; the token and the broker are parsed above.
    same = {f.name: getattr(args, f.name) for f in dataclasses.fields(CameraOptions) if hasattr(args, f.name)}
    options = CameraOptions(**{**same, "serve_token": token, "mqtt": mqtt})
    summary = run_camera(clf, options, threads=args.threads, backend=args.backend)
    _print_camera_summary(summary)
    # Stopped by a signal: outputs are closed and whole, and the exit status
    # says it was interrupted (130), as for every other command.
    return 130 if summary.get("stopped_by_signal") else 0


def _remove_discovery(args, mqtt) -> int:
    """``camera --ha-discovery remove``: delete the device's Home Assistant entities; exit code."""
    from happysad.edge.camera.outputs.mqtt_output import remove_discovery

    labels = _classifier(args).labels
    n = remove_discovery(mqtt, args.ha_prefix, labels)
    print(f"{PROG}: removed {n} Home Assistant entities of {mqtt.topic}", file=sys.stderr)
    return 0


def _print_camera_summary(summary: dict) -> None:
    """The camera's last lines on stderr: frames, faces, drops, FPS (and what
    a FIFO or pipe output could not write), and MQTT's counts."""
    units = {"log": "rows", "record": "frames", "stdout": "JSON lines"}
    lost = [f"{name} {n} {units.get(name, '')}" for name, n in summary.get("outputs_dropped", {}).items() if n]
    print(
        f"{PROG}: {summary['frames']} frames, {summary['frames_with_face']} with a face, "
        f"{summary['dropped']} dropped, {summary['reconnects']} reconnects, {summary['fps']} FPS"
        + (f"; outputs could not write: {', '.join(lost)}" if lost else ""),
        file=sys.stderr,
    )
    if summary.get("mqtt"):
        m = summary["mqtt"]
        print(
            f"{PROG}: mqtt: {m['events']} events, {m['delivered']} delivered, {m['dropped']} dropped, "
            f"{m['reconnects']} reconnects",
            file=sys.stderr,
        )


def _mqtt_options(args):
    """The camera's :class:`edge.camera.outputs.mqtt.MqttOptions`, or None without --mqtt (usage error
    for an MQTT flag given without it, or a bad URL)."""
    from happysad.edge.camera.outputs.broker import default_topic, parse_broker
    from happysad.edge.camera.outputs.mqtt import MqttOptions

    if not args.mqtt:
        if args.ha_discovery or args.mqtt_topic or args.mqtt_ca:
            _usage_error("--ha-discovery, --mqtt-topic and --mqtt-ca need --mqtt URL")
        return None
    try:
        broker = parse_broker(args.mqtt)
    except HappysadError as exc:
        _usage_error(f"argument {exc}")
    if args.mqtt_ca and not broker.tls:
        _usage_error("argument --mqtt-ca: only for an mqtts:// broker")
    return MqttOptions(
        url=args.mqtt,
        topic=args.mqtt_topic or default_topic(),
        ca=args.mqtt_ca,
        min_interval=args.mqtt_min_interval,
        queue=args.mqtt_queue,
        ha_discovery=args.ha_prefix if args.ha_discovery == "on" else None,
    )


def _serve_token(text: str | None) -> str | None:
    """The --serve-token value: TOKEN, or the first line of FILE for @FILE.

    Raises:
        HappysadError: the file cannot be read or holds no token.
    """
    if text is None or not text.startswith("@"):
        return text or None
    path = Path(text[1:])
    try:
        lines = read_regular(path, "token").decode().strip().splitlines()
    except UnicodeDecodeError:
        raise HappysadError(f"--serve-token {path}: not UTF-8 text") from None
    except HappysadError as exc:  # one line from the gate: missing, a FIFO, too large
        raise type(exc)(f"--serve-token {exc}") from None
    token = lines[0].strip() if lines else ""
    if not token:
        raise HappysadError(f"--serve-token {path}: the file holds no token")
    return token


def info(args) -> int:
    """``happysad-edge info``; returns the exit code."""
    clf = _classifier(args)
    data = read_regular(args.model, "model")
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


def _public_key(args):
    """The public key of --public-key or $HAPPYSAD_PUBLIC_KEY, or None."""
    from happysad.edge.runtime.signing import configured_key

    return configured_key(args.public_key)[0]


def keygen(args) -> int:
    """``happysad-edge keygen``: an Ed25519 key pair for signing model files."""
    from happysad.edge.runtime.signing import key_fingerprint, keygen, load_public_key

    private, public = keygen(args.out, args.name)
    print(f"wrote {private} (private: keep it on the workstation, export --sign {private})")
    fingerprint = key_fingerprint(load_public_key(public))
    print(f"wrote {public} (public: give it to devices, --public-key {public}); key {fingerprint}")
    return 0


def install(args) -> int:
    """``happysad-edge install``: verify MODEL, make it DIR/current."""
    from happysad.edge.device.install import install

    r = install(args.model, args.to, args.manifest, args.public_key, keep=args.keep)
    was = f"; previous: {r['previous']}" if r["previous"] else ""
    was += f"; removed {len(r['removed'])} older versions (--keep {args.keep})" if r["removed"] else ""
    print(
        f"installed {args.to}/current -> {r['current']} (sha256 {r['sha256'][:16]}…, signature {r['signature']}){was}"
    )
    return 0


def rollback(args) -> int:
    """``happysad-edge rollback``: DIR/previous current again."""
    from happysad.edge.device.install import rollback

    r = rollback(args.to)
    print(f"rolled back: {args.to}/current -> {r['current']}; previous: {r['previous']}")
    return 0


def verify(args) -> int:
    """``happysad-edge verify``; returns the exit code."""
    from happysad.edge.device.verify import summary_line, verify

    try:
        report = verify(args.model, args.manifest, args.backend, args.threads, public_key=args.public_key)
    except HappysadError as exc:
        if args.json:  # a script reading stdout gets an answer too, not silence
            print(json.dumps({"ok": False, "path": os.fsdecode(args.model), "error": str(exc)}))
        raise
    print(json.dumps({"ok": True, **report}) if args.json else summary_line(report))
    return 0
