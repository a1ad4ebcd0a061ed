"""MQTT: the engine's events on the home network (Home Assistant, Node-RED, ...). options (the broker and the
topics), messages (topics, payloads, Home Assistant discovery), publisher (the paho-mqtt connection on threads
of its own, behind a bounded queue), sink (MqttSink: frame records in, messages out). docs/mqtt.md."""
from __future__ import annotations

import importlib

#: public name -> the module that defines it (loaded on first use: paho-mqtt only when asked for)
PUBLIC = {"MqttOptions": "engine.mqtt.options", "MqttSink": "engine.mqtt.sink", "MqttError": "engine.mqtt.publisher",
          "PASSWORD_ENV": "engine.mqtt.options"}
__all__ = sorted(PUBLIC)


def __getattr__(name: str):
    if name in PUBLIC:
        return getattr(importlib.import_module(PUBLIC[name]), name)
    raise AttributeError(f"module 'engine.mqtt' has no attribute {name!r}")
