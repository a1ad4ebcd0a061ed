"""The live view: `python -m engine.run --serve [HOST:]PORT`, an HTTP server inside the engine process.

A Raspberry Pi on a shelf has no screen; this lets any browser on the network watch what the camera sees
and what the engine finds, without a second program. Routes:

    /              one self-contained page (inline JS/CSS, nothing fetched from elsewhere: works offline)
    /stream.mjpg   the annotated video, multipart/x-mixed-replace JPEG
    /events        Server-Sent Events: one message per frame, the very object a --jsonl line holds
    /snapshot.jpg  the newest annotated frame
    /healthz       JSON: uptime, frames, fps, source state, model, detector, viewers

Why the standard library's ThreadingHTTPServer: it adds no dependency to a Pi's install, imports in a few
milliseconds and a few MB (benchmarks/serve_cost.py measures both), and a thread per connection is the
right shape for a handful of long-lived streams. picamera2's own MJPEG example is built the same way.

How it keeps the pipeline's pace (the rules the issue sets):
- `LiveServer.write` is all the pipeline thread ever calls: it stores references to the newest frame and
  its JSONL record and returns (microseconds, no encoding, no I/O, never a wait on a viewer).
- One encoder thread turns the newest frame into a JPEG, at most `stream_fps` times a second and only while
  a video stream is open: each frame is encoded once for all viewers, and not at all when nobody watches.
  When the pipeline drew no overlay (no window or video file wants pixels), it is drawn here, on a copy.
- Each viewer's thread sends the newest JPEG, then waits for a newer one: a slow viewer skips frames and
  never builds a queue (its socket's send buffer is kept small for the same reason).
- Every socket has a timeout; request handling runs in daemon threads, and its failures are swallowed:
  garbage, a client that vanishes mid-stream or one that never speaks cost one thread for a while, and
  neither crash nor stall the pipeline. `close()` unblocks every connection, so a stop takes well under 2 s.

Security: 127.0.0.1 unless a host is given; a token (`--serve-token`), when set, is required on every path
(`?token=` or `Authorization: Bearer`), compared with `hmac.compare_digest`; at most `max_clients` video
streams and as many event streams (a page opens one of each), 503 beyond; unknown paths 404; nothing is
ever read from disk.
"""
from __future__ import annotations

import hmac
import ipaddress
import json
import socket
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import parse_qs, urlsplit

import numpy as np

from engine.errors import UserError

DEFAULT_PORT = 8080


