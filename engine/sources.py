"""Frame sources: cameras (USB/V4L2, Pi camera), video files, images, folders, stream URLs.

Every source has the same small surface (`read() -> frame or None`, `mode`, `fps`,
`reopen()`, `close()`), so the capture thread treats them alike. `mode` is the engine's
RunningMode: LIVE (a camera, a stream), VIDEO (a video file) or IMAGE (an image, a folder);
`live` is `mode is RunningMode.LIVE`. A live source returning None means "lost" (the capture
thread reconnects with back-off); any other returning None means "finished".
"""
from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from engine.errors import UserError
from engine.types import RunningMode

STREAM_TIMEOUT_MS = 8000
#: Still-image files (sources, sinks, batch inputs, and the training data folders of models.data).
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".webp"}
VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".gif", ".m4v", ".mpg", ".mpeg", ".wmv"}


@dataclass
class SourceOptions:
    source: str = "0"
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    loop: int = 1  # play a file this many times (benchmarks, soak tests)


def sample_image_path() -> Path:
    """A real face photo that installs with matplotlib (a mediapipe dependency): Grace Hopper."""
    try:
        from matplotlib import cbook

        return Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    except Exception:
        raise UserError("--source sample needs matplotlib's sample data: pip install matplotlib") from None


class Source:
    """A frame source. Subclasses set `mode` (a class attribute or in `__init__`), `name` and `fps`.

    Older subclasses that set `live` instead (`live = True` in the class, or `self.live = True` in
    `__init__`) still work: `live` maps onto `mode` (True: LIVE; False: VIDEO, or IMAGE for an image
    source). Sources that are not subclasses at all are read through `mode_of`.
    """

    mode = RunningMode.VIDEO
    name = ""
    fps = 0.0

    @property
    def live(self) -> bool:
        """A camera or a stream (RunningMode.LIVE): the newest frame wins, reconnect when lost."""
        return self.mode is RunningMode.LIVE

    @live.setter
    def live(self, value: bool) -> None:
        self.mode = _mode_for_live(type(self), value)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        live = cls.__dict__.get("live")
        if isinstance(live, bool):  # a subclass written before `mode` declares only `live = True/False`
            # A mode declared by the class or by a parent other than Source (ImageSource: IMAGE) wins.
            if not any("mode" in k.__dict__ for k in cls.__mro__ if k not in (Source, object)):
                cls.mode = _mode_for_live(cls, live)
            delattr(cls, "live")

    def read(self) -> np.ndarray | None:
        raise NotImplementedError

    def reopen(self) -> bool:
        return False

    def close(self) -> None:
        pass


def _mode_for_live(cls: type, live: bool) -> RunningMode:
    """The older `live` flag as a RunningMode: LIVE, else IMAGE for an image source (its class mode), else VIDEO."""
    if live:
        return RunningMode.LIVE
    return RunningMode.IMAGE if getattr(cls, "mode", None) is RunningMode.IMAGE else RunningMode.VIDEO


def mode_of(source) -> RunningMode:
    """The RunningMode of any source: its `mode`; for a duck-typed source without one (not a Source
    subclass, written before `mode`), LIVE if its `live` is true, else VIDEO. The engine reads modes here."""
    mode = getattr(source, "mode", None)
    if isinstance(mode, RunningMode):
        return mode
    return RunningMode.LIVE if getattr(source, "live", False) else RunningMode.VIDEO


