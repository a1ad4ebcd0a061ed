"""The threaded realtime pipeline: capture -> detect -> classify+track -> overlay+sinks.

Stages run in their own threads joined by bounded queues, so detection of frame N+1
overlaps classification of frame N. Live sources keep only the newest frame (a one-slot
mailbox that overwrites: latency never queues up); files block instead, so every frame is
processed, in order. Every stage is timed with perf_counter_ns into the frame's `ms`,
which feeds the overlay, the JSONL and the benchmarks alike.

Failure rules: an exception in any thread stops the whole pipeline and is re-raised by
`run()`; a watchdog turns "nothing happened for N seconds" into an error naming the stuck
stage; a lost camera is reopened with back-off while the process stays up.
"""
from __future__ import annotations

import queue
from collections import deque
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from engine.api import EmotionRecognizer, ms_since
from engine.core.errors import UserError
from engine.io.overlay import draw
from engine.io.sources import Source, mode_of
from engine.core.types import FrameRecord, RunningMode

_END = object()


class PipelineError(RuntimeError):
    """A stage failed or stalled; the message is one line for the user."""


@dataclass
class PipelineOptions:
    max_frames: int | None = None
    bars: bool = False
    overlay: bool = True  # draw (skip when no image sink wants pixels)
    queue_size: int = 2
    watchdog_s: float = 20.0
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 5.0
    #: a source that came back and was lost again sooner than this never really came back: the back-off goes
    #: on (a web server that answers every reopen at once would otherwise be asked thousands of times a minute)
    reconnect_healthy_s: float = 10.0
    progress_every_s: float = 2.0
    quiet: bool = False


@dataclass
class PipelineStats:
    frames: int = 0
    faces: int = 0
    frames_with_faces: int = 0
    wall_s: float = 0.0
    startup_s: float | None = None  # pipeline start -> first frame out
    #: newest frames' stage times, bounded so a long run's memory stays flat
    per_frame_ms: deque = field(default_factory=lambda: deque(maxlen=10_000))
    reconnects: int = 0
    stopped_by: str = "end"

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0


class _Mailbox:
    """One-slot, overwrite-on-put: the newest live frame wins, older ones are dropped."""

    def __init__(self):
        self._item = None
        self._has = False
        self._cv = threading.Condition()
        self.dropped = 0

    def put(self, item, timeout=None) -> None:
        with self._cv:
            if self._has and self._item is not _END:
                self.dropped += 1
            if not (self._has and self._item is _END):
                self._item, self._has = item, True
            self._cv.notify()

    def get(self, timeout: float):
        with self._cv:
            if not self._has and not self._cv.wait_for(lambda: self._has, timeout):
                raise queue.Empty
            item, self._item, self._has = self._item, None, False
            return item


