"""Face crops that look like FER2013 faces: square, upright, with a margin, 48x48 gray.

FER2013 faces were registered so the eyes are level and the face fills most of the
square, forehead to chin. BlazeFace's box runs roughly from the brows to the chin, so the
crop is enlarged by `margin` and nudged by `shift_y` (fractions of the box side), then the
frame is rotated about the face centre to undo head roll beyond what FER2013 faces have. The warp writes
straight into a small square (one cv2 call, no full-frame rotation); `to_face48`, the
project's one preprocessing function, then makes the 48x48 gray face.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import cv2
import numpy as np

from engine.core.contract import FACE_SIZE
from engine.core.errors import OptionError
from engine.core.preprocess import to_face48
from engine.core.types import Detection


@dataclass
class CropOptions:
    #: Extra side length, as a fraction of the detector's box side. 0.10 since 2026-11-30 (0.25 before),
    #: chosen on the hard crop benchmark (benchmarks/crop_agreement.py --scenes hard, all 3,589 faces,
    #: one view, int8; engine = direct label / engine accuracy, margins 0.05-0.25): emonet_s 83.7% / 67.0%
    #: at 0.10 against 82.3 / 66.4% at 0.25, emonet_f 77.0 / 63.1% against 76.8 / 60.9%; with a ring
    #: of real context around each face (`--context blur`, as heads with hair and chin have) 79.4 / 64.0%
    #: against 76.9 / 61.9% and 71.6 / 59.8% against 68.7 / 57.0%. The best mean of both models and
    #: both settings; the detector's box is ~1.2x the FER square on tight faces, ~1.0x with context.
    margin: float = 0.10
    shift_y: float = -0.05  # move the crop centre down (+) or up (-), fraction of the side
    align: bool = True  # rotate strongly tilted heads back towards upright
    #: Head roll kept as is. FER2013's own faces are tilted (median 7, p90 23 degrees) and the
    #: model learnt them that way, so only the roll beyond this is undone. Chosen on
    #: benchmarks/crop_agreement.py (emonet_n int8, 1000 faces, margin 0.25 (then the default), shift -0.05): upright
    #: faces agree 79.3 / 80.7 / 80.9% keeping 0 / 8 / 15 degrees; faces turned by up to 25 degrees
    #: (`--roll 25`) 79.4 / 80.0 / 79.7% (no alignment: 79.0%); emonet_s upright 80.9% at 8, 80.0% at 15.
    #: 8 and 15 are within the noise of 1000 faces (about +-1.5 points); 8 undoes more of a tilted head.
    keep_roll_deg: float = 8.0
    max_tilt_deg: float = 75.0  # ignore eye angles beyond this (a bad keypoint, not a head roll)
    #: Crops per face, averaged by the classifier (all in the same batched call): 1, or 5 = the
    #: crop plus its neighbours at margin and shift_y +-VIEW_STEP. Why: FER2013's framing varies by
    #: about +-20% around the detector's box, so no single crop fits every face; averaging nearby
    #: framings makes a label hinge less on where the box fell. Measured (crop_agreement, default
    #: crop, all 3,589 validation faces): emonet_n 80.8 -> 82.2% agreement (84.3% with --tta too),
    #: emonet_s 83.5 -> 85.3% (86.6%). A 3x3 grid of 9 framings was no better than these 5.
    #: None: the running mode decides (engine.api.EngineOptions: STILL_VIEWS for photos, 1 on streams); 1 elsewhere.
    views: int | None = None

    def __post_init__(self) -> None:
        if self.views is not None and self.views not in VIEW_OFFSETS:
            raise OptionError("CropOptions", "views", f"must be one of {', '.join(map(str, sorted(VIEW_OFFSETS)))}, not {self.views}")
        if self.margin < 0:
            raise OptionError("CropOptions", "margin", f"must be 0 or more, not {self.margin:g}")


#: Step between the framings that CropOptions.views averages (fraction of the box side).
VIEW_STEP = 0.05
VIEW_OFFSETS = {
    1: ((0.0, 0.0),),
    5: ((0.0, 0.0), (-VIEW_STEP, 0.0), (VIEW_STEP, 0.0), (0.0, -VIEW_STEP), (0.0, VIEW_STEP)),
}  # the set framing first


def eye_angle(det: Detection) -> float:
    """Degrees the eye line is tilted (image coordinates); 0 when keypoints are missing."""
    if len(det.keypoints) < 2:
        return 0.0
    (rx, ry), (lx, ly) = det.keypoints[0], det.keypoints[1]
    return math.degrees(math.atan2(ly - ry, lx - rx))


def crop_face(frame: np.ndarray, det: Detection, opts: CropOptions = CropOptions()) -> np.ndarray:
    """Frame (BGR or gray) + detection -> 48x48 uint8 gray face."""
    x, y, w, h = det.box
    side = max(w, h, 1) * (1.0 + opts.margin)
    cx = x + w / 2.0
    cy = y + h / 2.0 + opts.shift_y * side
    angle = eye_angle(det) if opts.align else 0.0
    if abs(angle) > opts.max_tilt_deg:
        angle = 0.0
    angle -= max(-opts.keep_roll_deg, min(opts.keep_roll_deg, angle))
    # Sample at >= 48 px but no more than 2x: INTER_AREA in to_face48 then averages the rest.
    out = int(min(max(side, FACE_SIZE), 2 * FACE_SIZE))
    scale = out / side
    m = cv2.getRotationMatrix2D((cx, cy), angle, scale)
    m[0, 2] += out / 2.0 - cx
    m[1, 2] += out / 2.0 - cy
    patch = cv2.warpAffine(frame, m, (out, out), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return to_face48(patch)


def crop_faces(frame: np.ndarray, dets: list[Detection], opts: CropOptions = CropOptions()) -> np.ndarray:
    """All faces of a frame as one (N * views, 48, 48, 1) uint8 batch, ready for ONE classifier
    call: face 0's views first, then face 1's (`average_views` folds the probabilities back)."""
    if not dets:
        return np.zeros((0, FACE_SIZE, FACE_SIZE, 1), np.uint8)
    # Each face is cut from the colour frame and only its <= 96 px patch turned gray (to_face48): the
    # cost no longer grows with the frame (a whole 1280x720 frame's gray conversion took 3x the crops
    # of two faces on an avx512-vnni core); both steps are linear, so faces differ by rounding (<= 1 level).
    # never inside the detector's box: at margin 0 the smaller framing is the box itself again
    framings = [replace(opts, margin=max(0.0, opts.margin + dm), shift_y=opts.shift_y + ds) for dm, ds in VIEW_OFFSETS[opts.views or 1]]
    return np.stack([crop_face(frame, d, o) for d in dets for o in framings])[..., None]


def average_views(probs: np.ndarray, views: int | None) -> np.ndarray:
    """(N * views, C) probabilities of `crop_faces`'s batch -> (N, C), one row per face."""
    if (views or 1) == 1:
        return probs
    return probs.reshape(-1, views, probs.shape[-1]).mean(axis=1)  # (0, C) stays (0, C): a frame without faces
