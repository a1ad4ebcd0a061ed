"""Load FER-style datasets into (faces, labels) arrays, once, through an .npz cache.

Two source layouts are supported because both reference projects and most users have one
of them: image folders `ROOT/<split>/<class>/*.jpg|png` (the Kaggle export) and the
original `fer2013.csv` (`emotion,pixels,Usage`). Decoding 30k JPEGs takes a while on a Pi
or a 2-core box, so the decoded arrays are cached in a compressed .npz whose name is a
hash of the source (paths, sizes, mtimes) and the options; any change invalidates it.
The cache is plain arrays (never pickle) and is loaded with allow_pickle=False.
"""
from __future__ import annotations

import csv
import hashlib
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from engine.core.contract import FER_CLASSES, canonical_class
from engine.core.errors import UserError
from engine.core.preprocess import to_face48
from engine.io.sources import IMAGE_EXTS
#: Which CSV `Usage` value feeds which split name.
CSV_USAGE = {"train": "Training", "validation": "PublicTest", "test": "PrivateTest"}
SPLIT_ALIASES = {"validation": ("validation", "val", "valid"), "train": ("train", "training"), "test": ("test",)}
CACHE_VERSION = 1


@dataclass
class Dataset:
    x: np.ndarray  # (N, 48, 48, 1) uint8
    y: np.ndarray  # (N,) int32 index into `labels`
    labels: tuple[str, ...]
    source: str
    #: each face's file relative to `source` (folder sources; None for a CSV): how FER+ votes find their face
    files: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return len(self.y)

    def counts(self) -> dict[str, int]:
        return {c: int((self.y == i).sum()) for i, c in enumerate(self.labels)}

    def subset(self, keep) -> "Dataset":
        """The faces at `keep` (indices or a mask), with their file names."""
        files = None if self.files is None else tuple(np.asarray(self.files, dtype=object)[keep])
        return Dataset(x=self.x[keep], y=self.y[keep], labels=self.labels, source=self.source, files=files)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "emotion-engine"


def _split_dir(root: Path, split: str) -> Path:
    for name in SPLIT_ALIASES.get(split, (split,)):
        if (root / name).is_dir():
            return root / name
    raise UserError(f"no '{split}' folder in {root} (expected {root}/{split}/<class>/*.jpg)")


def _folder_files(split_dir: Path, classes: tuple[str, ...]) -> list[tuple[Path, int]]:
    found: dict[str, list[Path]] = {}
    for sub in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        cls = canonical_class(sub.name)
        if cls is None or cls not in classes:
            continue
        files = sorted(p for p in sub.iterdir() if p.suffix.lower() in IMAGE_EXTS)
        if not files:
            raise UserError(f"class folder {sub} has no images")
        found.setdefault(cls, []).extend(files)
    missing = [c for c in classes if c not in found]
    if missing:
        raise UserError(f"no folder for class {missing[0]!r} in {split_dir}")
    return [(f, classes.index(c)) for c in classes for f in found[c]]


def split_files(root: str | Path, split: str, classes: tuple[str, ...] = FER_CLASSES) -> list[tuple[Path, int]]:
    """(image path, class index) of a folder split, in the order load_split decodes it."""
    return _folder_files(_split_dir(Path(root), split), classes)


def cache_key(parts: list[str]) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode("utf-8", "surrogateescape"))
        h.update(b"\0")
    return h.hexdigest()[:20]


def save_npz(path: Path, compress: bool = True, **arrays: np.ndarray) -> None:
    """Write atomically so a killed run never leaves a truncated cache behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp.npz")
    os.close(fd)
    try:
        (np.savez_compressed if compress else np.savez)(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_arrays(path: Path, names: tuple[str, ...] = ("x", "y")) -> tuple[np.ndarray, ...] | None:
    """The named arrays of a cache file this project wrote, or None when absent or unreadable."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return tuple(z[k] for k in names)
    except Exception:  # a corrupt cache is rebuilt, never trusted
        return None


