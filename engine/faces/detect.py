"""Face detection: MediaPipe Tasks FaceDetector, or the same BlazeFace model on LiteRT.

The shipped BlazeFace models (engine/detectors/, with provenance) are used either way, so
nothing is ever downloaded. MediaPipe 1.x wheels for aarch64 need ARMv8.1 atomics and die
with SIGILL on a Pi 4 (Cortex-A72): `engine.core.cpu.mediapipe_safe()` is asked BEFORE
mediapipe is imported, and the LiteRT implementation takes over there.

Small faces (a classroom, a Pi camera across a room) are missed by the short-range model;
`model="full"` uses the full-range model and `tiles=True` runs the detector on
overlapping, upscaled tiles and merges the results.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from engine.faces.blazeface import DETECTOR_MODELS, LiteRTFaceDetector
from engine.core.errors import OptionError, UserError
from engine.faces.follow import BoxFollower, FollowOptions, work_image
from engine.core.geometry import nms
from engine.core.types import Detection, FaceDetector


#: the detector implementations (DetectorOptions.impl): the same BlazeFace model either way
IMPLS = ("auto", "mediapipe", "litert")
#: DetectorOptions.min_score lies strictly between these (0 keeps every box, 1 none)
MIN_SCORE = (0.0, 1.0)


@dataclass
class DetectorOptions:
    model: str = "short"  # short | full | a .tflite path
    min_score: float = 0.5
    impl: str = "auto"  # auto | mediapipe | litert
    video: bool = True  # VIDEO running mode (tracks timestamps) vs IMAGE (stills)
    tiles: bool = False  # also search 2x3 overlapping tiles for small faces
    threads: int = 1
    #: Run the detector on every Nth frame of a stream, or at once when a followed face is lost or
    #: something moved outside the faces (EveryNDetector); boxes follow the faces in between and the
    #: classifier sees every frame. At 4 the 2-face clip runs the detector on 17 of 56 frames (every
    #: frame's shown label kept, boxes at IoU p10 0.94 with fresh ones), the old carry-at-2 on 32.
    every: int = 4

    def __post_init__(self) -> None:
        """Checked when made, from the tables the command line's choices and ranges come from."""
        lo, hi = MIN_SCORE
        if not lo < self.min_score < hi:
            raise OptionError("DetectorOptions", "min_score", f"must be between {lo:g} and {hi:g} (exclusive), not {self.min_score:g}")
        if self.impl not in IMPLS:
            raise OptionError("DetectorOptions", "impl", f"unknown detector implementation {self.impl!r}: use {', '.join(IMPLS)}")
        if self.every < 1:
            raise OptionError("DetectorOptions", "every", "must be at least 1")
        if self.threads < 1:
            raise OptionError("DetectorOptions", "threads", "must be at least 1")


def _model_path(model: str) -> Path:
    path = DETECTOR_MODELS.get(model, Path(model))
    if not path.is_file():
        raise UserError(f"face-detector model {path} does not exist (use short, full or a .tflite path)")
    return path


def _tflite_runtime_installed() -> bool:
    import importlib.util

    return any(importlib.util.find_spec(m) is not None for m in ("ai_edge_litert", "tflite_runtime"))


