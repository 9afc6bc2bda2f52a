"""MQTT out of the camera loop (``happysad-edge camera --mqtt URL``), with
Home Assistant discovery, through the Eclipse Paho client (``paho-mqtt``).

Topics under ``--mqtt-topic`` (default ``happysad/<hostname>``):

- ``<topic>/availability``: ``online`` (retained) once connected; the last
  will, ``offline`` (retained), when the device drops off without a word,
  and the same on a clean stop.
- ``<topic>/state``: retained, QoS 0: the largest face's label and
  confidence, the number of faces, ``no_face``, frame, time and the
  dropped-message count. Sent when it changes (and every
  :data:`HEARTBEAT_S`), never while disconnected: the latest is sent on
  reconnecting.
- ``<topic>/event``: not retained, QoS 1: one per change of the largest
  face's label (after smoothing; frames with no face change nothing), with
  a sequence number, time, label, confidence and box.

The loop never waits on the broker: Paho's network thread connects,
reconnects with exponential backoff (1 s doubling to :data:`MAX_BACKOFF_S`)
and sends; publishing only puts a message on Paho's bounded queue
(``--mqtt-queue`` events unacknowledged), and an event that finds it full
is dropped and counted.
Nothing is published more often than ``--mqtt-min-interval`` seconds:
events wait their turn in order (none is lost to the limit), the state is
coalesced to the newest. Availability and discovery configs, sent once per
connection, are exempt.

Home Assistant discovery: :mod:`edge.camera.outputs.homeassistant`.
"""

from __future__ import annotations

import collections
import datetime as _dt
import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass

from happysad.edge.camera.outputs.broker import parse_broker
from happysad.edge.camera.outputs.homeassistant import NO_FACE, discovery_configs
from happysad.edge.errors import HappysadError

_log = logging.getLogger(__name__)

#: Longest wait between reconnect attempts, s (Paho doubles from 1 s): a
#: broker back from a restart is found within 5 s, at one connection
#: attempt per 5 s while it is away.
MAX_BACKOFF_S = 5
#: A retained state is re-sent at least this often, s, though nothing changed.
HEARTBEAT_S = 60.0
#: Events waiting for the rate limit beyond this many are dropped (counted).
MAX_WAITING = 1000


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")


@dataclass(kw_only=True)
class MqttOptions:
    """Settings of :class:`MqttPublisher`.

    Attributes:
        url: ``mqtt://[user:pass@]host[:port]`` or ``mqtts://...``; with a
            user and no password, the password is read from
            ``$HAPPYSAD_MQTT_PASSWORD`` (kept out of the process list).
        topic: the device's base topic.
        ca: CA certificate file (PEM) for ``mqtts://``; None: the system's.
        min_interval: least time between two messages of this device, s.
        queue: most messages Paho holds unsent (events beyond are dropped).
        ha_discovery: the Home Assistant discovery prefix, or None.
    """

    url: str
    topic: str
    ca: str | None = None
    min_interval: float = 1.0
    queue: int = 100
    ha_discovery: str | None = None


