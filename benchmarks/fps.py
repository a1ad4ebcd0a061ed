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

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence


from engine.core.memory import peak_rss_mb
from benchmarks import (
    SHARED, load_avg_1m, machine_info, now_utc, package_versions, rel, write_json, write_text,
)
from benchmarks.bench_sources import MemorySource, PacedSource, count_frames, decode_frames
from benchmarks.fer_peer import FER_INSTALL, FER_TARGET, run_fer, versus
from benchmarks.fps_plan import DETECTORS, PROGRESS, engine_options, max_frames, pipeline_job, plan, spawn
from benchmarks.fps_report import format_markdown, format_text, label, write_plot
from benchmarks.fps_stats import LATENCY_TARGET, THROUGHPUT_TARGET, FrameRecorder
from engine.core.cliargs import Parser, nonneg_int, positive_int
from engine.faces.detect import DetectorOptions
from engine.core.errors import UserError, cli_main
from engine.core.types import RunningMode

DEFAULT_SOURCE = SHARED / "media" / "head-pose-face-detection-female-and-male.gif"
SINKS = ("video", "jsonl", "none")

_QUIET = False


def log(msg: str) -> None:
    if not _QUIET:
        print(f"{PROGRESS}{msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- arguments


def build_parser() -> argparse.ArgumentParser:
    from engine.classify.classifier import DEFAULT_MODEL

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
    p.add_argument("--model", default=str(DEFAULT_MODEL), help=f"an export directory (or one model file) [engine/zoo/{DEFAULT_MODEL.name}]")
    p.add_argument("--detector", default="short", help=f"comma list of {', '.join(DETECTORS)} [short]")
    p.add_argument("--tiles", action="store_true", help="add tiles to every --detector entry (small faces)")
    p.add_argument("--detect-every", default=str(DetectorOptions.every),
                   help="comma list: run the detector on every Nth frame (or at once when a face is lost or something moved "
                        f"outside the faces), boxes follow the faces between; engine.run's default [{DetectorOptions.every}]")
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


# --------------------------------------------------------------------------- one configuration (worker)


def open_benchmark_source(job: dict):
    """(source, mode, paced): the configuration's source and its RunningMode, fed from memory (--predecoded) or paced
    like a camera (--realtime, then LIVE) when asked; `paced` is the PacedSource, else None."""
    from engine.io.sources import SourceOptions, open_source

    spec, loop = job["run"]["source"]["spec"], job["loop"]
    source = open_source(SourceOptions(spec, loop=loop))
    mode = source.mode
    if job.get("predecoded"):
        if mode is not RunningMode.VIDEO:
            source.close()
            raise UserError("--predecoded needs a video file, not a camera, stream or images")
        _, decoded = decode_frames(spec, loop, job["max_frames"])
        source.close()
        source = MemorySource(source.name, source.fps, decoded)
    paced = None
    if job.get("realtime") is not None and mode is not RunningMode.LIVE:
        if mode is RunningMode.IMAGE:
            source.close()
            raise UserError("--realtime needs a video file, not images")
        paced = source = PacedSource(source, job["realtime"] or source.fps or 30.0)
    return source, source.mode, paced  # paced: LIVE, the mode the pipeline runs it in


def classifier_runtime(classifier) -> str:
    """The runtime that ran the classifier (ai_edge_litert, tflite_runtime, onnx ...), from public names only."""
    return classifier.runtime


def run_config(job: dict) -> dict:
    """Run the pipeline once for one configuration and measure it. Runs in the worker process."""
    from engine.api import EmotionRecognizer
    from engine.cli.options import output_target
    from engine.io.outputs import OutputOptions, Outputs
    from engine.pipeline import Pipeline, PipelineError, PipelineOptions

    warmup, name = int(job["warmup"]), job["label"]
    run = job["run"]
    source, mode, paced = open_benchmark_source(job)
    frames_max = job["max_frames"]
    if paced is not None and frames_max is None:  # a live source never "ends": stop after the file's frames
        frames_max = count_frames(run["source"]["spec"], job["loop"])
    closers = [source.close]
    try:
        t0 = time.perf_counter()
        rec = EmotionRecognizer.create(engine_options(run, job["detector_impl"], mode))
        load_s = time.perf_counter() - t0
        closers.append(rec.close)
        # engine.run's own sinks and per-frame handler (--output/--jsonl): the same work, timed the same way.
        sinks = OutputOptions(**output_target(job["output"], source.mode), jsonl=job["jsonl"] or None)
        outputs = Outputs.open(sinks, source, rec.labels, log=lambda m: log(f"{name}: {m}"))
        closers.append(outputs.close)
        recorder = FrameRecorder(warmup, outputs.handle)
        opts = PipelineOptions(max_frames=frames_max, overlay=outputs.want_pixels, quiet=job.get("quiet", False),
                               progress_every_s=2.0)
        pipe = Pipeline(rec, source, opts, on_frame=recorder, log=lambda m: log(f"{name}: {m}"))
        recorder.start()
        try:
            stats = pipe.run()
        except PipelineError as exc:
            raise UserError(str(exc)) from None
        recorder.stop()
        detector_impl = rec.detector.impl
        runtime = classifier_runtime(rec.classifier)
    finally:
        for close in reversed(closers):
            try:
                close()
            except Exception as exc:
                print(f"warning: while closing: {exc}", file=sys.stderr)

    if recorder.frames <= warmup:
        raise UserError(f"{source.name} gave only {recorder.frames} frame(s), not more than --warmup {warmup}: "
                        f"use --loop N or a smaller --warmup")
    return run_record(job, recorder, paced, {"stopped_by": stats.stopped_by, "detector_impl": detector_impl,
                                             "runtime": runtime, "load_s": load_s})


def run_record(job: dict, recorder: FrameRecorder, paced, ran: dict) -> dict:
    """One configuration's result: what ran (`job`, and `ran`: stopped_by, detector_impl, runtime, load_s of
    run_config) and the recorder's numbers."""
    run = job["run"]
    numbers = recorder.summary(paced.waits_ms if paced is not None else None)
    tail = {k: numbers.pop(k) for k in ("frames_read", "frames_dropped", "pacing_wait_ms", "checks")}
    launch, first = job["launch_wall"], recorder.first_out_wall
    startup = round(first - launch, 3) if first else None
    return {
        "source": run["source"]["name"],
        "backend": run["backend"], "precision": run["precision"], "threads": run["threads"],
        "detector": run["detector"], "tiles": run["tiles"], "detector_impl": ran["detector_impl"],
        "every": run.get("every", 1),
        "runtime": ran["runtime"], "model": run["model"], "model_file": run["model_file"],
        "model_bytes": Path(run["model_file"]).stat().st_size, "sink": job["sink"],
        "command": job["command"]
                   + (f"  (played like a camera at {paced.fps:.3g} FPS: benchmark only)" if paced is not None else "")
                   + ("  (fed frames decoded before timing: benchmark only)" if job.get("predecoded") else ""),
        **numbers,
        "peak_rss_mb": peak_rss_mb(),
        "startup_s": startup,
        "load_s": round(ran["load_s"], 3),
        "stopped_by": ran["stopped_by"],
        "realtime_fps": paced.fps if paced is not None else None,
        "predecoded": bool(job.get("predecoded")),
        **tail,
        "checks": {"startup_s": startup, **tail["checks"]},
    }


def run_job(job: dict) -> dict:
    """One job, in this process: a pipeline configuration or the fer peer; a UserError becomes {"error": ...}."""
    load = load_avg_1m()  # other work on the machine skews every number: recorded with each run
    try:
        result = run_fer(job, log) if job["kind"] == "fer" else run_config(job)
    except UserError as exc:
        return {"error": str(exc)}
    result["load_avg_1m_before"] = load
    return result


def worker_main(job_path: str) -> int:
    job = json.loads(Path(job_path).read_text())
    result = run_job(job)
    Path(job["out"]).write_text(json.dumps(result))
    return 0 if "error" not in result else 2


# --------------------------------------------------------------------------- the benchmark


def execute(job: dict, args) -> dict:
    if args.in_process:
        return run_job({**job, "launch_wall": time.time()})
    return spawn(job, __file__, args.run_timeout, args.quiet)


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
            name = f"[{k}/{n}] {run['source']['name']} {label(run)}"
            log(f"{name}: starting")
            res = execute(pipeline_job(run, args, out_dir, name), args)
            if "error" in res:
                raise UserError(f"{run['source']['name']} {label(run)}: {res['error']}")
            res["command"] = rel(res["command"].replace(out_dir, "OUT"))
            res["model"], res["model_file"] = rel(res["model"]), rel(res["model_file"])
            results.append(res)
            log(f"{name}: {res['fps']:.1f} FPS, capture-to-output p50 {res['latency']['p50']:.1f} ms, "
                f"{res['faces_per_frame']:.2f} faces/frame")
        if args.compare == "fer":
            for src in sources:
                k += 1
                name = f"[{k}/{n}] {src['name']} fer"
                if importlib.util.find_spec("fer") is None:
                    print(FER_INSTALL, file=sys.stderr)
                    fer_results.append({"source": src["name"], "error": FER_INSTALL})
                    continue
                log(f"{name}: starting")
                job = {"kind": "fer", "label": name, "source": src, "warmup": args.warmup, "loop": args.loop,
                       "max_frames": max_frames(args, src), "quiet": args.quiet}
                res = execute(job, args)
                if "error" in res:
                    print(f"warning: fer on {src['name']}: {res['error']}; continuing without it", file=sys.stderr)
                    res["source"] = src["name"]
                else:
                    log(f"{name}: {res['fps']:.1f} FPS, {res['faces_per_frame']:.2f} faces/frame")
                fer_results.append(res)
    by_source = {f["source"]: f for f in fer_results if "error" not in f}
    for r in results:
        r["vs_fer"] = versus(r, by_source.get(r["source"]))
    return {
        "benchmark": "fps",
        "date": now_utc(),
        "machine": machine_info(),
        "versions": package_versions(extra=("fer", "tensorflow") if args.compare == "fer" else ()),
        "settings": {
            "sources": [rel(s["spec"]) for s in sources], "loop": args.loop, "max_frames": args.max_frames,
            "realtime": args.realtime, "predecoded": args.predecoded,
            "warmup": args.warmup, "sink": args.sink, "model": rel(str(Path(args.model).expanduser().resolve())),
            "isolation": "in-process" if args.in_process else "one fresh process per configuration",
            "throughput_bound": "1000 / mean ms per frame of the slowest pipeline thread (capture | detect | classify+track | overlay+sink)",
            "targets": {"throughput_ratio_min": THROUGHPUT_TARGET, "latency_ratio_max": LATENCY_TARGET,
                        "fer_speed_ratio_min": FER_TARGET},
        },
        "runs": results,
        "fer": fer_results,
        "skipped": skipped,
    }


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
