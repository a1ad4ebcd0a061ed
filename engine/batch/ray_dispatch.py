"""Handing inputs to Ray actors as they come free, and what happens when one dies (`engine.batch --ray`).

Why apart from engine.batch.cluster (joining Ray, starting the actors): these are the rules for actors that
die, which tests/test_batch_ray_dispatch.py drives deterministically with a stand-in for the few `ray`
calls made here (remote calls, wait, get, kill). An actor that dies fails the input it held, and Ray
restarts it (it loads the models again); it gets the next input only once its `ready()` answers, since a
task sent to an actor that is still restarting fails without running. One not back within RESTART_S, or
back but unable to load the models, is given up; when no actor is left, the inputs not yet run fail with
the reason. On Ctrl-C the actors still running an input are killed (a running task cannot be cancelled)
and their temporary files removed.
"""
from __future__ import annotations

import time
from typing import Callable

from engine.batch.job import empty_row, remove_temp

#: how long a dead actor gets to come back (Ray restarts it and it loads the models) before the batch gives up on it
RESTART_S = 120.0
#: pause before asking a restarting actor's ready() again
RETRY_S = 0.25


def dispatch(ray, actors: list, jobs: list[dict], out: str, on_event: Callable, should_stop: Callable[[], bool],
             restart_s: float = RESTART_S) -> None:
    """Hand `jobs` to whichever actor is free until all are done (or `should_stop()`); rows arrive through `on_event`.

    An actor that dies fails the job it held and is asked `ready()` until Ray has restarted it (a job sent
    before that would fail unrun); one that is not back within `restart_s`, or comes back unable to load
    the models, is given up. When no actor is left, the jobs not yet run fail with the reason."""
    Dispatch(ray, actors, jobs, out, on_event, should_stop, restart_s).run()


class Dispatch:
    """One batch's hand-out state: which actors are free, which run what, which are coming back."""

    def __init__(self, ray, actors: list, jobs: list[dict], out: str, on_event: Callable,
                 should_stop: Callable[[], bool], restart_s: float):
        self.ray, self.jobs, self.out = ray, jobs, out
        self.on_event, self.should_stop, self.restart_s = on_event, should_stop, restart_s
        self.names = {id(a): f"r{i + 1}" for i, a in enumerate(actors)}
        self.free = list(reversed(actors))
        self.todo = list(range(len(jobs)))[::-1]
        self.pending: dict = {}  # ObjectRef -> (actor, job index)
        self.restarting: dict = {}  # ObjectRef of ready() -> actor
        self.retry: list = []  # (not before, actor): a ready() that failed, to ask again
        self.died: dict = {}  # id(actor) -> when it died
        self.alive = len(actors)
        self.why = ""

    def run(self) -> None:
        try:
            while self.pending or (self.todo and not self.should_stop()):
                self.step()
        except BaseException:  # Ctrl-C: a running actor task cannot be cancelled, so its actor goes
            for actor, j in self.pending.values():
                self.ray.kill(actor, no_restart=True)
            for _actor, j in self.pending.values():
                remove_temp(self.out, self.jobs[j]["name"])  # the paths are shared: the driver can tidy what the actors left
            raise

    def step(self) -> None:
        """Give up on actors too long away, ask again those due, hand out jobs, then take one answer."""
        now = time.monotonic()
        self.expire(now)
        self.ask_again(now)
        if self.alive == 0:
            for j in reversed(self.todo):
                self.on_event("done", j, empty_row(self.jobs[j], "failed", f"no Ray worker left ({self.why})"))
            self.todo.clear()
            return
        while self.free and self.todo and not self.should_stop():
            actor, j = self.free.pop(), self.todo.pop()
            self.pending[actor.run.remote(self.jobs[j])] = (actor, j)
            self.on_event("start", j, self.names[id(actor)])
        refs = list(self.pending) + list(self.restarting)
        if not refs:  # only retries waiting
            time.sleep(RETRY_S / 2)
            return
        done, _ = self.ray.wait(refs, num_returns=1, timeout=0.5)
        for ref in done:
            if ref in self.restarting:
                self.restarted(ref)
            else:
                self.finished(ref)

    def expire(self, now: float) -> None:
        """Give up on restarting actors whose ready() has not answered within `restart_s` of their death."""
        for ref, actor in list(self.restarting.items()):
            if now - self.died[id(actor)] > self.restart_s:
                del self.restarting[ref]
                self.give_up(actor)

    def ask_again(self, now: float) -> None:
        """Ask the actors whose last ready() failed (still restarting) once more, or give up on them."""
        for item in [r for r in self.retry if r[0] <= now]:
            self.retry.remove(item)
            actor = item[1]
            if now - self.died[id(actor)] > self.restart_s:
                self.give_up(actor)
            else:
                self.restarting[actor.ready.remote()] = actor

    def restarted(self, ref) -> None:
        """A restarting actor's ready() answered: free again, still coming back, or back without its models."""
        actor = self.restarting.pop(ref)
        try:
            error = self.ray.get(ref)
        except self.ray.exceptions.RayError:  # still coming back: ask again shortly (never sleep here)
            self.retry.append((time.monotonic() + RETRY_S, actor))
            return
        if error:  # restarted, but cannot load the models
            self.give_up(actor, error)
        else:
            self.free.append(actor)

    def finished(self, ref) -> None:
        """A job's answer: its row, or a failed row when its actor died meanwhile (which then restarts)."""
        actor, j = self.pending.pop(ref)
        try:
            row = self.ray.get(ref)
            self.free.append(actor)
        except self.ray.exceptions.RayError as exc:  # the actor died (killed, segfault, node lost)
            row = empty_row(self.jobs[j], "failed", f"the Ray worker died while processing this input ({type(exc).__name__})",
                            self.names[id(actor)])
            self.died[id(actor)] = time.monotonic()
            self.restarting[actor.ready.remote()] = actor
        self.on_event("done", j, row)

    def give_up(self, actor, reason: str | None = None) -> None:
        """Stop waiting for `actor` (for `reason`; None: it was not back in time)."""
        self.alive -= 1
        self.why = reason or f"Ray worker {self.names[id(actor)]} died and was not back within {self.restart_s:.0f} s"
        try:
            self.ray.kill(actor, no_restart=True)
        except Exception:  # noqa: BLE001 - it is gone either way
            pass
