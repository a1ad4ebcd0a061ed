"""The live view: `python -m engine.run --serve [HOST:]PORT`, an HTTP server inside the engine process.

A Raspberry Pi on a shelf has no screen; this lets any browser on the network watch what the camera sees
and what the engine finds, without a second program. Routes:

    /              one self-contained page (inline JS/CSS, nothing fetched from elsewhere: works offline)
    /stream.mjpg   the annotated video, multipart/x-mixed-replace JPEG
    /events        Server-Sent Events: one message per frame, the very object a --jsonl line holds, and an
                   `event: stopped` message (wall-clock time, frames) as the engine stops
    /snapshot.jpg  the newest annotated frame
    /healthz       JSON: uptime, frames, fps, source state, model, detector, viewers
    /favicon.ico   a 16 px icon, the one path served without the token (browsers ask for it without one)

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
but /favicon.ico (`?token=` or `Authorization: Bearer`), compared with `hmac.compare_digest`; a token with
`+` or `&` may be pasted into the address bar as it is (engine.serve.http_server.token_candidates reads the raw
query both ways; only `#` must be written %23); at most `max_clients` video streams and as many event
streams (a page opens one of each), 503 beyond; unknown paths 404; nothing is ever read from disk.
Strangers cannot lock the token holder out (issue #35's slowloris): a connection that has not finished
its headers (so has shown no token) gets 2.5 s for them, and such connections are capped per client
address and in all, the oldest cut to make room for a newcomer; the listen backlog is 128 (see
engine.serve.connection_guard; benchmarks/serve_slowloris.py measures the attack).

Here: the options, the address, the frame state (`_Hub`) and `LiveServer` with its encoder thread. The
HTTP server and handler (auth, routes, client limits) are engine.serve.http_server, which connections may ask
is engine.serve.connection_guard, the MJPEG and event streams engine.serve.streams; the page is engine.serve.page.
"""
from __future__ import annotations

import ipaddress
import json
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from engine.core.errors import UserError
from engine.serve.http_server import Server

#: engine.serve.live's public names
__all__ = ["DEFAULT_PORT", "LiveServer", "ServeOptions", "is_loopback", "parse_address"]

DEFAULT_PORT = 8080


@dataclass
class ServeOptions:
    """What `--serve`, `--serve-token` and `--serve-max-clients` set, plus the tuning a Pi may want.

    Args:
        host: address to bind; 127.0.0.1 (this machine only) unless the user names another.
        port: TCP port; 0 picks a free one (the URL printed at start says which).
        token: when set, every request must carry it (`?token=` or `Authorization: Bearer`); in the URL it
            may be percent-encoded or pasted raw, `+` and `&` included (`#` only as %23).
        max_clients: concurrent video streams, and separately event streams, before 503.
        stream_fps: the most JPEGs a second the video stream gets (a camera gives ~30; a file plays faster
            than any browser shows, and encoding every frame would cost the pipeline its pace).
        jpeg_quality: 0-100 for the stream and snapshot.
        timeout_s: socket timeout: a client that sends nothing, or stops reading, is dropped after it
            (its request line and headers get min(timeout_s, 2.5 s) in all).
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
                from engine.io.overlay import draw

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
    LAST_WORD_S = 0.3  # the most close() waits for event streams to send their 'stopped' message

    def __init__(self, opts: ServeOptions, httpd: Server):
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
        httpd.attach(self)

    @classmethod
    def start(cls, opts: ServeOptions, log: Callable[[str], None] | None = None) -> LiveServer:
        """Bind, start the server and encoder threads, and print the URL (always, even with --quiet:
        with port 0 it is the only way to learn the port).

        Raises:
            UserError: the address cannot be bound (in use, not this machine's, no permission).
        """
        say = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        try:
            httpd = Server(opts, _Hub(opts))
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

    # ---- the pipeline's hooks (see engine.io.outputs.Outputs.handle / idle) ----
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
        """Tell every event stream the engine stopped, then stop serving and drop every connection (blocked
        sends included); returns within ~0.8 s."""
        hub = self.hub
        if hub.closed.is_set():
            return
        hub.close()
        with hub.new_viewer:  # each event stream sends its 'stopped' message as it ends: let them (briefly)
            hub.new_viewer.wait_for(lambda: hub.event_viewers == 0, timeout=self.LAST_WORD_S)
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
