"""ms/face is measured one way (engine/timing.py) by export's report and benchmarks/zoo.py."""
from __future__ import annotations

from pathlib import Path

import pytest

from engine import timing
from engine.timing import ms_per_call, ms_per_face

REPO = Path(__file__).resolve().parents[1]


class Clock:
    """A fake perf_counter: time moves only when the fake predict says a call took that long (a loaded
    test machine cannot make the numbers flaky)."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class SlowPredict:
    """A predict that costs `ms` milliseconds, plus `extra` ms on the calls listed (interference)."""

    def __init__(self, clock: Clock, ms: float, slow_calls=frozenset(), extra: float = 0.0):
        self.clock, self.ms, self.slow_calls, self.extra, self.calls = clock, ms, slow_calls, extra, 0

    def __call__(self, faces):
        self.calls += 1
        self.clock.now += (self.ms + (self.extra if self.calls in self.slow_calls else 0.0)) / 1000
        return faces


@pytest.fixture
def clock(monkeypatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(timing.time, "perf_counter", c)
    return c


def test_best_round_mean_after_warmup_and_per_face(clock):
    p = SlowPredict(clock, 2.0)
    assert ms_per_call(p, [0] * 4, repeats=3, min_time=0.01, warmup=2) == pytest.approx(2.0)
    assert p.calls == 2 + 3 * 5  # the warm-up calls, then 5 x 2 ms per 10 ms round
    assert ms_per_face(SlowPredict(clock, 2.0), [0] * 4, repeats=2, min_time=0.01) == pytest.approx(0.5)


def test_interference_in_one_round_does_not_move_the_result(clock):
    # warm-up = calls 1-3; calls 4 and 5 (rounds 1 and 2) slowed by 20 ms each: the best round, 3, wins
    p = SlowPredict(clock, 2.0, slow_calls={4, 5}, extra=20.0)
    assert ms_per_call(p, [0], repeats=3, min_time=0.01) == pytest.approx(2.0)


def test_a_call_slower_than_min_time_is_one_round(clock):
    p = SlowPredict(clock, 50.0)
    assert ms_per_call(p, [0], repeats=2, min_time=0.01, warmup=0) == pytest.approx(50.0) and p.calls == 2


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        ms_per_call(lambda faces: faces, [0], repeats=0)
    with pytest.raises(ValueError):
        ms_per_call(lambda faces: faces, [0], min_time=0)


def test_export_and_zoo_time_with_the_engines_function():
    verify = (REPO / "export" / "verify.py").read_text()
    zoo = (REPO / "benchmarks" / "zoo.py").read_text()
    assert "from engine.timing import" in verify and "ms_per_face(clf.predict" in verify
    assert "from engine.timing import" in zoo and "perf_counter" not in zoo
    assert "perf_counter" not in verify
