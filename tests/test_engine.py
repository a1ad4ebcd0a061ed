"""The engine in-process, with real parts: the MediaPipe (or LiteRT) BlazeFace detector, real
TFLite and ONNX runtimes, real decoding of the shared clips, real face photos, and a fake
camera (tests/fakes.py) that serves real frames at a camera's pace and can be unplugged.

Reliability rules checked here (DESIGN.md, "Pipeline rules of thumb"): a lost camera is
reconnected with back-off while the pipeline keeps running and says so; live sources keep
only the newest frame, files lose nothing; an exception in any stage stops everything and
is reported; a stage stuck forever trips the watchdog; memory stays flat over a long run.
Every pipeline run is bounded (`run_bounded`), so a hang fails a test instead of the suite.

Models: `tiny_export_dir` (conftest: a 1-epoch model, right shapes, poor accuracy) for the
plumbing; the shipped models (engine/zoo) where the answer must be right (astronaut: happy).
"""
from __future__ import annotations

import threading
import time
from collections import deque
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.api import EmotionRecognizer, EngineOptions
from engine.classify.classifier import DEFAULT_MODEL, ClassifierOptions
from engine.faces.detect import DetectorOptions
from engine.pipeline import Pipeline, PipelineError, PipelineOptions
from engine.io.sources import SourceOptions, VideoCaptureSource, open_source
from engine.faces.track import FaceTracker, TrackerOptions
from engine.core.types import Detection, RunningMode
from fakes import CameraRig, astronaut, media, read_clip, two_face_frame
from engine.core.contract import ModelSpec

REPO = Path(__file__).resolve().parents[1]

BACKENDS = [("tflite", "fp32"), ("tflite", "int8"), ("onnx", "fp32")]


# --------------------------------------------------------------------------- helpers


def make_recognizer(model, backend="tflite", precision="int8", video=True, **engine_kw) -> EmotionRecognizer:
    return EmotionRecognizer.create(EngineOptions(
        classifier=ClassifierOptions(model=model, backend=backend, precision=precision),
        detector=DetectorOptions(video=video), **engine_kw))


def run_bounded(pipe: Pipeline, timeout: float = 90.0):
    """pipe.run() on a helper thread; a pipeline still running after `timeout` fails the test."""
    box: dict = {}

    def target():
        try:
            box["stats"] = pipe.run()
        except BaseException as exc:  # noqa: BLE001 (handed back to the test)
            box["error"] = exc

    th = threading.Thread(target=target, name="pipeline-under-test", daemon=True)
    t0 = time.monotonic()
    th.start()
    th.join(timeout)
    if th.is_alive():
        pipe.stop("test timeout")
        th.join(10)
        pytest.fail(f"the pipeline was still running after {timeout:.0f}s: it hangs")
    box["seconds"] = time.monotonic() - t0
    if "error" in box:
        box["error"].seconds = box["seconds"]
        raise box["error"]
    return box["stats"]


def stage_threads_alive(grace_s: float = 2.0) -> list[str]:
    """Names of pipeline stage threads still running after a short grace period."""
    deadline = time.monotonic() + grace_s
    while True:
        alive = [t.name for t in threading.enumerate() if t.name in ("capture", "detect", "classify") and t.is_alive()]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * 4096
    except OSError:
        psutil = pytest.importorskip("psutil")
        return psutil.Process().memory_info().rss


@pytest.fixture(scope="module")
def clip_frames() -> list[np.ndarray]:
    return read_clip(media())


@pytest.fixture(scope="module")
def model_dir(tiny_export_dir):
    return tiny_export_dir


@pytest.fixture
def rec(model_dir):
    r = make_recognizer(model_dir)
    yield r
    r.close()


# --------------------------------------------------------------------------- Python API


