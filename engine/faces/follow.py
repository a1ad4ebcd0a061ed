"""Box following between detections: each face's box moves with the face until the detector runs again.

`EveryNDetector` runs the detector on some frames only. A box carried unchanged goes stale as soon as
the head moves (on the 2-face clip, carried boxes overlap fresh detections at IoU p10 0.94 after two
frames, 0.87 after three), so the classifier would crop beside the face. Here each detected face's
pixels, at a small working scale, become a template; on the following frames the template is found
again by normalised cross-correlation in a window around the box's last place, and the box (and its
keypoints) shift by what was found. On the shared clips that keeps IoU p10 at 0.90-0.95 with one
detection in three to four frames. A weak match (the face turned, left, or was covered) reports the
face lost, so the caller detects at once: following never keeps a box the detector would not.

Cost: one gray conversion and resize of the frame to 160 px wide (~0.06 ms at 480x270) and one small
`cv2.matchTemplate` per face (~0.02 ms): ~0.1 ms a frame with the motion check, a tenth of one BlazeFace
invoke on an AVX-512 machine, a fiftieth on an AVX2 one.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from engine.core.types import Detection


@dataclass
class FollowOptions:
    #: width of the gray working image; faces are matched at this scale
    work_width: int = 160
    #: the search window reaches this share of the template's size beyond the box on every side
    search: float = 0.5
    #: below this normalised cross-correlation the face counts as lost (the detector must run). High on
    #: purpose: a head that turns still matches at 0.6-0.8 while its box no longer fits, and its label
    #: then differs from a fresh detection's (female clip at N=4: 19/23 labels kept at 0.5, 23/23 at 0.9)
    min_match: float = 0.9
    #: templates smaller than this (px at the working scale) are not followed: the box is carried as is
    min_template: int = 6
    #: nor flatter ones (gray-level standard deviation): a blown-out or black patch matches everywhere with a
    #: "perfect" score of 1.0, so following it would walk the box to the search window's corner
    min_contrast: float = 2.0


def work_image(frame_bgr: np.ndarray, width: int) -> tuple[np.ndarray, float]:
    """The frame as gray at `width` px wide (never enlarged), and the factor from frame to working pixels."""
    h, w = frame_bgr.shape[:2]
    scale = min(1.0, width / w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    gray = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY)  # first: INTER_AREA on one channel costs a third (0.06 vs 0.15 ms at 480x270)
    return (cv2.resize(gray, size, interpolation=cv2.INTER_AREA) if scale < 1.0 else gray), scale


class BoxFollower:
    """Templates of the last detections; `follow` moves their boxes onto a later frame."""

    def __init__(self, opts: FollowOptions | None = None):
        self.opts = opts or FollowOptions()
        self._dets: list[Detection] = []
        self._tpls: list[tuple[np.ndarray, int, int] | None] = []  # template, its x, y in the working image
        self._scale = 1.0

    @property
    def followed(self) -> list[bool]:
        """Per remembered detection: is its box followed (True) or carried unchanged (too small or flat)?"""
        return [t is not None for t in self._tpls]

    def reset(self, gray: np.ndarray, scale: float, dets: list[Detection]) -> None:
        """Remember `dets` (found on the frame whose working image is `gray`) and their pixels."""
        self._dets, self._scale, self._tpls = list(dets), scale, []
        gh, gw = gray.shape
        for d in dets:
            x, y, w, h = (round(v * scale) for v in d.box)
            x0, y0, x1, y1 = max(0, x), max(0, y), min(gw, x + w), min(gh, y + h)
            tpl = gray[y0:y1, x0:x1]
            usable = min(x1 - x0, y1 - y0) >= self.opts.min_template and float(tpl.std()) >= self.opts.min_contrast
            self._tpls.append((tpl.copy(), x0, y0) if usable else None)

    def follow(self, gray: np.ndarray) -> list[Detection] | None:
        """The remembered detections moved onto this working image, or None when a face was lost."""
        out = []
        gh, gw = gray.shape
        for d, t in zip(self._dets, self._tpls):
            if t is None:
                out.append(d)
                continue
            tpl, tx, ty = t
            th, tw = tpl.shape
            r = int(np.ceil(self.opts.search * max(tw, th)))
            x0, y0, x1, y1 = max(0, tx - r), max(0, ty - r), min(gw, tx + tw + r), min(gh, ty + th + r)
            if x1 - x0 < tw or y1 - y0 < th:
                return None
            scores = cv2.matchTemplate(gray[y0:y1, x0:x1], tpl, cv2.TM_CCOEFF_NORMED)
            _, best, _, (bx, by) = cv2.minMaxLoc(scores)
            if not best >= self.opts.min_match:  # (not >=: a NaN score is a miss too)
                return None
            dx, dy = (x0 + bx - tx) / self._scale, (y0 + by - ty) / self._scale
            x, y, w, h = d.box
            out.append(Detection((round(x + dx), round(y + dy), w, h), d.score, [(px + dx, py + dy) for px, py in d.keypoints]))
        return out
