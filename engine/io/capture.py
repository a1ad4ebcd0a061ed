"""How OpenCV is asked for a capture: which backend opens a camera, how long a URL may keep it waiting, and
the settings a USB camera needs to deliver full-size frames at full rate.

Why apart from engine.io.sources: these are the OpenCV and FFmpeg facts (V4L2, open/read timeouts, MJPG,
a one-frame buffer) that a Pi user tunes, kept out of the Source rules (modes, reconnects, loops) that
`VideoCaptureSource` keeps. A test's fake camera replaces `open_capture`, never `configure_camera`.
"""
from __future__ import annotations

import sys

import cv2

from engine.core.urls import is_url

#: the longest a stream URL may keep an open or a read waiting inside FFmpeg
STREAM_TIMEOUT_MS = 8000


def open_capture(target):
    """A cv2.VideoCapture for a camera index or /dev/video path (V4L2 on Linux), a URL or a file."""
    if isinstance(target, int) or str(target).startswith("/dev/video"):
        api = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY
        return cv2.VideoCapture(target, api)
    if is_url(str(target)):  # bounded open/read waits: a dead stream reconnects (a dead web server
        # ends the file) instead of blocking ~30 s inside FFmpeg (longer than the pipeline's watchdog).
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, STREAM_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, STREAM_TIMEOUT_MS]
        return cv2.VideoCapture(str(target), cv2.CAP_ANY, params)
    return cv2.VideoCapture(str(target))


def configure_camera(cap, width: int | None, height: int | None, fps: float | None) -> None:
    """Ask an opened local camera for MJPG, the size and rate asked for (None: its own), and a one-frame buffer."""
    # MJPG lets USB cameras deliver 720p/1080p at full rate over USB 2 (Pi 4).
    cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*"MJPG"))
    if width:
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
    if height:
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
    if fps:
        cap.set(cv2.CAP_PROP_FPS, fps)
    cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # newest frame, not a stale queue
