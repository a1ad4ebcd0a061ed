"""What a batch writes about itself: `summary.csv`, `summary.json`, `index.html`, and its progress bar.

Summary columns, one row per input: input, path, kind, status (ok | failed | not-run | skipped: a
broken symbolic link, kind "link"), error,
duration_s (video seconds), frames, faces (face detections over all frames), tracked_faces,
share_<emotion> (the share of face-time showing each emotion), dominant, and the run-dependent
engine.batch.job.TIMING columns (processing fps, seconds, which worker, its peak and current RSS, whether an earlier
run's complete outputs were reused).
"""
from __future__ import annotations

import csv
import html
import io
import json
import os
import sys
import time
from pathlib import Path
from urllib.parse import quote

from engine.batch.job import TIMING
from engine.io.timeline import clock

BASE_COLUMNS = ("input", "name", "path", "kind", "status", "error", "duration_s", "frames", "faces", "tracked_faces")


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def columns(rows: list[dict]) -> list[str]:
    shares = []
    for row in rows:
        shares += [k for k in row if k.startswith("share_") and k not in shares]
    return [*BASE_COLUMNS, *shares, "dominant", *TIMING]


def totals(rows: list[dict], wall_s: float) -> dict:
    ok = [r for r in rows if r["status"] == "ok"]
    video_s = sum(r.get("duration_s") or 0.0 for r in ok)
    fresh = [r for r in ok if not r.get("reused")]
    fresh_video_s = sum(r.get("duration_s") or 0.0 for r in fresh)
    return {"inputs": sum(r["status"] != "skipped" for r in rows), "ok": len(ok), "failed": sum(r["status"] == "failed" for r in rows),
            "not_run": sum(r["status"] == "not-run" for r in rows), "skipped": sum(r["status"] == "skipped" for r in rows),
            "reused": len(ok) - len(fresh),
            "video_s": round(video_s, 3), "frames": sum(r.get("frames") or 0 for r in ok), "wall_s": round(wall_s, 3),
            "video_s_per_s": round(fresh_video_s / wall_s, 2) if wall_s > 0 else 0.0}


def write_summary(out: Path, rows: list[dict], run: dict) -> None:
    """summary.csv, summary.json and index.html, each written whole under a temp name and renamed."""
    cols = columns(rows)
    buf = io.StringIO()
    table = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    table.writeheader()
    for row in rows:
        table.writerow({c: row.get(c, "") for c in cols})
    _atomic_write(out / "summary.csv", buf.getvalue())
    _atomic_write(out / "summary.json", json.dumps({"run": run, "inputs": rows}, indent=1))
    _atomic_write(out / "index.html", index_html(rows, run))


