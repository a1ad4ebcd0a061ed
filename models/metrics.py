"""Classification figures computed with numpy only (no scikit-learn, no TensorFlow): what evaluate, export,
FER+ scoring and the benchmarks report, from one place."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def balanced_accuracy(confusion) -> float:
    """Mean per-class recall over the classes present. Why beside accuracy: FER2013 is 25% happy and
    1.5% disgust, so a model can gain accuracy while going blind to the rare emotions; this does not."""
    cm = np.asarray(confusion, dtype=np.float64)
    support = cm.sum(axis=1)
    present = support > 0
    return float((np.diag(cm)[present] / support[present]).mean()) if present.any() else 0.0


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str]) -> dict:
    n = len(labels)
    cm = np.zeros((n, n), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    per_class = {}
    for i, name in enumerate(labels):
        tp = cm[i, i]
        prec = tp / cm[:, i].sum() if cm[:, i].sum() else 0.0
        rec = tp / cm[i, :].sum() if cm[i, :].sum() else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        per_class[name] = {"precision": float(prec), "recall": float(rec), "f1": float(f1), "support": int(cm[i, :].sum())}
    return {
        "accuracy": float((y_true == y_pred).mean()) if len(y_true) else 0.0,
        "balanced_accuracy": balanced_accuracy(cm),
        "macro_f1": float(np.mean([v["f1"] for v in per_class.values()])),
        "per_class": per_class,
        "confusion": cm.tolist(),
        "labels": list(labels),
        "n": int(len(y_true)),
    }