def choose_impl(requested: str) -> str:
    """Pick mediapipe where it can run, LiteRT elsewhere; never import a library that would SIGILL."""
    if requested not in IMPLS:
        raise OptionError("DetectorOptions", "impl", f"unknown detector implementation {requested!r}: use {', '.join(IMPLS)}")
    if requested == "litert":
        return "litert"
    explicit = requested == "mediapipe"
    from engine.core.cpu import choose_detector, mediapipe_safe

    if requested == "auto":
        from engine.core.cpu import detector_override

        try:
            forced = detector_override()
            requested, _why = choose_detector()
        except ValueError as exc:
            raise UserError(str(exc)) from None
        if requested == "litert":
            return "litert"
        # Not forced: the LiteRT path wherever a TFLite runtime is installed. It runs the same
        # BlazeFace file with MediaPipe's own anchors, decoding and weighted NMS (boxes within IoU 0.9
        # of the Tasks FaceDetector's, tests/test_blazeface.py) without the Tasks graph around it.
        # Measured on a 2-face clip: end to end 2.3x `fer` vs 1.5x with the Tasks detector on an AVX2
        # core, detect p50 0.94 vs 1.63 ms on an AVX-512 VNNI one (benchmarks/results/avx512-vnni); and no mediapipe import at start-up.
        if forced == "auto" and _tflite_runtime_installed():
            return "litert"
    else:
        safe, reason = mediapipe_safe()
        if not safe:
            raise OptionError("DetectorOptions", "impl", f"mediapipe cannot run on this CPU ({reason}); use litert")
    import importlib.util

    if importlib.util.find_spec("mediapipe") is None:
        if explicit:
            raise OptionError("DetectorOptions", "impl", "mediapipe is not installed: pip install mediapipe, or use litert")
        return "litert"
    return "mediapipe"


def _import_mediapipe():
    """Import mediapipe without letting it import TensorFlow.

    mediapipe's metadata module tries `import tensorflow` only to open files through
    tf.io.gfile, and falls back to `open` without it. Where TensorFlow happens to be
    installed (a training machine) that costs ~2.5 s of start-up and a screen of logs, so
    the import is blocked for the duration unless TensorFlow is already loaded.
    """
    blocked = "tensorflow" not in sys.modules
    if blocked:
        sys.modules["tensorflow"] = None  # type: ignore[assignment]  (makes `import tensorflow` raise ImportError)
    try:
        import mediapipe as mp
        from mediapipe.tasks.python import BaseOptions, vision
    finally:
        if blocked and sys.modules.get("tensorflow", 0) is None:
            del sys.modules["tensorflow"]
    return mp, BaseOptions, vision


class MediaPipeFaceDetector:
    """Thin wrapper over the Tasks FaceDetector returning engine Detections in pixels (a `FaceDetector`)."""

    impl = "mediapipe"
    runtime = "mediapipe"

    def __init__(self, model_path: Path, min_score: float, video: bool):
        os.environ.setdefault("GLOG_minloglevel", "2")
        try:
            mp, BaseOptions, vision = _import_mediapipe()
        except (ImportError, OSError) as exc:  # e.g. libEGL missing on a Pi OS Lite
            raise OptionError("DetectorOptions", "impl", f"mediapipe cannot be loaded ({exc}); use litert") from None

        self._mp = mp
        mode = vision.RunningMode.VIDEO if video else vision.RunningMode.IMAGE
        opts = vision.FaceDetectorOptions(
            base_options=BaseOptions(model_asset_path=str(model_path)),
            running_mode=mode,
            min_detection_confidence=min_score,
        )
        try:
            self._det = vision.FaceDetector.create_from_options(opts)
        except (ValueError, RuntimeError) as exc:  # not a BlazeFace model, or a broken file
            raise UserError(f"{model_path.name} is not a face-detector model MediaPipe can load ({str(exc).splitlines()[0]})") from None
        self._video = video
        self._last_ts = -1

    def detect(self, frame_bgr: np.ndarray, timestamp_ms: int | None = None) -> list[Detection]:
        rgb = np.ascontiguousarray(frame_bgr[:, :, ::-1])
        image = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=rgb)
        if self._video:
            # VIDEO mode insists on strictly increasing timestamps; files can repeat one.
            ts = int(timestamp_ms if timestamp_ms is not None else self._last_ts + 1)
            ts = max(ts, self._last_ts + 1)
            self._last_ts = ts
            result = self._det.detect_for_video(image, ts)
        else:
            result = self._det.detect(image)
        h, w = frame_bgr.shape[:2]
        out = []
        for d in result.detections:
            bb = d.bounding_box
            if bb.width <= 0 or bb.height <= 0:
                continue  # degenerate box at the frame edge: nothing to crop
            kps = [(k.x * w, k.y * h) for k in d.keypoints]
            out.append(Detection((int(bb.origin_x), int(bb.origin_y), int(bb.width), int(bb.height)), float(d.categories[0].score), kps))
        return out

    def close(self) -> None:
        if self._det is not None:
            self._det.close()
            self._det = None


