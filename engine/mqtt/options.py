"""Where the broker is and how the engine talks to it: `MqttOptions`, and `MqttOptions.from_url` for what a user
types (`HOST`, `HOST:PORT`, `mqtt://user:pass@host:port`, `mqtts://host` for TLS).

The password may come from the environment (PASSWORD_ENV) so it never shows in `ps` or a unit file; every
name shown to a user goes through `describe()`, which never contains it (engine.core.urls.redact).
"""
from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass, field
from typing import Mapping
from urllib.parse import unquote, urlsplit

from engine.core.errors import OptionError
from engine.core.urls import redact

#: the environment variable a password is read from when the URL has none
PASSWORD_ENV = "EMOTION_MQTT_PASSWORD"
SCHEMES = {"mqtt": (False, 1883), "tcp": (False, 1883), "mqtts": (True, 8883), "ssl": (True, 8883)}
#: topic levels and Home Assistant ids: letters, digits, _ and -
_SLUG = re.compile(r"[^a-z0-9_-]+")


def slug(text: str, default: str = "engine", length: int = 48) -> str:
    """`text` as one topic level / Home Assistant id: lower case, runs of anything else as `_`."""
    s = _SLUG.sub("_", str(text).lower()).strip("_")[:length].strip("_")
    return s or default


@dataclass
class MqttOptions:
    """The broker, the client and the topics. `client_id` defaults to `emotion-engine-<hostname>`, `node_id`
    (the Home Assistant device and a topic level) to the client id made a slug."""

    host: str = "localhost"
    port: int | None = None  # None: 1883, or 8883 with TLS
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    cafile: str | None = None  # TLS: a CA bundle for a self-signed broker (default: the system's)
    client_id: str | None = None
    prefix: str = "emotion"  # topics: <prefix>/<node_id>/...
    keepalive: int = 30  # seconds; a dead connection is noticed within ~1.5x this
    state_rate: float = 1.0  # retained state messages a second, at most
    queue_size: int = 256  # messages waiting for the broker; past it the oldest is dropped (and counted)
    discovery: bool = True  # Home Assistant discovery configs
    discovery_prefix: str = "homeassistant"
    node_id: str | None = None
    connect_timeout: float = 5.0  # seconds for the first connection (after it, reconnects never block anything)
    required: bool = False  # engine.run: no broker at start is an error (exit 2) instead of a warning

    def __post_init__(self) -> None:
        if not self.host or any(c in self.host for c in "/ @"):
            raise OptionError("MqttOptions", "host", f"{self.host!r} is not a host name or address")
        if self.port is None:
            self.port = 8883 if self.tls else 1883
        if not 0 < int(self.port) < 65536:
            raise OptionError("MqttOptions", "port", f"must be from 1 to 65535, not {self.port}")
        if self.keepalive < 5:
            raise OptionError("MqttOptions", "keepalive", f"must be at least 5 seconds, not {self.keepalive}")
        if not 0 < self.state_rate <= 100:
            raise OptionError("MqttOptions", "state_rate", f"must be above 0 and at most 100 a second, not {self.state_rate:g}")
        if self.queue_size < 8:
            raise OptionError("MqttOptions", "queue_size", f"must be at least 8, not {self.queue_size}")
        for name in ("prefix", "discovery_prefix"):
            value = getattr(self, name)
            if not value or any(c in value for c in "#+") or value.startswith("/") or value.endswith("/"):
                raise OptionError("MqttOptions", name, f"{value!r} is not a topic prefix (no #, +, leading or trailing /)")
        if self.cafile is not None and not os.path.isfile(self.cafile):
            raise OptionError("MqttOptions", "cafile", f"{self.cafile} is not a file")
        self.client_id = self.client_id or f"emotion-engine-{slug(socket.gethostname(), 'host')}"
        self.node_id = slug(self.node_id or self.client_id)

    @classmethod
    def from_url(cls, text: str, env: Mapping[str, str] | None = None, **fields) -> "MqttOptions":
        """`HOST`, `HOST:PORT`, `[IPv6]:PORT`, or `mqtt[s]://[user[:password]@]host[:port]`; the password from
        `env[PASSWORD_ENV]` (os.environ by default) when the URL has none."""
        env = os.environ if env is None else env
        s = str(text).strip()
        if "://" not in s:
            s = "mqtt://" + s
        parts = urlsplit(s)
        if parts.scheme.lower() not in SCHEMES:
            raise OptionError("MqttOptions", "host", f"{redact(text)}: the scheme must be mqtt:// or mqtts://, not {parts.scheme}://")
        if parts.path not in ("", "/") or parts.query:
            raise OptionError("MqttOptions", "host", f"{redact(text)}: a broker address has no path or query")
        try:
            port = parts.port
        except ValueError:
            raise OptionError("MqttOptions", "port", f"{redact(text)}: the port must be a number from 1 to 65535") from None
        tls, _ = SCHEMES[parts.scheme.lower()]
        password = unquote(parts.password) if parts.password is not None else env.get(PASSWORD_ENV) or None
        return cls(host=parts.hostname or "", port=port, tls=tls or fields.pop("tls", False),
                   username=unquote(parts.username) if parts.username else fields.pop("username", None),
                   password=password, **fields)

    def describe(self) -> str:
        """The broker as a user may see it: the user name but never the password."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        user = f"{self.username}@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{host}:{self.port}"