@pytest.mark.parametrize("backend,precision", BACKENDS, ids=[f"{b}-{p}" for b, p in BACKENDS])
def test_api_two_faces_probabilities_over_the_models_labels(model_dir, backend, precision):
    frame = two_face_frame()
    labels = ModelSpec.load(model_dir).labels
    with make_recognizer(model_dir, backend, precision, video=False) as r:
        assert r.classifier.backend == backend and r.classifier.path.name == f"emotion_{precision}.{'onnx' if backend == 'onnx' else 'tflite'}"
        assert r.labels == labels
        result = r.process(frame)
    assert len(result.faces) == 2, [f.box for f in result.faces]
    assert {f.id for f in result.faces} == {1, 2}
    h, w = frame.shape[:2]
    left, right = sorted(result.faces, key=lambda f: f.box[0])
    assert left.box[0] + left.box[2] <= w // 2 <= right.box[0], "one face per photo"
    for f in result.faces:
        x, y, bw, bh = f.box
        assert bw > 40 and bh > 40 and x >= 0 and y >= 0 and x + bw <= w and y + bh <= h
        assert 0.5 <= f.score <= 1.0
        assert list(f.probs) == labels and list(f.raw) == labels
        assert sum(f.probs.values()) == pytest.approx(1.0, abs=0.02 if precision == "int8" else 1e-3)
        assert all(0.0 <= p <= 1.0 for p in f.probs.values())
        assert f.emotion == max(f.probs, key=f.probs.get)  # first sighting: the stable emotion is the argmax
        assert f.confidence == pytest.approx(f.probs[f.emotion])
    assert set(result.ms) >= {"detect", "classify", "track"} and all(v >= 0 for v in result.ms.values())


def test_api_float_backends_agree(model_dir):
    """tflite fp32 and onnx fp32 are the same network: same faces in, same probabilities out."""
    frame = two_face_frame()
    out = {}
    for backend in ("tflite", "onnx"):
        with make_recognizer(model_dir, backend, "fp32", video=False) as r:
            faces = sorted(r.process(frame).faces, key=lambda f: f.box[0])
            out[backend] = np.array([[f.raw[k] for k in r.labels] for f in faces])
    np.testing.assert_allclose(out["tflite"], out["onnx"], atol=1e-4)


def test_api_batches_all_faces_of_a_frame_in_one_call(model_dir):
    """ONE classifier call per frame, whatever the number of faces."""
    with make_recognizer(model_dir, video=False) as r:
        calls = []
        real = r.classifier.predict
        r.classifier.predict = lambda faces: (calls.append(len(faces)), real(faces))[1]
        r.process(two_face_frame())
        r.process(np.full((240, 320, 3), 128, np.uint8))  # no face: no work, still well-formed
    assert calls == [2, 0]


def test_flip_tta_averages_each_face_with_its_mirror_in_one_call(model_dir):
    """--tta: one runtime call of 2N faces; each face's probabilities = mean of it and its mirror."""
    from engine.classify.classifier import create_classifier

    faces = np.stack([cv2.resize(cv2.cvtColor(astronaut(), cv2.COLOR_BGR2GRAY)[30:230, 150:350], (48, 48)),
                      np.tile(np.arange(48, dtype=np.uint8) * 5, (48, 1))])[..., None]
    plain = create_classifier(ClassifierOptions(model=model_dir, backend="onnx", precision="fp32"))
    tta = create_classifier(ClassifierOptions(model=model_dir, backend="onnx", precision="fp32", tta=True))
    calls = []
    real = tta._run
    tta._run = lambda x: (calls.append(len(x)), real(x))[1]
    got = tta.predict(faces)
    assert calls == [4]
    want = (plain.predict(faces) + plain.predict(faces[:, :, ::-1])) / 2
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.abs(plain.predict(faces) - want).max() > 1e-5  # the mirror image really changes something
    np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-4)


def test_models_declare_their_interfaces_from_construction(model_dir):
    """engine.core.types.Classifier / FaceDetector: backend, runtime and tta (classifiers), impl and runtime
    (detectors and their wrappers) come from the constructors, nothing is set on them afterwards."""
    from engine.classify.classifier import create_classifier
    from engine.faces.detect import create_detector
    from engine.core.types import Classifier, FaceDetector

    tflite_runtimes = ("ai_edge_litert", "tflite_runtime", "tensorflow.lite")
    clf = create_classifier(ClassifierOptions(model=model_dir, backend="tflite", precision="int8", tta=True))
    assert isinstance(clf, Classifier) and clf.backend == "tflite" and clf.runtime in tflite_runtimes and clf.tta
    onnx = create_classifier(ClassifierOptions(model=model_dir, backend="onnx", precision="fp32"))
    assert isinstance(onnx, Classifier) and onnx.runtime == "onnxruntime" and not onnx.tta
    for opts in (DetectorOptions(impl="litert", every=1), DetectorOptions(impl="litert", every=2),
                 DetectorOptions(impl="litert", tiles=True)):
        det = create_detector(opts)
        assert isinstance(det, FaceDetector) and det.impl == "litert" and det.runtime in tflite_runtimes, type(det)
        det.close()


