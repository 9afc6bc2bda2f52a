"""Bad input, tried for real: every case gets a one-line message, the right
exit code, no traceback, and the rest of the work goes on."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from happysad.edge import HappysadError, load_image, preprocess
from happysad.edge.images import MAX_PIXELS
from happysad.edge.runtime.metadata import TFLITE_MEMBER

from helpers import REPO, examples
from synth import draw_face

AS_ROOT = os.geteuid() == 0


# Root reads any file, so permission cases run their command as "nobody". The
# interpreter may live under a folder only root can enter (/root/.pyenv), so
# the child starts as root, imports what the command needs, then drops to
# nobody before touching the files under test.
DROP_ROOT = """
import os, runpy, sys
import happysad.edge.cli.parser, happysad.edge.cli.commands, happysad.edge.runtime.backends, ai_edge_litert.interpreter
import happysad.edge.classifier, happysad.edge.faces.blazeface, tqdm, queue
import happysad.train.cli, happysad.train.trainer, happysad.train.data
import encodings.idna, encodings.cp437, json, zipfile
os.setgid(65534); os.setuid(65534)
sys.argv = [sys.argv[1]] + sys.argv[2:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


def cli(*args, other_user=False, env=None, preexec=None):
    prefix = ["-c", DROP_ROOT] if other_user and AS_ROOT else ["-m"]
    module, *rest = map(str, args)
    return subprocess.run(
        [sys.executable, *prefix, f"happysad.{module}", *rest],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        env=env,
        preexec_fn=preexec,
    )


def error_lines(res):
    return [
        line
        for line in res.stderr.splitlines()
        if line.strip() and not line.startswith("INFO: Created TensorFlow Lite")
    ]


@pytest.fixture(scope="module")
def bad_folder():
    """A world-readable folder of good and bad images (readable by the unprivileged user too)."""
    root = Path(tempfile.mkdtemp(prefix="happysad-bad-"))
    os.chmod(root, 0o755)
    rng = np.random.default_rng(0)
    face = cv2.resize(draw_face(rng, True), (96, 96))
    cv2.imwrite(str(root / "gray.png"), face)
    cv2.imwrite(str(root / "color.jpg"), cv2.applyColorMap(face, cv2.COLORMAP_JET))
    cv2.imwrite(str(root / "deep16.png"), face.astype(np.uint16) * 257)
    cv2.imwrite(str(root / "rgba.png"), cv2.cvtColor(face, cv2.COLOR_GRAY2BGRA))
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.fromarray(np.zeros((40, 80), np.uint8)).save(root / "exif.jpg", exif=exif)
    (root / "zero.jpg").write_bytes(b"")
    (root / "text.jpg").write_text("this is not a picture\n")
    jpeg = cv2.imencode(".jpg", face)[1].tobytes()
    (root / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    png = cv2.imencode(".png", face)[1].tobytes()
    (root / "truncated.png").write_bytes(png[: len(png) // 2])
    # A valid PNG header announcing 30000x30000 pixels (2.7 GB as BGR).
    (root / "huge.png").write_bytes(png[:16] + (30000).to_bytes(4, "big") * 2 + png[24:])
    cv2.imwrite(str(root / "locked.png"), face)
    os.chmod(root / "locked.png", 0)
    (root / "selfloop.jpg").symlink_to(root / "selfloop.jpg")
    (root / "sub").mkdir()
    (root / "sub" / "up").symlink_to(root, target_is_directory=True)  # a folder loop
    for p in root.rglob("*"):
        if not p.is_symlink() and p.name != "locked.png":
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
    yield root
    shutil.rmtree(root, ignore_errors=True)


EXPECTED = {
    "zero.jpg": "empty file",
    "text.jpg": "not a decodable image",
    "truncated.jpg": "not a decodable image",
    "truncated.png": "not a decodable image",
    "huge.png": "30000x30000 pixels is over the 50-megapixel limit",
    "locked.png": "cannot read (Permission denied)",
    "selfloop.jpg": "cannot read (Too many levels of symbolic links)",
}


def test_classify_reports_each_bad_image_and_goes_on(export_dir, bad_folder):
    model = bad_folder.parent / f"{bad_folder.name}-model.tflite"  # readable by the other user too
    shutil.copy(export_dir / "model_int8.tflite", model)
    try:
        res = cli("edge", "classify", model, bad_folder, "--json", other_user=True)
    finally:
        model.unlink()
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr
    errors = error_lines(res)
    assert len(errors) == len(EXPECTED), errors
    for name, reason in EXPECTED.items():
        assert [e for e in errors if f"{name}: {reason}" in e], (name, errors)
    classified = {Path(json.loads(line)["path"]).name for line in res.stdout.splitlines()}
    assert classified == {"gray.png", "color.jpg", "deep16.png", "rgba.png", "exif.jpg"}


def test_training_scan_skips_and_reports_each(bad_folder, tmp_path):
    data = tmp_path / "data"
    (data / "happy").mkdir(parents=True)
    (data / "sad").mkdir()
    for p in bad_folder.iterdir():
        if p.is_file() and not p.is_symlink() and p.name != "locked.png":
            shutil.copy(p, data / "happy" / p.name)
    rng = np.random.default_rng(1)
    for i in range(3):
        cv2.imwrite(str(data / "sad" / f"s{i}.png"), draw_face(rng, False))
    from happysad.train.data import scan

    s = scan(data)
    reasons = {x["path"]: x["reason"] for x in s.skipped}
    for name in ("zero.jpg", "text.jpg", "truncated.jpg", "truncated.png", "huge.png"):
        assert EXPECTED[name] in reasons[f"happy/{name}"], reasons
    assert sorted(Path(p).name for p in s.paths if p.startswith("happy/")) == [
        "color.jpg",
        "deep16.png",
        "exif.jpg",
        "gray.png",
        "rgba.png",
    ]
    assert "color" in s.colors and "gray" in s.colors  # mixed in one folder, all used


def test_decoding_normalizes_depth_alpha_and_orientation(bad_folder):
    for name in ("deep16.png", "rgba.png", "gray.png", "color.jpg"):
        img = load_image(bad_folder / name)
        assert img.dtype == np.uint8 and img.shape == (96, 96, 3), name
    deep = load_image(bad_folder / "deep16.png")
    np.testing.assert_array_equal(deep, load_image(bad_folder / "gray.png"))  # 16 bits scaled to 8
    assert load_image(bad_folder / "exif.jpg").shape[:2] == (80, 40)  # EXIF rotation applied
    assert MAX_PIXELS >= 12_000_000  # a phone photo still passes


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    image=hnp.arrays(
        dtype=st.sampled_from([np.uint8, np.uint16, np.int8, np.float32, np.float64, np.bool_]),
        shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=20),
    ),
    size=st.tuples(st.integers(1, 64), st.integers(1, 64)),
    color=st.sampled_from(["gray", "rgb"]),
)
def test_preprocess_gives_model_input_or_clear_error(image, size, color):
    try:
        out = preprocess(image, size, color)
    except HappysadError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert image.dtype == np.uint8
    assert out.dtype == np.uint8 and out.shape == (*size, 1 if color == "gray" else 3)


@pytest.fixture(scope="module")
def plain_tflite(tmp_path_factory):
    """A real TFLite flatbuffer without metadata: 32x32 gray input, one sigmoid."""
    import keras
    import tensorflow as tf

    model = keras.Sequential(
        [
            keras.Input((32, 32, 1)),
            keras.layers.Rescaling(1 / 255.0),
            keras.layers.Flatten(),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def _with_metadata(model: bytes, path: Path, raw: bytes) -> Path:
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(TFLITE_MEMBER, raw)
    path.write_bytes(model + buf.getvalue())
    return path


def _meta(**change) -> bytes:
    d = {
        "schema": "happysad.model-metadata",
        "schema_version": 1,
        "labels": ["happy", "sad"],
        "input": {"height": 48, "width": 48, "color": "gray"},
        "threshold": 0.5,
    }
    d.update(change)
    return json.dumps(d).encode()


@pytest.mark.parametrize(
    "case,pattern",
    [
        ("wrong-shape", r"model input \(32, 32, 1\) does not match its metadata \(48, 48, 1\)"),
        ("no-metadata", r"no happysad metadata in this model file"),
        ("malformed", r"model metadata is not valid JSON"),
        ("oversized", r"over the 262144-byte limit"),
        ("future-schema", r"schema_version 7 is not supported"),
        ("random-bytes", r"no happysad metadata|not a valid TFLite model"),
    ],
)
def test_bad_model_files_name_the_file_and_the_problem(plain_tflite, tmp_path, dataset, case, pattern):
    path = tmp_path / f"{case}.tflite"
    if case == "wrong-shape":
        _with_metadata(plain_tflite, path, _meta())
    elif case == "no-metadata":
        path.write_bytes(plain_tflite)
    elif case == "malformed":
        _with_metadata(plain_tflite, path, b"{labels: oops")
    elif case == "oversized":
        _with_metadata(plain_tflite, path, b" " * 300_000)
    elif case == "future-schema":
        _with_metadata(plain_tflite, path, _meta(schema_version=7))
    else:
        path.write_bytes(np.random.default_rng(0).bytes(5000))
    res = cli("edge", "classify", path, dataset / "happy" / "happy_000.png")
    assert res.returncode == 1, res.stderr
    errors = error_lines(res)
    assert len(errors) == 1 and "Traceback" not in res.stderr, res.stderr
    import re

    assert f"{case}.tflite: " in errors[0] and re.search(pattern, errors[0]), errors[0]


def test_read_only_output_folder_keeps_earlier_report(bad_folder, dataset):
    out = Path(tempfile.mkdtemp(prefix="happysad-ro-"))
    data = Path(tempfile.mkdtemp(prefix="happysad-ro-data-"))
    shutil.copytree(dataset, data, dirs_exist_ok=True)
    for p in [data, *data.rglob("*")]:
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    try:
        first = cli("train", "--check", data, "--out", out)
        assert first.returncode == 0, first.stderr
        before = (out / "data_report.json").read_bytes()
        os.chmod(out, 0o555)
        res = cli("train", "--check", data, "--out", out, other_user=True)
        assert res.returncode == 1
        assert error_lines(res)[-1].endswith("cannot write (Permission denied); check free space and permissions")
        assert (out / "data_report.json").read_bytes() == before
        assert [p.name for p in out.iterdir()] == ["data_report.json"]
    finally:
        os.chmod(out, 0o755)
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(data, ignore_errors=True)


def test_full_disk_keeps_earlier_report(dataset, tmp_path):
    """A write that runs out of room (a file-size limit stands in for a full disk) fails
    with a clear message and leaves the earlier file whole."""
    import resource
    import signal

    first = cli("train", "--check", dataset, "--out", tmp_path)
    assert first.returncode == 0
    before = (tmp_path / "data_report.json").read_bytes()

    def small_disk():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (512, 512))

    res = cli("train", "--check", dataset, "--out", tmp_path, preexec=small_disk)
    assert res.returncode == 1
    assert "data_report.json: cannot write (File too large)" in error_lines(res)[-1]
    assert (tmp_path / "data_report.json").read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_keras_model_with_code_inside_is_refused(run_dir, tmp_path):
    """A .keras file carrying a Lambda layer (Python code) is not deserialized: safe mode."""
    import keras

    run = tmp_path / "run"
    shutil.copytree(run_dir, run, ignore=shutil.ignore_patterns("export", "model.keras"))
    evil = keras.Sequential(
        [
            keras.Input((48, 48, 1)),
            keras.layers.Lambda(lambda x: x * 0.0 + 1.0),
            keras.layers.Flatten(),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    evil.save(run / "model.keras")
    res = cli("export", run)
    assert res.returncode == 1
    assert "model.keras: cannot load the Keras model" in error_lines(res)[-1]
    assert not (run / "export").exists() or not list((run / "export").iterdir())
