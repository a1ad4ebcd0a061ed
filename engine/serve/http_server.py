"""The live view's HTTP side (engine.serve.live): the server and the request handler (token check, routes,
the per-kind stream limit, headers).

`Server(opts, hub)` serves what `hub` (engine.serve.live's frame state) holds; `server.attach(live)` names the
`engine.serve.live.LiveServer` whose `info` /healthz reports. Which connections get to ask at all (pending
connections, their caps and deadlines, the header budget) is engine.serve.connection_guard; the two streams'
loops are engine.serve.streams. A client's failure is swallowed (no traceback on the engine's stderr);
`drop_connections()` unblocks every connection so a stop takes well under 2 s. Nothing is ever read from disk.
"""
from __future__ import annotations

import hmac
import json
import re
import socket
import time
from collections.abc import Callable, Iterator
from urllib.parse import parse_qs, unquote, urlsplit

from engine.serve.connection_guard import GuardedHandler, GuardedServer
from engine.serve.page import CSS_COLOURS, ICON, PAGE, PAGE_CSP
from engine.serve.streams import claim_viewer, event_messages, mjpeg_parts, release_viewer


class Server(GuardedServer):
    """The guarded server (engine.serve.connection_guard) that serves `hub` with `Handler`."""

    def __init__(self, opts, hub):
        self.hub = hub  # engine.serve.live's frame state: the newest JPEG, the recent events, the viewer counts
        self.live = None  # the engine.serve.live.LiveServer (see attach): /healthz shows its `info`
        super().__init__(opts, Handler)

    def attach(self, live) -> None:
        """Report `live.info` (an engine.serve.live.LiveServer: source, model, detector) on /healthz.

        LiveServer calls this once, as it is built around this server: it needs the bound server first,
        so `live` cannot be a constructor argument. Without it /healthz reports no run facts.
        """
        self.live = live


def token_candidates(query: str) -> list[str]:
    """The ways `?token=` in a raw query string may be meant, each compared with the token.

    A token typed or pasted into the address bar is not URL-encoded: `a+b&c` arrives as `token=a+b&c`,
    which standard decoding reads as "a b" (with a separate `c` parameter). So besides the decoded value,
    the raw text after `token=` counts, percent-decoded but with `+` kept, both up to the next `&` and to
    the end of the query (the page puts its own parameters first, so a raw `&` in the token still works).
    Only `#` cannot be pasted raw (the browser never sends what follows it): write it as %23.
    """
    out = [(parse_qs(query).get("token") or [""])[0]]
    m = re.search(r"(?:^|&)token=(.*)", query)
    if m:
        raw = m.group(1)
        out += [unquote(raw.split("&", 1)[0]), unquote(raw)]
    return out


class Handler(GuardedHandler):
    """What a request gets once its headers are in: the token check, the routes and their replies (the page,
    /healthz, a snapshot) with the headers every answer carries, and the two streams under their cap."""

    server: Server
    protocol_version = "HTTP/1.0"  # one request per connection: no idle keep-alive connections to manage
    server_version = "emotion-engine"
    sys_version = ""

    def log_message(self, format, *args) -> None:
        """No access log on the engine's stderr (its lines are the user's progress report)."""

    # ---- routing ----
    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/favicon.ico":  # before the token check: browsers ask for it without ?token=
            return self._reply(200, ICON, "image/png", {"Cache-Control": "max-age=86400"})
        if not self._authorised(url.query):
            return self._reply(401, b"unauthorised: pass ?token=... or an Authorization: Bearer header\n", "text/plain",
                               {"WWW-Authenticate": 'Bearer realm="emotion-engine"'})
        route = {"/": self._page, "/index.html": self._page, "/stream.mjpg": self._stream, "/events": self._events,
                 "/snapshot.jpg": self._snapshot, "/healthz": self._health}.get(url.path)
        if route is None:
            return self._reply(404, b"not found\n", "text/plain")
        route()

    def do_HEAD(self) -> None:
        self._reply(405, b"", "text/plain", {"Allow": "GET"})

    def _authorised(self, query: str) -> bool:
        token = self.server.opts.token
        if not token:
            return True
        auth = self.headers.get("Authorization", "")
        given = [auth[7:].strip()] if auth[:7].lower() == "bearer " else token_candidates(query)
        want = token.encode("utf-8")
        # every candidate is compared (no early exit): the time taken does not say which one came close
        return sum(hmac.compare_digest(g.encode("utf-8", "replace"), want) for g in given) > 0

    def _reply(self, code: int, body: bytes, ctype: str, headers: dict | None = None) -> None:
        try:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self._common_headers(headers)
            self.wfile.write(body)
        except OSError:
            pass

    def _common_headers(self, extra: dict | None = None) -> None:
        extra = dict(extra or {})
        self.send_header("Cache-Control", extra.pop("Cache-Control", "no-store"))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")  # the token may be in the URL
        for k, v in extra.items():
            self.send_header(k, v)
        self.end_headers()

    # ---- routes ----
    def _page(self) -> None:
        self._reply(200, PAGE, "text/html; charset=utf-8", {"Content-Security-Policy": PAGE_CSP})

    def _health(self) -> None:
        hub, info = self.server.hub, self.server.live.info if self.server.live else {}
        now = time.monotonic()
        body = {
            "ok": hub.state in ("starting", "running"),
            "uptime_s": round(now - hub.t_start, 2),
            "frames": hub.frames,
            "fps": round(hub.fps, 2),
            "source": {"name": info.get("source"), "live": info.get("live"), "state": hub.state,
                       "last_frame_s_ago": None if hub.t_last_frame is None else round(now - hub.t_last_frame, 2)},
            "model": info.get("model"), "backend": info.get("backend"), "detector": info.get("detector"),
            "labels": info.get("labels"), "colours": CSS_COLOURS,
            "viewers": {"video": hub.video_viewers, "events": hub.event_viewers, "max": self.server.opts.max_clients},
        }
        self._reply(200, json.dumps(body).encode(), "application/json")

    def _snapshot(self) -> None:
        _, jpeg = self.server.hub.encode_newest()
        if jpeg is None:
            return self._reply(503, b"no frame yet\n", "text/plain", {"Retry-After": "1"})
        self._reply(200, jpeg, "image/jpeg")

    def _busy(self) -> None:
        self._reply(503, f"at most {self.server.opts.max_clients} streams of this kind at once (--serve-max-clients)\n".encode(),
                    "text/plain", {"Retry-After": "5"})

    def _stream(self) -> None:
        # A small send buffer: a slow viewer's backlog stays a frame or two, never seconds of video.
        self._send_stream("video_viewers", "multipart/x-mixed-replace; boundary=frame", mjpeg_parts, 128 * 1024)

    def _events(self) -> None:
        self._send_stream("event_viewers", "text/event-stream", event_messages)

    def _send_stream(self, kind: str, ctype: str, parts: Callable[..., Iterator[bytes]], sndbuf: int | None = None) -> None:
        """Claim a viewer slot of `kind` (503 when full), then write what `parts(hub)` yields until it ends."""
        hub = self.server.hub
        if not claim_viewer(hub, kind, self.server.opts.max_clients):
            return self._busy()
        try:
            if sndbuf:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self._common_headers()
            for chunk in parts(hub):
                self.wfile.write(chunk)
        except OSError:  # the viewer went away, stalled past the timeout, or the server is closing
            pass
        finally:
            release_viewer(hub, kind)
