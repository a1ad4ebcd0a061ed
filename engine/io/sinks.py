"""Where processed frames go: a window, a video/image file, JSONL events; and `OutputOptions`, which of them a run opens.

Each sink writes whole records only: the JSONL sink writes a complete line and flushes it,
and the video sink is released on close so the mp4 has its index. A Ctrl-C or SIGTERM
therefore leaves playable, parseable output.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from engine.core.errors import OptionError, UserError
from engine.io.sources import IMAGE_EXTS

#: The file names VideoSink writes a playable video under (mp4v, or MJPG for .avi); others (.webm, .gif)
#: fail in OpenCV's writer, and an image name (.jpg) would hold an MPEG-4 stream no viewer opens.
VIDEO_OUT_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".m4v")

if TYPE_CHECKING:
    from engine.sound.cues import SoundOptions


@dataclass
class OutputOptions:
    """What one run writes (`engine.io.outputs.Outputs.open`); everything is off unless set.

    A sink that cannot be opened or written raises `OutputError` naming its field
    (`OutputOptions.jsonl: cannot write ...`); `engine.run` says the flag instead (`--jsonl: ...`).
    """

    window: bool = False  # an OpenCV window (engine.run: unless --no-display or no display is found)
    video: str | os.PathLike | None = None  # the annotated video, .mp4 or .avi (--output)
    images: str | os.PathLike | None = None  # annotated photos: one image file, or a folder (--output on photo sources)
    jsonl: str | os.PathLike | None = None  # one JSON record per frame (--jsonl)
    sound: SoundOptions | None = None  # sound cues (--sound, --sound-out, --sound-*)


class OutputError(OptionError):
    """A sink that cannot be opened or written: `field` is the OutputOptions field, `detail` the reason."""

    def __init__(self, field: str, detail: str):
        super().__init__("OutputOptions", field, detail)

    def __reduce__(self):  # picklable with its two arguments (worker processes)
        return type(self), (self.field, self.detail)


class JsonlSink:
    def __init__(self, path: str | os.PathLike):
        path = Path(path)
        if path.parent and not path.parent.exists():
            raise UserError(f"folder {path.parent} does not exist")
        try:
            self._fh = open(path, "w", encoding="utf-8")
        except OSError as exc:
            raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
        self.path = path

    def write(self, event: dict) -> None:
        """One record. A failed write (disk full) is a UserError; the file is then closed, its buffer dropped."""
        # One write call per complete line, then flush: a kill never leaves half a line.
        try:
            self._fh.write(json.dumps(event, separators=(",", ":")) + "\n")
            self._fh.flush()
        except OSError as exc:
            try:
                self._fh.close()  # releases the file even though its flush fails again
            except OSError:
                pass
            raise UserError(f"cannot write {self.path}: {exc.strerror or exc}") from None

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()


class VideoSink:
    """mp4 (or avi) writer, opened lazily at the first frame's size.

    A file source's frames are written one for one at its own rate. A live source drops
    frames whenever the pipeline is busier than the camera, so there each frame goes to
    the output slot of its capture time (`t`), the previous frame filling any slots in
    between: the video plays at real speed instead of fast-forwarding. Frames of another
    size (a folder of mixed photos) are letterboxed to the first frame's size, as a video
    file cannot change size midway.
    """

    MAX_GAP_S = 2.0  # a longer gap (a camera reconnect) is cut, not filled with a still
    #: Cameras and streams sometimes report nonsense rates (0, 1000, the 90 kHz time base): a live
    #: output outside this range is written at 30 FPS instead.
    LIVE_FPS_RANGE = (1.0, 120.0)

    def __init__(self, path: str | os.PathLike, fps: float, live: bool = False):
        self.path = Path(path)
        if not self.path.parent.exists():
            raise UserError(f"folder {self.path.parent} does not exist")
        lo, hi = self.LIVE_FPS_RANGE
        if live:
            self._fps = fps if fps and lo <= fps <= hi else 30.0
        else:
            self._fps = fps if fps and fps > 0 else 25.0
        self._live = live
        self._writer = None
        self._size: tuple[int, int] | None = None  # (w, h)
        self._t0: float | None = None  # capture time of the first live frame
        self._slot = 0  # output slot of the last written live frame
        self._last: np.ndarray | None = None
        self.frames_written = 0

    def _fit(self, frame: np.ndarray) -> np.ndarray:
        w, h = self._size
        fh, fw = frame.shape[:2]
        if (fw, fh) == (w, h):
            return frame
        scale = min(w / fw, h / fh)
        nw, nh = max(1, round(fw * scale)), max(1, round(fh * scale))
        canvas = np.zeros((h, w, 3), np.uint8)
        x, y = (w - nw) // 2, (h - nh) // 2
        canvas[y:y + nh, x:x + nw] = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        return canvas

    def _put(self, frame: np.ndarray) -> None:
        self._writer.write(frame)
        self.frames_written += 1

    def write(self, frame: np.ndarray, t: float | None = None) -> None:
        if self._writer is None:
            fourcc = cv2.VideoWriter_fourcc(*("MJPG" if self.path.suffix.lower() == ".avi" else "mp4v"))
            h, w = frame.shape[:2]
            self._size = (w, h)
            self._writer = cv2.VideoWriter(str(self.path), fourcc, self._fps, (w, h))
            if not self._writer.isOpened():
                raise UserError(f"cannot write video {self.path}")
        frame = self._fit(frame)
        if not self._live or t is None:
            self._put(frame)
            return
        if self._t0 is None:
            self._t0, self._slot, self._last = t, 0, frame
            self._put(frame)
            return
        # Slots count from the first frame and only move forward: capture-time jitter then never
        # drops a frame that arrives at the camera's own rate, and the video keeps real time.
        ideal = (t - self._t0) * self._fps
        nxt = self._slot + 1
        if ideal < nxt - 1:
            return  # a frame before its slot: the source runs faster than the file's rate
        slot = max(nxt, round(ideal))
        if slot - nxt > self.MAX_GAP_S * self._fps:
            self._t0 += (slot - nxt) / self._fps  # cut the gap: the timeline resumes at the next slot
            slot = nxt
        for _ in range(slot - nxt):
            self._put(self._last)
        self._slot, self._last = slot, frame
        self._put(frame)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None


class ImageSink:
    """For image sources: `--output out.jpg` (one image) or a folder (one file per input)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._n = 0

    def write(self, frame: np.ndarray, name: str | None = None) -> None:
        if self.path.suffix.lower() in IMAGE_EXTS:
            target = self.path if self._n == 0 else self.path.with_name(f"{self.path.stem}_{self._n}{self.path.suffix}")
        else:
            try:
                self.path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UserError(f"cannot create output folder {self.path}: {exc.strerror or exc}") from None
            target = self.path / (name or f"frame_{self._n:05d}.jpg")
        self._n += 1
        if not cv2.imwrite(str(target), frame):
            raise UserError(f"cannot write image {target}")

    def close(self) -> None:
        pass


def display_available() -> bool:
    """A window needs a display server on Linux; macOS/Windows always have one."""
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


class WindowSink:
    def __init__(self, title: str = "emotion-engine (q to quit)"):
        self.title = title
        try:
            cv2.namedWindow(self.title, cv2.WINDOW_NORMAL)
        except cv2.error:
            raise UserError("this OpenCV build has no GUI support: use --no-display, or install opencv-contrib-python (not -headless)") from None
        self.quit_requested = False

    def write(self, frame: np.ndarray) -> None:
        cv2.imshow(self.title, frame)
        key = cv2.waitKey(1) & 0xFF
        if key in (ord("q"), 27):
            self.quit_requested = True

    def close(self) -> None:
        try:
            cv2.destroyWindow(self.title)
            cv2.waitKey(1)
        except cv2.error:
            pass
