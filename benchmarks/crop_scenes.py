"""Frames for `crop_agreement.py --scenes hard` and `crop_misses.py`: FER faces composited into real photos.

The easy scenes (crop_agreement's default, crop_easy_scenes.py) put 96-160 px faces on mid-grey or smooth
blotches. Real frames are harder, and here each difficulty is a recorded setting of every face, so results split by it:

  - face side 64-256 px, log-uniform (each bin of SIZE_BINS gets about a quarter of the faces);
  - the background: a random crop of a real photo that ships inside an installed package (skimage.data,
    BACKGROUNDS: no faces in them, checked with the real detector by tests/test_crop_scenes.py), sharp or
    blurred (out of focus, as behind a face a webcam focuses on), half and half;
  - the whole frame JPEG-recompressed (quality 40-90) on half the frames, after compositing;
  - 1-3 faces per frame, not overlapping;
  - the face's colour: FER faces are grey; `color="skin"` gives them a skin chroma (random per face) with the
    luma kept, so the 48x48 grey face the engine makes is still the FER face (up to clipping and rounding);
  - `context`: "none" pastes the tight FER square as is (no hair, no chin, a hard edge); "replicate" and
    "blur" first pad it by CONTEXT_PAD of its side with its own border pixels (sharp, or blurred more
    towards the outside) and feather that ring into the background: a proxy for the head around a face;
    "photo" is the real thing, for faces cut from a photo with their surroundings (`portrait_faces`): each
    face is then (N, 72, 72), the 48x48 face square in its middle.

`match` pairs each placed face with the detection found on it, the same way for both scripts.

Nothing is downloaded; one seed gives the same frames everywhere.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from engine.core.errors import UserError

#: skimage.data files: real photos with no face in them (the cat `chelsea`, `astronaut` and `camera` are out).
BACKGROUNDS = ("coffee.png", "rocket.jpg", "coins.png", "motorcycle_left.png", "moon.png", "brick.png",
               "grass.png", "gravel.png", "text.png", "clock_motion.png")
#: Face side bins, px (log-uniform sides: half an octave each).
SIZE_BINS = ((64, 90), (91, 127), (128, 180), (181, 256))
FER_CONTEXTS = ("none", "replicate", "blur")  # for 48x48 faces
CONTEXTS = FER_CONTEXTS + ("photo",)  # "photo": faces cut with their real surroundings (portrait_faces)
COLORS = ("gray", "skin")
CONTEXT_PAD = 0.25  # context ring on each side, as a fraction of the face side


@dataclass
class HardScenes:
    """How `compose_hard` builds frames (the defaults are `crop_agreement.py --scenes hard`)."""
    size: tuple[int, int] = (64, 256)
    per_frame: tuple[int, int] = (1, 3)
    width: int = 640
    height: int = 480
    blur_share: float = 0.5  # frames whose background is blurred
    blur_sigma: tuple[float, float] = (3.0, 8.0)
    jpeg_share: float = 0.5  # frames recompressed as JPEG
    jpeg_quality: tuple[int, int] = (40, 90)
    color: str = "skin"
    context: str = "none"
    backgrounds: tuple[str, ...] = BACKGROUNDS


@dataclass
class Scene:
    frame: np.ndarray  # BGR
    placed: list[tuple[int, tuple[int, int, int, int]]]  # (face index, (x, y, side, side)) of the face square
    background: str
    blurred: bool
    jpeg: int | None  # the JPEG quality, None when not recompressed
    meta: dict = field(default_factory=dict)


def require_default_data(data: str, default: Path) -> None:
    """A clear sentence when the FER2013 faces were asked for at their default home, ../shared, and it is absent."""
    if Path(data) == default and not default.exists():
        raise UserError(f"the FER2013 faces are missing: {default} does not exist (no ../shared beside this checkout); "
                        "pass --data with FER-style folders or a fer2013.csv")


def size_bin(side: int) -> int:
    """Index into SIZE_BINS (sides outside the bins go to the nearest end)."""
    for k, (_, hi) in enumerate(SIZE_BINS):
        if side <= hi:
            return k
    return len(SIZE_BINS) - 1


def bin_name(k: int) -> str:
    lo, hi = SIZE_BINS[k]
    return f"{lo}-{hi}"


def background_path(name: str) -> str:
    import skimage.data

    return os.path.join(os.path.dirname(skimage.data.__file__), name)


def load_backgrounds(names: tuple[str, ...] = BACKGROUNDS) -> list[tuple[str, np.ndarray]]:
    """[(name, BGR photo)] from the installed skimage package (no download)."""
    import importlib.util

    if importlib.util.find_spec("skimage") is None:
        raise UserError("the hard scenes need scikit-image (its packaged photos are the backgrounds): pip install scikit-image")
    out = []
    for name in names:
        img = cv2.imread(background_path(name), cv2.IMREAD_COLOR)
        if img is None:
            raise UserError(f"background photo {name} is not in the installed scikit-image ({background_path(name)})")
        out.append((name.rsplit(".", 1)[0], img))
    return out


def background_frame(photo: np.ndarray, rng: np.random.Generator, width: int, height: int,
                     blur_sigma: float = 0.0) -> np.ndarray:
    """A width x height crop of `photo` scaled to cover the frame (x1-1.3 more), maybe mirrored, maybe blurred."""
    h, w = photo.shape[:2]
    s = max(width / w, height / h) * float(rng.uniform(1.0, 1.3))
    big = cv2.resize(photo, (max(width, math.ceil(w * s)), max(height, math.ceil(h * s))), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
    y, x = int(rng.integers(0, big.shape[0] - height + 1)), int(rng.integers(0, big.shape[1] - width + 1))
    out = big[y : y + height, x : x + width]
    if rng.random() < 0.5:
        out = out[:, ::-1]
    out = np.ascontiguousarray(out)
    return cv2.GaussianBlur(out, (0, 0), blur_sigma) if blur_sigma > 0 else out


def tint(face: np.ndarray, cr: float, cb: float) -> np.ndarray:
    """Grey face (H, W) -> BGR with the given YCrCb chroma; its luma (cv2's BGR2GRAY weights) stays the grey."""
    ycc = np.stack([face, np.full_like(face, int(round(cr))), np.full_like(face, int(round(cb)))], axis=-1)
    return cv2.cvtColor(ycc, cv2.COLOR_YCrCb2BGR)


def face_patch(face48: np.ndarray, side: int, context: str, color: tuple[float, float] | None) -> tuple[np.ndarray, np.ndarray, int]:
    """The face scaled to `side`, with its context ring: (BGR patch, alpha 0..1, pad px on each side)."""
    pad = 0 if context == "none" else int(round(CONTEXT_PAD * side))
    n = side + 2 * pad
    face = cv2.resize(face48, (n, n) if context == "photo" else (side, side), interpolation=cv2.INTER_CUBIC)
    bgr = tint(face, *color) if color else cv2.cvtColor(face, cv2.COLOR_GRAY2BGR)
    if not pad:
        return bgr, np.ones((side, side), np.float32), 0
    big = bgr if context == "photo" else cv2.copyMakeBorder(bgr, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    # distance outside the face square, 0 inside .. 1 at the patch edge
    r = np.abs(np.arange(n, dtype=np.float32) - (n - 1) / 2) - side / 2
    d = np.clip(np.maximum(r[:, None], r[None, :]) / pad, 0.0, 1.0)
    if context == "blur":
        soft = cv2.GaussianBlur(big, (0, 0), max(1.0, pad / 3))
        w = d[..., None]
        big = (big * (1 - w) + soft * w).astype(np.uint8)
    alpha = np.clip(1.0 - d, 0.0, 1.0) ** 0.5  # opaque face, fading ring
    return big, alpha, pad


#: The packaged portraits (skimage's astronaut, matplotlib's Grace Hopper): name, (face centre x, y, side of a
#: FER-tight square: forehead to chin, little hair, framed by eye like FER2013's faces).
PORTRAITS = (("astronaut", (226, 128, 122)), ("grace_hopper", (262, 245, 190)))


def portrait_faces(context: bool) -> list[np.ndarray]:
    """The packaged portraits' faces, grey: 48x48 FER-tight squares, or with `context` 72x72 = the same
    square in the middle of its real surroundings (hair, ears, chin, neck; CONTEXT_PAD each side)."""
    import matplotlib.cbook
    import skimage.data

    out = []
    for name, (cx, cy, side) in PORTRAITS:
        if name == "astronaut":
            img = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2GRAY)
        else:
            with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as fh:
                img = cv2.imdecode(np.frombuffer(fh.read(), np.uint8), cv2.IMREAD_GRAYSCALE)
        half = side / 2 * (1 + 2 * CONTEXT_PAD if context else 1)
        crop = img[int(cy - half) : int(cy + half), int(cx - half) : int(cx + half)]
        size = round(48 * (1 + 2 * CONTEXT_PAD)) if context else 48
        out.append(cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA))
    return out


