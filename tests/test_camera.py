"""The camera loop on recorded video and on a live MJPEG stream: how it is
tested without a camera."""

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest

from happysad.edge.camera.outputs.draw import annotate
from happysad.edge.camera.smoothing import ScoreSmoother
from happysad.edge.runtime.prediction import Prediction

from helpers import REPO, Lines, Proxy, camera_cmd, free_port, run_camera, wait_until, write_video
from synth import draw_face


@pytest.fixture(scope="module")
def drawn_video(tmp_path_factory):
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("video") / "drawn.avi"
    write_video(path, [cv2.resize(draw_face(rng, i % 2 == 0), (160, 120)) for i in range(12)])
    return path


@pytest.fixture(scope="module")
def faces_video(real_data, tmp_path_factory):
    """Real FER2013 faces, enlarged and pasted into 320x240 frames, 15 fps."""
    files = sorted((real_data / "happy").glob("*.jpg"))[:30] + sorted((real_data / "sad").glob("*.jpg"))[:30]
    frames = []
    for f in files:
        face = cv2.resize(cv2.imread(str(f)), (160, 160), interpolation=cv2.INTER_CUBIC)
        frame = np.full((240, 320, 3), 90, np.uint8)
        frame[40:200, 80:240] = face
        frames.append(frame)
    path = tmp_path_factory.mktemp("video") / "faces.avi"
    write_video(path, frames)
    return path


def test_headless_prints_one_json_line_per_frame(export_dir, drawn_video):
    res = run_camera(export_dir / "model_int8.tflite", drawn_video, "--detect-every", "1")
    assert res.returncode == 0, res.stderr
    records = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["frame"] for r in records] == list(range(1, 13))
    for r in records:
        assert set(r) == {"frame", "faces", "fps", "dropped", "ms"}
        assert set(r["ms"]) == {"capture", "detect", "crop", "preprocess", "inference", "total"}
        assert r["ms"]["total"] >= r["ms"]["detect"] > 0 and r["dropped"] == 0
        assert r["ms"]["total"] >= r["ms"]["capture"] + r["ms"]["detect"] + r["ms"]["inference"]
    # Detection takes its time whether or not it finds a face.
    assert any(not r["faces"] for r in records)
    assert "12 frames" in res.stderr


def test_the_size_the_source_gave_is_printed(export_dir, drawn_video):
    """--width/--height/--fps are requests to a camera; the loop says at start what the source gave."""
    res = run_camera(
        export_dir / "model_int8.tflite",
        drawn_video,
        "--max-frames",
        "2",
        "--width",
        "1280",
        "--height",
        "720",
        "--fps",
        "30",
    )
    assert res.returncode == 0, res.stderr
    assert re.search(r"source .*drawn\.avi: 160x120 at \d+ FPS \(asked 1280x720 at 30 FPS\)", res.stderr), res.stderr


def test_max_frames_and_no_face(export_dir, drawn_video):
    res = run_camera(export_dir / "model_int8.tflite", drawn_video, "--max-frames", "4", "--no-face")
    assert res.returncode == 0, res.stderr
    records = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(records) == 4
    for r in records:  # the whole frame, one reading each, no box
        assert len(r["faces"]) == 1 and r["faces"][0]["face"] is None
    assert [r["faces"][0]["label"] for r in records] == ["happy", "sad", "happy", "sad"]


