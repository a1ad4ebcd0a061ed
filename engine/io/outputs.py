"""Everything a run writes, behind the one per-frame handler the pipeline calls.

`engine.run` and `benchmarks/fps.py` both build their sinks here, from an `OutputOptions`
(`engine.cli.options.output_options` makes one from engine.run's flags), so what the benchmark
times (mp4 encoding, JSONL lines, sound cues, the `sink` and `total` stage numbers) is what
the command does, never a copy that could drift from it.
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from engine.core.errors import UserError
from engine.io.sinks import VIDEO_OUT_EXTS, ImageSink, JsonlSink, OutputError, OutputOptions, VideoSink, WindowSink
from engine.io.sources import IMAGE_EXTS, URL_SOURCE, Source, mode_of
from engine.core.types import FrameRecord, RunningMode

__all__ = ["OutputError", "OutputOptions", "Outputs", "check_targets"]


# --------------------------------------------------------------------------- checked before anything opens


def check_targets(options: OutputOptions, source: str, mode: RunningMode) -> None:
    """Refuse outputs that would destroy the input or that cannot hold what the source gives, before
    anything is opened (so a refused run leaves every file as it was).

    Why: `--jsonl p.jpg` on the photo p.jpg truncated it and `--output c.mp4` on the clip c.mp4
    overwrote it, both with exit 0; a video written under `x.jpg` is an MPEG-4 stream no viewer opens.

    Args:
      options: the outputs asked for (their paths).
      source: the --source text (a file, a folder, a camera, a URL).
      mode: the source's RunningMode (`engine.io.sources.planned_mode` before it is opened).
    Raises:
      OutputError: naming the OutputOptions field (engine.run says its flag).
    """
    files, folder = _input_files(source)
    for field, target in _targets(options):
        _refuse_input(field, Path(target), files, folder)
    _check_kind(options, mode)


def _input_files(source: str) -> tuple[list[Path], Path | None]:
    """The local files a source reads and the folder they come from (none for cameras and URLs)."""
    spec = str(source).strip()
    if URL_SOURCE.match(spec) or spec.isdigit() or spec in ("sample", "picam") or spec.startswith("/dev/"):
        return [], None
    path = Path(spec)
    if path.is_dir():
        try:
            return [p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTS], path
        except OSError:
            return [], path
    return ([path] if path.exists() else []), None


def _targets(options: OutputOptions) -> list[tuple[str, str | os.PathLike]]:
    """(field, path) of every file output: video, images, jsonl, the rendered sound WAV."""
    wav = getattr(options.sound, "out_wav", None) if options.sound is not None else None
    pairs = [("video", options.video), ("images", options.images), ("jsonl", options.jsonl), ("sound", wav)]
    return [(field, path) for field, path in pairs if path]


def _same_file(a: Path, b: Path) -> bool:
    """One file under two names (the same path, a symlink or a hard link)."""
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except (OSError, RuntimeError):  # a symlink loop: not our input
        return False


def _inside(path: Path, folder: Path) -> bool:
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError):
        return False


def _refuse_input(field: str, target: Path, files: list[Path], folder: Path | None) -> None:
    """An output that is an input file, would overwrite one (an image folder receiving files of the same
    names), or puts annotated photos inside the folder being read."""
    if folder is not None and field == "images" and _same_file(target, folder):  # (Outputs.open's words)
        raise OutputError(field, "must not be the source folder: the annotated images would replace the photos")
    for f in files:
        if _same_file(target, f):
            raise OutputError(field, f"{target} is the source {f}: writing it would destroy the input")
        if field == "images" and target.suffix.lower() not in IMAGE_EXTS and _same_file(target / f.name, f):
            raise OutputError(field, f"{target} holds the source {f.name}: the annotated photo would replace it")
    if folder is not None and field == "images" and _inside(target, folder):
        raise OutputError(field, f"{target} is inside the source folder {folder}: the annotated images would mix "
                                 f"with (or replace) the photos; write them elsewhere")


def _check_kind(options: OutputOptions, mode: RunningMode) -> None:
    """--output's file type must fit the source: a video (its suffix) for a video or stream, an image
    file, a folder or a video for photos."""
    if not options.video:
        return
    path = Path(options.video)
    kinds = ", ".join(VIDEO_OUT_EXTS)
    if path.suffix.lower() in VIDEO_OUT_EXTS and not path.is_dir():
        return
    if mode is RunningMode.IMAGE:
        raise OutputError("video", f"{path} is not an image ({', '.join(sorted(IMAGE_EXTS))}), a folder or a video ({kinds}) name")
    what = "stream" if mode is RunningMode.LIVE else "video"
    raise OutputError("video", f"{path} is not a video file name: the annotated {what} is written as {kinds}")


@contextmanager
def _naming(field: str) -> Iterator[None]:
    """A sink's UserError or OSError (disk full) becomes an OutputError naming the OutputOptions field it came from."""
    try:
        yield
    except OutputError:
        raise
    except UserError as exc:
        raise OutputError(field, str(exc)) from None
    except OSError as exc:
        raise OutputError(field, f"cannot write{' ' + str(exc.filename) if exc.filename else ''}: {exc.strerror or exc}") from None


