"""Sound cues (engine/sound/cues.py): the shipped clips, when a cue fires, folder mapping, errors, WAV rendering.

Everything here decodes real WAV files. Live playback is exercised through stand-in `paplay`
programs (shell scripts on PATH) and, where PortAudio is installed, sounddevice on ALSA's null device.
"""
from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from engine.core.contract import FER_CLASSES
from engine.core.errors import UserError
from engine.sound.cues import RENDER_RATE, SOUNDS_DIR, SoundCues, SoundOptions, load_clips, resample

LABELS = list(FER_CLASSES)
FPS = 30.0


def make(labels=LABELS, **kw) -> SoundCues:
    kw.setdefault("player", "none")
    kw.setdefault("seed", 0)
    return SoundCues.create(SoundOptions(**kw), list(labels))


def run_frames(cues: SoundCues, timeline, fps: float = FPS) -> list[dict]:
    """timeline(t) -> list of (track_id, emotion) for the frame at t; returns the cues fired."""
    fired = []
    duration, f = timeline.duration, 0
    while f / fps <= duration + 1e-9:
        t = f / fps
        event = cues.update(t, timeline(t))
        if event is not None:
            fired.append(event)
        f += 1
    return fired


def timeline_of(duration: float, fn):
    fn.duration = duration
    return fn


