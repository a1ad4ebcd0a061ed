"""Running a batch's pending inputs: on the local worker pool or on Ray, with --max-failures, Ctrl-C and SIGTERM.

Why apart from engine.batch.cli (arguments, resuming, the summary): this is the one stretch of a batch
during which signals are taken over and workers run; whatever ends it (done, --max-failures reached,
Ctrl-C, SIGTERM), the signal handlers are put back, the progress bar is closed and the temporary files a
killed worker left are swept before the caller writes the summary.
"""
from __future__ import annotations

import signal
from pathlib import Path
from typing import Callable

from engine.api import EngineOptions
from engine.batch.job import sweep_temp
from engine.batch.report import Progress


def run_inputs(todo: list[dict], engine: EngineOptions, out: Path, on_row: Callable[[int, dict], None], progress: Progress, *,
               ray: str | None, workers: int, ray_workers: int | None, max_failures: int | None) -> tuple[dict, bool]:
    """Run `todo` (`ray`: None runs the local pool of `workers`; "" starts Ray here; else the address to join, with
    `ray_workers` actors or the cluster's CPUs); each finished row goes to `on_row(index in todo, row)`. No new
    input starts once `max_failures` failed. Returns (the cluster's facts, or {} locally; whether interrupted)."""
    failed = [0]

    def on_event(kind: str, k: int, payload) -> None:
        if kind == "done":
            on_row(k, payload)
            failed[0] += payload["status"] == "failed"
        progress.event(kind, k, payload)

    def should_stop() -> bool:
        return max_failures is not None and failed[0] >= max_failures

    cluster: dict = {}
    interrupted = False
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stops like Ctrl-C
    # and Ctrl-C always does, even when started with SIGINT ignored (a non-interactive shell's `cmd &`)
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        if todo:
            if ray is not None:
                from engine.batch.cluster import run_ray

                cluster = run_ray(todo, engine, str(out), ray_workers, on_event, address=ray or None, should_stop=should_stop)
            else:
                from engine.batch.pool import run_local

                run_local(todo, engine, str(out), workers, on_event, should_stop)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
        progress.close()
        sweep_temp(out)  # what a worker killed during this run left
    return cluster, interrupted
