"""Outputs that no one reads: FIFOs without a reader, readers that never
read, /dev/full and folders, as every output path argument of the camera
(--log, --record, its piped stdout) and of the benchmark (--json, --csv,
--markdown). Each ends within seconds with one line and the documented exit
code, or goes on as documented (docs/tools.md), and nothing already written
is lost: the other outputs of the run are whole."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import threading
import time

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from happysad.edge.camera.outputs.pipe import RETRY_S, PipeWriter
from happysad.edge.errors import HappysadError
from happysad.edge.fileio import NoReader, write_bytes

from helpers import REPO, FakeClock, Lines, assert_one_line_error, camera_cmd, examples, run_module, write_video

#: Every command here must end within this, seconds (the issue's bound).
BOUND_S = 10
MODEL = "model_int8.tflite"


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """30 frames of 160x120, gray levels rising (a --no-face run: one reading per frame)."""
    path = tmp_path_factory.mktemp("hostile-out") / "v.avi"
    write_video(path, [np.full((120, 160, 3), 60 + 5 * i, np.uint8) for i in range(30)])
    return path


@pytest.fixture(scope="module")
def long_video(tmp_path_factory):
    """1500 small frames: more rows and lines than a pipe holds (64 KiB)."""
    path = tmp_path_factory.mktemp("hostile-long") / "long.avi"
    write_video(path, [np.full((48, 64, 3), (7 * i) % 255, np.uint8) for i in range(1500)])
    return path


def camera(export_dir, source, *extra, stdout=subprocess.PIPE, timeout=BOUND_S):
    """The headless --no-face camera run to its end within ``timeout`` s."""
    cmd = camera_cmd(export_dir / MODEL, source, "--no-face", *extra)
    return subprocess.run(cmd, stdout=stdout, stderr=subprocess.PIPE, text=True, cwd=REPO, timeout=timeout)


def warnings(res) -> list[str]:
    """stderr lines less the interpreter's, the source line and the summary."""
    return [
        line
        for line in res.stderr.splitlines()
        if line.strip() and not line.startswith(("INFO:", "source ", "happysad-edge: "))
    ]


def dropped(res, name: str) -> int:
    """What the summary line says output ``name`` could not write (0 when it says nothing)."""
    found = re.search(rf"outputs could not write: .*\b{name} (\d+)", res.stderr)
    return int(found.group(1)) if found else 0


def stalled_reader(fifo):
    """A read end opened and never read (non-blocking, so the test does not wait for a writer)."""
    return os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)


def drain(fd) -> bytes:
    """Everything in a pipe, read without blocking."""
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


def whole_lines(data: bytes) -> bytes:
    """``data`` up to its last line end: a record the pipe took only part of
    when the run ended is cut, and counted as dropped."""
    return data[: data.rfind(b"\n") + 1]


def test_log_fifo_without_reader_goes_on_says_so_once_and_counts(export_dir, video, tmp_path):
    fifo = tmp_path / "faces.csv"
    os.mkfifo(fifo)
    res = camera(export_dir, video, "--log", fifo)
    assert res.returncode == 0, res.stderr
    assert len(res.stdout.splitlines()) == 30  # every frame classified and printed
    (line,) = warnings(res)
    assert line.startswith("--log: no process reads") and "the camera goes on" in line
    assert dropped(res, "log") == 30 and fifo.is_fifo()


