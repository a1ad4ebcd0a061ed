"""Milliseconds per face: measured one way for every report that prints the number.

Export's report (export_report.json/.md, and the model cards built from it) and benchmarks/zoo.py
both call `ms_per_call` on a classifier's `predict`; the convention they quote is batch 4
(`BATCH`) with one runtime thread, on the CPU class the report names.

The method: `warmup` untimed calls (allocation, XNNPACK weight packing, the resize to this batch),
then `repeats` rounds, each calling `predict` back to back for at least `min_time` seconds; the result
is the lowest round mean. Why the best round mean rather than a median of single calls: on a shared
machine interference only ever adds time, so the fastest round is the closest estimate of what the
model costs on this CPU and moves least between runs (export and zoo used to disagree by the load of
the moment); a round's mean also does not time the timer, which a single 0.05 ms call would.
"""
from __future__ import annotations

import time
from typing import Callable

#: the batch ms/face is quoted at (a frame with a few faces), with one runtime thread
BATCH = 4
WARMUP = 3
#: export's defaults (about half a second per file); benchmarks/zoo.py takes --repeats / --min-time
REPEATS = 5
MIN_TIME_S = 0.1


def ms_per_call(predict: Callable, faces, repeats: int = REPEATS, min_time: float = MIN_TIME_S,
                warmup: int = WARMUP) -> float:
    """Best-of-`repeats` mean milliseconds of one `predict(faces)` call (each repeat runs >= `min_time` s).

    Args:
        predict: a classifier's `predict` (any faces -> probabilities callable).
        faces: the batch to time, passed to every call.
        repeats: timed rounds; the lowest round mean is returned.
        min_time: seconds each round runs at least (at least one call).
        warmup: untimed calls first.

    Raises:
        ValueError: repeats < 1 or min_time <= 0.
    """
    if repeats < 1 or min_time <= 0:
        raise ValueError("repeats must be at least 1 and min_time positive")
    for _ in range(warmup):
        predict(faces)
    best = float("inf")
    for _ in range(repeats):
        calls = 0
        t0 = time.perf_counter()
        while True:
            predict(faces)
            calls += 1
            dt = time.perf_counter() - t0
            if dt >= min_time:
                break
        best = min(best, dt / calls)
    return best * 1000.0


def ms_per_face(predict: Callable, faces, **kw) -> float:
    """`ms_per_call` divided by the batch size."""
    return ms_per_call(predict, faces, **kw) / len(faces)
