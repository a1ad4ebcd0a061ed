"""Sound cues end to end: `python -m engine.run --sound-out` on a real clip and a real photo,
with the shipped model, the real detector and the shipped clips. The rendered WAV must be
loud exactly where the JSONL says a cue fired and silent everywhere else."""
from __future__ import annotations

import json
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
MEDIA = REPO.parent / "shared" / "media"
CLIP = MEDIA / "head-pose-face-detection-female-and-male.gif"


def _run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.run", "--no-display", "--quiet", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=timeout)


def _wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path)) as w:
        x = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768
        return x, w.getframerate()


def _loud_windows(x: np.ndarray, rate: int, win_s: float = 0.05) -> np.ndarray:
    win = int(rate * win_s)
    return np.sqrt(np.mean(x[: x.size // win * win].reshape(-1, win) ** 2, axis=1)) > 0


@pytest.mark.skipif(not CLIP.is_file(), reason="needs ../shared/media")
def test_clip_cues_are_rendered_where_the_jsonl_says(tmp_path):
    wav, events = tmp_path / "cues.wav", tmp_path / "ev.jsonl"
    r = _run("--source", str(CLIP), "--sound-out", str(wav), "--jsonl", str(events),
             "--sound-stable", "0.3", "--sound-cooldown", "1.0")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    cues = [(e["t"], e["sound"]) for e in lines if "sound" in e]
    assert cues, "two faces appearing and holding an emotion must fire at least one cue"
    for _, s in cues:
        assert s["emotion"] in json.loads((REPO / "engine/zoo/emonet_f/labels.json").read_text())["labels"]
        assert (REPO / "engine" / "sound" / "sounds" / s["emotion"] / s["clip"]).is_file()
    gaps = np.diff([t for t, _ in cues])
    assert (gaps >= 1.0 - 1e-6).all(), "cool-down violated"

    x, rate = _wav(wav)
    assert x.size / rate >= lines[-1]["t"]  # covers the whole source timeline
    loud = _loud_windows(x, rate)
    starts = [int(t / 0.05) for t, _ in cues]
    for w0 in starts:
        assert loud[w0: w0 + 4].any(), "silence where a cue fired"
    assert not loud[: starts[0]].any(), "sound before the first cue"
    # everything loud belongs to a cue that started at most one clip length (< 2.5 s) before
    for i in np.flatnonzero(loud):
        assert any(0 <= i - w0 < 50 for w0 in starts), f"sound at {i * 0.05:.2f}s with no cue"


def test_photo_gets_one_cue_for_its_dominant_emotion(tmp_path):
    wav, events = tmp_path / "photo.wav", tmp_path / "ev.jsonl"
    r = _run("--source", "sample", "--sound-out", str(wav), "--jsonl", str(events))
    assert r.returncode == 0, r.stderr
    (event,) = [json.loads(line) for line in events.read_text().splitlines()]
    assert event["faces"] and event["sound"]["emotion"] == event["faces"][0]["emotion"]
    x, rate = _wav(wav)
    assert _loud_windows(x, rate)[:4].any()


@pytest.mark.parametrize("setup, message", [
    (lambda d: None, "does not exist"),
    (lambda d: d.mkdir(), "no usable"),
    (lambda d: ((d / "happy").mkdir(parents=True), (d / "happy" / "bad.wav").write_bytes(b"RIFF0000WAVEjunk")), "bad.wav"),
])
def test_bad_sound_dir_is_one_sentence(tmp_path, setup, message):
    sound_dir = tmp_path / "sounds"
    setup(sound_dir)
    r = _run("--source", "sample", "--sound", "--sound-dir", str(sound_dir), "--sound-player", "none")
    assert r.returncode != 0
    err = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0], r.stderr
