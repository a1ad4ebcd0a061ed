#!/usr/bin/env python
"""End-to-end benchmark of the REAL threaded pipeline (engine.pipeline.Pipeline driving an
EmotionRecognizer built by engine.run's own option parser): FPS, per-stage latency
percentiles, capture-to-output latency, faces found, CPU and memory, start-up time; optionally
side by side with the `fer` PyPI package on the same decoded frames.

Examples:
  python benchmarks/fps.py                                      # shared 2-face clip, tflite int8
  python benchmarks/fps.py --loop 10 --backend tflite,onnx --precision int8,fp16,fp32
  python benchmarks/fps.py --source ../shared/media/classroom.gif --detector short,full,full+tiles --loop 5
  python benchmarks/fps.py --compare fer --json out.json --md out.md --plot out.png
  python benchmarks/fps.py --compare fer --predecoded --loop 10   # both sides fed decoded frames
  python benchmarks/fps.py --source 0 --max-frames 300          # a camera

Each backend x precision x detector configuration runs in a fresh Python process (clean
start-up time, peak memory and CPU numbers; nothing one run loads helps the next), the same
way `python -m engine.run --no-display` would run it. Warm-up frames are excluded from every
number except start-up time.
"""
from __future__ import annotations

import time

_T_LAUNCH_WALL = time.time()  # before the heavy imports: start-up time counts them

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
from collections import deque
from pathlib import Path
from typing import Sequence

_HERE = Path(__file__).resolve().parent
_REPO = _HERE.parent
sys.path[:] = [str(_REPO)] + [p for p in sys.path if Path(p or ".").resolve() not in (_HERE, _REPO)]  # why: benchmarks/__init__.py

from benchmarks import (  # noqa: E402
    SHARED, cpu_seconds, fmt, machine_info, md_table, now_utc, package_versions, peak_rss_mb, percentiles,
    rel as _rel, text_table, write_json, write_text,
)
from engine.cliargs import Parser, csv_list, nonneg_int, positive_int, positive_int_list  # noqa: E402
from engine.errors import UserError, cli_main  # noqa: E402

DEFAULT_SOURCE = SHARED / "media" / "head-pose-face-detection-female-and-male.gif"
STAGES = ("capture", "detect", "classify", "track", "overlay", "sink")
#: stages that share a thread: the pipeline's throughput is bounded by the slowest THREAD
THREADS = {"capture": ("capture",), "detect": ("detect",), "classify+track": ("classify", "track"),
           "overlay+sink": ("overlay", "sink")}
DETECTORS = ("short", "full", "short+tiles", "full+tiles")
SINKS = ("video", "jsonl", "none")
THROUGHPUT_TARGET = 0.90  # FPS / (1000 / slowest thread's mean ms per frame)
LATENCY_TARGET = 1.2  # capture-to-output p50 / sum of stage medians
FER_TARGET = 5.0  # our FPS / fer's FPS
FER_INSTALL = ("fer is not installed: pip install --no-deps fer==25.10.3 pandas requests tqdm Pillow matplotlib "
               "'setuptools<81' (plus tensorflow or tensorflow-cpu); it is a comparison only, never a project dependency")
PROGRESS = "fps: "  # child-process stderr lines with this prefix are shown; the rest is kept for errors


_QUIET = False


