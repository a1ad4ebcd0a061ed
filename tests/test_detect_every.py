"""Detection every N frames: boxes carried over a still picture and following a face that moves, an
immediate re-detect when a face is lost or something moves outside the faces; and `auto` picking the
LiteRT BlazeFace path. Real detector, real photos (no ../shared needed)."""
from __future__ import annotations

import numpy as np
import pytest

from engine.faces.detect import DetectorOptions, EveryNDetector, create_detector
from engine.core.geometry import iou
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
    assert DetectorOptions().every == 4


def face_patch(photo: np.ndarray, size: int = 160) -> np.ndarray:
    """The photo's face with some context around it, `size` px square."""
    import cv2

    x, y, w, h = create_detector(DetectorOptions(impl="litert", every=1)).detect(photo)[0].box
    cx, cy, half = x + w // 2, y + h // 2, int(0.8 * max(w, h))
    return cv2.resize(photo[max(0, cy - half) : cy + half, max(0, cx - half) : cx + half], (size, size), interpolation=cv2.INTER_AREA)


def scene(faces: list[tuple[np.ndarray, int, int]]) -> np.ndarray:
    """A real photo with no face in it (skimage's coffee cup), 640x360, with face patches pasted at (x, y)."""
    import cv2
    from skimage import data

    frame = cv2.resize(cv2.cvtColor(data.coffee(), cv2.COLOR_RGB2BGR), (640, 360), interpolation=cv2.INTER_AREA)
    for patch, x, y in faces:
        frame[y : y + patch.shape[0], x : x + patch.shape[1]] = patch
    return frame


def test_boxes_follow_a_moving_face_between_detections():
    face = face_patch(astronaut_bgr())
    fresh = create_detector(DetectorOptions(impl="litert", every=1))
    base = CountingDetector()
    det = EveryNDetector(base, every=10)
    for t, dx in enumerate((0, 3, 6, 9, 12, 16, 20)):  # a head drifting sideways, 3-4 px per frame
        frame = scene([(face, 200 + dx, 100)])
        got, want = det.detect(frame, t * 33), fresh.detect(frame)
        if t == 0:
            start = got[0].box
        assert len(got) == 1 and len(want) == 1
        # moved by what the face moved (to a working pixel: 4 frame px at 640 wide), same size
        assert abs(got[0].box[0] - (start[0] + dx)) <= 4 and abs(got[0].box[1] - start[1]) <= 4, (t, got[0].box, start)
        assert got[0].box[2:] == start[2:]
        assert iou(got[0].box, want[0].box) > 0.75, (t, got[0].box, want[0].box)  # still on the face (BlazeFace jitters by ~0.1 itself)
    assert base.calls == 1 and det.lost == 0 and det.motion_runs == 0  # followed, not re-detected
    det.close()


def test_a_face_that_changes_is_lost_and_detected_at_once():
    base = CountingDetector()
    det = EveryNDetector(base, every=10)
    det.detect(scene([(face_patch(astronaut_bgr()), 200, 100)]), 0)
    other = face_patch(grace_hopper_bgr())
    found = det.detect(scene([(other, 200, 100)]), 33)  # another face in the same place: no match
    assert base.calls == 2 and det.lost == 1 and len(found) == 1
    det.close()


def test_something_new_outside_the_faces_is_detected_at_once():
    face, other = face_patch(astronaut_bgr()), face_patch(grace_hopper_bgr())
    base = CountingDetector()
    det = EveryNDetector(base, every=10)
    assert len(det.detect(scene([(face, 60, 100)]), 0)) == 1
    assert len(det.detect(scene([(face, 60, 100)]), 33)) == 1 and base.calls == 1
    found = det.detect(scene([(face, 60, 100), (other, 440, 150)]), 66)  # someone walks in
    assert base.calls == 2 and det.motion_runs == 1 and len(found) == 2
    det.close()


def test_auto_picks_litert_where_a_tflite_runtime_is_installed(monkeypatch):
    pytest.importorskip("ai_edge_litert")
    from engine.faces.detect import choose_impl

    monkeypatch.delenv("EMOTION_DETECTOR", raising=False)
    assert choose_impl("auto") == "litert"
    monkeypatch.setenv("EMOTION_DETECTOR", "mediapipe")  # an explicit choice still wins
    if pytest.importorskip("mediapipe"):
        assert choose_impl("auto") == "mediapipe"


def test_a_flat_face_box_is_not_followed_and_motion_there_detects():
    """A blown-out patch matches everywhere with a 'perfect' 1.0: its box must not be walked to a corner; it is
    carried, and since it is not followed, motion inside it re-detects instead of being masked."""
    from engine.core.types import Detection

    class FixedDetector(CountingDetector):
        def detect(self, frame, timestamp_ms=None):
            self.calls += 1
            return [Detection((200, 100, 100, 100), 0.9, [])]

    base = FixedDetector()
    det = EveryNDetector(base, every=10)
    frame = scene([])
    frame[100:200, 200:300] = 255  # a flat, white "face"
    assert det.detect(frame, 0)[0].box == (200, 100, 100, 100)
    assert det.detect(frame.copy(), 33)[0].box == (200, 100, 100, 100) and base.calls == 1  # carried, not walked
    moved = scene([])
    moved[100:200, 240:340] = 255  # it moved: not masked, so detected at once
    det.detect(moved, 66)
    assert base.calls == 2 and det.motion_runs == 1
    det.close()


def test_a_new_frame_size_is_detected_at_once():
    face = face_patch(astronaut_bgr())
    base = CountingDetector()
    det = EveryNDetector(base, every=10)
    small = scene([(face, 200, 100)])
    first = det.detect(small, 0)[0].box
    import cv2

    big = cv2.resize(small, (1280, 720))  # the same picture, twice the size (a camera reconfigured)
    found = det.detect(big, 33)
    assert base.calls == 2 and abs(found[0].box[0] - 2 * first[0]) < 20
    det.close()
