"""`python -m engine.run` as a user runs it: a real subprocess each time.

Bad input of every kind ends in ONE line on stderr ("error: ..."), exit status 2 and no
traceback; SIGTERM and Ctrl-C leave a playable mp4 and a JSONL file of whole lines; the JSONL
schema; photos, folders and the packaged sample. Real detector, real runtimes, real clips
(../shared/media, skipped cleanly where absent) and real photos (scikit-image, matplotlib).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from fakes import assert_one_line_error, astronaut, grace_hopper, media, two_face_frame
from engine.core.contract import ModelSpec

REPO = Path(__file__).resolve().parents[1]
#: Lines native runtimes print on stderr by themselves (TensorFlow via mediapipe, LiteRT, glog);
#: ignored where a test looks for the engine's own lines after the models have loaded.
NATIVE_LOG = re.compile(r"^(INFO: |WARNING: All log messages|WARNING: Logging before|[IWE]\d{4} |To enable the following"
                        r"|Exception ignored|\s)")


def run_cli(*args, timeout: float = 120, env: dict | None = None, code: str | None = None) -> subprocess.CompletedProcess:
    """Run the CLI (or `python -c code`) in the repository; a hang fails the test after `timeout`."""
    cmd = [sys.executable, "-c", code] if code else [sys.executable, "-m", "engine.run"]
    return subprocess.run([*cmd, *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def engine_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln and not NATIVE_LOG.match(ln)]


@pytest.fixture(scope="module")
def model_dir(tiny_export_dir):
    return tiny_export_dir


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """astronaut.png (1 face), blank.png (no face), hopper.jpg (1 face), two.png (both), notes.txt (not an image)."""
    d = tmp_path_factory.mktemp("photos")
    cv2.imwrite(str(d / "astronaut.png"), astronaut())
    cv2.imwrite(str(d / "hopper.jpg"), grace_hopper())
    cv2.imwrite(str(d / "two.png"), two_face_frame())
    cv2.imwrite(str(d / "blank.png"), np.full((240, 320, 3), 128, np.uint8))
    (d / "notes.txt").write_text("not an image")
    return d


# --------------------------------------------------------------------------- bad input


def _junk(path: Path, data: bytes | None = None) -> Path:
    path.write_bytes(data if data is not None else np.random.default_rng(0).integers(0, 256, 20_000, np.uint8).tobytes())
    return path


BAD_SOURCES = {
    "missing file": (lambda d: d / "nope.mp4", "does not exist"),
    "corrupt video": (lambda d: _junk(d / "junk.mp4"), "cannot open source junk.mp4"),
    "undecodable gif": (lambda d: _junk(d / "junk.gif", b"GIF89a" + bytes(range(256)) * 8), "cannot read any frame from junk.gif"),
    "corrupt image": (lambda d: _junk(d / "junk.jpg"), "cannot read image"),
    "folder without images": (lambda d: (d / "empty").mkdir() or (d / "empty"), "has no images"),
    "no camera at index 9": (lambda d: "9", "cannot open camera 9"),
    "no /dev/video99": (lambda d: "/dev/video99", "no camera at /dev/video99"),
    "bad stream URL": (lambda d: "rtsp://127.0.0.1:9/none", "cannot open source rtsp://127.0.0.1:9/none"),
}


@pytest.mark.parametrize("case", list(BAD_SOURCES))
def test_bad_source_is_one_sentence(case, tmp_path):
    make, fragment = BAD_SOURCES[case]
    if case == "no camera at index 9" and Path("/dev/video9").exists():
        pytest.skip("this machine has a /dev/video9")
    # A source is checked before any model loads: the shipped model need not exist for these.
    line = assert_one_line_error(run_cli("--source", make(tmp_path), "--no-display", timeout=60), fragment)
    if "camera" in case:
        assert "camera camera" not in line


BAD_FLAGS = {
    "--threads 0": (["--threads", "0"], "--threads: must be at least 1"),
    "--min-face-score 2": (["--min-face-score", "2"], "--min-face-score: must be between 0 and 1"),
    "--min-face-score abc": (["--min-face-score", "abc"], "'abc' is not a number"),
    "--loop 0": (["--loop", "0"], "--loop: must be at least 1"),
    "--margin -1": (["--margin", "-1"], "--margin: must not be negative"),
    "--width 0": (["--width", "0"], "--width: must be at least 1"),
    "--views 3": (["--views", "3"], "--views: invalid choice: 3"),
    "unknown flag": (["--frobnicate"], "unrecognized arguments: --frobnicate"),
    "unknown backend": (["--backend", "torch"], "--backend: invalid choice: 'torch' (choose from 'tflite', 'onnx', 'keras')"),
    "unknown precision": (["--precision", "int4"], "--precision: invalid choice: 'int4'"),
    "--min-face-score 1": (["--min-face-score", "1"], "--min-face-score: must be between 0 and 1 (exclusive)"),
    "--detector-impl x": (["--detector-impl", "x"], "--detector-impl: invalid choice: 'x'"),
    "--ema 0": (["--ema", "0"], "--ema: must be between 0 and 1"),
}


def test_a_bad_option_is_refused_before_the_source_opens(tmp_path):
    """Each value is checked once, by the options' own tables, before anything opens: a bad backend with a
    missing source names the backend, and a library OptionError names the flag, not the field."""
    assert_one_line_error(run_cli("--source", tmp_path / "missing.mp4", "--no-display", "--backend", "torch", timeout=60),
                          "--backend: invalid choice")
    from engine.cli.options import flag_error
    from engine.core.errors import OptionError

    assert str(flag_error(OptionError("DetectorOptions", "min_score", "must be between 0 and 1"))) == "--min-face-score: must be between 0 and 1"
    with pytest.raises(OptionError, match="DetectorOptions.min_score"):
        from engine.faces.detect import DetectorOptions

        DetectorOptions(min_score=1.0)


@pytest.mark.parametrize("case", list(BAD_FLAGS))
def test_bad_flag_value_is_one_sentence(case):
    args, fragment = BAD_FLAGS[case]
    assert_one_line_error(run_cli("--source", "sample", "--no-display", *args, timeout=60), fragment)


def test_missing_model_is_one_sentence(tmp_path):
    assert_one_line_error(run_cli("--source", "sample", "--no-display", "--model", tmp_path / "none"),
                          f"--model: {tmp_path / 'none'} does not exist")


def test_an_output_that_cannot_be_opened_names_its_option_then_its_flag(model_dir, tmp_path):
    """The library names the OutputOptions field; engine.run says the flag the user typed."""
    from engine.io.outputs import OutputError, OutputOptions, Outputs
    from engine.io.sources import SourceOptions, open_source

    missing = tmp_path / "nope"
    with pytest.raises(OutputError, match=r"^OutputOptions\.jsonl: folder .*nope does not exist$"):
        Outputs.open(OutputOptions(jsonl=missing / "ev.jsonl"), open_source(SourceOptions("sample")), ["happy"])
    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "a.png"), astronaut())
    assert_one_line_error(run_cli("--source", "sample", "--no-display", "--model", model_dir, "--jsonl", missing / "ev.jsonl"),
                          f"error: --jsonl: folder {missing} does not exist")
    assert_one_line_error(run_cli("--source", photos, "--no-display", "--model", model_dir, "--output", photos),
                          "error: --output: must not be the source folder")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux): every write fails with ENOSPC")
def test_a_jsonl_write_that_fails_midrun_names_its_flag(model_dir):
    """A sink that opened fine but cannot write (disk full) is an OutputError too: one line naming the flag."""
    import time

    from engine.io.outputs import OutputError, OutputOptions, Outputs
    from engine.core.types import FrameRecord
    from engine.io.sources import SourceOptions, open_source

    outputs = Outputs.open(OutputOptions(jsonl="/dev/full"), open_source(SourceOptions("sample")), ["happy"])
    with pytest.raises(OutputError, match=r"^OutputOptions\.jsonl: cannot write /dev/full: No space left on device$"):
        outputs.handle(FrameRecord(0, 0.0, astronaut(), time.perf_counter_ns(), name="a.png"), None)
    outputs.close()  # no second error while closing
    proc = run_cli("--source", "sample", "--no-display", "--quiet", "--model", model_dir, "--jsonl", "/dev/full")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert engine_lines(proc.stderr) == ["error: --jsonl: cannot write /dev/full: No space left on device"], proc.stderr


def test_corrupt_model_is_one_sentence(model_dir, tmp_path):
    shutil.copy(model_dir / "labels.json", tmp_path)
    _junk(tmp_path / "emotion_int8.tflite")
    events = tmp_path / "events.jsonl"
    events.write_text('{"frame": 0}\n')  # an earlier run's output: a model that fails to load leaves it alone
    assert_one_line_error(run_cli("--source", "sample", "--no-display", "--model", tmp_path, "--jsonl", events),
                          "is not a TFLite model")
    assert events.read_text() == '{"frame": 0}\n'
    _junk(tmp_path / "emotion_fp32.onnx")
    assert_one_line_error(run_cli("--source", "sample", "--no-display", "--model", tmp_path, "--backend", "onnx", "--precision", "fp32"),
                          "is not a loadable ONNX model")


def test_model_without_labels_or_wrong_file_is_one_sentence(model_dir, tmp_path):
    shutil.copy(model_dir / "emotion_int8.tflite", tmp_path)
    assert_one_line_error(run_cli("--source", "sample", "--no-display", "--model", tmp_path), "no labels.json next to the model")
    assert_one_line_error(run_cli("--source", "sample", "--no-display", "--model", model_dir / "emotion_fp32.onnx"),
                          "emotion_fp32.onnx is not a .tflite file, which backend tflite needs")
    assert_one_line_error(run_cli("--source", "sample", "--no-display", "--model", model_dir, "--precision", "fp16"),
                          "has no emotion_fp16.tflite for backend tflite")


def test_labels_that_do_not_match_the_model_are_one_sentence(model_dir, tmp_path):
    """A 7-class model next to a 3-class labels.json fails at start-up, before any frame."""
    import json

    spec = json.loads((model_dir / "labels.json").read_text())
    spec["labels"] = ["angry", "happy", "sad"]
    (tmp_path / "labels.json").write_text(json.dumps(spec))
    for name, extra in (("emotion_int8.tflite", ()), ("emotion_fp32.onnx", ("--backend", "onnx", "--precision", "fp32"))):
        shutil.copy(model_dir / name, tmp_path)
        assert_one_line_error(run_cli("--source", "sample", "--no-display", "--model", tmp_path, *extra),
                              f"{name} outputs 7 classes but its labels.json lists 3")


@pytest.fixture(scope="module")
def model_64x64x3(tmp_path_factory, model_dir) -> Path:
    """A real TFLite model that takes 64x64 colour images (not the 48x48x1 contract)."""
    tf = pytest.importorskip("tensorflow")
    import keras

    net = keras.Sequential([keras.Input((64, 64, 3)), keras.layers.Conv2D(4, 3, strides=4), keras.layers.GlobalAveragePooling2D(),
                            keras.layers.Dense(7, activation="softmax")])
    d = tmp_path_factory.mktemp("rgb64")
    (d / "emotion_int8.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(net).convert())
    shutil.copy(model_dir / "labels.json", d)
    return d


def test_model_with_wrong_input_shape_is_one_sentence(model_64x64x3):
    assert_one_line_error(run_cli("--source", "sample", "--no-display", "--model", model_64x64x3),
                          "emotion_int8.tflite takes input 64x64x3, not the contract's 48x48x1")


def test_missing_runtime_is_one_sentence(model_dir):
    """onnxruntime not installed (simulated: its import fails) -> how to install it."""
    code = ("import sys; sys.modules['onnxruntime'] = None\n"
            "from engine.run import main\nfrom engine.core.errors import cli_main\n"
            "sys.exit(cli_main(main, sys.argv[1:]))")
    proc = run_cli("--source", "sample", "--no-display", "--backend", "onnx", "--precision", "fp32", "--model", model_dir, code=code)
    assert_one_line_error(proc, "--backend: onnx needs onnxruntime: pip install onnxruntime")


def test_unknown_detector_is_one_sentence(model_dir, tmp_path):
    # the classifier loads first (its runtime may log a line of its own), then the detector option fails
    proc = run_cli("--source", "sample", "--no-display", "--model", model_dir, "--detector", tmp_path / "none.tflite")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert engine_lines(proc.stderr) == [f"error: face-detector model {tmp_path / 'none.tflite'} does not exist (use short, full or a .tflite path)"]


def test_stage_failure_is_one_line_cli_error(model_dir):
    """An exception inside a pipeline stage (the classifier, on its 5th frame): one line, exit 2."""
    code = ("import sys\nimport engine.classify.classifier as c\nreal = c.TFLiteClassifier._run\ncalls = []\n"
            "def run(self, faces):\n    calls.append(1)\n"
            "    if len(calls) == 5: raise RuntimeError('tensor arena corrupted')\n    return real(self, faces)\n"
            "c.TFLiteClassifier._run = run\n"
            "from engine.run import main\nfrom engine.core.errors import cli_main\nsys.exit(cli_main(main, sys.argv[1:]))")
    proc = run_cli("--source", media(), "--loop", "3", "--no-display", "--quiet", "--model", model_dir, code=code)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert engine_lines(proc.stderr) == ["error: classify stage failed: RuntimeError: tensor arena corrupted"], proc.stderr


# --------------------------------------------------------------------------- signals


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_leaves_whole_outputs(model_dir, tmp_path, sig):
    """A long run (the 2-face clip x 50) is stopped by a signal after a couple of seconds: it
    exits promptly, every JSONL line is whole JSON, and the mp4 has its index and its frames."""
    out, events = tmp_path / "out.mp4", tmp_path / "ev.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "engine.run", "--source", str(media()), "--loop", "50", "--no-display",
                             "--output", str(out), "--jsonl", str(events), "--model", str(model_dir)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while not (events.exists() and events.stat().st_size > 0):
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "no frame within 90 s"
            time.sleep(0.05)
        time.sleep(2.0)
        proc.send_signal(sig)
        t_sig = time.monotonic()
        _, err = proc.communicate(timeout=30)
        took = time.monotonic() - t_sig
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert took < 10, f"took {took:.1f}s to exit after {sig.name}"
    assert proc.returncode in (0, 130, 128 + sig), (proc.returncode, err)
    assert "Traceback" not in err, err
    assert any(ln.startswith("done: ") and f"stopped by {'SIGTERM' if sig == signal.SIGTERM else 'interrupt'}" in ln
               for ln in engine_lines(err)), err

    text = events.read_text()
    assert text.endswith("\n"), "half a line at the end"
    records = [json.loads(line) for line in text.splitlines()]  # every line parses
    assert 0 < len(records) < 50 * 56, "stopped early, not at the end of the file"
    assert [r["frame"] for r in records] == list(range(len(records)))

    cap = cv2.VideoCapture(str(out))
    assert cap.isOpened(), "the mp4 does not open (no index: the writer was not released)"
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    assert abs(n - len(records)) <= 1 and n > 0, (n, len(records))


# --------------------------------------------------------------------------- outputs


def test_jsonl_schema_lossless_and_stable_ids(model_dir, tmp_path):
    clip = media()
    events = tmp_path / "ev.jsonl"
    proc = run_cli("--source", clip, "--loop", "2", "--no-display", "--quiet", "--jsonl", events, "--model", model_dir,
                   "--output", tmp_path / "out.avi")
    assert proc.returncode == 0, proc.stderr
    labels = ModelSpec.load(model_dir).labels
    cap = cv2.VideoCapture(str(clip))
    n, fps = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    records = [json.loads(line) for line in events.read_text().splitlines()]
    assert [r["frame"] for r in records] == list(range(2 * n)), "a file is processed losslessly, in order"
    ids = set()
    for r in records:
        assert set(r) == {"frame", "t", "faces", "ms"}
        assert r["t"] == pytest.approx(r["frame"] / fps, abs=1e-3)
        assert {"capture", "detect", "classify", "overlay", "total"} <= set(r["ms"])
        assert all(isinstance(v, (int, float)) and v >= 0 for v in r["ms"].values())
        assert r["ms"]["total"] >= r["ms"]["detect"] + r["ms"]["classify"] - 0.01
        assert len(r["faces"]) == 2
        for f in r["faces"]:
            assert {"id", "box", "score", "emotion", "probs"} <= set(f)
            assert isinstance(f["id"], int)
            x, y, w, h = f["box"]
            assert all(isinstance(v, int) for v in f["box"]) and w > 0 and h > 0
            assert 0.5 <= f["score"] <= 1.0
            assert f["emotion"] in labels and list(f["probs"]) == labels
            assert sum(f["probs"].values()) == pytest.approx(1.0, abs=0.02)
            if r["frame"] < n:
                ids.add(f["id"])
        assert len({f["id"] for f in r["faces"]}) == 2
    # (where the clip loops, the people jump back: new ids there are right)
    assert ids == {1, 2}, "two people, two ids, for the whole clip"


def test_sample_source_prints_one_line(model_dir):
    proc = run_cli("--source", "sample", "--no-display", "--model", model_dir)
    assert proc.returncode == 0, proc.stderr
    labels = "|".join(ModelSpec.load(model_dir).labels)
    assert re.fullmatch(rf"grace_hopper\.jpg: #1 ({labels}) \d+%\n", proc.stdout), proc.stdout


def test_folder_of_images(model_dir, photos, tmp_path):
    out, events = tmp_path / "annotated", tmp_path / "ev.jsonl"
    proc = run_cli("--source", photos, "--no-display", "--quiet", "--model", model_dir, "--output", out, "--jsonl", events)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    # a photo without a face is a line of its own, not the end of the run (each photo: 5 framings per face)
    assert [ln.split(":")[0] for ln in lines] == ["astronaut.png", "blank.png", "hopper.jpg", "two.png"]
    assert "no face" in lines[1], lines
    assert re.fullmatch(r"two\.png: #1 \w+ \d+%, #2 \w+ \d+%", lines[3]), lines  # ids restart per photo
    assert sorted(p.name for p in out.iterdir()) == ["astronaut.png", "blank.png", "hopper.jpg", "two.png"]
    for name in ("astronaut.png", "blank.png", "hopper.jpg", "two.png"):
        assert cv2.imread(str(out / name)).shape == cv2.imread(str(photos / name)).shape
    records = [json.loads(line) for line in events.read_text().splitlines()]
    assert [(r["image"], len(r["faces"])) for r in records] == [("astronaut.png", 1), ("blank.png", 0), ("hopper.jpg", 1), ("two.png", 2)]


def test_image_with_output_jpg(model_dir, photos, tmp_path):
    out = tmp_path / "out.jpg"
    proc = run_cli("--source", photos / "two.png", "--no-display", "--model", model_dir, "--output", out)
    assert proc.returncode == 0, proc.stderr
    annotated, original = cv2.imread(str(out)), cv2.imread(str(photos / "two.png"))
    assert annotated is not None and annotated.shape == original.shape
    assert np.abs(annotated.astype(int) - original).max() > 100, "boxes and labels were drawn"
    assert proc.stdout.startswith("two.png: #1 ")


def test_shipped_model_astronaut_is_happy_cli(photos):
    """NEEDS THE SHIPPED MODEL (engine/zoo/emonet_f, the default --model, int8 tflite)."""
    proc = run_cli("--source", photos / "astronaut.png", "--no-display")
    assert proc.returncode == 0, proc.stderr
    assert re.fullmatch(r"astronaut\.png: #1 happy \d+%\n", proc.stdout), proc.stdout


def test_folder_of_mixed_size_photos_to_one_mp4(model_dir, photos, tmp_path):
    """A video cannot change size midway: later photos are letterboxed to the first one's size."""
    out = tmp_path / "photos.mp4"
    proc = run_cli("--source", photos, "--no-display", "--quiet", "--model", model_dir, "--output", out)
    assert proc.returncode == 0, proc.stderr
    frames = _video_frames(out)
    first = cv2.imread(str(photos / "astronaut.png"))
    assert len(frames) == 4 and all(f.shape == first.shape for f in frames), [f.shape for f in frames]


