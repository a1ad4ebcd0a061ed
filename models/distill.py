"""The teacher pool for distillation (`python -m models.train --teacher T --teacher-pool P`).

Why a pool: the accurate model that makes the best teacher (the averaged emonet_s, ~480M
MACs per face) costs far more per batch than the 15M-MAC student it teaches, so running it
on every augmented batch makes a student epoch 3-4x slower on a 2-core CPU. Instead, P
augmented copies of the training set are made once, labelled once by the teacher's fastest
export (an int8 TFLite file runs at ~1 ms/face here; a .keras teacher works too), and cached
next to the decoded datasets. A long student schedule then runs at the student's own speed.
The price: the student sees P fixed distortions of each face (plus a random mirror at
training time) instead of fresh ones every epoch.

Targets: by default each copy gets the teacher's answer for that distorted copy ("view").
With "clean" every copy of a face gets the teacher's answer for the undistorted face (its
mirror image averaged in), and the first copy is the undistorted set: the student is taught
to give a face one answer however it is framed (the engine's crops are framed unlike
FER2013's own). Measured, that did not make the engine agree with the direct 48x48 label
more often (benchmarks/results/README.md); with `--augment none` it is simply the cleanest
target for a last distillation stage (the shipped emonet_s's).
"""
from __future__ import annotations

import hashlib
import os
import sys
import time
from pathlib import Path

import numpy as np

import models.augment
from engine.core.contract import sha256_file
from engine.core.errors import UserError
from engine.core.preprocess import flip_average
from models.augment import Augment
from models.data import Dataset, cache_key, default_cache_dir, load_arrays, save_npz

POOL_VERSION = 1
BATCH = 512
TARGETS = ("view", "mirror", "clean")


def pool_key(ds: Dataset, teacher: str, copies: int, augment: str, resample: float, seed: int, targets: str = "view") -> str:
    """Everything the pool's contents depend on: the teacher file's bytes, the faces and
    their labels, the augmentation recipe and the augmentation code itself."""
    return cache_key([f"v{POOL_VERSION}", sha256_file(teacher), sha256_file(models.augment.__file__), str(BATCH), ds.source,
                      ",".join(ds.labels), str(len(ds)), augment, repr(resample), str(seed), str(copies),
                      hashlib.sha256(ds.y.astype(np.int32).tobytes()).hexdigest(), hashlib.sha256(ds.x.tobytes()).hexdigest()]
                     + ([] if targets == "view" else [f"targets={targets}"]))  # "view" pools keep their earlier keys


def _predict(clf, x: np.ndarray) -> np.ndarray:
    return np.concatenate([clf.predict(x[i:i + BATCH]) for i in range(0, len(x), BATCH)])


