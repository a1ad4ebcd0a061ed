"""Test doubles that behave like the real thing, fed with real faces.

`CameraRig` is a USB camera on a cable: `rig.open` is the `opener` that
`engine.io.sources.open_source(..., opener=rig.open)` hands to `VideoCaptureSource`, and every
call returns a `FakeCamera` that quacks like `cv2.VideoCapture` (isOpened, read, set, get,
release). Frames come from a real clip or real photos at a real rate (read() blocks until
the next frame is due, and a late reader gets the newest frame, as V4L2 with a one-frame
buffer does). The cable can be pulled: read() fails, the next `fail_opens` opens fail,
then it is back (or stays away until `replug()`), and a read can hang forever, the way a
wedged driver does.

Also here: where the shared clips live, and multi-face frames composed from the two
portraits that install with scikit-image and matplotlib.
"""
from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

MEDIA = Path(__file__).resolve().parents[2] / "shared" / "media"
TWO_FACE_CLIP = "head-pose-face-detection-female-and-male.gif"  # 56 frames, 2 faces in every one


def media(name: str = TWO_FACE_CLIP) -> Path:
    """A clip from ../shared/media, or a clean skip where the shared media are not mounted."""
    path = MEDIA / name
    if not path.is_file():
        pytest.skip(f"shared clip {path} is not here")
    return path


def read_clip(path: str | Path, limit: int | None = None) -> list[np.ndarray]:
    """Decode a clip with OpenCV (the engine's own decoder): a list of BGR frames."""
    cap = cv2.VideoCapture(str(path))
    frames = []
    try:
        while limit is None or len(frames) < limit:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(frame)
    finally:
        cap.release()
    assert frames, f"OpenCV decoded no frame from {path}"
    return frames


def astronaut() -> np.ndarray:
    """Eileen Collins, smiling (scikit-image's astronaut), 512x512 BGR."""
    skdata = pytest.importorskip("skimage.data")
    return np.ascontiguousarray(skdata.astronaut()[:, :, ::-1])


def grace_hopper() -> np.ndarray:
    """Grace Hopper (matplotlib's sample data), 512x600 BGR."""
    cbook = pytest.importorskip("matplotlib.cbook")
    img = cv2.imread(str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)), cv2.IMREAD_COLOR)
    assert img is not None
    return img


def side_by_side(*images: np.ndarray, height: int = 360, gap: int = 16) -> np.ndarray:
    """Photos scaled to one height and put next to each other on mid-grey: one face each."""
    parts = []
    for img in images:
        h, w = img.shape[:2]
        parts.append(cv2.resize(img, (round(w * height / h), height), interpolation=cv2.INTER_AREA))
        parts.append(np.full((height, gap, 3), 128, np.uint8))
    return np.ascontiguousarray(np.hstack(parts[:-1]))


def head_and_shoulders(img: np.ndarray, cx: int, cy: int, side: int, scale: float = 2.0) -> np.ndarray:
    """A square `scale` face sides wide around a face centre (clamped to the photo)."""
    half = int(side * scale / 2)
    h, w = img.shape[:2]
    x0, y0 = max(0, cx - half), max(0, cy - half)
    return img[y0 : min(h, cy + half), x0 : min(w, cx + half)]


def two_face_frame(height: int = 360) -> np.ndarray:
    """The astronaut (left) and Grace Hopper (right) in one frame, ~1/4 of its width each.

    BlazeFace short-range sees a 128x128 copy of the frame, so a face must keep ~20 px
    there: the portraits are cropped to head and shoulders before they are composed.
    """
    return side_by_side(head_and_shoulders(astronaut(), 228, 120, 150),
                        head_and_shoulders(grace_hopper(), 262, 228, 230), height=height)


