"""The one preprocessing function every part of the project uses.

Training, export calibration, the engine's face crops and the benchmarks all call
`to_face48`, so the classifier always sees faces prepared the same way. The model itself
does the 0..255 -> model-range scaling (a Rescaling layer), so this stops at uint8.
"""
from __future__ import annotations

import cv2
import numpy as np

from engine.core.contract import FACE_SIZE


def to_gray(image: np.ndarray) -> np.ndarray:
    """BGR / BGRA / gray (any dtype cv2 handles) -> 2-D uint8 gray."""
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3:
        code = cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY
        image = cv2.cvtColor(image, code)
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    return image


def to_face48(image: np.ndarray) -> np.ndarray:
    """Any face crop (gray or BGR, any size) -> 48x48 uint8 gray, as FER2013 faces are.

    INTER_AREA when shrinking (it averages, like the downsampling FER2013 went through);
    INTER_LINEAR when enlarging a tiny face.
    """
    gray = to_gray(image)
    h, w = gray.shape
    if (h, w) == (FACE_SIZE, FACE_SIZE):
        return gray
    interp = cv2.INTER_AREA if min(h, w) >= FACE_SIZE else cv2.INTER_LINEAR
    return cv2.resize(gray, (FACE_SIZE, FACE_SIZE), interpolation=interp)


def flip_average(fn, faces: np.ndarray) -> np.ndarray:
    """Flip test-time augmentation: each face's probabilities averaged with its mirror image's.

    Faces are (N, 48, 48[, 1]); the mirror images go into the SAME call of `fn` (2N faces), so the
    engine still makes one batched classifier call per frame. Evaluation and the engine share it:
    `models.evaluate --tta` measures (on the Keras model) the same method `engine.run --tta` runs.
    """
    return flip_answers(fn, faces)[1]


def flip_answers(fn, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(plain, flip-averaged) probabilities from one call of `fn` on the faces and their mirror
    images: for callers that keep both answers (out-of-fold labels) without running the net twice."""
    n = len(faces)
    probs = np.asarray(fn(np.concatenate([faces, faces[:, :, ::-1]])), dtype=np.float32)
    return probs[:n], (probs[:n] + probs[n:]) / 2