def merge_detections(dets: list[Detection], thresh: float = 0.3) -> list[Detection]:
    """Greedy NMS across tiles: the best-scoring box of each overlapping group survives."""
    return [dets[i] for i in nms([d.box for d in dets], [d.score for d in dets], thresh)]


def names_of(detector) -> tuple[str, str]:
    """A detector's (`impl`, `runtime`); a custom detector that lacks them reads as ("custom", "")."""
    return getattr(detector, "impl", "custom"), getattr(detector, "runtime", "")


class TiledDetector:
    """Runs a still-image detector on the whole frame plus 2x3 overlapping tiles.

    BlazeFace looks at a 128x128 (short) or 192x192 (full) version of its input, so a
    25 px face in a 480 px frame shrinks to ~7 px and vanishes; a tile a third of the
    frame wide keeps it at ~20 px. Costs ~7 detector calls per frame.
    """

    def __init__(self, base: FaceDetector, rows: int = 2, cols: int = 3, overlap: float = 0.5):
        self._base = base
        self.impl, self.runtime = names_of(base)
        self._rows, self._cols, self._overlap = rows, cols, overlap

    def _tiles(self, h: int, w: int) -> list[tuple[int, int, int, int]]:
        th = int(h / (self._rows - (self._rows - 1) * self._overlap))
        tw = int(w / (self._cols - (self._cols - 1) * self._overlap))
        ys = np.linspace(0, h - th, self._rows).astype(int) if self._rows > 1 else [0]
        xs = np.linspace(0, w - tw, self._cols).astype(int) if self._cols > 1 else [0]
        return [(x, y, tw, th) for y in ys for x in xs]

    def detect(self, frame_bgr: np.ndarray, timestamp_ms: int | None = None) -> list[Detection]:
        h, w = frame_bgr.shape[:2]
        dets = list(self._base.detect(frame_bgr))
        for x0, y0, tw, th in self._tiles(h, w):
            tile = np.ascontiguousarray(frame_bgr[y0 : y0 + th, x0 : x0 + tw])
            for d in self._base.detect(tile):
                x, y, bw, bh = d.box
                dets.append(Detection((x + x0, y + y0, bw, bh), d.score, [(px + x0, py + y0) for px, py in d.keypoints]))
        return merge_detections(dets)

    def close(self) -> None:
        self._base.close()


