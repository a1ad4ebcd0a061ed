"""Local parallelism for `engine.batch`: N worker processes, each loading the models once.

The parent hands out one input at a time to whichever worker is free, over a pipe per worker, so
it always knows which input each worker holds: when a worker dies (a segfault in a decoder, the
OOM killer) only that input is recorded as failed, and a fresh worker takes its place. Workers
ignore Ctrl-C (the parent decides) and clean up their temporary files on SIGTERM.

Events for the caller, `on_event(kind, job_index, payload)`:
  "start" (payload: worker name), "progress" ((frames, announced)), "done" (the summary row).
"""
from __future__ import annotations

import multiprocessing as mp
import signal
from multiprocessing.connection import wait
from typing import Callable

from engine.api import EngineOptions
from engine.batch.job import empty_row
from engine.core.errors import UserError

Event = Callable[[str, int, object], None]


def _worker_main(conn, engine: EngineOptions, out: str, name: str) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the parent decides

    def _term(*_):
        raise SystemExit(143)  # unwinds the running input: its temporary files are removed

    signal.signal(signal.SIGTERM, _term)
    from engine.batch.job import BatchWorker

    try:
        worker = BatchWorker(engine, worker=name)
    except UserError as exc:
        conn.send(("fatal", str(exc)))
        return
    except Exception as exc:  # a runtime that cannot load at all: one line, not a traceback per worker
        conn.send(("fatal", f"cannot load the models: {type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", None))
    try:
        while True:
            job = conn.recv()
            if job is None:
                return
            row = worker.run(job, out, progress=lambda frames, total: conn.send(("progress", (frames, total))))
            conn.send(("done", row))
    except (EOFError, BrokenPipeError):  # the parent is gone
        return
    finally:
        worker.close()


class _Slot:
    def __init__(self, ctx, engine: EngineOptions, out: str, name: str):
        self.name = name
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, engine, out, name), name=name, daemon=True)
        self.proc.start()
        child.close()
        self.job: int | None = None  # the input this worker holds
        self.ready = False  # models loaded
        self.stopping = False  # told to exit


def _exit_reason(proc) -> str:
    proc.join(timeout=2)
    code = proc.exitcode
    if code is not None and code < 0:
        try:
            return signal.Signals(-code).name
        except ValueError:
            pass
    return f"exit code {code}"


def run_local(jobs: list[dict], engine: EngineOptions, out: str, workers: int, on_event: Event,
              should_stop: Callable[[], bool] = lambda: False) -> None:
    """Run `jobs` on `workers` processes; each row arrives through on_event("done", index, row).

    Returns when every job is done, or when `should_stop()` turned true (no new input is started,
    the running ones finish). On KeyboardInterrupt the workers are stopped at once (SIGTERM: their
    temporary files go) and the interrupt is re-raised.
    """
    ctx = mp.get_context("spawn")  # no fork of a threaded parent; each worker imports what it needs
    todo = list(range(len(jobs)))[::-1]  # pop() takes the first job first
    spawned = max(1, min(workers, len(jobs)))
    slots = [_Slot(ctx, engine, out, f"w{i + 1}") for i in range(spawned)]
    try:
        while slots:
            for s in slots:
                if s.ready and s.job is None and not s.stopping:
                    try:
                        if todo and not should_stop():
                            s.job = todo.pop()
                            s.conn.send(jobs[s.job])
                            on_event("start", s.job, s.name)
                        else:
                            s.conn.send(None)
                            s.stopping = True
                    except OSError:  # it died between jobs (BrokenPipeError): the job goes back, the reaper below replaces it
                        if s.job is not None:
                            todo.append(s.job)
                            s.job = None
            wait([s.conn for s in slots] + [s.proc.sentinel for s in slots], timeout=0.5)
            for s in list(slots):
                alive = s.proc.is_alive()  # before draining: whatever it sent before dying is read below
                try:
                    while s.conn.poll():
                        _message(s, s.conn.recv(), on_event)
                except (EOFError, OSError):
                    alive = False
                if alive:
                    continue
                slots.remove(s)
                held = s.job is not None
                _retire(s, jobs, on_event)
                if not s.ready and not held:
                    raise UserError(f"a worker process died while loading the models ({_exit_reason(s.proc)})")
                if not s.stopping and todo and not should_stop():
                    spawned += 1
                    slots.append(_Slot(ctx, engine, out, f"w{spawned}"))
    except BaseException:
        for s in slots:
            if s.proc.is_alive():
                s.proc.terminate()
        for s in slots:
            s.proc.join(timeout=10)
            if s.proc.is_alive():
                s.proc.kill()
        raise
    finally:
        for s in slots:
            s.conn.close()


def _message(s: _Slot, msg: tuple, on_event: Event) -> None:
    kind, payload = msg
    if kind == "fatal":
        raise UserError(payload)
    if kind == "ready":
        s.ready = True
    elif kind == "progress" and s.job is not None:
        on_event("progress", s.job, payload)
    elif kind == "done" and s.job is not None:
        job, s.job = s.job, None
        on_event("done", job, payload)


def _retire(s: _Slot, jobs: list[dict], on_event: Event) -> None:
    """A worker process ended; if it held an input, that input failed."""
    if s.job is not None:
        job, s.job = s.job, None
        on_event("done", job, empty_row(jobs[job], "failed", f"the worker process died ({_exit_reason(s.proc)}) while processing this input",
                                        s.name))
    else:
        s.proc.join(timeout=2)
