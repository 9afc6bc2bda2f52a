"""camera --mqtt against a real MQTT broker: amqtt (pure Python, from the
``dev`` extra, so ``make test`` on a fresh machine has it), started on
127.0.0.1 by the tests themselves. A TCP proxy between the camera and the
broker takes the broker away and slows it down."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import cv2
import numpy as np
import pytest

from happysad.edge.broker import parse_broker
from happysad.edge.errors import HappysadError
from happysad.edge.homeassistant import discovery_configs, node_id

from helpers import REPO, assert_one_line_error, camera_cmd, free_port, run_camera, write_video
from synth import draw_face

mqtt = pytest.importorskip("paho.mqtt.client")

FPS = 20


def wait_for_port(port, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}")


ANONYMOUS = "  amqtt.plugins.authentication.AnonymousAuthPlugin:\n    allow_anonymous: true\n"


def start_broker(folder, port, listener="", plugins=ANONYMOUS):
    """An amqtt broker process on 127.0.0.1:``port``; ``listener``: more YAML
    lines of its listener; ``plugins``: the YAML lines of its plugins."""
    config = folder / f"broker-{port}.yaml"
    config.write_text(
        f"listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:{port}\n{listener}plugins:\n{plugins}"
    )
    amqtt = REPO / ".venv" / "bin" / "amqtt"
    cmd = [str(amqtt)] if amqtt.exists() else [sys.executable, "-m", "amqtt.scripts.broker_script"]
    proc = subprocess.Popen([*cmd, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port)
    return proc


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    """An amqtt broker on a free loopback port; its port."""
    port = free_port()
    proc = start_broker(tmp_path_factory.mktemp("broker"), port)
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


class Watcher:
    """A subscriber that keeps every message: (topic, payload text, retain flag)."""

    def __init__(self, port, *topics, ca=None):
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
        assert subscribed.wait(10)

    def _on_message(self, client, userdata, msg):
        with self._lock:
            self.messages.append((msg.topic, msg.payload.decode(), bool(msg.retain)))

    def on(self, topic):
        with self._lock:
            return [(payload, retain) for t, payload, retain in self.messages if t == topic]

    def wait_for(self, topic, payload, timeout=15):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(p == payload for p, _ in self.on(topic)):
                return
            time.sleep(0.05)
        raise AssertionError(f"{payload!r} never came on {topic}: {self.on(topic)}")

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def retained(port, topic_filter, settle=1.0):
    """{topic: payload} of the retained messages a new subscriber gets."""
    w = Watcher(port, topic_filter)
    time.sleep(settle)
    w.close()
    return {t: p for t, p, r in w.messages if r}


class Proxy:
    """A TCP forwarder from a free port to the broker that can go away
    (``down``: every connection cut, nothing listening) and come back, or
    hold each chunk ``delay`` seconds (a slow broker)."""

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
            upstream = socket.create_connection(("127.0.0.1", self.target))
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


@pytest.fixture(scope="module")
def flipping_video(tmp_path_factory):
    """400 frames of drawn faces at 20 fps (20 s), happy and sad in turns of 30 frames."""
    rng = np.random.default_rng(5)
    path = tmp_path_factory.mktemp("video") / "flipping.avi"
    write_video(path, [cv2.resize(draw_face(rng, (i // 30) % 2 == 0), (160, 120)) for i in range(400)], fps=FPS)
    return path


def largest_labels(records):
    """(frame, label) of the largest face where a frame has one."""
    out = []
    for r in records:
        faces = [f for f in r["faces"] if f.get("face")]
        if faces:
            out.append((r["frame"], max(faces, key=lambda f: f["face"][2] * f["face"][3])["label"]))
    return out


def label_changes(records):
    changes, last = [], None
    for frame, label in largest_labels(records):
        if label != last:
            changes.append((frame, label))
            last = label
    return changes


def events(watcher, topic):
    """The events received, one per sequence number (a QoS 1 resend is a duplicate), in order."""
    by_seq = {}
    for payload, _ in watcher.on(f"{topic}/event"):
        e = json.loads(payload)
        by_seq.setdefault(e["seq"], e)
    return [by_seq[k] for k in sorted(by_seq)]


def test_broker_urls_and_discovery_configs():
    b = parse_broker("mqtts://ann:p%40ss@hub.local")
    assert (b.host, b.port, b.tls, b.username, b.password) == ("hub.local", 8883, True, "ann", "p@ss")
    assert parse_broker("mqtt://10.0.0.2:1884").port == 1884
    for bad in ("http://hub", "mqtt://", "mqtt://hub:99999", "hub:1883"):
        with pytest.raises(HappysadError, match="mqtt://"):
            parse_broker(bad)
    configs = discovery_configs("happysad/kitchen pi", "homeassistant", ["happy", "sad"], "m.tflite", "0.1.0")
    assert node_id("happysad/kitchen pi") == "happysad_kitchen_pi"
    assert sorted(configs) == [
        "homeassistant/binary_sensor/happysad_kitchen_pi/face/config",
        "homeassistant/sensor/happysad_kitchen_pi/confidence/config",
        "homeassistant/sensor/happysad_kitchen_pi/label/config",
    ]


def test_flags_need_mqtt_and_a_broker_url(export_dir, flipping_video):
    model = export_dir / "model_int8.tflite"
    res = run_camera(model, flipping_video, "--ha-discovery")
    assert_one_line_error(res, 2, r"need --mqtt URL")
    res = run_camera(model, flipping_video, "--mqtt", "http://hub")
    assert_one_line_error(res, 2, r"--mqtt http://hub: not a broker address; use mqtt://")


def test_no_broker_the_loop_runs_and_counts_every_event_dropped(export_dir, flipping_video):
    """Nobody listens on the port: the camera runs to the end at its own
    pace, and every event is counted as dropped, none as delivered."""
    res = run_camera(
        export_dir / "model_int8.tflite",
        flipping_video,
        "--max-frames",
        "120",
        "--mqtt",
        f"mqtt://127.0.0.1:{free_port()}",
        "--mqtt-min-interval",
        "0",
    )
    assert res.returncode == 0, res.stderr
    last = json.loads(res.stdout.splitlines()[-1])["mqtt"]
    assert last["connected"] is False and last["delivered"] == 0 and last["events"] >= 2
    assert f"mqtt: {last['events']} events, 0 delivered, {last['events']} dropped" in res.stderr


def test_events_state_availability_and_discovery(export_dir, flipping_video, broker):
    """Every label change is one event, in order; the retained state is the
    last frame's; Home Assistant's configs carry the schema's fields and go
    away with --ha-discovery remove."""
    topic = "happysad/test-events"
    watcher = Watcher(broker, f"{topic}/#", "homeassistant/#")
    url = f"mqtt://127.0.0.1:{broker}"
    common = ("--mqtt", url, "--mqtt-topic", topic, "--mqtt-min-interval", "0")
    try:
        res = run_camera(
            export_dir / "model_int8.tflite", flipping_video, *common, "--ha-discovery", "--max-frames", "300"
        )
        time.sleep(0.5)
    finally:
        watcher.close()
    assert res.returncode == 0, res.stderr
    records = [json.loads(line) for line in res.stdout.splitlines()]
    changes = label_changes(records)
    assert len(changes) >= 4  # the faces flip every 30 frames
    got = events(watcher, topic)
    assert [(e["frame"], e["label"]) for e in got] == changes
    assert [e["seq"] for e in got] == list(range(1, len(changes) + 1))
    assert all(len(e["box"]) == 4 and 0 <= e["confidence"] <= 1 and e["time"].endswith("+00:00") for e in got)
    assert records[-1]["mqtt"]["events"] == len(changes)
    assert f"mqtt: {len(changes)} events, {len(changes)} delivered, 0 dropped" in res.stderr

    kept = retained(broker, f"{topic}/#")
    state = json.loads(kept[f"{topic}/state"])
    frame, label = largest_labels(records)[-1]
    assert state["frame"] == records[-1]["frame"] == frame == 300
    assert (state["label"], state["faces"], state["no_face"]) == (label, len(records[-1]["faces"]), False)
    assert kept[f"{topic}/availability"] == "offline"  # a clean stop says so too
    assert [p for p, _ in watcher.on(f"{topic}/availability")][0] == "online"

    configs = {t: json.loads(p) for t, p, _ in watcher.messages if t.startswith("homeassistant/")}
    assert len(configs) == 3 and all(t.endswith("/config") for t in configs)
    for config in configs.values():
        assert {"name", "unique_id", "state_topic", "availability", "device"} <= set(config)
        assert config["state_topic"] == f"{topic}/state"
        assert config["availability"][0]["topic"] == f"{topic}/availability"
        assert config["device"]["identifiers"] == [node_id(topic)]
    assert len({c["unique_id"] for c in configs.values()}) == 3
    assert set(retained(broker, "homeassistant/#")) >= set(configs)

    res = run_camera(export_dir / "model_int8.tflite", flipping_video, *common, "--ha-discovery", "remove")
    assert res.returncode == 0 and "removed 3 Home Assistant entities" in res.stderr, res.stderr
    assert not set(retained(broker, "homeassistant/#")) & set(configs)


def test_last_will_fires_when_the_camera_is_killed(export_dir, flipping_video, broker):
    topic = "happysad/test-will"
    watcher = Watcher(broker, f"{topic}/availability")
    proc = subprocess.Popen(
        camera_cmd(
            export_dir / "model_int8.tflite",
            flipping_video,
            "--pace",
            "--mqtt",
            f"mqtt://127.0.0.1:{broker}",
            "--mqtt-topic",
            topic,
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=REPO,
    )
    try:
        watcher.wait_for(f"{topic}/availability", "online")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        watcher.wait_for(f"{topic}/availability", "offline")
    finally:
        proc.kill()
        watcher.close()
    assert [p for p, _ in watcher.on(f"{topic}/availability")][-2:] == ["online", "offline"]
    assert retained(broker, f"{topic}/availability")[f"{topic}/availability"] == "offline"


def run_paced(export_dir, video, proxy, topic, during=None, *extra):
    """Run the paced camera through ``proxy``; call ``during(elapsed_s)`` as it
    runs. Returns (records, arrival times of the JSON lines, stderr, rc)."""
    proc = subprocess.Popen(
        camera_cmd(
            export_dir / "model_int8.tflite",
            video,
            "--pace",
            "--mqtt",
            f"mqtt://127.0.0.1:{proxy.port}",
            "--mqtt-topic",
            topic,
            "--mqtt-min-interval",
            "0",
            *extra,
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    lines, times = [], []

    def read():
        for line in proc.stdout:
            times.append(time.monotonic())
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    start = time.monotonic()
    while proc.poll() is None:
        if during:
            during(time.monotonic() - start)
        time.sleep(0.05)
    reader.join(10)
    return [json.loads(line) for line in lines], times, proc.stderr.read(), proc.returncode


def test_broker_away_for_10_s_the_loop_keeps_its_pace_and_counts_what_is_lost(export_dir, flipping_video, broker):
    """The broker goes away 2 s in and comes back 10 s later: no crash, the
    frame rate stays at the source's (>= 95%), the connection comes back, and
    every event is either received or counted as dropped."""
    topic = "happysad/test-away"
    proxy = Proxy(broker)
    watcher = Watcher(broker, f"{topic}/#")
    phase = {"down": None, "up": None}

    def during(t):
        if t > 2 and phase["down"] is None:
            proxy.down()
            phase["down"] = t
        elif t > 12 and phase["up"] is None:
            proxy.up()
            phase["up"] = t

    try:
        records, times, stderr, rc = run_paced(export_dir, flipping_video, proxy, topic, during, "--mqtt-queue", "3")
        time.sleep(0.5)
    finally:
        proxy.down()
        watcher.close()
    assert rc == 0, stderr
    assert len(records) == 400 and phase["up"]
    fps = (len(times) - 1) / (times[-1] - times[0])
    assert fps >= 0.95 * FPS, fps
    assert max(np.diff(times)) < 1.0  # no stall while the broker was away
    final = records[-1]["mqtt"]
    assert final["connected"] and final["reconnects"] >= 1, final
    # online, the last will when the connection was cut, online again, offline at the clean stop
    assert [p for p, _ in watcher.on(f"{topic}/availability")] == ["online", "offline", "online", "offline"]
    changes = label_changes(records)
    got = events(watcher, topic)
    summary = next(line for line in stderr.splitlines() if "mqtt:" in line and "events" in line)
    n_events, delivered, dropped = (int(w) for w in summary.replace(",", "").split()[2::2][:3])
    assert n_events == len(changes) and dropped > 0  # a queue of 3 cannot hold 10 s of changes
    assert len(got) == delivered == n_events - dropped
    assert [e["seq"] for e in got] == sorted(e["seq"] for e in got)
    assert {(e["frame"], e["label"]) for e in got} <= set(changes)


def test_a_slow_broker_does_not_slow_the_loop(export_dir, flipping_video, broker):
    """Every chunk to and from the broker held 0.3 s: the loop keeps the
    source's frame rate (>= 95%) and nothing stalls; the MQTT counters are
    scraped from /metrics and parsed with the Prometheus client's parser."""
    from prometheus_client.parser import text_string_to_metric_families

    topic = "happysad/test-slow"
    proxy = Proxy(broker, delay=0.3)
    port = free_port()
    scraped = {}

    def scrape(t):
        if t > 6 and not scraped:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                text = r.read().decode()
            scraped.update({s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples})

    try:
        records, times, stderr, rc = run_paced(
            export_dir,
            flipping_video,
            proxy,
            topic,
            scrape,
            "--max-frames",
            "200",
            "--mqtt-queue",
            "5",
            "--metrics",
            str(port),
        )
    finally:
        proxy.down()
    assert rc == 0, stderr
    fps = (len(times) - 1) / (times[-1] - times[0])
    assert fps >= 0.95 * FPS, fps
    assert max(np.diff(times)) < 1.0
    assert records[-1]["mqtt"]["events"] == len(label_changes(records))
    assert scraped["happysad_mqtt_connected"] == 1 and scraped["happysad_mqtt_events_total"] >= 1
    assert "happysad_mqtt_queue_length" in scraped and "happysad_mqtt_dropped_total" in scraped