def _dominant(pkt: FrameRecord) -> str:
    """The emotion of the most confident face: what a single photo's cue is about."""
    best = max(pkt.faces, key=lambda f: f.confidence * f.box[2] * f.box[3])
    return best.emotion


class Outputs:
    """The sinks of one run: video or images, JSONL, a window and sound cues.

    Opened after the models load (a model that fails leaves earlier output files alone); a bad
    path is then one sentence before the first frame. The source's RunningMode decides how
    frames are written: IMAGE prints a line per photo and cues its dominant emotion.
    `handle(pkt, image)` is the pipeline's `on_frame`; `idle(image)` its `on_idle`.
    """

    def __init__(self, source: Source, log: Callable[[str], None]):
        self.source = source
        self.stills = mode_of(source) is RunningMode.IMAGE
        self.log = log
        self.video: VideoSink | None = None
        self.images: ImageSink | None = None
        self.jsonl: JsonlSink | None = None
        self.window: WindowSink | None = None
        self.cues = None
        self.live = None  # engine.serve.live.LiveServer (--serve): owned, started and closed by the caller
        self.mqtt = None  # engine.mqtt.MqttSink (--mqtt): owned, connected and closed by the caller
        self.first_out: float | None = None  # perf_counter() when the first frame came out
        self.interrupted = False  # set by the caller: an interrupted run does not wait for sound
        self._last_t = 0.0

    @classmethod
    def open(cls, options: OutputOptions, source: Source, labels: Sequence[str],
             log: Callable[[str], None] | None = None, live=None, mqtt=None) -> "Outputs":
        """Open the sinks `options` asks for, for frames of `source` (labels: the model's, for sound cues).

        Args:
          options: which sinks (window, video, images, jsonl, sound).
          source: where the frames come from (its `mode` and `fps`).
          labels: the classifier's labels.
          log: progress lines (none by default).
          live: a started `engine.serve.live.LiveServer` that also gets every frame and its JSONL record (--serve);
            the caller owns it.
          mqtt: a connected `engine.mqtt.MqttSink` that gets every frame record (--mqtt); the caller owns it.
        Raises:
          OutputError: a sink that cannot be opened, naming its OutputOptions field.
        """
        self = cls(source, log or (lambda _msg: None))
        self.live = live
        self.mqtt = mqtt
        try:
            if options.sound is not None:
                from engine.sound.cues import SoundCues

                self.cues = SoundCues.create(options.sound, labels)
                out_wav = options.sound.out_wav
                self.log(f"sound cues: player {self.cues.player}" + (f", rendering to {out_wav}" if out_wav else ""))
            if options.images:
                out = Path(options.images)
                folder = getattr(source, "folder", None)
                if out.is_dir() and folder is not None and out.resolve() == Path(folder).resolve():
                    raise OutputError("images", "must not be the source folder: the annotated images would replace the photos")
                self.images = ImageSink(out)
            if options.video:
                with _naming("video"):
                    self.video = VideoSink(options.video, source.fps, live=mode_of(source) is RunningMode.LIVE)
            if options.jsonl:
                with _naming("jsonl"):
                    self.jsonl = JsonlSink(options.jsonl)
            if options.window:
                self.window = WindowSink()
        except BaseException:
            self.interrupted = True
            try:
                self.close()
            except BaseException:  # noqa: S110 - the error that stopped the opening is the one to report
                pass
            raise
        return self

    @property
    def want_pixels(self) -> bool:
        """Whether anything shows the overlay (else the pipeline skips drawing it)."""
        return bool(self.video or self.images or self.window)

    def handle(self, pkt: FrameRecord, image: np.ndarray | None) -> bool:
        """Write one finished frame everywhere; True asks the pipeline to stop (q / Esc)."""
        t0 = time.perf_counter_ns()
        if self.first_out is None:
            self.first_out = time.perf_counter()
        if self.video is not None:
            with _naming("video"):  # (the first frame opens the video file)
                self.video.write(image, pkt.t)
        if self.images is not None:
            with _naming("images"):
                self.images.write(image, pkt.name)
        if self.window is not None:
            self.window.write(image)
        pkt.ms["sink"] = (time.perf_counter_ns() - t0) / 1e6
        pkt.ms["total"] = (time.perf_counter_ns() - pkt.t_capture_ns) / 1e6
        event = pkt.to_event()
        if self.cues is not None:
            self._last_t = pkt.t
            if self.stills:
                cue = self.cues.cue_now(_dominant(pkt), pkt.t) if pkt.faces else None
            else:
                cue = self.cues.update(pkt.t, [(f.id, f.emotion) for f in pkt.faces])
            if cue:
                event["sound"] = {"emotion": cue["emotion"], "clip": cue["clip"]}
                self.log(f"sound cue: {cue['emotion']} ({cue['clip']}) at {pkt.t:.2f}s")
        if self.jsonl is not None:
            with _naming("jsonl"):
                self.jsonl.write(event)
        if self.mqtt is not None:  # queues messages only: its own threads talk to the broker
            self.mqtt.write(pkt, event)
        if self.live is not None:  # references only: it encodes on its own thread, and only for viewers
            self.live.write(pkt.image if image is None else image, pkt.faces, pkt.ms, event, annotated=image is not None)
        if self.stills:
            summary = ", ".join(f"#{f.id} {f.emotion} {f.confidence * 100:.0f}%" for f in pkt.faces) or "no face found"
            print(f"{pkt.name}: {summary}", flush=True)
        return bool(self.window and self.window.quit_requested)

    def idle(self, image: np.ndarray) -> bool:
        """Camera lost: the window keeps showing the reconnect status and stays responsive."""
        if self.live is not None:
            self.live.idle(image)
        if self.window is None:
            return False
        self.window.write(image)
        return self.window.quit_requested

    def close(self) -> None:
        """Close every sink, even when one fails (the first failure is re-raised)."""
        first: BaseException | None = None
        closers = [s.close for s in (self.window, self.jsonl, self.images, self.video) if s is not None]
        if self.cues is not None:
            # The WAV covers the whole source timeline; an interrupted run does not wait for the clip.
            fps = self.source.fps or 25.0
            closers.append(lambda: self.cues.close(end_t=self._last_t + 1.0 / fps, wait=not self.interrupted))
        for close in closers:
            try:
                close()
            except BaseException as exc:
                first = first or exc
        self.window = self.jsonl = self.images = self.video = self.cues = None
        if first is not None:
            raise first
