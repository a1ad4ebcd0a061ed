"""Sources and detectors written for older versions of the engine keep working: a Source subclass that
sets `live` (in the class or in `__init__`), a duck-typed source (not a Source subclass) through the
Pipeline, and a custom detector without `impl` / `runtime` inside the wrappers. Real parts: the shipped
model (the default, engine/zoo/emonet_f), the LiteRT BlazeFace detector, a real face photo."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from engine.api import EmotionRecognizer, EngineOptions
from engine.classify.classifier import ClassifierOptions
from engine.faces.detect import DetectorOptions, EveryNDetector, TiledDetector, create_detector, for_stream
from engine.pipeline import Pipeline, PipelineOptions
from engine.io.sources import ImageSource, Source, SourceOptions, VideoCaptureSource, mode_of
from engine.core.types import RunningMode
from fakes import astronaut, media


# --------------------------------------------------------------------------- sources that set `live`


def test_a_subclass_that_assigns_live_in_init_gets_that_mode():
    class Camera(Source):  # written before `mode`: sets `live` on the instance
        def __init__(self, live: bool):
            self.live = live

    assert Camera(True).live and Camera(True).mode is RunningMode.LIVE
    assert not Camera(False).live and Camera(False).mode is RunningMode.VIDEO
    cam = Camera(True)
    cam.live = False  # and back
    assert cam.mode is RunningMode.VIDEO and Camera.mode is RunningMode.VIDEO  # the class is untouched


def test_an_image_source_subclass_declaring_live_false_stays_image(tmp_path):
    class Photos(ImageSource):  # photos, as before `mode`: live = False only said "not a camera"
        live = False

    class Declared(Source):  # a class that declares its mode keeps it
        mode = RunningMode.IMAGE
        live = False

    class OldFile(Source):
        live = False

    class OldCamera(Source):
        live = True

    assert Photos.mode is RunningMode.IMAGE and Declared.mode is RunningMode.IMAGE
    assert OldFile.mode is RunningMode.VIDEO and OldCamera.mode is RunningMode.LIVE
    photos = Photos([tmp_path / "a.png"], SourceOptions(), name="a.png")
    assert photos.mode is RunningMode.IMAGE and not photos.live
    photos.live = False  # the setter on an image source: still photos
    assert photos.mode is RunningMode.IMAGE


def test_a_video_capture_source_takes_its_mode():
    """engine.batch reads an image on a web server through a capture: IMAGE mode, one decision."""
    src = VideoCaptureSource(media(), False, SourceOptions(), mode=RunningMode.IMAGE)
    try:
        assert src.mode is RunningMode.IMAGE and not src.live and src.read() is not None
    finally:
        src.close()
    src = VideoCaptureSource(media(), False, SourceOptions())
    assert src.mode is RunningMode.VIDEO
    src.close()


class DuckSource:
    """Not a Source subclass and no `mode`: only read / close / name / fps / live, as sources once were."""

    name = "duck"
    fps = 10.0

    def __init__(self, frames: list[np.ndarray], live: bool = False):
        self.live = live
        self._frames = list(frames)
        self.closed = False

    def read(self):
        return self._frames.pop(0) if self._frames else None

    def reopen(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True


def test_mode_of_a_duck_typed_source():
    assert mode_of(DuckSource([])) is RunningMode.VIDEO
    assert mode_of(DuckSource([], live=True)) is RunningMode.LIVE
    assert mode_of(ImageSource([], SourceOptions(), name="x")) is RunningMode.IMAGE


def _recognizer(video: bool = True) -> EmotionRecognizer:
    return EmotionRecognizer.create(EngineOptions(classifier=ClassifierOptions(), detector=DetectorOptions(impl="litert", video=video)))


def test_a_duck_typed_source_runs_through_the_pipeline():
    frames = [astronaut()] * 4
    src = DuckSource(frames)
    seen = []
    with _recognizer() as rec:
        pipe = Pipeline(rec, src, PipelineOptions(quiet=True, overlay=False, watchdog_s=20),
                        on_frame=lambda pkt, _img: seen.append(len(pkt.faces)))
        assert pipe.mode is RunningMode.VIDEO
        box: dict = {}
        th = threading.Thread(target=lambda: box.update(stats=pipe.run()), daemon=True)
        th.start()
        th.join(60)
        if th.is_alive():
            pipe.stop("test timeout")
            pytest.fail("the pipeline hangs on a duck-typed source")
    assert box["stats"].frames == 4 and seen == [1, 1, 1, 1] and src.closed


# --------------------------------------------------------------------------- custom detectors


class MinimalDetector:
    """Only `detect` and `close`: no `impl`, no `runtime`."""

    def __init__(self):
        self._base = create_detector(DetectorOptions(impl="litert", every=1))
        self.calls = 0
        self.closed = False

    def detect(self, frame_bgr, timestamp_ms=None):
        self.calls += 1
        return self._base.detect(frame_bgr, timestamp_ms)

    def close(self) -> None:
        self._base.close()
        self.closed = True


def test_a_minimal_custom_detector_works_inside_the_wrappers():
    frame = astronaut()
    tiled = TiledDetector(MinimalDetector())
    assert (tiled.impl, tiled.runtime) == ("custom", "")
    assert len(tiled.detect(frame)) == 1
    tiled.close()

    base = MinimalDetector()
    every = EveryNDetector(base, every=3)
    assert (every.impl, every.runtime) == ("custom", "")
    assert [len(every.detect(frame, t * 33)) for t in range(6)] == [1] * 6 and base.calls == 2
    wrapped = for_stream(MinimalDetector(), DetectorOptions(every=2, video=True))
    assert isinstance(wrapped, EveryNDetector) and wrapped.impl == "custom"
    wrapped.close()
    every.close()
    assert base.closed