def test_views_average_nearby_framings_of_each_face_in_one_call(model_dir):
    """CropOptions.views: each face cut at the set framing and its neighbours (margin and shift_y
    +-VIEW_STEP), all faces' views in one classifier call, then one averaged row per face."""
    from dataclasses import replace

    from engine.faces.crop import VIEW_OFFSETS, crop_faces

    views = 5
    frame = two_face_frame()
    with make_recognizer(model_dir, backend="onnx", precision="fp32", video=False) as r:
        dets = r.detect(frame)
        assert len(dets) == 2
        single = r.classify(frame, dets)
        r.options.crop = replace(r.options.crop, views=views)
        calls = []
        real = r.classifier.predict
        r.classifier.predict = lambda faces: (calls.append(len(faces)), real(faces))[1]
        got = r.classify(frame, dets)
        r.classifier.predict = real
        assert calls == [2 * views] and got.shape == single.shape
        batch = crop_faces(frame, dets, r.options.crop)
        # face-major order; the first view of each face is the single crop itself
        one = crop_faces(frame, dets, replace(r.options.crop, views=1))
        assert np.array_equal(batch[::views], one)
        assert len({batch[i].tobytes() for i in range(views)}) == views  # the framings really differ
        for k, (dm, ds) in enumerate(VIEW_OFFSETS[views]):
            o = replace(r.options.crop, views=1, margin=r.options.crop.margin + dm, shift_y=r.options.crop.shift_y + ds)
            assert np.array_equal(batch[k], crop_faces(frame, dets[:1], o)[0])
        want = real(batch).reshape(2, views, -1).mean(1)
        np.testing.assert_allclose(got, want, atol=1e-6)
        assert np.abs(got - single).max() > 1e-5
        np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-4)
        # a frame without faces is still one well-formed, empty answer
        empty = r.process(np.full((240, 320, 3), 128, np.uint8))
        assert empty.faces == [] and r.classify(frame, []).shape == (0, len(r.labels))


def test_shipped_model_astronaut_is_happy():
    """NEEDS THE SHIPPED MODEL (the default, engine/zoo/emonet_f): the smiling astronaut reads `happy`."""
    with EmotionRecognizer.create(EngineOptions(detector=DetectorOptions(video=False))) as r:
        assert r.classifier.path == DEFAULT_MODEL / "emotion_int8.tflite"
        result = r.process(astronaut())
    assert len(result.faces) == 1
    face = result.faces[0]
    assert face.emotion == "happy", face.probs


ZOO_MODELS = sorted(p.name for p in DEFAULT_MODEL.parent.iterdir() if (p / "labels.json").is_file())


@pytest.mark.parametrize("backend", ["tflite", "onnx"])
@pytest.mark.parametrize("name", ZOO_MODELS)
def test_every_shipped_model_reads_the_astronaut_as_happy(name, backend):
    """NEEDS THE SHIPPED MODELS: every folder under engine/zoo is a complete, consistent ship (its
    sidecar names the Keras file it was exported from) whose int8 files read the smiling astronaut as
    `happy` through the engine: a half-copied or mislabelled model fails here, not on a user's camera."""
    from engine.core.contract import sha256_file

    zoo = DEFAULT_MODEL.parent / name
    spec = ModelSpec.load(zoo)
    assert spec.labels == ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    assert spec.source_sha256 == sha256_file(zoo / "emotion.keras")
    opts = EngineOptions(classifier=ClassifierOptions(model=str(zoo), backend=backend), detector=DetectorOptions(video=False))
    with EmotionRecognizer.create(opts) as r:
        result = r.process(astronaut())
    assert [f.emotion for f in result.faces] == ["happy"], [f.probs for f in result.faces]


