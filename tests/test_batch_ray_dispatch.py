"""engine.batch.ray_dispatch.dispatch's rules for actors that die, driven deterministically: a stand-in for the few
`ray` calls it makes (remote calls, wait, get, kill), where each actor's answers are scripted. The real Ray
runs in tests/test_batch.py (a worker killed mid-input); these cover what timing there cannot force: an actor
that is slow to come back, one that never does, one that comes back without its models."""
from __future__ import annotations

import pytest

from engine.batch.ray_dispatch import dispatch


class RayError(Exception):
    pass


class Ref:
    def __init__(self, answer):
        self.answer = answer  # a value, an exception to raise, or NEVER

    def resolved(self) -> bool:
        return self.answer is not NEVER


NEVER = object()


class FakeRay:
    class exceptions:
        RayError = RayError

    def wait(self, refs, num_returns=1, timeout=None):
        done = [r for r in refs if r.resolved()][:num_returns]
        return done, [r for r in refs if r not in done]

    def get(self, ref):
        if isinstance(ref.answer, Exception):
            raise ref.answer
        return ref.answer

    def kill(self, actor, no_restart=True):
        actor.killed = True


class Method:
    def __init__(self, fn):
        self.remote = fn


class Actor:
    """`run` dies on the jobs named in `dies_on`; `ready` answers from a script, one answer per call."""

    def __init__(self, name: str, dies_on=(), ready_script=()):
        self.name, self.dies_on, self.ready_script = name, set(dies_on), list(ready_script)
        self.ran, self.dead, self.killed = [], False, False
        self.run = Method(self._run)
        self.ready = Method(self._ready)

    def _run(self, job):
        if self.dead:  # what Ray does with a task sent to an actor that is restarting
            return Ref(RayError("ActorUnavailableError: sent while restarting"))
        self.ran.append(job["name"])
        if job["name"] in self.dies_on:
            self.dead = True
            return Ref(RayError("ActorDiedError"))
        return Ref({"input": job["name"], "status": "ok", "error": ""})

    def _ready(self):
        answer = self.ready_script.pop(0) if self.ready_script else None
        if answer is None:
            self.dead = False  # back, models loaded
        return Ref(answer)


def jobs(*names):
    return [{"name": n, "label": n, "src": n, "kind": "video"} for n in names]


def run(actors, js, restart_s=60.0):
    rows = {}

    def on_event(kind, j, row):
        if kind == "done":
            rows[js[j]["name"]] = row

    dispatch(FakeRay(), actors, js, "/nonexistent", on_event, lambda: False, restart_s=restart_s)
    return rows


def test_a_dead_actor_gets_work_only_once_it_is_back():
    a = Actor("a", dies_on={"doomed"}, ready_script=[RayError("restarting"), RayError("restarting"), None])
    b = Actor("b")
    js = jobs("doomed", "f0", "f1", "f2", "f3", "f4")
    rows = run([a, b], js)
    assert rows["doomed"]["status"] == "failed" and "died" in rows["doomed"]["error"]
    assert all(rows[f"f{i}"]["status"] == "ok" for i in range(5)), rows  # none was sent to a restarting actor
    assert not a.killed


def test_an_actor_that_never_comes_back_is_given_up_and_the_others_finish():
    a = Actor("a", dies_on={"doomed"}, ready_script=[NEVER])
    b = Actor("b")
    js = jobs("doomed", "f0", "f1", "f2")
    rows = run([a, b], js, restart_s=0.2)
    assert rows["doomed"]["status"] == "failed"
    assert all(rows[f"f{i}"]["status"] == "ok" for i in range(3)) and b.ran == ["f0", "f1", "f2"]


@pytest.mark.parametrize("script, reason", [([NEVER], "not back within"), (["cannot load the models: OSError: gone"], "cannot load the models")])
def test_with_no_actor_left_the_rest_fail_with_the_reason(script, reason):
    a = Actor("a", dies_on={"doomed"}, ready_script=script)
    js = jobs("doomed", "f0", "f1")
    rows = run([a], js, restart_s=0.2)
    assert rows["doomed"]["status"] == "failed"
    for name in ("f0", "f1"):
        assert rows[name]["status"] == "failed" and "no Ray worker left" in rows[name]["error"] and reason in rows[name]["error"]
    assert a.killed and a.ran == ["doomed"]
