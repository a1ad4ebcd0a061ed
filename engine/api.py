"""The integrator's API, in the MediaPipe Tasks style: options -> create -> one call per frame.

    from engine.api import EmotionRecognizer, EngineOptions, RunningMode
    with EmotionRecognizer.create(EngineOptions(running_mode=RunningMode.IMAGE)) as rec:
        record = rec.process(photo_bgr)
        for face in record.faces:
            print(face.id, face.emotion, face.confidence)

`EngineOptions` carries the running mode and `create()` applies every rule that depends on it (what
`python -m engine.run` does for a photo, a clip or a camera is exactly this), so a program gets the same
answers as the command line for the same options. No threads, no window: the threaded pipeline
(engine.pipeline) calls the very same stage methods (`detect`, `classify`, `track`) from its threads.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np

from engine.classify.classifier import ClassifierOptions, create_classifier
from engine.core.errors import OptionError
from engine.core.logs import quiet
from engine.core.types import Classifier, Detection, Face, FaceDetector, FrameRecord, RunningMode
from engine.faces.crop import CropOptions, average_views, crop_faces
from engine.faces.detect import DetectorOptions, create_detector
from engine.faces.track import EmotionChange, FaceTracker, TrackerOptions

#: Framings averaged per face on photos (CropOptions.views in IMAGE mode): a photo has no next frame to
#: smooth over, and 5 crops of one face cost under a millisecond with the fast model.
STILL_VIEWS = 5

__all__ = ["EmotionRecognizer", "EngineOptions", "RunningMode", "Face", "FrameRecord", "STILL_VIEWS"]


@dataclass
class EngineOptions:
    """Everything the engine needs, the running mode first. The mode's rules live in `resolved()`:

    IMAGE (unrelated photos): the detector in IMAGE mode, STILL_VIEWS framings per face unless `crop.views`
    says otherwise, no smoothing, the tracker forgets every face between photos (ids start at #1 each time).
    VIDEO (a file) and LIVE (a camera, a stream): the detector tracks timestamps and may skip frames
    (`detector.every`), one framing unless `crop.views` says otherwise, smoothing and hysteresis as set.
    """

    running_mode: RunningMode = RunningMode.VIDEO
    classifier: ClassifierOptions = field(default_factory=ClassifierOptions)
    detector: DetectorOptions = field(default_factory=DetectorOptions)
    crop: CropOptions = field(default_factory=CropOptions)
    tracker: TrackerOptions = field(default_factory=TrackerOptions)
    #: Called as on_emotion_change(face_id, old_emotion_or_None, new_emotion, face) when a tracked face's
    #: *stable* emotion changes (and when a face first appears). Not part of what a batch compares.
    on_emotion_change: EmotionChange | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.running_mode, RunningMode):
            raise OptionError("EngineOptions", "running_mode", f"must be a RunningMode (IMAGE, VIDEO or LIVE), not {self.running_mode!r}")

    def resolved(self) -> "EngineOptions":
        """These options with the running mode's rules applied (the docstring above): what `create()` runs."""
        stills = self.running_mode is RunningMode.IMAGE
        return replace(
            self,
            detector=replace(self.detector, video=self.detector.video and not stills),  # photos: IMAGE detector mode
            crop=replace(self.crop, views=self.crop.views or (STILL_VIEWS if stills else 1)),
            tracker=replace(self.tracker, ema=1.0) if stills else self.tracker,
        )

    def for_mode(self, mode: RunningMode) -> "EngineOptions":
        """The same options for another running mode (a batch's photos and videos share one set of flags)."""
        return replace(self, running_mode=mode)


def ms_since(t0: int) -> float:
    """Milliseconds from `t0` (a time.perf_counter_ns() reading) to now: every stage time is one of these."""
    return (time.perf_counter_ns() - t0) / 1e6


class EmotionRecognizer:
    def __init__(self, options: EngineOptions, detector: FaceDetector, classifier: Classifier):
        self.options = options
        self.detector = detector
        self.classifier = classifier
        self.labels = classifier.labels
        self.tracker = FaceTracker(self.labels, options.tracker, options.on_emotion_change)

    @classmethod
    def create(cls, options: EngineOptions | None = None) -> "EmotionRecognizer":
        """Load the classifier, then the detector, for `options` with its running mode's rules applied."""
        options = (options or EngineOptions()).resolved()
        with quiet():  # LiteRT/MediaPipe print INFO lines from C++ while loading
            classifier = create_classifier(options.classifier)
            try:
                detector = create_detector(options.detector)
            except BaseException:
                classifier.close()
                raise
        return cls(options, detector, classifier)

    # --- stages (the pipeline threads call these) ---
    def detect(self, frame: np.ndarray, timestamp_ms: int | None = None) -> list[Detection]:
        """Faces of this frame. With `detector.every = N` on a stream the detector is wrapped in
        `engine.faces.detect.EveryNDetector` (every Nth frame, boxes following the faces between; at once when a
        face is lost or something moved outside them)."""
        return self.detector.detect(frame, timestamp_ms)

    def classify(self, frame: np.ndarray, dets: list[Detection]) -> np.ndarray:
        """Crop every face (each in `crop.views` framings) and classify them all in ONE batched call."""
        return self.classify_crops(crop_faces(frame, dets, self.options.crop))

    def classify_crops(self, batch: np.ndarray) -> np.ndarray:
        """`crop_faces`'s batch -> one probability row per face (its framings averaged)."""
        return average_views(self.classifier.predict(batch), self.options.crop.views)

    def track(self, dets: list[Detection], probs: np.ndarray) -> list[Face]:
        """Faces with ids and smoothed, stable emotions; in IMAGE mode each photo starts afresh (no identity
        across unrelated photos)."""
        if self.options.running_mode is RunningMode.IMAGE:
            self.tracker.reset()
        return self.tracker.update(dets, probs)

    # --- one call per frame ---
    def process(self, frame: np.ndarray, timestamp_ms: int | None = None, index: int = 0) -> FrameRecord:
        """One frame through detect -> classify -> track: its FrameRecord (faces, detections, probs, stage ms).
        `timestamp_ms`: the frame's time on a stream (VIDEO, LIVE); photos need none."""
        t0 = time.perf_counter_ns()
        dets = self.detect(frame, timestamp_ms if self.options.running_mode.stream else None)
        t1 = time.perf_counter_ns()
        probs = self.classify(frame, dets)
        t2 = time.perf_counter_ns()
        faces = self.track(dets, probs)
        return FrameRecord(index=index, t=(timestamp_ms or 0) / 1000, image=frame, t_capture_ns=t0, detections=dets, probs=probs,
                           faces=faces, ms={"detect": (t1 - t0) / 1e6, "classify": (t2 - t1) / 1e6, "track": ms_since(t2)})

    def close(self) -> None:
        with quiet():
            self.detector.close()
            self.classifier.close()

    def __enter__(self) -> "EmotionRecognizer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