def read_wav(path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as w:
        assert w.getnchannels() == 1 and w.getsampwidth() == 2
        x = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768.0
        return x, w.getframerate()


def write_pcm(path: Path, x: np.ndarray, rate: int, width: int = 2, channels: int = 1) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    x = np.repeat(x[:, None], channels, axis=1).reshape(-1)
    if width == 1:
        raw = (np.clip(x, -1, 1) * 127 + 128).astype(np.uint8).tobytes()
    elif width == 2:
        raw = (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()
    elif width == 3:
        v = (np.clip(x, -1, 1) * (2**23 - 1)).astype(np.int32)
        raw = np.stack([v & 255, (v >> 8) & 255, (v >> 16) & 255], axis=1).astype(np.uint8).tobytes()
    else:
        raw = (np.clip(x, -1, 1) * (2**31 - 1)).astype("<i4").tobytes()
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(raw)


def write_riff(path: Path, x: np.ndarray, rate: int, kind: str) -> None:
    """WAVs Python 3.11's `wave` refuses: 32-bit float stereo, and WAVE_FORMAT_EXTENSIBLE 24-bit PCM."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "float32":
        body = np.repeat(x[:, None], 2, axis=1).astype("<f4").tobytes()
        fmt = struct.pack("<HHIIHH", 3, 2, rate, rate * 8, 8, 32)
    else:
        v = (np.clip(x, -1, 1) * (2**23 - 1)).astype(np.int32)
        body = np.stack([v & 255, (v >> 8) & 255, (v >> 16) & 255], axis=1).astype(np.uint8).tobytes()
        guid = struct.pack("<H", 1) + bytes.fromhex("000000001000800000aa00389b71")
        fmt = struct.pack("<HHIIHHHHI", 0xFFFE, 1, rate, rate * 3, 3, 24, 22, 24, 4) + guid
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(body)) + body
    path.write_bytes(b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks)


def shipped(emotion: str) -> list[Path]:
    return sorted((SOUNDS_DIR / emotion).glob("*.wav"))


# ------------------------------------------------------------------------------------ shipped clips


def test_shipped_set_covers_all_fer_labels(capsys):
    cues = make()
    assert capsys.readouterr().err == ""  # no warnings for the shipped set
    assert set(cues.clips) == set(LABELS)
    total = 0
    for emotion in LABELS:
        assert len(cues.clips[emotion]) >= 2, emotion
        for clip in cues.clips[emotion]:
            assert clip.rate == 16000
            assert 0.5 <= clip.duration <= 3.0, clip.path
            assert np.abs(clip.samples()).max() > 0.3  # normalised speech, not silence
            with wave.open(str(clip.path), "rb") as w:
                assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 16000)
            total += clip.path.stat().st_size
    assert total < 1_000_000
    assert (SOUNDS_DIR / "README.md").is_file()
    cues.close()


def test_subset_model_uses_its_labels_only(capsys):
    cues = make(labels=["angry", "happy", "sad"])
    assert set(cues.clips) == {"angry", "happy", "sad"}
    assert capsys.readouterr().err == ""  # the other shipped folders are not warned about
    cues.close()


# ------------------------------------------------------------------------------------ cue decisions


def test_flicker_faster_than_stable_never_fires():
    cues = make(stable_s=1.0, cooldown_s=0.0)
    # a face flipping happy/sad every 0.5 s for 20 s, and one flipping every frame
    tl = timeline_of(20.0, lambda t: [(1, "happy" if int(t / 0.5) % 2 == 0 else "sad"),
                                      (2, LABELS[int(round(t * FPS)) % 7])])
    assert run_frames(cues, tl) == []
    cues.close()


def test_stable_change_fires_once():
    cues = make(stable_s=1.0, cooldown_s=4.0)
    tl = timeline_of(30.0, lambda t: [(7, "neutral" if t < 10 else "happy")])
    fired = run_frames(cues, tl)
    assert [e["emotion"] for e in fired] == ["neutral", "happy"]
    assert fired[0]["t"] == pytest.approx(1.0, abs=1e-6)  # first appearance, held stable_s
    assert fired[1]["t"] == pytest.approx(11.0, abs=1e-6)  # change at 10 s, held 1 s
    assert fired[0]["clip"] in {p.name for p in shipped("neutral")}
    assert fired[1]["clip"] in {p.name for p in shipped("happy")}
    assert set(fired[0]) == {"emotion", "clip", "t"}
    cues.close()


def test_cooldown_delays_and_drops_reverted_changes():
    cues = make(stable_s=1.0, cooldown_s=4.0)

    def faces(t):
        out = [(1, "happy" if t < 6 or t >= 8 else "sad")]  # sad for 2 s inside the cooldown, then back
        if t >= 1.5:
            out.append((2, "surprise"))  # appears at 1.5 s, stable at 2.5 s, cooldown ends at 5 s
        return out

    fired = run_frames(cues, timeline_of(20.0, faces))
    assert [(e["emotion"], round(e["t"], 3)) for e in fired] == [("happy", 1.0), ("surprise", 5.0)]
    # the sad spell (6-8 s) never got past the cooldown (ends 9 s), and back to happy is no news
    cues.close()


def test_one_cue_for_many_faces_with_the_same_emotion():
    cues = make(stable_s=0.5, cooldown_s=1.0)
    fired = run_frames(cues, timeline_of(10.0, lambda t: [(i, "neutral") for i in range(5)]))
    assert [e["emotion"] for e in fired] == ["neutral"]
    cues.close()


def test_one_clip_at_a_time_on_the_timeline():
    cues = make(stable_s=0.0, cooldown_s=0.0, sound_dir=None)
    first = cues.update(0.0, [(1, "happy")])
    assert first is not None
    dur = next(c.duration for c in cues.clips["happy"] if c.path.name == first["clip"])
    fired = run_frames(cues, timeline_of(5.0, lambda t: [(1, "happy" if t < 0.1 else "sad")]), fps=100.0)
    assert [e["emotion"] for e in fired] == ["sad"]
    assert dur <= fired[0]["t"] < dur + 0.011  # right after the happy clip ended, not before
    assert cues.cue_now("angry", t=fired[0]["t"] + 0.05) is None  # still playing the sad clip
    cues.close()


def test_cue_now_and_clip_rotation():
    cues = make(seed=3)
    events = []
    t = 0.0
    for _ in range(6):
        e = cues.cue_now("surprise", t)
        assert e is not None and e["emotion"] == "surprise"
        events.append(e["clip"])
        t += 5.0
    assert all(a != b for a, b in zip(events, events[1:]))  # never the same clip twice in a row
    assert cues.cue_now("not-an-emotion", t) is None
    cues.close()
    # same seed, same choices
    again = make(seed=3)
    assert [again.cue_now("surprise", 5.0 * i)["clip"] for i in range(6)] == events
    again.close()


def test_emotion_without_clips_warns_once_and_stays_silent(tmp_path, capsys):
    (tmp_path / "happy").mkdir()
    for p in shipped("happy"):
        shutil.copy(p, tmp_path / "happy")
    cues = make(sound_dir=tmp_path, stable_s=0.5, cooldown_s=0.0)
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "angry" in err and "silent" in err
    fired = run_frames(cues, timeline_of(6.0, lambda t: [(1, "angry"), (2, "happy" if t > 3 else "angry")]))
    assert [e["emotion"] for e in fired] == ["happy"]
    assert capsys.readouterr().err == ""  # no further warnings while running
    cues.close()


# --------------------------------------------------------------------------------- folders, formats


def test_dataset_folder_names_map_onto_labels(tmp_path, capsys):
    src = {"fearful": "fear", "surprised": "surprise", "calm": "neutral", "YAF_pleasant_surprised": "surprise",
           "OAF_happy": "happy", "ANG": "angry", "Disgusted": "disgust", "contempt": None}
    for folder, emotion in src.items():
        (tmp_path / folder).mkdir()
        for p in shipped(emotion or "neutral"):
            shutil.copy(p, tmp_path / folder / f"{folder}_{p.name}")
    cues = make(sound_dir=tmp_path, labels=["angry", "disgust", "fear", "happy", "surprise", "neutral"])
    err = capsys.readouterr().err
    assert "contempt" in err and err.count("warning:") == 1  # the unknown folder; every label has clips
    assert {k: len(v) for k, v in cues.clips.items()} == {
        "angry": 2, "disgust": 2, "fear": 2, "happy": 2, "surprise": 4, "neutral": 2}
    assert all(c.path.parent.name == "calm" for c in cues.clips["neutral"])
    e = cues.cue_now("fear")
    assert e["emotion"] == "fear" and e["clip"].startswith("fearful_")
    cues.close()


def test_pcm_variants_decode_and_resample(tmp_path):
    rate = 22050
    t = np.arange(int(0.5 * rate)) / rate
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    for width in (1, 2, 3, 4):
        write_pcm(tmp_path / "happy" / f"w{width}.wav", tone, rate, width=width, channels=2 if width == 2 else 1)
    write_riff(tmp_path / "happy" / "float32.wav", tone, rate, "float32")
    write_riff(tmp_path / "happy" / "extensible24.wav", tone, rate, "extensible")
    clips = load_clips(tmp_path, ["happy"])["happy"]
    assert len(clips) == 6
    for clip in clips:
        assert clip.rate == rate and clip.frames == tone.size
        assert np.abs(clip.samples() - tone).max() < 0.02, clip.path.name
    r = resample(tone, rate, RENDER_RATE)
    assert abs(r.size - 0.5 * RENDER_RATE) <= 1
    assert np.sqrt(np.mean(r**2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.02)


def test_missing_dir_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match=r"sound folder .*nope does not exist"):
        make(sound_dir=tmp_path / "nope")


def test_empty_dir_is_a_user_error(tmp_path):
    (tmp_path / "happy").mkdir()  # an emotion folder without clips
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(UserError, match=r"no usable sound clips .* expected .*/<emotion>/\*\.wav"):
        make(sound_dir=tmp_path)


def test_corrupt_wav_is_a_user_error_at_create(tmp_path):
    (tmp_path / "happy").mkdir()
    shutil.copy(shipped("happy")[0], tmp_path / "happy")
    bad = tmp_path / "happy" / "broken.wav"
    bad.write_bytes(b"this is not a wav file at all" * 10)
    with pytest.raises(UserError) as exc:
        make(sound_dir=tmp_path)
    msg = str(exc.value)
    assert "broken.wav" in msg and "cannot be read" in msg and "\n" not in msg


def test_truncated_and_empty_wavs_are_user_errors(tmp_path):
    good = shipped("sad")[0].read_bytes()
    (tmp_path / "sad").mkdir()
    (tmp_path / "sad" / "cut.wav").write_bytes(good[: len(good) // 2])
    with pytest.raises(UserError, match="cut.wav .*truncated"):
        make(sound_dir=tmp_path, labels=["sad", "happy"])
    (tmp_path / "sad" / "cut.wav").unlink()
    write_pcm(tmp_path / "sad" / "empty.wav", np.zeros(0, np.float32), 16000)
    with pytest.raises(UserError, match="empty.wav has no audio"):
        make(sound_dir=tmp_path, labels=["sad", "happy"])


def test_other_formats_without_soundfile_are_skipped_with_a_warning(tmp_path, capsys):
    try:
        import soundfile  # noqa: F401
        pytest.skip("soundfile is installed: .ogg/.flac are decoded instead")
    except (ImportError, OSError):
        pass
    (tmp_path / "happy").mkdir()
    (tmp_path / "happy" / "a.ogg").write_bytes(b"OggS")
    shutil.copy(shipped("happy")[0], tmp_path / "happy")
    cues = make(sound_dir=tmp_path, labels=["happy"])
    assert "skipping 1 .ogg" in capsys.readouterr().err
    assert len(cues.clips["happy"]) == 1
    cues.close()


def test_bad_options_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="unknown sound player 'speaker'"):
        make(player="speaker")
    with pytest.raises(UserError, match="zero or more"):
        make(stable_s=-1)
    with pytest.raises(UserError, match="cannot write the sound track"):
        make(out_wav=tmp_path / "no" / "such" / "dir" / "cues.wav")


# ------------------------------------------------------------------------------------- WAV rendering


def test_out_wav_is_loud_exactly_around_cues(tmp_path):
    out = tmp_path / "cues.wav"
    cues = make(out_wav=out, stable_s=1.0, cooldown_s=3.0)
    assert cues.player == "none"  # rendered instead of played

    def faces(t):
        return [(1, "happy" if t < 5 else ("sad" if t < 12 else "surprise"))]

    fired = run_frames(cues, timeline_of(20.0, faces))
    cues.close(end_t=25.0)
    assert [e["emotion"] for e in fired] == ["happy", "sad", "surprise"]
    x, rate = read_wav(out)
    assert rate == RENDER_RATE
    assert x.size == 25 * RENDER_RATE  # at least end_t long (here exactly: the last clip ends earlier)

    spans = []
    for e in fired:
        clip = next(c for c in cues.clips[e["emotion"]] if c.path.name == e["clip"])
        start = int(round(e["t"] * rate))
        spans.append((start, start + clip.frames))
        seg = x[start:start + clip.frames]
        ref = resample(clip.samples(), clip.rate, rate)
        assert np.abs(seg - ref).max() < 2e-4  # the clip itself, sample-exact at its cue time
    win = rate // 20  # 50 ms windows
    rms = np.sqrt(np.mean(x[: x.size // win * win].reshape(-1, win) ** 2, axis=1))
    for i, r in enumerate(rms):
        a, b = i * win, (i + 1) * win
        inside = any(a < s1 and b > s0 for s0, s1 in spans)
        if not inside:
            assert r == 0.0, f"sound outside the cues at {a / rate:.2f}s"
    for s0, s1 in spans:
        w0 = s0 // win
        assert rms[w0 + 1] > 0.01  # loud right after the cue time (clips are trimmed)
        assert np.sqrt(np.mean(x[s0:s1] ** 2)) > 0.05
    assert rms[: spans[0][0] // win].max(initial=0.0) == 0.0  # silent before the first cue


def test_out_wav_without_cues_is_silence_of_end_t(tmp_path):
    out = tmp_path / "quiet.wav"
    cues = make(out_wav=out)
    assert cues.update(0.0, []) is None
    cues.close(end_t=2.5)
    cues.close(end_t=9.0)  # idempotent
    x, rate = read_wav(out)
    assert x.size == int(2.5 * rate) and not x.any()


# ------------------------------------------------------------------------------------ live playback


def fake_player(tmp_path: Path, body: str) -> Path:
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    script = bindir / "paplay"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    return bindir


@pytest.mark.skipif(sys.platform == "win32", reason="shell-script stand-in player")
def test_live_player_one_at_a_time_and_never_blocks(tmp_path, monkeypatch):
    log = tmp_path / "played.log"
    bindir = fake_player(tmp_path, f'echo "start $1" >> "{log}"\nsleep 1.0\necho "end" >> "{log}"\n')
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    cues = make(player="paplay", stable_s=0.0, cooldown_s=0.0)
    assert cues.player == "paplay"
    t0 = time.perf_counter()
    assert cues.update(0.0, [(1, "happy")]) is not None
    assert time.perf_counter() - t0 < 0.1  # handed to the worker, not played on this thread
    deadline = time.monotonic() + 10
    while not (log.exists() and log.read_text().startswith("start")) and time.monotonic() < deadline:
        time.sleep(0.01)  # the worker has taken the clip off the queue and is playing it
    # far later on the source timeline (a file decoded faster than real time), but the speaker is busy
    assert cues.update(100.0, [(1, "sad")]) is None
    assert cues.cue_now("angry", 200.0) is None
    deadline = time.monotonic() + 10
    event = None
    while event is None and time.monotonic() < deadline:
        time.sleep(0.05)
        event = cues.update(300.0, [(1, "sad")])
    assert event is not None and event["emotion"] == "sad"
    cues.close()  # waits for the sad clip to finish
    lines = log.read_text().split("\n")
    assert [ln.split()[0] for ln in lines if ln] == ["start", "end", "start", "end"]
    played = Path(lines[0].split(maxsplit=1)[1])
    assert not played.exists()  # temp files cleaned up


@pytest.mark.skipif(sys.platform == "win32", reason="shell-script stand-in player")
def test_failing_player_warns_once_and_cues_go_on(tmp_path, monkeypatch, capsys):
    bindir = fake_player(tmp_path, 'echo "Connection failure: Connection refused" >&2\nexit 1\n')
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    cues = make(player="paplay", stable_s=0.0, cooldown_s=0.0)
    fired = []
    for i, emotion in enumerate(["happy", "sad", "angry", "fear"]):
        for _ in range(100):  # give the worker time to fail on the first clip
            e = cues.update(10.0 * i, [(1, emotion)])
            if e is not None:
                fired.append(e)
                break
            time.sleep(0.02)
    cues.close()
    assert [e["emotion"] for e in fired] == ["happy", "sad", "angry", "fear"]
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "Connection refused" in err


def test_named_player_that_is_missing_is_a_user_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no system players at all
    with pytest.raises(UserError, match="sound player aplay is not installed"):
        make(player="aplay")


def test_sounddevice_on_alsa_null_device(tmp_path):
    """With PortAudio present, sounddevice plays (here into ALSA's null device) without a warning."""
    try:
        import sounddevice  # noqa: F401
    except (ImportError, OSError):
        pytest.skip("sounddevice/PortAudio not available")
    if not sys.platform.startswith("linux"):
        pytest.skip("ALSA null device is Linux only")
    (tmp_path / ".asoundrc").write_text("pcm.!default { type null }\nctl.!default { type hw card 0 }\n")
    code = (
        "from engine.sound.cues import SoundCues, SoundOptions\n"
        "from engine.core.contract import FER_CLASSES\n"
        "c = SoundCues.create(SoundOptions(seed=0), list(FER_CLASSES))\n"
        "print(c.player)\n"
        "print(c.cue_now('happy')['emotion'])\n"
        "c.close()\n"
    )
    env = dict(os.environ, HOME=str(tmp_path), PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    if res.stdout.split()[0] != "sounddevice":
        pytest.skip(f"PortAudio found no ALSA device here: {res.stderr.strip()}")
    assert res.stdout.split() == ["sounddevice", "happy"]
    assert "warning" not in res.stderr
