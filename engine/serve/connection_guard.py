"""The live view's defence against connections that never finish asking: pending connections, their caps
and deadlines on the server side, and the byte budget and the cut on the handler side.

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
Request line and headers together get MAX_HEADER_BYTES; past it the answer is a 431 status line.

Apart from engine.serve.http_server (what is asked: token, routes, streams) because none of this knows
what a request means: it only decides which connections get to ask. benchmarks/serve_slowloris.py
measures it under attack.
"""
from __future__ import annotations

import http.client
import select
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

#: Bytes of request line + headers read from a client before it is answered 431: a browser sends ~1 KB,
#: and the standard library alone would read up to 100 headers of 64 KB each (before the token check).
MAX_HEADER_BYTES = 16 * 1024


class GuardedServer(ThreadingHTTPServer):
    """ThreadingHTTPServer with connection caps that a stranger cannot use against the token holder (see the
    module's docstring), quiet errors and a list of live sockets to drop.

    `opts` needs `host`, `port`, `max_clients` (streams of one kind; the caps scale with it) and `timeout_s`
    (each read and send; the header deadline is the shorter of it and HEADER_DEADLINE_S).
    """

    daemon_threads = True  # a stuck client never keeps the process alive
    allow_reuse_address = True
    request_queue_size = 128  # the listen backlog (socketserver's 5 made bursts wait for SYN retries)
    HEADER_DEADLINE_S = 2.5  # request line + headers, all of them, or the connection is cut
    PENDING_MIN_AGE_S = 0.5  # a pending connection this young is not cut to make room
    REAP_EVERY_S = 0.1  # how often the serving thread looks for pending connections past the deadline

    def __init__(self, opts, handler_class: type[BaseHTTPRequestHandler]):
        self.opts = opts  # engine.serve.live.ServeOptions
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
        super().__init__(info[4][:2], handler_class)

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
            if not headers_waiting(sock):
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


def headers_waiting(sock: socket.socket) -> bool:
    """Whether a whole header block sits unread in the kernel for `sock` (its handler has not read it yet):
    such a connection is about to be served, whatever its age. Peeks without blocking or consuming."""
    try:
        if not select.select([sock], [], [], 0)[0]:
            return False
        data = sock.recv(MAX_HEADER_BYTES, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except (OSError, ValueError):
        return False
    return b"\r\n\r\n" in data or b"\n\n" in data


class CappedReader:
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


class GuardedHandler(BaseHTTPRequestHandler):
    """The handler's side of the guard: the read timeout, the header budget (431 past it), and no answer at
    all for a connection the server cut while it was pending. Subclasses add the routes (`do_GET`)."""

    server: GuardedServer

    def setup(self) -> None:
        # The socket timeout bounds each read and send of a stream; the request line and headers have the
        # server's shorter deadline on top (GuardedServer.service_actions cuts a connection that trickles them).
        self.timeout = self.server.opts.timeout_s
        super().setup()
        self.rfile = CappedReader(self.rfile, MAX_HEADER_BYTES)

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
