"""engine.core.geometry: the one IoU and NMS that BlazeFace's weighted NMS, the tile merge and the tracker share."""
from __future__ import annotations

import numpy as np

from engine.faces.detect import merge_detections
from engine.core.geometry import box_iou, iou, nms, xywh_to_xyxy
from engine.core.types import Detection


def test_iou_of_pixel_boxes_is_overlap_over_union():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (5, 0, 10, 10)) == 50 / 150
    assert iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0
    assert iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0  # empty boxes: no overlap, no division by zero


def test_the_matrix_agrees_with_every_pair():
    rng = np.random.default_rng(0)
    a = np.c_[rng.integers(-20, 200, (7, 2)), rng.integers(0, 80, (7, 2))]
    b = np.c_[rng.integers(-20, 200, (5, 2)), rng.integers(0, 80, (5, 2))]
    m = box_iou(xywh_to_xyxy(a), xywh_to_xyxy(b))
    assert m.shape == (7, 5)
    assert all(m[i, j] == iou(a[i], b[j]) for i in range(7) for j in range(5))


def test_greedy_nms_keeps_the_best_of_each_overlapping_group():
    boxes = [(0, 0, 10, 10), (1, 0, 10, 10), (50, 50, 10, 10), (2, 1, 10, 10)]
    scores = [0.6, 0.9, 0.5, 0.9]
    assert nms(boxes, scores, 0.3) == [1, 2]  # ties keep input order: box 1 before box 3
    assert nms([], [], 0.3) == []
    dets = [Detection(b, s) for b, s in zip(boxes, scores)]
    assert merge_detections(dets) == [dets[1], dets[2]]
