"""Faults: a process killed part-way never leaves a partial file under a final name."""

import json
import shutil
import signal
import subprocess
import sys

import pytest

from happysad.edge import Classifier, read_metadata

from helpers import REPO, wait_until

FINAL = (
    "model_float32.tflite",
    "model_float16.tflite",
    "model_int8.tflite",
    "model_float32.onnx",
    "model_int8.onnx",
    "manifest.json",
)


def assert_every_final_file_whole(folder):
    for name in FINAL:
        path = folder / name
        if not path.exists():
            continue
        if name == "manifest.json":
            json.loads(path.read_text())
        else:
            read_metadata(path)
            Classifier(path)


def export_until_first_file_then(sig, run_dir, out):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "happysad.export",
            str(run_dir),
            "--out",
            str(out),
            "--calib-samples",
            "40",
            "--max-drop",
            "100",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    # The signal goes once the first file is in place (polled for, never a
    # guessed sleep), while the other four are still being made.
    try:
        wait_until(
            lambda: (out / "model_float32.tflite").exists() or proc.poll() is not None,
            600,
            "the export's first file",
            interval=0.02,
        )
        assert proc.poll() is None, "the export ended before it was signalled: " + proc.stderr.read()[-3000:]
        proc.send_signal(sig)
        out_text, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=60)
    return proc.returncode, err


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_export_leaves_only_whole_files(run_dir, export_dir, tmp_path, sig):
    out = tmp_path / "export"
    shutil.copytree(export_dir, out)  # an earlier, complete export
    before = {p.name for p in out.iterdir() if p.name in FINAL}
    (out / "model_float32.tflite").unlink()  # its reappearance marks the re-export's progress
    code, err = export_until_first_file_then(sig, run_dir, out)
    assert code == (-9 if sig == signal.SIGKILL else 130), err[-3000:]
    # Every final name still holds a whole file: the earlier one or a new one.
    assert before <= {p.name for p in out.iterdir()}
    assert_every_final_file_whole(out)
    # The manifest lists only files that match it, so verify never fails a good file.
    import hashlib

    listed = json.loads((out / "manifest.json").read_text())["files"]
    assert listed
    for name, rec in listed.items():
        data = (out / name).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (rec["size_bytes"], rec["sha256"]), name
    if sig == signal.SIGTERM:
        assert "interrupted" in err and "Traceback" not in err, err[-3000:]
        assert not [p.name for p in out.iterdir() if p.name.startswith(".")], "temporary files left"
