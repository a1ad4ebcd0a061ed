"""Sound cues: say something that matches a face's recognised emotion.

    cues = SoundCues.create(SoundOptions(), labels)
    for each processed frame:
        event = cues.update(t, [(track_id, stable_emotion), ...])   # {"emotion", "clip", "t"} or None
    cues.close(end_t)

Clips live in `DIR/<emotion>/*.wav` (searched recursively inside each emotion folder; .ogg, .flac
and .mp3 too when `soundfile` is installed). Folder names of the public emotion-audio collections
(RAVDESS, TESS, CREMA-D: `fearful`, `surprised`, `calm`, `ps`, `OAF_Fear`, `ANG`, ...) are
mapped onto the model's labels. Every clip is decoded in `create()`, so a broken file is reported
before the first frame and playback costs nothing on the pipeline's thread.

Playback runs on its own worker thread fed by a queue of size 1: `update()` never blocks. Backends:
`sounddevice` (PortAudio) first, then the system players `paplay`, `aplay`, `afplay`. No audio
output is one warning, and the cues are still reported. With `out_wav` the cues are rendered into a
mono WAV on the source timeline instead (headless runs, tests, muxing next to a recorded video).
"""
from __future__ import annotations

import os
import queue
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.contract import FER_CLASSES, canonical_class
from engine.errors import UserError

SOUNDS_DIR = Path(__file__).resolve().parent / "sounds"
#: Sample rate of the `out_wav` track (clips are resampled to it).
RENDER_RATE = 16000
PLAYERS = ("auto", "sounddevice", "aplay", "paplay", "afplay", "none")
WAV_EXTS = (".wav", ".wave")
OTHER_EXTS = (".ogg", ".oga", ".flac", ".mp3")  # decoded with soundfile (libsndfile) when installed

#: Folder names of public emotion-audio collections -> canonical FER class. Anything else goes through
#: engine.contract.canonical_class (which knows the plain names and "fearful", "surprised", ...).
SOUND_ALIASES: dict[str, str] = {
    "calm": "neutral", "neu": "neutral", "neutrality": "neutral",
    "angry": "angry", "anger": "angry", "ang": "angry", "mad": "angry",
    "disgust": "disgust", "disgusted": "disgust", "dis": "disgust",
    "fear": "fear", "fearful": "fear", "fea": "fear", "afraid": "fear", "scared": "fear",
    "happy": "happy", "happiness": "happy", "hap": "happy", "joy": "happy",
    "sad": "sad", "sadness": "sad",
    "surprise": "surprise", "surprised": "surprise", "sur": "surprise",
    "ps": "surprise", "pleasant_surprise": "surprise", "pleasant_surprised": "surprise",
}
#: Decoded clips kept in memory up to this many bytes (float32); beyond it (a whole dataset as the
#: sound folder) clips are still all decoded once in create() to validate them, then re-read on play.
_CACHE_BYTES = 64 << 20
#: A track not seen for this long is forgotten (its next appearance counts as a first appearance).
_FORGET_S = 2.0


def _warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)


@dataclass
class SoundOptions:
    sound_dir: str | Path | None = None  # None = the shipped engine/sounds
    stable_s: float = 1.0  # a tracked face's smoothed emotion must hold this long before a cue
    cooldown_s: float = 4.0  # min gap between cues (global, on the source timeline)
    out_wav: str | Path | None = None  # render cues into a WAV on the source timeline instead of a speaker
    seed: int | None = None
    player: str = "auto"  # auto | sounddevice | aplay | paplay | afplay | none


# ----------------------------------------------------------------------------------------- decoding


def _pcm_to_float(raw: bytes, width: int, channels: int) -> np.ndarray:
    if width == 1:
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        x = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    elif width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        v = np.where(v >= 1 << 23, v - (1 << 24), v)
        x = v.astype(np.float32) / float(1 << 23)
    elif width == 4:
        x = np.frombuffer(raw, "<i4").astype(np.float32) / float(1 << 31)
    else:
        raise ValueError(f"{8 * width}-bit samples are not supported")
    return x.reshape(-1, channels).mean(axis=1) if channels > 1 else x


