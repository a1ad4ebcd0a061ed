"""The connection to the broker, off the pipeline's threads: `Publisher.publish()` only appends to a bounded
queue (never blocks, never waits for the network); a `mqtt-publish` thread hands messages to paho-mqtt, whose
own network thread talks to the broker, reconnecting with back-off (1 s doubling to 30 s) when it goes away.

- While the broker is away, messages wait in the queue; past `queue_size` the oldest is dropped and counted.
- Availability: the last will is `offline` (retained), sent by the broker when the connection drops;
  every (re)connect publishes `online`, then every retained message sent so far (discovery configs, the
  newest state), so a broker that restarted without persistence has them again. Home Assistant's birth
  message (`<discovery>/status` = online) gets the retained messages again too.
- close(): `offline`, a short flush (at most `flush_s`), disconnect.
"""
from __future__ import annotations

import collections
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable

from engine.core.errors import UserError
from engine.mqtt.options import MqttOptions

RECONNECT_DELAY = (1, 30)  # seconds: paho's back-off, from the first to the longest wait


class MqttError(UserError):
    """No connection to the broker at start (a wrong host, a closed port, refused credentials, no answer)."""


def paho():
    try:
        import paho.mqtt.client as mqtt
    except ImportError:
        raise MqttError("MQTT needs paho-mqtt: pip install 'emotion-engine[mqtt]' (or pip install 'paho-mqtt>=2.0')") from None
    return mqtt


@dataclass
class PublishStats:
    queued: int = 0  # handed to publish()
    sent: int = 0  # handed to paho while connected
    delivered: int = 0  # acknowledged by the broker (QoS 1)
    dropped: int = 0  # the queue was full (the broker away or too slow): the oldest went
    disconnects: int = 0
    reconnects: int = 0


