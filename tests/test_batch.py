"""`python -m engine.batch` as a user runs it: real subprocesses, the shipped model, real faces.

Inputs: the shared clips (../shared/media) when present, and always videos written here with
cv2.VideoWriter from the two portraits that install with scikit-image and matplotlib, the
portraits themselves, a corrupt file, an empty file and a truncated video, so a fresh CI machine
without ../shared tests the same paths. Covered: every output and its format, 2 worker
processes, a worker killed mid-input, Ctrl-C and the resume after it, --force and changed
options, --max-failures, Ray local mode against local mode, and bad usage as one line.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from fakes import MEDIA, TWO_FACE_CLIP, astronaut, grace_hopper, two_face_frame
from test_cli_engine import assert_one_line_error

REPO = Path(__file__).resolve().parents[1]
LABELS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


def batch(*args, timeout: float = 120, wait: bool = True):
    cmd = [sys.executable, "-m", "engine.batch", *map(str, args)]
    if not wait:
        return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def write_video(path: Path, frames: int, fps: float = 10.0, fourcc: str = "MJPG") -> Path:
    """Both portraits in one frame, drifting a few pixels per frame (a real two-face video)."""
    base = two_face_frame(height=240)
    h, w = base.shape[:2]
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert out.isOpened()
    for i in range(frames):
        out.write(np.roll(base, (i % 20) - 10, axis=1))
    out.release()
    return path


def summary(out: Path) -> dict[str, dict]:
    return {r["input"]: r for r in json.loads((out / "summary.json").read_text())["inputs"]}


def without_timing(rows: dict[str, dict]) -> dict[str, dict]:
    from engine.batch.job import TIMING

    return {k: {c: v for c, v in r.items() if c not in TIMING} for k, r in rows.items()}


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    """A folder like a user's: clips in subfolders, photos, and broken files."""
    d = tmp_path_factory.mktemp("archive")
    (d / "day1").mkdir()
    (d / "day2" / "room").mkdir(parents=True)
    write_video(d / "day1" / "two_faces.avi", 24)
    write_video(d / "day2" / "room" / "interview.mp4", 16, fourcc="mp4v")
    cv2.imwrite(str(d / "astronaut.png"), astronaut())
    cv2.imwrite(str(d / "day2" / "hopper.jpg"), grace_hopper())
    if (MEDIA / TWO_FACE_CLIP).is_file():
        shutil.copy(MEDIA / TWO_FACE_CLIP, d / "day1" / "shared_clip.gif")
    (d / "broken").mkdir()
    (d / "broken" / "corrupt.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 20_000, np.uint8).tobytes())
    (d / "broken" / "empty.mp4").write_bytes(b"")
    full = write_video(d / "full.avi", 40).read_bytes()
    (d / "broken" / "truncated.avi").write_bytes(full[: len(full) // 2])
    (d / "full.avi").unlink()
    (d / "notes.txt").write_text("not a media file: ignored inside a folder")
    return d


@pytest.fixture(scope="module")
def local_run(archive, tmp_path_factory):
    out = tmp_path_factory.mktemp("out-local")
    proc = batch(archive, "--out", out, "--workers", "2")
    return proc, out


def test_archive_with_two_workers(local_run, archive):
    proc, out = local_run
    assert proc.returncode == 1, proc.stderr  # some inputs are broken
    assert "Traceback" not in proc.stderr
    rows = summary(out)
    broken = {k: r for k, r in rows.items() if k.startswith("broken/")}
    assert {k: r["status"] for k, r in broken.items()} == dict.fromkeys(broken, "failed")
    assert "empty file" in broken["broken/empty.mp4"]["error"]
    assert "cannot open" in broken["broken/corrupt.mp4"]["error"]
    assert "truncated or damaged: decoded" in broken["broken/truncated.avi"]["error"]
    for r in broken.values():
        assert "\n" not in r["error"] and f"failed: {r['input']}: {r['error']}" in proc.stderr
    ok = {k: r for k, r in rows.items() if r["status"] == "ok"}
    assert set(ok) >= {"day1/two_faces.avi", "day2/room/interview.mp4", "astronaut.png", "day2/hopper.jpg"}
    assert {r["worker"] for r in rows.values()} == {"w1", "w2"}  # both workers took files from the queue
    clip = ok["day1/two_faces.avi"]
    assert (clip["frames"], clip["duration_s"], clip["tracked_faces"]) == (24, 2.4, 2)
    assert clip["faces"] == 48 and abs(sum(clip[f"share_{lab}"] for lab in LABELS) - 1) < 1e-3
    assert ok["astronaut.png"]["dominant"] == "happy" and ok["astronaut.png"]["kind"] == "image"
    if "day1/shared_clip.gif" in ok:
        assert ok["day1/shared_clip.gif"]["frames"] == 56 and ok["day1/shared_clip.gif"]["tracked_faces"] >= 2
    # outputs mirror the inputs' paths; nothing half-written is left
    for name in ("day1/two_faces", "day2/room/interview", "astronaut", "day2/hopper"):
        for ext in ("jsonl", "csv", "png", "meta.json"):
            assert (out / f"{name}.{ext}").stat().st_size > 0
    assert not list(out.rglob("*.tmp")) and not (out / "broken" / "empty.jsonl").exists()
    assert (out / "summary.csv").read_text().splitlines()[0].startswith("input,name,path,kind,status,error,duration_s,frames")


def test_jsonl_and_csv_agree_and_match_engine_run(local_run, archive, tmp_path):
    _, out = local_run
    events = [json.loads(line) for line in (out / "day1" / "two_faces.jsonl").read_text().splitlines()]
    assert [e["frame"] for e in events] == list(range(24))
    with open(out / "day1" / "two_faces.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert list(table[0]) == ["frame", "t", "face_id", "x", "y", "w", "h", "score", "emotion", "confidence", *LABELS]
    faces = [(e["frame"], f) for e in events for f in e["faces"]]
    assert len(table) == len(faces) == 48
    for row, (frame, f) in zip(table, faces):
        assert (int(row["frame"]), int(row["face_id"]), row["emotion"]) == (frame, f["id"], f["emotion"])
        assert [int(row[k]) for k in "xywh"] == f["box"] and float(row["happy"]) == f["probs"]["happy"]
    # engine.run's own JSONL for the same clip: the same record builder, the same answers
    ref = tmp_path / "run.jsonl"
    run = subprocess.run([sys.executable, "-m", "engine.run", "--source", archive / "day1" / "two_faces.avi", "--no-display",
                          "--quiet", "--jsonl", ref], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    mine = [{k: v for k, v in e.items() if k != "ms"} for e in events]
    theirs = [{k: v for k, v in json.loads(line).items() if k != "ms"} for line in ref.read_text().splitlines()]
    assert mine == theirs
    assert set(events[0]["ms"]) == set(json.loads(ref.read_text().splitlines()[0])["ms"])


def test_timeline_png_and_index(local_run):
    from engine.io.timeline import image_size

    _, out = local_run
    png = cv2.imread(str(out / "day1" / "two_faces.png"))
    assert png is not None and (png.shape[1], png.shape[0]) == image_size(2)  # one panel per tracked face
    assert png.std() > 10  # drawn, not blank
    page = (out / "index.html").read_text()
    for href in ["summary.csv", "summary.json", "day1/two_faces.png", "day1/two_faces.csv", "day2/room/interview.jsonl"]:
        assert f'href="{href}"' in page and (out / href).is_file()
    assert "http" not in page.split("<body>")[1]  # self-contained: nothing fetched from elsewhere


def test_two_hour_timeline_is_bounded_and_readable(tmp_path):
    from engine.io.timeline import Timeline, clock, image_size
    from engine.core.types import Face

    tl = Timeline(LABELS, 1 / 30, max_bins=1024)
    probs = dict(zip(LABELS, [0.05, 0.05, 0.05, 0.6, 0.1, 0.05, 0.1]))
    n = 2 * 3600 * 30
    for i in range(0, n, 10):  # every 10th frame of 2 hours keeps the test quick; binning is the same
        tl.add(i / 30, [Face(1, (0, 0, 9, 9), 0.9, "happy", 0.6, probs)] + ([Face(2, (9, 9, 9, 9), 0.9, "sad", 0.1, probs)] if i > n // 2 else []))
    assert max(f.n for f in tl.faces.values()) <= 1024 and tl.face_frames() == {1: n // 10, 2: n // 20 - 1}
    assert tl.faces[2].start * tl.bin_s <= 3600 < (tl.faces[2].start + 1) * tl.bin_s
    assert tl.draw(tmp_path / "long.png", "2 hours") == image_size(2)
    png = cv2.imread(str(tmp_path / "long.png"))
    assert (png.shape[1], png.shape[0]) == image_size(2)
    assert (clock(0), clock(75), clock(3725)) == ("0:00", "1:15", "1:02:05")


def test_rerun_skips_done_inputs_force_and_changed_options_redo(local_run, archive, tmp_path):
    _, first = local_run
    out = tmp_path / "out"
    shutil.copytree(first, out)
    before = summary(out)
    done = [k for k, r in before.items() if r["status"] == "ok"]
    proc = batch(archive, "--out", out, "--quiet")
    after = summary(out)
    assert all(after[k]["reused"] and after[k]["seconds"] == before[k]["seconds"] for k in done)
    assert all(not after[k]["reused"] for k in after if k.startswith("broken/"))  # failures are tried again
    assert proc.returncode == 1 and "already done" not in proc.stderr  # --quiet: failures and the final line
    proc = batch(archive, "--out", out, "--quiet", "--ema", "0.9")  # options that change the answers: all redone
    assert not any(summary(out)[k]["reused"] for k in done)
    photo = [archive / "astronaut.png", "--out", tmp_path / "photo", "--quiet"]
    batch(*photo)
    assert summary(tmp_path / "photo")["astronaut.png"]["reused"] is False
    batch(*photo)
    assert summary(tmp_path / "photo")["astronaut.png"]["reused"] is True
    proc = batch(*photo, "--force")
    assert proc.returncode == 0 and summary(tmp_path / "photo")["astronaut.png"]["reused"] is False
    # --max-failures: no new input after the first failure (sorted: astronaut ok, then broken/corrupt fails)
    proc = batch(archive / "broken", archive / "astronaut.png", "--out", tmp_path / "mf", "--workers", "1", "--max-failures", "1")
    rows = summary(tmp_path / "mf")
    assert proc.returncode == 1 and [r["status"] for r in rows.values()] == ["ok", "failed", "not-run", "not-run"], rows


def test_ctrl_c_keeps_what_is_done_and_resume_finishes(archive, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    write_video(src / "a_short.avi", 8)
    write_video(src / "b_long.avi", 1500, fps=30)
    cv2.imwrite(str(src / "c_photo.png"), astronaut())
    out = tmp_path / "out"
    proc = batch(src, "--out", out, "--workers", "1", wait=False)
    deadline = time.monotonic() + 60
    while not (out / "a_short.meta.json").exists() or not list(out.glob(".b_long.jsonl.*.tmp")):
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err
    rows = summary(out)
    assert rows["a_short.avi"]["status"] == "ok" and rows["b_long.avi"]["status"] == "not-run"
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp")) and not (out / "b_long.jsonl").exists()
    proc = batch(src, "--out", out, "--workers", "1")
    rows = summary(out)
    assert proc.returncode == 0, proc.stderr
    assert rows["a_short.avi"]["reused"] and not rows["b_long.avi"]["reused"] and rows["b_long.avi"]["frames"] == 1500


@pytest.mark.parametrize("mode", ["local", "ray"])
def test_a_killed_worker_fails_only_its_input(mode, tmp_path):
    ray = ["--ray"] if mode == "ray" else []
    if ray:
        pytest.importorskip("ray", reason="pip install 'emotion-engine[ray]'")
    src = tmp_path / "in"
    src.mkdir()
    write_video(src / "doomed.avi", 3000, fps=30)
    for i in range(3):
        write_video(src / f"fine{i}.avi", 6)
    out = tmp_path / "out"
    proc = batch(src, "--out", out, "--workers", "2", *ray, wait=False)
    deadline = time.monotonic() + 60
    while not (tmps := list(out.glob(".doomed.jsonl.*.tmp"))):
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    os.kill(int(tmps[0].name.split(".")[-2]), signal.SIGKILL)  # the temp name carries the worker's pid
    _, err = proc.communicate(timeout=60)
    rows = summary(out)
    assert proc.returncode == 1, err
    assert rows["doomed.avi"]["status"] == "failed" and ("SIGKILL" if mode == "local" else "Ray worker died") in rows["doomed.avi"]["error"]
    assert all(rows[f"fine{i}.avi"]["status"] == "ok" for i in range(3)), {k: (v["status"], v.get("error")) for k, v in rows.items()}


def test_ray_ctrl_c_stops_cleanly(tmp_path):
    pytest.importorskip("ray", reason="pip install 'emotion-engine[ray]'")
    src = tmp_path / "in"
    src.mkdir()
    write_video(src / "long.avi", 3000, fps=30)
    out = tmp_path / "out"
    proc = batch(src, "--out", out, "--ray", "--workers", "1", wait=False)
    deadline = time.monotonic() + 60
    while not list(out.glob(".long.jsonl.*.tmp")):
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert summary(out)["long.avi"]["status"] == "not-run" and not list(out.glob(".*.tmp"))


def test_ray_local_mode_gives_the_local_results(local_run, archive, tmp_path):
    pytest.importorskip("ray", reason="pip install 'emotion-engine[ray]'")
    _, local_out = local_run
    out = tmp_path / "ray"
    proc = batch(archive, "--out", out, "--ray", "--workers", "2", timeout=180)
    assert proc.returncode == 1, proc.stderr
    run = json.loads((out / "summary.json").read_text())["run"]
    assert (run["mode"], run["ray_address"], run["actors"]) == ("ray", "local", 2)
    assert without_timing(summary(out)) == without_timing(summary(local_out))
    for name in ("day1/two_faces", "day2/hopper"):
        assert (out / f"{name}.csv").read_bytes() == (local_out / f"{name}.csv").read_bytes()


def test_inputs_folders_globs_lists_and_names(archive, tmp_path):
    from engine.batch.inputs import find_inputs

    listing = tmp_path / "list.txt"
    listing.write_text(f"# sessions\n{archive / 'day1'}\n\n{archive / 'astronaut.png'}\n{archive / 'gone.mp4'}\n")
    found = {i.label: i for i in find_inputs([str(listing), str(archive / "day2" / "**" / "*.mp4")])}
    assert found["day1/two_faces.avi"].name == "day1/two_faces" and found["day1/two_faces.avi"].kind == "video"
    assert found["astronaut.png"].kind == "image" and found["gone.mp4"].kind == "missing"
    assert found["day2/room/interview.mp4"].name == "day2/room/interview"
    (tmp_path / "x.mp4").write_bytes(b"1")
    (tmp_path / "x.avi").write_bytes(b"1")
    assert sorted(i.name for i in find_inputs([str(tmp_path / "x.*")])) == ["x_avi", "x_mp4"]


BAD_USAGE = {
    "no inputs found": (lambda d: [d / "empty_folder", "--out", d / "o"], "no inputs found"),
    "missing input": (lambda d: [d / "nope.mp4", "--out", d / "o"], "does not exist"),
    "unwritable --out": (lambda d: [d / "empty_folder", "--out", d / "file" / "sub"], "cannot write to --out"),
    "unknown backend": (lambda d: [d / "a.png", "--out", d / "o", "--backend", "torch"], "--backend: invalid choice: 'torch'"),
    "bad --views": (lambda d: [d / "a.png", "--out", d / "o", "--views", "3"], "--views: invalid choice: 3"),
    "bad --workers": (lambda d: [d / "a.png", "--out", d / "o", "--workers", "0"], "--workers: must be at least 1"),
    "no --out": (lambda d: [d / "a.png"], "--out"),
}


@pytest.mark.parametrize("case", list(BAD_USAGE))
def test_bad_usage_is_one_line(case, tmp_path):
    (tmp_path / "empty_folder").mkdir()
    (tmp_path / "file").write_text("a file, not a folder")
    cv2.imwrite(str(tmp_path / "a.png"), astronaut())
    make, fragment = BAD_USAGE[case]
    if case == "unwritable --out":
        (tmp_path / "empty_folder" / "a.png").write_bytes((tmp_path / "a.png").read_bytes())
    assert_one_line_error(batch(*make(tmp_path), timeout=60), fragment)


def test_ray_missing_is_one_line(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), astronaut())
    code = ("import sys; sys.modules['ray'] = None\nfrom engine.batch.cli import main\nfrom engine.core.errors import cli_main\n"
            "sys.exit(cli_main(main, sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", code, tmp_path / "a.png", "--out", tmp_path / "o", "--ray"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert_one_line_error(proc, "pip install 'emotion-engine[ray]'")


def test_list_files_and_urls_cannot_steer_outputs_outside_out(tmp_path):
    from engine.batch.inputs import find_inputs
    from engine.batch.job import out_paths

    (tmp_path / "lists").mkdir()
    listing = tmp_path / "lists" / "inputs.txt"
    listing.write_text("../../../nothere.mp4\nhttp://host/../../../../etc/x.mp4\n")
    found = find_inputs([str(listing)])
    from engine.core.urls import url_key

    assert {i.name for i in found} == {"nothere", f"urls/host/etc/x-{url_key('http://host/../../../../etc/x.mp4')}"}
    out = tmp_path / "out"
    for i in found:
        for p in out_paths(out, i.name).values():
            assert out.resolve() in p.resolve().parents
    with pytest.raises(ValueError):
        out_paths(out, "../escape")


def test_an_image_url_is_read_in_image_mode(tmp_path, monkeypatch):
    """An image on a web server (read through a video capture): the source and the recognizer agree, IMAGE."""
    from engine.batch.cli import build_parser
    from engine.batch.job import BatchWorker
    from engine.batch.cli import engine_options_of
    from engine.core.types import RunningMode

    photo = tmp_path / "astronaut.png"
    cv2.imwrite(str(photo), astronaut())
    real = cv2.VideoCapture
    monkeypatch.setattr(cv2, "VideoCapture", lambda target, *a: real(str(photo)))  # no network in tests
    url = "http://example.invalid/astronaut.png"
    job = {"src": url, "name": "astronaut", "kind": "image", "label": url}
    worker = BatchWorker(engine_options_of(build_parser().parse_args([url, "--out", str(tmp_path / "out")])))
    try:
        source, _ = worker._open(job)
        assert source.mode is RunningMode.IMAGE
        source.close()
        row = worker.run(job, tmp_path / "out")
    finally:
        worker.close()
    assert row["status"] == "ok", row
    assert row["frames"] == 1 and row["faces"] == 1 and row["duration_s"] == 0.0 and row["dominant"] == "happy"
