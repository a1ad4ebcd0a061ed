"""Where processed frames go: a window, a video/image file, JSONL events.

Each sink writes whole records only: the JSONL sink writes a complete line and flushes it,
and the video sink is released on close so the mp4 has its index. A Ctrl-C or SIGTERM
therefore leaves playable, parseable output.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import cv2
import numpy as np

from models.data import IMAGE_EXTS
from models.errors import UserError


class JsonlSink:
    def __init__(self, path: str | os.PathLike):
        path = Path(path)
        if path.parent and not path.parent.exists():
            raise UserError(f"folder {path.parent} for --jsonl does not exist")
        try:
            self._fh = open(path, "w", encoding="utf-8")
        except OSError as exc:
            raise UserError(f"cannot write --jsonl {path}: {exc.strerror or exc}") from None

    def write(self, event: dict) -> None:
        # One write call per complete line, then flush: a kill never leaves half a line.
        self._fh.write(json.dumps(event, separators=(",", ":")) + "\n")
        self._fh.flush()

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()


class VideoSink:
    """mp4 (or avi) writer, opened lazily at the first frame's size."""

    def __init__(self, path: str | os.PathLike, fps: float):
        self.path = Path(path)
        if not self.path.parent.exists():
            raise UserError(f"folder {self.path.parent} for --output does not exist")
        self._fps = fps if fps and fps > 0 else 25.0
        self._writer = None

    def write(self, frame: np.ndarray) -> None:
        if self._writer is None:
            fourcc = cv2.VideoWriter_fourcc(*("MJPG" if self.path.suffix.lower() == ".avi" else "mp4v"))
            h, w = frame.shape[:2]
            self._writer = cv2.VideoWriter(str(self.path), fourcc, self._fps, (w, h))
            if not self._writer.isOpened():
                raise UserError(f"cannot write video {self.path}")
        self._writer.write(frame)

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