def test_log_fifo_reader_that_comes_later_gets_the_header_then_whole_rows(export_dir, tmp_path):
    video = tmp_path / "paced.avi"
    write_video(video, [np.full((48, 64, 3), 90, np.uint8) for _ in range(75)])  # 5 s at 15 FPS
    fifo = tmp_path / "faces.csv"
    os.mkfifo(fifo)
    run = Lines(camera_cmd(export_dir / MODEL, video, "--no-face", "--pace", "--log", fifo))
    try:
        run.wait_for(lambda r: r.err_has("--log: no process reads"), BOUND_S, "the no-reader line")
        got = []
        reader = threading.Thread(target=lambda: got.append(open(fifo, "rb").read()), daemon=True)
        reader.start()
        assert run.finish(BOUND_S + RETRY_S) == 0, run.stderr
        reader.join(BOUND_S)
    finally:
        run.kill()
    rows = list(csv.reader(io.StringIO(got[0].decode())))
    assert rows[0][:4] == ["time", "frame", "label", "confidence"]
    assert len(rows) > 2 and all(len(row) == len(rows[0]) for row in rows)
    assert run.err_has("--log: a reader opened")
    # What was not written is counted: the rows read and the rows dropped make every frame.
    summary = [line for line in run.err if line.startswith("happysad-edge: 75 frames")]
    assert summary and len(rows) - 1 + int(re.search(r"log (\d+)", summary[0]).group(1)) == 75


def test_log_fifo_whose_reader_never_reads_drops_whole_rows_and_counts_them(export_dir, long_video, tmp_path):
    fifo = tmp_path / "faces.csv"
    os.mkfifo(fifo)
    fd = stalled_reader(fifo)
    res = camera(export_dir, long_video, "--log", fifo)
    data = whole_lines(drain(fd))
    assert res.returncode == 0, res.stderr
    assert len(res.stdout.splitlines()) == 1500
    assert [line for line in warnings(res) if "the reader took nothing" in line] == [warnings(res)[0]]
    rows = list(csv.reader(io.StringIO(data.decode())))
    assert rows[0][0] == "time" and all(len(row) == len(rows[0]) for row in rows)
    assert len(rows) - 1 + dropped(res, "log") == 1500 and dropped(res, "log") > 0


