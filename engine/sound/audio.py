"""Audio I/O for the sound cues (engine.sound.cues): decode clips, play them, render them into a WAV.

    x, rate = decode(path)                 # float32 mono in [-1, 1]; UserError if it cannot be read
    player = open_player("auto")           # SounddevicePlayer | ProgramPlayer | None (no audio output)
    player.play(clip, stop_event)          # blocks until the clip ends or `stop_event` is set
    track = Track("cues.wav"); track.add(t, clip); track.close(end_t)

WAVs (8/16/24/32-bit PCM, float, WAVE_FORMAT_EXTENSIBLE) are read with the standard library; .ogg,
.flac and .mp3 with `soundfile` when it is installed. Players: `sounddevice` (PortAudio) first, then
the system players `paplay`, `aplay`, `afplay`. No rules here about *when* a clip plays: that is
engine.sound.cues, which also owns the thread the players run on.
"""
from __future__ import annotations

import os
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
from typing import Protocol

import numpy as np

from engine.core.errors import UserError

#: Sample rate of the `out_wav` track (clips are resampled to it).
RENDER_RATE = 16000
PLAYERS = ("auto", "sounddevice", "aplay", "paplay", "afplay", "none")
WAV_EXTS = (".wav", ".wave")
OTHER_EXTS = (".ogg", ".oga", ".flac", ".mp3")  # decoded with soundfile (libsndfile) when installed


def warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)


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


def have_soundfile() -> bool:
    """Whether .ogg/.flac/.mp3 clips can be decoded (the optional `soundfile` package imports)."""
    return _soundfile() is not None


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


def decode(path: Path) -> tuple[np.ndarray, int]:
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
class Clip:
    """One decoded clip of an emotion's folder."""

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
        return decode(self.path)[0]


# ----------------------------------------------------------------------------------------- playback


class Player(Protocol):
    """A playback backend: `play` blocks until the clip ends or `stop` is set; `close` frees what it holds."""

    name: str

    def play(self, clip: Clip, stop: threading.Event) -> None: ...

    def close(self) -> None: ...


class SounddevicePlayer:
    """Plays through PortAudio (the `sounddevice` module)."""

    name = "sounddevice"

    def __init__(self, sd):
        self._sd = sd

    def play(self, clip: Clip, stop: threading.Event) -> None:
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
                if stop.is_set():
                    stream.abort()
                    return
                stream.write(x[i:i + block].reshape(-1, 1))

    def close(self) -> None:
        """Nothing to free: each clip opened and closed its own stream."""


class ProgramPlayer:
    """Plays with a system player program (paplay, aplay, afplay) from a temporary WAV per clip."""

    def __init__(self, program: str):
        self.name = program
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._files: dict[Path, str] = {}

    def play(self, clip: Clip, stop: threading.Event) -> None:
        cmd = [self.name, self._wav_for(clip)]
        if self.name == "aplay":
            cmd.insert(1, "-q")
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + clip.duration + 10.0  # a player waiting on a dead sound server
        while proc.poll() is None:
            if stop.is_set() or time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                return
            time.sleep(0.02)
        err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
        if proc.returncode != 0:
            raise RuntimeError(err or f"exit status {proc.returncode}")

    def _wav_for(self, clip: Clip) -> str:
        if clip.path in self._files:
            return self._files[clip.path]
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="emotion-sound-")
        path = os.path.join(self._tmp.name, f"{len(self._files)}.wav")
        write_wav(path, clip.samples(), clip.rate)
        self._files[clip.path] = path
        return path

    def close(self) -> None:
        """Delete the temporary WAVs (call it once nothing plays any more)."""
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def open_player(choice: str) -> Player | None:
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
                return SounddevicePlayer(sd)
            except Exception:
                why = "sounddevice finds no audio output device"
        if choice == "sounddevice":
            if sd is None:
                raise UserError(f"sound player sounddevice is unavailable: {why}")
            warn(f"{why}; sound cues are reported but not played")
            return None
    programs = ("paplay", "aplay", "afplay") if choice == "auto" else (choice,)
    for program in programs:
        if shutil.which(program):
            return ProgramPlayer(program)
    if choice != "auto":
        raise UserError(f"sound player {choice} is not installed: choose another of {', '.join(PLAYERS)}")
    warn(f"no audio output ({why}, and none of {', '.join(programs)} is installed); "
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


class Track:
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

    def add(self, t: float, clip: Clip) -> None:
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