def _video_frames(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def test_live_video_output_keeps_real_time_when_frames_are_dropped(tmp_path):
    """A camera run writes each processed frame at its capture time's slot: dropped frames are
    filled with the previous one, so 1 s of camera is 1 s of video, not a fast-forward."""
    from engine.io.sinks import VideoSink

    sink = VideoSink(tmp_path / "live.mp4", fps=10.0, live=True)
    # 0.52: jitter, takes the next slot; 0.53: ahead of its slot, dropped; 30 s: a reconnect gap, cut
    shades = {0.0: 40, 0.1: 80, 0.45: 160, 0.5: 200, 0.52: 220, 0.53: 230, 30.0: 250}
    for t, v in shades.items():
        sink.write(np.full((48, 64, 3), v, np.uint8), t)
    sink.close()
    got = [int(f.mean().round()) for f in _video_frames(tmp_path / "live.mp4")]
    want = [40, 80, 80, 80, 160, 200, 220, 250]  # slots 0, 1, 2-3 (previous frame again), 4, 5, 6, 7
    assert len(got) == len(want) and all(abs(g - w) <= 6 for g, w in zip(got, want)), got


@pytest.mark.parametrize("offset", [0.0, 0.3, 0.5])
def test_live_video_output_loses_no_frame_to_capture_jitter(tmp_path, offset):
    """Frames at the camera's own rate, with a few ms of jitter, map one to one onto the output."""
    from engine.io.sinks import VideoSink

    sink = VideoSink(tmp_path / "jitter.mp4", fps=90000.0, live=True)  # a nonsense reported rate: written at 30
    rng = np.random.default_rng(1)
    frame = np.zeros((32, 32, 3), np.uint8)
    for k in range(120):
        sink.write(frame, 5.0 + (k + offset) / 30.0 + rng.uniform(-0.004, 0.004))
    sink.close()
    assert sink.frames_written == 120


def test_photos_average_five_framings_streams_one_unless_told():
    """--views: photos get STILL_VIEWS framings per face (no next frame to smooth over), video and
    cameras one (the tracker averages over frames); an explicit --views wins for both."""
    from engine.api import STILL_VIEWS
    from engine.cli.options import options_from_args
    from engine.run import build_parser
    from engine.core.types import RunningMode

    parse = build_parser().parse_args
    assert STILL_VIEWS == 5
    assert options_from_args(parse([]), RunningMode.IMAGE).resolved().crop.views == STILL_VIEWS
    assert options_from_args(parse([]), RunningMode.VIDEO).resolved().crop.views == 1
    assert options_from_args(parse([]), RunningMode.LIVE).resolved().crop.views == 1
    assert options_from_args(parse(["--views", "1"]), RunningMode.IMAGE).resolved().crop.views == 1
    assert options_from_args(parse(["--views", "5"]), RunningMode.VIDEO).resolved().crop.views == 5