def test_stdout_pipe_not_read_never_stalls_the_loop(export_dir, long_video):
    """camera --headless | a reader that sleeps: the loop runs to its end; lines
    are whole, and those the pipe had no room for are counted."""
    proc = subprocess.Popen(
        camera_cmd(export_dir / MODEL, long_video, "--no-face"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
    )
    try:
        proc.wait(timeout=BOUND_S)  # nobody reads stdout meanwhile
        out, err = proc.communicate(timeout=BOUND_S)
    finally:
        proc.kill()
    assert proc.returncode == 0, err.decode()
    lines = whole_lines(out).decode().splitlines()
    assert [json.loads(line)["frame"] for line in lines] == sorted({json.loads(line)["frame"] for line in lines})
    got = re.search(r"stdout (\d+) JSON lines", err.decode())
    assert got and len(lines) + int(got.group(1)) == 1500, err.decode()


def test_record_fifo_without_reader_goes_on_and_with_one_gets_an_mjpeg_stream(export_dir, video, tmp_path):
    fifo = tmp_path / "rec.avi"
    os.mkfifo(fifo)
    res = camera(export_dir, video, "--record", fifo)
    assert res.returncode == 0 and len(res.stdout.splitlines()) == 30, res.stderr
    assert [line.split(";")[0] for line in warnings(res)] == [f"--record: no process reads {fifo}"]
    assert dropped(res, "record") == 30
    got = []
    reader = threading.Thread(target=lambda: got.append(open(fifo, "rb").read()), daemon=True)
    reader.start()
    time.sleep(0.2)  # the reader's open waits for the writer; the camera's open must find it there
    res = camera(export_dir, video, "--record", fifo)
    reader.join(BOUND_S)
    assert res.returncode == 0 and not warnings(res), res.stderr
    (tmp_path / "got.mjpeg").write_bytes(got[0])
    cap = cv2.VideoCapture(str(tmp_path / "got.mjpeg"))
    frames = 0
    while cap.read()[0]:
        frames += 1
    assert frames == 30


def test_a_folder_as_record_or_log_is_one_line_at_start(export_dir, video, tmp_path):
    for flag in ("--record", "--log"):
        res = camera(export_dir, video, flag, tmp_path)
        assert_one_line_error(res, 1, rf"{flag} .*(is a folder|Is a directory)")
        assert res.stdout == ""


def test_pipe_writer_keeps_records_whole_and_retries_at_most_every_retry_interval(tmp_path):
    fifo = tmp_path / "f"
    os.mkfifo(fifo)
    clock = FakeClock()
    writer = PipeWriter(fifo, "--log", "rows", preamble=b"header\n", clock=clock)
    assert not writer.write(b"a\n") and writer.dropped == 1
    fd = stalled_reader(fifo)
    assert not writer.write(b"b\n")  # a reader now, but the next try is RETRY_S away
    clock.advance(RETRY_S)
    record = b"x" * 5000 + b"\n"
    while writer.write(record):  # fills the pipe; never blocks
        pass
    assert writer.dropped == 3
    data = drain(fd)
    assert data.startswith(b"header\n")
    assert set(data[len(b"header\n") :].split(b"\n")[:-1]) <= {b"x" * 5000}  # whole records only, or one cut last
    writer.close()


def test_one_shot_writes_to_a_fifo_end_within_the_bound(tmp_path):
    """write_bytes (every report of the tools): no reader, a reader that never reads, /dev/full."""
    fifo = tmp_path / "report.json"
    os.mkfifo(fifo)
    start = time.monotonic()
    with pytest.raises(NoReader, match="no process reads this FIFO"):
        write_bytes(fifo, b"{}")
    fd = stalled_reader(fifo)
    with pytest.raises(HappysadError, match="the reader took no byte for 5 s"):
        write_bytes(fifo, bytes(1 << 20))
    os.close(fd)
    with pytest.raises(HappysadError, match="No space left on device"):
        write_bytes("/dev/full", b"{}")
    assert time.monotonic() - start < 2 * BOUND_S and fifo.is_fifo()


def test_bench_json_to_a_fifo_without_reader_is_one_line(export_dir, tmp_path):
    fifo = tmp_path / "bench.json"
    os.mkfifo(fifo)
    quick = ("--runs", "3", "--warmup", "1", "--cold-runs", "0")
    for path, pattern in ((fifo, r"bench.json: no process reads this FIFO"), ("/dev/full", r"No space left")):
        res = run_module("benchmarks", export_dir / MODEL, *quick, "--json", path, timeout=BOUND_S + 20)
        errors = [line for line in res.stderr.splitlines() if line.startswith("happysad-bench: error:")]
        assert res.returncode == 1 and len(errors) == 1 and "Traceback" not in res.stderr, res.stderr
        assert re.search(pattern, errors[0]), errors[0]


def test_bench_writes_every_output_it_can_when_one_cannot_be(export_dir, dataset, tmp_path):
    """--json into a folder, --markdown a FIFO with no reader: one line each, exit 1; --csv is written."""
    fifo = tmp_path / "b.md"
    os.mkfifo(fifo)
    outs = ("--json", tmp_path, "--csv", tmp_path / "b.csv", "--markdown", fifo)
    quick = ("--runs", "3", "--warmup", "1", "--cold-runs", "0")
    res = run_module("benchmarks", export_dir / MODEL, "--data", dataset, *quick, *outs, timeout=120)
    errors = [line for line in res.stderr.splitlines() if line.startswith("happysad-bench: error:")]
    assert res.returncode == 1 and len(errors) == 2, res.stderr
    assert "Is a directory" in errors[0] and "no process reads this FIFO" in errors[1]
    assert "model_int8.tflite" in (tmp_path / "b.csv").read_text() and fifo.is_fifo()


SPECIAL = ("fifo-no-reader", "fifo-stalled-reader", "dev-full", "dev-null", "folder")


@settings(max_examples=examples(10), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(SPECIAL), flag=st.sampled_from(("--log", "--record")))
def test_special_files_as_camera_outputs(export_dir, video, tmp_path_factory, kind, flag):
    """Any special file as --log or --record: the run ends within the bound,
    a folder with one line and exit 1, anything else with exit 0 and every
    frame's JSON line on stdout (the other output whole)."""
    folder = tmp_path_factory.mktemp("special")
    path = {"dev-full": "/dev/full", "dev-null": "/dev/null", "folder": folder}.get(kind, folder / "out.avi")
    fd = None
    if kind.startswith("fifo"):
        os.mkfifo(path)
        fd = stalled_reader(path) if kind == "fifo-stalled-reader" else None
    try:
        res = camera(export_dir, video, flag, path)
    finally:
        if fd is not None:
            drain(fd)
    if kind == "folder":
        assert_one_line_error(res, 1, rf"{flag} ")
        return
    assert res.returncode == 0, res.stderr
    assert [json.loads(line)["frame"] for line in res.stdout.splitlines()] == list(range(1, 31))
    assert len(warnings(res)) <= 2 and "Traceback" not in res.stderr


def _model_with_labels(export_dir, path, labels):
    """The int8 TFLite file with its metadata's labels replaced, written raw (unchecked)."""
    import zipfile

    from happysad.edge.runtime.embedding import read_tflite_metadata, strip_tflite_metadata
    from happysad.edge.runtime.metadata import TFLITE_MEMBER

    meta = {**read_tflite_metadata(export_dir / MODEL).to_dict(), "labels": labels}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(TFLITE_MEMBER, json.dumps(meta))
    path.write_bytes(strip_tflite_metadata((export_dir / MODEL).read_bytes()) + buf.getvalue())
    return meta


@pytest.mark.parametrize("bad", ["happy\nINJECTED", "ha\x1b[2Jppy", "tab\there", "line\u2028sep"])
def test_labels_with_control_characters_are_refused_at_load(export_dir, tmp_path, bad):
    """A model whose labels hold a newline, an ESC or another unprintable
    character is refused at load with one line naming the label escaped, so
    no output (classify's text, the CSV log, MQTT, the metrics) prints it raw."""
    model = tmp_path / MODEL
    _model_with_labels(export_dir, model, [bad, "sad"])
    cv2.imwrite(str(tmp_path / "a.png"), np.full((48, 48), 128, np.uint8))
    for args in (("classify", model, tmp_path / "a.png"), ("info", model)):
        res = run_module("edge", *args, timeout=60)
        assert_one_line_error(res, 1, r"holds a control character")
        assert bad not in res.stdout + res.stderr and "\x1b" not in res.stderr


def test_labels_of_any_printable_script_still_load(export_dir, tmp_path):
    from happysad.edge.runtime.embedding import read_tflite_metadata

    model = tmp_path / MODEL
    _model_with_labels(export_dir, model, ["très content", "triste 😢"])
    assert read_tflite_metadata(model).labels == ("très content", "triste 😢")


def test_dropped_records_are_in_the_metrics(tmp_path):
    """The metrics report what each FIFO output could not write, by output."""
    pytest.importorskip("prometheus_client")
    from prometheus_client import generate_latest

    from happysad.edge.camera.outputs.base import FrameResult
    from happysad.edge.camera.outputs.csvlog import FaceLog
    from happysad.edge.camera.outputs.prometheus import Metrics, MetricsServer
    from happysad.edge.runtime.prediction import Prediction

    os.mkfifo(tmp_path / "faces.csv")
    log = FaceLog(str(tmp_path / "faces.csv"), ("happy", "sad"))  # no reader: every row dropped
    server = MetricsServer("127.0.0.1", 0, ("happy", "sad"))
    metrics = Metrics(server)
    metrics.others = [log, metrics]
    try:
        for n in (1, 2, 3):
            result = FrameResult(n, np.zeros((8, 8, 3), np.uint8), [Prediction("sad", 0.9, {"sad": 0.9})], 15.0)
            log.emit(result)
            metrics.emit(result)
        text = generate_latest(server.registry).decode()
    finally:
        metrics.close()
        log.close()
    assert 'happysad_output_dropped{output="log"} 3.0' in text
    assert log.drops() == {"log": 3}
