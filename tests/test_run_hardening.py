"""`python -m engine.run` and `python -m export` against a careless user and a hostile input (issue #35):
nothing the user pointed at is lost, no secret in a URL is shown, nothing hangs or floods a server.

Real parts throughout: a real HTTP server in a thread (counting its GETs) serving a real mp4 composed
here with cv2.VideoWriter, a real FIFO, real damaged JPEGs, the shipped model (the default --model),
and the CLIs as subprocesses.
"""
from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.pipeline import Pipeline, PipelineOptions
from engine.io.sources import Source
from engine.core.types import RunningMode
from fakes import assert_one_line_error, astronaut

REPO = Path(__file__).resolve().parents[1]
CLIP_FRAMES = 25


def run_module(module: str, *args, timeout: float = 90) -> subprocess.CompletedProcess:
    """`python -m module args` in the repository; a hang past `timeout` fails the test (not the suite)."""
    try:
        return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO, capture_output=True,
                              text=True, timeout=timeout, env={**os.environ, "PYTHONPATH": str(REPO)})
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"python -m {module} {' '.join(map(str, args))} still running after {timeout:.0f} s ({exc.stderr!r:.300})")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_clip(path: Path, frames: int = CLIP_FRAMES) -> Path:
    """A real mp4 of the astronaut moving sideways (mp4v, 25 fps, 320x320)."""
    face = cv2.resize(astronaut(), (320, 320))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (320, 320))
    for i in range(frames):
        writer.write(np.roll(face, 2 * i, axis=1))
    writer.release()
    assert int(cv2.VideoCapture(str(path)).get(cv2.CAP_PROP_FRAME_COUNT)) == frames
    return path


def jsonl_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# --------------------------------------------------------------------------- a real web server


class Server:
    """http.server in a thread over one folder; `ranges`: answer byte-range requests (nginx does, FFmpeg
    needs them to reach an mp4's index at its end; Python's SimpleHTTPRequestHandler does not)."""

    def __init__(self, folder: Path, ranges: bool = True):
        self.gets = 0
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(folder), **kwargs)

            def log_message(self, *args):  # quiet: the test counts instead
                pass

            def do_GET(self):
                server.gets += 1
                super().do_GET()

            def send_head(self):
                match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
                path = Path(self.translate_path(self.path))
                if not (ranges and match and path.is_file()):
                    return super().send_head()
                data = path.read_bytes()
                start = int(match.group(1))
                end = min(int(match.group(2) or len(data) - 1), len(data) - 1)
                if start >= len(data):
                    self.send_error(416)
                    return None
                self.send_response(206)
                self.send_header("Content-Type", self.guess_type(str(path)))
                self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
                self.send_header("Content-Length", str(end - start + 1))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                return io.BytesIO(data[start:end + 1])

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """clip.mp4 (25 real frames) and notvideo.mp4 (text under a video name)."""
    d = tmp_path_factory.mktemp("site")
    write_clip(d / "clip.mp4")
    (d / "notvideo.mp4").write_text("this is not a video\n" * 100)
    return d


@pytest.fixture()
def server(site):
    srv = Server(site)
    yield srv
    srv.close()


