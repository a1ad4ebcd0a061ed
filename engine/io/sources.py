"""Frame sources: cameras (USB/V4L2, Pi camera), video files, images, folders, stream URLs.

Every source has the same small surface (`read() -> frame or None`, `mode`, `fps`,
`reopen()`, `close()`), so the capture thread treats them alike. `mode` is the engine's
RunningMode: LIVE (a camera, a stream), VIDEO (a video file) or IMAGE (an image, a folder);
`live` is `mode is RunningMode.LIVE`. A live source returning None means "lost" (the capture
thread reconnects with back-off); any other returning None means "finished".

A URL's mode: rtsp/rtmp/udp/tcp are LIVE; an http(s) URL of a photo is IMAGE; an http(s) video file (a
video extension, or a capture that announces a frame count) is VIDEO, so its end ends the run (`--loop N`
plays it N times) instead of being "reconnected" to forever; other http(s) URLs (MJPEG, HLS) are LIVE.
Every source except a local camera must give a first frame when opened (else one sentence), and a URL is
shown only through `engine.core.urls.redact` (no password, no token).

Here: the Source contract, the sources and `open_source` / `planned_mode`, which choose one from `--source`.
How OpenCV is asked for a capture is engine.io.capture; reading photos without the decoders' warnings on
the terminal is engine.io.photo_decoding.
"""
from __future__ import annotations

import os
import re
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

import cv2
import numpy as np

from engine.core.errors import OptionError, UserError
from engine.core.types import RunningMode
from engine.core.urls import redact
from engine.io.capture import configure_camera, open_capture
from engine.io.photo_decoding import DecoderNotes

#: Still-image files (sources, sinks, batch inputs, and the training data folders of models.data).
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".webp"}
VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".gif", ".m4v", ".mpg", ".mpeg", ".wmv"}
#: URL schemes that may carry a live stream (MJPEG, HLS) or a finite file (an .mp4 on a web server)
WEB_SCHEMES = ("http", "https")


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
        raise OptionError("SourceOptions", "source", "sample needs matplotlib's sample data: pip install matplotlib") from None


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
                 mode: RunningMode | None = None, probe_finite: bool = False):
        self._target = target
        self.mode = mode or (RunningMode.LIVE if live else RunningMode.VIDEO)
        self._opts = opts
        self._opener = opener or open_capture
        self.name = name or redact(str(target))
        self._cap = None
        self._loops_left = max(1, opts.loop)
        if not self._open():
            what = "camera" if self._is_camera() else "source"
            label = self.name if self.name.startswith(f"{what} ") else f"{what} {self.name}"  # not "camera camera 9"
            raise UserError(f"cannot open {label}" + (" (is it connected and not used by another program?)" if what == "camera" else ""))
        if probe_finite and self.live and self._announces_frames():
            self.mode = RunningMode.VIDEO  # a file on a web server: it ends, and every frame counts
        self.fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0) or (opts.fps or 30.0)
        self._pending = None
        if not self.live or not self._is_camera():
            # A file OpenCV opens but cannot decode (a corrupt GIF, an unknown codec, an .mp4 whose index
            # a web server cannot seek to) is a clear error now, before any model loads, not a silent
            # "done: 0 frames" later, nor, for a URL, an endless loop of reconnects to a source that never
            # gave a frame.
            ok, first = self._cap.read()
            if not ok or first is None:
                self.close()
                kind = "a stream" if self.live else "a video"
                raise UserError(f"cannot read any frame from {self.name} (not {kind} OpenCV can decode?)")
            self._pending = first

    def _is_camera(self) -> bool:
        """A local capture device (index or /dev/...), as opposed to a file or a URL."""
        return isinstance(self._target, int) or str(self._target).startswith("/dev/")

    def _announces_frames(self) -> bool:
        """Whether the opened capture is a finite file: FFmpeg knows its frame count (an .mp4 served over
        HTTP does; an MJPEG or HLS live stream does not)."""
        try:
            return float(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) > 0
        except Exception:  # a capture without the property: treat it as live, as before
            return False

    def _open(self) -> bool:
        try:
            cap = self._opener(self._target)
        except Exception:
            return False
        if cap is None or not cap.isOpened():
            return False
        if self.live and self._is_camera():
            configure_camera(cap, self._opts.width, self._opts.height, self._opts.fps)
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
        self.notes = DecoderNotes()

    def read(self) -> np.ndarray | None:
        while self._i < len(self._paths):
            path = self._paths[self._i]
            self._i += 1
            frame = self.notes.imread(path)
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
            raise OptionError("SourceOptions", "source", "picam needs Picamera2: sudo apt install python3-picamera2 (and create the venv with --system-site-packages)") from None
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


