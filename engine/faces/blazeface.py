"""BlazeFace face detection through LiteRT, without mediapipe.

Runs the same model files the MediaPipe Tasks FaceDetector runs
(`engine/detectors/face_detection_short_range.tflite`, 128x128 input, and
`face_detection_full_range_sparse.tflite`, 192x192 input) and reproduces MediaPipe's CPU
graph around them:

1. ImageToTensor: letterbox (keep aspect ratio, black borders, bilinear), RGB, values in [-1, 1];
2. SsdAnchors: fixed-size anchors on the model's feature maps (see `ANCHOR_CONFIGS`);
3. TensorsToDetections: decode boxes + 6 keypoints relative to the anchors, sigmoid of the
   score clipped to +-100, keep scores >= min_score;
4. NonMaxSuppression: MediaPipe's WEIGHTED algorithm, IoU > 0.3 (`engine.core.geometry.weighted_nms`);
5. DetectionProjection: undo the letterbox, back to frame pixels.

Why it exists: mediapipe 1.x aarch64 wheels die with SIGILL on a Raspberry Pi 4 (Cortex-A72,
no LSE atomics; see engine/core/cpu.py). This detector needs only numpy, OpenCV and a TFLite
runtime (ai-edge-litert), so it runs there. Its boxes match the Tasks FaceDetector's to
IoU > 0.9 on real faces (tests/test_blazeface.py). Like MediaPipe, boxes are not clipped to
the frame: a face at the border can give a negative x or y.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from engine.core.errors import UserError
from engine.core.geometry import weighted_nms
from engine.core.litert import open_interpreter
from engine.core.types import Detection

#: The shipped BlazeFace files (engine/detectors/, with provenance): package data, never downloaded.
#: Both detector implementations (engine.faces.detect's MediaPipe wrapper and this one) run them.
DETECTOR_DIR = Path(__file__).resolve().parent.parent / "detectors"  # package data: engine/detectors
DETECTOR_MODELS = {
    "short": DETECTOR_DIR / "face_detection_short_range.tflite",
    "full": DETECTOR_DIR / "face_detection_full_range_sparse.tflite",
}
SHORT_RANGE = DETECTOR_MODELS["short"]
FULL_RANGE = DETECTOR_MODELS["full"]

NUM_KEYPOINTS = 6
SCORE_CLIP = 100.0  # TensorsToDetections score_clipping_thresh
NMS_IOU = 0.3  # Tasks FaceDetectorOptions.min_suppression_threshold default


@dataclass(frozen=True)
class AnchorConfig:
    """The MediaPipe SsdAnchorsCalculator options a BlazeFace model was trained with."""

    input_size: int
    strides: tuple[int, ...]
    interpolated_scale_aspect_ratio: float  # > 0 adds a second anchor per location
    aspect_ratios: tuple[float, ...] = (1.0,)
    anchor_offset: float = 0.5
    # min_scale 0.1484375 / max_scale 0.75 are irrelevant: fixed_anchor_size is true (w = h = 1)


#: By model input size. Short range: face_detection_short_range_common.pbtxt and the Tasks
#: FaceDetectorGraph (num_layers 4, strides 8/16/16/16, interpolated ratio 1.0 -> 896 anchors).
#: Full range: face_detection_full_range.pbtxt (num_layers 1, stride 4, interpolated ratio 0.0
#: -> 48x48 = 2304 anchors).
ANCHOR_CONFIGS = {
    128: AnchorConfig(128, (8, 16, 16, 16), 1.0),
    192: AnchorConfig(192, (4,), 0.0),
}


def ssd_anchors(cfg: AnchorConfig) -> np.ndarray:
    """(N, 2) anchor centres (x, y) in [0, 1], in MediaPipe's order.

    Consecutive layers with the same stride share one feature map (their anchors are
    interleaved per location), exactly as SsdAnchorsCalculator does it.
    """
    centres: list[tuple[float, float]] = []
    n = len(cfg.strides)
    layer = 0
    while layer < n:
        per_location = 0
        last = layer
        while last < n and cfg.strides[last] == cfg.strides[layer]:
            per_location += len(cfg.aspect_ratios)
            if cfg.interpolated_scale_aspect_ratio > 0.0:
                per_location += 1
            last += 1
        stride = cfg.strides[layer]
        fm = int(np.ceil(cfg.input_size / stride))
        for y in range(fm):
            cy = (y + cfg.anchor_offset) / fm
            for x in range(fm):
                cx = (x + cfg.anchor_offset) / fm
                centres.extend([(cx, cy)] * per_location)
        layer = last
    return np.asarray(centres, dtype=np.float32)


class LiteRTFaceDetector:
    """BlazeFace via LiteRT; a drop-in for the MediaPipe Tasks FaceDetector on the same model.

    `model_path`: a BlazeFace .tflite (128x128 short range or 192x192 full range); the
    anchor layout is chosen from the model's input size. `min_score`: like MediaPipe's
    min_detection_confidence. `threads`: interpreter CPU threads. A `engine.core.types.FaceDetector`:
    `impl` "litert", `runtime` the TFLite runtime that loaded it.
    """

    impl = "litert"

    def __init__(self, model_path: str | os.PathLike = SHORT_RANGE, min_score: float = 0.5,
                 threads: int = 1, iou_threshold: float = NMS_IOU):
        self.model_path = Path(model_path)
        self.min_score = float(min_score)
        self.iou_threshold = float(iou_threshold)
        self._interp, self.runtime = open_interpreter(self.model_path, threads)
        inp = self._interp.get_input_details()[0]
        shape = [int(v) for v in inp["shape"]]
        if len(shape) != 4 or shape[1] != shape[2] or shape[1] not in ANCHOR_CONFIGS or shape[3] != 3:
            raise UserError(f"{self.model_path.name} is not a BlazeFace face detector (input {shape}); "
                            "use face_detection_short_range.tflite or face_detection_full_range_sparse.tflite")
        self.size = shape[1]
        self._input_index = inp["index"]
        self._input_dtype = inp["dtype"]
        self.anchors = ssd_anchors(ANCHOR_CONFIGS[self.size])
        n = len(self.anchors)
        self._reg_index = self._score_index = None
        for out in self._interp.get_output_details():
            oshape = [int(v) for v in out["shape"]]
            if oshape[-2:] == [n, 4 + 2 * NUM_KEYPOINTS]:
                self._reg_index = out["index"]
            elif oshape[-2:] == [n, 1]:
                self._score_index = out["index"]
        if self._reg_index is None or self._score_index is None:
            raise UserError(f"{self.model_path.name}: outputs do not match {n} BlazeFace anchors")
        # Thresholding on the raw logit is equivalent to sigmoid(clip(x)) >= min_score and cheaper.
        p = min(max(self.min_score, 1e-7), 1 - 1e-7)
        self._logit_min = float(np.log(p / (1 - p)))

    # -- preprocessing -------------------------------------------------------------------
    def _letterbox(self, frame_bgr: np.ndarray) -> tuple[np.ndarray, float, float, float]:
        """(1, S, S, 3) float32 RGB in [-1, 1], scale, x offset, y offset (tensor pixels)."""
        if frame_bgr.ndim == 2:
            frame_bgr = cv2.cvtColor(frame_bgr, cv2.COLOR_GRAY2BGR)
        elif frame_bgr.shape[2] == 4:
            frame_bgr = cv2.cvtColor(frame_bgr, cv2.COLOR_BGRA2BGR)
        h, w = frame_bgr.shape[:2]
        s = self.size / max(w, h)
        tx = (self.size - w * s) / 2.0
        ty = (self.size - h * s) / 2.0
        m = np.array([[s, 0.0, tx], [0.0, s, ty]], dtype=np.float64)
        # Same as MediaPipe's ImageToTensor (OpenCV backend): a bilinear warp, zero border.
        small = cv2.warpAffine(frame_bgr, m, (self.size, self.size), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
        rgb = cv2.cvtColor(small, cv2.COLOR_BGR2RGB)
        tensor = rgb.astype(np.float32) * (2.0 / 255.0) - 1.0
        return tensor[None], s, tx, ty

    # -- the detector --------------------------------------------------------------------
    def detect(self, frame_bgr: np.ndarray, timestamp_ms: int | None = None) -> list[Detection]:
        """Faces in a BGR frame, best first, in frame pixels. `timestamp_ms` is accepted
        for parity with the MediaPipe VIDEO mode and ignored (this detector keeps no state)."""
        if frame_bgr is None or frame_bgr.size == 0:
            return []
        h, w = frame_bgr.shape[:2]
        tensor, s, tx, ty = self._letterbox(frame_bgr)
        self._interp.set_tensor(self._input_index, tensor.astype(self._input_dtype, copy=False))
        self._interp.invoke()
        raw = self._interp.get_tensor(self._reg_index)[0]
        logits = self._interp.get_tensor(self._score_index)[0, :, 0]
        keep = np.nonzero(np.clip(logits, -SCORE_CLIP, SCORE_CLIP) >= self._logit_min)[0]
        if keep.size == 0:
            return []
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits[keep], -SCORE_CLIP, SCORE_CLIP)))
        raw = raw[keep].astype(np.float64) / self.size  # x/y/w/h scales are the input size
        anc = self.anchors[keep].astype(np.float64)
        # Boxes (anchors have w = h = 1), relative to the letterboxed tensor.
        cx = raw[:, 0] + anc[:, 0]
        cy = raw[:, 1] + anc[:, 1]
        bw, bh = raw[:, 2], raw[:, 3]
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
        kps = raw[:, 4:4 + 2 * NUM_KEYPOINTS].reshape(-1, NUM_KEYPOINTS, 2) + anc[:, None, :]
        out_b, out_k, out_s = weighted_nms(boxes, kps, scores.astype(np.float64), self.iou_threshold)

        dets = []
        for box, kp, score in zip(out_b, out_k, out_s):
            # Undo the letterbox: tensor-relative -> tensor pixels -> frame pixels.
            x0 = (box[0] * self.size - tx) / s
            y0 = (box[1] * self.size - ty) / s
            x1 = (box[2] * self.size - tx) / s
            y1 = (box[3] * self.size - ty) / s
            # int() truncates like MediaPipe's relative -> pixel box conversion.
            bx, by = int(x0), int(y0)
            bwid, bhei = int(x1 - x0), int(y1 - y0)
            if bwid <= 0 or bhei <= 0:
                continue
            points = [(float((px * self.size - tx) / s), float((py * self.size - ty) / s)) for px, py in kp]
            dets.append(Detection(box=(bx, by, bwid, bhei), score=float(score), keypoints=points))
        return dets

    def close(self) -> None:
        self._interp = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
