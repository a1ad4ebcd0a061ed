"""ms/face is measured one way (engine/core/timing.py) by export's report and benchmarks/zoo.py."""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from engine.core import timing
from engine.core.timing import ms_per_call, ms_per_face

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "engine" / "zoo" / "emonet_f"
ONE_FILE = ("labels.json", "emotion_int8.tflite")


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


@pytest.fixture
def int8_model(request, tmp_path) -> Path:
    """A model directory with one model file (labels.json + emotion_int8.tflite): the shipped fast model's,
    else the tiny test export's."""
    src = SHIPPED if all((SHIPPED / f).is_file() for f in ONE_FILE) else request.getfixturevalue("tiny_export_dir")
    for name in ONE_FILE:
        shutil.copy(src / name, tmp_path / name)
    return tmp_path


def test_export_and_zoo_time_with_the_engines_function(int8_model, monkeypatch):
    """export's verification row and benchmarks/zoo.py's ms/face (its models and fer's) are engine.core.timing's
    number: with ms_per_call replaced by a spy, every timing goes through it and the rows carry its answer."""
    from benchmarks import zoo
    from export import verify
    from models.data import Dataset

    calls: list[int] = []

    def spy(predict, faces, **kw):
        predict(faces)  # a real call on the real model, timed by nobody
        calls.append(len(faces))
        return 8.0

    real = timing.ms_per_call
    monkeypatch.setattr(timing, "ms_per_call", spy)  # what ms_per_face calls
    for mod in (verify, zoo):  # a module that imported ms_per_call holds its own name for it: the spy too
        for name, value in list(vars(mod).items()):
            if value is real:
                monkeypatch.setattr(mod, name, spy)

    labels = json.loads((int8_model / "labels.json").read_text())["labels"]
    faces = np.random.default_rng(0).integers(0, 256, (6, 48, 48, 1), dtype=np.uint8)
    val = Dataset(faces, np.zeros(6, np.int32), tuple(labels), "test")
    row = verify.verify_artifact(int8_model / "emotion_int8.tflite", val, np.full((6, len(labels)), 1 / len(labels)))
    assert calls == [timing.BATCH] and row["ms_per_face"] == 8.0 / timing.BATCH

    calls.clear()
    args = argparse.Namespace(keras=False, data=None, max_faces=None, repeats=1, min_time=0.01)
    [row] = zoo.bench_model(int8_model, args, [1, 4], [1], {})
    assert calls == [1, 4] and row["ms_per_face"] == {"b1_t1": 8.0, "b4_t1": 2.0}

    class FerModel:  # fer's model stands in: only the timing path is under test
        def __init__(self, path, threads):
            pass

        def predict(self, faces):
            return faces

    monkeypatch.setattr(zoo, "_FerModel", FerModel)
    calls.clear()
    row = zoo.bench_fer(int8_model / "emotion_int8.tflite", args, [4], [1])
    assert calls == [4] and row["ms_per_face"] == {"b4_t1": 2.0}
