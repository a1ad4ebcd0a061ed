"""Which training faces form k-fold fold I, and how answers keyed by face find their faces again.

Why one module for both toolchains: a PyTorch fold (`python -m models.gpu_teacher train --folds K
--fold I`) and a Keras fold (`python -m models.train --folds K --fold I`, models.kfold) must leave out
exactly the same faces, so that `python -m models.gpu_teacher oof` can average any mix of them; the
split depends on class numbers and face digests (models.data.face_keys) only, not on the order the
faces were read in. numpy only: no PyTorch, no TensorFlow.
"""
from __future__ import annotations

import numpy as np

FOLD_SEED = 2026  #: one split for every architecture and seed: their out-of-fold answers can be averaged


def fold_of(y: np.ndarray, folds: int, keys: np.ndarray | None = None) -> np.ndarray:
    """Fold number (0..folds-1) of each training face: stratified (each class dealt round-robin over
    the folds after a shuffle fixed by FOLD_SEED), so every fold holds the rare classes too and every
    net trained with the same k, whatever its seed, leaves out exactly the same faces.

    `keys` (face_keys): identical faces form one group and go to one fold together. FER2013's training
    split holds ~2,300 faces in exact-duplicate groups (~8%); split across folds, a net would "not have
    trained on" a face whose twin it learnt by heart. A group is dealt with the class most of its copies
    carry."""
    if keys is None:
        keys = np.arange(len(y), dtype=np.uint64)
    _, group = np.unique(keys, return_inverse=True)
    n_groups = int(group.max()) + 1 if len(group) else 0
    votes = np.zeros((n_groups, int(y.max()) + 1 if len(y) else 1), np.int64)
    np.add.at(votes, (group, y), 1)
    gclass = votes.argmax(1)
    gfold = np.empty(n_groups, np.int64)
    rng = np.random.default_rng(FOLD_SEED)
    for c in np.unique(gclass):
        idx = np.flatnonzero(gclass == c)
        gfold[rng.permutation(idx)] = np.arange(len(idx)) % folds
    return gfold[group]


def find_keys(uniq: np.ndarray, want: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(position in `uniq`, found?) of each of `want`'s face keys; `uniq` sorted and unique (np.unique).
    The one lookup of keyed answers: soft labels for a training set, a Keras fold's answers in a pack."""
    if not len(uniq):
        return np.zeros(len(want), np.int64), np.zeros(len(want), bool)
    pos = np.searchsorted(uniq, want).clip(0, len(uniq) - 1)
    return pos, uniq[pos] == want
