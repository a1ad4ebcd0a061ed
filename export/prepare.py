"""What an export starts from, checked before anything is converted: the formats asked for, the
options, the .keras model against the model contract, and the calibration / validation faces."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from engine.core.contract import FACE_SIZE, FER_CLASSES, SPEC_NAME, ModelSpec
from engine.core.errors import UserError
from engine.core.formats import names as format_names
from engine.core.keras_io import load_keras
from engine.core.logs import log, quiet
from engine.io.sources import IMAGE_EXTS
from models.data import Dataset

#: export's format names, in the order it writes them (engine/core/formats.py's table)
FORMATS: tuple[str, ...] = format_names()
SEED = 0


def parse_formats(formats: str | Iterable[str] | None) -> tuple[str, ...]:
    """`"tflite-int8,onnx-fp32"` or a list -> canonical-order tuple; unknown names are a UserError."""
    if formats is None:
        return FORMATS
    requested = formats.split(",") if isinstance(formats, str) else list(formats)
    requested = [n.strip().lower() for n in requested if n and n.strip()]
    unknown = [n for n in requested if n not in FORMATS]
    if unknown:
        raise UserError(f"unknown format {unknown[0]!r}: choose from {', '.join(FORMATS)}")
    if not requested:
        raise UserError(f"no format given: choose from {', '.join(FORMATS)}")
    return tuple(f for f in FORMATS if f in requested)


def check_options(model_path: str | os.PathLike, out_dir: str | os.PathLike | None, calib_size: int,
                  verify_size: int | None, threads: int) -> tuple[Path, Path]:
    """(the model file, the output folder), or a UserError naming the flag that is wrong."""
    model_path = Path(model_path).expanduser()
    if not model_path.is_file():
        raise UserError(f"model file {model_path} does not exist")
    if calib_size < 1:
        raise UserError("--calib-size must be at least 1")
    if verify_size is not None and verify_size < 1:
        raise UserError("--verify-size must be at least 1")
    if threads < 1:
        raise UserError("--threads must be at least 1")
    out = Path(out_dir).expanduser() if out_dir else model_path.parent
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")
    return model_path, out


def source_spec(model_path: Path) -> ModelSpec | None:
    """The labels.json next to the model, if there is one."""
    if not (model_path.parent / SPEC_NAME).exists():
        return None
    return ModelSpec.load(model_path.parent)


def calib_source(calib: str | os.PathLike | None, spec: ModelSpec | None, model_path: Path) -> Path:
    """--calib, else the training data named in the model's labels.json; checked to hold images."""
    origin = ""
    if calib is None:
        options = spec.extra.get("options") if spec is not None and isinstance(spec.extra, dict) else None
        data = options.get("data") if isinstance(options, dict) else None
        calib = str(data) if data else None
        origin = f"{model_path.parent / SPEC_NAME} extra.options.data"
        if calib is None:
            raise UserError("no calibration data: pass --calib DATA (a folder with train/ and validation/<class>/ images, or a fer2013.csv)")
    path = Path(calib).expanduser()
    where = f" (from {origin})" if origin else ""
    if not path.exists():
        raise UserError(f"calibration data {path}{where} does not exist")
    if path.is_dir():
        has_image = any(p.suffix.lower() in IMAGE_EXTS for p in path.rglob("*") if p.is_file())
        if not has_image:
            raise UserError(
                f"calibration folder {path}{where} has no images "
                f"(expected {path}/train/<class>/*.jpg and {path}/validation/<class>/*.jpg, or a fer2013.csv)"
            )
    return path


