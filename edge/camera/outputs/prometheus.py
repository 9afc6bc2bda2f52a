"""Prometheus metrics of the camera loop (``happysad-edge camera --metrics``),
served with the official client, ``prometheus-client``.

Counters of frames, faces, labels and errors, the capture's dropped frames
and reconnects, per-stage latency histograms, and the model in use as an
info metric. The server runs in its own thread on its own registry and binds
127.0.0.1 unless told otherwise; it stops with the loop.
"""

from __future__ import annotations

from happysad.edge.camera.outputs.base import FrameResult, Output
from happysad.edge.errors import HappysadError

#: Histogram buckets of the per-stage latencies, seconds: 0.1 ms to 0.5 s,
#: the span from one int8 inference to a stalled USB camera.
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5)
#: Stages timed per frame, as in the JSON line's ``ms``.
STAGES = ("capture", "detect", "crop", "preprocess", "inference")


class MetricsServer:
    """The loop's counters, served as Prometheus text format.

    Args:
        host, port: where to listen (port 0: a free one, see ``address``).
        labels: the model's class names.

    Raises:
        HappysadError: prometheus-client is not installed, or the address
            cannot be bound.
    """

    def __init__(self, host: str, port: int, labels):
        try:
            from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, start_http_server
        except ImportError:
            raise HappysadError("--metrics needs prometheus-client: pip install prometheus-client") from None
        self.registry = CollectorRegistry()
        r = self.registry
        self.frames = Counter("happysad_frames", "Frames classified", registry=r)
        self.frames_with_face = Counter("happysad_frames_with_face", "Frames with at least one face", registry=r)
        self.faces = Counter("happysad_faces", "Faces classified", registry=r)
        self.labels = Counter("happysad_labels", "Faces classified, by predicted label", ["label"], registry=r)
        for name in labels:
            self.labels.labels(label=name)  # present at 0 before the first face
        self.errors = Counter("happysad_frame_errors", "Frames whose classification failed", registry=r)
        self.dropped = Gauge("happysad_dropped_frames", "Live frames replaced before they were classified", registry=r)
        self.reconnects = Gauge("happysad_reconnects", "Times the source was reopened", registry=r)
        self.stage = Histogram(
            "happysad_stage_seconds", "Time per frame in each stage", ["stage"], buckets=BUCKETS, registry=r
        )
        self.model = Info("happysad_model", "The model file in use", registry=r)
        self.mqtt_connected = Gauge("happysad_mqtt_connected", "1 while connected to the MQTT broker", registry=r)
        self.mqtt_queue = Gauge("happysad_mqtt_queue_length", "MQTT events not yet acknowledged", registry=r)
        self.mqtt_reconnects = Gauge("happysad_mqtt_reconnects", "Times the MQTT connection was made again", registry=r)
        self.mqtt_counts = {
            key: Counter(f"happysad_mqtt_{key}", help_text, registry=r)
            for key, help_text in (
                ("events", "MQTT events (label changes) produced"),
                ("delivered", "MQTT events the broker acknowledged"),
                ("dropped", "MQTT events dropped: the outgoing queue was full"),
            )
        }
        self._mqtt_seen = dict.fromkeys(self.mqtt_counts, 0)
        self.output_dropped = Gauge(
            "happysad_output_dropped",
            "Records an output could not write: no reader on its FIFO, a full pipe or disk (log: rows, "
            "record: frames, stdout: JSON lines)",
            ["output"],
            registry=r,
        )
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=r)
        except OSError as exc:
            raise HappysadError(
                f"--metrics {host}:{port}: cannot listen ({exc.strerror or exc}); pick another port"
            ) from None
        self.address = self._server.server_address[:2]

    def set_model(self, path, sha256: str, fmt: str, version: str) -> None:
        """Record the model in use (again after a hot swap)."""
        self.model.info({"path": str(path), "sha256": sha256, "format": fmt, "package_version": version})

    def observe(self, results: list, ms: dict, dropped: int, reconnects: int) -> None:
        """Count one frame.

        Args:
            results: the frame's :class:`edge.Prediction` list (faces, or the whole frame).
            ms: per-stage times in ms, as in the JSON line (:data:`STAGES`).
            dropped, reconnects: the capture's running totals.
        """
        self.frames.inc()
        faces = [r for r in results if r.face is not None]
        if faces:
            self.frames_with_face.inc()
            self.faces.inc(len(faces))
        for r in results:
            self.labels.labels(label=r.label).inc()
        for stage in STAGES:
            if stage in ms:
                self.stage.labels(stage=stage).observe(ms[stage] / 1e3)
        self.dropped.set(dropped)
        self.reconnects.set(reconnects)

    def observe_mqtt(self, stats: dict) -> None:
        """Take the MQTT publisher's running counts (:meth:`edge.camera.outputs.mqtt.MqttPublisher.stats`)."""
        self.mqtt_connected.set(1 if stats["connected"] else 0)
        self.mqtt_queue.set(stats["queued"])
        self.mqtt_reconnects.set(stats["reconnects"])
        for key, counter in self.mqtt_counts.items():
            if stats[key] > self._mqtt_seen[key]:
                counter.inc(stats[key] - self._mqtt_seen[key])
                self._mqtt_seen[key] = stats[key]

    def observe_drops(self, drops: dict) -> None:
        """Take the outputs' running counts of records dropped (:meth:`Output.drops`)."""
        for name, n in drops.items():
            self.output_dropped.labels(output=name).set(n)

    def error(self) -> None:
        """Count a frame whose classification failed."""
        self.errors.inc()

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()


class Metrics(Output):
    """Counters and stage latencies for Prometheus (:class:`edge.camera.outputs.prometheus.MetricsServer`);
    ``others``: the outputs whose dropped records it reports (set once all are open)."""

    needs_timings = True

    def __init__(self, server):
        self.server = server
        self.others: list[Output] = []

    def emit(self, result: FrameResult) -> bool:
        self.server.observe(result.predictions, result.ms, result.dropped, result.reconnects)
        if "mqtt" in result.extra:
            self.server.observe_mqtt(result.extra["mqtt"])
        self.server.observe_drops({k: v for o in self.others for k, v in o.drops().items()})
        return False

    def close(self) -> None:
        self.server.close()


def record_model(metrics, clf) -> None:
    """Set the metrics' model info from ``clf`` (the sha256 of the file loaded)."""
    from happysad.edge import __version__
    from happysad.edge.fileio import file_digest

    try:
        digest = file_digest(clf.path)[1]
    except HappysadError:
        digest = "unreadable"
    metrics.set_model(clf.path, digest, clf.metadata.extra.get("format", "?"), __version__)
