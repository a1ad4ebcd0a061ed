"""The live view's two endless answers: the MJPEG video (/stream.mjpg) and the server-sent events (/events),
and the per-kind cap on how many of each run at once.

Why apart from the request handler (engine.serve.http_server): a stream is a loop over the frame state
(engine.serve.live's hub: its conditions, sequence numbers and `closed` event) that lasts as long as the
viewer stays, while the handler only decides what a request gets. Each stream here is a generator of the
bytes to send; the handler writes them and owns the socket, its headers and its errors.
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterator

#: batch a fast file's frames into one send: ~50 writes a second, not 700
EVENT_FLUSH_S = 0.02
#: a comment line after this long without a message: proxies and browsers see the stream alive
EVENT_IDLE_S = 5


def claim_viewer(hub, kind: str, max_clients: int) -> bool:
    """Count one more viewer of `kind` ("video_viewers" or "event_viewers"); False when `max_clients` watch."""
    with hub.new_viewer:
        if getattr(hub, kind) >= max_clients:
            return False
        setattr(hub, kind, getattr(hub, kind) + 1)
        hub.new_viewer.notify_all()  # wakes the encoder when the first viewer arrives
        return True


def release_viewer(hub, kind: str) -> None:
    with hub.new_viewer:
        setattr(hub, kind, getattr(hub, kind) - 1)
        hub.new_viewer.notify_all()  # LiveServer.close waits for the event streams' last word


def mjpeg_parts(hub) -> Iterator[bytes]:
    """Each new JPEG the encoder makes, as one multipart part, until the hub closes."""
    sent = 0
    while not hub.closed.is_set():
        with hub.new_jpeg:
            if not hub.new_jpeg.wait_for(lambda: hub.closed.is_set() or hub.jpeg_seq > sent, timeout=1.0):
                continue
            sent, jpeg = hub.jpeg_seq, hub.jpeg
        if jpeg is None:
            continue
        yield b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg) + jpeg + b"\r\n"


def event_messages(hub, flush_s: float = EVENT_FLUSH_S) -> Iterator[bytes]:
    """The retry hint, then the frames' events from the newest on (batched every `flush_s`), a comment line
    when idle, and `event: stopped` as the hub closes."""
    yield b"retry: 2000\n\n"
    with hub.lock:
        seq = hub.events[-1][0] - 1 if hub.events else 0  # start with the newest frame
    last_beat = time.monotonic()
    while not hub.closed.is_set():
        seq, messages = hub.events_after(seq)
        if messages:
            yield b"".join(messages)
            last_beat = time.monotonic()
        elif time.monotonic() - last_beat > EVENT_IDLE_S:
            yield b": idle\n\n"
            last_beat = time.monotonic()
        hub.closed.wait(flush_s)
    yield stopped_event(hub)


def stopped_event(hub) -> bytes:
    """The event stream's last message, sent as the engine stops: `event: stopped` with the wall-clock time
    and the frames done. Without it a page cannot tell a stopped engine from a network blip and says
    "connection lost - retrying" forever; with it the page says "the engine has stopped (at 14:02:11)"."""
    body = json.dumps({"time": round(time.time(), 3), "frames": hub.frames}, separators=(",", ":"))
    return b"event: stopped\ndata: " + body.encode() + b"\n\n"
