"""Hostile inputs, second round (issue 32): special files in every path a
tool reads, JSON that is deep rather than big, and split files that lie.
Each ends within 10 s in one line and the documented exit code (1; 2 for a
missing file), under 300 MB resident, and a camera run whose watched model
becomes a FIFO keeps going and stops on SIGTERM within 2 s."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from happysad.edge.errors import HappysadError, UsageError
from happysad.edge.fileio import write_json
from happysad.edge.jsonfile import MAX_JSON_DEPTH, read_json, too_deep
from happysad.edge.reading import check_regular, read_regular

from helpers import REPO, Lines, camera_cmd, examples, write_video

#: Runs a command and prints its peak resident memory (kB) as the last stderr line.
PEAK_RSS = (
    "import resource, subprocess, sys\n"
    "code = subprocess.run(sys.argv[1:]).returncode\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(code)\n"
)
SPECIAL = ("fifo", "devnull", "folder", "socket")
#: Where each special file names itself in the message.
SPECIAL_TYPES = {"fifo": "a FIFO", "devnull": "a character device", "folder": "a folder", "socket": "a socket"}
DEEP = "[" * 100_000 + "]" * 100_000


def one_line(argv, timeout=30):
    """Run ``python -m ARGV``; (exit code, the one-line error, seconds, peak RSS in MB)."""
    start = time.monotonic()
    res = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, sys.executable, "-m", *map(str, argv)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    seconds = time.monotonic() - start
    lines = [x for x in res.stderr.splitlines() if x.strip() and not x.startswith("INFO: Created TensorFlow Lite")]
    peak_mb = int(lines.pop()) / 1024
    assert "Traceback" not in res.stderr, res.stderr
    assert len(lines) == 1, res.stderr
    return res.returncode, lines[0], seconds, peak_mb


@pytest.fixture(scope="module")
def special(tmp_path_factory):
    """{kind: path} of a FIFO, /dev/null, a folder and a listening socket (kept open)."""
    root = tmp_path_factory.mktemp("special")
    os.mkfifo(root / "fifo.tflite")
    (root / "folder.tflite").mkdir()
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "socket.tflite"))
    sock.listen(1)
    paths = {
        "fifo": root / "fifo.tflite",
        "devnull": "/dev/null",
        "folder": root / "folder.tflite",
        "socket": root / "socket.tflite",
    }
    yield paths
    sock.close()


#: Every path argument read by the tools: (argv with {x} for the special file, which tool).
READER_ARGS = {
    "classify model": ["happysad.edge", "classify", "{x}", "{image}"],
    "info model": ["happysad.edge", "info", "{x}"],
    "verify model": ["happysad.edge", "verify", "{x}"],
    "verify --manifest": ["happysad.edge", "verify", "{model}", "--manifest", "{x}"],
    "install model": ["happysad.edge", "install", "{x}", "--to", "{tmp}/inst"],
    "install --manifest": ["happysad.edge", "install", "{model}", "--to", "{tmp}/inst", "--manifest", "{x}"],
    "classify --public-key": ["happysad.edge", "classify", "{model}", "{image}", "--public-key", "{x}"],
    "bench --split": ["happysad.benchmarks", "{model}", "--split", "{x}"],
    "bench --compare": ["happysad.benchmarks", "{model}", "--split", "{split}", "--compare", "{x}"],
}


def _check_special(name, kind, special, export_dir, run_dir, tmp):
    fill = {
        "x": special[kind],
        "model": export_dir / "model_int8.tflite",
        "tmp": tmp,
        "split": run_dir / "split.json",
        "image": export_dir / "manifest.json",  # never read: the model or key is refused first
    }
    code, line, seconds, peak_mb = one_line([a.format(**fill) for a in READER_ARGS[name]])
    assert code == 1 and f"not a regular file ({SPECIAL_TYPES[kind]})" in line, line
    assert seconds < 10 and peak_mb < 300, (seconds, peak_mb)


@pytest.mark.parametrize("name", sorted(READER_ARGS))
def test_a_fifo_in_every_reader_path_is_one_line(name, special, export_dir, run_dir, tmp_path):
    """The FIFO, the case that hung: refused in one line, exit 1, in under 10 s."""
    _check_special(name, "fifo", special, export_dir, run_dir, tmp_path)


@settings(max_examples=examples(4), deadline=None, suppress_health_check=list(HealthCheck))
@given(name=st.sampled_from(sorted(READER_ARGS)), kind=st.sampled_from(SPECIAL))
def test_arbitrary_special_files_in_reader_paths_are_one_line(name, kind, special, export_dir, run_dir, tmp_path):
    """Any special file (FIFO, /dev/null, a folder, a socket) in any reader path argument."""
    _check_special(name, kind, special, export_dir, run_dir, tmp_path)


@pytest.mark.parametrize("kind", SPECIAL)
def test_the_gate_refuses_special_files_without_blocking(kind, special):
    for reader in (check_regular, read_regular):
        with pytest.raises(HappysadError, match=r"not a regular file \(.+\); give the model file itself") as err:
            reader(special[kind], "model")
        assert type(err.value) is HappysadError  # exit 1, not the usage error of a missing file


def test_the_gate_missing_and_oversized(tmp_path):
    with pytest.raises(UsageError, match="no such manifest; check the path"):
        read_regular(tmp_path / "nope.json", "manifest")
    with open(tmp_path / "big.json", "wb") as fh:  # sparse: 2 MiB long, no disk used
        fh.truncate(2 * 1024 * 1024)
    with pytest.raises(HappysadError, match=r"2 MB is over the 1 MiB limit for a manifest"):
        read_regular(tmp_path / "big.json", "manifest")


# -- JSON that is deep rather than big ---------------------------------------


def test_deep_manifest_is_one_line_in_verify(export_dir, tmp_path):
    model = tmp_path / "model_int8.tflite"
    shutil.copy(export_dir / "model_int8.tflite", model)
    (tmp_path / "manifest.json").write_text(DEEP)
    code, line, seconds, peak_mb = one_line(["happysad.edge", "verify", model])
    assert code == 1 and "manifest.json: manifest is nested too deeply" in line, line
    assert seconds < 10 and peak_mb < 300


def test_deep_compare_file_is_one_line_in_the_benchmark(export_dir, run_dir, tmp_path):
    (tmp_path / "old.json").write_text('{"results": ' + DEEP + "}")
    model = export_dir / "model_int8.tflite"
    code, line, seconds, _ = one_line(
        ["happysad.benchmarks", model, "--split", run_dir / "split.json", "--compare", tmp_path / "old.json"]
    )
    assert code == 1 and "benchmark report is nested too deeply (over 64 levels)" in line, line
    assert seconds < 10


def test_depth_is_measured_without_recursion():
    assert not too_deep(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH)
    assert too_deep(b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1))
    assert not too_deep(b'["' + b"[" * 10_000 + b'"]')  # brackets inside a string do not count
    assert too_deep(b'{"a": ' * 100_000 + b"1" + b"}" * 100_000)


#: Any JSON value, nested any way (objects, arrays, scalars of every type).
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=30,
)


def _nested(depth: int, obj: bool) -> str:
    return ('{"a": ' * depth + "1" + "}" * depth) if obj else ("[" * depth + "]" * depth)


@st.composite
def json_texts(draw, fields=()):
    """JSON text: an arbitrary value, an object whose ``fields`` hold arbitrary
    values, or brackets nested 1..200,000 deep (balanced or not)."""
    how = draw(st.sampled_from(("value", "fields", "deep", "open")))
    if how == "value":
        return json.dumps(draw(JSON_VALUES))
    if how == "fields":
        return json.dumps({f: draw(JSON_VALUES) for f in fields if draw(st.booleans())})
    depth = draw(st.integers(1, 200_000))
    return _nested(depth, draw(st.booleans())) if how == "deep" else "[" * depth


def _result_or_one_line(fn, *args):
    try:
        fn(*args)
    except HappysadError as exc:
        assert "\n" not in str(exc)


@settings(max_examples=examples(60), deadline=None, suppress_health_check=list(HealthCheck))
@given(text=json_texts(fields=("files", "results", "machine", "labels", "train", "val", "test", "folder_labels")))
def test_arbitrary_json_into_manifest_split_and_compare_readers(tmp_path_factory, text):
    """verify's manifest, the split reader and --compare's reader: a result or one line, never another error."""
    from happysad.benchmarks.report import read_report
    from happysad.edge.dataset import SPLIT_PARTS, read_split, split_items
    from happysad.edge.device.verify import manifest_record

    folder = tmp_path_factory.mktemp("json")
    (folder / "f.json").write_text(text)
    (folder / "model.tflite").write_bytes(b"\0" * 16)
    _result_or_one_line(manifest_record, folder / "model.tflite", folder / "f.json")
    _result_or_one_line(read_report, folder / "f.json")
    _result_or_one_line(read_json, folder / "f.json", "split")

    def split():
        s = read_split(folder / "f.json", folder)
        for part in SPLIT_PARTS:
            split_items(s, part)

    _result_or_one_line(split)


@settings(max_examples=examples(60), deadline=None, suppress_health_check=list(HealthCheck))
@given(
    entry=st.one_of(
        JSON_VALUES,
        st.fixed_dictionaries(
            {"path": JSON_VALUES | st.sampled_from(["happy/a.png", "../out.png", "/etc/passwd", "", "a\0b"])},
            optional={"label": JSON_VALUES | st.sampled_from(["happy", "sad", "angry"]), "sha256": JSON_VALUES},
        ),
    )
)
def test_arbitrary_split_entries_are_a_result_or_one_line(tmp_path_factory, entry):
    """A split entry of every JSON type (and objects with fields of every type)."""
    from happysad.edge.dataset import read_split, split_digests, split_items, split_votes

    folder = tmp_path_factory.mktemp("entry")
    (folder / "happy").mkdir()
    write_json(
        folder / "split.json", {"labels": ["happy", "sad"], "train": [], "val": [], "test": [entry], "votes": {}}
    )

    def items():
        s = read_split(folder / "split.json", folder)
        split_items(s, "test")
        split_digests(s, "test")
        split_votes(s, "test")

    _result_or_one_line(items)


# -- split files that lie ------------------------------------------------------


@pytest.fixture
def small_split(run_dir, tmp_path):
    """Six test images of the run copied to tmp_path/data, and a function
    writing split files of them (``test`` given, or the six entries)."""
    base = json.loads((run_dir / "split.json").read_text())
    source = (run_dir / base["data_dir"]).resolve()
    entries = []
    for e in [e for e in base["test"] if e["label"] == "happy"][:3] + [e for e in base["test"] if e["label"] == "sad"][
        :3
    ]:
        (tmp_path / "data" / e["label"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(source / e["path"], tmp_path / "data" / e["path"])
        entries.append({"path": e["path"], "label": e["label"], "sha256": e["sha256"]})

    def write(test=None, **more):
        split = {"data_dir": "data", "labels": base["labels"], "train": [], "val": [], "test": test or entries}
        write_json(tmp_path / "split.json", {**split, **more})
        return tmp_path / "split.json"

    write.entries = entries
    return write


QUICK = ("--runs", "2", "--warmup", "0", "--cold-runs", "0")


def _bench_line(export_dir, split, *more):
    return one_line(["happysad.benchmarks", export_dir / "model_int8.tflite", "--split", split, *QUICK, *more], 60)


def test_split_entry_that_is_a_string_is_one_line(export_dir, small_split):
    code, line, _, _ = _bench_line(export_dir, small_split(small_split.entries + ["happy/x.png"]))
    assert code == 1 and "split.json: test[6] is a string, expected an object with a path and a label" in line


def test_split_path_out_of_the_data_folder_is_refused(export_dir, small_split, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(tmp_path / "data" / small_split.entries[0]["path"], outside / "face.png")
    (tmp_path / "data" / "happy" / "link.png").symlink_to(outside / "face.png")
    for path in ("../outside/face.png", "happy/link.png", str(outside / "face.png")):
        split = small_split(small_split.entries + [{"path": path, "label": "happy"}])
        code, line, _, _ = _bench_line(export_dir, split)
        assert code == 1 and f"test[6]: path {path} leads outside the data folder" in line, line


def test_split_label_the_model_lacks_is_one_line(export_dir, small_split):
    entry = {**small_split.entries[0], "label": "angry"}
    code, line, _, _ = _bench_line(export_dir, small_split(small_split.entries + [entry]))
    assert code == 1 and "has label 'angry', not one of the model's labels (happy, sad)" in line, line


def test_a_folder_label_of_the_split_still_maps_to_minus_one(small_split, tmp_path):
    from happysad.edge.dataset import read_split, split_items

    entry = {**small_split.entries[0], "label": "neutral"}
    split = read_split(small_split(small_split.entries + [entry], folder_labels=["happy", "sad", "neutral"]))
    assert [y for _, y in split_items(split, "test")] == [0, 0, 0, 1, 1, 1, -1]


def test_a_changed_image_is_refused_unless_allowed(export_dir, small_split, tmp_path):
    split = small_split()
    changed = tmp_path / "data" / small_split.entries[0]["path"]
    shutil.copy(tmp_path / "data" / small_split.entries[3]["path"], changed)  # a sad face under a happy name
    code, line, _, _ = _bench_line(export_dir, split)
    assert code == 1 and f"{small_split.entries[0]['path']}: changed since" in line and "--allow-changed" in line
    res = subprocess.run(
        [sys.executable, "-m", "happysad.benchmarks", export_dir / "model_int8.tflite", "--split", split, *QUICK]
        + ["--allow-changed", "--json", tmp_path / "b.json", "--markdown", tmp_path / "b.md"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    s = json.loads((tmp_path / "b.json").read_text())["settings"]
    assert s["allow_changed"] is True and s["changed_images"] == [f"data/{small_split.entries[0]['path']}"]
    assert "--allow-changed: 1 images changed since the split, scored" in (tmp_path / "b.md").read_text()
    assert hashlib.sha256(changed.read_bytes()).hexdigest() != small_split.entries[0]["sha256"]


# -- the hot swap ---------------------------------------------------------------


def test_watched_model_becoming_a_fifo_keeps_the_loop_running(export_dir, run_dir, tmp_path):
    """The model renamed over by a FIFO mid-run: refused in one line, the
    frames keep coming at the same rate, SIGTERM still ends it within 2 s."""
    import cv2
    import numpy as np

    frames = [np.full((120, 160, 3), 40 + (i % 30) * 5, np.uint8) for i in range(600)]
    write_video(tmp_path / "v.avi", [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in frames])
    model = tmp_path / "live.tflite"
    shutil.copy(export_dir / "model_int8.tflite", model)
    run = Lines(camera_cmd(model, tmp_path / "v.avi", "--pace", "--no-face"))
    try:
        run.wait_for(lambda r: len(r.out) >= 15, what="fifteen frames")
        before = len(run.out) / (run.times[-1] - run.times[0])
        os.mkfifo(tmp_path / "incoming.tflite")
        os.replace(tmp_path / "incoming.tflite", model)
        run.wait_for(lambda r: r.err_has("not a regular file (a FIFO)"), timeout=30, what="the FIFO refused")
        n, t0 = len(run.out), time.monotonic()
        time.sleep(2)
        after = (len(run.out) - n) / (time.monotonic() - t0)
        assert after > 0.7 * before, (before, after)
        run.proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        code = run.finish(timeout=30)
        assert time.monotonic() - t0 < 2, time.monotonic() - t0
    finally:
        run.kill()
    assert code == 130, run.stderr
    assert run.err_has("refused the new model file") and "Traceback" not in run.stderr
