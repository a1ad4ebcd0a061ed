"""LiteRT BlazeFace (engine.faces.blazeface) against the real MediaPipe Tasks FaceDetector.

Same model file, same frame: the boxes must agree (IoU > 0.8) and so must the face counts.
Real faces only: photographs that ship inside scikit-image and matplotlib, and the shared
multi-face clip (skipped when ../shared/media is absent). Also engine.core.cpu's Pi 4 / Pi 5 logic.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from engine.core import cpu  # noqa: E402
from engine.faces.blazeface import (  # noqa: E402
    ANCHOR_CONFIGS,
    FULL_RANGE,
    SHORT_RANGE,
    LiteRTFaceDetector,
    ssd_anchors,
    weighted_nms,
)
from engine.core.errors import UserError  # noqa: E402
from engine.core.geometry import iou  # noqa: E402
from engine.core.types import Detection  # noqa: E402

PI_DIR = Path(__file__).resolve().parent / "pi"
MEDIA = Path(__file__).resolve().parents[2] / "shared" / "media"
CLIP = MEDIA / "head-pose-face-detection-female-and-male.gif"
MODELS = [pytest.param(SHORT_RANGE, id="short_range"), pytest.param(FULL_RANGE, id="full_range")]


# ----------------------------------------------------------------------------- helpers
def astronaut_bgr() -> np.ndarray:
    data = pytest.importorskip("skimage.data")
    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


def grace_hopper_bgr() -> np.ndarray:
    cbook = pytest.importorskip("matplotlib.cbook")
    with cbook.get_sample_data("grace_hopper.jpg") as fh:
        buf = np.frombuffer(fh.read(), np.uint8)
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


def two_faces_bgr() -> np.ndarray:
    """Head-and-shoulders crops of both photographs side by side, 240x480 (two real faces)."""
    a = astronaut_bgr()[20:300, 80:360]  # her face is near (177, 82), 95 px
    g = grace_hopper_bgr()[60:460, 70:470]  # hers near (171, 146), 194 px
    return cv2.hconcat([cv2.resize(a, (240, 240), interpolation=cv2.INTER_AREA),
                        cv2.resize(g, (240, 240), interpolation=cv2.INTER_AREA)])


def clip_frames(limit: int | None = None) -> list[np.ndarray]:
    if not CLIP.is_file():
        pytest.skip(f"{CLIP} not present (../shared/media is optional)")
    cap = cv2.VideoCapture(str(CLIP))
    frames = []
    while limit is None or len(frames) < limit:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    assert frames, f"could not read {CLIP}"
    return frames


@pytest.fixture(scope="module")
def mp_tasks():
    """The MediaPipe Tasks API, or a skip (not installed, or this CPU would SIGILL on import)."""
    safe, reason = cpu.mediapipe_safe()
    if not safe:
        pytest.skip(reason)
    mp = pytest.importorskip("mediapipe")
    from mediapipe.tasks.python import BaseOptions, vision

    return mp, BaseOptions, vision


def mediapipe_detector(mp_tasks, model: Path, video: bool = False):
    _, BaseOptions, vision = mp_tasks
    mode = vision.RunningMode.VIDEO if video else vision.RunningMode.IMAGE
    opts = vision.FaceDetectorOptions(base_options=BaseOptions(model_asset_path=str(model)),
                                      min_detection_confidence=0.5, running_mode=mode)
    return vision.FaceDetector.create_from_options(opts)


def mediapipe_detect(mp_tasks, det, frame_bgr, timestamp_ms=None):
    mp = mp_tasks[0]
    rgb = np.ascontiguousarray(cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB))
    image = mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb)
    res = det.detect(image) if timestamp_ms is None else det.detect_for_video(image, timestamp_ms)
    h, w = frame_bgr.shape[:2]
    out = []
    for d in res.detections:
        bb = d.bounding_box
        kps = [(k.x * w, k.y * h) for k in d.keypoints]
        out.append(Detection(box=(bb.origin_x, bb.origin_y, bb.width, bb.height),
                             score=float(d.categories[0].score), keypoints=kps))
    return out


def assert_same(ours: list[Detection], theirs: list[Detection], min_iou=0.8):
    assert len(ours) == len(theirs), (ours, theirs)
    for o in ours:
        best = max(theirs, key=lambda t: iou(o.box, t.box))
        assert iou(o.box, best.box) > min_iou, (o, best)
        assert abs(o.score - best.score) < 0.05
        kp_err = np.abs(np.asarray(o.keypoints) - np.asarray(best.keypoints)).max()
        assert kp_err < 0.05 * max(o.box[2], o.box[3]), (o.keypoints, best.keypoints)


# ----------------------------------------------------------------------------- anchors, NMS
def test_anchor_counts_match_mediapipe_graphs():
    short = ssd_anchors(ANCHOR_CONFIGS[128])
    full = ssd_anchors(ANCHOR_CONFIGS[192])
    assert short.shape == (896, 2) and full.shape == (2304, 2)
    # stride 8: 16x16 cells x 2 anchors first; then stride 16: 8x8 cells x 6 anchors
    np.testing.assert_allclose(short[0], [0.5 / 16, 0.5 / 16])
    np.testing.assert_allclose(short[1], short[0])
    np.testing.assert_allclose(short[512], [0.5 / 8, 0.5 / 8])
    np.testing.assert_allclose(short[-1], [7.5 / 8, 7.5 / 8])
    np.testing.assert_allclose(full[1], [1.5 / 48, 0.5 / 48])
    assert (short > 0).all() and (short < 1).all() and (full > 0).all() and (full < 1).all()


def test_weighted_nms_averages_overlaps_and_keeps_top_score():
    boxes = np.array([[0.1, 0.1, 0.3, 0.3], [0.12, 0.1, 0.32, 0.3], [0.6, 0.6, 0.8, 0.8]])
    kps = np.zeros((3, 6, 2))
    kps[1] += 0.02
    scores = np.array([0.9, 0.6, 0.7])
    out_b, out_k, out_s = weighted_nms(boxes, kps, scores)
    assert out_s == [0.9, 0.7]
    np.testing.assert_allclose(out_b[0][0], (0.1 * 0.9 + 0.12 * 0.6) / 1.5)
    np.testing.assert_allclose(out_k[0], 0.02 * 0.6 / 1.5)
    np.testing.assert_allclose(out_b[1], boxes[2])


# ----------------------------------------------------------------------------- the detector alone
@pytest.mark.parametrize("model", MODELS)
def test_finds_real_faces_without_mediapipe(model):
    det = LiteRTFaceDetector(model, min_score=0.5, threads=1)
    faces = det.detect(astronaut_bgr())
    assert len(faces) == 1
    x, y, w, h = faces[0].box
    assert 150 < x < 200 and 50 < y < 110 and 85 < w < 120 and w == h  # her face, not the suit
    assert faces[0].score > 0.8 and len(faces[0].keypoints) == 6
    (rex, rey), (lex, ley) = faces[0].keypoints[:2]
    assert rex < lex and abs(rey - ley) < 15  # right eye on the image's left, eyes level
    assert len(det.detect(two_faces_bgr())) == 2
    assert det.detect(np.zeros((240, 320, 3), np.uint8)) == []
    assert len(det.detect(cv2.cvtColor(astronaut_bgr(), cv2.COLOR_BGR2GRAY))) == 1
    det.close()


def test_bad_model_is_a_user_error(tmp_path):
    with pytest.raises(UserError):
        LiteRTFaceDetector(tmp_path / "missing.tflite")
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a model")
    with pytest.raises(UserError):
        LiteRTFaceDetector(junk)


def test_no_mediapipe_or_tensorflow_imported():
    import subprocess
    import sys

    code = ("import sys; from engine.faces.blazeface import LiteRTFaceDetector; import engine.core.cpu; "
            "d = LiteRTFaceDetector(); "
            "bad = [m for m in ('mediapipe', 'tensorflow') if m in sys.modules]; "
            "print('BAD', bad) if bad and d.runtime != 'tensorflow.lite' else print('OK')")
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("OK"), out.stdout


# ----------------------------------------------------------------------------- against MediaPipe
@pytest.mark.parametrize("model", MODELS)
def test_matches_mediapipe_on_photographs(mp_tasks, model):
    ours = LiteRTFaceDetector(model)
    theirs = mediapipe_detector(mp_tasks, model)
    try:
        for frame in (astronaut_bgr(), grace_hopper_bgr(), two_faces_bgr()):
            assert_same(ours.detect(frame), mediapipe_detect(mp_tasks, theirs, frame))
    finally:
        theirs.close()


@pytest.mark.parametrize("model", MODELS)
def test_matches_mediapipe_on_the_two_face_clip(mp_tasks, model):
    frames = clip_frames()
    ours = LiteRTFaceDetector(model)
    theirs = mediapipe_detector(mp_tasks, model, video=True)
    agree, ious, n_ours = 0, [], 0
    try:
        for i, frame in enumerate(frames):
            a = ours.detect(frame, timestamp_ms=i * 40)
            b = mediapipe_detect(mp_tasks, theirs, frame, timestamp_ms=i * 40)
            n_ours += len(a)
            agree += len(a) == len(b)
            ious += [max(iou(d.box, t.box) for t in b) for d in a if b]
    finally:
        theirs.close()
    assert agree >= 0.9 * len(frames), f"face counts agree on {agree}/{len(frames)} frames"
    assert n_ours >= 1.8 * len(frames)  # two people in every frame
    assert min(ious) > 0.8 and float(np.mean(ious)) > 0.95, (min(ious), np.mean(ious))


# ----------------------------------------------------------------------------- engine.core.cpu
def test_pi4_cpuinfo_is_unsafe_for_mediapipe_pi5_is_safe():
    pi4 = cpu.cpu_info(str(PI_DIR / "cpuinfo-pi4-cortex-a72.txt"))
    pi5 = cpu.cpu_info(str(PI_DIR / "cpuinfo-pi5-cortex-a76.txt"))
    assert pi4["core"] == "Cortex-A72" and pi4["cpus"] == 4 and "Raspberry Pi 4" in pi4["board"]
    assert "atomics" not in pi4["features"] and "atomics" in pi5["features"]
    pi4["machine"] = pi5["machine"] = "aarch64"
    safe, reason = cpu.mediapipe_safe(pi4)
    assert not safe and "Cortex-A72" in reason and "LiteRT" in reason
    assert cpu.mediapipe_safe(pi5) == (True, "")
    pi4["machine"] = "x86_64"  # the flags only matter on 64-bit ARM
    assert cpu.mediapipe_safe(pi4)[0]


def test_host_cpu_info_and_override(monkeypatch):
    info = cpu.cpu_info()
    assert info["machine"]
    assert isinstance(cpu.mediapipe_safe()[0], bool)
    monkeypatch.setenv(cpu.DETECTOR_ENV, "LiteRT")
    assert cpu.choose_detector()[0] == "litert"
    monkeypatch.setenv(cpu.DETECTOR_ENV, "mediapipe")
    assert cpu.choose_detector()[0] == "mediapipe"
    monkeypatch.setenv(cpu.DETECTOR_ENV, "opencv")
    with pytest.raises(ValueError):
        cpu.choose_detector()
    monkeypatch.delenv(cpu.DETECTOR_ENV)
    assert cpu.choose_detector()[0] in ("mediapipe", "litert")