def _log_side(rng: np.random.Generator, lo: int, hi: int) -> int:
    return int(np.clip(round(math.exp(rng.uniform(math.log(lo), math.log(hi + 0.999)))), lo, hi))


def compose_hard(faces: np.ndarray, rng: np.random.Generator, cfg: HardScenes = HardScenes(),
                 photos: list[tuple[str, np.ndarray]] | None = None, screen=None) -> list[Scene]:
    """Place every face (N, 48, 48) uint8 grey once, in order, into frames built as `cfg` says.

    `screen`: a face detector (`detect(frame) -> list`). The photos hold no face, but a detector
    sometimes fires on a crop of them (a few in a hundred frames at score 0.5 on coffee, coins or the
    motorcycle); with `screen` such a background is drawn again (up to 20 times), so every detection in a
    frame comes from a placed face. Each Scene's meta["redrawn"] says how often that happened.
    """
    if cfg.context not in CONTEXTS:
        raise UserError(f"unknown context {cfg.context!r}: use {', '.join(CONTEXTS)}")
    if cfg.color not in COLORS:
        raise UserError(f"unknown face colour {cfg.color!r}: use {', '.join(COLORS)}")
    if cfg.context == "photo" and len(faces) and faces.shape[1] <= 48:
        raise UserError("context photo is for faces cut with their surroundings (portrait_faces, 72x72), not 48x48 FER faces")
    pad_max = 0 if cfg.context == "none" else int(round(CONTEXT_PAD * cfg.size[1]))
    if cfg.size[1] + 2 * pad_max > min(cfg.width, cfg.height):
        raise UserError(f"faces of {cfg.size[1]} px (with context) do not fit a {cfg.width}x{cfg.height} frame")
    photos = photos or load_backgrounds(cfg.backgrounds)
    scenes: list[Scene] = []
    i = 0
    while i < len(faces):
        name, photo = photos[int(rng.integers(len(photos)))]
        blurred = bool(rng.random() < cfg.blur_share)
        sigma = float(rng.uniform(*cfg.blur_sigma)) if blurred else 0.0
        quality = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1)) if rng.random() < cfg.jpeg_share else None
        back = background_frame(photo, rng, cfg.width, cfg.height, sigma)
        redrawn = 0
        while screen is not None and redrawn < 20 and screen.detect(back):
            redrawn += 1
            back = background_frame(photo, rng, cfg.width, cfg.height, sigma)
        frame = back.astype(np.float32)
        k = int(rng.integers(cfg.per_frame[0], cfg.per_frame[1] + 1))
        taken: list[tuple[int, int, int]] = []  # (x, y, outer side) incl. context
        placed = []
        for _ in range(k):
            if i >= len(faces):
                break
            side = _log_side(rng, *cfg.size)
            color = (float(rng.uniform(138, 158)), float(rng.uniform(100, 118))) if cfg.color == "skin" else None
            patch, alpha, pad = face_patch(faces[i], side, cfg.context, color)
            n = side + 2 * pad
            for _try in range(50):
                x, y = int(rng.integers(0, cfg.width - n + 1)), int(rng.integers(0, cfg.height - n + 1))
                gap = side // 10
                if all(x + n + gap <= bx or bx + bn + gap <= x or y + n + gap <= by or by + bn + gap <= y for bx, by, bn in taken):
                    break
            else:
                break  # no room left: the face goes into the next frame
            a = alpha[..., None]
            frame[y : y + n, x : x + n] = patch * a + frame[y : y + n, x : x + n] * (1 - a)
            taken.append((x, y, n))
            placed.append((i, (x + pad, y + pad, side, side)))
            i += 1
        out = np.clip(np.round(frame), 0, 255).astype(np.uint8)
        if quality is not None:
            ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, quality])
            out = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        scenes.append(Scene(out, placed, name, blurred, quality, {"redrawn": redrawn}))
    return scenes


