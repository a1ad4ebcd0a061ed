#!/usr/bin/env python
"""Where one frame's CPU time goes: every stage of the engine run one after another on one
thread, each timed, so the parts add up (the threaded pipeline overlaps them, which hides
what each costs).

The stages are the engine's own calls (engine.io.sources for decoding, EmotionRecognizer.detect,
engine.faces.crop.crop_faces + the classifier's predict, which together are
EmotionRecognizer.classify, then EmotionRecognizer.track, engine.io.overlay.draw); `--cprofile`
adds the functions that take the most time inside them.

The sum is the CPU cost of a frame: 1000 / sum is what one core can do, and a pipeline on N
cores cannot beat N times that. Compare it with `benchmarks/fps.py` to see how much of the
second core the threads use.

Examples:
  python benchmarks/stage_profile.py                                    # the 2-face clip, defaults of engine.run
  python benchmarks/stage_profile.py --detect-every 3 --detector-impl litert --cprofile
  python benchmarks/stage_profile.py --source ../shared/media/classroom.gif --detector full --json p.json
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence


from benchmarks import SHARED, fmt, machine_info, now_utc, package_versions, percentiles, rel, text_table, write_json
from engine.core.cliargs import positive_int
from engine.core.errors import UserError, cli_main

DEFAULT_CLIP = SHARED / "media" / "head-pose-face-detection-female-and-male.gif"
PARTS = ("decode", "detect", "crop", "classify", "track", "overlay")


def build_parser() -> argparse.ArgumentParser:
    from engine.run import build_parser as engine_parser

    # engine.run's own options (model, backend, detector, --detect-every ...): the same defaults
    p = engine_parser()
    p.prog = "python benchmarks/stage_profile.py"
    p.description = __doc__.split("\n\n")[0]
    p.epilog = "Examples:" + __doc__.split("Examples:", 1)[1]
    p.set_defaults(source=str(DEFAULT_CLIP), loop=5, no_display=True)
    g = p.add_argument_group("profile")
    g.add_argument("--warmup", type=positive_int, default=10, help="frames left out of the numbers [10]")
    g.add_argument("--cprofile", action="store_true", help="also list the functions with the most own time")
    g.add_argument("--top", type=positive_int, default=12, help="how many functions --cprofile lists [12]")
    g.add_argument("--json", help="write the results to this JSON file")
    return p


def profile(args: argparse.Namespace) -> dict:
    from engine.api import EmotionRecognizer
    from engine.cli.options import options_from_args

    source = _open_file_source(args)
    rec = EmotionRecognizer.create(options_from_args(args, source.mode))
    try:
        timed = _time_frames(rec, source, args)
    finally:
        source.close()
        impl = getattr(rec.detector, "impl", "?")
        rec.close()
    ms, faces = timed["ms"], timed["faces"]
    n = len(faces)
    if n == 0:
        raise UserError(f"{source.name} gives no more than --warmup {args.warmup} frames: use --loop N, a larger --max-frames or a smaller --warmup")
    mean = {k: sum(v) / n for k, v in ms.items()}
    total = sum(mean.values())
    return {
        "benchmark": "profile", "date": now_utc(), "machine": machine_info(), "versions": package_versions(),
        "source": source.name, "frames": n, "faces_per_frame": round(sum(faces) / n, 3),
        "settings": {"model": rel(str(args.model)), "backend": args.backend, "precision": args.precision,
                     "threads": args.threads, "detector": args.detector, "detector_impl": impl,
                     "detect_every": args.detect_every, "tiles": args.tiles, "loop": args.loop},
        "parts": {k: {"mean_ms": round(mean[k], 4), "share": round(mean[k] / total, 4) if total else None,
                      **percentiles(ms[k])} for k in PARTS},
        "sum_ms": round(total, 4),
        "one_core_fps": round(1000 / total, 1) if total else None,
        "cpu_ms_per_frame": round(timed["cpu_s"] * 1000 / n, 4),
        "wall_ms_per_frame": round(timed["wall_s"] * 1000 / n, 4),
        "top_functions": _top_functions(timed["prof"], n, args.top),
    }


def _open_file_source(args: argparse.Namespace):
    """The source, refused when it is a camera or a stream: its wait for frames is not CPU time."""
    from engine.io.sources import SourceOptions, open_source

    spec = str(args.source)
    if spec.isdigit() or spec.startswith("/dev/video") or spec == "picam" or "://" in spec:
        raise UserError("profile a file or folder: a camera's wait for frames is not CPU time")
    source = open_source(SourceOptions(args.source, args.width, args.height, args.fps, args.loop))
    if source.live:
        source.close()
        raise UserError("profile a file or folder: a camera's wait for frames is not CPU time")
    return source


def _time_frames(rec, source, args: argparse.Namespace) -> dict:
    """Every stage of every frame one after another, each timed; the first --warmup frames left out.

    Returns {"ms": part -> [ms per frame], "faces": [faces per frame], "cpu_s", "wall_s": process CPU and
    wall time over the timed frames, "prof": the cProfile.Profile of them (None without --cprofile)}."""
    import cProfile

    from engine.core.types import RunningMode
    from engine.faces.crop import crop_faces
    from engine.io.overlay import draw

    prof = cProfile.Profile() if args.cprofile else None
    ms: dict[str, list[float]] = {k: [] for k in PARTS}
    faces = []
    cpu0 = wall0 = None
    index = 0
    try:
        while args.max_frames is None or index < args.max_frames:
            if index == args.warmup:
                cpu0, wall0 = time.process_time(), time.perf_counter()
                if prof:
                    prof.enable()
            t = [time.perf_counter_ns()]
            frame = source.read()
            t.append(time.perf_counter_ns())
            if frame is None:
                break
            dets = rec.detect(frame, None if source.mode is RunningMode.IMAGE else int(index * 1000 / (source.fps or 30)))
            t.append(time.perf_counter_ns())
            batch = crop_faces(frame, dets, rec.options.crop)
            t.append(time.perf_counter_ns())
            probs = rec.classify_crops(batch)
            t.append(time.perf_counter_ns())
            tracked = rec.track(dets, probs)
            t.append(time.perf_counter_ns())
            draw(frame, tracked, None, {}, args.bars)
            t.append(time.perf_counter_ns())
            if index >= args.warmup:
                for k, a, b in zip(PARTS, t, t[1:]):
                    ms[k].append((b - a) / 1e6)
                faces.append(len(dets))
            index += 1
    finally:
        if prof:
            prof.disable()
        cpu1, wall1 = time.process_time(), time.perf_counter()
    timed = cpu0 is not None and wall0 is not None
    return {"ms": ms, "faces": faces, "prof": prof,
            "cpu_s": cpu1 - cpu0 if timed else 0.0, "wall_s": wall1 - wall0 if timed else 0.0}


def _top_functions(prof, n: int, top: int) -> list[dict]:
    """The `top` functions with the most own time per frame (--cprofile); [] without a profile."""
    import pstats

    if not prof:
        return []
    out = []
    stats = pstats.Stats(prof)
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    for (file, line, func), (_cc, calls, tottime, cumtime, _callers) in rows:
        where = func if file == "~" else f"{Path(file).name}:{line}({func})"
        out.append({"function": where, "calls_per_frame": round(calls / n, 2),
                    "own_ms_per_frame": round(tottime * 1000 / n, 4), "cum_ms_per_frame": round(cumtime * 1000 / n, 4)})
    return out


def format_text(res: dict) -> str:
    rows = [[k, fmt(p["mean_ms"], 3), fmt(p["p50"], 3), fmt(p["p99"], 3), f"{100 * (p['share'] or 0):.0f}%"]
            for k, p in res["parts"].items()]
    rows.append(["sum", fmt(res["sum_ms"], 3), "", "", "100%"])
    s = res["settings"]
    lines = [f"{res['source']}: {res['frames']} frames, {res['faces_per_frame']} faces/frame; {s['backend']}-{s['precision']} "
             f"t{s['threads']}, detector {s['detector']} ({s['detector_impl']}), every {s['detect_every']}", "",
             text_table(("part", "mean ms", "p50", "p99", "share"), rows), "",
             f"one core: {res['one_core_fps']} FPS (1000 / sum); process CPU {res['cpu_ms_per_frame']:.3f} ms/frame "
             f"(native threads included), wall {res['wall_ms_per_frame']:.3f} ms/frame"]
    if res["top_functions"]:
        lines += ["", text_table(("function", "calls/frame", "own ms/frame", "cum ms/frame"),
                                 [[t["function"], fmt(t["calls_per_frame"], 2), fmt(t["own_ms_per_frame"], 3),
                                   fmt(t["cum_ms_per_frame"], 3)] for t in res["top_functions"]])]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    res = profile(args)
    print(format_text(res))
    if args.json:
        write_json(args.json, res)
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(main))
