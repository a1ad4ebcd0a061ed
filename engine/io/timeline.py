"""Emotion timelines: per tracked face, the smoothed class probabilities over time.

`Timeline` collects a video's faces frame by frame in bounded memory: time is cut into at most
`max_bins` bins per face, and when a video outgrows them every two neighbouring bins merge
(the bin width doubles), so a 2-hour recording costs the same few kilobytes per face as a clip.
Each face keeps only the bins between its first and last appearance.

`Timeline.draw(path)` writes a PNG with one panel per face (the faces seen longest first): the
bins' mean probabilities as a stacked area (empty where the face was not seen) and, under it, a
band in the colour of the emotion shown most in each bin; the time axis reads m:ss or h:mm:ss.
matplotlib (Agg, no display) is imported only there.
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

#: FER2013 classes in colours people read without a legend; other labels get tab10 colours.
COLORS = {"angry": "#d62728", "disgust": "#8c564b", "fear": "#9467bd", "happy": "#f2b701", "sad": "#1f77b4",
          "surprise": "#17becf", "neutral": "#b0b0b0", "contempt": "#2ca02c"}
MAX_PANELS = 8
WIDTH_PX, DPI = 1200, 100
PANEL_PX, HEADER_PX = 150, 90
_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400)


def image_size(panels: int) -> tuple[int, int]:
    """(width, height) in pixels of a timeline PNG with this many face panels (at least one)."""
    return WIDTH_PX, HEADER_PX + PANEL_PX * max(1, min(panels, MAX_PANELS))


def clock(seconds: float) -> str:
    """0 -> '0:00', 75 -> '1:15', 3725 -> '1:02:05'."""
    s = int(round(max(0.0, seconds)))
    h, m, s = s // 3600, s // 60 % 60, s % 60
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def tick_step(span_s: float, max_ticks: int = 10) -> float:
    """A round tick spacing (1 s ... 4 h) giving at most `max_ticks` ticks over `span_s` seconds."""
    for step in _STEPS:
        if span_s / step <= max_ticks:
            return float(step)
    return float(math.ceil(span_s / max_ticks / 3600) * 3600)


class _Face:
    """One face's bins from its first appearance on: `n` used of a capacity that doubles as it grows."""

    __slots__ = ("start", "n", "sums", "shown", "count")

    def __init__(self, start: int, k: int):
        self.start = start
        self.n = 0
        self.sums = np.zeros((8, k), np.float32)  # summed probabilities per bin
        self.shown = np.zeros((8, k), np.int32)  # frames per bin showing each emotion
        self.count = np.zeros(8, np.int32)  # frames per bin

    def reserve(self, n: int) -> None:
        if n > len(self.count):
            cap = max(n, 2 * len(self.count))
            for name in ("sums", "shown", "count"):
                a = getattr(self, name)
                b = np.zeros((cap, *a.shape[1:]), a.dtype)
                b[: self.n] = a[: self.n]
                setattr(self, name, b)
        self.n = max(self.n, n)

    def used(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.sums[: self.n], self.shown[: self.n], self.count[: self.n]


class Timeline:
    def __init__(self, labels: Sequence[str], frame_s: float, max_bins: int = 1024):
        self.labels = list(labels)
        self.bin_s = max(frame_s, 1e-3)  # one bin per frame until the video outgrows max_bins
        self.max_bins = max_bins
        self.end_s = 0.0
        self.faces: dict[int, _Face] = {}
        self._index = {lab: i for i, lab in enumerate(self.labels)}

    def add(self, t: float, faces: Iterable) -> None:
        """One frame at `t` seconds: engine `Face`s (id, emotion, probs)."""
        self.end_s = max(self.end_s, t + self.bin_s / 1e6)
        while int(t / self.bin_s) >= self.max_bins:
            self._coarsen()
        b = int(t / self.bin_s)
        for f in faces:
            acc = self.faces.get(f.id)
            if acc is None:
                acc = self.faces[f.id] = _Face(b, len(self.labels))
            i = b - acc.start
            acc.reserve(i + 1)
            acc.sums[i] += [f.probs.get(lab, 0.0) for lab in self.labels]
            acc.shown[i, self._index[f.emotion]] += 1
            acc.count[i] += 1

    def _coarsen(self) -> None:
        """Double the bin width: neighbouring bins (2j, 2j+1) of every face become bin j."""
        for acc in self.faces.values():
            front = acc.start % 2
            back = (front + acc.n) % 2

            def pair(a: np.ndarray) -> np.ndarray:
                pad = lambda m: np.zeros((m, *a.shape[1:]), a.dtype)  # noqa: E731
                return np.concatenate([pad(front), a, pad(back)]).reshape(-1, 2, *a.shape[1:]).sum(axis=1)

            sums, shown, count = (pair(a) for a in acc.used())
            acc.sums, acc.shown, acc.count, acc.n, acc.start = sums, shown, count, len(count), acc.start // 2
        self.bin_s *= 2

    def face_frames(self) -> dict[int, int]:
        return {fid: int(acc.used()[2].sum()) for fid, acc in self.faces.items()}

    # ------------------------------------------------------------------ drawing
    def draw(self, path: str | Path, title: str = "", photo: bool = False) -> tuple[int, int]:
        """Write the PNG; returns its (width, height) in pixels (`image_size`). `photo`: one still, no duration."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
        from matplotlib.ticker import FuncFormatter, MultipleLocator

        with warnings.catch_warnings():  # a title (an input's name) in a script the font lacks: boxes, not stderr noise
            warnings.filterwarnings("ignore", message=r"(?i).*glyph.*missing")
            return self._draw(path, title, photo, plt, Patch, FuncFormatter, MultipleLocator)

    def _draw(self, path, title, photo, plt, Patch, FuncFormatter, MultipleLocator) -> tuple[int, int]:
        frames = self.face_frames()
        order = sorted(frames, key=lambda fid: (-frames[fid], fid))
        shown_ids = order[:MAX_PANELS]
        w, h = image_size(len(shown_ids))
        fig = plt.figure(figsize=(w / DPI, h / DPI), dpi=DPI)
        try:
            colors = [COLORS.get(lab, plt.cm.tab10(i % 10)) for i, lab in enumerate(self.labels)]
            span = max(self.end_s, self.bin_s)
            head = HEADER_PX / h
            more = f"; {len(order) - len(shown_ids)} more face(s) seen less not drawn" if len(order) > len(shown_ids) else ""
            fig.suptitle(f"{title}  ({'photo' if photo else clock(span)}, {len(order)} {'face(s)' if photo else 'tracked face(s)'}{more})", fontsize=11, y=1 - 0.18 * head)
            fig.legend(handles=[Patch(color=c, label=lab) for c, lab in zip(colors, self.labels)], loc="upper center",
                       ncol=len(self.labels), fontsize=9, frameon=False, bbox_to_anchor=(0.5, 1 - 0.38 * head))
            if not shown_ids:
                ax = fig.add_axes((0.06, 0.25 * (1 - head), 0.92, 0.6 * (1 - head)))
                ax.text(0.5, 0.5, "no face found", ha="center", va="center", fontsize=14, transform=ax.transAxes)
                ax.set_xlim(0, span)
                ax.set_yticks([])
            panel = (1 - head) / max(1, len(shown_ids))
            for row, fid in enumerate(shown_ids):
                bottom = 1 - head - (row + 1) * panel
                ax = fig.add_axes((0.06, bottom + 0.28 * panel, 0.92, 0.62 * panel))
                self._draw_face(ax, self.faces[fid], colors)
                ax.set_xlim(0, span)
                ax.set_ylim(-0.22, 1.0)
                ax.set_yticks([-0.13, 0, 0.5, 1.0], ["shown", "0", "0.5", "1"])
                ax.tick_params(labelsize=8)
                ax.set_ylabel(f"face #{fid}", fontsize=9)
            for ax in fig.axes:
                ax.xaxis.set_major_locator(MultipleLocator(tick_step(span)))
                ax.xaxis.set_major_formatter(FuncFormatter(lambda s, _pos: clock(s)))
            fig.savefig(str(path), dpi=DPI, format="png")
        finally:
            plt.close(fig)
        return w, h

    def _draw_face(self, ax, acc: _Face, colors) -> None:
        sums, shown, count = acc.used()
        n = len(count)
        edges = (acc.start + np.arange(n + 1)) * self.bin_s
        seen = count > 0
        mean = np.where(seen[:, None], sums / np.maximum(count, 1)[:, None], 0.0)
        top = np.cumsum(mean, axis=1)
        lower = np.zeros(n)
        # step="post" needs one more point: repeat the last bin's value at the right edge
        ext = lambda a: np.append(a, a[-1:])  # noqa: E731
        for k, color in enumerate(colors):
            ax.fill_between(edges, ext(lower), ext(top[:, k]), where=ext(seen), step="post", color=color, linewidth=0)
            lower = top[:, k]
        ax.axhline(0, color="black", linewidth=0.5)
        # the shown emotion: one band under the area, runs of equal colour drawn as one bar each
        best = np.where(seen, shown.argmax(axis=1), -1)
        i = 0
        while i < n:
            j = i
            while j + 1 < n and best[j + 1] == best[i]:
                j += 1
            if best[i] >= 0:
                ax.broken_barh([(edges[i], edges[j + 1] - edges[i])], (-0.2, 0.14), color=colors[best[i]], linewidth=0)
            i = j + 1
