"""Hostile files and odd paths: image bombs, files that are not files, names
that are not text, and outputs that are links or pipes. Each gets one line
and the rest of the work goes on, within a memory bound."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import threading

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from happysad.edge.errors import HappysadError
from happysad.edge.fileio import write_bytes, write_json
from happysad.edge.images import display_path, image_dimensions, load_image

from helpers import REPO, examples

#: Address space allowed to a classify process in these tests: the edge
#: runtime needs about 1.5 GB of it (mostly reserved, not resident); a
#: bomb that decodes asks for several GB more.
MEMORY_LIMIT = 3 * 1024**3


def _limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def gif_bomb() -> bytes:
    """35 bytes: a GIF whose logical screen and image claim 65535 x 65535 pixels."""
    return (
        b"GIF89a"
        + (65535).to_bytes(2, "little") * 2
        + b"\x00\x00\x00"
        + b",\x00\x00\x00\x00"
        + (65535).to_bytes(2, "little") * 2
        + b"\x00\x02\x02D\x01\x00;"
    )


def padded_jpeg_bomb() -> bytes:
    """A JPEG whose frame header (30000 x 30000) sits after 64 KB of APP1 padding."""
    app = b"".join(b"\xff\xe1" + (65533).to_bytes(2, "big") + bytes(65531) for _ in range(2))
    sof = b"\xff\xc0\x00\x11\x08" + (30000).to_bytes(2, "big") * 2 + b"\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    return b"\xff\xd8" + app + sof + b"\xff\xd9"


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    face = cv2.resize(cv2.cvtColor(np.full((48, 48), 120, np.uint8), cv2.COLOR_GRAY2BGR), (64, 64))
    cv2.imwrite(str(root / "good.png"), face)
    (root / "gif.jpg").write_bytes(gif_bomb())
    (root / "padded.jpg").write_bytes(padded_jpeg_bomb())
    with open(root / "huge.jpg", "wb") as fh:  # sparse: no disk used, but 100 MB long
        fh.truncate(100 * 1024 * 1024)
    os.mkfifo(root / "fifo.jpg")
    cv2.imwrite(str(root / "new\nline.png"), face)
    cv2.imwrite(os.fsencode(root) + b"/bad-\xff\xfe.png", face)
    return root


#: Runs a command and prints its peak resident memory (kB) as the last stderr line.
PEAK_RSS = (
    "import resource, subprocess, sys\n"
    "code = subprocess.run(sys.argv[1:]).returncode\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def test_each_hostile_image_is_one_line_and_the_good_ones_are_classified(export_dir, hostile):
    import time

    start = time.monotonic()
    res = subprocess.run(
        [
            sys.executable,
            "-c",
            PEAK_RSS,
            sys.executable,
            "-m",
            "happysad.edge",
            "classify",
            str(export_dir / "model_int8.tflite"),
            str(hostile),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        preexec_fn=_limit_memory,
    )
    seconds = time.monotonic() - start
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    peak_mb = int(res.stderr.strip().splitlines()[-1]) / 1024
    # Peak memory, not time, shows nothing was decoded in full (a 30000x30000
    # image is 2.7 GB); time is a benchmark's business on a loaded machine.
    assert peak_mb < 300, (peak_mb, seconds)
    errors = [line for line in res.stderr.splitlines() if line.startswith("happysad-edge: error:")]
    expect = {
        "gif.jpg": "not a decodable image (not a JPEG, PNG, BMP or WebP file)",
        "padded.jpg": "30000x30000 pixels is over the 50-megapixel limit",
        "huge.jpg": "105 MB is over the 64 MiB limit",
        "fifo.jpg": "not a regular file",
    }
    assert len(errors) == len(expect), errors
    for name, reason in expect.items():
        assert [e for e in errors if f"{name}: {reason}" in e], (name, errors)
    out = res.stdout.splitlines()
    assert len(out) == 3  # good.png and the two odd names, one line each
    assert any(line.startswith(f"{hostile}/new\\nline.png\t") for line in out), out
    assert any(line.startswith(f"{hostile}/bad-\\xff\\xfe.png\t") for line in out), out


def test_json_output_keeps_odd_names_as_valid_json(export_dir, hostile):
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "happysad.edge",
            "classify",
            str(export_dir / "model_int8.tflite"),
            str(hostile / "new\nline.png"),
            os.fsdecode(os.fsencode(hostile) + b"/bad-\xff\xfe.png"),
            "--json",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    paths = [json.loads(line)["path"] for line in res.stdout.splitlines()]
    assert len(paths) == 2 and paths[0].endswith("new\nline.png")
    assert os.fsencode(paths[1]).endswith(b"bad-\xff\xfe.png")  # the bytes come back as they were


def test_too_long_name_is_one_line(export_dir, tmp_path):
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "happysad.edge",
            "classify",
            str(export_dir / "model_int8.tflite"),
            str(tmp_path / ("x" * 300 + ".jpg")),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "cannot read (File name too long)" in res.stderr


def test_the_jpeg_frame_header_is_found_past_padding():
    assert image_dimensions(padded_jpeg_bomb()) == (30000, 30000)


def test_display_path_escapes_control_characters_and_bad_bytes():
    assert display_path("a\nb\x1b[31m.jpg") == "a\\nb\\x1b[31m.jpg"
    assert display_path(os.fsdecode(b"caf\xe9.jpg")) == "caf\\xe9.jpg"
    assert display_path("café.jpg") == "café.jpg"


def test_symlinked_output_keeps_the_link_and_replaces_its_target(tmp_path):
    real = tmp_path / "real.json"
    real.write_text("{}")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    write_json(link, {"a": 1})
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert json.loads(real.read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.json", "real.json"]  # no temporary left


def test_fifo_output_is_written_into_not_replaced(tmp_path):
    fifo = tmp_path / "report.json"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(open(fifo, "rb").read()))
    reader.start()
    write_json(fifo, {"b": 2})
    reader.join(10)
    assert got and json.loads(got[0]) == {"b": 2}
    assert fifo.is_fifo()


def test_fifo_and_bomb_fail_fast_in_the_api(tmp_path):
    os.mkfifo(tmp_path / "f.jpg")
    with pytest.raises(HappysadError, match="not a regular file"):
        load_image(tmp_path / "f.jpg")
    (tmp_path / "g.jpg").write_bytes(gif_bomb())
    with pytest.raises(HappysadError, match="not a JPEG, PNG, BMP or WebP"):
        load_image(tmp_path / "g.jpg")


def test_webp_is_read_and_its_size_checked(tmp_path):
    image = np.random.default_rng(0).integers(0, 255, (30, 50, 3), np.uint8)
    ok, data = cv2.imencode(".webp", image)
    assert ok
    assert image_dimensions(data.tobytes()) == (50, 30)
    write_bytes(tmp_path / "a.webp", data.tobytes())
    assert load_image(tmp_path / "a.webp").shape == (30, 50, 3)


@settings(max_examples=examples(60), deadline=None)
@given(
    head=st.sampled_from(
        [b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM", b"RIFF\x00\x00\x00\x00WEBPVP8X", b"GIF89a", b""]
    ),
    body=st.binary(max_size=2048),
)
def test_arbitrary_bytes_are_an_image_or_one_error(tmp_path_factory, head, body):
    """Any bytes behind any magic: a decoded image or a HappysadError, never another exception."""
    path = tmp_path_factory.mktemp("fuzz") / "x.jpg"
    path.write_bytes(head + body)
    try:
        image = load_image(path)
    except HappysadError as exc:
        assert "\n" not in str(exc)
    else:
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3


def test_models_that_lie_are_refused_at_load(export_dir, tmp_path):
    import zipfile

    from happysad.edge import Classifier
    from happysad.edge.runtime.embedding import strip_tflite_metadata

    body = strip_tflite_metadata((export_dir / "model_float32.tflite").read_bytes())
    # Metadata stored with an unsupported compression method (bzip2).
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_BZIP2) as zf:
        zf.writestr("happysad_metadata.json", b"{}")
    (tmp_path / "bz.tflite").write_bytes(body + buf.getvalue())
    with pytest.raises(HappysadError, match="unsupported method"):
        Classifier(tmp_path / "bz.tflite")
    # Deeply nested JSON.
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("happysad_metadata.json", b"[" * 100_000)
    (tmp_path / "deep.tflite").write_bytes(body + buf.getvalue())
    with pytest.raises(HappysadError, match="nested too deeply"):
        Classifier(tmp_path / "deep.tflite")


def test_onnx_with_two_inputs_or_uint8_input_is_one_line(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from happysad.edge import Classifier

    def save(name, inputs, outputs, nodes):
        graph = helper.make_graph(nodes, "g", inputs, outputs)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        path = tmp_path / name
        onnx.save(model, str(path))
        return path

    two = save(
        "two.onnx",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 48, 48, 1]) for n in "ab"],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [1, 48, 48, 1])],
        [helper.make_node("Add", ["a", "b"], ["c"])],
    )
    with pytest.raises(HappysadError, match="2 inputs and 1 outputs"):
        Classifier(two)
    u8 = save(
        "u8.onnx",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [1, 48, 48, 1])],
        [helper.make_tensor_value_info("b", TensorProto.UINT8, [1, 48, 48, 1])],
        [helper.make_node("Identity", ["a"], ["b"])],
    )
    with pytest.raises(HappysadError, match="rank-4 uint8 tensor"):
        Classifier(u8)


def test_nan_weights_are_refused_at_load(export_dir, tmp_path):
    """A float TFLite file whose weights were overwritten with NaN loads but fails the self-test."""
    from happysad.edge import Classifier

    data = bytearray((export_dir / "model_float32.tflite").read_bytes())
    nan = np.float32(np.nan).tobytes()
    # Overwrite a run of float32 weights in the middle of the buffer area with NaN.
    start = len(data) // 2 - (len(data) // 2) % 4
    for i in range(start, start + 40_000, 4):
        data[i : i + 4] = nan
    (tmp_path / "nan.tflite").write_bytes(bytes(data))
    with pytest.raises(HappysadError, match="non-finite score"):
        Classifier(tmp_path / "nan.tflite")


@settings(max_examples=examples(40), deadline=None)
@given(
    size=st.one_of(
        st.text(max_size=5),
        st.floats(allow_nan=True),
        st.none(),
        st.booleans(),
        st.lists(st.integers(), max_size=2),
        st.integers(max_value=-1),
    ),
    digest=st.one_of(st.text(max_size=70), st.integers(), st.none()),
)
def test_malformed_manifest_records_are_one_line(tmp_path_factory, size, digest):
    """verify on a manifest whose record holds the wrong types: a HappysadError, never a traceback."""
    from happysad.edge.device.verify import verify

    folder = tmp_path_factory.mktemp("manifest")
    model = folder / "model_int8.tflite"
    model.write_bytes(b"\x00" * 100)
    write_json(folder / "manifest.json", {"files": {"model_int8.tflite": {"size_bytes": size, "sha256": digest}}})
    with pytest.raises(HappysadError) as err:
        verify(model)
    assert "\n" not in str(err.value)


def test_training_scan_skips_a_fifo_and_odd_names(tmp_path, real_data):
    """happysad-train --check on a folder with a FIFO and names that are not text: no hang,
    the FIFO skipped with its reason, the odd names kept."""
    import shutil

    for label in ("happy", "sad"):
        (tmp_path / "data" / label).mkdir(parents=True)
        for path in sorted((real_data / label).glob("*.jpg"))[:3]:
            shutil.copy(path, tmp_path / "data" / label / path.name)
    first = sorted((real_data / "happy").glob("*.jpg"))[5]
    shutil.copy(first, os.fsencode(tmp_path / "data" / "happy") + b"/bad-\xff.jpg")
    shutil.copy(first, tmp_path / "data" / "sad" / "new\nline.jpg")
    os.mkfifo(tmp_path / "data" / "sad" / "fifo.jpg")
    res = subprocess.run(
        [sys.executable, "-m", "happysad.train", "--check", str(tmp_path / "data"), "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    report = json.loads((tmp_path / "run" / "data_report.json").read_text())
    assert "not a regular file" in json.dumps(report)
    # The two odd names are one photo under both labels: left out, and named escaped.
    assert "3 happy, 3 sad" in res.stdout
    assert "happy/bad-\\xff.jpg, sad/new\\nline.jpg" in res.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["edge", "verify", "{long}.tflite"],
        ["train", "--check", "{long}"],
        ["export", "{long}"],
        ["benchmarks", "{model}", "--data", "{long}"],
        ["edge", "camera", "{model}", "--source", "{long}.avi", "--headless"],
        ["edge", "classify", "{model}", "{long}.jpg"],
    ],
)
def test_a_name_too_long_is_one_line_in_every_tool(export_dir, tmp_path, args):
    long = str(tmp_path / ("x" * 300))
    argv = [a.format(long=long, model=export_dir / "model_int8.tflite") for a in args]
    res = subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True, cwd=REPO, timeout=120)
    lines = [line for line in res.stderr.splitlines() if line.strip() and not line.startswith("INFO:")]
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert len(lines) == 1 and "File name too long" in lines[0], lines


def test_a_full_disk_under_log_is_reported_once_and_the_loop_goes_on(export_dir, tmp_path):
    """--log on /dev/full: every write fails with ENOSPC; one line says so, every frame is still classified."""
    import cv2 as _cv2

    from happysad.benchmarks.video import write_video

    frames = [np.full((120, 160, 3), 90, np.uint8) for _ in range(8)]
    for i, f in enumerate(frames):
        f[20:100, 40:120] = _cv2.resize(np.full((48, 48, 3), 60 + 20 * i, np.uint8), (80, 80))
    video = write_video(tmp_path / "v.avi", frames)
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "happysad.edge",
            "camera",
            str(export_dir / "model_int8.tflite"),
            "--source",
            str(video),
            "--headless",
            "--no-face",
            "--log",
            "/dev/full",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert len(res.stdout.splitlines()) == 8
    assert res.stderr.count("--log: cannot write (No space left on device)") == 1, res.stderr


def test_threads_beyond_the_cores_are_clamped(export_dir, tmp_path):
    import cv2 as _cv2

    _cv2.imwrite(str(tmp_path / "a.png"), np.full((48, 48), 128, np.uint8))
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "happysad.edge",
            "classify",
            str(export_dir / "model_int8.onnx"),
            str(tmp_path / "a.png"),
            "--threads",
            "10000",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert f"--threads 10000 is more than this machine's {os.cpu_count()} cores; using {os.cpu_count()}" in res.stderr


def test_opencv_limit_is_the_second_gate(tmp_path):
    """An image over 50 megapixels whose size the header check cannot read still stops at
    OpenCV's own limit, which edge sets before OpenCV loads: one line, no traceback."""
    import cv2 as _cv2

    ok, data = _cv2.imencode(".png", np.zeros((8000, 7000), np.uint8))  # 56 MP, 66 kB
    (tmp_path / "big.png").write_bytes(data.tobytes())
    code = (
        "import sys, happysad.edge, happysad.edge.images as im\n"
        "im.image_dimensions = lambda data: None  # as if the header could not be read\n"
        "from happysad.edge.console import run_main\n"
        "sys.exit(run_main('probe', lambda argv: im.load_image(argv[0]) is None, [sys.argv[1]]))\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "big.png")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        preexec_fn=_limit_memory,
    )
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert "big.png: not a decodable image (over the 50-megapixel limit, or corrupt)" in res.stderr