# --------------------------------------------------------------------------- tracking and hysteresis

LABELS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


def probs(**kw) -> np.ndarray:
    """A 7-class probability vector: the named classes get their values, the rest share what is left."""
    p = np.zeros(len(LABELS))
    for k, v in kw.items():
        p[LABELS.index(k)] = v
    rest = [i for i, lab in enumerate(LABELS) if lab not in kw]
    p[rest] = (1.0 - p.sum()) / len(rest)
    return p


BOX_A = Detection((100, 100, 80, 80), 0.9)
BOX_B = Detection((400, 120, 80, 80), 0.9)


def feed(tracker: FaceTracker, seq: list[np.ndarray], det: Detection = BOX_A) -> list[str]:
    shown = []
    for p in seq:
        (face,) = tracker.update([det], p[None])
        shown.append(face.emotion)
    return shown


def test_tracker_no_flicker_on_alternating_noise():
    """The raw argmax flips every frame; the shown emotion never does."""
    changes = []
    tr = FaceTracker(LABELS, TrackerOptions(), on_change=lambda *a: changes.append(a[:3]))
    a, b = probs(happy=0.55, neutral=0.35), probs(happy=0.35, neutral=0.55)
    raw, shown = [], []
    for i in range(60):
        (face,) = tr.update([BOX_A], (a if i % 2 == 0 else b)[None])
        shown.append(face.emotion)
        raw.append(max(face.raw, key=face.raw.get))
    assert sum(x != y for x, y in zip(raw, raw[1:])) == 59
    assert set(shown) == {"happy"}
    assert changes == [(1, None, "happy")]  # the appearance, nothing after


@pytest.mark.parametrize("confirm", [1, 2, 4])
def test_tracker_sustained_change_switches_after_confirm_frames(confirm):
    changes = []
    tr = FaceTracker(LABELS, TrackerOptions(confirm=confirm), on_change=lambda *a: changes.append(a[:3]))
    shown = feed(tr, [probs(happy=0.8)] * 10 + [probs(sad=0.8)] * 20)
    assert shown[:10] == ["happy"] * 10 and shown[-1] == "sad"
    switch = shown.index("sad")
    assert shown[switch:] == ["sad"] * (30 - switch)  # once switched, it stays
    # The EMA (0.4) puts sad ahead by the hysteresis margin at the 2nd sad frame (index 11);
    # the switch then waits for `confirm` frames in a row.
    assert switch == 11 + confirm - 1
    assert changes == [(1, None, "happy"), (1, "happy", "sad")]


def test_tracker_short_blip_does_not_switch():
    tr = FaceTracker(LABELS, TrackerOptions(ema=1.0, confirm=3))  # no smoothing: hysteresis alone
    assert set(feed(tr, [probs(happy=0.8)] * 5 + [probs(sad=0.8)] * 2 + [probs(happy=0.8)] * 5)) == {"happy"}
    tr = FaceTracker(LABELS, TrackerOptions(ema=1.0, confirm=3))
    assert feed(tr, [probs(happy=0.8)] * 5 + [probs(sad=0.8)] * 3)[-3:] == ["happy", "happy", "sad"]
    tr = FaceTracker(LABELS, TrackerOptions(ema=1.0, confirm=1, hysteresis=0.3))  # a lead below the margin
    assert set(feed(tr, [probs(happy=0.5, sad=0.3)] * 3 + [probs(happy=0.3, sad=0.5)] * 5)) == {"happy"}


def test_on_emotion_change_fires_once_per_stable_change_per_face():
    changes = []
    tr = FaceTracker(LABELS, TrackerOptions(), on_change=lambda fid, old, new, face: changes.append((fid, old, new, face.id)))
    for i in range(30):
        pa = probs(happy=0.8) if i < 10 else probs(surprise=0.8)  # face A: happy -> surprise
        pb = probs(neutral=0.7)  # face B: steady
        faces = tr.update([BOX_A, BOX_B], np.stack([pa, pb]))
        assert [f.id for f in faces] == [1, 2]
    assert changes == [(1, None, "happy", 1), (2, None, "neutral", 2), (1, "happy", "surprise", 1)]


