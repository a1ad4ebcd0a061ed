"""Benchmarks: a few frames through benchmarks/fps.py and benchmarks/zoo.py as a user runs
them (subprocess), checking that the JSON has every field with plausible values. Not timed:
nothing here asserts a speed."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.core.contract import ModelSpec

REPO = Path(__file__).resolve().parents[1]
MEDIA = REPO.parent / "shared" / "media"
REAL_CLIP = MEDIA / "head-pose-face-detection-female-and-male.gif"
SHIPPED = REPO / "engine" / "zoo" / "emonet_f"
STAGES = ("capture", "detect", "classify", "track", "overlay", "sink")


def _run(script: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": ""}  # the scripts must find the repo by themselves
    return subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def model_dir(request) -> Path:
    """The shipped fast model when it is there, else the tiny test export."""
    if (SHIPPED / "labels.json").is_file() and (SHIPPED / "emotion_int8.tflite").is_file():
        return SHIPPED
    return request.getfixturevalue("tiny_export_dir")


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> tuple[Path, bool]:
    """(clip, is the real shared clip). Without ../shared/media: 12 frames of the astronaut photo
    (a real face that installs with scikit-image) drifting across the frame, as an AVI."""
    if REAL_CLIP.is_file():
        return REAL_CLIP, True
    import cv2

    skdata = pytest.importorskip("skimage.data")
    face = np.ascontiguousarray(skdata.astronaut()[:, :, ::-1])
    path = tmp_path_factory.mktemp("clip") / "astronaut.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (640, 480))
    assert writer.isOpened()
    for i in range(12):
        frame = np.full((480, 640, 3), 40, np.uint8)
        x = 20 + 8 * i
        frame[:, x : x + 512] = cv2.resize(face, (512, 480))[:, : min(512, 640 - x)]
        writer.write(frame)
    writer.release()
    return path, False


def _ordered(p: dict) -> bool:
    return p["p50"] <= p["p90"] <= p["p99"]


def _one_error_line(r: subprocess.CompletedProcess) -> str:
    assert r.returncode != 0
    assert "Traceback" not in r.stderr, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, r.stderr
    return errors[0]


def test_fps_json_has_every_field(model_dir, clip, tmp_path):
    path, real = clip
    out = tmp_path / "fps.json"
    r = _run("fps.py", "--source", str(path), "--model", str(model_dir), "--backend", "tflite,onnx",
             "--precision", "int8", "--max-frames", "8", "--warmup", "2", "--compare", "fer",
             "--json", str(out), "--md", str(tmp_path / "fps.md"), "--plot", str(tmp_path / "fps.png"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "fps: [1/" in r.stderr  # progress lines
    report = json.loads(out.read_text())
    for key in ("benchmark", "date", "machine", "versions", "settings", "runs", "fer", "skipped"):
        assert key in report
    assert report["machine"]["cpu"] and report["machine"]["cores"] >= 1
    assert "numpy" in report["versions"] and "mediapipe" in report["versions"]

    # a requested combination without its file is skipped with the reason, not an error
    have = {p.name for p in model_dir.iterdir()}
    if "emotion_int8.onnx" not in have:
        assert any(s["config"] == "onnx-int8" and "emotion_int8.onnx" in s["reason"] for s in report["skipped"])
    assert report["runs"] and report["runs"][0]["backend"] == "tflite"

    for run in report["runs"]:
        assert run["frames"] == 8 and run["warmup"] == 2 and run["measured_frames"] == 6
        assert run["fps"] > 0 and run["measured_s"] > 0
        for st in STAGES:
            assert _ordered(run["stages"][st]) and run["stages"][st]["p50"] >= 0, st
        assert _ordered(run["latency"]) and run["latency"]["p50"] > 0
        # capture-to-output covers every stage of the frame
        assert run["latency"]["p99"] >= run["stages"]["detect"]["p50"]
        assert run["cpu_pct"] > 0 and run["peak_rss_mb"] > 50
        assert 0 < run["load_s"] < run["startup_s"] < 300
        assert 0 <= run["frames_with_faces"] <= run["frames"]
        c = run["checks"]
        for key in ("bound_fps", "throughput_ratio", "throughput_ok", "latency_ratio", "latency_ok",
                    "stage_median_sum_ms", "slowest_thread"):
            assert key in c
        assert c["bound_fps"] > 0 and c["throughput_ratio"] > 0 and c["latency_ratio"] > 0
        assert c["bound_fps"] == pytest.approx(1000 / max(c["thread_mean_ms"].values()), rel=0.01)
        assert run["command"].startswith("python -m engine.run ")
        if real:  # the shared clip: two faces in every frame
            assert run["faces_per_frame"] > 1 and run["frames_with_faces"] >= 6
            assert run["classify_ms_per_face"]["p50"] > 0
    # the peer: measured, or a clear note that it is not installed
    assert len(report["fer"]) == 1
    fer = report["fer"][0]
    if "error" in fer:
        assert "pip install --no-deps fer==25.10.3" in fer["error"]
        assert "fer is not installed" in r.stderr
    else:
        assert fer["fps"] > 0 and fer["frames"] == 8 and _ordered(fer["ms_per_frame"])
        assert report["runs"][0]["vs_fer"]["speed_ratio"] > 0
        # fer decoding the clip itself, as its users run it: slower than on pre-decoded frames
        assert 0 < fer["fps_with_decoding"] and report["runs"][0]["vs_fer"]["speed_ratio_with_decoding"] > 0
    md = (tmp_path / "fps.md").read_text()
    assert "| source | config | FPS |" in md and "capture-to-output" in md
    assert (tmp_path / "fps.png").read_bytes()[:4] == b"\x89PNG"
    # the stdout table has one row per configuration (+ fer's)
    assert "FPS" in r.stdout.splitlines()[0]


def test_fps_realtime_mode_paces_like_a_camera(model_dir, clip, tmp_path):
    path, _ = clip
    out = tmp_path / "rt.json"
    r = _run("fps.py", "--source", str(path), "--model", str(model_dir), "--loop", "2", "--max-frames", "24", "--warmup", "6",
             "--realtime", "50", "--sink", "none", "--quiet", "--json", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    run = json.loads(out.read_text())["runs"][0]
    assert run["realtime_fps"] == 50 and run["frames_read"] == 24
    assert run["frames"] + run["frames_dropped"] == 24
    assert run["checks"]["throughput_ratio"] is None and run["checks"]["latency_ratio"] > 0
    # paced: no faster than offered. The window starts after 6 warm-up frames, when the short burst
    # behind a slow first frame (one frame per one-slot queue) is out, and spans 18 intervals of 20 ms
    assert 0 < run["fps"] <= 62.5


def test_fps_predecoded_feeds_the_pipeline_decoded_frames(model_dir, clip, tmp_path):
    """--predecoded: the same frames, decoded before timing (like for like with fer's pre-decoded FPS)."""
    path, real = clip
    out = tmp_path / "pre.json"
    r = _run("fps.py", "--source", str(path), "--model", str(model_dir), "--max-frames", "10", "--warmup", "2",
             "--predecoded", "--sink", "jsonl", "--quiet", "--json", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(out.read_text())
    run = report["runs"][0]
    assert report["settings"]["predecoded"] is True and run["predecoded"] is True
    assert run["frames"] == 10 and run["fps"] > 0
    if real:
        assert run["frames_with_faces"] == 10 and run["faces_per_frame"] == 2
    assert "predecoded" in r.stdout  # the row says how it was fed
    photos = tmp_path / "photos"
    photos.mkdir()
    import cv2

    cv2.imwrite(str(photos / "grey.png"), np.full((64, 64, 3), 128, np.uint8))
    r = _run("fps.py", "--source", str(photos), "--predecoded", "--max-frames", "2")
    assert "--predecoded needs a video file" in _one_error_line(r)


def test_fps_bad_source_is_one_line(tmp_path):
    r = _run("fps.py", "--source", str(tmp_path / "missing.mp4"), "--max-frames", "2")
    assert "missing.mp4" in _one_error_line(r)
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all" * 50)
    r = _run("fps.py", "--source", str(bad), "--max-frames", "2")
    assert "broken.mp4" in _one_error_line(r)


def test_fps_bad_arguments_are_one_line(tmp_path):
    r = _run("fps.py", "--model", str(tmp_path / "nope"))
    assert "does not exist" in _one_error_line(r)
    r = _run("fps.py", "--precision", "int4")
    assert "int4" in _one_error_line(r)
    r = _run("fps.py", "--warmup", "-1")
    assert "--warmup" in _one_error_line(r)


def test_fps_missing_runtime_is_one_line(model_dir, clip, capsys):
    """onnxruntime made unimportable: one sentence naming the package, exit 2."""
    code = ("import sys; sys.modules['onnxruntime'] = None; sys.argv[0] = 'fps.py'; "
            f"sys.path.insert(0, {str(REPO)!r}); import runpy; runpy.run_path({str(REPO / 'benchmarks' / 'fps.py')!r}, run_name='__main__')")
    r = subprocess.run([sys.executable, "-c", code, "--source", str(clip[0]), "--backend", "onnx", "--model", str(model_dir)],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert "onnxruntime" in _one_error_line(r)


def test_fps_without_fer_says_how_to_install_and_goes_on(model_dir, clip, tmp_path):
    path, _ = clip
    out = tmp_path / "nofer.json"
    code = ("import sys; sys.modules['fer'] = None; sys.argv[0] = 'fps.py'; "
            f"sys.path.insert(0, {str(REPO)!r}); import runpy; runpy.run_path({str(REPO / 'benchmarks' / 'fps.py')!r}, run_name='__main__')")
    r = subprocess.run([sys.executable, "-c", code, "--source", str(path), "--model", str(model_dir), "--max-frames", "4",
                        "--warmup", "1", "--sink", "none", "--compare", "fer", "--quiet", "--json", str(out)],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "fer is not installed: pip install --no-deps fer==25.10.3" in r.stderr
    report = json.loads(out.read_text())
    assert report["runs"][0]["fps"] > 0 and report["runs"][0]["vs_fer"] is None
    assert "pip install" in report["fer"][0]["error"]


def test_models_json_has_every_field(model_dir, fer_root, tmp_path):
    from models.data import load_split

    expected_faces = min(64, len(load_split(fer_root, "validation", quiet=True)))  # the packaged fallback has 56
    out = tmp_path / "models.json"
    r = _run("zoo.py", "--model", str(model_dir), "--data", str(fer_root), "--max-faces", "64", "--batches", "1,4",
             "--threads", "1", "--repeats", "1", "--min-time", "0.01", "--fer-model", "none",
             "--json", str(out), "--md", str(tmp_path / "m.md"))
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["machine"]["cpu"] and "numpy" in report["versions"]
    assert report["machine"]["isa_class"] in ("amx", "avx512-vnni", "avx512", "avx2", "x86", "arm-dotprod", "arm")
    assert report["fer"] is None  # --fer-model none
    files = {p.name for p in model_dir.glob("emotion_*.*") if p.suffix in (".tflite", ".onnx")}
    assert {row["file"] for row in report["rows"]} == files
    for row in report["rows"]:
        assert row["format"] in ("tflite", "onnx") and row["precision"] in ("int8", "fp16", "fp32")
        assert row["size_kb"] > 10 and 0.0 <= row["accuracy"] <= 1.0 and row["val_faces"] == expected_faces
        assert row["macs"] and row["macs"] > 1e6
        assert set(row["ms_per_face"]) == {"b1_t1", "b4_t1"} and all(v > 0 for v in row["ms_per_face"].values())
    (target,) = report["targets"]
    # the fast model's target is a ratio to fer's model, timed in the same run: without it, no verdict
    assert target["arch"] == ModelSpec.load(model_dir).arch and target["x_fer"] is None and target["met"] is None
    assert "## Targets" in (tmp_path / "m.md").read_text() and "CPU class" in (tmp_path / "m.md").read_text()
    assert "b4 t1" in r.stdout


def test_models_bad_input_is_one_line(tmp_path):
    r = _run("zoo.py", "--model", str(tmp_path / "nope"))
    assert "does not exist" in _one_error_line(r)
    r = _run("zoo.py", "--fer-model", str(tmp_path / "fer.tflite"), "--data", "none")
    assert "--fer-model" in _one_error_line(r)
    r = _run("zoo.py", "--model", str(tmp_path), "--batches", "0")
    assert "--batches" in _one_error_line(r)


def test_profile_parts_add_up(model_dir, clip, tmp_path):
    """benchmarks/stage_profile.py: the serial per-part times of the engine's own calls, summing to the frame's cost."""
    path, real = clip
    out = tmp_path / "profile.json"
    r = _run("stage_profile.py", "--source", str(path), "--model", str(model_dir), "--loop", "1", "--max-frames", "10",
             "--warmup", "2", "--cprofile", "--json", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["frames"] == 8 and set(res["parts"]) == {"decode", "detect", "crop", "classify", "track", "overlay"}
    assert all(p["mean_ms"] >= 0 and _ordered(p) for p in res["parts"].values())
    assert res["sum_ms"] == pytest.approx(sum(p["mean_ms"] for p in res["parts"].values()), abs=1e-3)
    assert res["parts"]["detect"]["mean_ms"] > 0 and res["top_functions"]
    if real:
        assert res["faces_per_frame"] == 2.0 and res["parts"]["classify"]["mean_ms"] > 0
    assert "one core:" in r.stdout


def test_profile_refuses_a_camera_in_one_line():
    assert "profile a file or folder" in _one_error_line(_run("stage_profile.py", "--source", "0"))


def test_smoothing_replays_the_real_tracker():
    """benchmarks/smoothing.replay: a face that jitters between two labels every frame is shown steady at the
    defaults; a real change of expression is shown once, a few frames late (the share of shown = raw says so)."""
    from benchmarks.smoothing import replay
    from engine.core.types import Detection
    from engine.faces.track import TrackerOptions

    labels = ["happy", "neutral"]
    det = [Detection(box=(100, 100, 80, 80), score=0.9)]
    jitter = [(det, np.array([[0.55, 0.45] if i % 2 else [0.45, 0.55]])) for i in range(20)]
    r = replay(labels, [jitter], TrackerOptions())
    assert r["face_frames"] == 20 and r["raw_changes_per_100"] == pytest.approx(19 * 5)
    assert r["shown_changes_per_100"] == 0
    step = [(det, np.array([[0.9, 0.1] if i < 10 else [0.1, 0.9]])) for i in range(20)]
    r = replay(labels, [step], TrackerOptions())
    assert r["shown_changes_per_100"] == r["raw_changes_per_100"] == pytest.approx(5)  # one change in 20 face-frames
    assert 0.8 <= r["shown_is_raw"] < 1 and r["mean_top_probability"] == pytest.approx(0.9)
    assert replay(labels, [step], TrackerOptions(ema=1.0, hysteresis=0.0, confirm=1))["shown_is_raw"] == 1.0


def test_smoothing_runs_the_engine_on_a_clip(model_dir, clip, tmp_path):
    """The whole script on a real clip: one recording per model, one row per setting, the default marked."""
    path, _ = clip
    out = tmp_path / "smooth"
    r = _run("smoothing.py", "--model", f"m={model_dir}", "--clip", str(path), "--ema", "0.4,1", "--hysteresis", "0,0.08",
             "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert [(x["ema"], x["hysteresis"]) for x in rows] == [(0.4, 0.0), (0.4, 0.08), (1.0, 0.0), (1.0, 0.08)]
    assert len({x["face_frames"] for x in rows}) == 1 and rows[0]["face_frames"] > 0
    assert all(0 <= x["shown_is_raw"] <= 1 and 0 <= x["shown_changes_per_100"] <= 100 for x in rows)
    at = {(x["ema"], x["hysteresis"]): x for x in rows}
    assert at[(0.4, 0.0)]["raw_changes_per_100"] == at[(1.0, 0.08)]["raw_changes_per_100"]  # one recording, replayed
    assert "**0.08** (default)" in out.with_suffix(".md").read_text()
    bad = _run("smoothing.py", "--model", f"m={model_dir}", "--clip", str(tmp_path / "nope.gif"))
    assert "does not exist" in _one_error_line(bad)
    assert "needs at least one number" in _one_error_line(_run("smoothing.py", "--ema", ","))