def face_settings(scenes: list[Scene], n: int) -> dict[str, np.ndarray]:
    """Per face: its size bin, whether its background was blurred, whether its frame was recompressed."""
    size = np.full(n, -1)
    blur = np.zeros(n, bool)
    jpeg = np.zeros(n, bool)
    for s in scenes:
        for i, (_, _, side, _) in s.placed:
            size[i], blur[i], jpeg[i] = size_bin(side), s.blurred, s.jpeg is not None
    return {"size": size, "blur": blur, "jpeg": jpeg}


def match(dets, boxes) -> list[int | None]:
    """For each true face box (x, y, w, h), the index into `dets` of its detection, or None: the
    best-scoring detection whose box centre lies inside it, one detection per face (a detection that
    one face took is not given to the next). `dets[j].score` and `dets[j].box` tell the rest."""
    taken: set[int] = set()
    out: list[int | None] = []
    for x, y, w, h in boxes:
        best = None
        for j, d in enumerate(dets):
            dx, dy, dw, dh = d.box
            cx, cy = dx + dw / 2, dy + dh / 2
            if j not in taken and x <= cx <= x + w and y <= cy <= y + h and (best is None or d.score > dets[best].score):
                best = j
        if best is not None:
            taken.add(best)
        out.append(best)
    return out


