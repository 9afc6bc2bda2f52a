"""camera --mqtt against a real MQTT broker: amqtt (pure Python, from the
``dev`` extra, so ``make test`` on a fresh machine has it), started on
127.0.0.1 by the tests themselves. A TCP proxy between the camera and the
broker takes the broker away and slows it down."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request

import cv2
import numpy as np
import pytest

from happysad.edge.camera.outputs.broker import parse_broker
from happysad.edge.camera.outputs.homeassistant import discovery_configs, node_id
from happysad.edge.camera.outputs.mqtt import HEARTBEAT_S, MqttOptions, MqttPublisher
from happysad.edge.errors import HappysadError
from happysad.edge.runtime.prediction import Prediction

from helpers import (
    REPO,
    FakeClock,
    Lines,
    Proxy,
    Watcher,
    assert_one_line_error,
    camera_cmd,
    free_port,
    run_camera,
    start_broker,
    wait_until,
    write_video,
)
from synth import draw_face

mqtt = pytest.importorskip("paho.mqtt.client")

FPS = 20


def retained(port, topic_filter, expect=(), settle=2.0):
    """{topic: payload} of the retained messages a new subscriber gets: once
    every topic in ``expect`` came (waited for), else after ``settle`` s
    (for a check that something is absent)."""
    w = Watcher(port, topic_filter)
    try:
        if expect:
            w.wait_until(lambda w: set(expect) <= {t for t, _, r in w.messages if r}, what=f"retained {expect}")
        else:
            time.sleep(settle)
    finally:
        w.close()
    return {t: p for t, p, r in w.messages if r}


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
        # The clean stop's "offline" is the last message the camera sent.
        watcher.wait_until(lambda w: w.on(f"{topic}/availability")[-1:] == [("offline", False)], what="offline")
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

    kept = retained(broker, f"{topic}/#", expect=(f"{topic}/state", f"{topic}/availability"))
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
    assert set(retained(broker, "homeassistant/#", expect=configs)) >= set(configs)

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
    kept = retained(broker, f"{topic}/availability", expect=(f"{topic}/availability",))
    assert kept[f"{topic}/availability"] == "offline"


def run_paced(export_dir, video, proxy, topic, *extra):
    """The paced camera publishing through ``proxy``, running: a :class:`Lines`."""
    return Lines(
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
        )
    )


def last_mqtt(run):
    """The MQTT counts of the last JSON line so far, or {}."""
    return json.loads(run.out[-1])["mqtt"] if run.out else {}


#: A gap between two JSON lines longer than this is a stall: far over a
#: frame's time on a loaded machine, far under the stall a loop waiting on
#: the broker would show (the whole outage, or a round trip through the slow link).
STALL_S = 3.0


def test_broker_away_the_loop_keeps_going_and_counts_what_is_lost(export_dir, flipping_video, broker):
    """The broker goes away once the first event is delivered and comes back
    once the loop has had to drop one (a queue of 3): the loop classifies
    on meanwhile (it never waits on the broker), the connection comes back,
    and every event is either received or counted as dropped."""
    topic = "happysad/test-away"
    proxy = Proxy(broker)
    watcher = Watcher(broker, f"{topic}/#")
    run = run_paced(export_dir, flipping_video, proxy, topic, "--mqtt-queue", "3")
    try:
        run.wait_for(lambda r: last_mqtt(r).get("delivered", 0) >= 1, what="a delivered event")
        proxy.down()
        down_at = len(run.out)
        run.wait_for(lambda r: not last_mqtt(r)["connected"] and last_mqtt(r)["dropped"] >= 1, what="a dropped event")
        away = run.out[down_at:]
        proxy.up()
        code = run.finish()
        # online, the last will when the connection was cut, online again, offline at the clean stop
        watcher.wait_until(lambda w: len(w.on(f"{topic}/availability")) >= 4, what="four availability messages")
    finally:
        run.kill()
        proxy.down()
        watcher.close()
    assert code == 0, run.stderr
    records = [json.loads(line) for line in run.out]
    assert len(records) == 400
    assert len(away) >= 60  # 3 label changes (30 frames apart) to fill the queue: the loop went on
    assert max(np.diff(run.times)) < STALL_S
    final = records[-1]["mqtt"]
    assert final["connected"] and final["reconnects"] >= 1, final
    assert [p for p, _ in watcher.on(f"{topic}/availability")] == ["online", "offline", "online", "offline"]
    changes = label_changes(records)
    got = events(watcher, topic)
    summary = next(line for line in run.err if "mqtt:" in line and "events" in line)
    n_events, delivered, dropped = (int(w) for w in summary.replace(",", "").split()[2::2][:3])
    assert n_events == len(changes) and dropped > 0
    assert len(got) == delivered == n_events - dropped
    assert [e["seq"] for e in got] == sorted(e["seq"] for e in got)
    assert {(e["frame"], e["label"]) for e in got} <= set(changes)


def test_a_slow_broker_does_not_stall_the_loop(export_dir, flipping_video, broker):
    """Every chunk to and from the broker held 0.3 s: every frame is
    classified with no stall, the events are counted; the MQTT counters
    are scraped from /metrics once the loop is connected and parsed with
    the Prometheus client's parser. (That publishing never waits on the
    broker is shown exactly by test_publishing_never_waits_for_the_broker.)"""
    from prometheus_client.parser import text_string_to_metric_families

    topic = "happysad/test-slow"
    proxy = Proxy(broker, delay=0.3)
    port = free_port()
    run = run_paced(
        export_dir, flipping_video, proxy, topic, "--max-frames", "200", "--mqtt-queue", "5", "--metrics", str(port)
    )
    try:
        run.wait_for(lambda r: last_mqtt(r).get("connected") and last_mqtt(r)["events"] >= 1, what="connected")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
            text = r.read().decode()
        scraped = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
        code = run.finish()
    finally:
        run.kill()
        proxy.down()
    assert code == 0, run.stderr
    records = [json.loads(line) for line in run.out]
    assert len(records) == 200
    assert max(np.diff(run.times)) < STALL_S
    assert records[-1]["mqtt"]["events"] == len(label_changes(records))
    assert scraped["happysad_mqtt_connected"] == 1 and scraped["happysad_mqtt_events_total"] >= 1
    assert "happysad_mqtt_queue_length" in scraped and "happysad_mqtt_dropped_total" in scraped


def face(label, box=(10, 10, 40, 40)):
    """A prediction of ``label`` for a face at ``box``."""
    p = 0.9 if label == "happy" else 0.1
    return Prediction(label, 0.9, {"happy": p, "sad": 1 - p}, box)


def test_rate_limit_coalescing_and_heartbeat_on_an_injected_clock(broker):
    """--mqtt-min-interval 1 on a clock the test moves: events wait their
    turn in order, one per interval, none lost; the state is sent only when
    nothing waits, as the newest one (older states coalesced), and again
    after HEARTBEAT_S though nothing changed."""
    topic = "happysad/test-rate"
    watcher = Watcher(broker, f"{topic}/event", f"{topic}/state")
    clock = FakeClock(100.0)
    options = MqttOptions(url=f"mqtt://127.0.0.1:{broker}", topic=topic, min_interval=1.0)
    pub = MqttPublisher(options, ["happy", "sad"], clock=clock)
    pub.start()
    try:
        wait_until(lambda: pub.connected, what="the publisher to connect")
        pub.update([face("happy")], 1)  # event 1 goes at once
        for frame, label in ((2, "sad"), (3, "happy"), (4, "sad"), (5, "sad")):
            clock.advance(0.2)  # within the interval: events 2..4 wait, no state goes
            pub.update([face(label)], frame)
        clock.advance(0.1)
        pub.update([], 6)  # no face: no event; the state it makes replaces frame 5's
        assert pub.events == 4
        sent_at = []
        for t in (101.0, 101.5, 102.0, 102.9, 103.0, 104.0, 105.0, 104.0 + HEARTBEAT_S - 0.1, 104.0 + HEARTBEAT_S):
            clock.t = t
            before = pub.events - len(pub._waiting), pub._last_state
            pub.flush()
            if (pub.events - len(pub._waiting), pub._last_state) != before:
                sent_at.append(t)
        # events 2, 3 and 4 at one-second steps, the state at the next, the heartbeat 60 s later
        assert sent_at == [101.0, 102.0, 103.0, 104.0, 104.0 + HEARTBEAT_S]
    finally:
        final = pub.close(timeout=30)  # and the retained state once more, as the last frame's
    try:
        watcher.wait_until(lambda w: len(w.on(f"{topic}/state")) >= 3, what="three states")
    finally:
        watcher.close()
    assert final["events"] == final["delivered"] == 4 and final["dropped"] == 0
    got = events(watcher, topic)
    assert [(e["seq"], e["frame"], e["label"]) for e in got] == [
        (1, 1, "happy"),
        (2, 2, "sad"),
        (3, 3, "happy"),
        (4, 4, "sad"),
    ]
    states = [json.loads(p) for p, _ in watcher.on(f"{topic}/state")]
    assert [(s["frame"], s["label"], s["no_face"]) for s in states] == [(6, "no_face", True)] * 3


def test_publishing_never_waits_for_the_broker(broker):
    """Through a link that holds every chunk 1 s, 20 label changes are
    handed on at once: when the last update returns none of the events can
    have been acknowledged yet (that takes a round trip, 2 s), so no update
    waited for one; all of them are delivered at close."""
    topic = "happysad/test-nowait"
    proxy = Proxy(broker, delay=1.0)
    options = MqttOptions(url=f"mqtt://127.0.0.1:{proxy.port}", topic=topic, min_interval=0)
    pub = MqttPublisher(options, ["happy", "sad"])
    pub.start()
    try:
        wait_until(lambda: pub.connected, what="the publisher to connect")
        for i in range(20):
            pub.update([face("happy" if i % 2 == 0 else "sad")], i + 1)
        counts = pub.stats()
    finally:
        final = pub.close(timeout=60)
        proxy.down()
    assert counts["events"] == 20 and counts["delivered"] < 20 and counts["dropped"] == 0, counts
    assert final["events"] == final["delivered"] == 20 and final["dropped"] == 0, final


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
        watcher.wait_until(lambda w: w.on(f"{topic}/availability")[-1:] == [("offline", False)], what="offline")
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