def _decode_folder(files: list[tuple[Path, int]], quiet: bool) -> tuple[np.ndarray, np.ndarray]:
    xs, ys, bad = [], [], 0
    for i, (path, label) in enumerate(files):
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if img is None or img.size == 0:
            print(f"warning: skipping unreadable image {path}", file=sys.stderr)
            bad += 1
            continue
        xs.append(to_face48(img))
        ys.append(label)
        if not quiet and (i + 1) % 5000 == 0:
            print(f"  decoded {i + 1}/{len(files)} images", file=sys.stderr)
    if not xs:
        raise UserError("no readable images found")
    return np.stack(xs)[..., None], np.asarray(ys, dtype=np.int32)


def _load_csv(path: Path, split: str, classes: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    usage = CSV_USAGE.get(split)
    if usage is None:
        raise UserError(f"unknown split {split!r} for a CSV source: use {', '.join(CSV_USAGE)}")
    xs, ys = [], []
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        need = {"emotion", "pixels"}
        if reader.fieldnames is None or not need <= set(reader.fieldnames):
            raise UserError(f"{path} is not a fer2013.csv (needs columns emotion,pixels[,Usage])")
        for lineno, row in enumerate(reader, start=2):
            if row.get("Usage", usage) != usage:
                continue
            try:
                cls = FER_CLASSES[int(row["emotion"])]
                pix = np.array(row["pixels"].split(), dtype=np.float32)
                side = int(round(np.sqrt(pix.size)))
                if side * side != pix.size:
                    raise ValueError
            except (ValueError, IndexError, TypeError, AttributeError):
                print(f"warning: skipping malformed row {lineno} of {path}", file=sys.stderr)
                continue
            if cls not in classes:
                continue
            xs.append(to_face48(pix.reshape(side, side)))
            ys.append(classes.index(cls))
    if not xs:
        raise UserError(f"{path} has no usable rows for split {split!r} ({usage})")
    return np.stack(xs)[..., None], np.asarray(ys, dtype=np.int32)


def load_split(
    source: str | Path,
    split: str,
    classes: tuple[str, ...] = FER_CLASSES,
    cache_dir: str | Path | None = None,
    quiet: bool = False,
) -> Dataset:
    """Load one split (`train`, `validation`) of a folder tree or a fer2013.csv."""
    src = Path(source)
    if not src.exists():
        raise UserError(f"data source {src} does not exist")
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    if src.is_file():
        st = src.stat()
        key = cache_key([f"v{CACHE_VERSION}", "csv", str(src.resolve()), str(st.st_size), str(st.st_mtime_ns), split, *classes])
        names = None
        loader = lambda: _load_csv(src, split, classes)  # noqa: E731
    else:
        files = _folder_files(_split_dir(src, split), classes)
        listing = [f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns}:{lab}" for p, lab in files]
        key = cache_key([f"v{CACHE_VERSION}", "dir", str(src.resolve()), split, *classes, *listing])
        loader = lambda: _decode_folder(files, quiet)  # noqa: E731
        names = tuple(p.relative_to(src).as_posix() for p, _ in files)
    path = cache / f"{src.name}-{split}-{key}.npz"
    hit = load_arrays(path)
    if hit is None:
        if not quiet:
            print(f"decoding {split} split of {src} (cached afterwards in {path})", file=sys.stderr)
        x, y = loader()
        save_npz(path, x=x, y=y)
    else:
        x, y = hit
    return Dataset(x=x, y=y, labels=tuple(classes), source=str(src), files=names)


def face_keys(x: np.ndarray) -> np.ndarray:
    """A 64-bit digest of each face's pixels: how soft labels find their face in a split that another
    loader decoded in another order (this module sorts class folders by name, `models.gpu_teacher pack`
    keeps FER order), and how copies of one face are found across splits."""
    flat = np.ascontiguousarray(x.reshape(len(x), -1), np.uint8)
    return np.array([int.from_bytes(hashlib.blake2b(r.tobytes(), digest_size=8).digest(), "little") for r in flat], np.uint64)


def seen_mask(faces: np.ndarray, other: np.ndarray) -> np.ndarray:
    """True for each face whose exact pixels also occur in `other`. Why: FER2013 has copies across its
    splits (280 of the 3,589 PublicTest faces are training faces, 267 with the same label), and a net
    that memorised its training faces scores ~90% on those; accuracy on the rest is what it has learnt."""
    return np.isin(face_keys(faces), face_keys(other))
