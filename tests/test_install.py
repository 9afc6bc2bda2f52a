"""happysad-edge install / rollback: DIR/current is always a whole, verifiable model."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

import pytest

from happysad.edge import Classifier

from helpers import REPO, assert_one_line_error, run_module, sha, wait_until


def edge(*args):
    return run_module("edge", *args)


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


#: Runs ``happysad-edge install SRC --to DIR [MORE...]`` and numbers the
#: file-system steps that make an install durable and clean (os.fsync,
#: os.symlink, os.replace, os.unlink); with a step number, it writes MARKER
#: and waits to be killed just before that step. The install itself is the
#: real one: nothing is replaced.
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

for name in ("fsync", "symlink", "replace", "unlink"):
    setattr(os, name, paused(name, getattr(os, name)))
try:
    code = main(["install", src, "--to", to, *sys.argv[5:]])
except SystemExit as stop:
    code = stop.code
with open(marker, "w") as f:
    f.write(" ".join(steps))
sys.exit(code)
"""


def paused_install(src, to, marker, pause_at, *more):
    return subprocess.Popen(
        [sys.executable, "-c", PAUSED_INSTALL, str(src), str(to), str(marker), str(pause_at), *more],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_sigkill_at_every_step_leaves_current_whole(three_models, tmp_path):
    """An install killed just before each of its file-system steps in turn
    (where a power loss could land), the old versions' removal included
    (--keep 0): `current` always names one of the files, whole, and it
    loads; it names the new one exactly once the link was renamed into
    place; the files `current` and `previous` name are never removed."""
    a, b, c = three_models
    to = tmp_path / "device"
    assert edge("install", a, "--to", to).returncode == 0
    assert edge("install", b, "--to", to).returncode == 0
    whole = {sha(m): m for m in three_models}
    marker = tmp_path / "marker"
    # A whole install, counted: its steps in order.
    proc = paused_install(c, to, marker, 0, "--keep", "0")
    assert proc.wait(timeout=300) == 0, proc.stderr.read()
    steps = marker.read_text().split()
    assert sha(to / "current") == sha(c) and sha(to / "previous") == sha(b)
    assert sorted(p.name for p in (to / "models").iterdir()) == sorted(linked_names(to))  # a removed
    # The steps: the copy's fsync and rename, the folder's fsync, then for
    # each link (previous, then current) a new link, its rename, an fsync;
    # then the removal of the old version (its signature, the file) and a
    # last fsync of the folder.
    switch = len(steps) - steps[::-1].index("replace")  # step number of the new `current` link's rename
    assert steps[switch:] == ["fsync", "unlink", "unlink", "fsync"] and steps.count("replace") >= 3, steps
    outcomes = []
    for k in range(1, len(steps) + 1):
        marker.unlink(missing_ok=True)
        # Killed between its two links, an install leaves both naming the old file: then two are free.
        src = next(m for m in three_models if m not in {whole[sha(to / name)] for name in ("current", "previous")})
        proc = paused_install(src, to, marker, k, "--keep", "0")
        try:
            wait_until(lambda p=proc: marker.exists() or p.poll() is not None, 300, f"the install to reach step {k}")
            assert marker.exists(), proc.stderr.read()
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
        assert sha(to / "current") in whole and sha(to / "previous") in whole  # whole, and never removed
        outcomes.append(sha(to / "current") == sha(src))
        Classifier(to / "current")
    # Killed before the new link's rename: the old model; after it: the new one.
    assert outcomes == [k > switch for k in range(1, len(steps) + 1)], (steps, outcomes)
    leftovers = [p.name for p in (to / "models").iterdir() if ".tmp-" in p.name]
    # A killed copy may leave its temporary file; it is never what a link names.
    assert not any(name in leftovers for name in linked_names(to))


def linked_names(to) -> list[str]:
    """The file names in DIR/models/ that current and previous point at."""
    return [os.path.basename(os.readlink(to / link)) for link in ("current", "previous") if (to / link).is_symlink()]


@pytest.fixture(scope="module")
def three_models(export_dir, tmp_path_factory):
    """Three different model files with their manifest: the int8 TFLite, the int8 ONNX and the float32 ONNX file."""
    root = tmp_path_factory.mktemp("three")
    for name in ("model_int8.tflite", "model_int8.onnx", "model_float32.onnx", "manifest.json"):
        shutil.copy(export_dir / name, root / name)
    return root / "model_int8.tflite", root / "model_int8.onnx", root / "model_float32.onnx"


def test_a_refused_file_is_removed_with_its_signature(two_models, tmp_path):
    """A wrong signature, a file that does not load: one line, exit 1, and
    DIR/models/ holds what it held before (no copy, no .sig left behind)."""
    from happysad.edge.runtime.signing import keygen, load_private_key, sign_file

    a, b = two_models
    to = tmp_path / "device"
    assert edge("install", a, "--to", to).returncode == 0
    before = sorted(p.name for p in (to / "models").iterdir())
    ours = keygen(tmp_path / "ours")[1]
    theirs = keygen(tmp_path / "theirs")[0]
    loose = tmp_path / "loose"  # no manifest beside it: the copy itself is checked
    loose.mkdir()
    shutil.copy(b, loose / b.name)
    sign_file(loose / b.name, load_private_key(theirs))
    assert_one_line_error(edge("install", loose / b.name, "--to", to, "--public-key", ours), 1, r"signature")
    (loose / "junk.tflite").write_bytes(os.urandom(4096))
    assert_one_line_error(edge("install", loose / "junk.tflite", "--to", to), 1, r"junk.tflite")
    assert sorted(p.name for p in (to / "models").iterdir()) == before
    assert sha(to / "current") == sha(a)


def test_reinstalling_current_with_a_bad_signature_keeps_its_good_one(two_models, tmp_path):
    """The bytes installed already, offered again with a wrong .sig: refused,
    and the installed file's own signature is not touched."""
    from happysad.edge.runtime.signing import keygen, load_private_key, sign_file

    a, _ = two_models
    ours_private, ours_public = keygen(tmp_path / "ours")
    theirs = keygen(tmp_path / "theirs")[0]
    signed = tmp_path / "signed"  # no manifest beside it: the copy itself is checked
    signed.mkdir()
    shutil.copy(a, signed / a.name)
    sign_file(signed / a.name, load_private_key(ours_private))
    to = tmp_path / "device"
    res = edge("install", signed / a.name, "--to", to, "--public-key", ours_public)
    assert res.returncode == 0, res.stderr
    (installed_sig,) = (to / "models").glob("*.sig")
    good = installed_sig.read_bytes()
    sign_file(signed / a.name, load_private_key(theirs))  # the same bytes, someone else's signature
    res = edge("install", signed / a.name, "--to", to, "--public-key", ours_public)
    assert_one_line_error(res, 1, r"signature")
    assert installed_sig.read_bytes() == good
    assert sha(to / "current") == sha(a)


def test_keep_bounds_the_versions_besides_current_and_previous(three_models, export_dir, tmp_path):
    a, b, c = three_models
    d = tmp_path / "model_float32.tflite"
    shutil.copy(export_dir / d.name, d)  # a fourth file (no manifest beside it)
    to = tmp_path / "device"
    for model in (a, b, c):
        assert edge("install", model, "--to", to, "--keep", "1").returncode == 0
    assert len(list((to / "models").iterdir())) == 3  # c current, b previous, a the one kept
    res = edge("install", d, "--to", to, "--keep", "1")
    assert res.returncode == 0 and "removed 1 older versions (--keep 1)" in res.stdout, res.stderr
    names = sorted(p.name for p in (to / "models").iterdir())
    assert len(names) == 3 and not any(n.endswith(a.name) for n in names)  # a, the oldest, went
    assert sha(to / "current") == sha(d) and sha(to / "previous") == sha(c)
    res = edge("install", a, "--to", to, "--keep", "0")
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in (to / "models").iterdir()) == sorted(linked_names(to))
    assert edge("rollback", "--to", to).returncode == 0 and sha(to / "current") == sha(d)
    assert "--keep N" in edge("install", "--help").stdout