def test_an_http_video_file_ends_with_its_frames_and_few_requests(server, tmp_path):
    """Before: the end of the file was a "lost stream", reopened at once, forever (a 25-frame clip gave
    thousands of frames and thousands of GETs a minute, never ending)."""
    events = tmp_path / "x.jsonl"
    proc = run_module("engine.run", "--source", f"http://{server.url}/clip.mp4", "--no-display", "--jsonl", events, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert len(jsonl_records(events)) == CLIP_FRAMES
    assert server.gets <= 4, server.gets
    assert "stopped by end" in proc.stderr and "(file)" in proc.stderr, proc.stderr


def test_an_http_video_file_plays_again_only_with_loop(server, tmp_path):
    events = tmp_path / "x.jsonl"
    proc = run_module("engine.run", "--source", f"http://{server.url}/clip.mp4", "--no-display", "--quiet",
                      "--loop", "2", "--jsonl", events, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert len(jsonl_records(events)) == 2 * CLIP_FRAMES
    assert server.gets <= 8, server.gets


def test_an_http_file_without_frames_is_an_error_at_once(server):
    """Before: 0 frames, no error, and a reopen storm (391,097 GETs in 11 minutes)."""
    t0 = time.monotonic()
    assert_one_line_error(run_module("engine.run", "--source", f"http://{server.url}/notvideo.mp4", "--no-display", timeout=60),
                   f"http://{server.url}/notvideo.mp4")
    assert time.monotonic() - t0 < 30 and server.gets <= 4, server.gets


def test_an_http_mp4_the_server_cannot_seek_in_is_an_error_at_once(site):
    """Python's http.server ignores Range: FFmpeg opens the mp4 (its frame count is in the index) but
    reads no frame. That is one sentence, not an endless reconnect."""
    srv = Server(site, ranges=False)
    try:
        assert_one_line_error(run_module("engine.run", "--source", f"http://{srv.url}/clip.mp4", "--no-display", timeout=60),
                       "cannot read any frame")
        assert srv.gets <= 4, srv.gets
    finally:
        srv.close()


def test_url_credentials_never_show(server, tmp_path):
    """Neither the password of user:pw@ nor a ?token= value reaches stdout, stderr or the JSONL, in a
    good run or in an error."""
    secrets = ("hunter2pw", "s3cr3tT0ken")
    events = tmp_path / "x.jsonl"
    url = f"http://alice:{secrets[0]}@{server.url}/clip.mp4?token={secrets[1]}&id=7"
    proc = run_module("engine.run", "--source", url, "--no-display", "--jsonl", events, timeout=60)
    assert proc.returncode == 0, proc.stderr
    shown = proc.stdout + proc.stderr + (events.read_text() if events.exists() else "")
    assert not [s for s in secrets if s in shown], shown
    assert f"http://***@{server.url}/clip.mp4?token=***&id=7" in proc.stderr, proc.stderr
    bad = url.replace("clip.mp4", "missing.mp4")
    line = assert_one_line_error(run_module("engine.run", "--source", bad, "--no-display", timeout=60), "missing.mp4")
    assert not [s for s in secrets if s in line], line


# --------------------------------------------------------------------------- reconnects back off


class ReopensAtOnce(Source):
    """A live source whose every reopen succeeds and then gives one frame: a web server that answers
    each request at once with a stream that stops."""

    mode = RunningMode.LIVE
    name = "flaky"
    fps = 25.0

    def __init__(self):
        self.reopens = 0
        self._frames = 1

    def read(self):
        if self._frames:
            self._frames -= 1
            return astronaut()
        return None

    def reopen(self) -> bool:
        self.reopens += 1
        self._frames = 1
        return True


def test_reconnects_back_off_even_when_every_reopen_succeeds():
    """Before: a reopen that said "back" reset the back-off, so reopens came as fast as the server
    answered. Now a loss soon after coming back waits the grown delay: 0.05, 0.1, 0.2, 0.4, 0.4 ... s."""
    from engine.api import EmotionRecognizer, EngineOptions
    from engine.classify.classifier import ClassifierOptions
    from engine.faces.detect import DetectorOptions

    src = ReopensAtOnce()
    logs: list[str] = []
    opts = PipelineOptions(quiet=True, overlay=False, watchdog_s=30, reconnect_min_s=0.05, reconnect_max_s=0.4)
    with EmotionRecognizer.create(EngineOptions(classifier=ClassifierOptions(), detector=DetectorOptions(impl="litert"))) as rec:
        pipe = Pipeline(rec, src, opts, log=logs.append)
        threading.Timer(3.0, pipe.stop).start()
        stats = pipe.run()
    # 3 s of 0.05 + 0.1 + 0.2 + 0.4 + 0.4 ...: about 10 reopens (thousands before)
    assert 4 <= src.reopens <= 14, src.reopens
    assert stats.reconnects == src.reopens
    assert any("lost again soon after coming back; next try in 0.4s" in m for m in logs), logs


# --------------------------------------------------------------------------- outputs that would destroy the input


@pytest.fixture()
def inputs(tmp_path) -> Path:
    """p.jpg (a photo), c.mp4 (a clip), photos/ (two photos)."""
    cv2.imwrite(str(tmp_path / "p.jpg"), astronaut())
    write_clip(tmp_path / "c.mp4", frames=5)
    (tmp_path / "photos").mkdir()
    cv2.imwrite(str(tmp_path / "photos" / "a.jpg"), astronaut())
    cv2.imwrite(str(tmp_path / "photos" / "b.png"), astronaut())
    return tmp_path


REFUSED = {  # source, flags, what the message says
    "jsonl onto the photo": ("p.jpg", ["--jsonl", "p.jpg"], "--jsonl: "),
    "output onto the clip": ("c.mp4", ["--output", "c.mp4"], "--output: "),
    "jsonl onto the clip via a symlink": ("c.mp4", ["--jsonl", "link.mp4"], "is the source"),
    "sound WAV onto the clip": ("c.mp4", ["--sound-out", "c.mp4"], "--sound-out: "),
    "photos into their own folder": ("photos", ["--output", "photos"], "--output: "),
    "photos into a folder inside theirs": ("photos", ["--output", "photos/annotated"], "inside the source folder"),
    "a photo into its own folder": ("p.jpg", ["--output", "."], "would replace it"),
    "an image name for a video": ("c.mp4", ["--output", "x.jpg"], "not a video file name"),
    "a folder for a video": ("c.mp4", ["--output", "frames"], "not a video file name"),
    "a text name for photos": ("p.jpg", ["--output", "x.txt"], "--output: "),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_an_output_that_would_destroy_the_input_or_has_the_wrong_kind_is_refused(case, inputs):
    """Before: `--jsonl p.jpg` truncated the photo, `--output c.mp4` overwrote the clip, `--output x.jpg`
    wrote MPEG-4 under an image name; all exit 0. Now: one sentence, exit 2, before anything opens."""
    source, flags, fragment = REFUSED[case]
    (inputs / "link.mp4").symlink_to(inputs / "c.mp4")
    before = {p: digest(p) for p in inputs.rglob("*") if p.is_file()}
    proc = subprocess.run([sys.executable, "-m", "engine.run", "--source", source, "--no-display", *flags], cwd=inputs,
                          capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert_one_line_error(proc, fragment)
    assert {p: digest(p) for p in inputs.rglob("*") if p.is_file()} == before, "an input changed"
    assert not (inputs / "x.jpg").exists() and not (inputs / "x.txt").exists() and not (inputs / "frames").exists()
    assert not (inputs / "photos" / "annotated").exists()


# --------------------------------------------------------------------------- FIFOs, noisy decoders


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_source_is_refused_at_once(tmp_path):
    """Before: OpenCV's open waited for a writer forever, and Ctrl-C could not stop it."""
    fifo = tmp_path / "f"
    os.mkfifo(fifo)
    t0 = time.monotonic()
    assert_one_line_error(run_module("engine.run", "--source", fifo, "--no-display", timeout=30), "named pipe")
    assert time.monotonic() - t0 < 30


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_damaged_jpegs_are_one_counted_note_and_a_fifo_in_a_folder_is_not_a_photo(tmp_path):
    """libjpeg printed "Corrupt JPEG data ..." / "Premature end of JPEG file" per photo on stderr; now one
    note names them. A FIFO named like a photo in the folder is skipped (reading it would block)."""
    _ok, buf = cv2.imencode(".jpg", astronaut())
    data = buf.tobytes()
    sos = data.find(b"\xff\xda")
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a_extra.jpg").write_bytes(data[:sos] + b"\x00\x00\x00" + data[sos:])  # extraneous bytes
    (folder / "b_cut.jpg").write_bytes(data[: len(data) * 2 // 3])  # truncated
    cv2.imwrite(str(folder / "c_clean.png"), astronaut())
    os.mkfifo(folder / "d_pipe.jpg")
    proc = run_module("engine.run", "--source", folder, "--no-display", timeout=90)
    assert proc.returncode == 0, proc.stderr
    assert [ln.split(":")[0] for ln in proc.stdout.splitlines()] == ["a_extra.jpg", "b_cut.jpg", "c_clean.png"]
    assert "JPEG" not in proc.stderr.replace("EMOTION_DEBUG", ""), proc.stderr
    notes = [ln for ln in proc.stderr.splitlines() if ln.startswith("note: ")]
    assert len(notes) == 1 and "2 photo(s)" in notes[0] and "a_extra.jpg, b_cut.jpg" in notes[0], proc.stderr


# --------------------------------------------------------------------------- export: say the real problem first, fast


def test_export_to_an_unwritable_place_is_one_sentence_before_any_work(tmp_path, fer_root):
    """Before: about a minute of TensorFlow and face loading, then an OSError traceback and exit 1."""
    model = REPO / "engine" / "zoo" / "emonet_f" / "emotion.keras"
    if not model.is_file():
        pytest.skip("needs the shipped engine/zoo/emonet_f/emotion.keras")
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    places = [blocker / "out"] + ([Path("/proc/x")] if Path("/proc").is_dir() else [])
    for out in places:
        t0 = time.monotonic()
        assert_one_line_error(run_module("export", "--model", model, "--calib", fer_root, "--out", out, timeout=300), "--out")
        assert time.monotonic() - t0 < 20, "checked before TensorFlow loads"
        assert not out.exists()


def test_export_names_a_corrupt_model_before_missing_calibration_data(tmp_path):
    """Before: "no calibration data: pass --calib" for a model file that is not a model at all."""
    for name, data in (("corrupt.keras", b"not a model\n" * 10), ("emptyzip.keras", b"PK\x05\x06" + bytes(18))):
        model = tmp_path / name
        model.write_bytes(data)
        assert_one_line_error(run_module("export", "--model", model, timeout=120), "is not a loadable Keras model")


def test_a_folder_whose_photos_are_all_unreadable_is_an_error(tmp_path):
    """Before: a warning per photo, then "done: 0 frames ... first frame nans after launch" and exit 0."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("a.jpg", "b.png"):
        (folder / name).write_bytes(b"not an image at all" * 50)
    proc = run_module("engine.run", "--source", folder, "--no-display", "--quiet", timeout=90)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == f"error: no frame could be read from {folder}", proc.stderr
    assert "nan" not in proc.stderr
