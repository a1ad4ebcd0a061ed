"""Drawing: box, id, emotion and confidence per face, optional probability bars, FPS and stage ms."""
from __future__ import annotations

import cv2
import numpy as np

from engine.core.types import Face

#: BGR colour per emotion, so a glance tells the mood of the room.
COLOURS = {
    "angry": (40, 40, 230), "disgust": (40, 140, 40), "fear": (160, 60, 160), "happy": (40, 210, 250),
    "sad": (200, 120, 40), "surprise": (240, 200, 60), "neutral": (200, 200, 200),
}


#: how much of the video the stats box lets through (0: opaque black, 1: no box)
STATS_SHADE = 0.3


def text_scale(height: int) -> float:
    """Font scale for a frame `height` px tall: text about 3% of the frame's height (16 px at 480p,
    36 px at 1080p), so labels read the same on a phone-sized page and a full-HD window."""
    return max(0.4, height / 800)


def _thickness(scale: float) -> int:
    return max(1, round(scale * 1.6))


def ink_for(colour: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white, whichever has the higher WCAG contrast on a box of `colour` (BGR): every emotion
    colour then gets at least 4.5:1, the web's bar for readable text."""
    lum = _luminance(colour)
    return (0, 0, 0) if (lum + 0.05) / 0.05 >= 1.05 / (lum + 0.05) else (255, 255, 255)


def _luminance(bgr: tuple[int, int, int]) -> float:
    """WCAG relative luminance of a BGR colour."""
    def lin(v: int) -> float:
        c = v / 255.0
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4
    b, g, r = bgr
    return 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b)


def _text(img, text, org, scale, colour, thickness=1):
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness + 2, cv2.LINE_AA)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thickness, cv2.LINE_AA)


def label_box(img: np.ndarray, text: str, x: int, y_bottom: int, scale: float, fill: tuple[int, int, int],
              shade: float = 1.0) -> tuple[int, int, int, int]:
    """`text` on a filled box whose bottom-left is near (x, y_bottom), kept inside the frame; returns the
    box (x0, y0, x1, y1). Why a box: text drawn straight on the video (grey on a light wall, a colour on
    a matching shirt) can vanish; on its own box, in black or white by the box's brightness, it cannot.
    `shade` < 1 blends the box with the video behind it (the stats box lets the picture show through)."""
    h, w = img.shape[:2]
    thick = _thickness(scale)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    pad = max(2, th // 4)
    bw, bh = tw + 2 * pad, th + base + 2 * pad
    x0 = int(min(max(0, x), max(0, w - bw)))
    y0 = int(min(max(0, y_bottom - bh), max(0, h - bh)))
    x1, y1 = min(w, x0 + bw), min(h, y0 + bh)
    roi = img[y0:y1, x0:x1]
    if shade >= 1.0:
        roi[:] = fill
    else:
        roi[:] = (roi * (1.0 - shade) + np.array(fill, np.float32) * shade).astype(np.uint8)
    cv2.putText(img, text, (x0 + pad, y0 + pad + th), cv2.FONT_HERSHEY_SIMPLEX, scale, ink_for(fill), thick, cv2.LINE_AA)
    return x0, y0, x1, y1


def draw(frame: np.ndarray, faces: list[Face], fps: float | None = None, ms: dict[str, float] | None = None,
         bars: bool = False, status: str = "") -> np.ndarray:
    """Draw onto `frame` in place (the frame is ours by now) and return it."""
    h, w = frame.shape[:2]
    scale = max(0.35, min(1.0, w / 1280))  # the bars' size (unchanged)
    label = text_scale(h)
    for f in faces:
        x, y, bw, bh = f.box
        colour = COLOURS.get(f.emotion, (0, 255, 0))
        cv2.rectangle(frame, (x, y), (x + bw, y + bh), colour, max(2, _thickness(label)))
        label_box(frame, f"#{f.id} {f.emotion} {f.confidence * 100:.0f}%", x, y, label, colour)
        if bars:
            bx, by = x + bw + 4, y
            bar_w = max(40, bw // 2)
            for i, (lab, p) in enumerate(f.probs.items()):
                yy = by + i * int(14 * scale + 6)
                cv2.rectangle(frame, (bx, yy), (bx + int(bar_w * p), yy + int(10 * scale + 3)), COLOURS.get(lab, (0, 255, 0)), -1)
                _text(frame, lab[:3], (bx + bar_w + 3, yy + int(10 * scale + 2)), scale * 0.5, (255, 255, 255))
    _stats(frame, fps, ms, status, label * 0.8)
    return frame


def _stats(frame: np.ndarray, fps: float | None, ms: dict[str, float] | None, status: str, scale: float) -> None:
    """FPS, stage times and the status line, top left, each on a dark box (the status on a red one)."""
    lines = []
    if fps is not None:
        lines.append((f"{fps:.1f} FPS", (0, 0, 0), 1.0 - STATS_SHADE))
    if ms:
        lines.append((" ".join(f"{k} {v:.1f}" for k, v in ms.items() if k != "total") + " ms", (0, 0, 0), 1.0 - STATS_SHADE))
    if status:
        lines.append((status, (0, 0, 200), 1.0))
    y = 0
    for text, fill, shade in lines:
        y = _stack(frame, text, y, scale, fill, shade)


def _stack(frame: np.ndarray, text: str, y_top: int, scale: float, fill, shade: float) -> int:
    """One stats line on its box with its top at `y_top`; returns the box's bottom (the next line's top)."""
    (_, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, _thickness(scale))
    bh = th + base + 2 * max(2, th // 4)
    return label_box(frame, text, 0, y_top + bh, scale, fill, shade)[3]