def log(msg: str) -> None:
    if not _QUIET:
        print(f"{PROGRESS}{msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- arguments


def build_parser() -> argparse.ArgumentParser:
    from engine.classifier import DEFAULT_MODEL

    p = Parser(prog="python benchmarks/fps.py", description=__doc__.split("\n\n")[0],
                epilog="Examples:" + __doc__.split("Examples:", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", default=str(DEFAULT_SOURCE),
                   help="a clip, image folder, camera index (0) or URL; several separated by commas [the shared 2-face clip]")
    p.add_argument("--loop", type=positive_int, default=1, help="play a file this many times [1]")
    p.add_argument("--max-frames", type=positive_int, help="stop each run after this many frames (cameras: default 300)")
    p.add_argument("--warmup", type=nonneg_int, default=10, help="first frames left out of every number but start-up [10]")
    p.add_argument("--backend", default="tflite", help="comma list of tflite, onnx, keras [tflite]")
    p.add_argument("--precision", default="int8", help="comma list of int8, fp16, fp32 [int8]")
    p.add_argument("--threads", default="1", help="classifier/detector threads; a comma list runs each [1]")
    p.add_argument("--model", default=str(DEFAULT_MODEL), help="an export directory (or one model file) [models/zoo/emonet_n]")
    p.add_argument("--detector", default="short", help=f"comma list of {', '.join(DETECTORS)} [short]")
    p.add_argument("--tiles", action="store_true", help="add tiles to every --detector entry (small faces)")
    p.add_argument("--detect-every", default="2", help="comma list: run the detector on every Nth frame (or when the picture moved), "
                                                       "boxes kept between; engine.run's default [2]")
    p.add_argument("--detector-impl", default="auto", help="auto, mediapipe or litert [auto]")
    p.add_argument("--sink", default="video", choices=SINKS,
                   help="video: draw the overlay and write an mp4 + JSONL events (engine.run --output X.mp4 --jsonl Y); "
                        "jsonl: JSONL events only, no overlay drawn; none: nothing [video]")
    p.add_argument("--realtime", nargs="?", type=float, const=0.0, default=None, metavar="FPS",
                   help="play a file like a camera: frames arrive at the clip's rate (or FPS), the pipeline treats the source "
                        "as live (newest frame wins, late frames dropped); measures latency as a camera user sees it")
    p.add_argument("--predecoded", action="store_true",
                   help="decode the clip into memory before timing and feed the pipeline from there, as the fer comparison's "
                        "'fer FPS' does: both sides of 'x fer' then skip decoding (files only)")
    p.add_argument("--compare", default="", help="fer: also run the fer PyPI package on the same decoded frames")
    p.add_argument("--json", help="write all results to this JSON file")
    p.add_argument("--md", help="write the tables to this Markdown file")
    p.add_argument("--plot", help="write a PNG: FPS per configuration and stacked per-stage latency")
    p.add_argument("--run-timeout", type=positive_int, default=900, help="seconds one configuration may take [900]")
    p.add_argument("--in-process", action="store_true", help="run configurations in this process (debugging; start-up/RSS then mix)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--worker", help=argparse.SUPPRESS)  # internal: run one configuration described by this JSON file
    return p


# --------------------------------------------------------------------------- planning


def _check_runtime(backend: str) -> None:
    """Fail fast, in one sentence, when a requested backend's runtime is not installed."""
    import importlib.util

    from engine.classifier import BACKENDS

    if backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r}: choose from {', '.join(BACKENDS)}")
    if backend == "tflite":
        if not any(importlib.util.find_spec(m) for m in ("ai_edge_litert", "tflite_runtime", "tensorflow")):
            from engine.litert import INSTALL_HINT

            raise UserError(f"--backend tflite needs a TFLite runtime: {INSTALL_HINT}")
    elif backend == "onnx" and importlib.util.find_spec("onnxruntime") is None:
        raise UserError("--backend onnx needs onnxruntime: pip install onnxruntime")
    elif backend == "keras" and importlib.util.find_spec("tensorflow") is None:
        raise UserError("--backend keras needs TensorFlow: pip install '.[train]'")


def _check_source(spec: str) -> dict:
    """Open the source once (one clear sentence if that fails) and describe it."""
    from engine.sources import SourceOptions, open_source

    if spec.strip() and not spec.strip().isdigit() and "://" not in spec and spec != "picam" and spec != "sample":
        spec = str(Path(spec).expanduser().resolve())  # workers run from the repository root
    src = open_source(SourceOptions(spec))
    try:
        return {"spec": spec, "name": src.name, "live": bool(src.live), "fps": float(src.fps or 0.0)}
    finally:
        src.close()


def plan(args) -> tuple[list[dict], list[dict], list[dict]]:
    """(sources, configurations to run, skipped configurations with the reason)."""
    from engine.classifier import PRECISIONS, artifact_name

    backends, precisions = csv_list(args.backend), csv_list(args.precision)
    if not backends or not precisions:
        raise UserError("--backend and --precision need at least one entry each")
    for prec in precisions:
        if prec not in PRECISIONS:
            raise UserError(f"unknown precision {prec!r}: choose from {', '.join(PRECISIONS)}")
    threads = positive_int_list(args.threads, "--threads")
    detectors = []
    for d in csv_list(args.detector):
        base, _, extra = d.partition("+")
        tiles = bool(extra) or args.tiles
        if extra not in ("", "tiles") or not base:
            raise UserError(f"unknown --detector entry {d!r}: use {', '.join(DETECTORS)} or a .tflite path")
        detectors.append((base, tiles))
    if not detectors:
        raise UserError("--detector needs at least one entry")
    detectors = list(dict.fromkeys(detectors))
    everies = positive_int_list(args.detect_every, "--detect-every")
    if args.compare and args.compare != "fer":
        raise UserError(f"--compare {args.compare!r}: only 'fer' is supported")

    sources = [_check_source(s) for s in csv_list(args.source)]
    if not sources:
        raise UserError("--source needs at least one entry")
    model = Path(args.model).expanduser().resolve()
    if not model.exists():
        raise UserError(f"model {model} does not exist: export one (python -m models.train ... --export, or "
                        f"python -m export --model M.keras --out DIR) and pass --model DIR")
    for b in dict.fromkeys(backends):
        _check_runtime(b)

    runs, skipped = [], []
    for src in sources:
        for base, tiles in detectors:
            for b in dict.fromkeys(backends):
                for prec in dict.fromkeys(precisions if b != "keras" else ["fp32"]):
                    if model.is_dir():
                        path = model / artifact_name(b, prec)
                        if not path.is_file():
                            skipped.append({"source": src["name"], "config": f"{b}-{prec}",
                                            "reason": f"{model.name} has no {path.name}"})
                            continue
                    else:
                        path = model
                    for t in dict.fromkeys(threads):
                        for every in dict.fromkeys(everies):
                            runs.append({"source": src, "backend": b, "precision": prec, "threads": t, "model": str(model),
                                         "model_file": str(path), "detector": base, "tiles": tiles, "every": every,
                                         "predecoded": args.predecoded})
    if not runs:
        raise UserError("nothing to run: " + "; ".join(f"{s['config']}: {s['reason']}" for s in skipped))
    return sources, runs, skipped


def _label(run: dict) -> str:
    det = run["detector"] + ("+tiles" if run["tiles"] else "") + (f" every{run['every']}" if run.get("every", 1) > 1 else "") + (
        f" {run['detector_impl']}" if run.get("detector_impl") == "litert" else "")
    paced = f" realtime@{run['realtime_fps']:.3g}" if run.get("realtime_fps") else ""
    pre = " predecoded" if run.get("predecoded") else ""
    return f"{run['backend']}-{run['precision']} t{run['threads']} {det}{paced}{pre}"


def engine_argv(run: dict, args, out_dir: str | None = None) -> list[str]:
    """The `python -m engine.run` arguments this configuration is equivalent to."""
    argv = ["--source", run["source"]["spec"], "--backend", run["backend"], "--precision", run["precision"],
            "--threads", str(run["threads"]), "--model", run["model"], "--detector", run["detector"],
            "--detector-impl", args.detector_impl, "--no-display"]
    if run["tiles"]:
        argv.append("--tiles")
    argv += ["--detect-every", str(run.get("every", 1))]
    if args.loop > 1:
        argv += ["--loop", str(args.loop)]
    if _max_frames(args, run["source"]):
        argv += ["--max-frames", str(_max_frames(args, run["source"]))]
    if args.sink == "video":
        argv += ["--output", os.path.join(out_dir or "OUT", "annotated.mp4")]
    if args.sink in ("video", "jsonl"):
        argv += ["--jsonl", os.path.join(out_dir or "OUT", "events.jsonl")]
    return argv


def _max_frames(args, source: dict) -> int | None:
    if args.max_frames:
        return args.max_frames
    return 300 if source["live"] else None  # a camera never ends by itself


# --------------------------------------------------------------------------- one configuration (worker)


def paced_source(inner, fps: float):
    """Wrap a file source so it behaves like a camera: live, one frame every 1/fps seconds.

    The capture stage of a camera includes waiting for the next frame; the wait of each read is
    recorded (in read order, which is packet order) so the benchmark can report the decode part
    of capture and the latency from the frame being ready to it being output."""
    from engine.sources import Source

    class PacedSource(Source):
        live = True

        def __init__(self):
            self.name = f"{inner.name} (paced {fps:.3g} FPS)"
            self.fps = fps
            self.waits_ms: list[float] = []
            self._due: float | None = None

        def read(self):
            now = time.perf_counter()
            if self._due is None:
                self._due = now
            wait = self._due - now
            if wait > 0:
                time.sleep(wait)
            self._due = max(self._due + 1.0 / fps, time.perf_counter())  # a stall does not cause a burst
            frame = inner.read()
            if frame is not None:
                self.waits_ms.append(max(wait, 0.0) * 1000.0)
            return frame

        def close(self):
            inner.close()

    return PacedSource()


def memory_source(inner, frames: list):
    """A file source replayed from frames decoded before timing (`--predecoded`).

    Each read hands out a copy, as a camera hands out a fresh buffer: the overlay draws into the
    frame it gets, and the looped clip's frames are shared between loops."""
    from engine.sources import Source

    class MemorySource(Source):
        live = False

        def __init__(self):
            self.name = f"{inner.name} (decoded before timing)"
            self.fps = inner.fps
            self._i = 0

        def read(self):
            if self._i >= len(frames):
                return None
            self._i += 1
            return frames[self._i - 1].copy()

    return MemorySource()


def count_frames(spec: str, loop: int) -> int:
    from engine.sources import SourceOptions, open_source

    src = open_source(SourceOptions(spec))
    n = 0
    try:
        while src.read() is not None:
            n += 1
    finally:
        src.close()
    return n * loop


def run_config(job: dict) -> dict:
    """Run the pipeline once for one configuration and measure it. Runs in the worker process."""
    from engine.api import EmotionRecognizer
    from engine.outputs import Outputs
    from engine.pipeline import Pipeline, PipelineError, PipelineOptions
    from engine.run import build_parser as engine_parser
    from engine.run import options_from_args
    from engine.sources import ImageSource, SourceOptions, open_source

    launch = job["launch_wall"]
    warmup = int(job["warmup"])
    label = job["label"]
    args = engine_parser().parse_args(job["engine_argv"])  # engine.run's own parser: identical defaults
    source = open_source(SourceOptions(args.source, args.width, args.height, args.fps, args.loop))
    stills = isinstance(source, ImageSource)
    paced = None
    if job.get("predecoded"):
        if source.live or stills:
            source.close()
            raise UserError("--predecoded needs a video file, not a camera, stream or images")
        _, decoded = decode_frames(args.source, args.loop, args.max_frames)
        source.close()
        source = memory_source(source, decoded)
    if job.get("realtime") is not None and not source.live:
        if stills:
            raise UserError("--realtime needs a video file, not images")
        paced = source = paced_source(source, job["realtime"] or source.fps or 30.0)
        if args.max_frames is None:  # a live source never "ends": stop after the file's frames
            args.max_frames = count_frames(args.source, args.loop)
    closers = [source.close]
    try:
        t0 = time.perf_counter()
        rec = EmotionRecognizer.create(options_from_args(args, stills))
        load_s = time.perf_counter() - t0
        closers.append(rec.close)
        # engine.run's own sinks and per-frame handler (--output/--jsonl): the same work, timed the same way
        outputs = Outputs.open(args, source, stills, rec.labels, display=False, log=lambda m: log(f"{label}: {m}"))
        closers.append(outputs.close)

        out_t: list[float] = []  # perf_counter when each frame came out
        out_index: list[int] = []  # which source frame it was (live sources drop some)
        n_faces: list[int] = []
        per_frame: list[dict] = []  # every frame's stage ms (the pipeline's own record is bounded)
        sides: list[float] = []  # face box sizes (px): which faces were found, not just how many
        mark: dict[str, float] = {}
        first_out: list[float] = []  # wall clock: start-up counts from the launch in the parent process

        def on_frame(pkt, image) -> bool:
            if not first_out:
                first_out.append(time.time())
            outputs.handle(pkt, image)
            now = time.perf_counter()
            out_t.append(now)
            out_index.append(pkt.index)
            n_faces.append(len(pkt.faces))
            per_frame.append(dict(pkt.ms))
            sides.extend((f.box[2] * f.box[3]) ** 0.5 for f in pkt.faces)
            if len(out_t) == warmup:  # the measured window starts when the last warm-up frame is out
                mark["t"], mark["cpu"] = now, cpu_seconds()
            return False

        opts = PipelineOptions(max_frames=args.max_frames, overlay=outputs.want_pixels, quiet=job.get("quiet", False),
                               progress_every_s=2.0)
        pipe = Pipeline(rec, source, opts, on_frame=on_frame, log=lambda m: log(f"{label}: {m}"))
        if warmup == 0:
            mark["t"], mark["cpu"] = time.perf_counter(), cpu_seconds()
        try:
            stats = pipe.run()
        except PipelineError as exc:
            raise UserError(str(exc)) from None
        t_end, cpu_end = time.perf_counter(), cpu_seconds()
        detector_impl = getattr(rec.detector, "impl", "?")
        runtime = getattr(getattr(rec.classifier, "_it", None), "runtime_name", None) or rec.classifier.backend
    finally:
        for close in reversed(closers):
            try:
                close()
            except Exception as exc:
                print(f"warning: while closing: {exc}", file=sys.stderr)

    frames = len(out_t)
    if frames <= warmup:
        raise UserError(f"{source.name} gave only {frames} frame(s), not more than --warmup {warmup}: "
                        f"use --loop N or a smaller --warmup")
    waits = None
    if paced is not None:  # camera-like: the wait for the next frame is not work and not latency
        waits = [paced.waits_ms[i] if i < len(paced.waits_ms) else 0.0 for i in out_index]
        for m, w in zip(per_frame, waits):
            m["capture"] = max(0.0, m["capture"] - w)
            m["total"] = m["total"] - w
        waits = waits[warmup:]
    per_frame = per_frame[warmup:]
    measured = frames - warmup
    window = out_t[-1] - mark["t"]
    stage_stats = {}
    for st in STAGES:
        vals = [m.get(st, 0.0) for m in per_frame]
        stage_stats[st] = {**percentiles(vals), "mean": round(sum(vals) / len(vals), 4)}
    total = [m["total"] for m in per_frame]
    per_face = [m["classify"] / k for m, k in zip(per_frame, n_faces[warmup:]) if k]
    fps = measured / window if window > 0 else float("nan")
    medians = {st: stage_stats[st]["p50"] for st in STAGES}
    # A thread's capacity is 1 / its MEAN time per frame: with --detect-every N the detector's times are
    # bimodal (0 on skipped frames), and a median would put the bound anywhere between the two modes.
    means = {st: stage_stats[st]["mean"] for st in STAGES}
    thread_ms = {name: sum(means[s] for s in members) for name, members in THREADS.items()}
    thread_median_ms = {name: sum(medians[s] for s in members) for name, members in THREADS.items()}
    slowest = max(thread_ms, key=thread_ms.get)
    bound = 1000.0 / thread_ms[slowest] if thread_ms[slowest] > 0 else float("nan")
    stage_sum = sum(medians.values())
    lat = percentiles(total)
    with_faces = sum(1 for k in n_faces if k)  # faces found: every frame counts (it is not a timing)
    return {
        "source": job["run"]["source"]["name"],
        "backend": job["run"]["backend"], "precision": job["run"]["precision"], "threads": job["run"]["threads"],
        "detector": job["run"]["detector"], "tiles": job["run"]["tiles"], "detector_impl": detector_impl,
        "every": job["run"].get("every", 1),
        "runtime": runtime, "model": job["run"]["model"], "model_file": job["run"]["model_file"],
        "model_bytes": Path(job["run"]["model_file"]).stat().st_size, "sink": job["sink"],
        "command": "python -m engine.run " + " ".join(_quote(a) for a in job["engine_argv"])
                   + (f"  (played like a camera at {paced.fps:.3g} FPS: benchmark only)" if paced is not None else "")
                   + ("  (fed frames decoded before timing: benchmark only)" if job.get("predecoded") else ""),
        "frames": frames, "warmup": warmup, "measured_frames": measured, "measured_s": round(window, 4),
        "fps": round(fps, 2),
        "stages": stage_stats,
        "latency": lat,
        "classify_ms_per_face": percentiles(per_face) if per_face else None,
        "faces_per_frame": round(sum(n_faces) / frames, 3),
        "frames_with_faces": with_faces,
        "frames_with_faces_pct": round(100.0 * with_faces / frames, 1),
        "faces_total": int(sum(n_faces)),
        "face_px": percentiles(sides, (10, 50, 90)) if sides else None,
        "cpu_pct": round(100.0 * (cpu_end - mark["cpu"]) / (t_end - mark["t"]), 1) if t_end > mark["t"] else None,
        "peak_rss_mb": peak_rss_mb(),
        "startup_s": round(first_out[0] - launch, 3) if first_out else None,
        "load_s": round(load_s, 3),
        "stopped_by": stats.stopped_by,
        "realtime_fps": paced.fps if paced is not None else None,
        "predecoded": bool(job.get("predecoded")),
        "frames_read": (len(paced.waits_ms) if paced is not None else frames),
        "frames_dropped": (len(paced.waits_ms) - frames if paced is not None else 0),
        "pacing_wait_ms": percentiles(waits) if waits else None,
        "checks": {
            "startup_s": round(first_out[0] - launch, 3) if first_out else None,
            "slowest_thread": slowest,
            "thread_mean_ms": {k: round(v, 3) for k, v in thread_ms.items()},
            "thread_median_ms": {k: round(v, 3) for k, v in thread_median_ms.items()},
            "bound_fps": round(bound, 2),
            "throughput_ratio": round(fps / bound, 3) if paced is None and bound == bound and bound > 0 else None,
            "throughput_target": THROUGHPUT_TARGET,
            "throughput_ok": bool(bound > 0 and fps / bound >= THROUGHPUT_TARGET) if paced is None else None,
            "stage_median_sum_ms": round(stage_sum, 3),
            "latency_ratio": round(lat["p50"] / stage_sum, 3) if stage_sum > 0 else None,
            "latency_target": LATENCY_TARGET,
            "latency_ok": bool(stage_sum > 0 and lat["p50"] / stage_sum <= LATENCY_TARGET),
        },
    }


def _quote(a: str) -> str:
    import shlex

    return shlex.quote(a)


# --------------------------------------------------------------------------- the fer peer (worker)


def _import_fer():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        from fer import FER  # older releases export it at the top
    except ImportError:
        try:
            from fer.fer import FER  # 25.10.3 keeps it in fer.fer
        except ImportError as exc:
            if getattr(exc, "name", "") in ("fer", "fer.fer"):
                raise UserError(FER_INSTALL) from None
            raise UserError(f"fer is installed but cannot be imported ({exc}); {FER_INSTALL}") from None
    return FER


def decode_frames(spec: str, loop: int, max_frames: int | None) -> tuple[str, list]:
    """Every frame the pipeline's capture stage would read (same decoder), kept in memory."""
    from engine.sources import SourceOptions, open_source

    src = open_source(SourceOptions(spec))
    frames = []
    try:
        while max_frames is None or len(frames) < max_frames:
            f = src.read()
            if f is None:
                break
            frames.append(f)
    finally:
        src.close()
    if not src.live and loop > 1:
        frames = frames * loop
        if max_frames:
            frames = frames[:max_frames]
    return src.name, frames


def run_fer(job: dict) -> dict:
    """`FER(mtcnn=False).detect_emotions(frame)` on the same decoded frames, timed per frame."""
    launch, warmup = job["launch_wall"], int(job["warmup"])
    FER = _import_fer()
    from importlib import metadata

    detector = FER(mtcnn=False)
    name, frames = decode_frames(job["source"]["spec"], job["loop"], job["max_frames"])
    if len(frames) <= warmup:
        raise UserError(f"{name} gave only {len(frames)} frame(s), not more than --warmup {warmup}")
    ms, faces, sides = [], [], []
    startup = None
    cpu0 = t_window = None
    last = time.monotonic()
    for i, frame in enumerate(frames):
        if i == warmup:
            t_window, cpu0 = time.perf_counter(), cpu_seconds()
        t0 = time.perf_counter_ns()
        found = detector.detect_emotions(frame)
        ms.append((time.perf_counter_ns() - t0) / 1e6)
        faces.append(len(found))
        sides.extend((f["box"][2] * f["box"][3]) ** 0.5 for f in found)
        if startup is None:
            startup = time.time() - launch
        if not job.get("quiet") and time.monotonic() - last > 2.0:
            last = time.monotonic()
            log(f"fer: frame {i + 1}/{len(frames)}")
    t_end, cpu_end = time.perf_counter(), cpu_seconds()
    ms = ms[warmup:]
    measured = len(ms)
    with_faces = sum(1 for k in faces if k)  # faces found: every frame counts, as for the pipeline
    e2e_fps = None if job["source"].get("live") else _fer_streaming_fps(detector, job, warmup)
    return {
        "source": name, "package": "fer", "version": metadata.version("fer"),
        "call": "FER(mtcnn=False).detect_emotions(frame)",
        "detector": "OpenCV Haar cascade (haarcascade_frontalface_default.xml)",
        "frames": len(frames), "warmup": warmup, "measured_frames": measured,
        "fps": round(measured / (t_end - t_window), 2),
        "ms_per_frame": percentiles(ms),
        "faces_per_frame": round(sum(faces) / len(faces), 3),
        "frames_with_faces": with_faces,
        "frames_with_faces_pct": round(100.0 * with_faces / len(faces), 1),
        "faces_total": int(sum(faces)),
        "face_px": percentiles(sides, (10, 50, 90)) if sides else None,
        "cpu_pct": round(100.0 * (cpu_end - cpu0) / (t_end - t_window), 1),
        "peak_rss_mb": peak_rss_mb(),
        "startup_s": round(startup, 3),
        "fps_with_decoding": e2e_fps,
        "note": "fps: frames decoded before timing (the pipeline's numbers include decoding in its capture stage, "
                "except on runs with predecoded: true); "
                "fps_with_decoding: read a frame with the same decoder, then detect_emotions, as a fer script does",
    }


def _fer_streaming_fps(detector, job: dict, warmup: int) -> float | None:
    """fer as its users run a clip: decode a frame, detect_emotions, next. The same decoder
    (engine.sources) and frames as the pipeline, so both sides of the ratio include decoding."""
    from engine.sources import SourceOptions, open_source

    src = open_source(SourceOptions(job["source"]["spec"], loop=job["loop"]))
    n, t_window = 0, None
    try:
        while job["max_frames"] is None or n < job["max_frames"]:
            if n == warmup:
                t_window = time.perf_counter()
            frame = src.read()
            if frame is None:
                break
            detector.detect_emotions(frame)
            n += 1
    finally:
        src.close()
    if t_window is None or n <= warmup:
        return None
    return round((n - warmup) / (time.perf_counter() - t_window), 2)


def _load_avg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def worker_main(job_path: str) -> int:
    job = json.loads(Path(job_path).read_text())
    load = _load_avg()  # other work on the machine skews every number: recorded with each run
    try:
        result = run_fer(job) if job["kind"] == "fer" else run_config(job)
        result["load_avg_1m_before"] = load
    except UserError as exc:
        result = {"error": str(exc)}
    Path(job["out"]).write_text(json.dumps(result))
    return 0 if "error" not in result else 2


# --------------------------------------------------------------------------- orchestration


def _spawn(job: dict, timeout_s: int, quiet: bool) -> dict:
    """Run one job in a fresh interpreter; forward its progress lines; its result or its error."""
    with tempfile.TemporaryDirectory(prefix="fps-job-") as tmp:
        job = {**job, "out": os.path.join(tmp, "result.json")}
        job_path = os.path.join(tmp, "job.json")
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "GLOG_minloglevel": "2", "PYTHONUNBUFFERED": "1"}
        job["launch_wall"] = time.time()
        Path(job_path).write_text(json.dumps(job))
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker", job_path],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, errors="replace",
                                env=env, cwd=str(_REPO))
        killed = threading.Event()

        def _kill():
            killed.set()
            proc.kill()

        timer = threading.Timer(timeout_s, _kill)
        timer.start()
        tail: deque[str] = deque(maxlen=25)
        try:
            assert proc.stderr is not None
            for line in proc.stderr:
                line = line.rstrip("\n")
                if line.startswith(PROGRESS) or line.startswith(("warning:", "note:")):
                    if not quiet or not line.startswith(PROGRESS):
                        print(line, file=sys.stderr, flush=True)
                else:
                    tail.append(line)
            proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            timer.cancel()
        if killed.is_set():
            raise UserError(f"{job['label']} took longer than --run-timeout {timeout_s}s and was stopped")
        try:
            result = json.loads(Path(job["out"]).read_text())
        except (OSError, json.JSONDecodeError):
            for line in tail:
                print(line, file=sys.stderr)
            last = next((ln for ln in reversed(tail) if ln.strip()), "no output")
            raise UserError(f"{job['label']} crashed (exit code {proc.returncode}): {last.strip()}") from None
        return result


