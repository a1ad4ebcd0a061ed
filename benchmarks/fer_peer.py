"""The `fer` PyPI package as the peer of `benchmarks/fps.py --compare fer`: `FER(mtcnn=False).detect_emotions`
on the same decoded frames as the pipeline, timed per frame, and how a pipeline run compares with it.

fer is a comparison only, never a project dependency: it needs TensorFlow and is imported in the worker
process that runs it.
"""
from __future__ import annotations

import os
import time
from typing import Callable

from benchmarks import cpu_seconds, percentiles
from engine.core.memory import peak_rss_mb
from benchmarks.bench_sources import decode_frames
from engine.core.errors import UserError

FER_TARGET = 5.0  # our FPS / fer's FPS
FER_INSTALL = ("fer is not installed: pip install --no-deps fer==25.10.3 pandas requests tqdm Pillow matplotlib "
               "'setuptools<81' (plus tensorflow or tensorflow-cpu); it is a comparison only, never a project dependency")


def import_fer():
    """fer's `FER` class; one sentence (with the install line) when fer cannot be imported."""
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


def run_fer(job: dict, log: Callable[[str], None]) -> dict:
    """`FER(mtcnn=False).detect_emotions(frame)` on the same decoded frames, timed per frame."""
    launch, warmup = job["launch_wall"], int(job["warmup"])
    FER = import_fer()
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
    e2e_fps = None if job["source"].get("live") else streaming_fps(detector, job, warmup)
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


def streaming_fps(detector, job: dict, warmup: int) -> float | None:
    """fer as its users run a clip: decode a frame, detect_emotions, next. The same decoder
    (engine.io.sources) and frames as the pipeline, so both sides of the ratio include decoding."""
    from engine.io.sources import SourceOptions, open_source

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


def versus(run: dict, peer: dict | None) -> dict | None:
    """A pipeline run's `vs_fer` entry: its FPS against fer's on the same source (None without a peer)."""
    if peer is None:
        return None
    return {
        "fer_fps": peer["fps"],
        "speed_ratio": round(run["fps"] / peer["fps"], 2) if peer["fps"] > 0 else None,
        "fer_fps_with_decoding": peer.get("fps_with_decoding"),
        # a pipeline fed decoded frames against fer decoding would flatter us: not reported
        "speed_ratio_with_decoding": (round(run["fps"] / peer["fps_with_decoding"], 2)
                                      if peer.get("fps_with_decoding") and not run.get("predecoded") else None),
        "fer_faces_per_frame": peer["faces_per_frame"],
        "fer_frames_with_faces": peer["frames_with_faces"],
        "target_ratio": FER_TARGET,
        "ratio_ok": bool(peer["fps"] > 0 and run["fps"] / peer["fps"] >= FER_TARGET),
    }
