"""Detection every N frames: boxes carried over a still picture, an immediate re-detect when it moves;
and `auto` picking the LiteRT BlazeFace path. Real detector, real photos (no ../shared needed)."""
from __future__ import annotations

import numpy as np
import pytest

from engine.detect import DetectorOptions, EveryNDetector, create_detector
from tests.test_blazeface import astronaut_bgr, grace_hopper_bgr


class CountingDetector:
    """The real LiteRT BlazeFace, counting its calls."""

    def __init__(self):
        self.base = create_detector(DetectorOptions(impl="litert", every=1))
        self.impl, self.runtime = self.base.impl, self.base.runtime  # a FaceDetector, like the one it counts
        self.calls = 0

    def detect(self, frame, timestamp_ms=None):
        self.calls += 1
        return self.base.detect(frame, timestamp_ms)

    def close(self):
        self.base.close()


def test_still_picture_runs_the_detector_every_nth_frame_and_carries_its_boxes():
    base = CountingDetector()
    det = EveryNDetector(base, every=3)
    frame = astronaut_bgr()
    results = [det.detect(frame, t * 33) for t in range(9)]
    assert base.calls == 3  # frames 0, 3, 6
    assert det.detections_run == 3
    assert all(len(r) == 1 for r in results)
    assert all(r[0].box == results[0][0].box for r in results)  # carried unchanged
    det.close()


def test_a_new_picture_is_detected_at_once_not_n_frames_later():
    base = CountingDetector()
    det = EveryNDetector(base, every=10)
    first = astronaut_bgr()
    assert len(det.detect(first, 0)) == 1
    h, w = first.shape[:2]
    import cv2

    other = cv2.resize(grace_hopper_bgr(), (w, h))
    found = det.detect(other, 33)  # frame 1 of 10: due only because the picture changed
    assert base.calls == 2
    assert len(found) == 1 and found[0].box != det.detect(first, 66)[0].box
    det.close()


def test_small_noise_does_not_trigger_a_detection():
    base = CountingDetector()
    det = EveryNDetector(base, every=4)
    frame = astronaut_bgr()
    rng = np.random.default_rng(0)
    for t in range(4):
        noisy = np.clip(frame.astype(np.int16) + rng.integers(-4, 5, frame.shape), 0, 255).astype(np.uint8)
        det.detect(noisy, t * 33)
    assert base.calls == 1  # sensor noise is not motion
    det.close()


def test_options_wrap_streams_only():
    assert isinstance(create_detector(DetectorOptions(impl="litert", every=2, video=True)), EveryNDetector)
    assert not isinstance(create_detector(DetectorOptions(impl="litert", every=2, video=False)), EveryNDetector)
    assert DetectorOptions().every == 2


def test_auto_picks_litert_where_a_tflite_runtime_is_installed(monkeypatch):
    pytest.importorskip("ai_edge_litert")
    from engine.detect import choose_impl

    monkeypatch.delenv("EMOTION_DETECTOR", raising=False)
    assert choose_impl("auto") == "litert"
    monkeypatch.setenv("EMOTION_DETECTOR", "mediapipe")  # an explicit choice still wins
    if pytest.importorskip("mediapipe"):
        assert choose_impl("auto") == "mediapipe"