def _run_job(job: dict, args) -> dict:
    if args.in_process:
        job = {**job, "launch_wall": time.time()}
        load = _load_avg()
        try:
            return {**(run_fer(job) if job["kind"] == "fer" else run_config(job)), "load_avg_1m_before": load}
        except UserError as exc:
            return {"error": str(exc)}
    return _spawn(job, args.run_timeout, args.quiet)


def benchmark(args) -> dict:
    sources, runs, skipped = plan(args)
    for s in skipped:
        log(f"skipping {s['config']} on {s['source']}: {s['reason']}")
    results, fer_results = [], []
    n = len(runs) + (len(sources) if args.compare == "fer" else 0)
    k = 0
    with tempfile.TemporaryDirectory(prefix="fps-bench-") as out_dir:
        for run in runs:
            k += 1
            label = f"[{k}/{n}] {run['source']['name']} {_label(run)}"
            log(f"{label}: starting")
            job = {"kind": "pipeline", "label": label, "run": run, "warmup": args.warmup, "sink": args.sink,
                   "quiet": args.quiet, "engine_argv": engine_argv(run, args, out_dir), "realtime": args.realtime,
                   "predecoded": args.predecoded}
            res = _run_job(job, args)
            if "error" in res:
                raise UserError(f"{run['source']['name']} {_label(run)}: {res['error']}")
            res["command"] = _rel(res["command"].replace(out_dir, "OUT"))
            res["model"], res["model_file"] = _rel(res["model"]), _rel(res["model_file"])
            results.append(res)
            log(f"{label}: {res['fps']:.1f} FPS, capture-to-output p50 {res['latency']['p50']:.1f} ms, "
                f"{res['faces_per_frame']:.2f} faces/frame")
        if args.compare == "fer":
            import importlib.util

            for src in sources:
                k += 1
                label = f"[{k}/{n}] {src['name']} fer"
                if importlib.util.find_spec("fer") is None:
                    print(FER_INSTALL, file=sys.stderr)
                    fer_results.append({"source": src["name"], "error": FER_INSTALL})
                    continue
                log(f"{label}: starting")
                job = {"kind": "fer", "label": label, "source": src, "warmup": args.warmup, "loop": args.loop,
                       "max_frames": _max_frames(args, src), "quiet": args.quiet}
                res = _run_job(job, args)
                if "error" in res:
                    print(f"warning: fer on {src['name']}: {res['error']}; continuing without it", file=sys.stderr)
                    res["source"] = src["name"]
                else:
                    log(f"{label}: {res['fps']:.1f} FPS, {res['faces_per_frame']:.2f} faces/frame")
                fer_results.append(res)
    by_source = {f["source"]: f for f in fer_results if "error" not in f}
    for r in results:
        peer = by_source.get(r["source"])
        r["vs_fer"] = None if peer is None else {
            "fer_fps": peer["fps"],
            "speed_ratio": round(r["fps"] / peer["fps"], 2) if peer["fps"] > 0 else None,
            "fer_fps_with_decoding": peer.get("fps_with_decoding"),
            # a pipeline fed decoded frames against fer decoding would flatter us: not reported
            "speed_ratio_with_decoding": (round(r["fps"] / peer["fps_with_decoding"], 2)
                                          if peer.get("fps_with_decoding") and not r.get("predecoded") else None),
            "fer_faces_per_frame": peer["faces_per_frame"],
            "fer_frames_with_faces": peer["frames_with_faces"],
            "target_ratio": FER_TARGET,
            "ratio_ok": bool(peer["fps"] > 0 and r["fps"] / peer["fps"] >= FER_TARGET),
        }
    return {
        "benchmark": "fps",
        "date": now_utc(),
        "machine": machine_info(),
        "versions": package_versions(extra=("fer", "tensorflow") if args.compare == "fer" else ()),
        "settings": {
            "sources": [_rel(s["spec"]) for s in sources], "loop": args.loop, "max_frames": args.max_frames,
            "realtime": args.realtime, "predecoded": args.predecoded,
            "warmup": args.warmup, "sink": args.sink, "model": _rel(str(Path(args.model).expanduser().resolve())),
            "isolation": "in-process" if args.in_process else "one fresh process per configuration",
            "throughput_bound": "1000 / mean ms per frame of the slowest pipeline thread (capture | detect | classify+track | overlay+sink)",
            "targets": {"throughput_ratio_min": THROUGHPUT_TARGET, "latency_ratio_max": LATENCY_TARGET,
                        "fer_speed_ratio_min": FER_TARGET},
        },
        "runs": results,
        "fer": fer_results,
        "skipped": skipped,
    }


