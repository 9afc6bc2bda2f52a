"""Home Assistant's MQTT discovery for the camera loop (``--ha-discovery``).

Retained configs under ``<prefix>/<component>/<node_id>/<object_id>/config``
(Home Assistant's documented layout,
https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery) make three
entities of one device: a sensor for the label, a sensor for the confidence
(%) and a binary sensor for a face in view. ``--ha-discovery remove``
publishes empty retained configs, which Home Assistant takes as "remove the
entity".
"""

from __future__ import annotations

import re

#: The state's label when no face is in view.
NO_FACE = "no_face"


def node_id(topic: str) -> str:
    """The Home Assistant node id of a device topic: its characters outside
    ``[A-Za-z0-9_-]`` made ``_`` (the set discovery topics allow)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", topic.strip("/"))


def _entities(topic: str, labels) -> dict:
    """The three entities' own fields, by (component, object_id)."""
    return {
        ("sensor", "label"): {
            "name": "Expression",
            "device_class": "enum",
            "options": [*labels, "uncertain", NO_FACE],
            "value_template": "{{ value_json.label }}",
            "json_attributes_topic": f"{topic}/state",
            "icon": "mdi:emoticon-outline",
        },
        ("sensor", "confidence"): {
            "name": "Confidence",
            "unit_of_measurement": "%",
            "state_class": "measurement",
            "value_template": "{{ ((value_json.confidence or 0) * 100) | round(1) }}",
            "icon": "mdi:gauge",
        },
        ("binary_sensor", "face"): {
            "name": "Face",
            "device_class": "occupancy",
            "value_template": "{{ 'OFF' if value_json.no_face else 'ON' }}",
        },
    }


def discovery_configs(topic: str, prefix: str, labels, model_name: str, version: str) -> dict[str, dict]:
    """Home Assistant MQTT discovery configs of one device, by config topic.

    Three entities: ``sensor`` label (an enum of the model's labels,
    ``uncertain`` and ``no_face``), ``sensor`` confidence (%) and
    ``binary_sensor`` face (occupancy). Field names are Home Assistant's
    (https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery).

    Args:
        topic: the device's base topic. prefix: the discovery prefix
            (``homeassistant``). labels: the model's class names.
        model_name: the model file's name. version: the package version.

    Returns:
        {config topic: config dict}; publish each retained as JSON.
    """
    node = node_id(topic)
    device = {
        "identifiers": [node],
        "name": f"happysad {topic.rsplit('/', 1)[-1]}",
        "manufacturer": "happysad",
        "model": model_name,
        "sw_version": version,
    }
    common = {
        "state_topic": f"{topic}/state",
        "availability": [
            {"topic": f"{topic}/availability", "payload_available": "online", "payload_not_available": "offline"}
        ],
        "device": device,
    }
    entities = _entities(topic, labels)
    return {
        f"{prefix.strip('/')}/{component}/{node}/{object_id}/config": {
            **config,
            "unique_id": f"{node}_{object_id}",
            **common,
        }
        for (component, object_id), config in entities.items()
    }
