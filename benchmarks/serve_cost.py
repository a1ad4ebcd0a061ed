#!/usr/bin/env python
"""What the live view (`engine.run --serve`) costs the pipeline: FPS, CPU and RSS with 0, 1 and 4 viewers.

Examples:
  python benchmarks/serve_cost.py                                   # 3 rounds x 2 inputs x 4 settings + a flatness run
  python benchmarks/serve_cost.py --repeats 5 --seconds 8 --flat-frames 10000

Every run is a real `python -m engine.run --no-display --jsonl ... [--serve 127.0.0.1:0]` subprocess on a file
played flat out (the hardest case: a camera gives the pipeline ~30 FPS to keep, a file as many as it can).
Settings: `off` (no --serve), `0 viewers` (--serve, nobody watching), `1 viewer` and `4 viewers`, where a viewer
is what the page opens: one /stream.mjpg reader and one /events reader (threads of this process, on the same
cores: a browser on another machine costs the engine less). FPS is counted from the JSONL lines written during a
fixed window after a warm-up; RSS is the process's VmRSS at the window's end (VmHWM: its peak).

Fair on a busy machine: the settings are interleaved (each round runs every setting once, in a rotated order),
repeated, and each ratio compares a setting with the `off` run of the same round; the 1-minute load average is
recorded per run. Then a flatness run: --serve with a viewer that connects, reads for 2 s and drops, again and
again, over `--flat-frames` frames, RSS sampled all along. And the server's own start-up: importing http.server
and engine.serve.live and binding, in a fresh interpreter, with the RSS it adds.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Sequence


from benchmarks import REPO, RESULTS, SHARED, fmt, load_avg_1m, machine_info, md_table, now_utc, package_versions, rel, write_json, write_text
from engine.core.cliargs import Parser, positive_int
from engine.core.errors import UserError, cli_main

CLIP = SHARED / "media" / "head-pose-face-detection-female-and-male.gif"
SETTINGS = ("off", "0 viewers", "1 viewer", "4 viewers")
VIEWERS = {"off": 0, "0 viewers": 0, "1 viewer": 1, "4 viewers": 4}


def log(msg: str) -> None:
    print(f"serve_cost: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- inputs


def make_640x480(src: Path, out: Path) -> Path:
    """The clip letterboxed into 640x480 (MJPG AVI): the camera size a Pi user typically picks."""
    import cv2
    import numpy as np

    cap = cv2.VideoCapture(str(src))
    fps = cap.get(cv2.CAP_PROP_FPS) or 15.0
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), fps, (640, 480))
    n = 0
    while (got := cap.read())[0]:
        frame = got[1]
        h, w = frame.shape[:2]
        s = min(640 / w, 480 / h)
        nw, nh = round(w * s), round(h * s)
        canvas = np.zeros((480, 640, 3), np.uint8)
        y, x = (480 - nh) // 2, (640 - nw) // 2
        canvas[y:y + nh, x:x + nw] = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_LINEAR)
        writer.write(canvas)
        n += 1
    cap.release()
    writer.release()
    if not n:
        raise UserError(f"cannot read {src}")
    return out


# --------------------------------------------------------------------------- process facts


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


# --------------------------------------------------------------------------- one run


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


# --------------------------------------------------------------------------- report


def summarise(runs: list[dict]) -> dict:
    """Per input and setting: median FPS/RSS/CPU, and the median of per-round ratios to `off`."""
    out: dict = {}
    for inp in sorted({r["input"] for r in runs}):
        mine = [r for r in runs if r["input"] == inp]
        off_by_round = {r["round"]: r for r in mine if r["setting"] == "off"}
        out[inp] = {}
        for setting in SETTINGS:
            rs = [r for r in mine if r["setting"] == setting]
            ratios = [r["fps"] / off_by_round[r["round"]]["fps"] for r in rs if off_by_round.get(r["round"], {}).get("fps")]
            rss_d = [r["rss_mb"] - off_by_round[r["round"]]["rss_mb"] for r in rs if r["round"] in off_by_round]
            out[inp][setting] = {
                "fps_median": round(statistics.median(r["fps"] for r in rs), 1),
                "fps_each": [r["fps"] for r in rs],
                "fps_ratio_to_off_median": round(statistics.median(ratios), 3) if ratios else None,
                "fps_ratio_to_off_each": [round(x, 3) for x in ratios],
                "cpu_pct_median": round(statistics.median(r["cpu_pct"] for r in rs), 1),
                "rss_mb_median": round(statistics.median(r["rss_mb"] for r in rs), 1),
                "rss_mb_vs_off_median": round(statistics.median(rss_d), 1) if rss_d else None,
                "viewer_jpeg_fps_median": round(statistics.median(x for r in rs for x in r["viewer_jpeg_fps"]), 1) if VIEWERS[setting] else None,
                "load_avg_1m": [r["load_avg_1m"] for r in rs],
            }
    return out


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = ["# Live view cost (`engine.run --serve`)", "",
             f"Measured {report['when']} on {m['cpu']} (CPU class **{m['isa_class']}**, {m['cores']} cores), "
             f"1-minute load average {report['load_avg_1m_range'][0]}-{report['load_avg_1m_range'][1]} during the runs "
             f"(a training job shared the cores). Face detector: {', '.join(report['detectors']) or '?'}. "
             f"Command: `{report['command']}`.", "",
             f"Each number is the median of {report['repeats']} interleaved rounds; `x off` is the median of per-round "
             f"ratios to the run without --serve. A viewer = one /stream.mjpg + one /events reader (what the page opens), "
             f"stream capped at {report['stream_fps']} JPEG/s. FPS: the file played flat out, {report['seconds']} s windows.", ""]
    rows = []
    for inp, per in report["summary"].items():
        for setting, s in per.items():
            rows.append([inp, setting, fmt(s["fps_median"]), fmt(s["fps_ratio_to_off_median"], 3), fmt(s["cpu_pct_median"], 0),
                         fmt(s["rss_mb_median"]), fmt(s["rss_mb_vs_off_median"]), fmt(s["viewer_jpeg_fps_median"])])
    lines.append(md_table(["input", "setting", "FPS", "x off", "CPU %", "RSS MB", "RSS vs off", "JPEG/s per viewer"], rows, left=2))
    spread = []
    for inp, per in report["summary"].items():
        each = per["off"]["fps_each"]
        spread.append(f"{inp} {min(each):.0f}-{max(each):.0f} FPS (±{50 * (max(each) - min(each)) / statistics.median(each):.0f}%)")
    lines += ["", "Noise floor: the runs without --serve alone spread " + ", ".join(spread) + " across rounds, on this "
              "busy machine; differences smaller than that are not measurable here."]
    f = report["flatness"] or {}
    lines += [] if not f else ["", f"RSS flatness: {f['frames']} frames in {f['seconds']} s with --serve, a viewer connecting, reading 2 s and "
              f"dropping {f['viewer_cycles']} times: RSS {f['rss_mb_after_10pct']} MB at 10% of the frames, "
              f"{f['rss_mb_min_after_10pct']}-{f['rss_mb_max_after_10pct']} MB from there on, {f['rss_mb_end']} MB at the end; "
              f"slope over the second half {f['rss_slope_mb_per_1000_frames_second_half']} MB per 1000 frames."]
    s = report["server_startup"]
    lines += ["", f"Server start-up (fresh interpreter with engine.run's own imports already loaded): importing "
              f"http.server + engine.serve.live {s['import_ms']} ms, bind and start {s['bind_and_start_ms']} ms, "
              f"+{s['rss_added_mb']} MB RSS (median of 3)."]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="python benchmarks/serve_cost.py", description=__doc__.split("\n\n")[0],
               epilog="Examples:" + __doc__.split("Examples:", 1)[1].split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", default=str(CLIP), help="the clip [the shared 2-face clip]; a 640x480 copy is made from it")
    p.add_argument("--model", help="model directory [the shipped fast model]")
    p.add_argument("--repeats", type=positive_int, default=3, help="interleaved rounds [3]")
    p.add_argument("--seconds", type=float, default=6.0, help="measurement window per run [6]")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds after the first frame (and viewers) before the window [2]")
    p.add_argument("--flat-frames", type=int, default=10_000, help="frames of the RSS flatness run; 0 skips it [10000]")
    p.add_argument("--json", default=str(RESULTS / "serve_cost.json"))
    p.add_argument("--md", default=str(RESULTS / "serve_cost.md"))
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    clip = Path(args.source)
    if not clip.is_file():
        raise UserError(f"--source {clip} does not exist")
    from engine.serve.live import ServeOptions

    info = machine_info()
    with tempfile.TemporaryDirectory(prefix="serve_cost_") as tmpd:
        tmp = Path(tmpd)
        inputs = {"2-face clip": clip, "640x480": make_640x480(clip, tmp / "clip_640x480.avi")}
        startup = server_startup()
        log(f"server start-up: {startup['import_ms']} ms import, {startup['bind_and_start_ms']} ms start, +{startup['rss_added_mb']} MB")
        runs = []
        for rnd in range(args.repeats):
            for name, path in inputs.items():
                order = SETTINGS[rnd % len(SETTINGS):] + SETTINGS[:rnd % len(SETTINGS)]
                for setting in order:
                    r = measure(path, setting, args, tmp, f"r{rnd}")
                    r.update(input=name, round=rnd)
                    runs.append(r)
                    log(f"round {rnd + 1}/{args.repeats} {name:12s} {setting:10s} {r['fps']:6.1f} FPS  {r['cpu_pct']:5.1f}% CPU  "
                        f"{r['rss_mb']:.0f} MB  viewer {r['viewer_jpeg_fps']} JPEG/s  load {r['load_avg_1m']}")
        flat = flatness(inputs["2-face clip"], args, tmp) if args.flat_frames > 0 else None
        if flat:
            log(f"flatness: {flat['frames']} frames, {flat['viewer_cycles']} viewer cycles, RSS {flat['rss_mb_min_after_10pct']}-"
                f"{flat['rss_mb_max_after_10pct']} MB, slope {flat['rss_slope_mb_per_1000_frames_second_half']} MB/1000 frames")
    loads = [r["load_avg_1m"] for r in runs]
    detectors = sorted({r["detector"] for r in runs if r["detector"]})
    report = {
        "when": now_utc(), "command": "python benchmarks/serve_cost.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": info, "packages": package_versions(), "source": rel(str(clip)), "repeats": args.repeats,
        "seconds": args.seconds, "warmup_s": args.warmup, "stream_fps": ServeOptions.stream_fps,
        "load_avg_1m_range": [min(loads), max(loads)], "detectors": detectors, "server_startup": startup,
        "summary": summarise(runs), "flatness": flat, "runs": runs,
    }
    write_json(args.json, report)
    write_text(args.md, markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(main))
