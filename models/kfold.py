"""k-fold teachers trained by `models.train --folds K --fold I` (Keras, on this CPU or any machine).

Why: a teacher that trained on a face answers it from memory, and a student distilled on those answers
learns over-confidence (models.gpu_teacher's caveat). Out-of-fold labels fix that: K nets, each trained
without one fold, label only that fold. The GPU path (`models.gpu_teacher train --folds`) trains
PyTorch ResNets in one lease; this is the same split for the Keras architectures, resumable epoch by
epoch across sessions (`--resume`), so a machine without a GPU can make the labels over days.

The split is models.teacher.folds.fold_of's, computed on FER2013 class numbers and face digests: it does
not depend on the order the faces were read in, so a Keras fold I and a PyTorch fold I leave out
exactly the same faces, and `python -m models.gpu_teacher oof` averages any mix of them.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from engine.core.contract import FER_CLASSES
from engine.core.errors import UserError
from engine.core.preprocess import flip_answers
from models.data import Dataset, face_keys
from models.teacher.folds import fold_of

#: what a run writes beside emotion.keras: its answers for the held-out fold and for validation
ANSWERS_NAME = "fold_answers.npz"


def check_classes(labels) -> None:
    """Out-of-fold labels are for the 7-class teacher: a subset would change which faces exist, so the
    folds would no longer match other runs'."""
    if tuple(labels) != tuple(FER_CLASSES):
        raise UserError(f"--folds needs all 7 classes in FER2013 order ({','.join(FER_CLASSES)}), not {','.join(labels)}")


def split(ds: Dataset, folds: int, fold: int) -> tuple[Dataset, Dataset]:
    """(faces to train on, held-out fold I) of a training set; see the module docstring."""
    check_classes(ds.labels)
    f = fold_of(ds.y.astype(np.int64), folds, face_keys(ds.x))
    return ds.subset(f != fold), ds.subset(f == fold)


def write_answers(model, held: Dataset, val: Dataset, meta: dict, path: Path) -> dict:
    """The trained net's plain and flip-averaged probabilities for the held-out faces (keyed by their
    pixels) and for validation, in the file layout `models.gpu_teacher oof` merges."""
    from export.verify import keras_probabilities

    def answers(x):
        return flip_answers(lambda b: keras_probabilities(model, b), x)

    hp, hf = answers(held.x)
    vp, vf = answers(val.x)
    meta = {**meta, "kind": "keras", "width": "", "val": float(np.mean(vp.argmax(1) == val.y)),
            "val_tta": float(np.mean(vf.argmax(1) == val.y)), "oof_accuracy_tta": float(np.mean(hf.argmax(1) == held.y)),
            "held_faces": len(held)}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), oof_keys=face_keys(held.x), oof_probs=hp,
             oof_probs_tta=hf, val_keys=face_keys(val.x), val_probs=vp, val_probs_tta=vf, val_y=val.y)
    return meta
