"""`MqttSink`: frame records in, MQTT messages out (engine.mqtt.messages says which). Usable on its own:

    from engine import EmotionRecognizer, EngineOptions, RunningMode
    from engine.mqtt import MqttOptions, MqttSink        # pip install 'emotion-engine[mqtt]'

    with EmotionRecognizer.create(EngineOptions(running_mode=RunningMode.LIVE)) as rec, \\
         MqttSink.connect(MqttOptions.from_url("mqtt://pi.local"), source="kitchen", labels=rec.labels) as mqtt:
        while ...:
            mqtt.write(rec.process(frame, timestamp_ms=ms))

`write()` runs on the caller's thread and costs a dict walk over the frame's faces: the messages are queued
for the publisher's threads (engine.mqtt.publisher), never sent from here.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from engine.core.types import Face, FrameRecord
from engine.mqtt.messages import Topics, discovery_messages, face_message, state_message
from engine.mqtt.options import MqttOptions
from engine.mqtt.publisher import MqttError, Publisher, PublishStats

__all__ = ["MqttError", "MqttOptions", "MqttSink"]
#: frames a face may be missing before it has left: the tracker's own limit (TrackerOptions.max_missed = 10) + 1,
#: so "leave" is the moment its track (and its id) is gone
LEAVE_AFTER_FRAMES = 11


@dataclass
class _Seen:
    face: Face
    first_t: float
    last_t: float
    missed: int = 0


class MqttSink:
    def __init__(self, options: MqttOptions, publisher: Publisher, source: str = "camera",
                 labels: Sequence[str] = (), stills: bool = False, log: Callable[[str], None] | None = None):
        self.options, self.publisher = options, publisher
        self.source, self.labels, self.stills = source, list(labels), stills
        self.log = log or (lambda _msg: None)
        self.topics = Topics.of(options, source)
        self._seen: dict[int, _Seen] = {}
        self._period = 1.0 / options.state_rate
        self._last_state: float | None = None
        self._frames_since, self._fps = 0, 0.0
        self._last: FrameRecord | None = None
        self.closed = False

    @classmethod
    def connect(cls, options: MqttOptions, source: str = "camera", labels: Sequence[str] = (), stills: bool = False,
                log: Callable[[str], None] | None = None, warn: Callable[[str], None] | None = None,
                version: str = "") -> "MqttSink":
        """Connect (at most `options.connect_timeout` s) and queue the discovery configs. Raises MqttError
        (one sentence) when the broker cannot be reached or refuses the client."""
        publisher = Publisher(options, Topics.of(options, source).availability, warn=warn).start()
        self = cls(options, publisher, source, labels, stills, log)
        if options.discovery:
            for topic, config in discovery_messages(options, source, self.topics, version):
                publisher.publish(topic, json.dumps(config), retain=True)
        self.log(f"mqtt: connected to {options.describe()}, topics {options.prefix}/{options.node_id}/..."
                 + (f", Home Assistant discovery under {options.discovery_prefix}/" if options.discovery else ""))
        return self

    @property
    def stats(self) -> PublishStats:
        return self.publisher.stats

    def write(self, record: FrameRecord, event: dict | None = None) -> None:
        """One finished frame: face events now, the state at most `state_rate` times a second."""
        if self.stills:  # unrelated photos: every photo's faces are new (ids restart at #1 per photo)
            self._leave_all(record.index, record.t)
        present = set()
        for face in record.faces:
            present.add(face.id)
            seen = self._seen.get(face.id)
            if seen is None:
                self._seen[face.id] = _Seen(face, record.t, record.t)
                self._face("appear", face, record)
                self._face("emotion", face, record, previous=None)  # as on_emotion_change: old None
                continue
            if face.emotion != seen.face.emotion:
                self._face("emotion", face, record, previous=seen.face.emotion)
            seen.face, seen.last_t, seen.missed = face, record.t, 0
        for fid in [fid for fid in self._seen if fid not in present]:
            seen = self._seen[fid]
            seen.missed += 1
            if seen.missed >= LEAVE_AFTER_FRAMES:
                self._leave(fid, record.index, record.t)
        self._last = record
        self._frames_since += 1
        now = time.monotonic()
        if self._last_state is None or now - self._last_state >= self._period:
            self._state(now)

    def _face(self, event: str, face: Face, record: FrameRecord, previous: str | None = None) -> None:
        msg = face_message(event, face, record.index, record.t, previous=previous)
        self.publisher.publish(f"{self.topics.face}/{event}", json.dumps(msg))

    def _leave(self, fid: int, frame: int, t: float) -> None:
        seen = self._seen.pop(fid)
        msg = face_message("leave", seen.face, frame, t, seen_s=seen.last_t - seen.first_t)
        self.publisher.publish(f"{self.topics.face}/leave", json.dumps(msg))

    def _leave_all(self, frame: int, t: float) -> None:
        for fid in list(self._seen):
            self._leave(fid, frame, t)

    def _state(self, now: float) -> None:
        if self._last_state is not None and now > self._last_state:
            self._fps = self._frames_since / (now - self._last_state)
        self._last_state, self._frames_since = now, 0
        rec = self._last
        faces = rec.faces if rec is not None else []
        msg = state_message(rec.index if rec else 0, rec.t if rec else 0.0, faces, self.labels, self._fps, self.source)
        self.publisher.publish(self.topics.state, json.dumps(msg), retain=True)

    def close(self, flush_s: float = 2.0) -> PublishStats:
        """Every face still there leaves, the newest state goes out, then `offline`; the counts say what was
        delivered and dropped."""
        if self.closed:
            return self.stats
        self.closed = True
        last = self._last
        if last is not None:
            self._leave_all(last.index, last.t)
            self._last = FrameRecord(last.index, last.t)  # the final state: nobody
            self._state(time.monotonic())
        self.publisher.close(flush_s)
        return self.stats

    def summary(self) -> str:
        s = self.stats
        return (f"mqtt: {s.queued} messages queued for {self.options.describe()}, {s.delivered} delivered, "
                f"{s.dropped} dropped, {s.disconnects} disconnect(s), {s.reconnects} reconnect(s)")

    def __enter__(self) -> "MqttSink":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
