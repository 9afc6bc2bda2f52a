"""What ``happysad-edge camera`` is asked to do: :class:`CameraOptions` and
the camera's defaults, importable without the loop, OpenCV or an interpreter
(the command line reads them to build its help)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from happysad.edge.camera.outputs.mqtt import MqttOptions

#: Camera defaults (``happysad-edge camera``): faces are searched on a copy
#: this wide, no smaller than this (pixels of the frame), on every Nth frame.
DETECT_WIDTH = 320
MIN_FACE = 48
DETECT_EVERY = 2
#: The camera's default face detector: BlazeFace short range, made for
#: faces within a couple of metres of the lens. On the 640x480 camera test
#: frames it found a face in the most frames (296 of 300; YuNet 291, Haar
#: 223) in the least time (1.6 ms, YuNet 3.1, Haar 7.9); photos of any
#: kind keep YuNet (edge.faces.DEFAULT_DETECTOR), which finds more faces
#: farther away (docs/photos.md).
CAMERA_DETECTOR = "blazeface"


@dataclass(kw_only=True)
class CameraOptions:
    """Settings of :func:`edge.camera.loop.run`.

    Attributes:
        source: camera index ("0"), video file, stream URL, or "picamera".
        headless: print one JSON line per frame instead of showing a window.
        max_frames: stop after this many frames (0: until the source ends).
        faces: "largest" or "all".
        no_face: classify the whole frame, no face detection.
        smooth: weight of the history in each face's score average, 0..1 (0: off).
        serve: "HOST:PORT" of the MJPEG preview, or None.
        serve_token: the token every preview request must carry, or None.
        metrics: "HOST:PORT" (or "PORT", loopback) of the Prometheus
            metrics endpoint (:mod:`edge.camera.outputs.prometheus`), or None.
        record: video file for the annotated frames (.avi: MJPG, .mp4: mp4v), or None.
        log: CSV file, one row appended per classified face, or None.
        mqtt: :class:`edge.camera.outputs.mqtt.MqttOptions` (state, events, availability,
            Home Assistant discovery), or None.
        reconnect_tries: reopen attempts for a live source that stops.
        pace: play a video file at its own frame rate.
        detect_every: search for faces on every Nth frame; the frames in
            between classify the faces found last (their boxes held), so the
            loop keeps up with the camera while the detector runs less often.
        width, height, fps: frame size (pixels) and rate (Hz) asked of a
            camera; None leaves the camera's own.
    """

    source: str = "0"
    headless: bool = False
    max_frames: int = 0
    faces: str = "largest"
    no_face: bool = False
    smooth: float = 0.0
    serve: str | None = None
    serve_token: str | None = None
    metrics: str | None = None
    record: str | None = None
    log: str | None = None
    mqtt: MqttOptions | None = None
    reconnect_tries: int = 5
    pace: bool = False
    detect_every: int = DETECT_EVERY
    width: int | None = None
    height: int | None = None
    fps: float | None = None
