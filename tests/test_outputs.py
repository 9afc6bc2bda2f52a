"""Each camera output on its own, on real files, sockets and a real broker:
what the camera loop hands it (a FrameResult) and what comes out."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest

from happysad.edge.camera.outputs.base import FrameResult
from happysad.edge.camera.outputs.csvlog import FaceLog
from happysad.edge.camera.outputs.draw import LABEL_COLORS, annotate, label_color
from happysad.edge.camera.outputs.jsonl import JsonLines
from happysad.edge.camera.outputs.record import Recording
from happysad.edge.errors import HappysadError, UsageError
from happysad.edge.runtime.prediction import Prediction

from helpers import Watcher, sha, wait_until

LABELS = ("happy", "sad")


def face(label, box=(40, 30, 50, 50), confidence=0.9):
    """A classified face of ``label`` at ``box`` (None: the whole frame)."""
    other = 1 - confidence
    scores = {"happy": confidence if label == "happy" else other, "sad": confidence if label == "sad" else other}
    return Prediction(label, confidence, scores, box, timings={"total": 1.25, "inference": 0.5})


def frame_result(number, predictions, image=None, **kw):
    if image is None:
        image = np.full((120, 160, 3), 60, np.uint8)
    return FrameResult(number, image, predictions, fps=14.5, **kw)


def test_json_lines_one_object_per_frame_flushed_as_written():
    stream = io.StringIO()
    out = JsonLines(stream)
    ms = {"capture": 1.0, "detect": 2.0, "crop": 0.1, "preprocess": 0.2, "inference": 0.5, "total": 4.0}
    out.emit(frame_result(1, [face("sad")], ms=ms, dropped=2))
    # What the MQTT output leaves for the outputs after it goes into the line.
    out.emit(frame_result(2, [], extra={"mqtt": {"connected": True, "events": 1}}))
    out.emit(frame_result(3, [face("happy", None)]))
    out.close()
    first, second, third = (json.loads(line) for line in stream.getvalue().splitlines())
    assert list(first) == ["frame", "faces", "fps", "dropped", "ms"]
    assert (first["frame"], first["fps"], first["dropped"], first["ms"]) == (1, 14.5, 2, ms)
    assert first["faces"] == [
        {
            "label": "sad",
            "confidence": 0.9,
            "scores": {"happy": pytest.approx(0.1), "sad": 0.9},
            "basis": "face",
            "face": [40, 30, 50, 50],
            "face_score": None,
            "keypoints": None,
            "ms": 1.25,
        }
    ]
    assert second["faces"] == [] and second["mqtt"] == {"connected": True, "events": 1}
    assert third["faces"][0]["basis"] == "whole-image" and third["faces"][0]["face"] is None
    assert stream.getvalue().endswith("\n") and stream.getvalue().count("\n") == 3


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_csv_log_header_rows_and_appending(tmp_path):
    path = tmp_path / "faces.csv"
    log = FaceLog(str(path), LABELS)
    header = ["time", "frame", "label", "confidence", "score_happy", "score_sad", "x", "y", "w", "h"]
    assert read_rows(path) == [header]  # written at once: a new file says what its columns are
    log.emit(frame_result(1, [face("happy"), face("sad", (100, 10, 30, 30), 0.75)]))
    # Each row is on disk as it is written (line-buffered), before the log is closed.
    rows = read_rows(path)
    assert len(rows) == 3
    assert rows[1][1:] == ["1", "happy", "0.9000", "0.9000", "0.1000", "40", "30", "50", "50"]
    assert rows[2][1:] == ["1", "sad", "0.7500", "0.2500", "0.7500", "100", "10", "30", "30"]
    assert rows[1][0].endswith("+00:00") and "T" in rows[1][0]
    log.emit(frame_result(2, []))  # no face: no row
    log.emit(frame_result(3, [face("sad", None)]))  # the whole frame: no box
    assert read_rows(path)[3][1:] == ["3", "sad", "0.9000", "0.1000", "0.9000", "", "", "", ""]
    log.close()
    # A second run appends under the same header, never a second header.
    again = FaceLog(str(path), LABELS)
    again.emit(frame_result(1, [face("happy")]))
    again.close()
    rows = read_rows(path)
    assert len(rows) == 5 and rows.count(header) == 1 and rows[4][1:3] == ["1", "happy"]


def test_csv_log_that_cannot_be_opened_is_one_error(tmp_path):
    with pytest.raises(HappysadError, match="--log .*cannot open for appending"):
        FaceLog(str(tmp_path / "no-such-folder" / "faces.csv"), LABELS)


@pytest.mark.parametrize("name", ["out.avi", "out.mp4"])
def test_recording_is_a_real_video_renamed_into_place_on_close(tmp_path, name):
    path = tmp_path / name
    rec = Recording(str(path))
    assert rec.shows_frame  # the loop annotates the frames it is given
    for i in range(12):
        image = np.full((120, 160, 3), 20 * i, np.uint8)
        cv2.rectangle(image, (40, 30), (90, 80), (0, 255, 255), 3)
        rec.emit(frame_result(i + 1, [], image=image, source_fps=15.0))
    # While recording: a hidden temporary file, nothing under the final name.
    assert not path.exists()
    (tmp,) = [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert tmp.name.startswith(f".{path.stem}.tmp-") and tmp.suffix == path.suffix
    rec.close()
    assert [p.name for p in tmp_path.iterdir()] == [name]
    cap = cv2.VideoCapture(str(path))
    try:
        assert cap.isOpened()
        assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 12
        assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(15.0)
        frames = []
        while (got := cap.read())[0]:
            frames.append(got[1])
    finally:
        cap.release()
    assert len(frames) == 12 and all(f.shape == (120, 160, 3) for f in frames)
    # The frames in order: the background's level rises 20 a frame (a lossy codec keeps it near).
    assert [round(float(f[100:, 100:].mean()) / 20) for f in frames] == list(range(12))


def test_recording_that_cannot_be_written_is_one_error(tmp_path):
    rec = Recording(str(tmp_path / "out.xyz"))  # no video writer for that
    with pytest.raises(HappysadError, match="cannot write video here; use a .avi or .mp4 file"):
        rec.emit(frame_result(1, []))
    rec.close()
    assert not list(tmp_path.iterdir())


def scrape(port):
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
        text = r.read().decode()
    return {
        s.name + (str(sorted(s.labels.items())) if s.labels else ""): s
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_prometheus_counts_what_was_emitted(tmp_path):
    pytest.importorskip("prometheus_client")
    from happysad.edge.camera.outputs.prometheus import Metrics, MetricsServer

    server = MetricsServer("127.0.0.1", 0, LABELS)
    port = server.address[1]
    out = Metrics(server)
    try:
        before = scrape(port)
        assert before["happysad_frames_total"].value == 0
        assert before["happysad_labels_total[('label', 'sad')]"].value == 0  # present before the first face
        server.set_model("m.tflite", "ab" * 32, "tflite-int8", "0.1.0")
        ms = {"capture": 1.0, "detect": 2.0, "crop": 0.1, "preprocess": 0.2, "inference": 0.5, "total": 4.0}
        mqtt = {"connected": True, "queued": 2, "events": 3, "delivered": 1, "dropped": 1, "reconnects": 1}
        out.emit(frame_result(1, [face("sad"), face("happy", (0, 0, 20, 20))], ms=ms, dropped=4, reconnects=1))
        out.emit(frame_result(2, [], ms=ms, dropped=5, reconnects=1, extra={"mqtt": mqtt}))
        out.emit(frame_result(3, [face("sad", None)], ms=ms, dropped=5, reconnects=1, extra={"mqtt": mqtt}))
        after = scrape(port)
    finally:
        out.close()
    assert after["happysad_frames_total"].value == 3
    assert after["happysad_frames_with_face_total"].value == 1  # the whole frame is not a face
    assert after["happysad_faces_total"].value == 2
    assert after["happysad_labels_total[('label', 'sad')]"].value == 2
    assert after["happysad_labels_total[('label', 'happy')]"].value == 1
    assert after["happysad_dropped_frames"].value == 5 and after["happysad_reconnects"].value == 1
    assert after["happysad_stage_seconds_count[('stage', 'inference')]"].value == 3
    assert after["happysad_stage_seconds_sum[('stage', 'detect')]"].value == pytest.approx(0.006)
    # The MQTT counts are the publisher's running totals: given twice, counted once.
    assert after["happysad_mqtt_events_total"].value == 3 and after["happysad_mqtt_dropped_total"].value == 1
    assert after["happysad_mqtt_connected"].value == 1 and after["happysad_mqtt_queue_length"].value == 2
    info = next(s for k, s in after.items() if k.startswith("happysad_model_info"))
    assert info.labels["sha256"] == "ab" * 32 and info.labels["format"] == "tflite-int8"
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):  # it stops with the loop
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)


def test_prometheus_on_a_taken_port_is_one_error():
    pytest.importorskip("prometheus_client")
    from happysad.edge.camera.outputs.prometheus import MetricsServer

    first = MetricsServer("127.0.0.1", 0, LABELS)
    try:
        with pytest.raises(HappysadError, match="cannot listen"):
            MetricsServer("127.0.0.1", first.address[1], LABELS)
    finally:
        first.close()


def test_annotate_draws_the_box_where_the_face_is_and_nothing_far_from_it():
    frame = np.zeros((240, 320, 3), np.uint8)
    out = annotate(frame.copy(), [face("happy", (150, 120, 60, 60))], 9.0)
    changed = np.any(out != frame, axis=2)
    assert changed[120, 150:210].all() and changed[180, 150:210].all()  # top and bottom edges
    assert changed[120:180, 150].all() and changed[120:180, 210].all()  # left and right edges
    assert out[150, 150].tolist() == list(LABEL_COLORS["happy"])  # happy in green (BGR)
    assert not changed[140:160, 170:190].any()  # the face itself is left as it is
    assert not changed[200:, :140].any()  # and so is the frame away from the box, label and FPS
    assert changed[5:30, 5:100].any()  # the FPS text, top left


def test_annotate_whole_frame_label_and_colours():
    frame = np.zeros((120, 160, 3), np.uint8)
    out = annotate(frame.copy(), [face("sad", None)], 0.0)
    changed = np.any(out != frame, axis=2)
    assert changed[35:55, 8:60].any()  # the label under the FPS line, no box
    assert not changed[80:, :].any()
    assert (out == LABEL_COLORS["sad"]).all(axis=2).any()
    # A label of the model's own gets a fixed colour from the palette.
    assert label_color("surprised") == label_color("surprised") and label_color("surprised") not in LABEL_COLORS


def test_mqtt_output_publishes_what_it_is_given(broker):
    pytest.importorskip("paho.mqtt.client")
    from happysad.edge.camera.outputs.mqtt import MqttOptions, MqttPublisher
    from happysad.edge.camera.outputs.mqtt_output import Mqtt

    topic = "happysad/test-output"
    watcher = Watcher(broker, f"{topic}/#")
    publisher = MqttPublisher(
        MqttOptions(url=f"mqtt://127.0.0.1:{broker}", topic=topic, min_interval=0), LABELS, "m.tflite"
    )
    publisher.start()
    out = Mqtt(publisher)
    try:
        wait_until(lambda: publisher.connected, what="the publisher to connect")
        results = [
            frame_result(1, [face("happy")]),
            frame_result(2, [face("happy")]),
            frame_result(3, [face("sad")]),
            frame_result(4, []),
        ]
        for r in results:
            assert out.emit(r) is False
        out.close()
        watcher.wait_until(lambda w: w.on(f"{topic}/availability")[-1:] == [("offline", False)], what="offline")
    finally:
        watcher.close()
    # Each frame's counts go to the outputs after it (the JSON line, the metrics).
    assert [r.extra["mqtt"]["events"] for r in results] == [1, 1, 2, 2]
    assert set(results[0].extra["mqtt"]) == {"connected", "queued", "events", "delivered", "dropped", "reconnects"}
    assert out.final["events"] == out.final["delivered"] == 2 and out.final["dropped"] == 0
    got = [json.loads(p) for p, _ in watcher.on(f"{topic}/event")]
    assert sorted((e["seq"], e["frame"], e["label"], e["box"]) for e in got) == [
        (1, 1, "happy", [40, 30, 50, 50]),
        (2, 3, "sad", [40, 30, 50, 50]),
    ]
    last_state = json.loads(watcher.on(f"{topic}/state")[-1][0])
    assert (last_state["frame"], last_state["label"], last_state["no_face"]) == (4, "no_face", True)
    assert [p for p, _ in watcher.on(f"{topic}/availability")] == ["online", "offline"]


def test_install_and_rollback_called_directly(two_models, tmp_path):
    from happysad.edge.device.install import install, rollback

    a, b = two_models
    to = tmp_path / "device"
    first = install(a, to)
    assert first["previous"] is None and first["sha256"] == sha(a)
    assert os.readlink(to / "current") == f"models/{first['current']}" and not (to / "previous").exists()
    second = install(b, to)
    assert second["previous"] == f"models/{first['current']}"
    # Both links name whole files under models/, byte for byte the installed ones.
    assert sha(to / "current") == sha(b) and sha(to / "previous") == sha(a)
    assert {p.name for p in (to / "models").iterdir()} == {first["current"], second["current"]}
    assert install(b, to)["current"] == second["current"]  # the same file again changes nothing
    assert sha(to / "previous") == sha(a)
    back = rollback(to)
    assert back == {"current": f"models/{first['current']}", "previous": f"models/{second['current']}"}
    assert sha(to / "current") == sha(a) and sha(to / "previous") == sha(b)
    assert not [p for p in to.rglob("*") if ".tmp-" in p.name]


def test_install_refuses_a_damaged_file_and_changes_nothing(two_models, tmp_path):
    from happysad.edge.device.install import install, rollback

    a, _ = two_models
    to = tmp_path / "device"
    install(a, to)
    bad = tmp_path / "model_int8.tflite"
    data = bytearray(a.read_bytes())
    data[len(data) // 2] ^= 0x01
    bad.write_bytes(bytes(data))
    shutil.copy(a.parent / "manifest.json", tmp_path / "manifest.json")
    with pytest.raises(HappysadError, match="sha256"):
        install(bad, to)
    assert sha(to / "current") == sha(a) and len(list((to / "models").iterdir())) == 1
    with pytest.raises(UsageError, match="no such model file"):
        install(tmp_path / "missing.tflite", to)
    with pytest.raises(HappysadError, match="no previous model to go back to"):
        rollback(to)
    assert sha(to / "current") == sha(a)
