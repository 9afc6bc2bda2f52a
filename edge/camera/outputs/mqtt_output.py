"""What drives an :class:`~edge.camera.outputs.mqtt.MqttPublisher`: the camera
loop's MQTT output, and the removal of Home Assistant's discovery configs
(``camera --ha-remove``)."""

from __future__ import annotations

import time

from happysad.edge.camera.outputs.base import FrameResult, Output
from happysad.edge.camera.outputs.homeassistant import discovery_configs
from happysad.edge.camera.outputs.mqtt import MqttOptions, MqttPublisher
from happysad.edge.errors import HappysadError


class Mqtt(Output):
    """State, events and availability over MQTT (:class:`edge.camera.outputs.mqtt.MqttPublisher`);
    its counts go into ``result.extra["mqtt"]`` for the JSON line and the metrics."""

    def __init__(self, publisher):
        self.publisher = publisher
        self.final: dict | None = None

    def emit(self, result: FrameResult) -> bool:
        self.publisher.update(result.predictions, result.number)
        result.extra["mqtt"] = self.publisher.stats()
        return False

    def close(self) -> None:
        self.final = self.publisher.close()


def remove_discovery(options: MqttOptions, prefix: str, labels, timeout: float = 10.0) -> int:
    """Publish empty retained discovery configs under ``prefix`` (Home
    Assistant then removes the entities) and wait for the broker's
    acknowledgment. Nothing else is published.

    Returns:
        the number of configs removed.

    Raises:
        HappysadError: no connection or acknowledgment within ``timeout`` s.
    """
    publisher = MqttPublisher(options, labels, announce=False)
    publisher.start()
    deadline = time.monotonic() + timeout
    while not publisher.connected and time.monotonic() < deadline:
        time.sleep(0.05)
    if not publisher.connected:
        publisher.client.loop_stop()
        raise HappysadError(
            f"--mqtt {options.url}: no broker answered in {timeout:g} s; check the address and that it runs"
        )
    topics = list(discovery_configs(publisher.topic, prefix, labels, "", ""))
    infos = [publisher.client.publish(t, b"", qos=1, retain=True) for t in topics]
    for info in infos:
        info.wait_for_publish(timeout=max(0.1, deadline - time.monotonic()))
    publisher.client.disconnect()
    publisher.client.loop_stop()
    return len(topics)