# --------------------------------------------------------------------------- reports


SUMMARY_HEADERS = ("source", "config", "FPS", "e2e p50", "e2e p99", "detect p50", "classify p50", "ms/face",
                   "faces/frame", "frames w/ faces", "face px", "CPU %", "RSS MB", "FPS/bound", "e2e/sum", "start s",
                   "fer FPS", "x fer", "fer FPS w/ decode", "x fer w/ decode", "fer faces/frame", "fer frames w/ faces")


def _pct(n: int, total: int) -> str:
    return f"{n}/{total} ({100.0 * n / total:.0f}%)" if total else "-"


def _px(p: dict | None) -> str:
    return f"{p['p10']:.0f}-{p['p90']:.0f}" if p else "-"


def summary_rows(report: dict) -> list[list[str]]:
    rows = []
    fer = {f["source"]: f for f in report["fer"]}
    for r in report["runs"]:
        c, v = r["checks"], r["vs_fer"] or {}
        peer = fer.get(r["source"], {})
        rows.append([
            r["source"], _label(r), fmt(r["fps"]), fmt(r["latency"]["p50"]), fmt(r["latency"]["p99"]),
            fmt(r["stages"]["detect"]["p50"], 2), fmt(r["stages"]["classify"]["p50"], 2),
            fmt((r["classify_ms_per_face"] or {}).get("p50"), 2), fmt(r["faces_per_frame"], 2),
            _pct(r["frames_with_faces"], r["frames"]), _px(r.get("face_px")), fmt(r["cpu_pct"], 0), fmt(r["peak_rss_mb"], 0),
            f"{c['throughput_ratio'] * 100:.0f}%" if c["throughput_ratio"] is not None else "-",
            f"{c['latency_ratio']:.2f}x" if c["latency_ratio"] is not None else "-",
            fmt(r["startup_s"], 2),
            fmt(v.get("fer_fps")), f"{v['speed_ratio']:.1f}x" if v.get("speed_ratio") else "-",
            fmt(v.get("fer_fps_with_decoding")),
            f"{v['speed_ratio_with_decoding']:.1f}x" if v.get("speed_ratio_with_decoding") else "-",
            fmt(v.get("fer_faces_per_frame"), 2),
            _pct(peer["frames_with_faces"], peer["frames"]) if "frames_with_faces" in peer else "-",
        ])
    for f in report["fer"]:
        if "error" in f:
            rows.append([f["source"], "fer (not run)"] + ["-"] * (len(SUMMARY_HEADERS) - 2))
            continue
        rows.append([f["source"], f"fer {f['version']} (Haar)", fmt(f["fps"]), "-", "-", "-", "-", "-",
                     fmt(f["faces_per_frame"], 2), _pct(f["frames_with_faces"], f["frames"]), _px(f.get("face_px")),
                     fmt(f["cpu_pct"], 0), fmt(f["peak_rss_mb"], 0), "-", "-", fmt(f["startup_s"], 2),
                     fmt(f["fps"]), "1.0x", fmt(f.get("fps_with_decoding")), "1.0x" if f.get("fps_with_decoding") else "-",
                     fmt(f["faces_per_frame"], 2), _pct(f["frames_with_faces"], f["frames"])])
    rows.sort(key=lambda row: row[0])  # stable: each source's rows together, ours first, fer last
    return rows


