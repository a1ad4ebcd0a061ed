"""Everything a run writes, behind the one per-frame handler the pipeline calls.

`engine.run` and `benchmarks/fps.py` both build their sinks here, so what the benchmark
times (mp4 encoding, JSONL lines, sound cues, the `sink` and `total` stage numbers) is what
the command does, never a copy that could drift from it.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from engine.errors import UserError
from engine.pipeline import Packet
from engine.sinks import ImageSink, JsonlSink, VideoSink, WindowSink
from engine.sources import IMAGE_EXTS, Source


def frame_event(pkt: Packet) -> dict:
    """The JSONL record of one frame (the schema README documents)."""
    event = {"frame": pkt.index, "t": round(pkt.t, 4), "faces": [f.to_json() for f in pkt.faces],
             "ms": {k: round(v, 3) for k, v in pkt.ms.items()}}
    if pkt.name:
        event["image"] = pkt.name
    return event


def _dominant(pkt: Packet) -> str:
    """The emotion of the most confident face: what a single photo's cue is about."""
    best = max(pkt.faces, key=lambda f: f.confidence * f.box[2] * f.box[3])
    return best.emotion


class Outputs:
    """The sinks of one run: video or images, JSONL, a window and sound cues.

    Opened after the models load (a model that fails leaves earlier output files alone); a bad
    --output/--jsonl/--sound-dir is then one sentence before the first frame.
    `handle(pkt, image)` is the pipeline's `on_frame`; `idle(image)` its `on_idle`.
    """

    def __init__(self, source: Source, stills: bool, log: Callable[[str], None]):
        self.source = source
        self.stills = stills
        self.log = log
        self.video: VideoSink | None = None
        self.images: ImageSink | None = None
        self.jsonl: JsonlSink | None = None
        self.window: WindowSink | None = None
        self.cues = None
        self.live = None  # engine.serve.LiveServer (--serve): owned, started and closed by the caller
        self.first_out: float | None = None  # perf_counter() when the first frame came out
        self.interrupted = False  # set by the caller: an interrupted run does not wait for sound
        self._last_t = 0.0

    @classmethod
    def open(cls, args: argparse.Namespace, source: Source, stills: bool, labels: Sequence[str],
             display: bool, log: Callable[[str], None], live=None) -> "Outputs":
        """Sinks from `engine.run`'s arguments (--output, --jsonl, --sound*, display); `live`, a started
        `engine.serve.LiveServer`, also gets every frame and its JSONL record (--serve)."""
        self = cls(source, stills, log)
        self.live = live
        try:
            if getattr(args, "sound", False) or getattr(args, "sound_out", None):
                from engine.sound import SoundCues, SoundOptions

                self.cues = SoundCues.create(SoundOptions(sound_dir=args.sound_dir, stable_s=args.sound_stable,
                                                          cooldown_s=args.sound_cooldown, out_wav=args.sound_out,
                                                          player=args.sound_player), labels)
                log(f"sound cues: player {self.cues.player}" + (f", rendering to {args.sound_out}" if args.sound_out else ""))
            if args.output:
                out = Path(args.output)
                if stills and (out.suffix.lower() in IMAGE_EXTS or not out.suffix):
                    if out.is_dir() and Path(args.source).is_dir() and out.resolve() == Path(args.source).resolve():
                        raise UserError("--output must not be the source folder: the annotated images would replace the photos")
                    self.images = ImageSink(out)
                else:
                    self.video = VideoSink(out, source.fps, live=source.live)
            if args.jsonl:
                self.jsonl = JsonlSink(args.jsonl)
            if display:
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

    def handle(self, pkt: Packet, image: np.ndarray | None) -> bool:
        """Write one finished frame everywhere; True asks the pipeline to stop (q / Esc)."""
        t0 = time.perf_counter_ns()
        if self.first_out is None:
            self.first_out = time.perf_counter()
        if self.video is not None:
            self.video.write(image, pkt.t)
        if self.images is not None:
            self.images.write(image, pkt.name)
        if self.window is not None:
            self.window.write(image)
        pkt.ms["sink"] = (time.perf_counter_ns() - t0) / 1e6
        pkt.ms["total"] = (time.perf_counter_ns() - pkt.t_capture_ns) / 1e6
        event = frame_event(pkt)
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
            self.jsonl.write(event)
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