#: --source values that are URLs the engine reads (OpenCV / FFmpeg open them)
URL_SOURCE = re.compile(r"^(rtsp|rtmp|http|https|udp|tcp)://", re.IGNORECASE)


def url_suffix(url: str) -> str:
    """The file extension of a URL's path, query and fragment left out: `.mp4` for `http://h/a.mp4?sig=x`."""
    try:
        return Path(urlsplit(url).path).suffix.lower()
    except ValueError:
        return ""


def _url_mode(spec: str) -> RunningMode | None:
    """A URL's RunningMode when its scheme or its file name says it; None when only the opened capture can
    tell (an http(s) URL without a media extension: an MJPEG / HLS live stream or a file, by its frame count)."""
    if spec.split("://", 1)[0].lower() not in WEB_SCHEMES:
        return RunningMode.LIVE  # rtsp, rtmp, udp, tcp: streams
    ext = url_suffix(spec)
    if ext in IMAGE_EXTS:
        return RunningMode.IMAGE
    if ext in VIDEO_EXTS:
        return RunningMode.VIDEO
    return None


def _is_photo(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTS and path.suffix.lower() != ".gif"


def planned_mode(spec: str) -> RunningMode:
    """The RunningMode `open_source` gives `spec`, decided without opening anything (so outputs can be
    checked first). An http(s) URL only its frame count can place reads LIVE here: it may open as VIDEO,
    which takes the same outputs (a video file)."""
    spec = str(spec).strip()
    if spec == "sample":
        return RunningMode.IMAGE
    if spec == "picam" or re.fullmatch(r"\d+", spec) or spec.startswith("/dev/video"):
        return RunningMode.LIVE
    if URL_SOURCE.match(spec):
        return _url_mode(spec) or RunningMode.LIVE
    path = Path(spec)
    return RunningMode.IMAGE if path.is_dir() or _is_photo(path) else RunningMode.VIDEO


def _refuse_special_file(path: Path) -> None:
    """A FIFO or a socket as --source: OpenCV's open would block until a writer appears, and Ctrl-C
    cannot interrupt it (the wait is inside C code). Devices and regular files pass."""
    mode = path.stat().st_mode
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return
    kind = "a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "not a regular file"
    raise UserError(f"source {path} is {kind}, which could block forever: give a video file, an image, a folder, "
                    f"a camera or a URL")


def _open_url(spec: str, opts: SourceOptions, opener: Callable | None) -> Source:
    """A URL as a source, shown only redacted (no password, no token). An http(s) file (an .mp4, or any URL
    whose capture announces a frame count) is VIDEO: it ends at its end (or plays `loop` times) instead of
    being "reconnected" forever; a photo URL is one IMAGE; anything else is a LIVE stream."""
    name = redact(spec)
    mode = _url_mode(spec)
    if mode is RunningMode.IMAGE:
        src = VideoCaptureSource(spec, False, opts, opener, name=name, mode=mode)
        src.current = Path(Path(urlsplit(spec).path).name or "image")  # the photo's name in lines and JSONL
        return src
    return VideoCaptureSource(spec, mode is not RunningMode.VIDEO, opts, opener, name=name, mode=mode,
                              probe_finite=mode is None)


def open_source(opts: SourceOptions, opener: Callable | None = None) -> Source:
    """Parse `--source` into a Source; one clear sentence when it cannot be opened."""
    spec = str(opts.source).strip()
    for name in ("width", "height"):
        v = getattr(opts, name)
        if v is not None and v <= 0:
            raise OptionError("SourceOptions", name, "must be positive")
    if opts.fps is not None and opts.fps <= 0:
        raise OptionError("SourceOptions", "fps", "must be positive")
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
    if URL_SOURCE.match(spec):
        return _open_url(spec, opts, opener)
    path = Path(spec)
    if not path.exists():
        raise UserError(f"source {redact(spec)} does not exist (give a camera index, /dev/videoN, picam, a file, a folder or a URL)")
    _refuse_special_file(path)
    if path.is_dir():
        # is_file: a FIFO or a dangling link named *.jpg is not a photo (imread would block on a FIFO)
        images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTS and p.is_file())
        if not images:
            raise UserError(f"folder {path} has no images")
        return ImageSource(images, opts, name=str(path), folder=path)
    if _is_photo(path):
        src = ImageSource([path], opts, name=path.name)
        if src.notes.imread(path) is None:
            raise UserError(f"cannot read image {path}")
        return src
    src = VideoCaptureSource(path, False, opts, opener, name=path.name)
    return src