def test_tracker_stable_ids_and_change_events_on_the_two_face_clip(model_dir, clip_frames):
    """Real detector on the real 2-face clip (heads tilting): two ids, each glued to its person,
    and every on_emotion_change event matches a change of that face's shown emotion."""
    events = []
    with make_recognizer(model_dir, on_emotion_change=lambda fid, old, new, face: events.append((i, fid, old, new))) as r:
        shown: dict[int, list[str]] = {}
        for i, frame in enumerate(clip_frames):  # `i` is read by the callback too
            faces = sorted(r.process(frame, int(i * 1000 / 15)).faces, key=lambda f: f.box[0])
            assert [f.id for f in faces] == [1, 2], f"frame {i}: {[(f.id, f.box) for f in faces]}"
            for f in faces:
                shown.setdefault(f.id, []).append(f.emotion)
    expected = []
    for fid, seq in shown.items():
        expected.append((0, fid, None, seq[0]))
        expected += [(k, fid, seq[k - 1], seq[k]) for k in range(1, len(seq)) if seq[k] != seq[k - 1]]
    assert sorted(events) == sorted(expected)


# --------------------------------------------------------------------------- running modes


def test_every_source_carries_its_running_mode(clip_frames, tmp_path):
    """camera / stream = LIVE, video file = VIDEO, image / folder = IMAGE; `live` follows the mode."""
    from engine.io.sources import Source

    rig = CameraRig(clip_frames, fps=30)
    cv2.imwrite(str(tmp_path / "a.png"), clip_frames[0])
    sources = {RunningMode.LIVE: open_source(SourceOptions("0"), opener=rig.open),
               RunningMode.VIDEO: open_source(SourceOptions(str(media()))),
               RunningMode.IMAGE: open_source(SourceOptions(str(tmp_path)))}
    for mode, src in sources.items():
        assert src.mode is mode and src.live == (mode is RunningMode.LIVE), src.name
        src.close()
    assert open_source(SourceOptions(str(tmp_path / "a.png"))).mode is RunningMode.IMAGE

    class OldStyle(Source):  # a subclass written before `mode`: declares `live` only
        live = True

    assert OldStyle().mode is RunningMode.LIVE and OldStyle().live


# --------------------------------------------------------------------------- the fake camera


def test_fake_camera_is_configured_like_a_real_one(clip_frames):
    rig = CameraRig(clip_frames, fps=30)
    src = open_source(SourceOptions("0", width=640, height=480, fps=30), opener=rig.open)
    try:
        assert src.live and src.name == "camera 0" and src.fps == 30
        assert rig.settings[cv2.CAP_PROP_BUFFERSIZE] == 1  # newest frame, not a stale queue
        assert rig.settings[cv2.CAP_PROP_FRAME_WIDTH] == 640 and rig.settings[cv2.CAP_PROP_FRAME_HEIGHT] == 480
        assert rig.settings[cv2.CAP_PROP_FOURCC] == cv2.VideoWriter_fourcc(*"MJPG")
        t0 = time.monotonic()
        frames = [src.read() for _ in range(15)]
        assert time.monotonic() - t0 > 0.3  # paced like a 30 fps camera, not a file
        assert all(f is not None and f.shape == clip_frames[0].shape for f in frames)
    finally:
        src.close()


