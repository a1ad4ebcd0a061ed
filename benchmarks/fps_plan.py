"""The run matrix of `benchmarks/fps.py` and the child processes that run it.

`plan` checks every flag once (one sentence for a bad one, before minutes of benchmarking) and expands
sources x detectors x backends x precisions x threads x detect-every into configurations; `pipeline_job`
describes one configuration for a worker: the `EngineOptions` it builds (`engine_options`) and the
`python -m engine.run` command it is equivalent to (`engine_argv`), which a test keeps in step.
`spawn` runs a job in a fresh interpreter (`fps.py --worker JOB.json`): clean start-up time, peak memory
and CPU numbers, nothing one run loads helping the next.
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path

from engine.core.cliargs import csv_list, positive_int_list
from engine.core.errors import UserError

REPO = Path(__file__).resolve().parent.parent
DETECTORS = ("short", "full", "short+tiles", "full+tiles")
PROGRESS = "fps: "  # child-process stderr lines with this prefix are shown; the rest is kept for errors


# --------------------------------------------------------------------------- planning


def check_runtime(backend: str) -> None:
    """Fail fast, in one sentence, when a requested backend's runtime is not installed."""
    import importlib.util

    from engine.classify.classifier import BACKENDS

    if backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r}: choose from {', '.join(BACKENDS)}")
    if backend == "tflite":
        if not any(importlib.util.find_spec(m) for m in ("ai_edge_litert", "tflite_runtime", "tensorflow")):
            from engine.core.litert import INSTALL_HINT

            raise UserError(f"--backend tflite needs a TFLite runtime: {INSTALL_HINT}")
    elif backend == "onnx" and importlib.util.find_spec("onnxruntime") is None:
        raise UserError("--backend onnx needs onnxruntime: pip install onnxruntime")
    elif backend == "keras" and importlib.util.find_spec("tensorflow") is None:
        raise UserError("--backend keras needs TensorFlow: pip install '.[train]'")


def check_source(spec: str) -> dict:
    """Open the source once (one clear sentence if that fails) and describe it."""
    from engine.io.sources import SourceOptions, open_source

    if spec.strip() and not spec.strip().isdigit() and "://" not in spec and spec != "picam" and spec != "sample":
        spec = str(Path(spec).expanduser().resolve())  # workers run from the repository root
    src = open_source(SourceOptions(spec))
    try:
        return {"spec": spec, "name": src.name, "live": bool(src.live), "fps": float(src.fps or 0.0)}
    finally:
        src.close()


def _detectors(args) -> list[tuple[str, bool]]:
    detectors = []
    for d in csv_list(args.detector):
        base, _, extra = d.partition("+")
        tiles = bool(extra) or args.tiles
        if extra not in ("", "tiles") or not base:
            raise UserError(f"unknown --detector entry {d!r}: use {', '.join(DETECTORS)} or a .tflite path")
        detectors.append((base, tiles))
    if not detectors:
        raise UserError("--detector needs at least one entry")
    return list(dict.fromkeys(detectors))


def plan(args) -> tuple[list[dict], list[dict], list[dict]]:
    """(sources, configurations to run, skipped configurations with the reason)."""
    from engine.classify.classifier import PRECISIONS, artifact_name

    backends, precisions = csv_list(args.backend), csv_list(args.precision)
    if not backends or not precisions:
        raise UserError("--backend and --precision need at least one entry each")
    for prec in precisions:
        if prec not in PRECISIONS:
            raise UserError(f"unknown precision {prec!r}: choose from {', '.join(PRECISIONS)}")
    threads = positive_int_list(args.threads, "--threads")
    detectors = _detectors(args)
    everies = positive_int_list(args.detect_every, "--detect-every")
    if args.compare and args.compare != "fer":
        raise UserError(f"--compare {args.compare!r}: only 'fer' is supported")

    sources = [check_source(s) for s in csv_list(args.source)]
    if not sources:
        raise UserError("--source needs at least one entry")
    model = Path(args.model).expanduser().resolve()
    if not model.exists():
        raise UserError(f"model {model} does not exist: export one (python -m models.train ... --export, or "
                        f"python -m export --model M.keras --out DIR) and pass --model DIR")
    for b in dict.fromkeys(backends):
        check_runtime(b)

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


def max_frames(args, source: dict) -> int | None:
    if args.max_frames:
        return args.max_frames
    return 300 if source["live"] else None  # a camera never ends by itself


# --------------------------------------------------------------------------- one configuration


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
    if max_frames(args, run["source"]):
        argv += ["--max-frames", str(max_frames(args, run["source"]))]
    if args.sink == "video":
        argv += ["--output", os.path.join(out_dir or "OUT", "annotated.mp4")]
    if args.sink in ("video", "jsonl"):
        argv += ["--jsonl", os.path.join(out_dir or "OUT", "events.jsonl")]
    return argv


def pipeline_job(run: dict, args, out_dir: str, label: str) -> dict:
    """What a worker needs to run one configuration (JSON: it travels to the child in a file)."""
    return {"kind": "pipeline", "label": label, "run": run, "warmup": args.warmup, "sink": args.sink,
            "quiet": args.quiet, "realtime": args.realtime, "predecoded": args.predecoded,
            "loop": args.loop, "max_frames": max_frames(args, run["source"]), "detector_impl": args.detector_impl,
            "output": os.path.join(out_dir, "annotated.mp4") if args.sink == "video" else None,
            "jsonl": os.path.join(out_dir, "events.jsonl") if args.sink in ("video", "jsonl") else None,
            "command": "python -m engine.run " + " ".join(shlex.quote(a) for a in engine_argv(run, args, out_dir))}


def engine_options(run: dict, detector_impl: str, mode):
    """The `EngineOptions` that `python -m engine.run` builds from `engine_argv(run, ...)` for a source of this
    RunningMode: the configuration's model, detector and threads, engine.run's defaults and rules for the rest
    (engine.cli.options.engine_options: photos get more crop views and no smoothing)."""
    from engine.cli.options import engine_options as build

    return build(mode, model=run["model"], backend=run["backend"], precision=run["precision"], threads=run["threads"],
                 detector=run["detector"], tiles=run["tiles"], detect_every=run.get("every", 1), detector_impl=detector_impl)


# --------------------------------------------------------------------------- child processes


def spawn(job: dict, script: str, timeout_s: int, quiet: bool) -> dict:
    """Run one job in a fresh interpreter (`script --worker JOB.json`); forward its progress lines; its
    result or its error."""
    with tempfile.TemporaryDirectory(prefix="fps-job-") as tmp:
        job = {**job, "out": os.path.join(tmp, "result.json")}
        job_path = os.path.join(tmp, "job.json")
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "GLOG_minloglevel": "2", "PYTHONUNBUFFERED": "1"}
        job["launch_wall"] = time.time()
        Path(job_path).write_text(json.dumps(job))
        proc = subprocess.Popen([sys.executable, str(Path(script).resolve()), "--worker", job_path],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, errors="replace",
                                env=env, cwd=str(REPO))
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
