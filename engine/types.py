"""Plain data passed between pipeline stages. No heavy imports: the Pi path loads this first."""
from __future__ import annotations

from dataclasses import dataclass, field

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