def stage_rows(report: dict) -> list[list[str]]:
    rows = []
    for r in report["runs"]:
        for st in (*STAGES, "total"):
            s = r["latency"] if st == "total" else r["stages"][st]
            rows.append([r["source"], _label(r), "capture-to-output" if st == "total" else st,
                         fmt(s["p50"], 2), fmt(s["p90"], 2), fmt(s["p99"], 2)])
    return rows


def format_text(report: dict) -> str:
    lines = [text_table(SUMMARY_HEADERS, summary_rows(report)), ""]
    lines.append("times in ms; e2e = capture-to-output latency; face px = box side p10-p90; FPS/bound = FPS / (1000 / slowest thread's mean "
                 f"ms), target >= {THROUGHPUT_TARGET:.0%}; e2e/sum = e2e p50 / sum of stage medians, target <= {LATENCY_TARGET}x; "
                 f"x fer = vs fer on pre-decoded frames (like for like on 'predecoded' rows); x fer w/ decode = vs fer decoding "
                 f"the clip too, as the pipeline does; "
                 f"target >= {FER_TARGET:.0f}x")
    for s in report["skipped"]:
        lines.append(f"skipped {s['config']} on {s['source']}: {s['reason']}")
    for f in report["fer"]:
        if "error" in f:
            lines.append(f"fer not run on {f['source']}: {f['error']}")
    return "\n".join(lines)


