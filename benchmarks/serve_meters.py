"""What `serve_cost.py` reads while the engine runs: a process's RSS and CPU time from /proc (Linux), the lines
of the JSONL file it is writing (its frames), and a viewer: what one open live-view page asks of the server.
"""
from __future__ import annotations

import http.client
import os
import threading
from pathlib import Path


def proc_status(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (MB) of a process, from /proc (Linux)."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, val = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(val.split()[0]) / 1024
    except OSError:
        pass
    return out


def cpu_ticks(pid: int) -> float:
    """utime + stime of a process in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class LineCounter:
    """Counts the lines of a growing file by reading only what was appended."""

    def __init__(self, path: Path):
        self.path, self.offset, self.lines = path, 0, 0

    def count(self) -> int:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except FileNotFoundError:
            return 0
        self.offset += len(data)
        self.lines += data.count(b"\n")
        return self.lines


# --------------------------------------------------------------------------- viewers


class Viewer:
    """What one open page costs the server: a /stream.mjpg reader and an /events reader."""

    def __init__(self, port: int):
        self.port, self.jpegs, self.events = port, 0, 0
        self._stop = threading.Event()
        self._conns: list[http.client.HTTPConnection] = []
        self._threads = [threading.Thread(target=self._read, args=(path,), daemon=True) for path in ("/stream.mjpg", "/events")]
        for th in self._threads:
            th.start()

    def _read(self, path: str) -> None:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            self._conns.append(conn)
            conn.request("GET", path)
            resp = conn.getresponse()
            if resp.status != 200:
                raise RuntimeError(f"{path}: HTTP {resp.status}")
            while not self._stop.is_set():
                line = resp.readline()
                if not line:
                    return
                if path == "/events":
                    self.events += line.startswith(b"data: ")
                elif line.lower().startswith(b"content-length:"):
                    resp.readline()
                    resp.read(int(line.split(b":")[1]))
                    self.jpegs += 1
        except (OSError, ValueError, http.client.HTTPException):
            pass  # closed by close() or by the engine stopping

    def close(self) -> None:
        self._stop.set()
        for conn in self._conns:
            try:
                if conn.sock is not None:
                    conn.sock.shutdown(2)
            except OSError:
                pass
            conn.close()