def test_real_faces_are_found_classified_recorded_and_logged(export_dir, faces_video, tmp_path):
    rec, log = tmp_path / "out.avi", tmp_path / "faces.csv"
    res = run_camera(export_dir / "model_int8.tflite", faces_video, "--record", rec, "--log", log, "--faces", "all")
    assert res.returncode == 0, res.stderr
    records = [json.loads(line) for line in res.stdout.splitlines()]
    with_face = [r for r in records if r["faces"]]
    assert len(with_face) >= len(records) // 2
    for r in with_face:
        x, y, w, h = r["faces"][0]["face"]
        assert 80 <= x + w / 2 <= 240 and 40 <= y + h / 2 <= 200  # on the pasted face
        assert r["ms"]["inference"] > 0
    # --detect-every 2 (the default): a frame after one with faces holds its boxes, no detection.
    held = 0
    for prev, r in zip(records, records[1:]):
        if prev["faces"] and prev["ms"]["detect"] > 0:
            assert r["ms"]["detect"] == 0 and [f["face"] for f in r["faces"]] == [f["face"] for f in prev["faces"]]
            held += 1
        else:
            assert r["ms"]["detect"] > 0
    assert held >= len(records) // 4
    cap = cv2.VideoCapture(str(rec))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == len(records)
    ok, first = cap.read()
    assert ok and first.shape == (240, 320, 3)
    rows = list(csv.DictReader(log.open()))
    assert len(rows) == sum(len(r["faces"]) for r in records)
    assert set(rows[0]) == {"time", "frame", "label", "confidence", "score_happy", "score_sad", "x", "y", "w", "h"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary file left behind"


def wait_for_url(url, timeout=120):
    """The body of ``url`` once it answers (a camera loop starting on a loaded machine takes a while)."""

    def get():
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return r.read()
        except (urllib.error.URLError, ConnectionError, OSError):
            return None

    return wait_until(get, timeout, f"{url} to answer", interval=0.2)


def read_mjpeg_frames(url, count):
    frames = []
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.headers["Content-Type"].startswith("multipart/x-mixed-replace")
        buf = b""
        while len(frames) < count:
            buf += r.read(4096)
            m = re.search(rb"Content-Length: (\d+)\r\n\r\n", buf)
            if m and len(buf) >= m.end() + int(m.group(1)):
                jpeg = buf[m.end() : m.end() + int(m.group(1))]
                frames.append(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR))
                buf = buf[m.end() + int(m.group(1)) :]
    return frames


def serve(export_dir, video, port, *extra):
    return subprocess.Popen(
        camera_cmd(export_dir / "model_int8.tflite", video, "--pace", "--serve", f"127.0.0.1:{port}", *extra),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )


#: Frames of :func:`long_video`: 20 s at 15 fps, paced. The tests that stop
#: the loop themselves do so at a point they wait for, long before its end,
#: however slow the machine; the one that runs it to the end has its 20 s
#: for two model swaps.
LONG_FRAMES = 300


@pytest.fixture(scope="module")
def long_video(tmp_path_factory):
    """20 s of drawn faces at 15 fps, happy and sad by turns of 15 frames."""
    rng = np.random.default_rng(3)
    path = tmp_path_factory.mktemp("video") / "long.avi"
    write_video(path, [cv2.resize(draw_face(rng, i % 30 < 15), (160, 120)) for i in range(LONG_FRAMES)])
    return path


def test_mjpeg_preview_page_stream_and_404(export_dir, long_video):
    port = free_port()
    proc = serve(export_dir, long_video, port)
    try:
        page = wait_for_url(f"http://127.0.0.1:{port}/")
        assert b'<img id="stream" src="/stream.mjpg"' in page
        frames = read_mjpeg_frames(f"http://127.0.0.1:{port}/stream.mjpg", 3)
        assert all(f is not None and f.shape == (120, 160, 3) for f in frames)
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/etc/passwd", timeout=5)
        assert err.value.code == 404
        snap = cv2.imdecode(
            np.frombuffer(wait_for_url(f"http://127.0.0.1:{port}/snapshot.jpg"), np.uint8), cv2.IMREAD_COLOR
        )
        assert snap.shape == (120, 160, 3)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err  # stopped by a signal, outputs closed
    # The server stops with the loop.
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)


def test_stream_that_drops_reconnects_then_gives_up(export_dir, long_video):
    """A live MJPEG stream (served by a second camera loop, through a TCP
    proxy the test cuts and restores) that stops and comes back, then stops
    for good: the reader reconnects once, then exits non-zero after its
    tries. Each step waits for the reader to show the last one happened."""
    port = free_port()
    server = serve(export_dir, long_video, port)
    proxy = reader = None
    try:
        wait_for_url(f"http://127.0.0.1:{port}/")
        proxy = Proxy(port)
        reader = Lines(
            camera_cmd(
                export_dir / "model_int8.tflite", f"http://127.0.0.1:{proxy.port}/stream.mjpg", "--reconnect-tries", "4"
            )
        )
        reader.wait_for(lambda r: len(r.out) >= 5, what="frames from the stream")
        proxy.down()  # the stream drops
        reader.wait_for(lambda r: r.err_has("reconnecting in"), what="a reconnect try")
        before = len(reader.out)
        proxy.up()  # and comes back
        reader.wait_for(lambda r: r.err_has("is back") and len(r.out) >= before + 5, what="frames after the reconnect")
        assert server.poll() is None, "the serving loop ended before the test did"
        proxy.down()  # for good
        code = reader.finish()
    finally:
        for p in (server, reader and reader.proc):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(timeout=30)
        if proxy is not None:
            proxy.down()
    err = reader.stderr
    assert code == 1, err
    assert "reconnecting" in err and "is back" in err
    assert re.search(r"gave no frames after 4 reconnect tries", reader.err[-1])
    assert "Traceback" not in err
    assert len(reader.out) >= 10  # frames before and after the reconnect


