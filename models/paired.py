"""Two models on the same clear-expression faces: who is right where, and whether the difference is more than chance.

Why apart from models.ferplus (the votes and how FER+ is scored): a paired comparison answers a different question,
"is the new model worse on these faces?", which per-class recall alone cannot answer when a class has 26 or 5 faces.
`benchmarks/ferplus.py --pair OLD,NEW` prints it.
"""
from __future__ import annotations

import math

import numpy as np

from models.ferplus import Votes


def paired_clear(old_pred: np.ndarray, new_pred: np.ndarray, votes: Votes) -> dict[str, dict]:
    """Two models on the same clear-expression faces, per class and for all of them ("all"): faces right by each,
    right by only one, and the exact McNemar p-value (two-sided binomial test on the faces only one gets right).

    Why: the rare classes have few clear faces (validation: 26 fear, 5 disgust), so "fewer right" can be one face;
    the paired test says whether a difference is more than the luck of which faces the split holds."""
    clear = votes.clear()
    ok_old, ok_new = old_pred == votes.majority, new_pred == votes.majority
    rows = {}
    groups = [(name, clear & (votes.majority == j)) for j, name in enumerate(votes.labels)] + [("all", clear)]
    for name, m in groups:
        if not m.any():
            continue
        only_new, only_old = int((ok_new & ~ok_old)[m].sum()), int((ok_old & ~ok_new)[m].sum())
        rows[name] = {"faces": int(m.sum()), "old": int(ok_old[m].sum()), "new": int(ok_new[m].sum()),
                      "only_new": only_new, "only_old": only_old, "p": mcnemar_exact(only_new, only_old)}
    return rows


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for b and c discordant pairs: P(a split at least this uneven | 50/50)."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2 ** n
    return min(1.0, 2 * tail)
