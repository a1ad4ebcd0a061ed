"""The easy scenes of `crop_agreement.py` (its default, `--scenes easy`): 48x48 FER faces upscaled and
placed on mid-grey or smooth blotches, optionally turned in the image plane.

The hard scenes (real photos, JPEG, skin colour) are `crop_scenes.py`.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from engine.core.errors import UserError


def compose_frames(faces: np.ndarray, rng: np.random.Generator, size: tuple[int, int], per_frame: tuple[int, int],
                   width: int, height: int, background: str, roll: float = 0.0,
                   angles: np.ndarray | None = None) -> list[tuple[np.ndarray, list[tuple[int, tuple[int, int, int, int]]]]]:
    """Place every face once: [(BGR frame, [(face index, (x, y, side, side)), ...]), ...].

    Faces in one frame do not overlap (a gap of a tenth of a face between them), so each
    detection belongs to one face. With `roll` each face is also turned in the image plane by a
    random angle in [-roll, roll] degrees (a head tilted as in a real video), written to `angles`.
    """
    if size[1] > min(width, height):
        raise UserError(f"--size {size[1]} does not fit a {width}x{height} frame")
    frames = []
    i = 0
    while i < len(faces):
        k = int(rng.integers(per_frame[0], per_frame[1] + 1))
        frame = _background(rng, width, height, background)
        boxes: list[tuple[int, int, int, int]] = []
        placed = []
        for _ in range(k):
            if i >= len(faces):
                break
            side = int(rng.integers(size[0], size[1] + 1))
            for _try in range(50):
                x, y = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
                gap = side // 10
                if all(x + side + gap <= bx or bx + bs + gap <= x or y + side + gap <= by or by + bs + gap <= y for bx, by, bs, _ in boxes):
                    break
            else:
                break  # no room left in this frame: the face goes into the next one
            face = cv2.resize(faces[i], (side, side), interpolation=cv2.INTER_CUBIC)
            if roll:
                a = float(rng.uniform(-roll, roll))
                m = cv2.getRotationMatrix2D((side / 2, side / 2), a, 1.0)
                face = cv2.warpAffine(face, m, (side, side), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
                if angles is not None:
                    angles[i] = a
            frame[y : y + side, x : x + side] = face[..., None]
            boxes.append((x, y, side, side))
            placed.append((i, (x, y, side, side)))
            i += 1
        frames.append((frame, placed))
    return frames


def _background(rng: np.random.Generator, width: int, height: int, kind: str) -> np.ndarray:
    if kind == "grey":
        return np.full((height, width, 3), 128, np.uint8)
    # Smooth blotches (something like an out-of-focus room): low-resolution noise, upscaled and blurred.
    small = rng.integers(40, 216, (max(2, height // 24), max(2, width // 24), 3), dtype=np.uint8)
    big = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    return cv2.GaussianBlur(big, (0, 0), 6)


def eyes_at(box: tuple[int, int, int, int], roll: float) -> list[tuple[float, float]]:
    """Eye keypoints whose line makes the angle a face turned by `roll` (cv2 convention) has."""
    x, y, w, h = box
    cx, cy, d, t = x + w / 2, y + h / 2, w / 4, math.radians(-roll)
    return [(cx - d * math.cos(t), cy - d * math.sin(t)), (cx + d * math.cos(t), cy + d * math.sin(t))]
