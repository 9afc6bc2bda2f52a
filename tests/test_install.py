"""happysad-edge install / rollback: DIR/current is always a whole, verifiable model."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys

import pytest

from happysad.edge import Classifier

from helpers import REPO, assert_one_line_error, run_module, wait_until


def edge(*args):
    return run_module("edge", *args)


def sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture(scope="module")
def two_models(export_dir, tmp_path_factory):
    """Two different model files with their manifests: the int8 TFLite and the int8 ONNX file."""
    root = tmp_path_factory.mktemp("two")
    for name in ("model_int8.tflite", "model_int8.onnx", "manifest.json"):
        shutil.copy(export_dir / name, root / name)
    return root / "model_int8.tflite", root / "model_int8.onnx"


def test_install_keeps_the_previous_and_rollback_swaps(two_models, tmp_path):
    a, b = two_models
    to = tmp_path / "device"
    res = edge("install", a, "--to", to)
    assert res.returncode == 0, res.stderr
    assert sha(to / "current") == sha(a) and not (to / "previous").exists()
    res = edge("install", b, "--to", to)
    assert res.returncode == 0, res.stderr
    assert sha(to / "current") == sha(b) and sha(to / "previous") == sha(a)
    assert Classifier(to / "current").metadata.extra["format"] == "onnx-int8"
    res = edge("rollback", "--to", to)
    assert res.returncode == 0, res.stderr
    assert sha(to / "current") == sha(a) and sha(to / "previous") == sha(b)


def test_a_file_that_fails_verification_changes_nothing(two_models, tmp_path):
    a, _ = two_models
    to = tmp_path / "device"
    assert edge("install", a, "--to", to).returncode == 0
    bad = tmp_path / "model_int8.tflite"
    data = bytearray(a.read_bytes())
    data[len(data) // 2] ^= 0x01
    bad.write_bytes(bytes(data))
    shutil.copy(a.parent / "manifest.json", tmp_path / "manifest.json")
    assert_one_line_error(edge("install", bad, "--to", to), 1, r"sha256")
    assert sha(to / "current") == sha(a)
    assert_one_line_error(edge("rollback", "--to", to), 1, r"no previous model to go back to")


#: Runs ``happysad-edge install SRC --to DIR`` and numbers the file-system
#: steps that make an install durable (os.fsync, os.symlink, os.replace);
#: with a step number, it writes MARKER and waits to be killed just before
#: that step. The install itself is the real one: nothing is replaced.
PAUSED_INSTALL = """
import os, sys, time
from happysad.edge.cli import main

src, to, marker, pause_at = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
steps = []

def paused(name, real):
    def step(*args, **kwargs):
        steps.append(name)
        if len(steps) == pause_at:
            with open(marker, "w") as f:
                f.write(name)
            while True:
                time.sleep(60)  # killed here
        return real(*args, **kwargs)
    return step

for name in ("fsync", "symlink", "replace"):
    setattr(os, name, paused(name, getattr(os, name)))
try:
    code = main(["install", src, "--to", to])
except SystemExit as stop:
    code = stop.code
with open(marker, "w") as f:
    f.write(" ".join(steps))
sys.exit(code)
"""


def paused_install(src, to, marker, pause_at):
    return subprocess.Popen(
        [sys.executable, "-c", PAUSED_INSTALL, str(src), str(to), str(marker), str(pause_at)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_sigkill_at_every_step_leaves_current_whole(two_models, tmp_path):
    """An install killed just before each of its file-system steps in turn
    (where a power loss could land): `current` always names one of the two
    files, whole, and it loads; it names the new one exactly once the link
    was renamed into place."""
    a, b = two_models
    to = tmp_path / "device"
    assert edge("install", a, "--to", to).returncode == 0
    whole = {sha(a): a, sha(b): b}
    marker = tmp_path / "marker"
    # A whole install, counted: its steps in order.
    proc = paused_install(b, to, marker, 0)
    assert proc.wait(timeout=300) == 0, proc.stderr.read()
    steps = marker.read_text().split()
    assert sha(to / "current") == sha(b)
    # The steps: the copy's fsync and rename, the folder's fsync, then for
    # each link (previous, then current) a new link, its rename, an fsync.
    switch = len(steps) - 1  # step number of the new `current` link's rename (then its folder's fsync)
    assert steps[switch - 1 :] == ["replace", "fsync"] and steps.count("replace") >= 3, steps
    outcomes = []
    for k in range(1, len(steps) + 1):
        marker.unlink(missing_ok=True)
        old = whole[sha(to / "current")]
        src = b if old == a else a
        proc = paused_install(src, to, marker, k)
        try:
            wait_until(lambda p=proc: marker.exists() or p.poll() is not None, 300, f"the install to reach step {k}")
            assert marker.exists(), proc.stderr.read()
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
        assert sha(to / "current") in whole  # whole, one of the two
        outcomes.append(sha(to / "current") == sha(src))
        Classifier(to / "current")
    # Killed before the new link's rename: the old model; after it: the new one.
    assert outcomes == [k > switch for k in range(1, len(steps) + 1)], (steps, outcomes)
    leftovers = [p.name for p in (to / "models").iterdir() if ".tmp-" in p.name]
    # A killed copy may leave its temporary file; it is never what a link names.
    links = [os.readlink(to / link) for link in ("current", "previous") if (to / link).is_symlink()]
    assert not any(target == f"models/{name}" for target in links for name in leftovers)
