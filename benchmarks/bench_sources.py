"""Frame sources that only the benchmarks use, built on the engine's own (engine.io.sources).

`PacedSource` plays a file like a camera (`fps.py --realtime`), `MemorySource` replays frames decoded
before timing (`fps.py --predecoded`, the same frames the fer peer gets). Both are `engine.io.sources.Source`s,
so the real `Pipeline` reads them like any other source.
"""
from __future__ import annotations

import time

import numpy as np

from engine.io.sources import Source, SourceOptions, open_source
from engine.core.types import RunningMode


class PacedSource(Source):
    """A file source that behaves like a camera: live, one frame every 1/fps seconds.

    The capture stage of a camera includes waiting for the next frame; the wait of each read is
    recorded in `waits_ms` (in read order, which is packet order) so the benchmark can report the
    decode part of capture and the latency from the frame being ready to it being output."""

    mode = RunningMode.LIVE

    def __init__(self, inner: Source, fps: float):
        self.inner = inner
        self.name = f"{inner.name} (paced {fps:.3g} FPS)"
        self.fps = fps
        self.waits_ms: list[float] = []
        self._due: float | None = None

    def read(self) -> np.ndarray | None:
        now = time.perf_counter()
        if self._due is None:
            self._due = now
        wait = self._due - now
        if wait > 0:
            time.sleep(wait)
        self._due = max(self._due + 1.0 / self.fps, time.perf_counter())  # a stall does not cause a burst
        frame = self.inner.read()
        if frame is not None:
            self.waits_ms.append(max(wait, 0.0) * 1000.0)
        return frame

    def close(self) -> None:
        self.inner.close()


class MemorySource(Source):
    """A file source replayed from frames decoded before timing.

    Each read hands out a copy, as a camera hands out a fresh buffer: the overlay draws into the
    frame it gets, and the looped clip's frames are shared between loops."""

    mode = RunningMode.VIDEO

    def __init__(self, name: str, fps: float, frames: list[np.ndarray]):
        self.name = f"{name} (decoded before timing)"
        self.fps = fps
        self._frames = frames
        self._i = 0

    def read(self) -> np.ndarray | None:
        if self._i >= len(self._frames):
            return None
        self._i += 1
        return self._frames[self._i - 1].copy()


def count_frames(spec: str, loop: int) -> int:
    """How many frames `loop` plays of a file give (decoded once: the pipeline's own decoder)."""
    src = open_source(SourceOptions(spec))
    n = 0
    try:
        while src.read() is not None:
            n += 1
    finally:
        src.close()
    return n * loop


def decode_frames(spec: str, loop: int, max_frames: int | None) -> tuple[str, list[np.ndarray]]:
    """(the source's name, every frame of `loop` plays, at most `max_frames`), kept in memory.

    One play is decoded; further loops reuse its frames (a live source is read once, up to `max_frames`)."""
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