def teacher_pool(ds: Dataset, teacher: str, copies: int, augment: str = "strong", resample: float = 0.0,
                 seed: int = 42, cache_dir: str | Path | None = None,
                 targets: str = "view") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(faces uint8 (P*N, 48, 48, 1), labels (P*N,), teacher probabilities float16 (P*N, C)).

    Copy p is the whole training set through `Augment(augment, seed + 1009 * p, resample)`,
    rounded back to uint8 (what every backend receives). `targets`: "view" = the teacher's
    answer for each copy; "mirror" = its answers for each copy and that copy's mirror image,
    averaged (a better teacher at twice the labelling time: the average of emonet_s and emonet_s_steady
    goes from 69.13% to 69.60% on validation; emonet_f distilled from it did not gain); "clean" = its answer for the undistorted face and its mirror image,
    averaged, the same for every copy of that face, and copy 0 is the undistorted set itself."""
    if targets not in TARGETS:
        raise ValueError(f"pool targets {targets!r} not in {TARGETS}")
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    path = cache / f"teacher-pool-{pool_key(ds, teacher, copies, augment, resample, seed, targets)}.npz"
    hit = load_arrays(path, ("x", "y", "p"))
    if hit is not None:
        print(f"teacher pool: {len(hit[1])} faces from {path}", file=sys.stderr)
        return hit
    import tensorflow as tf

    from engine.classify.classifier import open_model_file

    clf = open_model_file(teacher, threads=os.cpu_count() or 1)
    try:
        if tuple(clf.labels) != tuple(ds.labels):
            raise UserError(f"teacher {Path(teacher).name} labels {clf.labels} differ from the data's {list(ds.labels)}")
        n = len(ds)
        xs = np.empty((copies * n, *ds.x.shape[1:]), np.uint8)
        ps = np.empty((copies * n, len(ds.labels)), np.float16)
        t0 = time.time()
        clean = None
        if targets == "clean":
            clean = flip_average(lambda faces: _predict(clf, faces), ds.x)
            print(f"teacher pool: {n} undistorted faces and their mirror images labelled by {Path(teacher).name}, "
                  f"{time.time() - t0:.0f}s", file=sys.stderr)
        for c in range(copies):
            # with clean targets copy 0 is the undistorted set: the anchor the other framings must match
            aug = None if clean is not None and c == 0 else Augment(augment, seed + 1009 * c, resample)
            for i in range(0, n, BATCH):
                xb = ds.x[i:i + BATCH]
                if aug is not None and aug.active:
                    xb = np.clip(np.rint(aug(tf.constant(xb, tf.float32)).numpy()), 0, 255).astype(np.uint8)
                xs[c * n + i:c * n + i + len(xb)] = xb
                if clean is not None:
                    ps[c * n + i:c * n + i + len(xb)] = clean[i:i + len(xb)]
                else:
                    ps[c * n + i:c * n + i + len(xb)] = flip_average(clf.predict, xb) if targets == "mirror" else clf.predict(xb)
            done = (c + 1) / copies
            print(f"teacher pool: copy {c + 1}/{copies} {'labelled by ' + Path(teacher).name if clean is None else 'made'}, "
                  f"{time.time() - t0:.0f}s, ~{(time.time() - t0) * (1 - done) / done:.0f}s left", file=sys.stderr)
    finally:
        clf.close()
    ys = np.tile(ds.y, copies).astype(ds.y.dtype)
    save_npz(path, compress=False, x=xs, y=ys, p=ps)
    print(f"teacher pool cached in {path}", file=sys.stderr)
    return xs, ys, ps


def with_votes(pool_probs: np.ndarray, votes: np.ndarray, weight: float) -> np.ndarray:
    """A pool's targets with FER+ votes mixed in (`--votes --teacher-pool`): copy p of face i gets
    weight x face i's vote shares + (1 - weight) x the teacher's answer for that copy. The pool is
    P whole copies of the training set in order, so the votes tile P times; float32, rows sum to 1."""
    copies, rest = divmod(len(pool_probs), len(votes))
    if rest:
        raise ValueError(f"a pool of {len(pool_probs)} faces is not whole copies of {len(votes)} faces")
    return (weight * np.tile(votes.astype(np.float32), (copies, 1)) + (1 - weight) * pool_probs.astype(np.float32)).astype(np.float32)


def read_soft_labels(path: str | Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(face keys, probabilities, class names) of a soft-label file; anything else is one sentence.
    Cheap: models.trainer calls it before any slow setup, as it checks --teacher and --init."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--soft-labels {path} does not exist (python -m models.gpu_teacher oof writes one)")
    try:
        d = np.load(path)  # plain arrays: allow_pickle stays False
        keys, probs, names = d["keys"], d["probs"], [str(n) for n in d["labels"]]
    except (OSError, ValueError, KeyError, AttributeError, IndexError, TypeError) as exc:
        raise UserError(f"--soft-labels {path} is not a soft-label file with keys, probs and labels "
                        f"(python -m models.gpu_teacher oof; {type(exc).__name__})") from None
    if probs.ndim != 2 or len(probs) != len(keys) or probs.shape[1] != len(names):
        raise UserError(f"--soft-labels {path}: {probs.shape} probabilities for {len(keys)} faces and {len(names)} classes")
    return keys, probs, names


def soft_labels(ds: Dataset, path: str | Path) -> np.ndarray:
    """One soft label per face of `ds` (its classes, in its order) from a `python -m models.gpu_teacher oof`
    file. Faces are found by their pixels (models.data.face_keys), not by position: the pack and
    models.data read the class folders in different orders. Identical faces (FER2013 has duplicates) get
    the mean of their labels. Classes outside `ds.labels` are dropped and each row renormalised."""
    from models.data import face_keys
    from models.teacher.folds import find_keys

    keys, probs, names = read_soft_labels(path)
    missing = [c for c in ds.labels if c not in names]
    if missing:
        raise UserError(f"--soft-labels {path} has no {', '.join(missing)} column")
    probs = probs[:, [names.index(c) for c in ds.labels]].astype(np.float64)
    uniq, inv = np.unique(keys, return_inverse=True)
    total = np.zeros((len(uniq), probs.shape[1]))
    np.add.at(total, inv, probs)
    total /= np.bincount(inv, minlength=len(uniq))[:, None]
    want = face_keys(ds.x)
    pos, found = find_keys(uniq, want)
    if not found.all():
        raise UserError(f"--soft-labels {path}: {int((~found).sum())} of {len(want)} training faces have no label "
                        "(made from another training set?)")
    out = total[pos]
    return (out / out.sum(1, keepdims=True).clip(1e-9)).astype(np.float32)
