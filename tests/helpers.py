"""Helpers shared by the test modules (on pytest's ``pythonpath``; tests import
from here, never from ``conftest`` or from each other)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2

#: The repository's root folder.
REPO = Path(__file__).resolve().parent.parent
#: The shared real faces, where the development checkout has them.
REAL_DATA = REPO.parent / "shared" / "data" / "fer2013-happy-sad"
#: ``make fuzz`` sets HAPPYSAD_FUZZ_EXAMPLES to run the property-based tests
#: far longer than ``make test`` does.
FUZZ_EXAMPLES = int(os.environ.get("HAPPYSAD_FUZZ_EXAMPLES", "0") or 0)
#: happysad-bench flags for a quick measurement: accuracy is what a test
#: checks, latency only has to be there.
QUICK_BENCH = ("--runs", "5", "--warmup", "1", "--cold-runs", "0")


def train_args(data, out, epochs: int, *extra, seed: int = 1, batch_size: int = 16, augment: str = "basic") -> list:
    """The happysad-train arguments the tests' small trainings share:
    ``DATA --out OUT --epochs N --seed S --batch-size B --augment A`` then ``extra``."""
    args = [data, "--out", out, "--epochs", epochs, "--seed", seed, "--batch-size", batch_size, "--augment", augment]
    return [str(a) for a in (*args, *extra)]


def examples(n: int) -> int:
    """Hypothesis examples for a property test: ``n`` in ``make test``, the fuzz count in ``make fuzz``."""
    return FUZZ_EXAMPLES or n


def assert_one_line_error(res, code, pattern):
    """A finished command exited ``code`` with one stderr line matching ``pattern`` and no traceback."""
    assert res.returncode == code, (res.returncode, res.stderr)
    lines = [
        line
        for line in res.stderr.splitlines()
        if line.strip() and not line.startswith("INFO: Created TensorFlow Lite")
    ]
    assert len(lines) == 1, res.stderr
    assert re.search(pattern, lines[0]), lines[0]
    assert "Traceback" not in res.stderr


def write_video(path, frames, fps=15):
    """An MJPG .avi of uint8 gray or BGR frames."""
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert writer.isOpened()
    for f in frames:
        writer.write(f if f.ndim == 3 else cv2.cvtColor(f, cv2.COLOR_GRAY2BGR))
    writer.release()


def camera_cmd(model, source, *extra):
    """The ``happysad-edge camera --headless`` command line."""
    return [sys.executable, "-m", "happysad.edge", "camera", str(model), "--source", str(source), "--headless", *extra]


def run_camera(model, video, *extra):
    """Run the headless camera loop to its end; the finished process."""
    return subprocess.run(camera_cmd(model, video, *extra), capture_output=True, text=True, cwd=REPO, timeout=120)


def run_module(module: str, *args, timeout=120, env=None):
    """``python -m happysad.MODULE ARGS`` from the repository, run to its end."""
    return subprocess.run(
        [sys.executable, "-m", f"happysad.{module}", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout,
        env=env,
    )


def build_wheel(tmp_path) -> Path:
    """The wheel, built from a copy of the tracked files (so setuptools' build/
    folder is not left in the checkout)."""
    src = tmp_path / "src"
    tracked = subprocess.run(["git", "ls-files"], capture_output=True, text=True, cwd=REPO).stdout.split("\n")
    for name in filter(None, tracked):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, src / name)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        str(tmp_path / "dist"),
    ]
    res = subprocess.run([*cmd, str(src)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    (wheel,) = (tmp_path / "dist").glob("happysad-*.whl")
    return wheel


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition, timeout=60.0, what="the condition", interval=0.05):
    """Poll ``condition()`` until it returns a true value (returned), at most
    ``timeout`` s; an AssertionError naming ``what`` after that. For tests
    that wait on an event another process or thread makes happen, instead
    of sleeping a guessed time: the deadline is generous (a loaded 2-core
    machine), the usual wait short."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"waited {timeout:g} s for {what}")
        time.sleep(interval)


def wait_for_port(port, timeout=60):
    """Wait until something listens on 127.0.0.1:``port``."""

    def listening():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False

    wait_until(listening, timeout, f"something to listen on port {port}", interval=0.1)


