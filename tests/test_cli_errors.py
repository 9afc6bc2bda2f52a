"""Bad input gets a one-line error, a non-zero exit and no traceback."""

import subprocess
import sys

import pytest

from helpers import REPO, assert_one_line_error, run_module


def cli(module, *args, timeout=120):
    """``python -m happysad.MODULE ARGS``, run to its end."""
    return run_module(module, *args, timeout=timeout)


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


@pytest.mark.parametrize(
    "args,pattern",
    [
        (("edge", "classify"), r"required"),
        (("edge", "frobnicate"), r"invalid choice"),
        (("edge", "camera", "m.tflite", "--max-frames", "-3"), r"must be 0 or more"),
        (("train", "somewhere", "--out", "x", "--split-ratios", "0.5,0.6,0.1"), r"summing to 1"),
        (("train", "somewhere", "--out", "x", "--epochs", "zero"), r"not an integer"),
        (("export", "run", "--formats", "tflite-int4"), r"unknown format tflite-int4; valid formats: tflite-float32"),
        (("benchmarks", "m.tflite", "--split", "s.json", "--runs", "0"), r"must be at least 1"),
        (("benchmarks", "m.tflite", "--split", "s.json", "--bogus"), r"unrecognized arguments: --bogus"),
    ],
)
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


@pytest.mark.parametrize(
    "module,prog",
    [
        ("edge", "happysad-edge"),
        ("train", "happysad-train"),
        ("export", "happysad-export"),
        ("benchmarks", "happysad-bench"),
    ],
)
def test_every_tool_has_a_version(module, prog):
    from happysad.edge import __version__

    res = cli(module, "--version")
    assert res.returncode == 0 and res.stdout.strip() == f"{prog} {__version__}"


def test_classify_on_an_empty_folder_says_so(export_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    res = cli("edge", "classify", export_dir / "model_int8.tflite", tmp_path / "empty")
    assert_one_line_error(res, 1, r"empty: no image files \(\.jpeg, \.jpg, \.png, \.bmp, \.webp\) in this folder")


def test_verify_json_answers_on_failure_too(export_dir, tmp_path):
    import json
    import shutil

    shutil.copy(export_dir / "model_int8.tflite", tmp_path / "model_int8.tflite")
    shutil.copy(export_dir / "manifest.json", tmp_path / "manifest.json")
    with open(tmp_path / "model_int8.tflite", "ab") as fh:
        fh.write(b"x")
    res = cli("edge", "verify", tmp_path / "model_int8.tflite", "--json")
    assert res.returncode == 1
    answer = json.loads(res.stdout)
    assert answer["ok"] is False and "bytes, but manifest.json says" in answer["error"]


def test_training_over_an_earlier_run_needs_overwrite(run_dir, dataset):
    before = (run_dir / "model.keras").stat().st_mtime_ns
    res = cli("train", dataset, "--out", run_dir, "--epochs", "1")
    assert_one_line_error(res, 2, r"holds a trained run already \(model\.keras\); pass --overwrite")
    assert (run_dir / "model.keras").stat().st_mtime_ns == before


def test_workstation_tool_on_an_edge_install_says_what_to_install(dataset, tmp_path):
    """An edge-only install has happysad-train on the PATH; without Keras it says what to install."""
    block = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('keras', 'tensorflow'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
    )
    for module, args in (
        ("train", [str(dataset), "--out", str(tmp_path / "run"), "--epochs", "1"]),
        ("export", [str(tmp_path / "run")]),
    ):
        code = block + f"from {module}.cli import main\nsys.exit(main({args!r}))\n"
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
        assert_one_line_error(
            res,
            1,
            r"needs tensorflow, which the edge install leaves out; .*"
            r"pip install 'happysad\[train\]'",
        )
        assert not (tmp_path / "run").exists()  # failed before any work


def test_a_model_with_the_wrong_extension_says_rename_it(export_dir, tmp_path, dataset):
    import shutil

    shutil.copy(export_dir / "model_int8.tflite", tmp_path / "model.onnx")
    shutil.copy(export_dir / "model_int8.onnx", tmp_path / "model.tflite")
    image = dataset / "happy" / "happy_000.png"
    assert_one_line_error(
        cli("edge", "classify", tmp_path / "model.onnx", image),
        1,
        r"model\.onnx: this is a TFLite model named \.onnx; rename it to \.tflite",
    )
    assert_one_line_error(
        cli("edge", "classify", tmp_path / "model.tflite", image),
        1,
        r"model\.tflite: this looks like an ONNX model named \.tflite; rename it to \.onnx",
    )


def test_progress_draws_only_on_a_terminal():
    import io

    from happysad.edge.console import progress

    class Tty(io.StringIO):
        def isatty(self):
            return True

    tty, log = Tty(), io.StringIO()
    for stream in (tty, log):
        p = progress(3, "images", stream)
        for _ in range(3):
            p.update()
        p.close()
    drawn = tty.getvalue()
    assert drawn.startswith("\rimages:") and "/3" in drawn
    assert drawn.endswith("\r") and drawn.rsplit("\r", 2)[1].strip() == ""  # erased when closed
    assert log.getvalue() == ""  # a log file or a pipe gets nothing


def test_help_shows_real_defaults_only():
    out = cli("edge", "camera", "--help").stdout
    assert "(default: None)" not in out and "(default: False)" not in out
    assert "(default: 0)" in out  # --max-frames: a zero default is still shown
