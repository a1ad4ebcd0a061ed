"""Box overlap and non-max suppression: the one IoU the detectors, the tile merge and the tracker use.

Boxes come in two layouts: `xyxy` (x0, y0, x1, y1; BlazeFace decodes to these, relative to its
input tensor) and `xywh` (x, y, w, h in pixels; `Detection.box` and `Face.box`). Everything is
computed as (N, M) matrices with numpy; a pair of empty or non-overlapping boxes has IoU 0.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def xywh_to_xyxy(boxes) -> np.ndarray:
    """(N, 4) x, y, w, h -> (N, 4) x0, y0, x1, y1 (float64)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)


def box_iou(a, b) -> np.ndarray:
    """IoU of every box of `a` (N, 4) with every box of `b` (M, 4), both xyxy: an (N, M) matrix."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two xywh boxes (`Detection.box`)."""
    return float(box_iou(xywh_to_xyxy(a), xywh_to_xyxy(b))[0, 0])


def nms(boxes_xywh, scores, thresh: float) -> list[int]:
    """Greedy non-max suppression: indices of the boxes kept, best score first. A box is kept when its
    IoU with every box kept before it is below `thresh` (ties in score keep their input order)."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0:
        return []
    order = np.argsort(-scores, kind="stable")
    sims = box_iou(xywh_to_xyxy(boxes_xywh), xywh_to_xyxy(boxes_xywh))
    kept: list[int] = []
    for i in order:
        if not kept or sims[i, kept].max() < thresh:
            kept.append(int(i))
    return kept


def weighted_nms(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, iou_threshold: float = 0.3):
    """MediaPipe's WEIGHTED non-max suppression over xyxy boxes (BlazeFace's, engine.faces.blazeface).

    Take the best remaining detection, gather every remaining one (itself included) whose
    IoU with it is > `iou_threshold`, replace its box and keypoints with the score-weighted mean of
    that group, keep its own score, drop the group; repeat. Returns (boxes, keypoints, scores).
    0.3 is the Tasks FaceDetectorOptions.min_suppression_threshold default.
    """
    order = np.argsort(-scores, kind="stable")
    out_b, out_k, out_s = [], [], []
    while order.size:
        top = order[0]
        sims = box_iou(boxes[top], boxes[order])[0]
        group = order[sims > iou_threshold]
        rest = order[sims <= iou_threshold]
        if group.size:
            w = scores[group][:, None]
            total = float(w.sum())
            box = (boxes[group] * w).sum(axis=0) / total
            kps = (keypoints[group] * w[:, :, None]).sum(axis=0) / total
        else:  # only for a degenerate (zero-area) top box
            box, kps = boxes[top], keypoints[top]
        out_b.append(box)
        out_k.append(kps)
        out_s.append(float(scores[top]))
        if rest.size == order.size:  # nothing removed (as MediaPipe: stop)
            break
        order = rest
    return out_b, out_k, out_s
