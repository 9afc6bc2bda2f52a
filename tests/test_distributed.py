"""happysad-train --strategy multi-worker: two worker processes on 127.0.0.1
train one model, only the chief writes the run folder, a bad TF_CONFIG is
one line, and a worker killed after an epoch resumes from the checkpoint.

TensorFlow's gRPC server binds every interface (0.0.0.0:port, hard-coded),
so where the machine allows it the workers run in a network namespace of
their own that holds nothing but the loopback interface: nothing they open
is reachable from outside the machine.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys

import pytest

from helpers import REPO, free_port, train_args, wait_until

#: Each worker's own limit, s: a loaded 2-core machine starts TensorFlow slowly.
WORKER_TIMEOUT = 150
#: What the chief writes, as a single-worker run does.
RUN_FILES = {
    "model.keras",
    "metrics.json",
    "split.json",
    "data_report.json",
    "config.json",
    "history.csv",
    "curves.png",
    "confusion_matrix.png",
    "samples.png",
    "logs",
}


@pytest.fixture(scope="module")
def netns():
    """A command prefix that runs a process in a loopback-only network
    namespace shared by the workers; [] where user namespaces are unavailable."""
    if not (shutil.which("unshare") and shutil.which("nsenter") and shutil.which("ip")):
        yield []
        return
    holder = subprocess.Popen(["unshare", "-rn", "sh", "-c", "ip link set lo up && exec sleep 900"])
    prefix = ["nsenter", "--preserve-credentials", "-U", "-n", "-t", str(holder.pid)]
    try:
        # Entered too early, before unshare made the namespaces, nsenter fails: retry a while.
        def entered():
            return subprocess.run([*prefix, "ip", "-o", "link"], capture_output=True, text=True, timeout=30).stdout

        try:
            links = wait_until(lambda: "lo:" in (out := entered()) and out, timeout=10, what="the namespace")
        except AssertionError:
            links = ""
        yield prefix if links.count("\n") == 1 and "UP" in links else []
    finally:
        holder.kill()
        holder.wait(timeout=30)


class Workers:
    """Two ``happysad-train --strategy multi-worker`` processes on two free loopback ports."""

    def __init__(self, prefix, tmp_path):
        self.prefix, self.tmp = prefix, tmp_path
        self.ports = [free_port(), free_port()]
        while self.ports[1] == self.ports[0]:
            self.ports[1] = free_port()

    def start(self, index: int, args: list, tag: str, **env):
        config = {
            "cluster": {"worker": [f"127.0.0.1:{p}" for p in self.ports]},
            "task": {"type": "worker", "index": index},
        }
        log = self.tmp / f"worker{index}-{tag}.log"
        tmpdir = self.tmp / f"tmp{index}"
        tmpdir.mkdir(exist_ok=True)
        # PYTHONFAULTHANDLER: a worker stopped with SIGABRT on a timeout logs where it hung.
        full_env = {**os.environ, "TF_CONFIG": json.dumps(config), "TMPDIR": str(tmpdir), "PYTHONFAULTHANDLER": "1"}
        full_env.update(env)
        with open(log, "w") as f:
            proc = subprocess.Popen(
                [*self.prefix, sys.executable, "-m", "happysad.train", *args],
                stdout=f,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env=full_env,
            )
        proc.log = log
        return proc


def finish(*procs) -> list[str]:
    """Wait for each process (killing all on a timeout); their logs."""
    try:
        for p in procs:
            p.wait(timeout=WORKER_TIMEOUT)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGABRT)  # its Python stack into its log
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=30)
    return [p.log.read_text() for p in procs]


def weights_hash(log: str) -> str:
    found = re.findall(r"worker \d: weights sha256 ([0-9a-f]{64})", log)
    assert len(found) == 1, log[-3000:]
    return found[0]


def args_for(dataset, out):
    return train_args(dataset, out, 2, "--arch", "seed", "--deterministic", "--strategy", "multi-worker")


@pytest.fixture(scope="module")
def two_worker_run(dataset, netns, tmp_path_factory):
    """An uninterrupted 2-worker run (2 epochs); worker 1 is given its own
    --out, as on a machine without the chief's disk. (run folder, the
    other --out, both logs, the workers' TMPDIRs' parent)."""
    tmp = tmp_path_factory.mktemp("two")
    workers = Workers(netns, tmp)
    out, other = tmp / "run", tmp / "run_on_worker1"
    chief = workers.start(0, args_for(dataset, out), "run")
    worker = workers.start(1, args_for(dataset, other), "run")
    logs = finish(chief, worker)
    assert chief.returncode == 0 and worker.returncode == 0, logs[0][-3000:] + logs[1][-3000:]
    return out, other, logs, tmp


def test_two_workers_train_one_model_and_only_the_chief_writes(two_worker_run):
    from happysad.edge import Classifier
    from happysad.edge.cli.parser import main as edge_main
    from happysad.export.cli import main as export_main

    out, other, logs, tmp = two_worker_run
    metrics = json.loads((out / "metrics.json").read_text())
    digest = weights_hash(logs[0])
    assert weights_hash(logs[1]) == digest == metrics["weights_sha256"]
    print(f"2 workers: accuracy {metrics['accuracy']:.3f}, weights_sha256 {digest}")
    assert metrics["workers"] == 2 and metrics["epochs_run"] == 2 and metrics["deterministic"] is True
    assert {p.name for p in out.iterdir()} == RUN_FILES  # no checkpoint/ or cache/ left
    assert (out / "history.csv").read_text().splitlines()[0] == "epoch,accuracy,loss,val_accuracy,val_loss"
    assert list((out / "logs" / "train").iterdir()) and list((out / "logs" / "validation").iterdir())
    assert not other.exists()  # worker 1 wrote nothing under its --out
    assert not list((tmp / "tmp1").iterdir())  # and its temporary folder is gone
    assert json.loads((out / "config.json").read_text())["strategy"] == "multi-worker"
    # The run folder exports, verifies and classifies as a single-worker run's does.
    args = [str(out), "--formats", "tflite-int8", "--calib-samples", "40", "--max-drop", "100", "--min-accuracy", "0"]
    assert export_main(args) == 0
    model = out / "export" / "model_int8.tflite"
    assert edge_main(["verify", str(model)]) == 0
    split = json.loads((out / "split.json").read_text())
    image = (out / split["data_dir"] / split["test"][0]["path"]).resolve()
    assert list(Classifier(model).metadata.labels) == metrics["labels"]
    assert edge_main(["classify", str(model), str(image), "--json"]) == 0


def _in_use_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


@pytest.mark.parametrize(
    "config, pattern",
    [
        (None, r"TF_CONFIG: is not set"),
        ("{not json", r"TF_CONFIG: not JSON"),
        ('{"task": {"type": "worker", "index": 0}}', r"TF_CONFIG: no 'cluster'"),
        ('{"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}}', r"TF_CONFIG: no 'task'"),
        (
            '{"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, "task": {"type": "worker", "index": 2}}',
            r"TF_CONFIG: task index 2 is out of range: cluster.worker lists 2 \(index 0..1\)",
        ),
        ('{"cluster": {"worker": ["nohost"]}, "task": {"type": "worker", "index": 0}}', r"address 'nohost'"),
        ("in use", r"TF_CONFIG: task worker 0's address 127.0.0.1:\d+: port \d+ is in use"),
    ],
)
def test_bad_tf_config_is_one_line(dataset, tmp_path, monkeypatch, capsys, config, pattern):
    from happysad.train.cli import main

    listener = None
    if config == "in use":
        listener = _in_use_port()
        port = listener.getsockname()[1]
        config = json.dumps({"cluster": {"worker": [f"127.0.0.1:{port}"]}, "task": {"type": "worker", "index": 0}})
    if config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", config)
    try:
        assert main(args_for(dataset, tmp_path / "run")) == 2
    finally:
        if listener:
            listener.close()
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    assert err[0].startswith("happysad-train: error: ") and re.search(pattern, err[0]), err[0]
    assert not (tmp_path / "run").exists()  # refused before anything was scanned or written


def test_killed_worker_resumes_from_the_checkpoint(dataset, netns, two_worker_run, tmp_path):
    """Worker 1 is SIGKILLed after epoch 1 (it waits there for the kill);
    worker 0 stops with one line; both started again resume from epoch 1's
    checkpoint and end where the uninterrupted run ended, to the bit."""
    reference, _, ref_logs, _ = two_worker_run
    workers = Workers(netns, tmp_path)
    out = tmp_path / "run"
    chief = workers.start(0, args_for(dataset, out), "first")
    worker = workers.start(1, args_for(dataset, out), "first", HAPPYSAD_PAUSE_AFTER_EPOCH="1")
    try:
        # Worker 1 waits after saving epoch 1; the chief saves its own
        # checkpoint (the one a restart resumes from) at about the same time.
        index = out / "checkpoint" / "ckpt-1.index"
        wait_until(
            lambda: ("waiting to be killed" in worker.log.read_text() and index.is_file()) or worker.poll() is not None,
            timeout=WORKER_TIMEOUT,
            what="worker 1 to finish epoch 1 and the chief to checkpoint it",
        )
        assert worker.poll() is None, worker.log.read_text()[-3000:]
        worker.kill()  # SIGKILL
        log0 = finish(chief)[0]
    finally:
        finish(chief, worker)
    assert chief.returncode == 1, log0[-3000:]
    lines = [line for line in log0.splitlines() if line.startswith("happysad-train: error:")]
    assert len(lines) == 1 and "a worker was lost" in lines[0], log0[-3000:]
    assert not (out / "model.keras").exists()
    # Started again, as a cluster manager (a TFJob's restartPolicy) does.
    logs = finish(workers.start(0, args_for(dataset, out), "again"), workers.start(1, args_for(dataset, out), "again"))
    for log in logs:
        assert "resumed from the checkpoint of epoch 1" in log, log[-3000:]
    assert weights_hash(logs[0]) == weights_hash(logs[1]) == weights_hash(ref_logs[0])
    assert (out / "history.csv").read_text() == (reference / "history.csv").read_text()
    assert {p.name for p in out.iterdir()} == RUN_FILES  # whole, and the checkpoint removed
    import keras

    assert keras.saving.load_model(out / "model.keras").count_params() > 0
