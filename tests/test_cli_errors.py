"""Bad input gets a one-line error, a non-zero exit and no traceback."""
import re
import subprocess
import sys

import pytest

from conftest import REPO


def cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, timeout=timeout)


def assert_one_line_error(res, code, pattern):
    assert res.returncode == code, (res.returncode, res.stderr)
    lines = [line for line in res.stderr.splitlines()
             if line.strip() and not line.startswith("INFO: Created TensorFlow Lite")]
    assert len(lines) == 1, res.stderr
    assert re.search(pattern, lines[0]), lines[0]
    assert "Traceback" not in res.stderr


@pytest.fixture
def truncated(export_dir, tmp_path):
    out = {}
    for name in ("model_int8.tflite", "model_int8.onnx"):
        data = (export_dir / name).read_bytes()
        (tmp_path / name).write_bytes(data[: len(data) // 2])
        out[name] = tmp_path / name
    return out


def test_truncated_tflite(truncated, dataset):
    res = cli("edge", "classify", truncated["model_int8.tflite"], dataset / "happy" / "happy_000.png")
    assert_one_line_error(res, 1, r"model_int8\.tflite: .*(truncated|not a valid TFLite)")


def test_truncated_onnx(truncated, dataset):
    res = cli("edge", "classify", truncated["model_int8.onnx"], dataset / "happy" / "happy_000.png")
    assert_one_line_error(res, 1, r"model_int8\.onnx: not a valid ONNX model")


def test_random_bytes_as_model(tmp_path, dataset):
    path = tmp_path / "noise.tflite"
    path.write_bytes(bytes(range(256)) * 8)
    res = cli("edge", "classify", path, dataset / "happy" / "happy_000.png")
    assert_one_line_error(res, 1, r"noise\.tflite: ")


def test_missing_model_and_missing_image(export_dir, tmp_path):
    res = cli("edge", "classify", tmp_path / "absent.tflite", tmp_path)
    assert_one_line_error(res, 2, r"absent\.tflite: no such model file")
    res = cli("edge", "classify", export_dir / "model_int8.tflite", tmp_path / "absent.jpg")
    assert_one_line_error(res, 2, r"absent\.jpg: no such file or folder")


def test_camera_that_does_not_exist(export_dir):
    res = cli("edge", "camera", export_dir / "model_int8.tflite", "--source", "57", "--headless")
    assert_one_line_error(res, 1, r"camera 57 could not be opened")


def test_video_file_that_does_not_exist(export_dir, tmp_path):
    res = cli("edge", "camera", export_dir / "model_int8.tflite", "--source", tmp_path / "v.avi")
    assert_one_line_error(res, 2, r"v\.avi: no such video file")


@pytest.mark.parametrize("args,pattern", [
    (("edge", "classify"), r"required"),
    (("edge", "frobnicate"), r"invalid choice"),
    (("edge", "camera", "m.tflite", "--max-frames", "-3"), r"must be 0 or more"),
    (("train", "somewhere", "--out", "x", "--split-ratios", "0.5,0.6,0.1"), r"summing to 1"),
    (("train", "somewhere", "--out", "x", "--epochs", "zero"), r"not an integer"),
    (("export", "run", "--formats", "tflite-int4"), r"unknown format tflite-int4; valid formats: tflite-float32"),
    (("benchmarks", "m.tflite", "--split", "s.json", "--runs", "0"), r"must be at least 1"),
    (("benchmarks", "m.tflite", "--split", "s.json", "--bogus"), r"unrecognized arguments: --bogus"),
])
def test_usage_errors_exit_2(args, pattern):
    assert_one_line_error(cli(*args), 2, pattern)


def test_train_on_missing_folder_says_how_to_lay_out_photos(tmp_path):
    res = cli("train", tmp_path / "nothing", "--out", tmp_path / "run")
    assert_one_line_error(res, 2, r"no such data folder; lay out photos as .*happy/\*\.jpg")
    assert not (tmp_path / "run").exists()


def test_export_of_missing_run(tmp_path):
    assert_one_line_error(cli("export", tmp_path / "norun"), 2, r"norun: no such run folder")


def test_bench_without_labelled_data(export_dir, tmp_path):
    res = cli("benchmarks", export_dir / "model_int8.tflite", "--split", tmp_path / "split.json")
    assert_one_line_error(res, 2, r"split\.json: no such split file")