def _self_signed(folder):
    """A certificate for 127.0.0.1 signed by its own key: (cert.pem, key.pem)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def test_mqtts_with_the_brokers_ca_and_without_it(export_dir, flipping_video, tmp_path):
    """A TLS broker: with --mqtt-ca naming its certificate every event arrives;
    with the system's CAs (which do not know it) nothing is sent, the loop
    still runs to the end and counts the events dropped."""
    cert, key = _self_signed(tmp_path)
    port = free_port()
    proc = start_broker(tmp_path, port, f"    ssl: true\n    certfile: {cert}\n    keyfile: {key}\n")
    topic = "happysad/test-tls"
    try:
        watcher = Watcher(port, f"{topic}/#", ca=cert)
        url = f"mqtts://127.0.0.1:{port}"
        common = ("--max-frames", "120", "--mqtt-topic", topic, "--mqtt-min-interval", "0")
        res = run_camera(export_dir / "model_int8.tflite", flipping_video, "--mqtt", url, "--mqtt-ca", cert, *common)
        time.sleep(0.5)
        watcher.close()
        assert res.returncode == 0, res.stderr
        n = len(label_changes([json.loads(line) for line in res.stdout.splitlines()]))
        assert n >= 2 and len(events(watcher, topic)) == n
        assert f"mqtt: {n} events, {n} delivered, 0 dropped" in res.stderr
        res = run_camera(export_dir / "model_int8.tflite", flipping_video, "--mqtt", url, *common)
        assert res.returncode == 0, res.stderr
        assert "0 delivered" in res.stderr and json.loads(res.stdout.splitlines()[-1])["mqtt"]["connected"] is False
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_password_from_the_environment_and_a_wrong_one(export_dir, flipping_video, tmp_path):
    """A broker that wants a user and password: the password from
    $HAPPYSAD_MQTT_PASSWORD (out of the URL and the process list) lets the
    events through; a wrong one is refused in one warning line, and the loop
    still runs to the end."""
    from pwdlib import PasswordHash
    from pwdlib.hashers.argon2 import Argon2Hasher

    passwords = tmp_path / "passwd"
    passwords.write_text(f"pi:{PasswordHash((Argon2Hasher(),)).hash('s3cret')}\n")
    plugins = (
        "  amqtt.plugins.authentication.AnonymousAuthPlugin:\n    allow_anonymous: false\n"
        f"  amqtt.plugins.authentication.FileAuthPlugin:\n    password_file: {passwords}\n"
    )
    port = free_port()
    proc = start_broker(tmp_path, port, plugins=plugins)
    topic = "happysad/test-auth"
    cmd = camera_cmd(
        export_dir / "model_int8.tflite",
        flipping_video,
        "--pace",  # 4.5 s: time for the broker's answer to a wrong password to arrive
        "--max-frames",
        "90",
        "--mqtt",
        f"mqtt://pi@127.0.0.1:{port}",
        "--mqtt-topic",
        topic,
        "--mqtt-min-interval",
        "0",
    )

    def run(password):
        env = {**os.environ, "HAPPYSAD_MQTT_PASSWORD": password}
        return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120, env=env)

    try:
        good, bad = run("s3cret"), run("wrong")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert good.returncode == 0 and bad.returncode == 0, (good.stderr, bad.stderr)
    n = json.loads(good.stdout.splitlines()[-1])["mqtt"]["events"]
    assert n >= 2 and f"mqtt: {n} events, {n} delivered, 0 dropped" in good.stderr
    assert "s3cret" not in " ".join(cmd)
    assert "broker refused the connection" in bad.stderr and "0 delivered" in bad.stderr