def test_model_replaced_under_the_loop(export_dir, long_video, tmp_path):
    """A broken file shipped (refused, the old model keeps running), then a
    good one (switched to between frames), each once the loop has answered
    the last: no frame lost across both events."""
    model = tmp_path / "live.tflite"
    shutil.copy(export_dir / "model_int8.tflite", model)
    run = Lines(camera_cmd(model, long_video, "--pace"))
    try:
        run.wait_for(lambda r: r.out, what="the first frame")  # the loop is running
        bad = tmp_path / "incoming.tflite"
        bad.write_bytes(b"\x00" * 1000)
        os.replace(bad, model)
        run.wait_for(lambda r: r.err_has("refused the new model file"), what="the broken file refused")
        shutil.copy(export_dir / "model_float32.tflite", bad)
        os.replace(bad, model)
        run.wait_for(lambda r: r.err_has("switched to the new model file"), what="the switch")
        code = run.finish()
    finally:
        run.kill()
    err = run.stderr
    assert code == 0, err
    assert "refused the new model file" in err and "still running the previous one" in err
    assert "switched to the new model file" in err and "tflite-float32" in err
    assert [json.loads(line)["frame"] for line in run.out] == list(range(1, LONG_FRAMES + 1))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_releases_and_finalizes_outputs(export_dir, long_video, tmp_path, sig):
    rec = tmp_path / "rec.avi"
    # Lines reads stdout in a thread: every line is kept (communicate() after
    # readline() loses what readline had buffered ahead, which a loaded machine shows).
    run = Lines(camera_cmd(export_dir / "model_int8.tflite", long_video, "--pace", "--record", rec))
    try:
        run.wait_for(lambda r: len(r.out) >= 10, what="ten frames")  # the loop is running
        run.proc.send_signal(sig)
        code = run.finish(timeout=60)
    finally:
        run.kill()
    assert code == 130, run.stderr
    assert not list(tmp_path.glob(".rec.tmp-*"))  # the recording is under its final name
    n = len(run.out)
    assert 10 <= n < LONG_FRAMES
    assert int(cv2.VideoCapture(str(rec)).get(cv2.CAP_PROP_FRAME_COUNT)) == n


def test_annotate_draws_box_label_and_fps():
    frame = np.zeros((120, 160, 3), np.uint8)
    pred = Prediction("sad", 0.9, {"happy": 0.1, "sad": 0.9}, (40, 40, 50, 50))
    out = annotate(frame.copy(), [pred], 12.5)
    changed = np.any(out != frame, axis=2)
    assert changed[40, 40:90].all() and changed[40:90, 40].all()  # the box edges
    assert changed[5:25, 5:80].any()  # the FPS text
    assert changed[20:38, 40:120].any()  # the label above the box
    assert out[40, 60].tolist() == [0, 0, 200]  # sad is drawn in red (BGR)


def test_smoothing_follows_a_face_and_damps_a_flicker():
    s = ScoreSmoother(0.6, ("happy", "sad"))

    def pred(p_sad, box):
        return Prediction(
            "sad" if p_sad >= 0.5 else "happy", max(p_sad, 1 - p_sad), {"happy": 1 - p_sad, "sad": p_sad}, box
        )

    for _ in range(5):
        s.update([pred(0.1, (10, 10, 50, 50))])
    flicker = s.update([pred(0.9, (12, 11, 50, 50))])[0]  # one odd frame of the same face
    assert flicker.label == "happy"
    assert flicker.scores["sad"] == pytest.approx(0.6 * s_expected_history(0.1, 0.6, 5) + 0.4 * 0.9)
    other = s.update([pred(0.9, (200, 200, 50, 50))])[0]  # a different face: not averaged
    assert other.label == "sad" and other.scores["sad"] == pytest.approx(0.9)


def s_expected_history(value, alpha, n):
    """EMA of a constant input seeded with the same constant: the constant."""
    ema = value
    for _ in range(n - 1):
        ema = alpha * ema + (1 - alpha) * value
    return ema


