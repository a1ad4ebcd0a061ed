"""k-fold nets -> one out-of-fold soft label per training face (`python -m models.gpu_teacher oof`).

Why: a teacher that saw a face answers it from memory (93.5% right, mean top probability 0.88 on its
own training faces), so a student distilled on those answers learns over-confidence, not the teacher's
judgement. Each face's label is the mean of the flip-averaged answers of the nets that did NOT train
on it. PyTorch folds (`train --folds K --fold I`, faces by pack position) and Keras folds
(`models.train --folds K --fold I` -> fold_answers.npz, faces by their pixels) mix freely; the file
written is keyed by face digest, for `models.train --soft-labels`.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from engine.core.contract import sha256_file
from engine.core.errors import UserError
from models.data import face_keys
from models.teacher.folds import find_keys
from models.teacher.pack import CLASSES, load


def load_run(f: Path):
    """(arrays, meta) of one `train` output; a missing or foreign file is one sentence, not a traceback."""
    if not Path(f).is_file():
        raise UserError(f"no trained net at {f}")
    try:
        d = np.load(f)  # plain arrays: allow_pickle stays False
        return d, json.loads(d["meta"].tobytes())
    except (OSError, ValueError, KeyError, AttributeError, IndexError, TypeError) as exc:
        raise UserError(f"{f} is not a `python -m models.gpu_teacher train` output ({type(exc).__name__})") from None


def _by_keys(keys: np.ndarray, probs: np.ndarray, pack_keys: np.ndarray, f: Path, pack_file: Path,
             every: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(pack positions, their probabilities) for answers keyed by face digest: every copy of a face in
    the pack gets its answer (identical pixels, identical answer). `every`: each pack face must have one
    (validation), else the run answered for another data set."""
    uniq, first = np.unique(keys, return_index=True)
    pos, hit = find_keys(uniq, pack_keys)
    if not np.isin(uniq, pack_keys).all() or (every and not hit.all()):
        raise UserError(f"{f} answered for faces that are not in {pack_file} (trained on another data set?)")
    return np.flatnonzero(hit), probs[first[pos[hit]]]


def _run_answers(f: Path, d, meta: dict, pack_file: Path, pack_sha: str, n_train: int, train_keys, val_keys):
    """(pack positions of its held-out faces, its TTA answers for them, its TTA validation answers) of one run."""
    if not meta.get("folds") or not {"oof_idx", "oof_keys"} & set(d.files):
        raise UserError(f"{f} was trained on every training face (no --folds): it has no out-of-fold answers")
    if "oof_keys" in d.files:  # a Keras run (models.train --folds): faces found by their pixels
        idx, probs = _by_keys(d["oof_keys"], d["oof_probs_tta"], train_keys, f, pack_file)
        _, vf = _by_keys(d["val_keys"], d["val_probs_tta"], val_keys, f, pack_file, every=True)
        return idx, probs, vf
    idx, probs, vf = d["oof_idx"], d["oof_probs_tta"], d["val_probs_tta"]
    if meta.get("pack_sha256", pack_sha) != pack_sha or idx.max(initial=-1) >= n_train:
        raise UserError(f"{f} was trained on another pack than {pack_file}")
    return idx, probs, vf


def merge_oof(files: list[Path], pack_file: Path, out: Path) -> dict:
    """k-fold runs (any mix of architectures and seeds) -> one soft label per training face: the mean
    of the flip-averaged answers of the nets that did NOT train on it. Why: a teacher that saw a face
    answers it from memory (93.5% right, mean top probability 0.88 on its own training faces), so a
    student distilled on those answers learns over-confidence, not the teacher's judgement."""
    xtr, ytr = load(pack_file, "train")
    total, count = np.zeros((len(ytr), len(CLASSES))), np.zeros(len(ytr), np.int64)
    val, folds_seen = [], {}
    pack_sha = sha256_file(pack_file)
    xva, yva = load(pack_file, "validation")
    train_keys, val_keys = face_keys(xtr), face_keys(xva)
    for f in files:
        d, meta = load_run(f)
        idx, probs, vf = _run_answers(f, d, meta, pack_file, pack_sha, len(ytr), train_keys, val_keys)
        total[idx] += probs
        count[idx] += 1
        val.append(vf)
        folds_seen.setdefault((meta["arch"], meta["width"], meta["folds"]), set()).add(meta["fold"])
    missing = int((count == 0).sum())
    if missing:
        groups = "; ".join(f"{a}{w} k={k}: folds {sorted(s)}" for (a, w, k), s in folds_seen.items())
        raise UserError(f"{missing} training faces have no out-of-fold answer ({groups}): train the missing folds")
    probs = (total / count[:, None]).astype(np.float32)
    va = np.mean(val, axis=0)
    report = dict(nets=len(files), groups={f"{a}{w} k={k}": sorted(s) for (a, w, k), s in folds_seen.items()},
                  oof_accuracy=float(np.mean(probs.argmax(1) == ytr)), oof_mean_top=float(probs.max(1).mean()),
                  val_accuracy_mean_of_nets=float(np.mean(va.argmax(1) == yva)), answers_per_face=float(count.mean()))
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, keys=face_keys(xtr), probs=probs, y=ytr, labels=np.array(CLASSES),
             meta=np.frombuffer(json.dumps(report).encode(), np.uint8))
    print(f"wrote {out}: {json.dumps(report)}")
    return report
