"""The live view's HTTP side (engine.serve.live): the server with its connection cap, and the request handler
(token check, routes, the per-kind stream limit, headers).

`Server(opts, hub)` serves what `hub` (engine.serve.live's frame state) holds; `server.attach(live)` names the
`engine.serve.live.LiveServer` whose `info` /healthz reports. Every socket has a timeout and a header deadline;
a client's failure is swallowed (no traceback on the engine's stderr); `drop_connections()` unblocks every
connection so a stop takes well under 2 s. Nothing is ever read from disk.
"""
from __future__ import annotations

import hmac
import http.client
import json
import re
import select
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

from engine.serve.page import CSS_COLOURS, ICON, PAGE, PAGE_CSP


class Server(ThreadingHTTPServer):
    """ThreadingHTTPServer with connection caps that a stranger cannot use against the token holder, quiet
    errors and a list of live sockets to drop.

    Why (issue #35): a thread per connection and one cap for all of them let 32 slow sockets that never
    finish their headers fill every slot, token holder locked out. Now a connection is *pending* until its
    request line and headers are in (nobody has shown the token before that), and pending ones are cheap to
    lose: they get HEADER_DEADLINE_S in all (a browser sends its ~1 KB in one packet), at most
    `max_pending_per_host` per client address and `max_pending` in all; a newcomer past either cap cuts the
    oldest pending connection (of its own address, else of the address holding the most) instead of being
    refused. A connection younger than PENDING_MIN_AGE_S, or whose whole header block already waits in the
    kernel, is never cut: that is the token holder's request in flight, not a slow one. Only
    `max_connections` (threads, in all) refuses, and strangers alone cannot reach it while they are capped
    at `max_pending`. The listen backlog is 128, not 5: a burst of connects is queued, not stalled 1 s.
    """

    daemon_threads = True  # a stuck client never keeps the process alive
    allow_reuse_address = True
    request_queue_size = 128  # the listen backlog (socketserver's 5 made bursts wait for SYN retries)
    HEADER_DEADLINE_S = 2.5  # request line + headers, all of them, or the connection is cut
    PENDING_MIN_AGE_S = 0.5  # a pending connection this young is not cut to make room
    REAP_EVERY_S = 0.1  # how often the serving thread looks for pending connections past the deadline

    def __init__(self, opts, hub):
        self.opts = opts  # engine.serve.live.ServeOptions
        self.hub = hub  # engine.serve.live's frame state: the newest JPEG, the recent events, the viewer counts
        self.live = None  # the engine.serve.live.LiveServer (see attach): /healthz shows its `info`
        self._conns: dict[socket.socket, threading.Thread] = {}
        self._pending: dict[socket.socket, tuple[str, float]] = {}  # still sending headers: (address, accepted at)
        self._conns_lock = threading.Lock()
        self._reaped_at = 0.0
        #: connections still sending their headers (no token seen yet) before the oldest is cut for a newcomer
        self.max_pending = 4 * opts.max_clients + 16
        self.max_pending_per_host = max(4, self.max_pending // 2)
        #: connections of any kind (page, snapshot, streams, pending ones) before new ones are refused
        self.max_connections = 8 * self.max_pending
        self.header_deadline_s = min(self.HEADER_DEADLINE_S, opts.timeout_s)
        info = socket.getaddrinfo(opts.host, opts.port, type=socket.SOCK_STREAM)[0]
        self.address_family = info[0]
        super().__init__(info[4][:2], Handler)

    def attach(self, live) -> None:
        """Report `live.info` (an engine.serve.live.LiveServer: source, model, detector) on /healthz.

        LiveServer calls this once, as it is built around this server: it needs the bound server first,
        so `live` cannot be a constructor argument. Without it /healthz reports no run facts.
        """
        self.live = live

    def verify_request(self, request, client_address) -> bool:
        now = time.monotonic()
        with self._conns_lock:
            if len(self._conns) >= self.max_connections:
                return False
            self._make_room(client_address[0], now)
            self._conns[request] = threading.current_thread()
            self._pending[request] = (client_address[0], now)
        return True

    def _make_room(self, host: str, now: float) -> None:
        """Cut one pending connection if the newcomer from `host` would pass a pending cap (lock held)."""
        mine = [(t, s) for s, (h, t) in self._pending.items() if h == host]
        if len(mine) >= self.max_pending_per_host:
            self._cut_oldest(mine, now)
        elif len(self._pending) >= self.max_pending:
            counts: dict[str, int] = {}
            for h, _ in self._pending.values():
                counts[h] = counts.get(h, 0) + 1
            busiest = max(counts, key=counts.get)
            self._cut_oldest([(t, s) for s, (h, t) in self._pending.items() if h == busiest], now)

    def _cut_oldest(self, candidates: list, now: float) -> None:
        for t, sock in sorted(candidates, key=lambda c: c[0]):
            if now - t < self.PENDING_MIN_AGE_S:
                return  # all the others are younger still
            if not _headers_waiting(sock):
                self._cut(sock)
                return

    def _cut(self, sock: socket.socket) -> None:
        """Drop a pending connection (lock held): its thread's read ends and it answers nothing."""
        self._pending.pop(sock, None)
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def headers_done(self, sock: socket.socket) -> bool:
        """The handler read its request line and headers: no longer pending. False if it was cut meanwhile."""
        with self._conns_lock:
            return self._pending.pop(sock, None) is not None

    def service_actions(self) -> None:
        """Cut pending connections past the header deadline (serve_forever calls this every loop)."""
        now = time.monotonic()
        if now - self._reaped_at < self.REAP_EVERY_S:
            return
        self._reaped_at = now
        with self._conns_lock:
            for sock in [s for s, (_, t) in self._pending.items() if now - t > self.header_deadline_s]:
                self._cut(sock)

    def process_request_thread(self, request, client_address):
        with self._conns_lock:
            if request in self._conns:
                self._conns[request] = threading.current_thread()
        super().process_request_thread(request, client_address)

    def shutdown_request(self, request) -> None:
        with self._conns_lock:
            self._conns.pop(request, None)
            self._pending.pop(request, None)
        super().shutdown_request(request)

    def handle_error(self, request, client_address) -> None:
        """A client's failure is the client's: no traceback on the engine's stderr."""

    def stream_threads(self) -> list[threading.Thread]:
        with self._conns_lock:
            return [th for th in self._conns.values() if th is not threading.current_thread()]

    def drop_connections(self) -> None:
        with self._conns_lock:
            socks = list(self._conns)
        for sock in socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in send/recv on it
            except OSError:
                pass


def _headers_waiting(sock: socket.socket) -> bool:
    """Whether a whole header block sits unread in the kernel for `sock` (its handler has not read it yet):
    such a connection is about to be served, whatever its age. Peeks without blocking or consuming."""
    try:
        if not select.select([sock], [], [], 0)[0]:
            return False
        data = sock.recv(MAX_HEADER_BYTES, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except (OSError, ValueError):
        return False
    return b"\r\n\r\n" in data or b"\n\n" in data


#: Bytes of request line + headers read from a client before it is answered 431: a browser sends ~1 KB,
#: and the standard library alone would read up to 100 headers of 64 KB each (before the token check).
MAX_HEADER_BYTES = 16 * 1024


class _CappedReader:
    """The connection's read side, with a byte budget for the request line and headers (the only
    things read: GET requests have no body). A line that reaches the budget unfinished raises
    LineTooLong, which the handler answers with a 431 status line and a closed connection (before, a
    request line cut at the budget was read as an HTTP/0.9 request and answered without a status line)."""

    def __init__(self, raw, budget: int):
        self._raw = raw
        self._left = budget
        self.over = False  # the budget ran out: the handler answered 431

    def readline(self, limit: int = -1) -> bytes:
        if self._left > 0:
            line = self._raw.readline(self._left if limit < 0 else min(limit, self._left))
            self._left -= len(line)
            if self._left > 0 or line.endswith(b"\n"):
                return line
        self.over = True
        raise http.client.LineTooLong(f"request headers over {MAX_HEADER_BYTES} bytes")

    def __getattr__(self, name):  # read, close, ...: the real file's
        return getattr(self._raw, name)


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


class Handler(BaseHTTPRequestHandler):
    server: Server
    protocol_version = "HTTP/1.0"  # one request per connection: no idle keep-alive connections to manage
    server_version = "emotion-engine"
    sys_version = ""

    def setup(self) -> None:
        # The socket timeout bounds each read and send of a stream; the request line and headers have the
        # server's shorter deadline on top (Server.service_actions cuts a connection that trickles them).
        self.timeout = self.server.opts.timeout_s
        super().setup()
        self.rfile = _CappedReader(self.rfile, MAX_HEADER_BYTES)

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except http.client.LineTooLong:  # the request line itself passed the budget (a 100 KB ?token=...)
            self.requestline, self.request_version, self.command = "", "HTTP/1.0", ""
            self.close_connection = True
            if self.server.headers_done(self.connection):
                self.send_error(431, "Request line too long", f"request line over {MAX_HEADER_BYTES} bytes")
                self._drain()

    def parse_request(self) -> bool:
        ok = super().parse_request()  # reads the headers; past the budget it answers 431 itself
        if not self.server.headers_done(self.connection):
            return False  # cut while pending (too slow, or room made for a newcomer): answer nothing
        if not ok and self.rfile.over:
            self._drain()
        return ok

    def _drain(self) -> None:
        """After a 431, read (and drop) what the client still sends for up to 0.5 s: closing with unread
        bytes would reset the connection, and a reset can discard the answer before the client reads it."""
        try:
            self.wfile.flush()
            self.connection.settimeout(0.5)
            deadline = time.monotonic() + 0.5
            while time.monotonic() < deadline and self.connection.recv(65536):
                pass
        except OSError:
            pass

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

    def _claim(self, kind: str) -> bool:
        hub = self.server.hub
        with hub.new_viewer:
            if getattr(hub, kind) >= self.server.opts.max_clients:
                return False
            setattr(hub, kind, getattr(hub, kind) + 1)
            hub.new_viewer.notify_all()  # wakes the encoder when the first viewer arrives
            return True

    def _release(self, kind: str) -> None:
        hub = self.server.hub
        with hub.new_viewer:
            setattr(hub, kind, getattr(hub, kind) - 1)
            hub.new_viewer.notify_all()  # LiveServer.close waits for the event streams' last word

    def _busy(self) -> None:
        self._reply(503, f"at most {self.server.opts.max_clients} streams of this kind at once (--serve-max-clients)\n".encode(),
                    "text/plain", {"Retry-After": "5"})

    def _stream(self) -> None:
        if not self._claim("video_viewers"):
            return self._busy()
        hub = self.server.hub
        try:
            # A small send buffer: a slow viewer's backlog stays a frame or two, never seconds of video.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 128 * 1024)
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self._common_headers()
            sent = 0
            while not hub.closed.is_set():
                with hub.new_jpeg:
                    if not hub.new_jpeg.wait_for(lambda: hub.closed.is_set() or hub.jpeg_seq > sent, timeout=1.0):
                        continue
                    sent, jpeg = hub.jpeg_seq, hub.jpeg
                if jpeg is None:
                    continue
                self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg) + jpeg + b"\r\n")
        except OSError:  # the viewer went away, stalled past the timeout, or the server is closing
            pass
        finally:
            self._release("video_viewers")

    EVENT_FLUSH_S = 0.02  # batch a fast file's frames into one send: ~50 writes a second, not 700

    def _events(self) -> None:
        if not self._claim("event_viewers"):
            return self._busy()
        hub = self.server.hub
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self._common_headers()
            self.wfile.write(b"retry: 2000\n\n")
            with hub.lock:
                seq = hub.events[-1][0] - 1 if hub.events else 0  # start with the newest frame
            last_beat = time.monotonic()
            while not hub.closed.is_set():
                seq, messages = hub.events_after(seq)
                if messages:
                    self.wfile.write(b"".join(messages))
                    last_beat = time.monotonic()
                elif time.monotonic() - last_beat > 5:  # a comment line: proxies and browsers see it alive
                    self.wfile.write(b": idle\n\n")
                    last_beat = time.monotonic()
                hub.closed.wait(self.EVENT_FLUSH_S)
            self.wfile.write(stopped_event(hub))
        except OSError:
            pass
        finally:
            self._release("event_viewers")


def stopped_event(hub) -> bytes:
    """The event stream's last message, sent as the engine stops: `event: stopped` with the wall-clock time
    and the frames done. Without it a page cannot tell a stopped engine from a network blip and says
    "connection lost - retrying" forever; with it the page says "the engine has stopped (at 14:02:11)"."""
    body = json.dumps({"time": round(time.time(), 3), "frames": hub.frames}, separators=(",", ":"))
    return b"event: stopped\ndata: " + body.encode() + b"\n\n"
