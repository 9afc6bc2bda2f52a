"""Where the camera's MQTT messages go: ``--mqtt URL`` parsed, and the
device's default topic."""

from __future__ import annotations

import re
import socket
import urllib.parse
from dataclasses import dataclass

from happysad.edge.errors import HappysadError

#: Default ports of MQTT over TCP and over TLS (IANA).
PORTS = {"mqtt": 1883, "mqtts": 8883}


@dataclass(frozen=True)
class Broker:
    """Where to connect: parsed from ``mqtt://[user:pass@]host[:port]``."""

    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = None


def parse_broker(url: str) -> Broker:
    """``mqtt://[user:pass@]host[:port]`` or ``mqtts://...`` as a :class:`Broker`.

    Raises:
        HappysadError: another scheme, no host or a bad port (one line saying the form).
    """
    form = "use mqtt://[user:pass@]host[:port] or mqtts://... for TLS"
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in PORTS or not parts.hostname:
        raise HappysadError(f"--mqtt {url}: not a broker address; {form}")
    try:
        port = parts.port or PORTS[parts.scheme]
    except ValueError:
        raise HappysadError(f"--mqtt {url}: bad port; {form}") from None
    unquote = urllib.parse.unquote
    return Broker(
        host=parts.hostname,
        port=port,
        tls=parts.scheme == "mqtts",
        username=unquote(parts.username) if parts.username is not None else None,
        password=unquote(parts.password) if parts.password is not None else None,
    )


def default_topic() -> str:
    """``happysad/<hostname>``, the hostname reduced to letters, digits, ``-`` and ``_``."""
    return "happysad/" + (re.sub(r"[^A-Za-z0-9_-]+", "_", socket.gethostname()) or "device")