def test_camera_unplugged_is_reconnected_with_backoff(model_dir, clip_frames):
    """Pull the cable after 20 frames; 3 reopen attempts fail, the 4th works. The pipeline keeps
    running, says so (log + status + the window's redraw), backs off, and the frames resume."""
    rig = CameraRig(clip_frames, fps=30, unplug_after=20, fail_opens=3)
    src = open_source(SourceOptions("0"), opener=rig.open)
    logs, statuses, idle, seen = [], [], [], []
    with make_recognizer(model_dir) as r:
        pipe = Pipeline(r, src, PipelineOptions(max_frames=60, reconnect_min_s=0.1, reconnect_max_s=1.0, watchdog_s=5, quiet=True),
                        on_frame=lambda pkt, img: seen.append((pkt.index, len(pkt.faces))),
                        log=lambda msg: (logs.append(msg), statuses.append(pipe.status)),
                        on_idle=lambda img: idle.append(img))
        stats = run_bounded(pipe, 60)

    assert stats.reconnects == 1
    assert stats.stopped_by == "end" and pipe.status == ""
    # it said so, in the log ...
    assert any("camera 0 stopped delivering frames; reconnecting" in m for m in logs), logs
    assert [m for m in logs if "cannot reopen camera 0" in m] == [
        "warning: cannot reopen camera 0 (attempt 1); next try in 0.1s",
        "warning: cannot reopen camera 0 (attempt 2); next try in 0.2s",
        "warning: cannot reopen camera 0 (attempt 3); next try in 0.4s",
    ]
    assert any("camera 0 is back (after 4 attempts)" in m for m in logs), logs
    # ... and on screen: the status line, and the last frame redrawn under it while waiting
    assert any(s.startswith("camera 0 lost") for s in statuses), statuses
    assert idle and idle[0].shape == clip_frames[0].shape
    # back-off: the gaps between attempts double
    fails, opens = rig.times("open_failed"), rig.times("open")
    assert len(fails) == 3 and len(opens) == 2  # the first open, then the reconnect
    gaps = np.diff(fails + [opens[1]])
    for gap, nominal in zip(gaps, (0.1, 0.2, 0.4)):
        assert nominal - 0.01 <= gap < nominal + 0.5, gaps  # waited its turn, and not much longer
    # frames before and after the loss, faces in them, and time moved on across the gap
    indices = [i for i, _ in seen]
    assert indices == sorted(indices) and indices[0] < 20 and indices[-1] >= 50
    assert sum(1 for i, n in seen if i >= 20 and n == 2) >= 20
    assert rig.served[20] - rig.served[19] >= 0.5 * rig.fps  # a live camera: the outage is skipped, not queued


def test_camera_gone_for_long_keeps_process_alive_until_replugged(model_dir, clip_frames):
    """A camera away for several watchdog periods: no watchdog error (we are reconnecting, not
    stuck), back-off capped at reconnect_max_s, and the frames come back on replug."""
    rig = CameraRig(clip_frames, fps=30, unplug_after=10, fail_opens=None)
    src = open_source(SourceOptions("0"), opener=rig.open)
    logs = []
    with make_recognizer(model_dir) as r:
        pipe = Pipeline(r, src, PipelineOptions(max_frames=30, reconnect_min_s=0.05, reconnect_max_s=0.2, watchdog_s=1.0, quiet=True),
                        log=logs.append)
        threading.Timer(3.5, rig.replug).start()
        stats = run_bounded(pipe, 60)
    assert stats.reconnects == 1 and stats.frames >= 20
    fails = rig.times("open_failed")
    assert len(fails) >= 8, "kept trying while the camera was away"
    assert max(np.diff(fails)) < 0.2 + 0.3, "back-off is capped at reconnect_max_s"
    assert not [m for m in logs if "stuck" in m]


# --------------------------------------------------------------------------- live vs file