def load_checked_model(model_path: Path, spec: ModelSpec | None):
    """(the Keras model, its ModelSpec) after checking one 48x48x1 input and one output per label."""
    with quiet():
        model = load_keras(model_path)
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise UserError(f"{model_path.name} has {len(model.inputs)} inputs and {len(model.outputs)} outputs; the contract is one face batch in, one probability vector out")
    shape = [d for d in model.input_shape[1:]]
    if shape != [FACE_SIZE, FACE_SIZE, 1]:
        raise UserError(f"{model_path.name} takes input {'x'.join(str(d) for d in shape)}, not the contract's 48x48x1 gray faces")
    n_out = int(model.output_shape[-1])
    if spec is None:
        if n_out != len(FER_CLASSES):
            raise UserError(f"no {SPEC_NAME} next to {model_path} and its {n_out} outputs are not the 7 FER2013 classes: add a {SPEC_NAME}")
        log(f"warning: no {SPEC_NAME} next to {model_path}; assuming the 7 FER2013 classes in canonical order")
        spec = ModelSpec(labels=list(FER_CLASSES))
    labels = tuple(spec.labels)
    if n_out != len(labels):
        raise UserError(f"{model_path.name} outputs {n_out} values but its {SPEC_NAME} lists {len(labels)} classes")
    unknown = [c for c in labels if c not in FER_CLASSES]
    if unknown:
        raise UserError(f"{SPEC_NAME} lists unknown class {unknown[0]!r}")
    log(f"loaded {model_path} ({model.count_params():,} params, {len(labels)} classes: {', '.join(labels)})")
    return model, spec


def stratified_indices(y: np.ndarray, n: int, n_classes: int, seed: int = SEED) -> np.ndarray:
    """Up to n indices taken round-robin over the classes (each class shuffled), so rare
    classes are as present as common ones until they run out; sorted."""
    rng = np.random.default_rng(seed)
    pools = [list(rng.permutation(np.flatnonzero(y == c))) for c in range(n_classes)]
    picked: list[int] = []
    while len(picked) < n and any(pools):
        for pool in pools:
            if pool and len(picked) < n:
                picked.append(int(pool.pop()))
    return np.sort(np.asarray(picked, dtype=np.int64))


def _subset(ds: Dataset, idx: np.ndarray) -> Dataset:
    return ds.subset(idx)


@dataclass
class Faces:
    calib_x: np.ndarray  #: class-stratified training faces for int8 calibration (0 and 255 present)
    pixel_range: list[int]  #: their pixel range before pinning
    val: Dataset  #: the validation faces every file is verified on
    val_seen: np.ndarray | None = None  #: which of them are pixel copies of training faces (models.data.seen_mask)
    val_votes: object | None = None  #: their FER+ votes (models.ferplus.Votes) where the data folder has ferplus.csv


def load_faces(calib_path: Path, labels: tuple[str, ...], calib_size: int, verify_size: int | None,
               cache_dir: str | os.PathLike | None) -> Faces:
    from models.data import load_split, seen_mask

    log(f"loading calibration and validation faces from {calib_path}...")
    train = load_split(calib_path, "train", labels, cache_dir, quiet=True)
    val = load_split(calib_path, "validation", labels, cache_dir, quiet=True)
    cal = _subset(train, stratified_indices(train.y, calib_size, len(labels)))
    if verify_size is not None and verify_size < len(val):
        rng = np.random.default_rng(SEED)
        val = _subset(val, np.sort(rng.permutation(len(val))[:verify_size]))
    calib_x = cal.x.copy()
    pixel_range = [int(calib_x.min()), int(calib_x.max())]
    if pixel_range != [0, 255]:
        # The int8 input quantization is derived from the calibrated input range; pinning it to
        # 0..255 (one pixel each) gives scale 1.0 / zero point 0 so raw bytes go straight in.
        calib_x[0, 0, 0, 0], calib_x[0, 0, 1, 0] = 0, 255
        log(f"  calibration faces span {pixel_range[0]}..{pixel_range[1]}; pinned one pixel each to 0 and 255")
    from models.evaluate import ferplus_votes

    return Faces(calib_x, pixel_range, val, seen_mask(val.x, train.x), ferplus_votes(val) if val.files else None)