# --------------------------------------------------------------------------- results per setting


def _group(mask: np.ndarray, found: np.ndarray, direct: np.ndarray, truth: np.ndarray, oracle: np.ndarray,
           crops: dict[str, np.ndarray]) -> dict:
    """One row of the breakdown: the faces in `mask`; agreement and accuracy over the detected ones."""
    det = mask & found
    n, k = int(mask.sum()), int(det.sum())
    row = {"faces": n, "detected": k, "miss_rate": None if n == 0 else 1 - k / n,
           "direct_accuracy": None if n == 0 else float((direct[mask] == truth[mask]).mean()),
           "oracle_agreement": None if n == 0 else float((oracle[mask] == direct[mask]).mean())}
    for name, engine in crops.items():
        row[f"agreement_{name}"] = float((engine[det] == direct[det]).mean()) if k else None
        row[f"engine_accuracy_{name}"] = float((engine[det] == truth[det]).mean()) if k else None
    return row


def breakdown(setting: dict[str, np.ndarray], found: np.ndarray, direct: np.ndarray, truth: np.ndarray,
              oracle: np.ndarray, crops: dict[str, np.ndarray]) -> dict:
    """Results per setting of the hard scenes.

    `setting`: face_settings' arrays; `crops`: {crop name: the engine's label per face (-1 where missed)}.
    Returns {"settings": one row per size bin x background x JPEG, "by_size", "by_background", "by_jpeg":
    the margins}, every row with faces, detected, miss_rate, direct_accuracy (all its faces),
    oracle_agreement (the engine's crop of the true square vs the direct label) and, per crop,
    agreement_<crop> and engine_accuracy_<crop> (detected faces).
    """
    size, blur, jpeg = setting["size"], setting["blur"], setting["jpeg"]
    everything = np.ones(len(found), bool)
    backgrounds = (("sharp", ~blur), ("blur", blur))
    jpegs = (("no", ~jpeg), ("yes", jpeg))
    bins = [(bin_name(k), size == k) for k in range(len(SIZE_BINS))]

    def row(s="all", b="all", j="all", m=everything):
        return {"size": s, "background": b, "jpeg": j, **_group(m, found, direct, truth, oracle, crops)}

    return {
        "settings": [row(s, b, j, ms & mb & mj) for s, ms in bins for b, mb in backgrounds for j, mj in jpegs],
        "by_size": [row(s=s, m=ms) for s, ms in bins],
        "by_background": [row(b=b, m=mb) for b, mb in backgrounds],
        "by_jpeg": [row(j=j, m=mj) for j, mj in jpegs],
        "miss_rate_by_size": {s: (1 - float(found[ms].mean())) if ms.any() else None for s, ms in bins},
    }


def breakdown_table(res: dict) -> tuple[list[str], list[list[str]]]:
    """(headers, rows) of the hard scenes' per-setting results, the margins first."""
    crops = [c for c in ("default", "best") if f"agreement_{c}" in res["settings"][0]]

    def pct(v):
        return "-" if v is None else f"{100 * v:.1f}"

    headers = ["size px", "background", "jpeg", "faces", "miss %", "direct acc %", "true-box agree %"]
    headers += [h for c in crops for h in (f"agree % ({c})", f"engine acc % ({c})")]
    out = []
    for r in res["by_size"] + res["by_background"] + res["by_jpeg"] + res["settings"]:
        out.append([r["size"], r["background"], r["jpeg"], str(r["faces"]), pct(r["miss_rate"]), pct(r["direct_accuracy"]),
                    pct(r["oracle_agreement"])] + [pct(r[f"{k}_{c}"]) for c in crops for k in ("agreement", "engine_accuracy")])
    return headers, out
