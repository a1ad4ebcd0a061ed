"""engine.batch against the defects of issue #35: an unreachable --ray address, URLs that collide or carry
secrets, temporary files of killed workers, truncated photos, glob vs folder names, broken symbolic links.

Real subprocesses and a real local HTTP server (python's http.server in a thread) serving a clip made here with
cv2.VideoWriter from the astronaut portrait, so the tests run without ../shared."""
from __future__ import annotations

import functools
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from fakes import astronaut
from test_batch import REPO, batch, summary, write_video
from test_cli_engine import assert_one_line_error

PASSWORD, TOKEN = "hunter2pw", "tok3nXYZ"


def free_port() -> int:
    """A port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def photo(tmp_path) -> Path:
    path = tmp_path / "in" / "astronaut.png"
    path.parent.mkdir()
    cv2.imwrite(str(path), astronaut())
    return path


# ------------------------------------------------------------------ 2: --ray that does not answer
def test_dead_ray_address_fails_fast_with_one_line(photo, tmp_path):
    pytest.importorskip("ray", reason="pip install 'emotion-engine[ray]'")
    for address in (f"127.0.0.1:{free_port()}", f"ray://127.0.0.1:{free_port()}"):
        t0 = time.monotonic()
        proc = batch(photo, "--out", tmp_path / "o", "--ray", address, timeout=60)
        took = time.monotonic() - t0
        assert_one_line_error(proc, "cannot reach Ray at", address)
        assert took < 30, took  # today: 127.0.0.1:PORT hangs (killed at 615 s), ray:// takes 31 s


def test_ray_that_cannot_start_is_one_line_exit_2(photo, tmp_path):
    pytest.importorskip("ray", reason="pip install 'emotion-engine[ray]'")
    env = {**os.environ, "RAY_TMPDIR": "/proc/nope"}
    proc = subprocess.run([sys.executable, "-m", "engine.batch", photo, "--out", tmp_path / "o", "--ray"], cwd=REPO,
                          capture_output=True, text=True, timeout=120, env=env)
    assert_one_line_error(proc, "cannot start Ray on this machine")


def test_ray_probe_and_address_parsing():
    from engine.batch.cluster import host_port, probe
    from engine.core.errors import UserError

    assert host_port("10.0.0.1:6379") == ("10.0.0.1", 6379) and host_port("ray://h:10001") == ("h", 10001)
    assert host_port("[::1]:6379") == ("::1", 6379) and host_port("auto") is None
    with pytest.raises(UserError, match="cannot reach Ray at ray://\\*\\*\\*@127.0.0.1"):
        probe(f"ray://u:{PASSWORD}@127.0.0.1:{free_port()}")


# ------------------------------------------------------------------ 3 + 5: URLs
@pytest.fixture(scope="module")
def http_clip(tmp_path_factory):
    """A real HTTP server in a thread serving a real clip and a photo; yields its base URL (127.0.0.1:PORT)."""
    root = tmp_path_factory.mktemp("www")
    write_video(root / "clip.avi", 6)
    cv2.imwrite(str(root / "astronaut.png"), astronaut())
    handler = functools.partial(QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # the test's stderr stays about the batch
        pass


def everything_written(out: Path) -> str:
    """Every file and folder name under `out` and every text file's content, as one string."""
    parts = []
    for p in out.rglob("*"):
        parts.append(str(p.relative_to(out)))
        if p.is_file() and p.suffix in (".json", ".csv", ".html", ".jsonl"):
            parts.append(p.read_text(errors="replace"))
    return "\n".join(parts)


def test_urls_differing_in_query_get_their_own_outputs(http_clip, tmp_path):
    urls = [f"http://{http_clip}/clip.avi?id=1", f"http://{http_clip}/clip.avi?id=2"]
    (tmp_path / "list.txt").write_text("\n".join(urls) + "\n")
    out = tmp_path / "out"
    proc = batch(tmp_path / "list.txt", "--out", out, "--workers", "1", timeout=180)
    assert proc.returncode == 0, proc.stderr
    rows = summary(out)
    assert set(rows) == set(urls) and all(r["status"] == "ok" and r["frames"] == 6 for r in rows.values()), rows
    names = {json.loads((out / "summary.json").read_text())["inputs"][i]["name"] for i in range(2)}
    assert len(names) == 2  # today both are urls/127.0.0.1_PORT/clip_avi: one overwrites the other
    for name in names:
        assert (out / f"{name}.jsonl").is_file() and (out / f"{name}.meta.json").is_file()


def test_url_credentials_and_tokens_never_reach_outputs_or_stderr(http_clip, tmp_path):
    good = f"http://user:{PASSWORD}@{http_clip}/clip.avi?token={TOKEN}&id=7"
    gone = f"http://user:{PASSWORD}@{http_clip}/missing.avi?token={TOKEN}"
    photo = f"http://user:{PASSWORD}@{http_clip}/astronaut.png?sig={TOKEN}"
    out = tmp_path / "out"
    proc = batch(good, gone, photo, "--out", out, "--workers", "1", timeout=180)
    assert proc.returncode == 1, proc.stderr  # missing.avi fails
    rows = summary(out)
    assert sorted(r["status"] for r in rows.values()) == ["failed", "ok", "ok"], rows
    written = everything_written(out)
    for secret in (PASSWORD, TOKEN):
        assert secret not in written and secret not in proc.stderr and secret not in proc.stdout, secret
    assert "***" in proc.stderr  # the failed input's line shows the redacted URL
    # a re-run knows the done inputs again (meta.json records the redacted URL and a hash of the whole)
    again = batch(good, photo, "--out", out, "--workers", "1", timeout=180)
    assert again.returncode == 0 and all(r["reused"] for r in summary(out).values()), again.stderr