def test_live_source_keeps_only_the_newest_frame(model_dir, clip_frames):
    """A consumer at 10 fps behind a 30 fps camera: frames are dropped, never queued up, so the
    latency of what is shown stays bounded instead of growing with the run."""
    rig = CameraRig(clip_frames, fps=30)
    src = open_source(SourceOptions("0"), opener=rig.open)
    out = []

    def slow_consumer(pkt, img):
        out.append((pkt.index, (time.perf_counter_ns() - pkt.t_capture_ns) / 1e9))
        time.sleep(0.1)

    with make_recognizer(model_dir) as r:
        pipe = Pipeline(r, src, PipelineOptions(max_frames=90, quiet=True), on_frame=slow_consumer)
        stats = run_bounded(pipe, 60)
    indices = [i for i, _ in out]
    assert indices == sorted(indices) and len(set(indices)) == len(indices)
    assert pipe._q1.dropped >= 30 and stats.frames <= 60, (pipe._q1.dropped, stats.frames)
    assert max(np.diff(indices)) >= 2  # gaps: the camera moved on while we were busy
    ages = [a for _, a in out]
    # At most the stages' bounded queues' worth of frames (~6 x 0.1 s) waits; a lossless queue
    # behind this consumer would have made the last frames ~6 s old.
    assert max(ages[len(ages) // 2:]) < 1.2, ages


def test_file_source_is_lossless_and_in_order(model_dir):
    """The same slow consumer on a file: every frame, once, in order, on the file's timeline."""
    path = media()
    src = open_source(SourceOptions(str(path), loop=2))
    n = int(cv2.VideoCapture(str(path)).get(cv2.CAP_PROP_FRAME_COUNT))
    seen = []

    def consumer(pkt, img):
        seen.append((pkt.index, pkt.t, len(pkt.faces)))
        time.sleep(0.01)

    with make_recognizer(model_dir) as r:
        pipe = Pipeline(r, src, PipelineOptions(quiet=True), on_frame=consumer)
        stats = run_bounded(pipe, 90)
    assert not src.live and isinstance(src, VideoCaptureSource)
    assert [i for i, _, _ in seen] == list(range(2 * n))
    assert [t for _, t, _ in seen] == pytest.approx([i / src.fps for i in range(2 * n)])
    assert stats.frames == 2 * n and stats.frames_with_faces == 2 * n and stats.faces == 4 * n


def test_stop_at_any_moment_of_a_file_run_is_clean(rec):
    """stop() is what SIGTERM and the q key do: whenever it comes, run() returns its stats (no
    'capture stage failed: Full' from a stage that found the next queue full on the way out)."""
    for delay in (0.05, 0.2, 0.35, 0.5, 0.8):
        pipe = Pipeline(rec, open_source(SourceOptions(str(media()), loop=20)), PipelineOptions(quiet=True, overlay=False))
        threading.Timer(delay, pipe.stop, args=("test",)).start()
        stats = run_bounded(pipe, 30)
        assert stats.stopped_by == "test" and 0 < stats.frames < 20 * 56
        assert not stage_threads_alive()


def test_slow_stage_at_the_end_of_a_file_does_not_stall(model_dir):
    """A classifier at 0.6 s a frame (a Pi, tiles, emulation): the end of the file still reaches
    every stage, so the run finishes with every frame instead of a false watchdog error."""
    with make_recognizer(model_dir) as r:
        real = r.classifier.predict
        r.classifier.predict = lambda faces: (time.sleep(0.6), real(faces))[1]
        pipe = Pipeline(r, open_source(SourceOptions(str(media()))), PipelineOptions(max_frames=6, quiet=True, watchdog_s=3))
        stats = run_bounded(pipe, 30)
    assert stats.frames == 6 and stats.stopped_by == "end"


# --------------------------------------------------------------------------- failures


class _RaiseOnNth:
    """Wrap a real stage object; the Nth call of `method` raises."""

    def __init__(self, inner, method: str, n: int, exc: BaseException):
        self._inner, self._method, self._n, self._exc, self.calls = inner, method, n, exc, 0

    def __getattr__(self, name):
        attr = getattr(self._inner, name)
        if name != self._method:
            return attr

        def wrapped(*a, **kw):
            self.calls += 1
            if self.calls == self._n:
                raise self._exc
            return attr(*a, **kw)
        return wrapped


@pytest.mark.parametrize("stage", ["capture", "detect", "classify", "sink"])
def test_exception_in_any_stage_stops_and_is_reported(model_dir, stage):
    src = open_source(SourceOptions(str(media()), loop=20))
    boom = RuntimeError(f"boom in {stage}")
    on_frame = None
    with make_recognizer(model_dir) as r:
        if stage == "capture":
            src = _RaiseOnNth(src, "read", 30, boom)
        elif stage == "detect":
            r.detector = _RaiseOnNth(r.detector, "detect", 30, boom)
        elif stage == "classify":
            r.classifier = _RaiseOnNth(r.classifier, "predict", 30, boom)
        else:
            calls = []

            def on_frame(pkt, img):
                calls.append(1)
                if len(calls) == 30:
                    raise OSError(28, "No space left on device")
        pipe = Pipeline(r, src, PipelineOptions(quiet=True, watchdog_s=10), on_frame=on_frame)
        with pytest.raises(PipelineError) as info:
            run_bounded(pipe, 60)
    msg = str(info.value)
    assert msg.startswith(f"{stage} stage failed: ") and "\n" not in msg
    assert ("No space left on device" if stage == "sink" else f"boom in {stage}") in msg
    assert info.value.seconds < 10, "reported promptly, not by the watchdog"
    assert pipe.stopping and pipe.stats.frames < 40
    assert not stage_threads_alive()


def test_stuck_detector_trips_the_watchdog(model_dir):
    release = threading.Event()
    with make_recognizer(model_dir) as r:
        real = r.detector.detect
        calls = []

        def detect(frame, ts=None):
            calls.append(1)
            if len(calls) >= 10:
                release.wait()  # a stage that never returns (until the test lets it go)
                return []
            return real(frame, ts)

        r.detector.detect = detect
        pipe = Pipeline(r, open_source(SourceOptions(str(media()), loop=5)), PipelineOptions(quiet=True, watchdog_s=1.0))
        try:
            with pytest.raises(PipelineError, match=r"^no frame for 1s: the detect stage is stuck$") as info:
                run_bounded(pipe, 60)
        finally:
            release.set()
    assert info.value.seconds < 1.0 + 5 + 3  # the watchdog period + one thread join timeout + slack


def test_wedged_camera_trips_the_watchdog(model_dir, clip_frames):
    rig = CameraRig(clip_frames, fps=30, hang_after=10)
    src = open_source(SourceOptions("0"), opener=rig.open)
    with make_recognizer(model_dir) as r:
        pipe = Pipeline(r, src, PipelineOptions(quiet=True, watchdog_s=1.0))
        with pytest.raises(PipelineError, match=r"the capture stage is stuck"):
            run_bounded(pipe, 60)
    assert not stage_threads_alive()  # closing the source released the blocked read


# --------------------------------------------------------------------------- soak


def test_memory_flat_over_10000_frames(model_dir):
    """10,000 frames of the looped 2-face clip: RSS growth between frame 1,000 and the end stays
    under a few MB (tracks, queues, per-frame records and runtime buffers do not accumulate)."""
    path = media()
    n_clip = int(cv2.VideoCapture(str(path)).get(cv2.CAP_PROP_FRAME_COUNT))
    total = 10_000
    src = open_source(SourceOptions(str(path), loop=total // n_clip + 1))
    rss = {}

    def on_frame(pkt, img):
        if pkt.index in (1_000, total - 1):
            rss[pkt.index] = rss_bytes()

    with make_recognizer(model_dir) as r:
        pipe = Pipeline(r, src, PipelineOptions(max_frames=total, quiet=True, overlay=False), on_frame=on_frame)
        # The per-frame stage times are a bounded history by design (50k entries, ~0.5 KB each,
        # for the benchmarks); keep it small here so a real leak is not hidden behind it.
        pipe.stats.per_frame_ms = deque(maxlen=1_000)
        stats = run_bounded(pipe, 600)
    assert stats.frames == total and stats.faces == 2 * total
    growth = rss[total - 1] - rss[1_000]
    print(f"\n{total} frames at {stats.fps:.0f} FPS; RSS {rss[1_000] / 2**20:.1f} -> {rss[total - 1] / 2**20:.1f} MiB")
    assert growth < 4 * 2**20, f"RSS grew {growth / 2**20:.1f} MiB over {total - 1_000} frames"


def test_the_python_photo_recipe_gives_what_engine_run_writes(tmp_path):
    """docs/engine.md's photo recipe (EngineOptions(running_mode=IMAGE) -> create -> process) and
    `python -m engine.run --source photo --jsonl` give the same faces: ids, boxes, emotions, probabilities."""
    import json
    import subprocess
    import sys

    from engine import EmotionRecognizer, EngineOptions, RunningMode

    photo = tmp_path / "two.png"
    cv2.imwrite(str(photo), two_face_frame())
    jsonl = tmp_path / "run.jsonl"
    r = subprocess.run([sys.executable, "-m", "engine.run", "--source", str(photo), "--no-display", "--jsonl", str(jsonl), "--quiet"],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    (cli_event,) = [json.loads(line) for line in jsonl.read_text().splitlines()]
    with EmotionRecognizer.create(EngineOptions(running_mode=RunningMode.IMAGE)) as rec:
        api_event = rec.process(cv2.imread(str(photo))).to_event()
    assert len(cli_event["faces"]) == 2
    assert api_event["faces"] == cli_event["faces"]