class Pipeline:
    """Run a recognizer over a source, handing each finished frame to `on_frame`.

    `on_frame(packet, overlay_image_or_None)` runs on the calling thread (an OpenCV
    window must live there) and returns True to ask for a stop (q / Esc).
    `on_idle(image)`, also on the calling thread, is called about twice a second while a
    lost camera is being reopened, with the last frame redrawn under the status line
    ("camera 0 lost - retry 3 in 2.0s"): a window keeps saying so and stays responsive.
    It returns True to ask for a stop. Nothing is written to the frame sinks meanwhile.
    """

    IDLE_EVERY_S = 0.5

    def __init__(self, recognizer: EmotionRecognizer, source: Source, opts: PipelineOptions,
                 on_frame: Callable[[FrameRecord, np.ndarray | None], bool | None] | None = None,
                 log: Callable[[str], None] | None = None,
                 on_idle: Callable[[np.ndarray], bool | None] | None = None):
        self.rec = recognizer
        self.source = source
        self.opts = opts
        self.on_frame = on_frame
        self.on_idle = on_idle
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.stats = PipelineStats()
        self.status = ""  # shown on the overlay (e.g. camera lost)
        self._stop = threading.Event()
        self._errors: list[BaseException] = []
        self._busy: dict[str, float | None] = {"capture": None, "detect": None, "classify": None}
        self.mode: RunningMode = mode_of(source)  # decided once, here: queues, timeline, reconnects
        if recognizer.options.running_mode.stream != self.mode.stream:  # photo rules on a stream, or stream rules on photos
            raise UserError(f"EngineOptions.running_mode is {recognizer.options.running_mode.name} but {source.name} is a "
                            f"{self.mode.name} source: create the recognizer with running_mode={self.mode.name}")
        live = self.mode is RunningMode.LIVE
        self._q1 = _Mailbox() if live else queue.Queue(opts.queue_size)
        # Live: one slot between stages, so a frame waits behind at most one other.
        depth = 1 if live else opts.queue_size
        self._q2: queue.Queue = queue.Queue(depth)
        self._q3: queue.Queue = queue.Queue(depth)
        self._reconnecting = threading.Event()
        self._backoff_s = opts.reconnect_min_s  # the next wait, carried over a reopen that did not last
        self._back_at: float | None = None  # time.monotonic() when the source last came back

    # ---------------- control ----------------
    def stop(self, reason: str = "stop") -> None:
        if not self._stop.is_set():
            self.stats.stopped_by = reason
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def _put(self, q, item) -> bool:
        """Blocking put that still notices a stop (so no thread hangs on a full queue)."""
        while not self._stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _get(self, q):
        while not self._stop.is_set():
            try:
                return q.get(timeout=0.1)
            except queue.Empty:
                continue
        return _END

    def _guard(self, name: str, body: Callable[[], None], downstream) -> Callable[[], None]:
        def run():
            try:
                body()
            except BaseException as exc:  # any failure stops everything and is reported
                self._errors.append(PipelineError(f"{name} stage failed: {type(exc).__name__}: {exc}") if not isinstance(exc, UserError) else exc)
                self._stop.set()
            finally:
                self._busy[name] = None
                if self._stop.is_set():
                    # Stopping: every reader also ends on the stop event; this only wakes one early.
                    try:
                        downstream.put(_END, timeout=0)
                    except queue.Full:
                        pass
                else:
                    # Normal end: the next stage must see it however slow it is (a Pi, tiles), so
                    # wait for room rather than drop it after a timeout and stall until the watchdog.
                    self._put(downstream, _END)
        return run

    # ---------------- stages ----------------
    def _capture(self) -> None:
        src, o = self.source, self.opts
        start_ns = time.perf_counter_ns()
        index = 0
        while not self._stop.is_set():
            if o.max_frames is not None and index >= o.max_frames:
                break
            t0 = time.perf_counter_ns()
            self._busy["capture"] = time.monotonic()
            frame = src.read()
            self._busy["capture"] = None
            if frame is None:
                if self.mode is not RunningMode.LIVE:
                    break
                self._reconnect_loop()
                continue
            t = (t0 - start_ns) / 1e9 if self.mode is RunningMode.LIVE else index / (src.fps or 1.0)
            # Latency counts from the start of the read: for a camera that includes the wait for
            # the frame (benchmarks/fps.py --realtime subtracts its known pacing wait).
            pkt = FrameRecord(index, t, frame, t0, {"capture": ms_since(t0)}, name=getattr(src, "current", None) and src.current.name)
            index += 1
            if not self._put(self._q1, pkt):
                break
        # _guard hands _END downstream (a blocking put here raised queue.Full on a stop)

    def _reconnect_loop(self) -> None:
        """Camera gone: keep the process alive, say so, retry with exponential back-off.

        The back-off counts every loss, not only the reopens that fail: a source lost again within
        `reconnect_healthy_s` of coming back waits the carried-over delay before its next reopen."""
        o = self.opts
        self._reconnecting.set()
        delay, attempt = self._first_delay(), 0
        self.status = f"{self.source.name} lost - reconnecting"
        self.log(f"warning: {self.source.name} stopped delivering frames; reconnecting")
        if delay is not None:
            self.log(f"warning: {self.source.name} was lost again soon after coming back; next try in {delay:.1f}s")
            self._stop.wait(delay)
            delay = min(o.reconnect_max_s, delay * 2)
        delay = o.reconnect_min_s if delay is None else delay
        while not self._stop.is_set():
            attempt += 1
            if self.source.reopen():
                self.stats.reconnects += 1
                self.status = ""
                self._back_at, self._backoff_s = time.monotonic(), delay
                self.log(f"{self.source.name} is back (after {attempt} attempt{'s' if attempt > 1 else ''})")
                break
            self.status = f"{self.source.name} lost - retry {attempt} in {delay:.1f}s"
            self.log(f"warning: cannot reopen {self.source.name} (attempt {attempt}); next try in {delay:.1f}s")
            self._stop.wait(delay)
            delay = min(o.reconnect_max_s, delay * 2)
        self._reconnecting.clear()

    def _first_delay(self) -> float | None:
        """The wait before the first reopen of this loss: None (reopen at once) unless the source came back
        less than `reconnect_healthy_s` ago, then the back-off it had reached."""
        recent = self._back_at is not None and time.monotonic() - self._back_at < self.opts.reconnect_healthy_s
        return self._backoff_s if recent else None

    def _detect(self) -> None:
        while True:
            pkt = self._get(self._q1)
            if pkt is _END:
                return
            t0 = time.perf_counter_ns()
            self._busy["detect"] = time.monotonic()
            pkt.detections = self.rec.detect(pkt.image, int(pkt.t * 1000) if self.mode.stream else None)
            self._busy["detect"] = None
            pkt.ms["detect"] = ms_since(t0)
            if not self._put(self._q2, pkt):
                return

    def _classify(self) -> None:
        while True:
            pkt = self._get(self._q2)
            if pkt is _END:
                return
            self._busy["classify"] = time.monotonic()
            t0 = time.perf_counter_ns()
            pkt.probs = self.rec.classify(pkt.image, pkt.detections)
            t1 = time.perf_counter_ns()
            pkt.faces = self.rec.track(pkt.detections, pkt.probs)
            pkt.ms["classify"] = (t1 - t0) / 1e6
            pkt.ms["track"] = ms_since(t1)
            self._busy["classify"] = None
            if not self._put(self._q3, pkt):
                return

    # ---------------- main loop ----------------
    def run(self) -> PipelineStats:
        """Start the three stage threads and run the sinks here until the source ends, a stop, or an error."""
        threads = [
            threading.Thread(target=self._guard("capture", self._capture, self._q1), name="capture", daemon=True),
            threading.Thread(target=self._guard("detect", self._detect, self._q2), name="detect", daemon=True),
            threading.Thread(target=self._guard("classify", self._classify, self._q3), name="classify", daemon=True),
        ]
        t_start = time.perf_counter()
        for th in threads:
            th.start()
        try:
            self._main_loop(threads, t_start)
        except KeyboardInterrupt:
            self.stop("interrupt")
        finally:
            self.stats.wall_s = time.perf_counter() - t_start
            self._stop.set()
            for th in threads:
                th.join(timeout=5)
            self.source.close()
        alive = [th.name for th in threads if th.is_alive()]
        if self._errors:
            raise self._errors[0]
        if alive:
            raise PipelineError(f"the {', '.join(alive)} thread did not stop")
        return self.stats

    def _main_loop(self, threads: list[threading.Thread], t_start: float) -> None:
        """Finished frames -> overlay -> `on_frame`, on the calling thread; idle redraws while reconnecting."""
        self._last_progress = self._last_log = time.monotonic()
        self._fps_ema = self._last_out = self._last_pkt = None
        self._last_text: tuple = (None, None)  # fps and ms as drawn on the last frame
        self._last_idle = 0.0
        while not (self._stop.is_set() and self._errors):
            try:
                pkt = self._q3.get(timeout=0.2)
            except queue.Empty:
                if self._stop.is_set() and not any(th.is_alive() for th in threads):
                    return
                if self._waiting():
                    return
                continue
            if pkt is _END or self._emit(pkt, t_start):
                return

    def _waiting(self) -> bool:
        """Nothing finished for 0.2 s: redraw the lost-source status while reconnecting (True: quit asked), or
        fail when no stage has made progress for `watchdog_s`."""
        o = self.opts
        if self._reconnecting.is_set():
            self._last_progress = time.monotonic()
            if self.on_idle is not None and self._last_pkt is not None and self._last_progress - self._last_idle >= self.IDLE_EVERY_S:
                self._last_idle = self._last_progress
                # same text as when it was drawn (it is drawn over itself), plus the status line
                image = draw(self._last_pkt.image.copy(), self._last_pkt.faces, *self._last_text, o.bars, self.status)
                if self.on_idle(image):
                    self.stop("quit")
                    return True
        elif time.monotonic() - self._last_progress > o.watchdog_s:
            now = time.monotonic()
            stuck = [k for k, v in self._busy.items() if v is not None and now - v > o.watchdog_s / 2]
            raise PipelineError(f"no frame for {o.watchdog_s:.0f}s: the {', '.join(stuck) or 'source'} stage is stuck")
        return False

    def _emit(self, pkt: FrameRecord, t_start: float) -> bool:
        """One finished frame: overlay (when a sink wants pixels), `on_frame`, stats, progress. True: quit asked."""
        o = self.opts
        self._last_progress = time.monotonic()
        t0 = time.perf_counter_ns()
        image = None
        if o.overlay:
            fps_now = None
            if self._last_out is not None:
                dt = time.perf_counter() - self._last_out
                self._fps_ema = 1 / dt if self._fps_ema is None else 0.9 * self._fps_ema + 0.1 / max(dt, 1e-6)
                fps_now = self._fps_ema
            self._last_text = (fps_now, dict(pkt.ms))
            image = draw(pkt.image, pkt.faces, fps_now, pkt.ms, o.bars, self.status)
        pkt.ms["overlay"] = ms_since(t0)
        self._last_out = time.perf_counter()
        self._last_pkt = pkt
        try:
            quit_asked = bool(self.on_frame(pkt, image)) if self.on_frame else False
        except (UserError, PipelineError):
            raise
        except Exception as exc:  # a failing sink (disk full...) is reported like any other stage
            raise PipelineError(f"sink stage failed: {type(exc).__name__}: {exc}") from exc
        self._account(pkt, t_start)
        if not o.quiet and time.monotonic() - self._last_log > o.progress_every_s:
            self._last_log = time.monotonic()
            self.log(f"frame {self.stats.frames}: {self.stats.frames / (time.perf_counter() - t_start):.1f} FPS, "
                     f"{len(pkt.faces)} face(s)")
        if quit_asked:
            self.stop("quit")
        return quit_asked

    def _account(self, pkt: FrameRecord, t_start: float) -> None:
        s = self.stats
        if s.startup_s is None:
            s.startup_s = time.perf_counter() - t_start
        s.frames += 1
        s.faces += len(pkt.faces)
        s.frames_with_faces += bool(pkt.faces)
        s.per_frame_ms.append(dict(pkt.ms))