def _read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as w:
        channels, width, rate, n = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
        if channels < 1 or rate <= 0:
            raise ValueError("its header is invalid")
        raw = w.readframes(n)
    got = len(raw) // (width * channels)
    # 0xFFFFFFFF-ish sizes are written by streaming recorders that never patched the header.
    if got < n and n * width * channels < 0xFFFFFF00:
        raise ValueError(f"it is truncated (header says {n} frames, the file has {got})")
    raw = raw[: got * width * channels]
    return _pcm_to_float(raw, width, channels), rate


def _read_riff(path: Path) -> tuple[np.ndarray, int]:
    """Float and WAVE_FORMAT_EXTENSIBLE WAVs, which Python 3.11's `wave` refuses (3.12 reads extensible PCM)."""
    data = path.read_bytes()
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a RIFF/WAVE file")
    fmt = body = None
    pos = 12
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        chunk = data[pos + 8:pos + 8 + size]
        if cid == b"fmt ":
            fmt = chunk
        elif cid == b"data":
            body = chunk
            break
        pos += 8 + size + (size & 1)
    if fmt is None or len(fmt) < 16 or body is None:
        raise ValueError("no fmt or data chunk")
    tag, channels, rate, _, align, bits = struct.unpack_from("<HHIIHH", fmt)
    if tag == 0xFFFE and len(fmt) >= 26:
        tag = struct.unpack_from("<H", fmt, 24)[0]  # first two bytes of the sub-format GUID
    if channels < 1 or rate <= 0 or align != channels * ((bits + 7) // 8):
        raise ValueError("its header is invalid")
    body = body[: len(body) // align * align]
    if tag == 1:
        x = _pcm_to_float(body, align // channels, channels)
    elif tag == 3 and bits in (32, 64):
        x = np.frombuffer(body, "<f4" if bits == 32 else "<f8").astype(np.float32)
        x = x.reshape(-1, channels).mean(axis=1) if channels > 1 else x
    else:
        raise ValueError(f"WAV format {tag} with {bits}-bit samples is not supported")
    return x, rate


def _soundfile():
    try:
        import soundfile  # noqa: PLC0415 - optional dependency
    except (ImportError, OSError):
        return None
    return soundfile


def _read_soundfile(path: Path, reason: str = "") -> tuple[np.ndarray, int]:
    sf = _soundfile()
    if sf is None:
        raise UserError(
            f"sound clip {path} cannot be read ({reason}): use 8/16/24/32-bit PCM WAV, install soundfile, or remove it"
        )
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises LibsndfileError, RuntimeError, TypeError...
        raise UserError(f"sound clip {path} cannot be read ({reason or exc}): fix or remove it") from None
    return (data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]), int(rate)


def _decode(path: Path) -> tuple[np.ndarray, int]:
    """Decode one clip to float32 mono in [-1, 1]; UserError if it cannot be read."""
    try:
        if path.suffix.lower() in WAV_EXTS:
            try:
                x, rate = _read_wav(path)
            except wave.Error as exc:
                try:  # float or WAVE_FORMAT_EXTENSIBLE
                    x, rate = _read_riff(path)
                except ValueError:
                    x, rate = _read_soundfile(path, str(exc))
            except (EOFError, ValueError) as exc:
                x, rate = _read_soundfile(path, str(exc) or "it ends too early")
        else:
            x, rate = _read_soundfile(path)
    except OSError as exc:
        raise UserError(f"sound clip {path} cannot be read: {exc.strerror or exc}") from None
    if x.size == 0:
        raise UserError(f"sound clip {path} has no audio: fix or remove it")
    if not np.all(np.isfinite(x)):
        raise UserError(f"sound clip {path} has invalid samples (NaN or infinity): fix or remove it")
    return np.ascontiguousarray(x, dtype=np.float32), int(rate)


def resample(x: np.ndarray, rate: int, out_rate: int) -> np.ndarray:
    """Linear-interpolation resampling (good enough for speech cues; no scipy on the Pi path)."""
    if rate == out_rate or x.size == 0:
        return x.astype(np.float32, copy=False)
    n_out = max(1, int(round(x.size * out_rate / rate)))
    src = np.arange(n_out, dtype=np.float64) * (rate / out_rate)
    return np.interp(src, np.arange(x.size, dtype=np.float64), x).astype(np.float32)


@dataclass
class _Clip:
    path: Path
    emotion: str
    rate: int
    frames: int
    data: np.ndarray | None = None  # None: too many clips to keep; re-read on play

    @property
    def duration(self) -> float:
        return self.frames / self.rate

    def samples(self) -> np.ndarray:
        if self.data is not None:
            return self.data
        return _decode(self.path)[0]


# ----------------------------------------------------------------------------------- folder mapping


def _emotion_for(folder: str, labels: list[str]) -> str | None:
    """Map a clip folder name onto one of the model's labels, or None.

    Tries the whole name, then drops leading `_`-separated parts (TESS's `OAF_Fear`,
    `YAF_pleasant_surprised`); each candidate is matched against the labels directly, then through
    SOUND_ALIASES and engine.contract.canonical_class.
    """
    by_lower = {lab.lower(): lab for lab in labels}
    parts = folder.strip().lower().replace("-", "_").replace(" ", "_").split("_")
    for i in range(len(parts)):
        cand = "_".join(p for p in parts[i:] if p)
        if not cand:
            continue
        for name in (cand, SOUND_ALIASES.get(cand), canonical_class(cand)):
            if name and name in by_lower:
                return by_lower[name]
    return None


def _known_emotion(folder: str) -> bool:
    return _emotion_for(folder, list(FER_CLASSES)) is not None


def load_clips(sound_dir: str | Path | None, labels: list[str]) -> dict[str, list[_Clip]]:
    """Find and decode every clip for `labels` under `sound_dir`; {label: clips} (labels with clips only)."""
    root = Path(sound_dir).expanduser() if sound_dir is not None else SOUNDS_DIR
    if not root.exists():
        raise UserError(f"sound folder {root} does not exist")
    if not root.is_dir():
        raise UserError(f"sound folder {root} is not a folder (expected {root}/<emotion>/*.wav)")
    found: dict[str, list[Path]] = {}
    unknown: list[str] = []
    skipped: list[Path] = []
    try:
        subs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as exc:
        raise UserError(f"sound folder {root} cannot be read: {exc.strerror or exc}") from None
    have_sf = _soundfile() is not None
    for sub in subs:
        emotion = _emotion_for(sub.name, labels)
        if emotion is None:
            if not _known_emotion(sub.name):
                unknown.append(sub.name)
            continue  # a known emotion the model does not predict (e.g. `fear` for a 3-class model)
        for f in sorted(sub.rglob("*")):
            if f.name.startswith(".") or not f.is_file():
                continue
            ext = f.suffix.lower()
            if ext in WAV_EXTS or (ext in OTHER_EXTS and have_sf):
                found.setdefault(emotion, []).append(f)
            elif ext in OTHER_EXTS:
                skipped.append(f)
    if skipped:
        _warn(f"skipping {len(skipped)} {'/'.join(sorted({p.suffix.lower() for p in skipped}))} clip(s) in {root}: "
              "install soundfile to play them, or convert them to WAV")
    if unknown:
        _warn(f"ignoring sound folder(s) {', '.join(unknown)} in {root}: not an emotion name")
    if not found:
        raise UserError(
            f"no usable sound clips for the model's emotions ({', '.join(labels)}) in {root}: "
            f"expected {root}/<emotion>/*.wav"
        )
    clips: dict[str, list[_Clip]] = {}
    cached = 0
    for emotion in labels:
        for f in found.get(emotion, []):
            x, rate = _decode(f)
            keep = cached + x.nbytes <= _CACHE_BYTES
            cached += x.nbytes if keep else 0
            clips.setdefault(emotion, []).append(_Clip(f, emotion, rate, x.size, x if keep else None))
    missing = [e for e in labels if e not in clips]
    if missing:
        which = "that emotion stays" if len(missing) == 1 else "those emotions stay"
        _warn(f"no sound clips for {', '.join(missing)} in {root}: {which} silent")
    return clips


# ----------------------------------------------------------------------------------------- playback


class _Player:
    """Plays one clip at a time on a worker thread; never blocks the caller."""

    def __init__(self, backend: str, sd=None, program: str | None = None):
        self.backend = backend  # "sounddevice" | "subprocess"
        self._sd = sd
        self._program = program
        self._queue: queue.Queue = queue.Queue(maxsize=1)
        self._stop = threading.Event()  # stop now (interrupts the clip playing)
        self._done = threading.Event()  # no more clips will come
        self._busy = threading.Event()
        self._failed = False
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._files: dict[Path, str] = {}
        self._thread = threading.Thread(target=self._run, name="sound-cues", daemon=True)
        self._thread.start()

    @property
    def name(self) -> str:
        return self._program or self.backend

    def busy(self) -> bool:
        return self._busy.is_set() or not self._queue.empty()

    def submit(self, clip: _Clip) -> bool:
        if self._failed:
            return True  # playback is off after a device failure: the cue is still reported
        if self.busy():
            return False
        try:
            self._queue.put_nowait(clip)
        except queue.Full:
            return False
        return True

    def close(self, wait: bool, longest_s: float = 10.0) -> None:
        """Stop taking clips; wait for the one playing (wait=False cuts it). Never hangs."""
        if not wait:
            self._stop.set()
        self._done.set()
        # a clip playing plus one queued, plus start-up slack; a stuck device does not hang the engine
        self._thread.join(timeout=(2 * longest_s + 10.0) if wait else 2.0)
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join(timeout=2.0)
        if self._tmp is not None and not self._thread.is_alive():
            self._tmp.cleanup()
            self._tmp = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                clip = self._queue.get(timeout=0.05)
            except queue.Empty:
                if self._done.is_set():
                    return
                continue
            self._busy.set()
            try:
                if not self._failed:
                    self._play(clip)
            except Exception as exc:  # a device going away must not kill the engine
                self._failed = True
                text = str(exc).strip()
                why = text.splitlines()[-1] if text else type(exc).__name__
                _warn(f"sound output stopped ({self.name}: {why}); sound cues are still reported but not played")
            finally:
                self._busy.clear()

    def _play(self, clip: _Clip) -> None:
        if self.backend == "sounddevice":
            self._play_sounddevice(clip)
        else:
            self._play_subprocess(clip)

    def _play_sounddevice(self, clip: _Clip) -> None:
        sd = self._sd
        x, rate = clip.samples(), clip.rate
        try:
            stream = sd.OutputStream(samplerate=rate, channels=1, dtype="float32")
        except Exception:  # e.g. a raw ALSA device without 16 kHz: resample to its own rate
            rate = int(sd.query_devices(kind="output")["default_samplerate"])
            x = resample(x, clip.rate, rate)
            stream = sd.OutputStream(samplerate=rate, channels=1, dtype="float32")
        with stream:
            block = max(1, rate // 20)
            for i in range(0, x.size, block):
                if self._stop.is_set():
                    stream.abort()
                    return
                stream.write(x[i:i + block].reshape(-1, 1))

    def _wav_for(self, clip: _Clip) -> str:
        if clip.path in self._files:
            return self._files[clip.path]
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="emotion-sound-")
        path = os.path.join(self._tmp.name, f"{len(self._files)}.wav")
        write_wav(path, clip.samples(), clip.rate)
        self._files[clip.path] = path
        return path

    def _play_subprocess(self, clip: _Clip) -> None:
        cmd = [self._program, self._wav_for(clip)]
        if self._program == "aplay":
            cmd.insert(1, "-q")
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + clip.duration + 10.0  # a player waiting on a dead sound server
        while proc.poll() is None:
            if self._stop.is_set() or time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                return
            time.sleep(0.02)
        err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
        if proc.returncode != 0:
            raise RuntimeError(err or f"exit status {proc.returncode}")


def _open_player(choice: str) -> _Player | None:
    """The playback backend for `choice`; None (after one warning) when there is no audio output."""
    if choice == "none":
        return None
    if choice in ("auto", "sounddevice"):
        sd, why = None, ""
        try:
            import sounddevice as sd  # noqa: PLC0415 - optional, needs the PortAudio shared library
        except ImportError:
            why = "sounddevice is not installed (pip install sounddevice)"
        except OSError:
            why = "sounddevice cannot find PortAudio (apt-get install libportaudio2)"
        if sd is not None:
            try:
                sd.query_devices(kind="output")
                return _Player("sounddevice", sd=sd)
            except Exception:
                why = "sounddevice finds no audio output device"
        if choice == "sounddevice":
            if sd is None:
                raise UserError(f"sound player sounddevice is unavailable: {why}")
            _warn(f"{why}; sound cues are reported but not played")
            return None
    programs = ("paplay", "aplay", "afplay") if choice == "auto" else (choice,)
    for program in programs:
        if shutil.which(program):
            return _Player("subprocess", program=program)
    if choice != "auto":
        raise UserError(f"sound player {choice} is not installed: choose another of {', '.join(PLAYERS)}")
    _warn(f"no audio output ({why}, and none of {', '.join(programs)} is installed); "
          "sound cues are reported but not played")
    return None


# ---------------------------------------------------------------------------------------- WAV track


def write_wav(path: str | Path, x: np.ndarray, rate: int) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(_to_pcm16(x))


def _to_pcm16(x: np.ndarray) -> bytes:
    return (np.clip(x, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()


class _Track:
    """A mono 16-bit WAV written on the fly: silence, then each cue at its source time."""

    def __init__(self, path: str | Path, rate: int = RENDER_RATE):
        self.path = Path(path).expanduser()
        self.rate = rate
        try:
            self._file = open(self.path, "wb")  # noqa: SIM115 - closed in close()
        except OSError as exc:
            raise UserError(f"cannot write the sound track {self.path}: {exc.strerror or exc}") from None
        self._w = wave.open(self._file, "wb")
        self._w.setnchannels(1)
        self._w.setsampwidth(2)
        self._w.setframerate(rate)
        self._written = 0  # samples flushed to the file
        self._pending = np.zeros(0, np.float32)  # samples after _written still being mixed into
        self._resampled: dict[Path, np.ndarray] = {}

    def _flush_to(self, pos: int) -> None:
        """Write everything before sample `pos` (pending audio, then silence)."""
        if pos <= self._written:
            return
        n = pos - self._written
        head = self._pending[:n]
        self._w.writeframes(_to_pcm16(head))
        self._pending = self._pending[n:]
        gap = n - head.size
        chunk = np.zeros(self.rate * 10, np.int16).tobytes()
        while gap > 0:
            k = min(gap, self.rate * 10)
            self._w.writeframes(chunk[: 2 * k])
            gap -= k
        self._written = pos

    def add(self, t: float, clip: _Clip) -> None:
        x = self._resampled.get(clip.path)
        if x is None:
            x = resample(clip.samples(), clip.rate, self.rate)
            if len(self._resampled) < 256:
                self._resampled[clip.path] = x
        pos = max(int(round(t * self.rate)), self._written)
        self._flush_to(pos)
        end = x.size
        if self._pending.size < end:
            self._pending = np.concatenate([self._pending, np.zeros(end - self._pending.size, np.float32)])
        self._pending[:end] += x

    def close(self, end_t: float | None) -> None:
        end = self._written + self._pending.size
        if end_t is not None:
            end = max(end, int(np.ceil(end_t * self.rate)))
        try:
            self._flush_to(end)
            self._w.close()
        finally:
            self._file.close()


# ------------------------------------------------------------------------------------------- cues


@dataclass
class _Face:
    emotion: str
    since: float  # source time the current emotion started
    seen: float  # last source time the face was seen
    announced: str | None = None  # the emotion last announced for this face

    @property
    def pending(self) -> bool:
        return self.emotion != self.announced


class SoundCues:
    """Decides when a face's stable emotion deserves a cue, and plays or renders it."""

    def __init__(self, options: SoundOptions, labels: list[str], clips: dict[str, list[_Clip]],
                 player: _Player | None, track: _Track | None):
        self.options = options
        self.labels = list(labels)
        self.clips = clips
        self._player = player
        self._track = track
        self._rng = random.Random(options.seed)
        self._faces: dict[int, _Face] = {}
        self._last_cue_t: float | None = None
        self._busy_until = float("-inf")  # end of the last clip on the source timeline
        self._last_clip: dict[str, Path] = {}
        self._closed = False
        self.cues: list[dict] = []

    @classmethod
    def create(cls, options: SoundOptions, labels: list[str]) -> "SoundCues":
        if options.stable_s < 0 or options.cooldown_s < 0:
            raise UserError("sound stable and cooldown times must be zero or more seconds")
        if options.player not in PLAYERS:
            raise UserError(f"unknown sound player {options.player!r}: choose from {', '.join(PLAYERS)}")
        if not labels:
            raise UserError("sound cues need the model's labels")
        clips = load_clips(options.sound_dir, list(labels))
        track = _Track(options.out_wav) if options.out_wav is not None else None
        # out_wav replaces the speaker unless a player was named explicitly
        choice = "none" if (track is not None and options.player == "auto") else options.player
        try:
            player = _open_player(choice)
        except BaseException:
            if track is not None:
                track.close(None)
            raise
        return cls(options, labels, clips, player, track)

    @property
    def player(self) -> str:
        """What plays the cues: 'sounddevice', 'aplay', ..., or 'none'."""
        return self._player.name if self._player is not None else "none"

    def _clips_for(self, emotion: str) -> list[_Clip]:
        got = self.clips.get(emotion)
        if got is None:
            canon = canonical_class(emotion)
            got = self.clips.get(canon) if canon else None
        return got or []

    def _fire(self, emotion: str, t: float) -> dict | None:
        clips = self._clips_for(emotion)
        if not clips or t < self._busy_until:
            return None
        choices = [c for c in clips if c.path != self._last_clip.get(clips[0].emotion)] or clips
        clip = self._rng.choice(choices)
        if self._player is not None and not self._player.submit(clip):
            return None  # the speaker is still busy with the previous cue
        if self._track is not None:
            self._track.add(max(t, 0.0), clip)
        self._last_clip[clip.emotion] = clip.path
        self._last_cue_t = t
        self._busy_until = t + clip.duration
        event = {"emotion": clip.emotion, "clip": clip.path.name, "t": float(t)}
        self.cues.append(event)
        return event

    def update(self, t: float, faces: list[tuple[int, str | None]]) -> dict | None:
        """Feed one processed frame; returns {"emotion", "clip", "t"} when a cue fired, else None.

        `faces` holds (track_id, stable_emotion) for every tracked face (emotion None = not decided
        yet: the face is ignored this frame). A face's emotion is announced once after it changed
        (or first appeared) and held for `stable_s`; the cue waits out the cooldown and a clip
        still playing, and is dropped if the emotion changes meanwhile. A face going back to the
        emotion last announced for it is not news. One cue per call at most; every face showing
        the emotion just announced counts as announced. Oldest change first when several wait.
        """
        if self._closed:
            return None
        for tid, emotion in faces:
            if emotion is None:
                continue
            face = self._faces.get(tid)
            if face is None:
                self._faces[tid] = _Face(emotion, t, t)
            elif face.emotion != emotion:
                face.emotion, face.since, face.seen = emotion, t, t
            else:
                face.seen = t
        for tid in [k for k, f in self._faces.items() if t - f.seen > _FORGET_S]:
            del self._faces[tid]
        if self._last_cue_t is not None and t - self._last_cue_t < self.options.cooldown_s:
            return None
        if t < self._busy_until or (self._player is not None and self._player.busy()):
            return None
        ready = sorted(
            ((f.since, tid) for tid, f in self._faces.items()
             if f.pending and f.seen == t and t - f.since >= self.options.stable_s - 1e-9),
        )
        for _, tid in ready:
            face = self._faces[tid]
            if not self._clips_for(face.emotion):
                face.announced = face.emotion  # no clips for it (warned once at create)
                continue
            event = self._fire(face.emotion, t)
            if event is None:
                return None
            for f in self._faces.values():
                if f.emotion == face.emotion:
                    f.announced = f.emotion
            return event
        return None

    def cue_now(self, emotion: str, t: float = 0.0) -> dict | None:
        """Play a clip for `emotion` right away (a single photo), without stability or cooldown.

        Returns the cue, or None when the emotion has no clips or a clip is still playing.
        """
        if self._closed:
            return None
        return self._fire(emotion, t)

    def close(self, end_t: float | None = None, wait: bool = True) -> None:
        """Finish: let the clip playing end (wait=False cuts it), and finish the WAV (>= end_t seconds)."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._player is not None:
                longest = max((c.duration for cs in self.clips.values() for c in cs), default=1.0)
                self._player.close(wait, longest)
        finally:
            if self._track is not None:
                self._track.close(end_t)

    def __enter__(self) -> "SoundCues":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(wait=exc_type is None)
