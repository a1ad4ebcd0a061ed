"""What `benchmarks/fps.py` makes of one pipeline run: every frame's record as it comes out, then the
numbers (FPS over the measured window, per-stage and capture-to-output percentiles, faces found, CPU)
and the two checks (throughput against the slowest thread's bound, latency against the stage sum).

The stage times are the pipeline's own (`pkt.ms`, `engine.api.ms_since` deltas): the same numbers the
overlay and the JSONL show.
"""
from __future__ import annotations

import time
from typing import Callable

from benchmarks import cpu_seconds, percentiles

STAGES = ("capture", "detect", "classify", "track", "overlay", "sink")
#: stages that share a thread: the pipeline's throughput is bounded by the slowest THREAD
THREADS = {"capture": ("capture",), "detect": ("detect",), "classify+track": ("classify", "track"),
           "overlay+sink": ("overlay", "sink")}
THROUGHPUT_TARGET = 0.90  # FPS / (1000 / slowest thread's mean ms per frame)
LATENCY_TARGET = 1.2  # capture-to-output p50 / sum of stage medians


class FrameRecorder:
    """The pipeline's `on_frame`: hands each finished frame to `handle` (engine.run's own sinks), then
    records when it came out, which source frame it was, its stage times and its faces.

    The measured window starts when the last of `warmup` frames is out (`start()` covers warmup 0)."""

    def __init__(self, warmup: int, handle: Callable[..., bool]):
        self.warmup = warmup
        self.handle = handle
        self.out_t: list[float] = []  # perf_counter when each frame came out
        self.out_index: list[int] = []  # which source frame it was (live sources drop some)
        self.n_faces: list[int] = []
        self.per_frame: list[dict] = []  # every frame's stage ms (the pipeline's own record is bounded)
        self.sides: list[float] = []  # face box sizes (px): which faces were found, not just how many
        self.first_out_wall: float | None = None  # time.time(): start-up counts from the launch in the parent process
        self.t0 = self.cpu0 = self.t_end = self.cpu_end = None

    def start(self) -> None:
        if self.warmup == 0:
            self.t0, self.cpu0 = time.perf_counter(), cpu_seconds()

    def stop(self) -> None:
        self.t_end, self.cpu_end = time.perf_counter(), cpu_seconds()

    def __call__(self, pkt, image) -> bool:
        if self.first_out_wall is None:
            self.first_out_wall = time.time()
        self.handle(pkt, image)
        now = time.perf_counter()
        self.out_t.append(now)
        self.out_index.append(pkt.index)
        self.n_faces.append(len(pkt.faces))
        self.per_frame.append(dict(pkt.ms))
        self.sides.extend((f.box[2] * f.box[3]) ** 0.5 for f in pkt.faces)
        if len(self.out_t) == self.warmup:  # the measured window starts when the last warm-up frame is out
            self.t0, self.cpu0 = now, cpu_seconds()
        return False

    @property
    def frames(self) -> int:
        return len(self.out_t)

    def summary(self, waits_ms: list[float] | None = None) -> dict:
        """The run's numbers. `waits_ms`: a paced source's wait before each read (in read order), which is
        neither work nor latency: taken out of capture and total, and no throughput check (the source sets
        the rate)."""
        frames, warmup = self.frames, self.warmup
        per_frame = self.per_frame
        waits = None
        if waits_ms is not None:  # camera-like: the wait for the next frame is not work and not latency
            waits = [waits_ms[i] if i < len(waits_ms) else 0.0 for i in self.out_index]
            per_frame = [{**m, "capture": max(0.0, m["capture"] - w), "total": m["total"] - w} for m, w in zip(per_frame, waits)]
            waits = waits[warmup:]
        per_frame = per_frame[warmup:]
        measured = frames - warmup
        window = self.out_t[-1] - self.t0
        stage_stats = {}
        for st in STAGES:
            vals = [m.get(st, 0.0) for m in per_frame]
            stage_stats[st] = {**percentiles(vals), "mean": round(sum(vals) / len(vals), 4)}
        per_face = [m["classify"] / k for m, k in zip(per_frame, self.n_faces[warmup:]) if k]
        fps = measured / window if window > 0 else float("nan")
        lat = percentiles([m["total"] for m in per_frame])
        with_faces = sum(1 for k in self.n_faces if k)  # faces found: every frame counts (it is not a timing)
        return {
            "frames": frames, "warmup": warmup, "measured_frames": measured, "measured_s": round(window, 4),
            "fps": round(fps, 2),
            "stages": stage_stats,
            "latency": lat,
            "classify_ms_per_face": percentiles(per_face) if per_face else None,
            "faces_per_frame": round(sum(self.n_faces) / frames, 3),
            "frames_with_faces": with_faces,
            "frames_with_faces_pct": round(100.0 * with_faces / frames, 1),
            "faces_total": int(sum(self.n_faces)),
            "face_px": percentiles(self.sides, (10, 50, 90)) if self.sides else None,
            "cpu_pct": (round(100.0 * (self.cpu_end - self.cpu0) / (self.t_end - self.t0), 1)
                        if self.t_end > self.t0 else None),
            "frames_read": len(waits_ms) if waits_ms is not None else frames,
            "frames_dropped": len(waits_ms) - frames if waits_ms is not None else 0,
            "pacing_wait_ms": percentiles(waits) if waits else None,
            "checks": checks(stage_stats, lat, fps, paced=waits_ms is not None),
        }


def checks(stage_stats: dict, lat: dict, fps: float, paced: bool) -> dict:
    """FPS against the bound of the slowest thread, and capture-to-output p50 against the stage sum."""
    medians = {st: stage_stats[st]["p50"] for st in STAGES}
    # A thread's capacity is 1 / its MEAN time per frame: with --detect-every N the detector's times are
    # bimodal (0 on skipped frames), and a median would put the bound anywhere between the two modes.
    means = {st: stage_stats[st]["mean"] for st in STAGES}
    thread_ms = {name: sum(means[s] for s in members) for name, members in THREADS.items()}
    thread_median_ms = {name: sum(medians[s] for s in members) for name, members in THREADS.items()}
    slowest = max(thread_ms, key=thread_ms.get)
    bound = 1000.0 / thread_ms[slowest] if thread_ms[slowest] > 0 else float("nan")
    stage_sum = sum(medians.values())
    return {
        "slowest_thread": slowest,
        "thread_mean_ms": {k: round(v, 3) for k, v in thread_ms.items()},
        "thread_median_ms": {k: round(v, 3) for k, v in thread_median_ms.items()},
        "bound_fps": round(bound, 2),
        "throughput_ratio": round(fps / bound, 3) if not paced and bound == bound and bound > 0 else None,
        "throughput_target": THROUGHPUT_TARGET,
        "throughput_ok": bool(bound > 0 and fps / bound >= THROUGHPUT_TARGET) if not paced else None,
        "stage_median_sum_ms": round(stage_sum, 3),
        "latency_ratio": round(lat["p50"] / stage_sum, 3) if stage_sum > 0 else None,
        "latency_target": LATENCY_TARGET,
        "latency_ok": bool(stage_sum > 0 and lat["p50"] / stage_sum <= LATENCY_TARGET),
    }