def format_markdown(report: dict) -> str:
    m = report["machine"]
    out = [f"# End-to-end pipeline benchmark ({report['date']})", "",
           f"Machine: {m['cpu']} (CPU class **{m.get('isa_class', '?')}**), {m['cores']} cores ({', '.join(m['cpu_flags']) or 'no SIMD flags read'}), "
           f"{m['os']}, Python {m['python']}" + (f", 1-min load {m['load_avg_1m_at_start']} at start" if "load_avg_1m_at_start" in m else "") + ".",
           "Versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()) + ".",
           f"Settings: warm-up {report['settings']['warmup']} frames excluded, loop {report['settings']['loop']}, "
           f"sink {report['settings']['sink']}, {report['settings']['isolation']}.", "",
           "## Summary", "", md_table(SUMMARY_HEADERS, summary_rows(report), left=2), "",
           "Times in ms. e2e = capture-to-output latency. face px = side of the found face boxes, p10-p90. FPS/bound = FPS / (1000 / mean ms per frame of the slowest pipeline "
           f"thread), target >= {THROUGHPUT_TARGET:.0%}. e2e/sum = e2e p50 / sum of stage medians, target <= {LATENCY_TARGET}x. "
           "x fer = our FPS / fer's FPS on the same frames decoded before timing (fer does not pay for decoding; the "
           "pipeline does, except on rows marked 'predecoded', fed from the same kind of in-memory frames: like for like); x fer w/ decode = our FPS / fer's FPS when it reads each frame with the same decoder "
           f"first, as a fer script does (both sides decode). Target >= {FER_TARGET:.0f}x.", "",
           "## Per-stage latency (ms)", "", md_table(("source", "config", "stage", "p50", "p90", "p99"), stage_rows(report), left=3), "",
           "## Checks", ""]
    for r in report["runs"]:
        c = r["checks"]
        v = r["vs_fer"]
        if c["throughput_ratio"] is None:  # paced like a camera: the source sets the rate
            tput = (f"{r['fps']:.1f} FPS out of {r['realtime_fps']:.3g} FPS offered ({r['frames_dropped']} of "
                    f"{r['frames_read']} frames dropped), bound {c['bound_fps']:.1f} FPS")
        else:
            tput = (f"throughput {r['fps']:.1f} FPS vs bound {c['bound_fps']:.1f} (slowest thread {c['slowest_thread']}) = "
                    f"{c['throughput_ratio'] * 100:.0f}% ({'met' if c['throughput_ok'] else 'missed'})")
        out.append(f"- {r['source']} {_label(r)}: {tput}; e2e p50 {r['latency']['p50']:.1f} ms vs stage sum "
                   f"{c['stage_median_sum_ms']:.1f} ms = {c['latency_ratio']:.2f}x ({'met' if c['latency_ok'] else 'missed'}); "
                   f"start-up {fmt(r['startup_s'], 2)} s (model+detector load {r['load_s']:.2f} s)"
                   + (f"; {v['speed_ratio']:.1f}x fer on pre-decoded frames ({'met' if v['ratio_ok'] else 'missed'})" if v and v.get("speed_ratio") else "")
                   + (f", {v['speed_ratio_with_decoding']:.1f}x fer decoding too ({'met' if v['speed_ratio_with_decoding'] >= FER_TARGET else 'missed'})"
                      if v and v.get("speed_ratio_with_decoding") else "")
                   + f". Equivalent: `{r['command']}`")
    for s in report["skipped"]:
        out.append(f"- skipped {s['config']} on {s['source']}: {s['reason']}")
    for f in report["fer"]:
        if "error" in f:
            out.append(f"- fer not run on {f['source']}: {f['error']}")
        else:
            out.append(f"- fer on {f['source']}: `{f['call']}`, {f['detector']}; {f['note']}.")
    return "\n".join(out) + "\n"