def index_html(rows: list[dict], run: dict) -> str:
    """One self-contained page (inline style, relative links): opens from disk, moves with the folder."""
    esc = html.escape
    t = run.get("totals", {})
    head = (f"{t.get('ok', 0)} ok, {t.get('failed', 0)} failed, {t.get('not_run', 0)} not run of {t.get('inputs', 0)} inputs; "
            f"{clock(t.get('video_s', 0))} of video, {t.get('frames', 0)} frames; {t.get('wall_s', 0):.1f} s")
    body = []
    for r in rows:
        name = quote(r.get("name") or "")  # a link: '#', '?' and '%' in a file name must not cut it
        links = " ".join(f'<a href="{esc(name)}.{ext}">{ext}</a>' for ext in ("jsonl", "csv", "png")) if r["status"] == "ok" else ""
        shares = ", ".join(f"{k[6:]} {v * 100:.0f}%" for k, v in r.items() if k.startswith("share_") and v and v >= 0.005)
        pic = (f'<a href="{esc(name)}.png"><img loading="lazy" src="{esc(name)}.png" alt="timeline of {esc(r["input"])}"></a>'
               if r["status"] == "ok" else esc(r.get("error", "")))
        body.append(f'<tr class="{esc(r["status"])}"><td>{esc(r["input"])}<br><small>{links}</small></td><td>{esc(r["status"])}</td>'
                    f'<td>{clock(r.get("duration_s") or 0)}</td><td>{r.get("frames", 0)}</td><td>{r.get("tracked_faces", 0)}</td>'
                    f'<td>{esc(r.get("dominant", "") or "")}</td><td><small>{esc(shares)}</small></td><td>{pic}</td></tr>')
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>emotion-engine batch</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 1.5em; }}
table {{ border-collapse: collapse; width: 100%; }}
td, th {{ border-bottom: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }}
tr.failed td, tr.not-run td, tr.skipped td {{ background: #fff0f0; }}
img {{ width: 600px; max-width: 100%; }}
</style></head><body>
<h1>emotion-engine batch</h1>
<p>{esc(head)}</p>
<p>Tables: <a href="summary.csv">summary.csv</a> · <a href="summary.json">summary.json</a>.
Options: <code>{esc(json.dumps(run.get("options", {})))}</code></p>
<table><tr><th>input</th><th>status</th><th>duration</th><th>frames</th><th>faces tracked</th><th>dominant</th>
<th>share of face-time</th><th>timeline</th></tr>
{chr(10).join(body)}
</table></body></html>
"""


class Progress:
    """One status line on stderr: files, frames, FPS, video time, ETA. Redrawn in place on a terminal,
    a plain line every `every_s` seconds otherwise (logs); nothing with `quiet` but failures."""

    def __init__(self, total: int, quiet: bool = False, every_s: float = 10.0, stream=None):
        self.total = total
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.every_s = 0.2 if self.tty else every_s
        self.t0 = time.perf_counter()
        self.done = 0
        self.failed = 0
        self.frames_done = 0
        self.video_s = 0.0
        self.running: dict[int, tuple[int, int]] = {}  # job -> (frames, announced)
        self._last = 0.0
        self._drawn = False
        #: printed before the first event (so a setup error stays the only line): what is about to run
        self.header: str | None = None

    def event(self, kind: str, job: int, payload) -> None:
        self.announce()
        if kind == "start":
            self.running[job] = (0, 0)
        elif kind == "progress":
            self.running[job] = tuple(payload)
        elif kind == "done":
            self.running.pop(job, None)
            self.done += 1
            self.frames_done += payload.get("frames") or 0
            self.video_s += payload.get("duration_s") or 0.0
            if payload["status"] == "failed":
                self.failed += 1
                self.line(f"failed: {payload['input']}: {payload['error']}")
        self.draw()

    def announce(self) -> None:
        if self.header is not None:
            header, self.header = self.header, None
            if not self.quiet:
                self.line(header)

    def line(self, text: str) -> None:
        self._clear()
        print(text, file=self.stream, flush=True)

    def _clear(self) -> None:
        if self._drawn and self.tty:
            self.stream.write("\r\033[K")
            self._drawn = False

    def text(self) -> str:
        elapsed = time.perf_counter() - self.t0
        frames = self.frames_done + sum(f for f, _ in self.running.values())
        partial = sum(f / n for f, n in self.running.values() if n)
        frac = (self.done + min(partial, len(self.running))) / self.total if self.total else 1.0
        eta = clock(elapsed * (1 - frac) / frac) if frac > 0.001 else "?"
        width = 24
        bar = "#" * int(width * frac) + "." * (width - int(width * frac))
        return (f"[{bar}] {self.done}/{self.total} files ({self.failed} failed) | {frames} frames, "
                f"{frames / elapsed if elapsed > 0 else 0:.0f} FPS | {clock(self.video_s)} video | "
                f"{clock(elapsed)} elapsed, ETA {eta}")

    def draw(self, force: bool = False) -> None:
        if self.quiet or (not force and time.perf_counter() - self._last < self.every_s):
            return
        self._last = time.perf_counter()
        if self.tty:
            self.stream.write("\r\033[K" + self.text())
            self.stream.flush()
            self._drawn = True
        else:
            print(self.text(), file=self.stream, flush=True)

    def close(self) -> None:
        if not self.quiet and self.tty:
            self.draw(force=True)
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
