"""happysad-edge verify: a copied file is checked against its manifest, then loaded."""

import dataclasses
import json
import re
import shutil
import subprocess
import sys

import pytest

from happysad.edge import read_metadata
from happysad.edge.cli.parser import main

from helpers import REPO

FIVE = ("model_float32.tflite", "model_float16.tflite", "model_int8.tflite", "model_float32.onnx", "model_int8.onnx")


def verify(*args):
    return main(["verify", *map(str, args)])


def one_error_line(capsys):
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize("name", FIVE)
def test_good_file_is_ok_with_its_figures(export_dir, name, capsys):
    assert verify(export_dir / name) == 0
    out = capsys.readouterr().out.strip()
    v = read_metadata(export_dir / name).verification
    assert out.startswith(f"OK {export_dir / name}: ")
    assert f"accuracy {v['accuracy']:.4f} vs float {v['float_accuracy']:.4f}" in out
    assert f"on {v['n']} val images" in out


def _copy(export_dir, tmp_path, name):
    shutil.copy(export_dir / name, tmp_path / name)
    shutil.copy(export_dir / "manifest.json", tmp_path / "manifest.json")
    return tmp_path / name


@pytest.mark.parametrize("name", ["model_int8.tflite", "model_int8.onnx"])
def test_flipped_byte_is_refused(export_dir, tmp_path, name, capsys):
    path = _copy(export_dir, tmp_path, name)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit, in the middle of the weights
    path.write_bytes(bytes(data))
    assert verify(path) == 1
    assert re.fullmatch(
        rf"happysad-edge: error: .*{re.escape(name)}: sha256 \w+… does not match "
        r"manifest\.json \(\w+…\): the file was changed or corrupted; copy it again",
        one_error_line(capsys),
    )


def test_truncated_file_is_refused(export_dir, tmp_path, capsys):
    path = _copy(export_dir, tmp_path, "model_int8.tflite")
    full = path.stat().st_size
    path.write_bytes(path.read_bytes()[:1000])
    assert verify(path) == 1
    assert re.search(rf"1000 bytes, but manifest\.json says {full} \(truncated", one_error_line(capsys))


def test_manifest_elsewhere_missing_or_not_listing_the_file(export_dir, tmp_path, capsys):
    shutil.copy(export_dir / "model_int8.onnx", tmp_path / "model_int8.onnx")
    assert verify(tmp_path / "model_int8.onnx") == 2  # a path that does not exist: a usage error
    assert re.search(r"manifest\.json: no such manifest file; .*--manifest FILE", one_error_line(capsys))
    assert verify(tmp_path / "model_int8.onnx", "--manifest", export_dir / "manifest.json") == 0
    capsys.readouterr()
    shutil.copy(export_dir / "model_int8.onnx", tmp_path / "renamed.onnx")
    assert verify(tmp_path / "renamed.onnx", "-m", export_dir / "manifest.json") == 1
    assert re.search(r"does not list renamed\.onnx \(it lists model_float32\.tflite, ", one_error_line(capsys))


def test_metadata_that_misstates_the_input_is_refused(export_dir, tmp_path, capsys):
    """A file whose manifest matches but whose metadata disagrees with its own tensors."""
    import hashlib

    from happysad.export.ship import embed

    meta = read_metadata(export_dir / "model_int8.tflite")
    wrong = dataclasses.replace(meta, input_dtype="uint8", input_zero_point=0)
    data = embed((export_dir / "model_int8.tflite").read_bytes(), wrong)
    (tmp_path / "model_int8.tflite").write_bytes(data)
    manifest = {
        "files": {
            "model_int8.tflite": {
                "format": "tflite-int8",
                "size_bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        }
    }
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert verify(tmp_path / "model_int8.tflite") == 1
    assert re.search(
        r"input tensor is int8 \(1\.0, -128\), its metadata says uint8 \(1\.0, 0\)", one_error_line(capsys)
    )


def test_verify_runs_without_tensorflow(export_dir, tmp_path):
    """The device's check, in a fresh interpreter: exit codes, one line, no TensorFlow."""
    path = _copy(export_dir, tmp_path, "model_int8.tflite")
    code = (
        "import sys, json\n"
        "from happysad.edge.cli.parser import main\n"
        f"rc = main(['verify', {str(path)!r}, '--json'])\n"
        "heavy = ('tensorflow', 'keras', 'tf2onnx', 'onnx', 'happysad.train', 'happysad.export')\n"
        "bad = [m for m in heavy if m in sys.modules]\n"
        "print(json.dumps({'rc': rc, 'bad': bad}))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    lines = res.stdout.strip().splitlines()
    assert json.loads(lines[-1]) == {"rc": 0, "bad": []}
    report = json.loads(lines[0])
    assert report["ok"] and report["input"] == {"dtype": "int8", "scale": 1.0, "zero_point": -128}
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF  # in the metadata zip at the end
    path.write_bytes(bytes(data))
    res = subprocess.run(
        [sys.executable, "-m", "happysad.edge", "verify", str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "does not match manifest.json" in res.stderr
