"""The live view's HTTP side (engine.serve): the server with its connection cap, and the request handler
(token check, routes, the per-kind stream limit, headers).

`Server(opts, hub)` serves what `hub` (engine.serve's frame state) holds; `server.attach(live)` names the
`engine.serve.LiveServer` whose `info` /healthz reports. Every socket has a timeout and a header deadline;
a client's failure is swallowed (no traceback on the engine's stderr); `drop_connections()` unblocks every
connection so a stop takes well under 2 s. Nothing is ever read from disk.
"""
from __future__ import annotations

import hmac
import http.client
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from engine.serve_page import CSS_COLOURS, PAGE, PAGE_CSP


class Server(ThreadingHTTPServer):
    """ThreadingHTTPServer with a connection cap, quiet errors and a list of live sockets to drop."""

    daemon_threads = True  # a stuck client never keeps the process alive
    allow_reuse_address = True

    def __init__(self, opts, hub):
        self.opts = opts  # engine.serve.ServeOptions
        self.hub = hub  # engine.serve's frame state: the newest JPEG, the recent events, the viewer counts
        self.live = None  # the engine.serve.LiveServer (see attach): /healthz shows its `info`
        self._conns: dict[socket.socket, threading.Thread] = {}
        self._conns_lock = threading.Lock()
        #: connections of any kind (page, snapshot, streams, silent ones) before new ones are refused
        self.max_connections = 4 * opts.max_clients + 16
        info = socket.getaddrinfo(opts.host, opts.port, type=socket.SOCK_STREAM)[0]
        self.address_family = info[0]
        super().__init__(info[4][:2], Handler)

    def attach(self, live) -> None:
        """Report `live.info` (an engine.serve.LiveServer: source, model, detector) on /healthz.

        LiveServer calls this once, as it is built around this server: it needs the bound server first,
        so `live` cannot be a constructor argument. Without it /healthz reports no run facts.
        """
        self.live = live

    def verify_request(self, request, client_address) -> bool:
        with self._conns_lock:
            if len(self._conns) >= self.max_connections:
                return False
            self._conns[request] = threading.current_thread()
        return True

    def process_request_thread(self, request, client_address):
        with self._conns_lock:
            if request in self._conns:
                self._conns[request] = threading.current_thread()
        super().process_request_thread(request, client_address)

    def shutdown_request(self, request) -> None:
        with self._conns_lock:
            self._conns.pop(request, None)
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


#: Bytes of request line + headers read from a client before it is answered 431: a browser sends ~1 KB,
#: and the standard library alone would read up to 100 headers of 64 KB each (before the token check).
MAX_HEADER_BYTES = 16 * 1024


class _CappedReader:
    """The connection's read side, with a byte budget for the request line and headers (the only
    things read: GET requests have no body). Past the budget a read raises LineTooLong, which
    BaseHTTPRequestHandler answers with 431 and a closed connection."""

    def __init__(self, raw, budget: int):
        self._raw = raw
        self._left = budget

    def readline(self, limit: int = -1) -> bytes:
        if self._left <= 0:
            raise http.client.LineTooLong(f"request headers over {MAX_HEADER_BYTES} bytes")
        line = self._raw.readline(self._left if limit < 0 else min(limit, self._left))
        self._left -= len(line)
        return line

    def __getattr__(self, name):  # read, close, ...: the real file's
        return getattr(self._raw, name)


class Handler(BaseHTTPRequestHandler):
    server: Server
    protocol_version = "HTTP/1.0"  # one request per connection: no idle keep-alive connections to manage
    server_version = "emotion-engine"
    sys_version = ""

    def setup(self) -> None:
        self.timeout = self.server.opts.timeout_s  # socket timeout for reads and sends
        super().setup()
        self.rfile = _CappedReader(self.rfile, MAX_HEADER_BYTES)
        # The socket timeout bounds each read, not the request: a client trickling a header byte every few
        # seconds would hold a connection slot forever (and enough of them would lock everyone out, token
        # holder included). The request line and headers get one deadline; past it the connection is cut.
        self._header_timer = threading.Timer(self.server.opts.timeout_s, self._headers_too_slow)
        self._header_timer.daemon = True
        self._header_timer.start()

    def _headers_too_slow(self) -> None:
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def parse_request(self) -> bool:
        try:
            return super().parse_request()  # reads the headers
        finally:
            self._header_timer.cancel()

    def finish(self) -> None:
        self._header_timer.cancel()
        super().finish()

    def log_message(self, format, *args) -> None:  # noqa: A002 - the base class's name
        """No access log on the engine's stderr (its lines are the user's progress report)."""

    # ---- routing ----
    def do_GET(self) -> None:  # noqa: N802 - http.server's spelling
        url = urlsplit(self.path)
        if not self._authorised(url.query):
            return self._reply(401, b"unauthorised: pass ?token=... or an Authorization: Bearer header\n", "text/plain",
                               {"WWW-Authenticate": 'Bearer realm="emotion-engine"'})
        route = {"/": self._page, "/index.html": self._page, "/stream.mjpg": self._stream, "/events": self._events,
                 "/snapshot.jpg": self._snapshot, "/healthz": self._health}.get(url.path)
        if route is None:
            return self._reply(404, b"not found\n", "text/plain")
        route()

    def do_HEAD(self) -> None:  # noqa: N802
        self._reply(405, b"", "text/plain", {"Allow": "GET"})

    def _authorised(self, query: str) -> bool:
        token = self.server.opts.token
        if not token:
            return True
        given = (parse_qs(query).get("token") or [""])[0]
        auth = self.headers.get("Authorization", "")
        if auth[:7].lower() == "bearer ":
            given = auth[7:].strip()
        return hmac.compare_digest(given.encode("utf-8", "replace"), token.encode("utf-8"))

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
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")  # the token may be in the URL
        for k, v in (extra or {}).items():
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
        except OSError:
            pass
        finally:
            self._release("event_viewers")
