"""What the engine publishes: the topics, the JSON of each message, and Home Assistant's discovery configs.
docs/mqtt.md documents every one of them; the face keys are the JSONL record's (`Face.to_json()`: id, box,
score, emotion, confidence, probs) with the frame's `frame` and `t`, as in a JSONL line.

    <prefix>/<node>/availability            online | offline (retained; offline is also the last will)
    <prefix>/<node>/<source>/state          faces present, dominant emotion, per-emotion counts, FPS (retained)
    <prefix>/<node>/<source>/face/appear    a tracked face's first frame
    <prefix>/<node>/<source>/face/emotion   its stable emotion changed (when on_emotion_change fires)
    <prefix>/<node>/<source>/face/leave     the tracker let it go
    <discovery>/<component>/<node>/<object>/config   Home Assistant discovery (retained)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from engine.core.types import Face
from engine.mqtt.options import MqttOptions, slug

FACE_EVENTS = ("appear", "emotion", "leave")


@dataclass(frozen=True)
class Topics:
    availability: str
    state: str
    face: str  # + "/appear", "/emotion", "/leave"

    @classmethod
    def of(cls, opts: MqttOptions, source: str) -> "Topics":
        base = f"{opts.prefix}/{opts.node_id}"
        return cls(f"{base}/availability", f"{base}/{slug(source, 'source')}/state", f"{base}/{slug(source, 'source')}/face")


def face_message(event: str, face: Face, frame: int, t: float, previous: str | None = None,
                 seen_s: float | None = None) -> dict:
    """One face event: the face's JSONL keys, the frame's `frame` and `t`, and what happened."""
    msg = {"event": event, "frame": frame, "t": round(t, 4), **face.to_json()}
    if event == "emotion":
        msg["previous"] = previous
    if event == "leave":
        msg["seen_s"] = round(seen_s or 0.0, 3)
    return msg


def state_message(frame: int, t: float, faces: Sequence[Face], labels: Sequence[str], fps: float, source: str) -> dict:
    """The state of one source: who is there and what they feel. `emotion`/`confidence`: the most confident
    face's stable emotion (null with nobody there); `counts`: faces per stable emotion, every label present."""
    counts = {lab: 0 for lab in labels}
    for f in faces:
        counts[f.emotion] = counts.get(f.emotion, 0) + 1
    top = max(faces, key=lambda f: f.confidence, default=None)
    return {"source": source, "frame": frame, "t": round(t, 4), "present": len(faces),
            "emotion": top.emotion if top else None, "confidence": round(top.confidence, 4) if top else None,
            "counts": counts, "fps": round(fps, 2), "faces": [f.to_json() for f in faces]}


#: Home Assistant entities of one source: (component, object suffix, name, value template, extra keys)
ENTITIES = (
    ("sensor", "faces", "Faces present", "{{ value_json.present }}",
     {"state_class": "measurement", "icon": "mdi:account-group"}),
    ("sensor", "emotion", "Dominant emotion", "{{ value_json.emotion or 'none' }}",
     {"icon": "mdi:emoticon-outline", "json_attributes_template": "{{ value_json.counts | tojson }}"}),
    ("sensor", "confidence", "Emotion confidence", "{{ ((value_json.confidence or 0) * 100) | round(0) }}",
     {"unit_of_measurement": "%", "state_class": "measurement", "icon": "mdi:percent"}),
    ("sensor", "fps", "FPS", "{{ value_json.fps }}",
     {"unit_of_measurement": "fps", "state_class": "measurement", "icon": "mdi:speedometer", "entity_category": "diagnostic"}),
    ("binary_sensor", "present", "Someone present", "{{ 'ON' if value_json.present > 0 else 'OFF' }}",
     {"device_class": "occupancy", "payload_on": "ON", "payload_off": "OFF"}),
)


def discovery_messages(opts: MqttOptions, source: str, topics: Topics, version: str = "") -> list[tuple[str, dict]]:
    """(topic, config) of every Home Assistant discovery message for one source: one device per engine
    (its node id), four sensors and a binary sensor read from the retained state topic."""
    node, src = opts.node_id, slug(source, "source")
    device = {"identifiers": [node], "name": f"Emotion engine {node}", "manufacturer": "emotion-engine",
              "model": "python -m engine.run", **({"sw_version": version} if version else {})}
    out = []
    for component, suffix, name, template, extra in ENTITIES:
        object_id = f"{src}_{suffix}"
        config = {"name": f"{name} ({source})", "unique_id": f"{node}_{object_id}", "object_id": f"{node}_{object_id}",
                  "state_topic": topics.state, "value_template": template,
                  "availability": [{"topic": topics.availability}], "payload_available": "online",
                  "payload_not_available": "offline", "device": device,
                  "origin": {"name": "emotion-engine"}, **extra}
        if "json_attributes_template" in config:
            config["json_attributes_topic"] = topics.state
        out.append((f"{opts.discovery_prefix}/{component}/{node}/{object_id}/config", config))
    return out
