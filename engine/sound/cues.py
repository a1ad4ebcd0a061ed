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

This module holds the rules (which clip folder is which emotion, when a cue fires, cooldowns) and
the `sound-cues` thread; decoding, the players and the WAV rendering are engine.sound.audio, whose names
(`resample`, `write_wav`, `RENDER_RATE`, ...) stay importable from here.
"""
from __future__ import annotations

import queue
import random
import threading
from dataclasses import dataclass
from pathlib import Path

from engine.sound.audio import (
    OTHER_EXTS,
    PLAYERS,
    RENDER_RATE,
    WAV_EXTS,
    Clip,
    Player,
    Track,
    decode,
    have_soundfile,
    open_player,
    resample,
    warn,
    write_wav,
)
from engine.core.contract import FER_CLASSES, canonical_class
from engine.core.errors import UserError

#: Public names, engine.sound.audio's included (they were engine.sound.cues's before the split and stay importable here).
__all__ = ["OTHER_EXTS", "PLAYERS", "RENDER_RATE", "SOUNDS_DIR", "SOUND_ALIASES", "WAV_EXTS", "SoundCues", "SoundOptions",
           "load_clips", "resample", "write_wav"]

SOUNDS_DIR = Path(__file__).resolve().parent / "sounds"

#: The short codes of public emotion-audio collections (RAVDESS, TESS, CREMA-D) -> canonical FER class.
#: Plain names and their synonyms ("fearful", "surprised", "joy", ...) are engine.core.contract's one table
#: (canonical_class), not repeated here.
SOUND_ALIASES: dict[str, str] = {
    "calm": "neutral", "neu": "neutral", "ang": "angry", "dis": "disgust", "fea": "fear", "hap": "happy",
    "sur": "surprise", "ps": "surprise", "pleasant_surprise": "surprise", "pleasant_surprised": "surprise",
}
#: Decoded clips kept in memory up to this many bytes (float32); beyond it (a whole dataset as the
#: sound folder) clips are still all decoded once in create() to validate them, then re-read on play.
_CACHE_BYTES = 64 << 20
#: A track not seen for this long is forgotten (its next appearance counts as a first appearance).
_FORGET_S = 2.0


@dataclass
class SoundOptions:
    sound_dir: str | Path | None = None  # None = the shipped engine/sound/sounds
    stable_s: float = 1.0  # a tracked face's smoothed emotion must hold this long before a cue
    cooldown_s: float = 4.0  # min gap between cues (global, on the source timeline)
    out_wav: str | Path | None = None  # render cues into a WAV on the source timeline instead of a speaker
    seed: int | None = None
    player: str = "auto"  # auto | sounddevice | aplay | paplay | afplay | none



# ----------------------------------------------------------------------------------- folder mapping


def _emotion_for(folder: str, labels: list[str]) -> str | None:
    """Map a clip folder name onto one of the model's labels, or None.

    Tries the whole name, then drops leading `_`-separated parts (TESS's `OAF_Fear`,
    `YAF_pleasant_surprised`); each candidate is matched against the labels directly, then through
    SOUND_ALIASES and engine.core.contract.canonical_class.
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


def load_clips(sound_dir: str | Path | None, labels: list[str]) -> dict[str, list[Clip]]:
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
    have_sf = have_soundfile()
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
        warn(f"skipping {len(skipped)} {'/'.join(sorted({p.suffix.lower() for p in skipped}))} clip(s) in {root}: "
              "install soundfile to play them, or convert them to WAV")
    if unknown:
        warn(f"ignoring sound folder(s) {', '.join(unknown)} in {root}: not an emotion name")
    if not found:
        raise UserError(
            f"no usable sound clips for the model's emotions ({', '.join(labels)}) in {root}: "
            f"expected {root}/<emotion>/*.wav"
        )
    clips: dict[str, list[Clip]] = {}
    cached = 0
    for emotion in labels:
        for f in found.get(emotion, []):
            x, rate = decode(f)
            keep = cached + x.nbytes <= _CACHE_BYTES
            cached += x.nbytes if keep else 0
            clips.setdefault(emotion, []).append(Clip(f, emotion, rate, x.size, x if keep else None))
    missing = [e for e in labels if e not in clips]
    if missing:
        which = "that emotion stays" if len(missing) == 1 else "those emotions stay"
        warn(f"no sound clips for {', '.join(missing)} in {root}: {which} silent")
    return clips


# ------------------------------------------------------------------------------------ the cue thread


class _CueThread:
    """The `sound-cues` thread: plays one clip at a time through a player; never blocks the caller.

    A queue of one: while a clip plays or waits, `submit` refuses the next, so a busy speaker skips
    cues instead of queueing them. A player that fails is switched off with one warning.
    """

    def __init__(self, player: Player):
        self.player = player
        self._queue: queue.Queue = queue.Queue(maxsize=1)
        self._stop = threading.Event()  # stop now (interrupts the clip playing)
        self._done = threading.Event()  # no more clips will come
        self._busy = threading.Event()
        self._failed = False
        self._thread = threading.Thread(target=self._run, name="sound-cues", daemon=True)
        self._thread.start()

    @property
    def name(self) -> str:
        return self.player.name

    def busy(self) -> bool:
        return self._busy.is_set() or not self._queue.empty()

    def submit(self, clip: Clip) -> bool:
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
        if not self._thread.is_alive():
            self.player.close()  # e.g. the temporary WAVs of a system player

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
                    self.player.play(clip, self._stop)
            except Exception as exc:  # a device going away must not kill the engine
                self._failed = True
                text = str(exc).strip()
                why = text.splitlines()[-1] if text else type(exc).__name__
                warn(f"sound output stopped ({self.name}: {why}); sound cues are still reported but not played")
            finally:
                self._busy.clear()


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

    def __init__(self, options: SoundOptions, labels: list[str], clips: dict[str, list[Clip]],
                 player: _CueThread | None, track: Track | None):
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
        track = Track(options.out_wav) if options.out_wav is not None else None
        # out_wav replaces the speaker unless a player was named explicitly
        choice = "none" if (track is not None and options.player == "auto") else options.player
        try:
            backend = open_player(choice)
            player = _CueThread(backend) if backend is not None else None
        except BaseException:
            if track is not None:
                track.close(None)
            raise
        return cls(options, labels, clips, player, track)

    @property
    def player(self) -> str:
        """What plays the cues: 'sounddevice', 'aplay', ..., or 'none'."""
        return self._player.name if self._player is not None else "none"

    def _clips_for(self, emotion: str) -> list[Clip]:
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
