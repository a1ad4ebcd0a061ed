"""FER2013's JPEG folders as one .npz that travels with the repository to the GPU machine, and back
to faces there (`python -m models.gpu_teacher pack`).

Why: the lent GPU machine reaches nothing outside it, so the data set must fit in what a run
carries. Every FER2013 file shares its JPEG header up to the scan; storing it once makes the pack
~49 MB, and decoding header + body with cv2 gives exactly the faces training reads here.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from engine.core.contract import FER_CLASSES
from engine.core.errors import UserError

CLASSES = FER_CLASSES
SPLITS = ("train", "validation")


def _split_bytes(data: Path, split: str, header: bytes | None) -> tuple[list[np.ndarray], list[int], bytes | None]:
    """(JPEG bodies after the shared header, class numbers, the header) of one split's files."""
    bodies, labels = [], []
    for i, c in enumerate(CLASSES):
        files = sorted((data / split / c).glob("*.jpg"))
        if not files:
            raise UserError(f"no .jpg faces in {data / split / c} (pack reads FER2013's JPEG folders)")
        for f in files:
            b = f.read_bytes()
            k = b.find(b"\xff\xda")
            end = k + 2 + int.from_bytes(b[k + 2:k + 4], "big")
            if header is None:
                header = b[:end]
            if k < 0 or b[:end] != header:
                raise UserError(f"{f} has another JPEG header than the first file (pack stores FER2013's one header once)")
            bodies.append(np.frombuffer(b[end:], np.uint8))
            labels.append(i)
    return bodies, labels, header


def pack(data: Path, out: Path) -> None:
    """Every FER2013 file shares its JPEG header up to the scan; storing it once saves 9 MB."""
    arrays: dict[str, np.ndarray] = {}
    header = None
    for split in SPLITS:
        bodies, labels, header = _split_bytes(data, split, header)
        arrays[f"{split}_bytes"] = np.concatenate(bodies)
        arrays[f"{split}_off"] = np.cumsum([0] + [len(b) for b in bodies]).astype(np.int64)
        arrays[f"{split}_y"] = np.array(labels, np.int64)
        print(f"{split}: {len(bodies)} faces")
    arrays["header"] = np.frombuffer(header, np.uint8)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, **arrays)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")


def load(pack_file: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(faces uint8 (N, 48, 48), labels (N,)) of one split of a pack, decoded as cv2 reads the files."""
    if not Path(pack_file).is_file():
        raise UserError(f"no pack at {pack_file}: make one with `python -m models.gpu_teacher pack`")
    try:
        d = np.load(pack_file)  # plain arrays: allow_pickle stays False
        header, body, off = d["header"].tobytes(), d[f"{split}_bytes"], d[f"{split}_off"]
    except (OSError, ValueError, KeyError, AttributeError, IndexError, TypeError) as exc:
        raise UserError(f"{pack_file} is not a pack (`python -m models.gpu_teacher pack` writes one; {type(exc).__name__})") from None
    x = np.stack([cv2.imdecode(np.frombuffer(header + body[off[i]:off[i + 1]].tobytes(), np.uint8),
                               cv2.IMREAD_GRAYSCALE) for i in range(len(off) - 1)])
    return x, d[f"{split}_y"]