class VideoCaptureSource(Source):
    """cv2.VideoCapture-backed: a camera, a video file, or a stream URL.

    `opener` builds the capture object; tests pass a fake camera that behaves like a
    real one (frames, failures, reconnects) because CI has no camera. `mode` overrides the one `live`
    implies (LIVE / VIDEO): RunningMode.IMAGE reads a photo on a web server through the capture.
    """

    def __init__(self, target, live: bool, opts: SourceOptions, opener: Callable | None = None, name: str = "",
                 mode: RunningMode | None = None):
        self._target = target
        self.mode = mode or (RunningMode.LIVE if live else RunningMode.VIDEO)
        live = self.mode is RunningMode.LIVE
        self._opts = opts
        self._opener = opener or self._default_opener
        self.name = name or str(target)
        self._cap = None
        self._loops_left = max(1, opts.loop)
        if not self._open():
            what = "camera" if isinstance(target, int) or str(target).startswith("/dev/") else "source"
            label = self.name if self.name.startswith(f"{what} ") else f"{what} {self.name}"  # not "camera camera 9"
            raise UserError(f"cannot open {label}" + (" (is it connected and not used by another program?)" if what == "camera" else ""))
        self.fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0) or (opts.fps or 30.0)
        self._pending = None
        if not live:
            # A file OpenCV opens but cannot decode (a corrupt GIF, an unknown codec) is a clear
            # error now, before any model loads, not a silent "done: 0 frames" later.
            ok, first = self._cap.read()
            if not ok or first is None:
                self.close()
                raise UserError(f"cannot read any frame from {self.name} (not a video OpenCV can decode?)")
            self._pending = first

    def _default_opener(self, target):
        if isinstance(target, int) or str(target).startswith("/dev/video"):
            api = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY
            return cv2.VideoCapture(target, api)
        if self.live:  # a network stream: bounded open/read waits, so a dead stream reconnects
            # instead of blocking ~30 s inside FFmpeg (longer than the pipeline's watchdog).
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, STREAM_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, STREAM_TIMEOUT_MS]
            return cv2.VideoCapture(str(target), cv2.CAP_ANY, params)
        return cv2.VideoCapture(str(target))

    def _open(self) -> bool:
        try:
            cap = self._opener(self._target)
        except Exception:
            return False
        if cap is None or not cap.isOpened():
            return False
        if self.live:
            # MJPG lets USB cameras deliver 720p/1080p at full rate over USB 2 (Pi 4).
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*"MJPG"))
            if self._opts.width:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, self._opts.width)
            if self._opts.height:
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self._opts.height)
            if self._opts.fps:
                cap.set(cv2.CAP_PROP_FPS, self._opts.fps)
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # newest frame, not a stale queue
        self._cap = cap
        return True

    def read(self) -> np.ndarray | None:
        if self._pending is not None:
            frame, self._pending = self._pending, None
            return frame
        if self._cap is None:
            return None
        ok, frame = self._cap.read()
        if ok and frame is not None:
            return frame
        if not self.live and self._loops_left > 1:
            self._loops_left -= 1
            self._cap.release()
            if self._open():
                ok, frame = self._cap.read()
                return frame if ok else None
        return None

    def reopen(self) -> bool:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        return self._open()

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class ImageSource(Source):
    """One image or a sorted folder of images, each read once (times `loop`). `folder`: the folder they came from."""

    mode = RunningMode.IMAGE

    def __init__(self, paths: list[Path], opts: SourceOptions, name: str, folder: Path | None = None):
        self._paths = paths * max(1, opts.loop)
        self._i = 0
        self.name = name
        self.folder = folder
        self.fps = opts.fps or 1.0
        self.current: Path | None = None

    def read(self) -> np.ndarray | None:
        while self._i < len(self._paths):
            path = self._paths[self._i]
            self._i += 1
            frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if frame is None:
                print(f"warning: skipping unreadable image {path}", file=sys.stderr)
                continue
            self.current = path
            return frame
        return None


class PiCameraSource(Source):
    """Raspberry Pi camera through Picamera2 (imported only when asked for)."""

    mode = RunningMode.LIVE

    def __init__(self, opts: SourceOptions):
        try:
            from picamera2 import Picamera2  # type: ignore
        except ImportError:
            raise UserError("--source picam needs Picamera2: sudo apt install python3-picamera2 (and create the venv with --system-site-packages)") from None
        self._cls = Picamera2
        self._opts = opts
        self.name = "picam"
        self.fps = opts.fps or 30.0
        self._cam = None
        if not self.reopen():
            raise UserError("cannot open the Raspberry Pi camera (is it connected and enabled?)")

    def reopen(self) -> bool:
        self.close()
        try:
            cam = self._cls()
            size = (self._opts.width or 640, self._opts.height or 480)
            cam.configure(cam.create_video_configuration(main={"size": size, "format": "RGB888"}))
            cam.start()
        except Exception:
            return False
        self._cam = cam
        return True

    def read(self) -> np.ndarray | None:
        if self._cam is None:
            return None
        try:
            return self._cam.capture_array()  # RGB888 is BGR in memory order
        except Exception:
            return None

    def close(self) -> None:
        if self._cam is not None:
            try:
                self._cam.stop()
                self._cam.close()
            except Exception:
                pass
            self._cam = None


def open_source(opts: SourceOptions, opener: Callable | None = None) -> Source:
    """Parse `--source` into a Source; one clear sentence when it cannot be opened."""
    spec = str(opts.source).strip()
    for name in ("width", "height"):
        v = getattr(opts, name)
        if v is not None and v <= 0:
            raise UserError(f"--{name} must be positive")
    if opts.fps is not None and opts.fps <= 0:
        raise UserError("--fps must be positive")
    if spec == "picam":
        return PiCameraSource(opts)
    if spec == "sample":
        path = sample_image_path()
        return ImageSource([path], opts, name=path.name)
    if re.fullmatch(r"\d+", spec):
        return VideoCaptureSource(int(spec), True, opts, opener, name=f"camera {spec}")
    if spec.startswith("/dev/video"):
        if not os.path.exists(spec):
            raise UserError(f"no camera at {spec}")
        return VideoCaptureSource(spec, True, opts, opener, name=spec)
    if re.match(r"^(rtsp|rtmp|http|https|udp|tcp)://", spec):
        return VideoCaptureSource(spec, True, opts, opener, name=spec)
    path = Path(spec)
    if not path.exists():
        raise UserError(f"source {spec} does not exist (give a camera index, /dev/videoN, picam, a file, a folder or a URL)")
    if path.is_dir():
        images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTS)
        if not images:
            raise UserError(f"folder {path} has no images")
        return ImageSource(images, opts, name=str(path), folder=path)
    if path.suffix.lower() in IMAGE_EXTS and path.suffix.lower() != ".gif":
        if cv2.imread(str(path)) is None:
            raise UserError(f"cannot read image {path}")
        return ImageSource([path], opts, name=path.name)
    src = VideoCaptureSource(path, False, opts, opener, name=path.name)
    return src