class EveryNDetector:
    """Runs a stream detector on every Nth frame and follows its boxes over the frames between;
    detects at once when a face is lost or something moved outside the faces.

    The detector is most of a frame's cost on CPUs without fast int8 (an AVX2 laptop, a Pi 4),
    while faces in a stream move little from one frame to the next and the classifier still sees
    every frame's pixels. Between detections each box follows its face (`engine.faces.follow`: template
    matching at ~160 px wide). Following alone would miss a face that walks in, so each frame is
    also shrunk to 64x36 gray and compared with the frame of the last detection: if more than
    `motion` of its pixels OUTSIDE the followed faces (each box grown by `margin` of its size, where
    a head moves while it talks or turns) changed by more than 6% of full scale, the detector runs
    now; a box too small or too flat to follow is not masked, so motion there re-detects too, and
    so does a change of frame size. On the 2-face clip at N=4: 17 of 56 frames detected (5 of them
    because a face turned and no longer matched; carried-unchanged boxes with the whole-frame
    motion test needed 21), boxes at IoU p10 0.94 with fresh detections.
    """

    SMALL = (64, 36)
    PIXEL_DELTA = 16  # of 255

    def __init__(self, base: FaceDetector, every: int, motion: float = 0.02, margin: float = 0.5,
                 follow: FollowOptions | None = None):
        self._base = base
        self.every = int(every)
        self.motion = float(motion)
        self.margin = float(margin)
        self.impl, self.runtime = names_of(base)
        self._follower = BoxFollower(follow)
        self._since = 0  # frames since the last real detection
        self._ref: np.ndarray | None = None
        self._shape: tuple[int, ...] = ()  # the frame size of the last detection
        self._last: list[Detection] = []
        self.detections_run = 0  # how many frames ran the wrapped detector (benchmarks report it)
        self.lost = 0  # detections run because a followed face was lost
        self.motion_runs = 0  # detections run because something moved outside the faces

    def moved(self, small: np.ndarray, frame_shape: tuple[int, ...], boxes: list) -> bool:
        """Did the picture change outside `boxes` (frame pixels, grown by `margin`) since the last detection?"""
        if self._ref is None:
            return True
        changed = cv2.absdiff(small, self._ref) > self.PIXEL_DELTA
        sy, sx = small.shape[0] / frame_shape[0], small.shape[1] / frame_shape[1]
        m = self.margin
        for x, y, w, h in boxes:
            x0, x1 = int((x - m * w) * sx), int(np.ceil((x + w + m * w) * sx))
            y0, y1 = int((y - m * h) * sy), int(np.ceil((y + h + m * h) * sy))
            changed[max(0, y0) : max(0, y1), max(0, x0) : max(0, x1)] = False
        return np.count_nonzero(changed) > self.motion * small.size

    def detect(self, frame_bgr: np.ndarray, timestamp_ms: int | None = None) -> list[Detection]:
        gray, scale = work_image(frame_bgr, self._follower.opts.work_width)
        small = cv2.resize(gray, self.SMALL, interpolation=cv2.INTER_AREA)
        self._since += 1
        if self._ref is not None and self._since < self.every and frame_bgr.shape == self._shape:
            followed = self._follower.follow(gray)
            if followed is None:
                self.lost += 1
            else:
                mask = self._follower.followed
                boxes = [d.box for d, m in zip(self._last, mask) if m] + [d.box for d, m in zip(followed, mask) if m]
                if not self.moved(small, frame_bgr.shape, boxes):
                    return followed
                self.motion_runs += 1
        self._last = self._base.detect(frame_bgr, timestamp_ms)
        self._follower.reset(gray, scale, self._last)
        self._ref, self._since, self._shape = small, 0, frame_bgr.shape
        self.detections_run += 1
        return list(self._last)

    def close(self) -> None:
        self._base.close()


def create_detector(opts: DetectorOptions) -> FaceDetector:
    """Options -> a `FaceDetector`: `detect(frame_bgr, timestamp_ms) -> list[Detection]`, `close()`, `impl`, `runtime`."""
    path = _model_path(opts.model)
    impl = choose_impl(opts.impl)
    video = opts.video and not opts.tiles  # tiles are independent stills
    if impl == "mediapipe":
        base: FaceDetector = MediaPipeFaceDetector(path, opts.min_score, video)
    else:
        base = LiteRTFaceDetector(path, min_score=opts.min_score, threads=opts.threads)
    if opts.tiles:
        base = TiledDetector(base)
    return for_stream(base, opts)


def for_stream(base: FaceDetector, opts: DetectorOptions) -> FaceDetector:
    """`base` wrapped in EveryNDetector when `opts` asks for it (a stream, every > 1), else `base`. The
    wrapper holds one stream's memory, so a caller that reuses one base detector across inputs (engine.batch)
    wraps it afresh per input with this."""
    if opts.every > 1 and opts.video:
        return EveryNDetector(base, opts.every)
    return base
