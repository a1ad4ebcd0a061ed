"""Stable face ids, smoothed probabilities and a shown emotion that does not flicker.

Per-frame classifier output jitters (a blink, motion blur), so each tracked face keeps
an exponential moving average of its probabilities, and the *stable* emotion only
changes when another class beats it in that average by `hysteresis` for `confirm` frames
in a row. Ids come from greedy IoU matching with a centre-distance fallback for small,
fast-moving faces whose boxes stop overlapping between frames.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from engine.core.errors import OptionError
from engine.core.geometry import box_iou, xywh_to_xyxy
from engine.core.types import Detection, Face


@dataclass
class TrackerOptions:
    ema: float = 0.4  # weight of the newest frame in the moving average (1 = no smoothing)
    hysteresis: float = 0.08  # how much a challenger must beat the stable emotion by
    confirm: int = 2  # ... for this many consecutive frames
    min_iou: float = 0.2
    max_center_dist: float = 0.6  # centre distance fallback, in units of the box side
    max_missed: int = 10  # frames a face may vanish before its track is dropped

    def __post_init__(self) -> None:
        if not 0 < self.ema <= 1:
            raise OptionError("TrackerOptions", "ema", f"must be above 0 and at most 1, not {self.ema:g}")
        if not 0 <= self.hysteresis < 1:
            raise OptionError("TrackerOptions", "hysteresis", f"must be from 0 to below 1, not {self.hysteresis:g}")
        if self.confirm < 1:
            raise OptionError("TrackerOptions", "confirm", "must be at least 1")


@dataclass
class _Track:
    id: int
    box: tuple[int, int, int, int]
    ema: np.ndarray
    stable: int
    challenger: int = -1
    streak: int = 0
    missed: int = 0


EmotionChange = Callable[[int, str | None, str, Face], None]


class FaceTracker:
    def __init__(self, labels: list[str], opts: TrackerOptions = TrackerOptions(), on_change: EmotionChange | None = None):
        self.labels = list(labels)
        self.opts = opts
        self.on_change = on_change
        self._tracks: list[_Track] = []
        self._next_id = 1

    def reset(self) -> None:
        """Forget every face: the next ones are #1, #2... again (each photo of a folder)."""
        self._tracks.clear()
        self._next_id = 1

    def _match(self, dets: list[Detection]) -> list[int | None]:
        """Index of the track each detection continues, or None for a new face."""
        pairs = []
        if not dets or not self._tracks:
            return [None] * len(dets)
        overlaps = box_iou(xywh_to_xyxy([d.box for d in dets]), xywh_to_xyxy([t.box for t in self._tracks]))
        for di, d in enumerate(dets):
            for ti, t in enumerate(self._tracks):
                overlap = float(overlaps[di, ti])
                dx = (d.box[0] + d.box[2] / 2) - (t.box[0] + t.box[2] / 2)
                dy = (d.box[1] + d.box[3] / 2) - (t.box[1] + t.box[3] / 2)
                dist = (dx * dx + dy * dy) ** 0.5 / max(1.0, max(t.box[2], t.box[3]))
                if overlap >= self.opts.min_iou or dist <= self.opts.max_center_dist:
                    pairs.append((overlap - dist, di, ti))
        assigned: list[int | None] = [None] * len(dets)
        used = set()
        for _, di, ti in sorted(pairs, reverse=True):
            if assigned[di] is None and ti not in used:
                assigned[di] = ti
                used.add(ti)
        return assigned

    def update(self, dets: list[Detection], probs: np.ndarray) -> list[Face]:
        """Advance one frame: match, smooth, apply hysteresis, fire on_change; return faces."""
        o = self.opts
        matches = self._match(dets)
        seen = set()
        faces = []
        for d, p, ti in zip(dets, probs, matches):
            p = np.asarray(p, dtype=np.float64)
            if ti is None:
                t = _Track(self._next_id, d.box, p.copy(), int(p.argmax()))
                self._next_id += 1
                self._tracks.append(t)
                previous = None
                changed = True
            else:
                t = self._tracks[ti]
                t.box, t.missed = d.box, 0
                t.ema = (1 - o.ema) * t.ema + o.ema * p
                previous = self.labels[t.stable]
                changed = self._hysteresis(t)
            seen.add(t.id)
            face = Face(
                id=t.id, box=tuple(int(v) for v in d.box), score=d.score, emotion=self.labels[t.stable],
                confidence=float(t.ema[t.stable]), probs={lab: float(v) for lab, v in zip(self.labels, t.ema)},
                raw={lab: float(v) for lab, v in zip(self.labels, p)},
            )
            faces.append(face)
            if changed and self.on_change is not None:
                self.on_change(t.id, previous, face.emotion, face)
        for t in self._tracks:
            if t.id not in seen:
                t.missed += 1
        self._tracks = [t for t in self._tracks if t.missed <= o.max_missed]
        return faces

    def _hysteresis(self, t: _Track) -> bool:
        best = int(t.ema.argmax())
        if best != t.stable and t.ema[best] - t.ema[t.stable] >= self.opts.hysteresis:
            t.streak = t.streak + 1 if best == t.challenger else 1
            t.challenger = best
            if t.streak >= self.opts.confirm:
                t.stable, t.challenger, t.streak = best, -1, 0
                return True
        else:
            t.challenger, t.streak = -1, 0
        return False
