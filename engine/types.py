"""Plain data passed between pipeline stages. No heavy imports: the Pi path loads this first."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

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