class Lines:
    """A running process whose stdout and stderr lines are collected as they
    come (by two threads), so a test can wait for a line instead of
    sleeping: :meth:`wait_for`. ``times`` holds when each stdout line came
    (``time.monotonic``)."""

    def __init__(self, cmd, **popen):
        self.proc = subprocess.Popen(
            [str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, **popen
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self.times: list[float] = []
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.out, self.times), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.err, None), daemon=True),
        ]
        for t in self._readers:
            t.start()

    @staticmethod
    def _read(stream, lines, times):
        for line in stream:
            if times is not None:
                times.append(time.monotonic())
            lines.append(line.rstrip("\n"))

    def wait_for(self, condition, timeout=120.0, what="a line"):
        """Wait until ``condition(self)`` is true; fails early (with stderr)
        when the process ends without it."""

        def met():
            if condition(self):
                return True
            if self.proc.poll() is not None:
                self.finish()
                if condition(self):
                    return True
                raise AssertionError(f"the process ended (rc {self.proc.returncode}) before {what}: {self.stderr}")
            return False

        wait_until(met, timeout, what)

    def err_has(self, text: str) -> bool:
        return any(text in line for line in list(self.err))

    def finish(self, timeout=120.0) -> int:
        """Wait for the process to end and its output to be read; its exit code."""
        code = self.proc.wait(timeout=timeout)
        for t in self._readers:
            t.join(timeout)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)

    @property
    def stderr(self) -> str:
        return "\n".join(self.err)


class Proxy:
    """A TCP forwarder from a free port to ``target_port`` on 127.0.0.1 that
    can go away (``down``: every connection cut, nothing listening) and
    come back (``up``), or hold each chunk ``delay`` seconds (a slow link):
    a server taken away and given back at the instant a test chooses."""

    def __init__(self, target_port, delay=0.0):
        self.target, self.delay = target_port, delay
        self.port = free_port()
        self._conns = []
        self._listener = None
        self.up()

    def up(self):
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", self.port))
        self._listener.listen()
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def down(self):
        try:  # wakes the thread blocked in accept(); close() alone leaves it listening
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        for c in self._conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()
        self._conns.clear()

    def _accept(self, listener):
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src, dst):
        try:
            while data := src.recv(4096):
                if self.delay:
                    time.sleep(self.delay)
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class FakeClock:
    """A clock that stands still until a test moves it: ``clock()`` is the
    time in s, ``clock.advance(s)`` moves it on."""

    def __init__(self, start: float = 0.0):
        self.t = start

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


ANONYMOUS = "  amqtt.plugins.authentication.AnonymousAuthPlugin:\n    allow_anonymous: true\n"


def start_broker(folder, port, listener="", plugins=ANONYMOUS):
    """An amqtt broker process (pure Python, the ``dev`` extra) on
    127.0.0.1:``port``; ``listener``: more YAML lines of its listener;
    ``plugins``: the YAML lines of its plugins."""
    config = folder / f"broker-{port}.yaml"
    config.write_text(
        f"listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:{port}\n{listener}plugins:\n{plugins}"
    )
    amqtt = REPO / ".venv" / "bin" / "amqtt"
    cmd = [str(amqtt)] if amqtt.exists() else [sys.executable, "-m", "amqtt.scripts.broker_script"]
    proc = subprocess.Popen([*cmd, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
    except AssertionError:
        proc.kill()
        raise
    return proc


class Watcher:
    """An MQTT subscriber (paho) that keeps every message: (topic, payload text, retain flag)."""

    def __init__(self, port, *topics, ca=None):
        import paho.mqtt.client as mqtt

        self.messages = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"watch-{time.monotonic_ns()}")
        if ca:
            self.client.tls_set(ca_certs=str(ca))
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.subscribe([(t, 1) for t in topics])
        self.client.loop_start()
        assert subscribed.wait(30)

    def _on_message(self, client, userdata, msg):
        with self._lock:
            self.messages.append((msg.topic, msg.payload.decode(), bool(msg.retain)))

    def on(self, topic):
        """[(payload, retained)] received on ``topic``, in order."""
        with self._lock:
            return [(payload, retain) for t, payload, retain in self.messages if t == topic]

    def wait_for(self, topic, payload, timeout=60):
        """Wait until ``payload`` came on ``topic``."""
        wait_until(lambda: any(p == payload for p, _ in self.on(topic)), timeout, f"{payload!r} on {topic}")

    def wait_until(self, condition, timeout=60, what="the messages"):
        """Wait until ``condition(self)`` holds."""
        wait_until(lambda: condition(self), timeout, what)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def sha(path) -> str:
    """The sha256 (hex) of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