def test_doctor_reports_each_check_and_fails_on_a_missing_camera(drawn_video):
    res = subprocess.run(
        [sys.executable, "-m", "happysad.edge", "doctor", "--source", "57"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert res.returncode == 1
    lines = {line.split()[1]: line for line in res.stdout.splitlines()}
    assert lines["ai-edge-litert"].startswith("ok") and lines["onnxruntime"].startswith("ok")
    assert lines["face"].startswith("ok")  # "face cascade"
    camera = [line for line in res.stdout.splitlines() if "camera 57" in line][0]
    assert camera.startswith("FAIL") and "ls /dev/video*" in camera
    res = subprocess.run(
        [sys.executable, "-m", "happysad.edge", "doctor", "--source", str(drawn_video)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert res.returncode == 0, res.stdout
    assert "gives 160x120 frames" in res.stdout


def test_preview_on_the_network_needs_a_token(export_dir, long_video, tmp_path):
    res = subprocess.run(
        camera_cmd(export_dir / "model_int8.tflite", long_video, "--serve", "0.0.0.0:0"),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert res.returncode == 2 and "--serve-token" in res.stderr and "Traceback" not in res.stderr
    port = free_port()
    (tmp_path / "token").write_text("s3cret\n")
    proc = subprocess.Popen(
        camera_cmd(
            export_dir / "model_int8.tflite",
            long_video,
            "--pace",
            "--serve",
            f"127.0.0.1:{port}",
            "--serve-token",
            f"@{tmp_path / 'token'}",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )

    def refused():
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10)
        except urllib.error.HTTPError as err:
            return err.code
        except (urllib.error.URLError, ConnectionError, OSError):
            return None
        return 200

    try:
        assert wait_until(refused, 120, "the preview to answer", interval=0.1) == 401
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/?token=s3cret", timeout=5).read()
        assert b"/stream.mjpg?token=s3cret" in page
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/snapshot.jpg", headers={"Authorization": "Bearer s3cret"}
        )
        assert urllib.request.urlopen(request, timeout=5).read()[:2] == b"\xff\xd8"
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/snapshot.jpg?token=wrong", timeout=5)
        assert err.value.code == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)


def test_prometheus_metrics_move_with_the_loop(export_dir, long_video):
    """camera --metrics: scraped twice over HTTP and parsed with the client's own parser,
    the counters move; the model's sha256 is the file's."""
    import hashlib

    from prometheus_client.parser import text_string_to_metric_families

    port = free_port()
    model = export_dir / "model_int8.tflite"
    proc = subprocess.Popen(
        camera_cmd(model, long_video, "--pace", "--metrics", str(port)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )

    def scrape():
        text = wait_for_url(f"http://127.0.0.1:{port}/metrics").decode()
        return {
            s.name + (str(sorted(s.labels.items())) if s.labels else ""): s
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    try:
        # The server answers before the first frame is classified.
        first = wait_until(lambda: (s := scrape())["happysad_frames_total"].value > 0 and s, 120, "a frame counted")
        n = first["happysad_frames_total"].value
        second = wait_until(lambda: (s := scrape())["happysad_frames_total"].value > n and s, 120, "more frames")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    assert second["happysad_frames_total"].value > first["happysad_frames_total"].value > 0
    labels = [k for k in second if k.startswith("happysad_labels_total")]
    assert len(labels) == 2 and sum(second[k].value for k in labels) >= second["happysad_faces_total"].value > 0
    assert second["happysad_stage_seconds_count[('stage', 'inference')]"].value > 0
    info = next(s for k, s in second.items() if k.startswith("happysad_model_info"))
    assert info.labels["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()


def test_headless_json_shape_is_pinned(export_dir, drawn_video):
    """The JSON line's keys, their order and their value types: what scripts
    reading the camera's output rely on."""
    res = run_camera(export_dir / "model_int8.tflite", drawn_video, "--max-frames", "3", "--detector", "haar")
    assert res.returncode == 0, res.stderr
    for line in res.stdout.splitlines():
        record = json.loads(line)
        assert list(record) == ["frame", "faces", "fps", "dropped", "ms"]
        assert list(record["ms"]) == ["capture", "detect", "crop", "preprocess", "inference", "total"]
        assert all(isinstance(v, float | int) for v in record["ms"].values())
        assert isinstance(record["frame"], int) and isinstance(record["dropped"], int)
        for face in record["faces"]:
            assert list(face) == ["label", "confidence", "scores", "basis", "face", "face_score", "keypoints", "ms"]
            assert list(face["scores"]) == ["happy", "sad"]