@dataclass
class ServeOptions:
    """What `--serve`, `--serve-token` and `--serve-max-clients` set, plus the tuning a Pi may want.

    Args:
        host: address to bind; 127.0.0.1 (this machine only) unless the user names another.
        port: TCP port; 0 picks a free one (the URL printed at start says which).
        token: when set, every request must carry it (`?token=` or `Authorization: Bearer`).
        max_clients: concurrent video streams, and separately event streams, before 503.
        stream_fps: the most JPEGs a second the video stream gets (a camera gives ~30; a file plays faster
            than any browser shows, and encoding every frame would cost the pipeline its pace).
        jpeg_quality: 0-100 for the stream and snapshot.
        timeout_s: socket timeout: a client that sends nothing, or stops reading, is dropped after it.
        bars: draw the probability bars on the served video (as --bars does on the window).
    """

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    token: str | None = None
    max_clients: int = 4
    stream_fps: float = 30.0
    jpeg_quality: int = 80
    timeout_s: float = 10.0
    bars: bool = False

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_address(text: str) -> tuple[str, int]:
    """`[HOST:]PORT` (IPv6 as `[::1]:8080`) -> (host, port); a bad value is one sentence (UserError).

    The host is resolved here, so a typo fails before any model loads rather than at bind time.
    """
    text = text.strip()
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "", text
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise UserError(f"--serve {text!r}: write an IPv6 host in brackets, e.g. [::1]:{DEFAULT_PORT}")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise UserError(f"--serve {text!r}: the port must be a number from 0 to 65535 ([HOST:]PORT, e.g. 8080 or 0.0.0.0:8080)")
    host = host or "127.0.0.1"
    try:
        socket.getaddrinfo(host, int(port_text), type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise UserError(f"--serve {text!r}: cannot resolve host {host!r}") from None
    return host, int(port_text)


class _Hub:
    """The newest frame, its JPEG and the recent JSONL records, shared by the pipeline and the viewers.

    Locks are held only to swap references; the slow parts (drawing, encoding, JSON, sending) run outside
    them on the encoder's or a viewer's thread. A new frame wakes nobody: the encoder and the event readers
    look at their own pace (30 and 50 times a second), so a file played at 700 FPS does not cost 700 thread
    wake-ups (and GIL hand-overs) a second per waiting thread.
    """

    EVENTS_KEPT = 256  # an event reader may fall this many frames behind before it skips ahead

    def __init__(self, opts: ServeOptions):
        self.opts = opts
        self.lock = threading.Lock()  # guards the frame, the events and the counters below
        self.new_jpeg = threading.Condition()  # notified when a JPEG is made (and on close)
        self.new_viewer = threading.Condition()  # notified when the number of video viewers changes (and on close)
        self.closed = threading.Event()
        self.frame_seq = 0  # pictures published so far (frames, and the reconnect screens between them)
        self.frames = 0  # frames the pipeline finished
        self._frame: tuple | None = None  # (image, faces, ms, annotated) of the newest frame
        self.jpeg_seq = 0  # frame_seq the JPEG below was made from
        self.jpeg: bytes | None = None
        self.events: deque = deque(maxlen=self.EVENTS_KEPT)  # [seq, event dict, encoded bytes or None]
        self.video_viewers = 0
        self.event_viewers = 0
        self._encode_lock = threading.Lock()  # one encode at a time (the encoder thread or a snapshot)
        self._times: deque = deque(maxlen=64)  # finish times of the newest frames: the FPS shown
        self.t_start = time.monotonic()
        self.t_last_frame: float | None = None
        self.state = "starting"  # starting | running | reconnecting | ended

    # ---- the pipeline's side: no waiting, no work ----
    def write(self, image: np.ndarray, faces, ms: dict, event: dict, annotated: bool) -> None:
        now = time.monotonic()
        self._times.append(now)
        with self.lock:
            self.frame_seq += 1
            self.frames += 1
            self._frame = (image, faces, ms, annotated)
            self.events.append([self.frame_seq, event, None])
            self.t_last_frame = now
            self.state = "running"

    def idle(self, image: np.ndarray) -> None:
        """The camera is lost: viewers get the last frame with the pipeline's status line drawn on it."""
        with self.lock:
            self.frame_seq += 1
            self._frame = (image, [], {}, True)
            self.state = "reconnecting"

    # ---- the encoder's and viewers' side ----
    def encode_newest(self) -> tuple[int, bytes | None]:
        """JPEG of the newest frame, made at most once per frame whoever asks."""
        with self._encode_lock:
            with self.lock:
                seq, frame = self.frame_seq, self._frame
                if frame is None or seq == self.jpeg_seq:
                    return self.jpeg_seq, self.jpeg
            image, faces, ms, annotated = frame
            if not annotated:
                from engine.overlay import draw

                image = draw(image.copy(), faces, self.fps or None, ms, self.opts.bars)
            import cv2

            ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(self.opts.jpeg_quality)])
            with self.new_jpeg:
                if ok:
                    self.jpeg_seq, self.jpeg = seq, buf.tobytes()
                self.new_jpeg.notify_all()
                return self.jpeg_seq, self.jpeg

    def close(self) -> None:
        self.closed.set()
        self.state = "ended"
        for cond in (self.new_jpeg, self.new_viewer):
            with cond:
                cond.notify_all()

    def events_after(self, seq: int) -> tuple[int, list[bytes]]:
        """SSE messages of the frames after `seq` still kept (each serialised once, whoever reads it)."""
        with self.lock:
            pending = [item for item in self.events if item[0] > seq]
        out = []
        for item in pending:
            if item[2] is None:
                item[2] = b"data: " + json.dumps(item[1], separators=(",", ":")).encode() + b"\n\n"
            out.append(item[2])
        return (pending[-1][0] if pending else seq), out

    @property
    def fps(self) -> float:
        """Frames per second over the newest 64 frames (bursts average out); 0 once frames stop coming."""
        times = list(self._times)
        if len(times) < 2 or time.monotonic() - times[-1] > 2.0:
            return 0.0
        return (len(times) - 1) / max(times[-1] - times[0], 1e-6)