class MqttPublisher:
    """The device's connection to the broker: state, events, availability.

    Args:
        options: :class:`MqttOptions`. labels: the model's class names.
        model_name: the model file's name (discovery's device model).
        announce: publish availability (and discovery) on connecting; the
            last will is set only then too.
        clock: seconds, monotonic: what the rate limit and the heartbeat
            are measured on (``time.monotonic``; a test passes its own).

    Raises:
        HappysadError: paho-mqtt is missing, the URL or the CA file is bad.
    """

    def __init__(self, options: MqttOptions, labels, model_name: str = "", announce: bool = True, clock=time.monotonic):
        try:
            import paho.mqtt.client as mqtt
        except ImportError:
            raise HappysadError('--mqtt needs paho-mqtt: pip install "happysad[edge]"') from None
        from happysad.edge import __version__

        self._mqtt = mqtt
        self.options = options
        self.broker = parse_broker(options.url)
        self.topic = options.topic.strip("/")
        self.labels = tuple(labels)
        self.model_name, self.version = model_name, __version__
        self.connected = self._closing = False
        self.connects = 0
        self.events = self.delivered = self.dropped = 0
        self._lock = threading.Lock()
        self._pending: set[int] = set()  # Paho message ids of events not yet acknowledged
        # The last acknowledged ids not known as events: an event acknowledged
        # before publish() returned, or another message (states, QoS 0, are
        # "acknowledged" once written). Kept short: Paho reuses ids after 65535.
        self._acked: collections.deque = collections.deque(maxlen=64)
        self._waiting: collections.deque = collections.deque()  # events held by the rate limit
        self._state: dict | None = None
        self._state_sent: tuple | None = None
        self._last_send = self._last_state = float("-inf")
        self._label: str | None = None
        self.announce = announce
        self._clock = clock
        self.client = self._make_client()

    def _make_client(self):
        mqtt, b = self._mqtt, self.broker
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            # One id per device; a second connection (discovery removal) takes
            # another, or the broker would drop the running camera's.
            client_id="happysad-" + re.sub(r"[^A-Za-z0-9_-]", "_", self.topic) + ("" if self.announce else "-admin"),
            protocol=mqtt.MQTTv311,
        )
        if b.username is not None:
            password = b.password if b.password is not None else os.environ.get("HAPPYSAD_MQTT_PASSWORD")
            client.username_pw_set(b.username, password)
        if b.tls:
            try:
                client.tls_set(ca_certs=self.options.ca)
            except (OSError, ValueError) as exc:
                raise HappysadError(
                    f"--mqtt-ca {self.options.ca}: cannot read it as PEM certificates ({exc}); "
                    "give the broker's CA file"
                ) from None
        if self.announce:
            client.will_set(f"{self.topic}/availability", "offline", qos=1, retain=True)
        client.reconnect_delay_set(min_delay=1, max_delay=MAX_BACKOFF_S)
        # The bound is on events only (see _send_event): availability and
        # discovery must get through on a reconnect whatever is waiting.
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return client

    def start(self) -> None:
        """Connect in Paho's own thread; returns at once (the broker may be down)."""
        b = self.broker
        try:
            self.client.connect_async(b.host, b.port, keepalive=30)
        except (OSError, ValueError) as exc:
            raise HappysadError(f"--mqtt {self.options.url}: {exc}") from None
        self.client.loop_start()
        _log.info("mqtt: %s:%d, topic %s", b.host, b.port, self.topic)

    # Paho's network thread -------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties=None):
        if reason_code.is_failure:
            _log.warning("mqtt: broker refused the connection: %s", reason_code)
            return
        if self.announce:
            client.publish(f"{self.topic}/availability", "online", qos=1, retain=True)
        if self.announce and self.options.ha_discovery:
            configs = discovery_configs(
                self.topic, self.options.ha_discovery, self.labels, self.model_name, self.version
            )
            for config_topic, config in configs.items():
                client.publish(config_topic, json.dumps(config), qos=1, retain=True)
        with self._lock:
            self.connected = True
            self.connects += 1
            self._state_sent = None  # the broker may have lost it: send again
        if self.connects > 1:
            _log.info("mqtt: connected again")

    def _on_disconnect(self, client, userdata, flags, reason_code, properties=None):
        with self._lock:
            was, self.connected = self.connected, False
        if was and not self._closing:
            _log.warning("mqtt: lost the broker (%s); reconnecting in the background", reason_code)

    def _on_publish(self, client, userdata, mid, reason_code=None, properties=None):
        # Never call into Paho while holding self._lock: Paho holds its own
        # locks around this callback.
        with self._lock:
            if mid in self._pending:
                self._pending.discard(mid)
                self.delivered += 1
            else:
                self._acked.append(mid)

    # The camera loop's thread ----------------------------------------------

    def update(self, predictions: list, frame: int) -> None:
        """Take one frame's predictions: queue an event on a label change,
        refresh the state, and send what the rate limit allows. Never blocks
        on the network."""
        now_iso = _now()
        # The largest face; a whole-frame prediction (--no-face) has no box and counts as area 0.
        largest = max(predictions, key=lambda p: p.face[2] * p.face[3] if p.face else 0, default=None)
        if largest is not None and largest.label != self._label:
            self._label = largest.label
            self.events += 1
            event = {
                "seq": self.events,
                "time": now_iso,
                "frame": frame,
                "label": largest.label,
                "confidence": round(float(largest.confidence), 4),
                "box": list(largest.face) if largest.face else None,
            }
            if len(self._waiting) >= MAX_WAITING:
                self._waiting.popleft()
                self.dropped += 1
            self._waiting.append(event)
        self._state = {
            "label": largest.label if largest is not None else NO_FACE,
            "confidence": round(float(largest.confidence), 4) if largest is not None else None,
            "faces": sum(p.face is not None for p in predictions),
            "no_face": largest is None,
            "frame": frame,
            "time": now_iso,
            "dropped": self.dropped,
        }
        self.flush()

    def flush(self, now: float | None = None) -> None:
        """Send the next waiting event, else a changed state, if the rate limit allows."""
        now = self._clock() if now is None else now
        if now - self._last_send < self.options.min_interval:
            return
        if self._waiting:
            self._send_event(self._waiting.popleft())
            self._last_send = now
            return
        state = self._state
        if state is None or not self.connected:
            return
        key = (state["label"], state["faces"], state["no_face"])
        if key != self._state_sent or now - self._last_state >= HEARTBEAT_S:
            self.client.publish(f"{self.topic}/state", json.dumps(state), qos=0, retain=True)
            self._state_sent, self._last_state, self._last_send = key, now, now

    def _send_event(self, event: dict) -> None:
        """Hand an event to Paho, or drop it (counted) when ``queue`` events are
        unacknowledged already. Disconnected, Paho keeps it (rc NO_CONN) and
        sends it on reconnecting."""
        with self._lock:
            if len(self._pending) >= self.options.queue:
                self.dropped += 1
                return
        info = self.client.publish(f"{self.topic}/event", json.dumps(event), qos=1, retain=False)
        with self._lock:
            if info.rc == self._mqtt.MQTT_ERR_QUEUE_SIZE:
                self.dropped += 1
            elif info.mid in self._acked:  # acknowledged before we got here
                self._acked.remove(info.mid)
                self.delivered += 1
            else:
                self._pending.add(info.mid)

    @property
    def queued(self) -> int:
        """Events not yet acknowledged by the broker: waiting for the rate limit or in Paho's queue."""
        with self._lock:
            return len(self._waiting) + len(self._pending)

    def stats(self) -> dict:
        """``{"connected", "queued", "events", "delivered", "dropped", "reconnects"}``
        for the JSON line and the metrics; counts since the start."""
        return {
            "connected": self.connected,
            "reconnects": max(0, self.connects - 1),
            "queued": self.queued,
            "events": self.events,
            "delivered": self.delivered,
            "dropped": self.dropped,
        }

    def close(self, timeout: float = 3.0) -> dict:
        """Send what is waiting (ignoring the rate limit) for up to ``timeout``
        s, say ``offline``, disconnect; what is still unsent is counted as
        dropped. Returns :meth:`stats`."""
        deadline = time.monotonic() + timeout
        while self._waiting and self.connected and time.monotonic() < deadline:
            self._send_event(self._waiting.popleft())
        if self.connected and self._state is not None:  # the retained state is the last frame's
            self.client.publish(f"{self.topic}/state", json.dumps(self._state), qos=1, retain=True)
        while self.queued and self.connected and time.monotonic() < deadline:
            time.sleep(0.02)
        self._closing = True
        if self.connected and self.announce:
            info = self.client.publish(f"{self.topic}/availability", "offline", qos=1, retain=True)
            try:
                info.wait_for_publish(timeout=max(0.1, deadline - time.monotonic()))
            except (RuntimeError, ValueError):
                pass
        self.client.disconnect()
        self.client.loop_stop()
        with self._lock:
            self.dropped += len(self._waiting) + len(self._pending)
            self._waiting.clear()
            self._pending.clear()
        return self.stats()