STAGE_COLORS = {"capture": "#8c8c8c", "detect": "#1f77b4", "classify": "#ff7f0e", "track": "#2ca02c",
                "overlay": "#9467bd", "sink": "#d62728"}


def write_plot(report: dict, path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("--plot needs matplotlib: pip install matplotlib") from None
    names, fps, colors = [], [], []
    for src in dict.fromkeys([r["source"] for r in report["runs"]] + [f["source"] for f in report["fer"]]):
        for r in report["runs"]:  # each source's configurations, then the peer on the same frames
            if r["source"] == src:
                names.append(f"{src}\n{_label(r)}")
                fps.append(r["fps"])
                colors.append("#1f77b4")
        for f in report["fer"]:
            if f["source"] == src and "error" not in f:
                names.append(f"{src}\nfer {f['version']} (Haar)")
                fps.append(f["fps"])
                colors.append("#7f7f7f")
    h = max(3.0, 0.55 * len(names) + 1.2)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, h), gridspec_kw={"width_ratios": [1, 1.3]})
    y = range(len(names))
    ax1.barh(list(y), fps, color=colors)
    for i, v in enumerate(fps):
        ax1.text(v, i, f" {v:.0f}", va="center", fontsize=8)
    ax1.set_yticks(list(y), names, fontsize=7)
    ax1.invert_yaxis()
    ax1.set_xlabel("frames per second (end to end)")
    ax1.set_title("Throughput")
    runs = report["runs"]
    ry = list(range(len(runs)))
    left = [0.0] * len(runs)
    for st in STAGES:
        vals = [r["stages"][st]["p50"] for r in runs]
        ax2.barh(ry, vals, left=left, color=STAGE_COLORS[st], label=st)
        left = [a + b for a, b in zip(left, vals)]
    ax2.scatter([r["latency"]["p50"] for r in runs], ry, marker="|", s=200, color="black", label="capture-to-output p50", zorder=3)
    ax2.set_yticks(ry, [f"{r['source']}\n{_label(r)}" for r in runs], fontsize=7)
    ax2.invert_yaxis()
    ax2.set_xlabel("median ms per frame")
    ax2.set_title("Per-stage latency (stacked medians)")
    handles, labels = ax2.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.suptitle(f"{report['machine']['cpu']} ({report['machine']['cores']} cores), {report['date']}", fontsize=9)
    fig.tight_layout(rect=(0, 0.6 / h, 1, 1))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- entry point


def main(argv: Sequence[str] | None = None) -> int:
    global _QUIET
    args = build_parser().parse_args(argv)
    _QUIET = bool(args.quiet)
    if args.worker:
        return worker_main(args.worker)
    for opt in ("json", "md", "plot"):  # fail before minutes of benchmarking, not after
        value = getattr(args, opt)
        if value and not Path(value).expanduser().resolve().parent.is_dir():
            raise UserError(f"folder {Path(value).parent} for --{opt} does not exist")
    report = benchmark(args)
    if args.json:
        write_json(Path(args.json).expanduser(), report)
    if args.md:
        write_text(Path(args.md).expanduser(), format_markdown(report))
    if args.plot:
        write_plot(report, str(Path(args.plot).expanduser()))
    print(format_text(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(main))
