"""What the camera loop gives out, frame by frame: each output takes a
:class:`FrameResult` (``emit``) and is closed at the end (``close``).

JSON lines (``--headless``), the window, the MJPEG preview (``--serve``),
the recorded video (``--record``), the CSV log (``--log``) and the
Prometheus metrics (``--metrics``) all sit behind that one interface, so
the loop itself only captures, classifies and hands the result on.
"""

import logging
from pathlib import Path

from happysad.edge.camera.outputs.base import Output
from happysad.edge.camera.outputs.jsonl import JsonLines
from happysad.edge.camera.outputs.record import Recording
from happysad.edge.camera.outputs.window import Window

_log = logging.getLogger(__name__)


def open_outputs(options, clf, out, headless: bool) -> list[Output]:
    """The outputs a :class:`edge.camera.loop.CameraOptions` asks for, in the order
    they take each frame (MQTT first: its counts go to the JSON line and the metrics).

    Raises:
        HappysadError: an output cannot be opened (its address or file); those
            opened already are closed.
    """
    outputs: list[Output] = []
    try:
        _open_each(options, clf, out, headless, outputs)
    except BaseException:
        for output in outputs:
            output.close()
        raise
    for output in outputs:
        if hasattr(output, "others"):  # the metrics report the others' dropped records
            output.others = outputs
    return outputs


def _open_each(options, clf, out, headless: bool, outputs: list) -> None:
    from happysad.edge.camera.outputs.csvlog import FaceLog
    from happysad.edge.camera.outputs.preview import Preview, PreviewServer, parse_address

    if options.mqtt:
        from happysad.edge.camera.outputs.mqtt import MqttPublisher
        from happysad.edge.camera.outputs.mqtt_output import Mqtt

        publisher = MqttPublisher(options.mqtt, clf.labels, Path(clf.path).name)
        publisher.start()
        outputs.append(Mqtt(publisher))
    if options.log:
        outputs.append(FaceLog(options.log, clf.labels))
    if options.metrics:
        from happysad.edge.camera.outputs.prometheus import Metrics, MetricsServer, record_model

        server = MetricsServer(*parse_address(options.metrics), clf.labels)
        outputs.append(Metrics(server))
        record_model(server, clf)
        _log.info("metrics: http://%s:%s/metrics", *server.address[:2])
    if headless:
        outputs.append(JsonLines(out))
    if options.serve:
        preview = PreviewServer(*parse_address(options.serve), token=options.serve_token)
        outputs.append(Preview(preview))
        _log.info("preview: %s", preview.url)
    if options.record:
        outputs.append(Recording(options.record))
    if not headless:
        outputs.append(Window())
