"""Drawing: box, id, emotion and confidence per face, optional probability bars, FPS and stage ms."""
from __future__ import annotations

import cv2
import numpy as np

from engine.track import Face

#: BGR colour per emotion, so a glance tells the mood of the room.
COLOURS = {
    "angry": (40, 40, 230), "disgust": (40, 140, 40), "fear": (160, 60, 160), "happy": (40, 210, 250),
    "sad": (200, 120, 40), "surprise": (240, 200, 60), "neutral": (200, 200, 200),
}


def _text(img, text, org, scale, colour, thickness=1):
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness + 2, cv2.LINE_AA)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thickness, cv2.LINE_AA)


def draw(frame: np.ndarray, faces: list[Face], fps: float | None = None, ms: dict[str, float] | None = None,
         bars: bool = False, status: str = "") -> np.ndarray:
    """Draw onto `frame` in place (the frame is ours by now) and return it."""
    h, w = frame.shape[:2]
    scale = max(0.35, min(1.0, w / 1280))
    for f in faces:
        x, y, bw, bh = f.box
        colour = COLOURS.get(f.emotion, (0, 255, 0))
        cv2.rectangle(frame, (x, y), (x + bw, y + bh), colour, 2)
        _text(frame, f"#{f.id} {f.emotion} {f.confidence * 100:.0f}%", (x, max(12, y - 6)), scale * 0.9, colour)
        if bars:
            bx, by = x + bw + 4, y
            bar_w = max(40, bw // 2)
            for i, (lab, p) in enumerate(f.probs.items()):
                yy = by + i * int(14 * scale + 6)
                cv2.rectangle(frame, (bx, yy), (bx + int(bar_w * p), yy + int(10 * scale + 3)), COLOURS.get(lab, (0, 255, 0)), -1)
                _text(frame, lab[:3], (bx + bar_w + 3, yy + int(10 * scale + 2)), scale * 0.5, (255, 255, 255))
    lines = []
    if fps is not None:
        lines.append(f"{fps:.1f} FPS")
    if ms:
        lines.append(" ".join(f"{k} {v:.1f}" for k, v in ms.items() if k != "total") + " ms")
    if status:
        lines.append(status)
    for i, line in enumerate(lines):
        _text(frame, line, (8, int(18 + i * 20 * scale)), scale * 0.6, (0, 0, 255) if line == status else (255, 255, 255))
    return frame
