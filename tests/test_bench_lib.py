"""The pieces benchmarks/fps.py is built from, in process and without models: the options a configuration
builds equal what `python -m engine.run` builds from the command the report calls equivalent; the paced and
pre-decoded sources; one run's numbers and checks. (tests/test_benchmarks.py runs the scripts end to end.)"""
from __future__ import annotations

import argparse
import time
from types import SimpleNamespace

import numpy as np
import pytest

from benchmarks.bench_sources import MemorySource, PacedSource
from benchmarks.fps_plan import engine_argv, engine_options, pipeline_job
from benchmarks.fps_stats import STAGES, FrameRecorder
from engine.cli.options import options_from_args
from engine.run import build_parser as engine_parser
from engine.io.sources import Source
from engine.core.types import RunningMode


def _run(**kw) -> dict:
    run = {"source": {"spec": "clip.gif", "name": "clip.gif", "live": False, "fps": 10.0}, "backend": "onnx",
           "precision": "fp32", "threads": 2, "model": "engine/zoo/emonet_s", "model_file": "engine/zoo/emonet_s/emotion_fp32.onnx",
           "detector": "full", "tiles": True, "every": 3, "predecoded": False}
    return {**run, **kw}


def _args(**kw) -> argparse.Namespace:
    base = dict(detector_impl="litert", loop=2, max_frames=None, sink="video", warmup=10, quiet=True, realtime=None,
                predecoded=False)
    return argparse.Namespace(**{**base, **kw})


@pytest.mark.parametrize("mode", list(RunningMode))
@pytest.mark.parametrize("run", [_run(), _run(backend="tflite", precision="int8", threads=1, detector="short", tiles=False, every=1)])
def test_a_configuration_builds_the_options_engine_run_builds_from_its_command(run, mode):
    argv = engine_argv(run, _args(), "/tmp/out")
    assert engine_options(run, "litert", mode) == options_from_args(engine_parser().parse_args(argv), mode)


def test_engine_options_without_a_command_line_are_engine_runs_defaults_and_rules():
    from engine.cli.options import engine_options as build

    for mode in RunningMode:
        assert build(mode) == options_from_args(engine_parser().parse_args(["--source", "x"]), mode)
    photos = build(RunningMode.IMAGE, margin=0.2).resolved()
    assert photos.crop.margin == 0.2 and photos.crop.views > 1 and photos.tracker.ema == 1.0
    with pytest.raises(TypeError, match="no engine flag"):
        build(RunningMode.VIDEO, detect_evry=3)


def test_a_pipeline_job_carries_the_sinks_and_the_equivalent_command():
    job = pipeline_job(_run(), _args(sink="jsonl", max_frames=40), "/tmp/out", "[1/1] clip")
    assert job["output"] is None and job["jsonl"] == "/tmp/out/events.jsonl" and job["max_frames"] == 40
    assert job["command"].startswith("python -m engine.run --source clip.gif --backend onnx")
    assert "--jsonl /tmp/out/events.jsonl" in job["command"] and "--output" not in job["command"]
    camera = _run(source={"spec": "0", "name": "camera 0", "live": True, "fps": 30.0})
    assert pipeline_job(camera, _args(), "/tmp/out", "x")["max_frames"] == 300  # a camera never ends by itself


class _Frames(Source):
    def __init__(self, n: int):
        self.name, self.fps, self.left, self.closed = "fake.gif", 10.0, n, False

    def read(self):
        if not self.left:
            return None
        self.left -= 1
        return np.zeros((4, 4, 3), np.uint8)

    def close(self):
        self.closed = True


def test_memory_source_hands_out_copies_and_ends():
    frames = [np.full((2, 2, 3), i, np.uint8) for i in range(3)]
    src = MemorySource("fake.gif", 10.0, frames)
    got = [src.read() for _ in range(4)]
    assert got[3] is None and not src.live and src.name == "fake.gif (decoded before timing)"
    got[0][:] = 99  # the overlay draws into what it gets: the decoded frames stay as they were
    assert frames[0].max() == 0 and [int(g.max()) for g in got[1:3]] == [1, 2]


def test_paced_source_is_live_and_delivers_at_its_rate():
    inner = _Frames(4)
    src = PacedSource(inner, 50.0)
    t0 = time.perf_counter()
    while src.read() is not None:
        pass
    assert src.live and time.perf_counter() - t0 >= 3 / 50.0 * 0.9  # 4 frames: 3 intervals of 20 ms
    assert len(src.waits_ms) == 4 and src.waits_ms[0] == 0.0 and max(src.waits_ms) > 1.0
    src.close()
    assert inner.closed


def _pkt(index: int, faces: int, **ms) -> SimpleNamespace:
    face = SimpleNamespace(box=(0, 0, 40, 40))
    times = {st: 1.0 for st in STAGES} | {"total": 8.0} | ms
    return SimpleNamespace(index=index, faces=[face] * faces, ms=times)


def test_recorder_measures_after_warmup_and_takes_a_paced_wait_out_of_capture():
    handled = []
    rec = FrameRecorder(1, lambda pkt, image: handled.append(pkt.index))
    rec.start()
    for i in range(4):
        assert rec(_pkt(i, faces=i % 2, capture=3.0, total=10.0), None) is False
    rec.stop()
    assert handled == [0, 1, 2, 3] and rec.frames == 4
    s = rec.summary(waits_ms=[2.0, 2.0, 2.0, 2.0, 2.0])  # a frame more read than came out: one dropped
    assert s["measured_frames"] == 3 and s["frames_read"] == 5 and s["frames_dropped"] == 1
    assert s["stages"]["capture"]["p50"] == 1.0 and s["latency"]["p50"] == 8.0  # the 2 ms wait is not work
    assert s["faces_per_frame"] == 0.5 and s["frames_with_faces"] == 2 and s["face_px"]["p50"] == 40.0
    c = s["checks"]
    assert c["throughput_ratio"] is None and c["throughput_ok"] is None  # paced: the source sets the rate
    assert c["stage_median_sum_ms"] == 6.0 and c["slowest_thread"] in ("classify+track", "overlay+sink")
    plain = rec.summary()
    assert plain["frames_dropped"] == 0 and plain["stages"]["capture"]["p50"] == 3.0 and plain["checks"]["throughput_ratio"] > 0
