"""Plain data passed between pipeline stages, the running mode, and the interfaces of the two models.
No heavy imports: the Pi path loads this first."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np

class RunningMode(Enum):
    """How the engine runs over a source (MediaPipe Tasks' RunningMode), carried by every source as `source.mode`.

    IMAGE: unrelated photos (an image, a folder): the detector's IMAGE mode, every face seen in several
    framings, no smoothing, the tracker reset per photo. VIDEO: a file, every frame in order on the file's
    own timeline. LIVE: a camera or a stream: the newest frame wins, wall-clock timeline, reconnects when lost.
    VIDEO and LIVE are both streams: the detector tracks timestamps and may skip frames (detect every N).
    """

    IMAGE = "image"
    VIDEO = "video"
    LIVE = "live"

    @property
    def stream(self) -> bool:
        """VIDEO or LIVE: consecutive frames of one scene (not unrelated photos)."""
        return self is not RunningMode.IMAGE


#: MediaPipe BlazeFace keypoint order (as the Tasks FaceDetector returns them).
KEYPOINTS = ("right_eye", "left_eye", "nose_tip", "mouth", "right_ear", "left_ear")


@dataclass
class Detection:
    """One face found by a detector, in pixel coordinates of the frame it was found in.

    `keypoints` follow KEYPOINTS (right_eye is the subject's right eye, i.e. on the
    image's left); they are used to rotate the crop upright.
    """

    box: tuple[int, int, int, int]  # x, y, w, h
    score: float
    keypoints: list[tuple[float, float]] = field(default_factory=list)


@dataclass
class Face:
    """One face of one frame, as the engine reports it."""

    id: int
    box: tuple[int, int, int, int]
    score: float
    emotion: str
    confidence: float
    probs: dict[str, float]
    raw: dict[str, float] = field(default_factory=dict)  # this frame's unsmoothed output

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "box": list(self.box),
            "score": round(self.score, 4),
            "emotion": self.emotion,
            "confidence": round(self.confidence, 4),
            "probs": {k: round(v, 4) for k, v in self.probs.items()},
        }



@dataclass
class FrameRecord:
    """One frame's whole story, from capture to the sinks: the one shape every stage fills in and every
    output reads (as supervision passes one `Detections`). The capture stage sets index, t and image; the
    detector `detections`; the classifier `probs` (one row per detection); the tracker `faces`; each stage
    its milliseconds in `ms`. `to_event()` is its serialisation, in one place: the JSONL line, the live
    view's event and the batch's per-frame record are all this dict.
    """

    index: int
    t: float  # seconds on the source's timeline
    image: np.ndarray | None = None
    t_capture_ns: int = 0  # when the capture of this frame began (time.perf_counter_ns)
    ms: dict[str, float] = field(default_factory=dict)
    detections: list[Detection] = field(default_factory=list)
    probs: np.ndarray | None = None
    faces: list[Face] = field(default_factory=list)
    name: str | None = None  # the photo's file name (folders of photos)

    def to_event(self) -> dict:
        """The JSONL record of this frame (the schema README documents)."""
        event = {"frame": self.index, "t": round(self.t, 4), "faces": [f.to_json() for f in self.faces],
                 "ms": {k: round(v, 3) for k, v in self.ms.items()}}
        if self.name:
            event["image"] = self.name
        return event


@runtime_checkable
class FaceDetector(Protocol):
    """A face detector (`engine.faces.detect.create_detector` builds one; wrappers such as TiledDetector and
    EveryNDetector are detectors too, with their base's `impl` and `runtime`)."""

    impl: str  # which implementation runs the BlazeFace model: "litert" or "mediapipe"
    runtime: str  # the inference runtime under it: "ai_edge_litert", "tflite_runtime", "tensorflow.lite" or "mediapipe"

    def detect(self, frame_bgr: np.ndarray, timestamp_ms: int | None = None) -> list[Detection]:
        """Faces of one BGR frame in its pixels, best first. `timestamp_ms`: the frame's time on a stream."""
        ...

    def close(self) -> None:
        ...


@runtime_checkable
class Classifier(Protocol):
    """An emotion classifier (`engine.classify.classifier.create_classifier` opens one; its backends subclass the
    base class `engine.classify.classifier.Classifier`, which implements this)."""

    backend: str  # "tflite", "onnx" or "keras": which model file it runs
    runtime: str  # the runtime that runs it: "ai_edge_litert", "tflite_runtime", "tensorflow.lite", "onnxruntime", "tensorflow"
    path: Path  # the model file
    labels: list[str]  # the output columns, from labels.json
    tta: bool  # flip TTA: each face and its mirror image averaged

    def predict(self, faces: np.ndarray) -> np.ndarray:
        """(N, 48, 48, 1) raw pixels 0..255 -> (N, len(labels)) probabilities."""
        ...

    def close(self) -> None:
        ...