class LiveServer:
    """The HTTP server and its encoder thread; the pipeline sees only `write` and `idle`.

    `LiveServer.start(opts)` binds (a busy port or an address this machine lacks is one sentence) and
    starts serving at once, so a browser opened during start-up sees the page say "starting".
    `describe(...)` adds what the page shows about the run once the models are loaded.
    """

    POLL_S = 0.1  # how often serve_forever looks at its stop flag: close() returns within this

    def __init__(self, opts: ServeOptions, httpd: "_Server"):
        self.opts = opts
        self.hub = httpd.hub
        self._httpd = httpd
        self.info: dict = {}
        self.url = _url(opts.host, httpd.server_address[1])
        self.port = httpd.server_address[1]
        self._threads = [
            threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": self.POLL_S}, name="serve", daemon=True),
            threading.Thread(target=self._encoder, name="serve-encoder", daemon=True),
        ]
        httpd.live = self

    @classmethod
    def start(cls, opts: ServeOptions, log: Callable[[str], None] | None = None) -> "LiveServer":
        """Bind, start the server and encoder threads, and print the URL (always, even with --quiet:
        with port 0 it is the only way to learn the port).

        Raises:
            UserError: the address cannot be bound (in use, not this machine's, no permission).
        """
        say = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        try:
            httpd = _Server(opts)
        except OSError as exc:
            raise UserError(f"--serve cannot listen on {_hostport(opts.host, opts.port)}: {exc.strerror or exc}") from None
        self = cls(opts, httpd)
        for th in self._threads:
            th.start()
        print(f"live view: {self.url}{'?token=...' if opts.token else ''}", file=sys.stderr, flush=True)
        if not opts.loopback:
            say(f"warning: --serve {_hostport(opts.host, self.port)} is reachable from other machines"
                + ("" if opts.token else "; anyone who can reach it can watch the camera: pass --serve-token TOKEN"))
        return self

    def describe(self, **info) -> None:
        """What the page shows about this run: source, live, model, detector, labels."""
        self.info = {**self.info, **info}

    # ---- the pipeline's hooks (see engine.outputs.Outputs.handle / idle) ----
    def write(self, image: np.ndarray, faces, ms: dict, event: dict, annotated: bool) -> None:
        """A finished frame (`annotated`: the pipeline drew the overlay already) and its JSONL record."""
        self.hub.write(image, faces, ms, event, annotated)

    def idle(self, image: np.ndarray) -> None:
        self.hub.idle(image)

    def _encoder(self) -> None:
        hub, period = self.hub, 1.0 / max(self.opts.stream_fps, 0.1)
        while not hub.closed.is_set():
            with hub.new_viewer:  # nobody watching: sleep until somebody does
                if not hub.new_viewer.wait_for(lambda: hub.closed.is_set() or hub.video_viewers > 0, timeout=1.0):
                    continue
            t0 = time.monotonic()
            try:
                hub.encode_newest()  # returns at once when there is no new frame
            except Exception as exc:  # a frame that cannot be encoded must not end the live view
                print(f"warning: live view: cannot encode a frame: {exc}", file=sys.stderr)
            hub.closed.wait(max(0.0, period - (time.monotonic() - t0)))

    def close(self) -> None:
        """Stop serving and drop every connection (blocked sends included); returns within ~0.5 s."""
        hub = self.hub
        if hub.closed.is_set():
            return
        hub.close()
        self._httpd.shutdown()  # serve_forever returns within POLL_S
        self._httpd.server_close()
        self._httpd.drop_connections()
        deadline = time.monotonic() + 0.5
        for th in [*self._threads, *self._httpd.stream_threads()]:
            th.join(timeout=max(0.0, deadline - time.monotonic()))


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _url(host: str, port: int) -> str:
    shown = host if host not in ("0.0.0.0", "::", "") else socket.gethostname()
    return f"http://{_hostport(shown, port)}/"


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer with a connection cap, quiet errors and a list of live sockets to drop."""

    daemon_threads = True  # a stuck client never keeps the process alive
    allow_reuse_address = True

    def __init__(self, opts: ServeOptions):
        self.opts = opts
        self.hub = _Hub(opts)
        self.live: LiveServer | None = None
        self._conns: dict[socket.socket, threading.Thread] = {}
        self._conns_lock = threading.Lock()
        #: connections of any kind (page, snapshot, streams, silent ones) before new ones are refused
        self.max_connections = 4 * opts.max_clients + 16
        info = socket.getaddrinfo(opts.host, opts.port, type=socket.SOCK_STREAM)[0]
        self.address_family = info[0]
        super().__init__(info[4][:2], _Handler)

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


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"  # one request per connection: no idle keep-alive connections to manage
    server_version = "emotion-engine"
    sys_version = ""

    def setup(self) -> None:
        self.timeout = self.server.opts.timeout_s  # socket timeout for reads and sends
        super().setup()
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
        self._reply(200, PAGE, "text/html; charset=utf-8", {
            "Content-Security-Policy": "default-src 'none'; img-src 'self'; connect-src 'self'; "
                                       "style-src 'unsafe-inline'; script-src 'unsafe-inline'"})

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
            "labels": info.get("labels"), "colours": _CSS_COLOURS,
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


def _css(bgr: tuple[int, int, int]) -> str:
    b, g, r = bgr
    return f"rgb({r},{g},{b})"


def _colours() -> dict[str, str]:
    from engine.overlay import COLOURS

    return {k: _css(v) for k, v in COLOURS.items()}


_CSS_COLOURS = _colours()

# The page: one file, no external resource (the CSP above forbids any), so it works on a LAN with no internet.
PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>emotion-engine live</title>
<style>
 body{margin:0;font:14px/1.4 system-ui,sans-serif;background:#111;color:#ddd}
 header{padding:8px 12px;background:#1c1c1c;display:flex;gap:18px;flex-wrap:wrap;align-items:baseline}
 header b{color:#fff} .k{color:#888}
 #banner{display:none;padding:8px 12px;background:#a02020;color:#fff;font-weight:bold}
 main{display:flex;flex-wrap:wrap;gap:12px;padding:12px}
 #video{width:720px;max-width:100%;background:#000;min-height:180px}
 #side{flex:1;min-width:260px}
 table{border-collapse:collapse;width:100%} td,th{padding:3px 6px;text-align:left;border-bottom:1px solid #2a2a2a}
 .sw{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:6px}
 canvas{width:100%;height:auto;background:#181818;margin-top:8px} #ms{font-family:monospace;font-size:12px;color:#aaa}
</style></head><body>
<div id="banner"></div>
<header><b>emotion-engine</b><span><span class="k">source</span> <span id="source">-</span></span>
<span><span class="k">model</span> <span id="model">-</span></span><span><span class="k">detector</span> <span id="detector">-</span></span>
<span><span class="k">FPS</span> <span id="fps">-</span></span><span id="ms"></span></header>
<main><img id="video" alt="live video">
<div id="side"><table><thead><tr><th>face</th><th>emotion</th><th>confidence</th></tr></thead><tbody id="faces"></tbody></table>
<canvas id="timeline" width="640" height="200"></canvas><div class="k">emotion per face, last 60 s</div></div></main>
<script>
"use strict";
const tok = new URLSearchParams(location.search).get("token");
const q = tok ? "?token=" + encodeURIComponent(tok) : "";
const $ = id => document.getElementById(id);
let colours = {}, lastEvent = 0, engineState = "starting", streamDown = false;
const tracks = new Map();  // face id -> [[t0, t1, emotion], ...] on the engine's timeline
let tNow = 0, shown = 0, shownAt = performance.now(), rate = 0, engineFps = 0;

function banner() {
  const b = $("banner"); let text = "";
  if (streamDown) text = "connection to the engine lost - retrying";
  else if (engineState === "reconnecting") text = "camera lost - reopening it";
  else if (engineState === "ended") text = "the engine has stopped";
  b.textContent = text; b.style.display = text ? "block" : "none";
}
function startVideo() { $("video").src = "stream.mjpg" + q + (q ? "&" : "?") + "t=" + Date.now(); }
$("video").onerror = () => setTimeout(startVideo, 2000);
startVideo();

const es = new EventSource("events" + q);
es.onopen = () => { streamDown = false; banner(); };
es.onerror = () => { streamDown = true; banner(); };
es.onmessage = m => {
  const ev = JSON.parse(m.data); lastEvent = performance.now(); shown++;
  tNow = ev.t;
  for (const f of ev.faces) {
    let segs = tracks.get(f.id); if (!segs) { segs = []; tracks.set(f.id, segs); }
    const last = segs[segs.length - 1];
    if (last && last[2] === f.emotion && ev.t - last[1] < 1) last[1] = ev.t; else segs.push([ev.t, ev.t, f.emotion]);
  }
  latest = ev;
};
let latest = null;

function render() {
  const now = performance.now();
  if (now - shownAt >= 1000) { rate = shown * 1000 / (now - shownAt); shown = 0; shownAt = now; }
  if (latest) {
    const ev = latest; latest = null;
    $("faces").innerHTML = [...ev.faces].sort((a, b) => a.id - b.id).map(f => `<tr><td>#${f.id}</td><td><span class="sw" style="background:${colours[f.emotion] || "#0f0"}"></span>` +
      `<span class="emotion">${f.emotion}</span></td><td>${(f.confidence * 100).toFixed(0)}%</td></tr>`).join("") ||
      '<tr><td colspan="3" class="k">no face</td></tr>';
    $("ms").textContent = Object.entries(ev.ms).map(([k, v]) => `${k} ${v.toFixed(1)}`).join("  ") + " ms";
    $("fps").textContent = (rate || engineFps).toFixed(1);
  }
  drawTimeline();
}
function drawTimeline() {
  const c = $("timeline"), g = c.getContext("2d"), W = c.width, H = c.height, left = 40, span = 60;
  g.clearRect(0, 0, W, H);
  for (const [id, segs] of tracks) {  // forget what scrolled out
    while (segs.length && segs[0][1] < tNow - span) segs.shift();
    if (!segs.length) tracks.delete(id);
  }
  const ids = [...tracks.keys()].sort((a, b) => a - b), row = Math.min(28, (H - 16) / Math.max(1, ids.length));
  g.font = "12px sans-serif"; g.fillStyle = "#666";
  for (let s = 0; s <= span; s += 10) { const x = left + (W - left) * (1 - s / span); g.fillRect(x, 0, 1, H - 14); g.fillText(s ? `-${s}s` : "now", x - (s ? 12 : 24), H - 2); }
  ids.forEach((id, i) => {
    const y = 4 + i * row; g.fillStyle = "#ccc"; g.fillText("#" + id, 4, y + row / 2 + 4);
    for (const [t0, t1, emo] of tracks.get(id)) {
      const x0 = left + (W - left) * (1 - (tNow - t0) / span), x1 = left + (W - left) * (1 - (tNow - t1) / span);
      g.fillStyle = colours[emo] || "#0f0"; g.fillRect(Math.max(left, x0), y, Math.max(2, x1 - Math.max(left, x0)), row - 4);
    }
  });
}
setInterval(render, 100);

async function health() {
  try {
    const r = await fetch("healthz" + q, {cache: "no-store"}); const h = await r.json();
    colours = h.colours || colours; engineState = h.source.state;
    $("source").textContent = (h.source.name || "-") + (h.source.live ? " (live)" : "");
    $("model").textContent = (h.model || "-") + (h.backend ? " on " + h.backend : "");
    $("detector").textContent = h.detector || "-";
    engineFps = h.fps;
    if (!lastEvent || performance.now() - lastEvent > 2000) $("fps").textContent = h.fps.toFixed(1);
  } catch (e) { engineState = "ended"; }
  banner();
}
health(); setInterval(health, 1000);
</script></body></html>
""".encode()
