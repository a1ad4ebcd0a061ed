"""One engine process per measurement, for `serve_cost.py`: a real `python -m engine.run` on a file played flat
out, with or without --serve and 0-4 viewers (`measure`), the RSS flatness run with viewers coming and going
(`flatness`), and the server's own start-up in a fresh interpreter (`server_startup`).
"""
from __future__ import annotations

import http.client
import json
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Sequence

from benchmarks import REPO, load_avg_1m
from benchmarks.serve_meters import LineCounter, Viewer, cpu_ticks, proc_status
from engine.core.errors import UserError

SETTINGS = ("off", "0 viewers", "1 viewer", "4 viewers")
VIEWERS = {"off": 0, "0 viewers": 0, "1 viewer": 1, "4 viewers": 4}


def spawn(source: Path, model: str | None, serve: bool, jsonl: Path, extra: Sequence[str] = ()) -> tuple[subprocess.Popen, int | None]:
    cmd = [sys.executable, "-m", "engine.run", "--source", str(source), "--loop", "100000", "--no-display", "--quiet",
           "--jsonl", str(jsonl), *(["--model", model] if model else []), *(["--serve", "127.0.0.1:0"] if serve else []), *extra]
    err = open(jsonl.with_suffix(".err"), "w+")
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=err)
    port = None
    counter = LineCounter(jsonl)
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            err.seek(0)
            raise UserError(f"engine.run exited {proc.returncode}: {err.read()[-500:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise UserError("engine.run wrote no frame within 120 s")
        if serve and port is None:
            err.seek(0)
            m = re.search(r"live view: http://127\.0\.0\.1:(\d+)/", err.read())
            port = int(m.group(1)) if m else None
        if counter.count() > 0 and (port or not serve):
            return proc, port
        time.sleep(0.05)


def stop(proc: subprocess.Popen) -> float:
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return round(time.monotonic() - t0, 3)


def measure(source: Path, setting: str, args, tmp: Path, tag: str) -> dict:
    jsonl = tmp / f"{tag}.jsonl"
    load = load_avg_1m()
    proc, port = spawn(source, args.model, setting != "off", jsonl)
    detector = None
    if port:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/healthz")
        detector = json.loads(conn.getresponse().read()).get("detector")
        conn.close()
    viewers = [Viewer(port) for _ in range(VIEWERS[setting])]
    try:
        time.sleep(args.warmup)
        counter = LineCounter(jsonl)
        f0, c0, t0 = counter.count(), cpu_ticks(proc.pid), time.monotonic()
        j0 = [(v.jpegs, v.events) for v in viewers]
        time.sleep(args.seconds)
        f1, c1, t1 = counter.count(), cpu_ticks(proc.pid), time.monotonic()
        mem = proc_status(proc.pid)
        got = [(v.jpegs - a, v.events - b) for v, (a, b) in zip(viewers, j0)]
    finally:
        for v in viewers:
            v.close()
        stop_s = stop(proc)
        jsonl.unlink(missing_ok=True)
    dt = t1 - t0
    return {
        "setting": setting, "fps": round((f1 - f0) / dt, 1), "cpu_pct": round(100 * (c1 - c0) / dt, 1),
        "rss_mb": round(mem.get("VmRSS", float("nan")), 1), "peak_rss_mb": round(mem.get("VmHWM", float("nan")), 1),
        "viewer_jpeg_fps": [round(j / dt, 1) for j, _ in got], "viewer_events_per_s": [round(e / dt, 1) for _, e in got],
        "load_avg_1m": load, "stop_s": stop_s, "detector": detector,
    }


def flatness(source: Path, args, tmp: Path) -> dict:
    """--serve over `--flat-frames` frames with a viewer connecting, reading ~2 s and dropping, again and again."""
    jsonl = tmp / "flat.jsonl"
    proc, port = spawn(source, args.model, True, jsonl, ["--max-frames", str(args.flat_frames)])
    counter = LineCounter(jsonl)
    samples, cycles = [], 0
    stop_flag = threading.Event()

    def churn():
        nonlocal cycles
        while not stop_flag.is_set():
            v = Viewer(port)
            stop_flag.wait(2.0)
            v.close()
            cycles += 1
            stop_flag.wait(1.0)

    th = threading.Thread(target=churn, daemon=True)
    th.start()
    t0 = time.monotonic()
    try:
        while proc.poll() is None:
            frames = counter.count()
            mem = proc_status(proc.pid)
            if mem:
                samples.append((round(time.monotonic() - t0, 2), frames, round(mem["VmRSS"], 1)))
            time.sleep(0.5)
    finally:
        stop_flag.set()
        th.join(5)
        if proc.poll() is None:
            stop(proc)
    frames = counter.count()
    jsonl.unlink(missing_ok=True)
    after = [s for s in samples if s[1] >= 0.1 * frames] or samples
    half = [s for s in samples if s[1] >= 0.5 * frames] or samples
    slope = None
    if len(half) >= 3:
        xs, ys = [s[1] for s in half], [s[2] for s in half]
        mx, my = statistics.fmean(xs), statistics.fmean(ys)
        den = sum((x - mx) ** 2 for x in xs)
        slope = round(1000 * sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den, 3) if den else None
    return {
        "frames": frames, "seconds": round(time.monotonic() - t0, 1), "viewer_cycles": cycles,
        "rss_mb_after_10pct": after[0][2] if after else None, "rss_mb_end": samples[-1][2] if samples else None,
        "rss_mb_min_after_10pct": min(s[2] for s in after) if after else None,
        "rss_mb_max_after_10pct": max(s[2] for s in after) if after else None,
        "rss_slope_mb_per_1000_frames_second_half": slope, "samples": samples,
    }


def server_startup() -> dict:
    """Import http.server + engine.serve.live and bind, in a fresh interpreter that already holds engine.run's imports
    (as the engine process does): the ms and MB the server itself adds."""
    code = r"""
import json, time, resource
def rss():
    return int(open('/proc/self/status').read().split('VmRSS:')[1].split()[0]) / 1024
import engine.run  # what every engine process has loaded anyway: not the server's cost
r0, t0 = rss(), time.perf_counter()
import http.server
from engine.serve.live import LiveServer, ServeOptions
t1 = time.perf_counter()
live = LiveServer.start(ServeOptions(port=0), log=lambda m: None)
t2 = time.perf_counter()
r1 = rss()
live.close()
print(json.dumps({"import_ms": round((t1 - t0) * 1000, 1), "bind_and_start_ms": round((t2 - t1) * 1000, 1),
                  "rss_added_mb": round(r1 - r0, 1)}))
"""
    runs = []
    for _ in range(3):
        out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
        if out.returncode:
            raise UserError(f"server start-up check failed: {out.stderr[-300:]}")
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]} | {"runs": runs}
