"""`engine.batch --ray [ADDRESS]`: the same work as the local pool, on Ray Core actors.

One actor per worker slot (1 CPU each) loads the models once (the same `BatchWorker` the local
processes use) and runs one input at a time; the driver hands the next input to whichever actor is
free. Inputs and outputs travel as paths, so every node must see them under the same path (NFS, a
shared mount): only the summary rows come back through Ray. An actor that dies fails the input it
held, and Ray restarts it (it loads the models again); it gets the next input only once its `ready()`
answers, since a task sent to an actor that is still restarting fails without running. One not back
within RESTART_S is given up; when no actor is left, the inputs not yet run fail with the reason.

`ray` is an optional dependency (`pip install 'emotion-engine[ray]'`), imported only here.
Without ADDRESS a Ray instance is started on this machine (`ray.init(num_cpus=N)`) unless the
process already runs inside one; with ADDRESS (`auto`, `HOST:6379`, `ray://HOST:10001`) it joins
that cluster.
"""
from __future__ import annotations

import os
import time
from typing import Callable

from engine.batch_job import empty_row, remove_temp
from engine.errors import UserError

#: how long a dead actor gets to come back (Ray restarts it and it loads the models) before the batch gives up on it
RESTART_S = 120.0
#: pause before asking a restarting actor's ready() again
RETRY_S = 0.25
INSTALL = "--ray needs Ray: pip install 'emotion-engine[ray]' (or: pip install 'ray>=2.9')"


class _RayWorker:
    """The actor: a `BatchWorker` in a Ray worker process."""

    def __init__(self, engine_args: dict, out: str, name: str):
        import socket

        from engine.batch_job import BatchWorker

        self.out = out
        self.error = None
        self.worker = None
        try:
            self.worker = BatchWorker(engine_args, worker=f"{name}@{socket.gethostname()}")
        except UserError as exc:
            self.error = str(exc)
        except Exception as exc:  # noqa: BLE001 - reported as one line by the driver
            self.error = f"cannot load the models: {type(exc).__name__}: {exc}"

    def ready(self) -> str | None:
        return self.error

    def run(self, job: dict) -> dict:
        return self.worker.run(job, self.out)


def _import_ray():
    try:
        import ray
    except ImportError:
        raise UserError(INSTALL) from None
    return ray


def run_ray(jobs: list[dict], engine_args: dict, out: str, workers: int | None, on_event: Callable,
            address: str | None = None, should_stop: Callable[[], bool] = lambda: False) -> dict:
    """Run `jobs` on Ray actors; rows arrive through on_event("done", index, row). Returns cluster facts."""
    ray = _import_ray()
    started = False
    if not ray.is_initialized():
        kw = {"log_to_driver": False, "logging_level": "warning", "configure_logging": True}
        try:
            if address:
                ray.init(address=address, **kw)
            else:
                ray.init(num_cpus=workers or os.cpu_count() or 1, include_dashboard=False, **kw)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise UserError(f"cannot start or reach Ray{f' at {address}' if address else ''}: {str(exc).splitlines()[0]}") from None
        started = True
    try:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        # one CPU per actor: more actors than the cluster's CPUs would never be scheduled (ready() would hang)
        n = max(1, min(workers or cpus, cpus, len(jobs)))
        actor_cls = ray.remote(num_cpus=1, max_restarts=-1, max_task_retries=0)(_RayWorker)
        actors = [actor_cls.remote(engine_args, out, f"r{i + 1}") for i in range(n)]
        errors = [e for e in ray.get([a.ready.remote() for a in actors]) if e]
        if errors:
            raise UserError(errors[0])
        dispatch(ray, actors, jobs, out, on_event, should_stop)
        return {"ray_address": address or "local", "ray_cpus": cpus, "ray_nodes": len(ray.nodes()), "actors": n}
    finally:
        if started:
            ray.shutdown()


def dispatch(ray, actors: list, jobs: list[dict], out: str, on_event: Callable, should_stop: Callable[[], bool],
             restart_s: float = RESTART_S) -> None:
    """Hand `jobs` to whichever actor is free until all are done (or `should_stop()`); rows arrive through `on_event`.

    An actor that dies fails the job it held and is asked `ready()` until Ray has restarted it (a job sent
    before that would fail unrun); one that is not back within `restart_s`, or comes back unable to load
    the models, is given up. When no actor is left, the jobs not yet run fail with the reason."""
    names = {id(a): f"r{i + 1}" for i, a in enumerate(actors)}
    free = list(reversed(actors))
    todo = list(range(len(jobs)))[::-1]
    pending: dict = {}  # ObjectRef -> (actor, job index)
    restarting: dict = {}  # ObjectRef of ready() -> actor
    retry: list = []  # (not before, actor): a ready() that failed, to ask again
    died: dict = {}  # id(actor) -> when it died
    alive = len(actors)
    why = ""

    def give_up(actor, reason: str | None = None) -> None:
        """Stop waiting for `actor` (for `reason`; None: it was not back in time)."""
        nonlocal alive, why
        alive, why = alive - 1, reason or f"Ray worker {names[id(actor)]} died and was not back within {restart_s:.0f} s"
        try:
            ray.kill(actor, no_restart=True)
        except Exception:  # noqa: BLE001 - it is gone either way
            pass

    try:
        while pending or (todo and not should_stop()):
            now = time.monotonic()
            for ref, actor in list(restarting.items()):
                if now - died[id(actor)] > restart_s:
                    del restarting[ref]
                    give_up(actor)
            for item in [r for r in retry if r[0] <= now]:
                retry.remove(item)
                actor = item[1]
                if now - died[id(actor)] > restart_s:
                    give_up(actor)
                else:
                    restarting[actor.ready.remote()] = actor
            if alive == 0:
                for j in reversed(todo):
                    on_event("done", j, empty_row(jobs[j], "failed", f"no Ray worker left ({why})"))
                todo.clear()
                continue
            while free and todo and not should_stop():
                actor, j = free.pop(), todo.pop()
                pending[actor.run.remote(jobs[j])] = (actor, j)
                on_event("start", j, names[id(actor)])
            refs = list(pending) + list(restarting)
            if not refs:  # only retries waiting
                time.sleep(RETRY_S / 2)
                continue
            done, _ = ray.wait(refs, num_returns=1, timeout=0.5)
            for ref in done:
                if ref in restarting:
                    actor = restarting.pop(ref)
                    try:
                        error = ray.get(ref)
                    except ray.exceptions.RayError:  # still coming back: ask again shortly (never sleep here)
                        retry.append((time.monotonic() + RETRY_S, actor))
                        continue
                    if error:  # restarted, but cannot load the models
                        give_up(actor, error)
                    else:
                        free.append(actor)
                    continue
                actor, j = pending.pop(ref)
                try:
                    row = ray.get(ref)
                    free.append(actor)
                except ray.exceptions.RayError as exc:  # the actor died (killed, segfault, node lost)
                    row = empty_row(jobs[j], "failed", f"the Ray worker died while processing this input ({type(exc).__name__})",
                                    names[id(actor)])
                    died[id(actor)] = time.monotonic()
                    restarting[actor.ready.remote()] = actor
                on_event("done", j, row)
    except BaseException:  # Ctrl-C: a running actor task cannot be cancelled, so its actor goes
        for actor, j in pending.values():
            ray.kill(actor, no_restart=True)
        for _actor, j in pending.values():
            remove_temp(out, jobs[j]["name"])  # the paths are shared: the driver can tidy what the actors left
        raise