def write_drifting_clip(path: Path, frames: int = 40, height: int = 300) -> Path:
    """An MJPG AVI of the two packaged portraits drifting 20 px right and back: a real video file for engine runs
    that must not need the shared media."""
    base = two_face_frame(height=height)
    h, w = base.shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 15.0, (w + 40, h))
    assert writer.isOpened()
    for i in range(frames):
        frame = np.full((h, w + 40, 3), 128, np.uint8)
        x = i if i < 20 else 40 - i
        frame[:, x : x + w] = base
        writer.write(frame)
    writer.release()
    return path


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit 2, nothing on stderr but one 'error: ...' sentence, no traceback; each fragment in that sentence."""
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    for frag in fragments:
        assert frag in lines[0], lines[0]
    return lines[0]


class CameraRig:
    """A camera on a cable, with hands to pull and replug it.

    frames:       what the sensor sees, served in a loop (BGR arrays)
    fps:          frame rate; read() waits for the next frame like a real camera
    unplug_after: pull the cable by itself after serving this many frames (once)
    fail_opens:   after an unplug, this many open attempts fail; then the camera is back.
                  None: it stays away until `replug()`.
    hang_after:   after serving this many frames, read() blocks until the camera is released
                  (a wedged driver); for watchdog tests.
    """

    def __init__(self, frames: list[np.ndarray], fps: float = 30.0, unplug_after: int | None = None,
                 fail_opens: int | None = 0, hang_after: int | None = None):
        self.frames = frames
        self.fps = fps
        self.unplug_after = unplug_after
        self.fail_opens = fail_opens
        self.hang_after = hang_after
        self._lock = threading.Lock()
        self.plugged = True
        self._fails_left = 0
        self.served: list[int] = []  # sensor frame number of every frame read() returned, in order
        self.events: list[tuple[str, float]] = []  # ("open" | "open_failed" | "unplug" | "replug", monotonic time)
        self.settings: dict[int, float] = {}
        self.cameras: list[FakeCamera] = []
        self._t0 = time.monotonic()  # the sensor runs whether or not anyone reads

    # ---- the opener handed to open_source ----
    def open(self, target) -> "FakeCamera":
        with self._lock:
            ok = self.plugged
            if not ok and self.fail_opens is not None:
                if self._fails_left > 0:
                    self._fails_left -= 1
                if self._fails_left == 0:  # that was the last failing attempt: next time it is back
                    self.plugged = True
                    self.events.append(("replug", time.monotonic()))
            self.events.append(("open" if ok else "open_failed", time.monotonic()))
        cam = FakeCamera(self, ok)
        self.cameras.append(cam)
        return cam

    # ---- hands ----
    def unplug(self) -> None:
        with self._lock:
            self.plugged = False
            self._fails_left = self.fail_opens or 0
            self.events.append(("unplug", time.monotonic()))
            if self.fail_opens == 0:  # back at the very next open
                self.plugged = True
        for cam in self.cameras:
            cam._dead = True

    def replug(self) -> None:
        with self._lock:
            self.plugged = True
            self.events.append(("replug", time.monotonic()))

    def times(self, kind: str) -> list[float]:
        return [t for k, t in self.events if k == kind]

    # ---- the sensor ----
    def _next_frame(self, cam: "FakeCamera") -> tuple[bool, np.ndarray | None]:
        if self.hang_after is not None and len(self.served) >= self.hang_after:
            cam._released.wait()  # wedged until someone releases the capture
            return False, None
        if self.unplug_after is not None and len(self.served) >= self.unplug_after:
            self.unplug_after = None
            self.unplug()
        if cam._dead:
            time.sleep(0.02)  # V4L2 notices a pulled cable after a select() timeout, not instantly
            return False, None
        # The newest frame the sensor has finished; wait for a fresh one if that one was taken.
        k = int((time.monotonic() - self._t0) * self.fps)
        if cam._last is not None and k <= cam._last:
            k = cam._last + 1
            delay = self._t0 + k / self.fps - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        cam._last = k
        self.served.append(k)
        return True, self.frames[k % len(self.frames)].copy()


class FakeCamera:
    """What `cv2.VideoCapture(index)` returns, for one CameraRig."""

    def __init__(self, rig: CameraRig, opened: bool):
        self._rig = rig
        self._opened = opened
        self._dead = not opened
        self._last: int | None = None
        self._released = threading.Event()

    def isOpened(self) -> bool:  # noqa: N802 (cv2's spelling)
        return self._opened and not self._released.is_set()

    def read(self) -> tuple[bool, np.ndarray | None]:
        if not self.isOpened():
            return False, None
        return self._rig._next_frame(self)

    def set(self, prop: int, value: float) -> bool:
        self._rig.settings[prop] = value
        return self._opened

    def get(self, prop: int) -> float:
        if prop == cv2.CAP_PROP_FPS:
            return float(self._rig.fps)
        if prop == cv2.CAP_PROP_FRAME_WIDTH:
            return float(self._rig.frames[0].shape[1])
        if prop == cv2.CAP_PROP_FRAME_HEIGHT:
            return float(self._rig.frames[0].shape[0])
        return 0.0

    def release(self) -> None:
        self._released.set()
