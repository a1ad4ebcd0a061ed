"""FER+ votes: what ten annotators saw in each FER2013 face (`ferplus.csv` next to the data's class folders).

Why: FER2013's one label per face came from a keyword search; FER+'s ten annotators agree with it on only 62%
of faces, mostly calling "neutral" what FER2013 calls sad, angry or afraid. Training on the vote
distribution and scoring against the majority is what makes the emotion on the screen the one people see.

The CSV has one row per JPEG (`file` relative to the data root) with vote counts per FER+ emotion, plus
`unknown` and `NF` ("not a face"). Rules, in one place for training, evaluation and the benchmarks:
- votes for `unknown` / `NF`, and for emotions outside the model's classes (e.g. `contempt` for a 7-class
  model), are dropped and the rest renormalised (the FER+ paper's treatment of unknown / NF);
- a face with no row, or no vote left after dropping, has no distribution (`has` False): training keeps its
  FER2013 label for it (one-hot), evaluation leaves it out;
- the **majority** (FER+ protocol): the most-voted of all ten columns; faces whose majority is `unknown` / `NF`,
  a class outside the model's, or a tie for the top count are left out of majority scoring (-1).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.core.contract import canonical_class
from engine.core.errors import UserError

CSV_NAME = "ferplus.csv"
#: FER+ columns in the file, then the two that are not emotions
EMOTION_COLUMNS = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt")
OTHER_COLUMNS = ("unknown", "NF")
#: a face counts as a clear expression when at least this many of ten chose one non-neutral emotion
CLEAR_VOTES = 7


def _class_name(column: str) -> str:
    return canonical_class(column) or column  # 'happiness' -> 'happy'; 'contempt' stays 'contempt'


@dataclass
class Votes:
    """Per face of a split (in the split's own order): vote distribution over `labels`, whether it has one,
    the majority index into `labels` (-1: left out of majority scoring) and the raw counts."""

    labels: tuple[str, ...]
    probs: np.ndarray  # (N, C) float32, rows sum to 1 where `has`, else 0
    has: np.ndarray  # (N,) bool
    majority: np.ndarray  # (N,) int32, -1 where left out
    top_votes: np.ndarray  # (N,) int32: votes for the majority emotion (0 where none)

    @property
    def scored(self) -> np.ndarray:
        return self.majority >= 0

    def clear(self, neutral_ok: bool = False) -> np.ndarray:
        """Faces where >= CLEAR_VOTES of ten chose the same (non-neutral unless `neutral_ok`) emotion."""
        keep = self.scored & (self.top_votes >= CLEAR_VOTES)
        if not neutral_ok and "neutral" in self.labels:
            keep &= self.majority != self.labels.index("neutral")
        return keep


def find_csv(data: str | Path, path: str | Path | None = None) -> Path:
    """The votes file: `path` if given, else `ferplus.csv` in the data folder."""
    p = Path(path) if path else Path(data) / CSV_NAME
    if not p.is_file():
        raise UserError(f"no FER+ votes file {p} (ferplus.csv with one row per training / validation JPEG)")
    return p


def read_csv(path: str | Path) -> dict[str, np.ndarray]:
    """{relative file: 10 vote counts in EMOTION_COLUMNS + OTHER_COLUMNS order}."""
    path = Path(path)
    out: dict[str, np.ndarray] = {}
    try:
        with open(path, newline="") as f:
            rows = csv.DictReader(f)
            need = {"file", *EMOTION_COLUMNS, *OTHER_COLUMNS}
            if not rows.fieldnames or not need <= set(rows.fieldnames):
                missing = sorted(need - set(rows.fieldnames or ()))
                raise UserError(f"{path} is not a FER+ votes file (no column {', '.join(missing)})")
            for row in rows:
                out[row["file"]] = np.array([int(row[c]) for c in (*EMOTION_COLUMNS, *OTHER_COLUMNS)], np.int32)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise UserError(f"cannot read FER+ votes {path}: {e}") from None
    return out


def votes_for(files: list[str], table: dict[str, np.ndarray], labels: tuple[str, ...]) -> Votes:
    """Votes for `files` (paths relative to the data root, in the split's order) over the model's `labels`."""
    names = [_class_name(c) for c in EMOTION_COLUMNS]
    cols = [names.index(c) if c in names else -1 for c in labels]
    n = len(files)
    counts = np.zeros((n, len(EMOTION_COLUMNS) + len(OTHER_COLUMNS)), np.int32)
    known = np.zeros(n, bool)
    for i, f in enumerate(files):
        row = table.get(f)
        if row is not None:
            counts[i], known[i] = row, True
    kept = np.stack([counts[:, c] if c >= 0 else np.zeros(n, np.int32) for c in cols], 1).astype(np.float32)
    total = kept.sum(1)
    has = known & (total > 0)
    probs = np.where(has[:, None], kept / np.maximum(total, 1)[:, None], 0).astype(np.float32)
    top = counts.max(1)
    winner = counts.argmax(1)
    tie = (counts == top[:, None]).sum(1) > 1
    col_to_label = {c: j for j, c in enumerate(cols) if c >= 0}
    majority = np.array([col_to_label.get(int(w), -1) for w in winner], np.int32)
    majority[~known | tie | (top == 0)] = -1
    return Votes(labels=tuple(labels), probs=probs, has=has, majority=majority,
                 top_votes=np.where(majority >= 0, top, 0).astype(np.int32))


def dataset_votes(ds, csv_path: str | Path | None = None) -> Votes:
    """Votes for each face of a models.data.Dataset loaded from a folder (its `files`, in its order)."""
    if ds.files is None:
        raise UserError(f"FER+ votes need the class-folder layout (a face's file names it in {CSV_NAME}); {ds.source} is a CSV")
    path = find_csv(ds.source, csv_path)
    votes = votes_for(list(ds.files), read_csv(path), ds.labels)
    if not votes.has.any():
        raise UserError(f"{path} has no votes for any face of {ds.source} (votes for another data folder?)")
    return votes


def targets(votes: Votes, y: np.ndarray) -> np.ndarray:
    """Training targets: the vote distribution, or the FER2013 label one-hot for a face without votes."""
    onehot = np.eye(len(votes.labels), dtype=np.float32)[y]
    return np.where(votes.has[:, None], votes.probs, onehot).astype(np.float32)


# --- scoring: what users see -------------------------------------------------------------------------------------

ECE_BINS = 15


def calibration(conf: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> dict:
    """Expected calibration error over `bins` equal-width confidence bins, and the bins themselves (for the
    reliability plot). Why: the overlay, JSONL and live view print `confidence`; it should mean how often
    the label is right."""
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        m = which == b
        if not m.any():
            continue
        acc, mean_conf = float(correct[m].mean()), float(conf[m].mean())
        ece += m.mean() * abs(acc - mean_conf)
        rows.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "n": int(m.sum()), "accuracy": acc, "confidence": mean_conf})
    return {"ece": float(ece), "bins": rows}


def report(probs: np.ndarray, votes: Votes, fer_y: np.ndarray | None = None) -> dict:
    """FER+ scoring of one model's probabilities on a split: majority accuracy, balanced accuracy, per-class
    recall, calibration, recall on clear expressions (>= CLEAR_VOTES of ten), and FER2013-label accuracy beside."""
    from models.metrics import classification_report

    m = votes.scored
    pred = probs.argmax(1)
    rep = classification_report(votes.majority[m], pred[m], votes.labels)
    conf = probs.max(1)
    cal = calibration(conf[m], pred[m] == votes.majority[m])
    clear = votes.clear()
    clear_recall = {}
    for j, name in enumerate(votes.labels):
        sel = clear & (votes.majority == j)
        if sel.any():
            clear_recall[name] = {"recall": float((pred[sel] == j).mean()), "faces": int(sel.sum())}
    out = {
        "protocol": "FER+ majority of ten annotators; unknown / not-a-face majorities, ties and classes outside the model's left out",
        "faces": int(m.sum()),
        "accuracy": rep["accuracy"],
        "balanced_accuracy": rep["balanced_accuracy"],
        "recall": {k: v["recall"] for k, v in rep["per_class"].items()},
        "support": {k: v["support"] for k, v in rep["per_class"].items()},
        "confusion": rep["confusion"],
        "labels": list(votes.labels),
        "ece": cal["ece"],
        "ece_bins": ECE_BINS,
        "reliability": cal["bins"],
        "mean_confidence": float(conf[m].mean()) if m.any() else None,
        "clear": {"min_votes": CLEAR_VOTES, "faces": int(clear.sum()),
                  "accuracy": float((pred[clear] == votes.majority[clear]).mean()) if clear.any() else None,
                  "recall": clear_recall},
    }
    if fer_y is not None:
        out["fer2013_accuracy"] = float((pred == fer_y).mean())
    return out


def report_text(r: dict, name: str = "") -> str:
    """The lines a person reads first: FER+ accuracy, balanced, neutral recall, calibration, then FER2013 beside."""
    lead = f"{name}: " if name else ""
    rec = ", ".join(f"{k} {v:.2f}" for k, v in r["recall"].items())
    lines = [f"{lead}FER+ majority accuracy {r['accuracy'] * 100:.2f}% on {r['faces']:,} faces (balanced {r['balanced_accuracy'] * 100:.2f}%); "
             f"ECE {r['ece']:.3f} ({r['ece_bins']} bins)",
             f"  recall: {rec}"]
    c = r["clear"]
    if c["faces"]:
        cr = ", ".join(f"{k} {v['recall']:.2f} ({v['faces']})" for k, v in c["recall"].items())
        lines.append(f"  clear expressions (>= {c['min_votes']}/10 agree, {c['faces']} faces): {c['accuracy'] * 100:.2f}%; {cr}")
    if "fer2013_accuracy" in r:
        lines.append(f"  FER2013-label accuracy (the old single labels): {r['fer2013_accuracy'] * 100:.2f}%")
    return "\n".join(lines)


def plot_reliability(r: dict, path: Path, title: str = "") -> None:
    """Reliability diagram: accuracy against confidence per bin, bar widths by bin, the diagonal is perfect."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    for b in r["reliability"]:
        w = b["hi"] - b["lo"]
        ax.bar(b["lo"], b["accuracy"], width=w, align="edge", color="#4c72b0", edgecolor="white", alpha=0.85)
        ax.bar(b["lo"], b["confidence"] - b["accuracy"], bottom=b["accuracy"], width=w, align="edge",
               color="#dd8452", alpha=0.35, edgecolor="none")
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top probability)")
    ax.set_ylabel("accuracy against the FER+ majority")
    ax.set_title(title or f"reliability: ECE {r['ece']:.3f}, accuracy {r['accuracy'] * 100:.1f}%")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fit_temperature(probs: np.ndarray, majority: np.ndarray) -> float:
    """The temperature T that makes softmax(log p / T) best explain the majority labels (least NLL, golden-section
    search over 0.3..3). Why: a net trained on vote shares answers with the annotators' spread (a face 6 of 10 call
    happy gets ~0.6) while its top label is right far more often than that; dividing the logits by T < 1 makes
    `confidence` mean "how often right" again, without changing any label."""
    m = majority >= 0
    logp = np.log(np.clip(probs[m], 1e-7, 1)).astype(np.float64)
    y = majority[m]

    def nll(t: float) -> float:
        z = logp / t
        z -= z.max(1, keepdims=True)
        return float(-(z[np.arange(len(y)), y] - np.log(np.exp(z).sum(1))).mean())

    lo, hi = np.log(0.3), np.log(3.0)
    g = (np.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    for _ in range(40):
        if nll(np.exp(a)) < nll(np.exp(b)):
            hi, b = b, a
            a = hi - g * (hi - lo)
        else:
            lo, a = a, b
            b = lo + g * (hi - lo)
    return float(np.exp((lo + hi) / 2))


def apply_temperature(model, t: float) -> None:
    """Divide the logits of a Keras model ending in Dense(softmax) by `t`, in its weights (kernel and bias / t):
    the same file format and cost, so export, int8 and every backend carry the calibration."""
    last = model.layers[-1]
    if getattr(getattr(last, "activation", None), "__name__", "") != "softmax":
        raise UserError(f"cannot calibrate {model.name}: its last layer is not a Dense with softmax")
    kernel, bias = last.get_weights()
    last.set_weights([kernel / t, bias / t])


def majority_accuracy(pred: np.ndarray, votes: Votes) -> float:
    """The share of faces with a FER+ majority whose label `pred` gives is that majority."""
    m = votes.scored
    return float((pred[m] == votes.majority[m]).mean())


def log_probs(probs: np.ndarray) -> np.ndarray:
    """log p in float64, clipped away from log 0: a calibrated net's logits up to a per-face constant, which is all the
    class offsets below need (they shift decision boundaries; argmax and softmax ignore the constant)."""
    return np.log(np.clip(probs, 1e-7, 1)).astype(np.float64)


def shifted_probs(probs: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """softmax(log p + bias): what a net answers once `bias` is added to its logits, without running it again."""
    z = log_probs(probs) + bias
    e = np.exp(z - z.max(1, keepdims=True))
    return (e / e.sum(1, keepdims=True)).astype(np.float32)


def clear_correct(pred: np.ndarray, votes: Votes) -> dict[str, int]:
    """Per non-neutral class with clear-expression faces (>= CLEAR_VOTES of ten): how many `pred` gets right."""
    clear = votes.clear()
    return {name: int((pred[clear & (votes.majority == j)] == j).sum())
            for j, name in enumerate(votes.labels) if (clear & (votes.majority == j)).any()}


def fit_class_bias(probs: np.ndarray | list[np.ndarray], votes: Votes, floors: dict[str, int], span: float = 1.0,
                   step: float = 0.05, rounds: int = 4, total: int = 0) -> np.ndarray:
    """Per-class offsets b added to the log-probabilities (the logits) that give the best FER+ majority accuracy while
    every clear-expression class keeps at least `floors[name]` faces right (e.g. the previous model's count), and all
    clear-expression faces together at least `total` (the previous model's recall on the clear faces as one set).

    Why: trained on vote shares, a net moves the rare emotions toward their look-alikes (fear toward surprise,
    disgust toward anger): it wins the majority and loses faces everybody agrees on. Shifting the decision boundaries
    by a constant per class costs no compute and no retraining. Coordinate ascent on a grid (each class in turn,
    offsets within +-span per round); a face short of a floor costs more than all of the accuracy (2 vs <= 1), so the
    floors are met first whenever the grid can meet them. Several `probs` (the float net and its int8 file): the worst of
    them counts, so the offsets hold for the file the engine runs too. Fitted on validation: say so wherever the
    figures are quoted."""
    sets = [probs] if isinstance(probs, np.ndarray) else list(probs)
    logps = [log_probs(p) for p in sets]
    deltas = np.arange(-span, span + step / 2, step)

    def one(logp: np.ndarray, b: np.ndarray) -> float:
        pred = (logp + b).argmax(1)
        got = clear_correct(pred, votes)
        short = sum(max(0, need - got.get(k, 0)) for k, need in floors.items()) + max(0, total - sum(got.values()))
        return majority_accuracy(pred, votes) - 2.0 * short

    def score(b: np.ndarray) -> float:
        return min(one(lp, b) for lp in logps)

    bias = np.zeros(sets[0].shape[1])
    best = score(bias)
    for _ in range(rounds):
        before = best
        for j in range(len(bias)):
            for d in deltas:
                trial = bias.copy()
                trial[j] += d
                s = score(trial)
                if s > best + 1e-12:
                    bias, best = trial, s
        if best <= before:
            break
    return bias


def cross_fit_class_bias(probs: np.ndarray, ref_pred: np.ndarray, votes: Votes, splits: int = 10, seed: int = 0,
                         floor: str = "class") -> dict:
    """How much of fit_class_bias carries to faces it was not fitted on: `splits` random halvings of the split, offsets
    fitted on one half (floors = the reference's counts there: per class, or with `floor="total"` all clear faces as
    one set) and scored on the other, both ways; counts summed over
    every scored half, accuracy averaged. Why: the rare classes have few clear faces (validation: 26 fear, 5
    disgust), and offsets fitted to them can simply memorise those faces: this says whether they did."""
    if floor not in ("class", "total"):
        raise ValueError(f"cross_fit_class_bias: floor {floor!r} is not 'class' or 'total'")
    n = len(probs)
    rng = np.random.default_rng(seed)
    logp = log_probs(probs)
    sums: dict[str, dict[str, int]] = {"reference": {}, "before": {}, "after": {}}
    accs: dict[str, list[float]] = {k: [] for k in sums}
    for _ in range(splits):
        perm = rng.permutation(n)
        halves = (np.sort(perm[: n // 2]), np.sort(perm[n // 2:]))
        for fit_idx, score_idx in (halves, halves[::-1]):
            fv, sv = _subset(votes, fit_idx), _subset(votes, score_idx)
            ref = clear_correct(ref_pred[fit_idx], fv)
            floors, total = ({}, sum(ref.values())) if floor == "total" else (ref, 0)
            bias = fit_class_bias(probs[fit_idx], fv, floors, total=total)
            preds = {"reference": ref_pred[score_idx], "before": logp[score_idx].argmax(1),
                     "after": (logp[score_idx] + bias).argmax(1)}
            for k, pred in preds.items():
                for name, c in clear_correct(pred, sv).items():
                    sums[k][name] = sums[k].get(name, 0) + c
                accs[k].append(majority_accuracy(pred, sv))
    return {"splits": splits, "clear_correct": sums, "ferplus_accuracy": {k: float(np.mean(v)) for k, v in accs.items()}}


def cross_fit_text(held: dict) -> str:
    """cross_fit_class_bias's result in one line, as the keep-clear run prints it and the card quotes it."""
    c, a = held["clear_correct"], held["ferplus_accuracy"]
    rows = ", ".join(f"{k} {c['reference'].get(k, 0)}/{c['before'].get(k, 0)}/{c['after'].get(k, 0)}" for k in c["reference"])
    return (f"fitted on one half of the faces and scored on the other ({held['splits']} halvings): FER+ majority "
            f"{a['before'] * 100:.2f}% -> {a['after'] * 100:.2f}%; clear faces right, reference / before / after: {rows}; "
            f"all {sum(c['reference'].values())}/{sum(c['before'].values())}/{sum(c['after'].values())}")


def _subset(votes: Votes, idx: np.ndarray) -> Votes:
    return Votes(votes.labels, votes.probs[idx], votes.has[idx], votes.majority[idx], votes.top_votes[idx])
