"""The integrator's API, in the MediaPipe Tasks style: options -> create -> one call per frame.

    from engine.api import EmotionRecognizer, EngineOptions
    with EmotionRecognizer.create(EngineOptions()) as rec:
        result = rec.process(frame_bgr, timestamp_ms)
        for face in result.faces:
            print(face.id, face.emotion, face.confidence)

No threads, no window. The threaded pipeline (engine.pipeline) calls the very same stage
methods (`detect`, `classify`, `track`) from its threads, so what an integrator gets and
what `python -m engine.run` and the benchmarks measure is one code path.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from engine.classify.classifier import ClassifierOptions, create_classifier
from engine.faces.crop import CropOptions, average_views, crop_faces
from engine.faces.detect import DetectorOptions, create_detector
from engine.core.logs import quiet
from engine.faces.track import EmotionChange, Face, FaceTracker, TrackerOptions
from engine.core.types import Classifier, Detection, FaceDetector


@dataclass
class EngineOptions:
    classifier: ClassifierOptions = field(default_factory=ClassifierOptions)
    detector: DetectorOptions = field(default_factory=DetectorOptions)
    crop: CropOptions = field(default_factory=CropOptions)
    tracker: TrackerOptions = field(default_factory=TrackerOptions)
    #: Called as on_emotion_change(face_id, old_emotion_or_None, new_emotion, face) when a
    #: tracked face's *stable* emotion changes (and when a face first appears).
    on_emotion_change: EmotionChange | None = None


@dataclass
class FrameResult:
    faces: list[Face]
    ms: dict[str, float]  # detect, classify, track stage times for this frame


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
        options = options or EngineOptions()
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
        return self.tracker.update(dets, probs)

    # --- one call per frame ---
    def process(self, frame: np.ndarray, timestamp_ms: int | None = None) -> FrameResult:
        t0 = time.perf_counter_ns()
        dets = self.detect(frame, timestamp_ms)
        t1 = time.perf_counter_ns()
        probs = self.classify(frame, dets)
        t2 = time.perf_counter_ns()
        faces = self.track(dets, probs)
        return FrameResult(faces, {"detect": (t1 - t0) / 1e6, "classify": (t2 - t1) / 1e6, "track": ms_since(t2)})

    def close(self) -> None:
        with quiet():
            self.detector.close()
            self.classifier.close()

    def __enter__(self) -> "EmotionRecognizer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
