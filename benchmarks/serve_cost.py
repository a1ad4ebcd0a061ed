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

This script is the command line and the round plan; its parts: serve_runs.py (one engine process per run),
serve_meters.py (/proc readings, the JSONL line counter, the viewer) and serve_report.py (medians, Markdown).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from benchmarks import RESULTS, SHARED, machine_info, now_utc, package_versions, rel, write_json, write_text
from benchmarks.serve_report import markdown, summarise
from benchmarks.serve_runs import SETTINGS, flatness, measure, server_startup
from engine.core.cliargs import Parser, positive_int
from engine.core.errors import UserError, cli_main

CLIP = SHARED / "media" / "head-pose-face-detection-female-and-male.gif"


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