class Publisher:
    def __init__(self, opts: MqttOptions, will_topic: str, warn: Callable[[str], None] | None = None):
        self.opts, self.will_topic = opts, will_topic
        self.warn = warn or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.stats = PublishStats()
        self._queue: collections.deque = collections.deque()
        self._retained: dict[str, str] = {}
        self._cond = threading.Condition()
        self._connected = False
        self._stopping = False
        self._first = threading.Event()
        self._refusal: str | None = None
        self._thread: threading.Thread | None = None
        self._pending: set[int] = set()  # mids of queued messages paho has not had acknowledged yet
        self._acked: set[int] = set()  # mids acknowledged before _run saw them (and paho's own: online, re-sends)
        self.client = self._client()

    def _client(self):
        mqtt, o = paho(), self.opts
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=o.client_id, clean_session=True)
        if o.username is not None:
            client.username_pw_set(o.username, o.password)
        if o.tls:
            client.tls_set(ca_certs=o.cafile)
        client.will_set(self.will_topic, "offline", qos=1, retain=True)
        client.reconnect_delay_set(*RECONNECT_DELAY)
        client.max_queued_messages_set(self.opts.queue_size)
        client.connect_timeout = o.connect_timeout
        if os.environ.get("EMOTION_MQTT_DEBUG"):  # paho's own log (every packet) on stderr
            import logging

            logging.basicConfig(level=logging.DEBUG, format="mqtt-debug: %(message)s")
            client.enable_logger()
        client.on_connect, client.on_disconnect = self._on_connect, self._on_disconnect
        client.on_publish, client.on_message = self._on_publish, self._on_message
        return client

    # ----------------------------------------------------------------------------------------- start / stop

    def start(self) -> "Publisher":
        """Connect (at most `connect_timeout` seconds); MqttError, in one sentence, when that fails."""
        o, where = self.opts, self.opts.describe()
        try:
            self.client.connect(o.host, o.port, keepalive=o.keepalive)
        except socket.gaierror as exc:
            raise MqttError(f"MQTT broker {where}: unknown host ({exc.strerror or exc})") from None
        except (OSError, ValueError) as exc:
            raise MqttError(f"MQTT broker {where}: cannot connect ({getattr(exc, 'strerror', None) or exc})") from None
        self.client.loop_start()
        if not self._first.wait(o.connect_timeout) or self._refusal is not None:
            self.client.loop_stop()
            self.client.disconnect()
            reason = self._refusal or f"no answer within {o.connect_timeout:g} s"
            raise MqttError(f"MQTT broker {where} refused the connection: {reason}")
        self._thread = threading.Thread(target=self._run, name="mqtt-publish", daemon=True)
        self._thread.start()
        return self

    def close(self, flush_s: float = 2.0) -> None:
        """`offline`, then what is still queued (for at most `flush_s`), then disconnect."""
        self.publish(self.will_topic, "offline", retain=True)
        deadline = time.monotonic() + flush_s
        with self._cond:
            while self._queue and self._connected and time.monotonic() < deadline:
                self._cond.wait(0.05)
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(1.0)
        while self._pending and self._connected and time.monotonic() < deadline:  # acknowledged (QoS 1)
            time.sleep(0.01)
        self.client.disconnect()
        self.client.loop_stop()

    # ----------------------------------------------------------------------------------------- the queue

    def publish(self, topic: str, payload: str, retain: bool = False) -> None:
        """Queue one message; never blocks. A retained one is also sent again after every reconnect."""
        with self._cond:
            if retain:
                self._retained[topic] = payload
            if len(self._queue) >= self.opts.queue_size:
                self._queue.popleft()
                self.stats.dropped += 1
            self._queue.append((topic, payload, retain))
            self.stats.queued += 1
            self._cond.notify()

    def _run(self) -> None:
        mqtt = paho()
        while True:
            with self._cond:
                while not self._stopping and not (self._queue and self._connected):
                    self._cond.wait()
                if self._stopping:
                    return
                topic, payload, retain = self._queue.popleft()
                self._cond.notify_all()
            info = self.client.publish(topic, payload, qos=1, retain=retain)
            with self._cond:
                if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
                    self.stats.dropped += 1
                    continue
                self.stats.sent += 1
                if info.mid in self._acked:
                    self._acked.discard(info.mid)
                    self.stats.delivered += 1
                else:
                    self._pending.add(info.mid)

    # ----------------------------------------------------------------------------------------- paho's thread

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            if not self._first.is_set():
                self._refusal = str(reason_code)
                self._first.set()
            return
        client.publish(self.will_topic, "online", qos=1, retain=True)
        self._resend_retained(client)
        client.subscribe(f"{self.opts.discovery_prefix}/status", qos=1)
        with self._cond:
            if self._first.is_set():
                if self._connected:  # a drop paho reconnected from without an on_disconnect: count it all the same
                    self.stats.disconnects += 1
                self.stats.reconnects += 1
                self.warn(f"mqtt: reconnected to {self.opts.describe()}")
            self._connected = True
            self._cond.notify_all()
        self._first.set()

    def _resend_retained(self, client) -> None:
        with self._cond:
            retained = [(t, p) for t, p in self._retained.items() if t != self.will_topic]
        for topic, payload in retained:
            client.publish(topic, payload, qos=1, retain=True)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        with self._cond:
            was, self._connected = self._connected, False
            stopping = self._stopping
            if was and not stopping:
                self.stats.disconnects += 1
        if was and not stopping:
            self.warn(f"mqtt: lost {self.opts.describe()} ({reason_code}); reconnecting with back-off, "
                      f"up to {self.opts.queue_size} messages wait (the oldest are dropped past that)")

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._cond:
            if mid in self._pending:
                self._pending.discard(mid)
                self.stats.delivered += 1
            else:
                self._acked.add(mid)

    def _on_message(self, client, userdata, message) -> None:
        if message.payload == b"online":  # Home Assistant (re)started: give it the configs and the state again
            self._resend_retained(client)