def test_no_two_inputs_share_a_name(tmp_path):
    from engine.batch.inputs import find_inputs

    for n in ("a.mp4", "a.avi", "a_mp4.avi"):  # a.mp4 + a.avi -> a_mp4, a_avi; a_mp4.avi -> a_mp4 too
        (tmp_path / n).write_bytes(b"1")
    names = [i.name for i in find_inputs([str(tmp_path)])]
    assert len(set(names)) == 3, names


# ------------------------------------------------------------------ 8: the smaller ones
def test_temp_files_of_a_killed_worker_are_swept_at_start(photo, tmp_path):
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that is gone: as a SIGKILLed worker's
    stale = [out / f".other.jsonl.{dead.pid}.tmp", out / "sub" / f".x.png.{dead.pid}.tmp", out / f".summary.csv.{dead.pid}.tmp"]
    for p in stale:
        p.write_bytes(b"half")
    keep = out / ".mine.tmp"
    keep.write_bytes(b"not the batch's")
    proc = batch(photo, "--out", out, "--workers", "1")
    assert proc.returncode == 0, proc.stderr
    assert not any(p.exists() for p in stale) and keep.exists()  # today: left until that input runs again


def test_unreadable_images_fail_with_exit_1(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    (d / "a.jpg").write_bytes(np.random.default_rng(1).integers(0, 256, 5000, np.uint8).tobytes())
    (d / "b.png").write_bytes(np.random.default_rng(2).integers(0, 256, 3000, np.uint8).tobytes())
    proc = batch(d, "--out", tmp_path / "out", "--workers", "1")
    assert proc.returncode == 1 and "nan" not in proc.stderr, proc.stderr
    assert all(r["status"] == "failed" and r["error"] for r in summary(tmp_path / "out").values())


def test_truncated_jpeg_fails_as_partly_decoded(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    _, data = cv2.imencode(".jpg", astronaut())
    (d / "cut.jpg").write_bytes(data.tobytes()[: len(data) // 2])
    (d / "whole.jpg").write_bytes(data.tobytes())
    proc = batch(d, "--out", tmp_path / "out", "--workers", "1")
    rows = summary(tmp_path / "out")
    assert proc.returncode == 1, proc.stderr
    assert rows["whole.jpg"]["status"] == "ok"
    assert rows["cut.jpg"]["status"] == "failed" and "partly decoded" in rows["cut.jpg"]["error"]  # today: ok


def test_a_glob_names_files_as_their_folder_does(tmp_path):
    from engine.batch.inputs import find_inputs

    d = tmp_path / "DIR"
    (d / "sub").mkdir(parents=True)
    for n in ("a.mp4", "sub/x.mp4", "sub/x.png", "sub/y.mp4"):
        (d / n).write_bytes(b"1")
    for folder, patterns in ((d, ("**/*.mp4", "**", "*/*.mp4")), (d / "sub", ("*.mp4", "y.*"))):
        by_folder = {i.src: i.name for i in find_inputs([str(folder)])}
        for pattern in patterns:  # the folder part before the first wildcard is the folder names are relative to
            by_glob = {i.src: i.name for i in find_inputs([str(folder / pattern)])}
            assert by_glob and all(by_folder[src] == name for src, name in by_glob.items()), (pattern, by_glob, by_folder)


def test_broken_links_are_listed_as_skipped(photo, tmp_path):
    d = photo.parent
    (d / "dangling.mp4").symlink_to(d / "nowhere.mp4")
    (d / "loop.mp4").symlink_to(d / "loop.mp4")
    (d / "up").symlink_to(d)
    out = tmp_path / "out"
    proc = batch(d, "--out", out, "--workers", "1")
    assert proc.returncode == 0, proc.stderr
    rows = summary(out)
    skipped = {Path(k).name: r for k, r in rows.items() if r["status"] == "skipped"}
    assert set(skipped) == {"dangling.mp4", "loop.mp4", "up"}, rows  # today: not in the summary at all
    assert "dangling" in skipped["dangling.mp4"]["error"] and "loop" in skipped["loop.mp4"]["error"]
    for name in skipped:
        assert f"skipped: {d / name}" in proc.stderr
    run = json.loads((out / "summary.json").read_text())["run"]
    assert run["totals"]["skipped"] == 3 and run["totals"]["inputs"] == 1 and run["totals"]["ok"] == 1


def test_a_timeline_titled_in_a_script_the_font_lacks_warns_nothing(tmp_path):
    """An input named in emoji or CJK gave matplotlib "Glyph ... missing" warnings on stderr for every plot."""
    import warnings

    from engine.io.timeline import Timeline
    from engine.core.types import Face

    labels = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    tl = Timeline(labels, 1 / 30)
    probs = dict(zip(labels, [0.05, 0.05, 0.05, 0.6, 0.1, 0.05, 0.1]))
    for i in range(30):
        tl.add(i / 30, [Face(1, (0, 0, 9, 9), 0.9, "happy", 0.6, probs)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tl.draw(tmp_path / "t.png", "\U0001F600 \u6f22\u5b57 clip")
    assert not [w for w in caught if "glyph" in str(w.message).lower()], [str(w.message) for w in caught]
    assert (tmp_path / "t.png").stat().st_size > 1000
