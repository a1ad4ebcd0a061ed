"""Evaluate a model: `python -m models.evaluate --model M --data ROOT [--tta]`.

Writes `metrics.json`, `confusion.png` and (when the run folder has a history)
`curves.png` next to the output, and prints accuracy plus a per-class report. Metrics are
computed with numpy so that evaluating exported models needs no scikit-learn.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from engine.core.cliargs import Parser  # noqa: E402
from engine.core.contract import ModelSpec, parse_classes  # noqa: E402
from engine.core.errors import UserError, cli_main  # noqa: E402
from engine.core.preprocess import flip_average  # noqa: E402
from models.metrics import balanced_accuracy, classification_report  # noqa: E402


def unseen_report(y_true: np.ndarray, y_pred: np.ndarray, seen: np.ndarray, labels: Sequence[str]) -> dict:
    """Accuracy apart on the faces that are copies of training faces (`seen`, models.data.seen_mask) and on
    the rest: what a net learnt, not what it memorised (FER2013's PublicTest holds 280 training faces)."""
    rest = classification_report(y_true[~seen], y_pred[~seen], labels)
    some = rest["n"] > 0  # none left: every face is a copy (a CSV without a Usage column puts each row in every split)
    return {"faces": rest["n"], "accuracy": rest["accuracy"] if some else None,
            "balanced_accuracy": rest["balanced_accuracy"] if some else None,
            "seen_faces": int(seen.sum()), "seen_accuracy": float((y_true[seen] == y_pred[seen]).mean()) if seen.any() else None}


def unseen_text(u: dict | None) -> str | None:
    """The one sentence the report and the card print about `unseen_report`'s figures (None: nothing to say)."""
    if not u or not u.get("seen_faces"):
        return None
    if u["accuracy"] is None:
        return f"all {u['seen_faces']} faces are copies of training faces ({u['seen_accuracy'] * 100:.1f}% right): no unseen figure"
    return (f"{u['accuracy'] * 100:.2f}% on the {u['faces']:,} faces that are not copies of training faces (balanced "
            f"{u['balanced_accuracy'] * 100:.2f}%); {u['seen_accuracy'] * 100:.1f}% on the {u['seen_faces']:,} copies "
            f"(what memorising scores)")


def seen_in_train(data: str | Path, ds, cache_dir: str | Path | None = None) -> np.ndarray | None:
    """`seen` for `unseen_report`: which faces of `ds` (a validation or test split) are pixel copies of `data`'s
    training faces; None with a one-line note where `data` has no training split. The one place evaluate,
    interpolate and ensemble find them."""
    from models.data import load_split, seen_mask

    try:
        return seen_mask(ds.x, load_split(data, "train", ds.labels, cache_dir, quiet=True).x)
    except UserError as exc:  # the plain figures still stand
        print(f"note: no accuracy on unseen faces ({exc})", file=sys.stderr)
        return None


def format_report(metrics: dict) -> str:
    lines = [f"accuracy {metrics['accuracy'] * 100:.2f}% on {metrics['n']} faces (balanced accuracy "
             f"{balanced_accuracy(metrics['confusion']) * 100:.2f}%, macro F1 {metrics['macro_f1']:.3f})"]
    unseen = unseen_text(metrics.get("unseen"))
    if unseen:
        lines.append(f"accuracy {unseen}")
    lines += [f"{'class':<10}{'precision':>10}{'recall':>8}{'f1':>7}{'support':>9}"]
    for name, v in metrics["per_class"].items():
        lines.append(f"{name:<10}{v['precision']:>10.3f}{v['recall']:>8.3f}{v['f1']:>7.3f}{v['support']:>9d}")
    return "\n".join(lines)


def plot_confusion(metrics: dict, path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(metrics["confusion"], dtype=np.float64)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    labels = metrics["labels"]
    fig, ax = plt.subplots(figsize=(1.1 * len(labels) + 2, 1.0 * len(labels) + 1.5))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, f"{norm[i, j]:.2f}\n{int(cm[i, j])}", ha="center", va="center", fontsize=8,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or f"accuracy {metrics['accuracy'] * 100:.1f}% (rows: recall)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_curves(history: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    for key, ax in (("loss", a1), ("accuracy", a2)):
        if key in history:
            ax.plot(epochs, history[key], label=f"train {key}")
        if f"val_{key}" in history:
            ax.plot(epochs, history[f"val_{key}"], label=f"validation {key}")
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def predict_batches(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray, batch: int = 256, flip_tta: bool = False) -> np.ndarray:
    """Probabilities for every face; with flip TTA the mirrored face's probabilities are averaged in."""
    outs = []
    for i in range(0, len(x), batch):
        xb = x[i : i + batch]
        outs.append(flip_average(fn, xb) if flip_tta else np.asarray(fn(xb), dtype=np.float32))
    return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)


def keras_probs(model, x: np.ndarray, flip_tta: bool = False) -> np.ndarray:
    """A Keras model's probabilities for every face (batched, one traced function)."""
    import tensorflow as tf

    call = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    return predict_batches(lambda xb: call(tf.constant(xb, tf.float32)).numpy(), x, flip_tta=flip_tta)


def ferplus_votes(dataset, votes: str | None = "auto"):
    """The FER+ votes for `dataset` (models.ferplus), or None where its folder has none ("auto") or, with a note,
    where its ferplus.csv does not fit: evaluation without votes still gives the FER2013-label figures."""
    if votes is None:
        return None
    from models.ferplus import CSV_NAME, dataset_votes

    if votes == "auto" and (dataset.files is None or not (Path(dataset.source) / CSV_NAME).is_file()):
        return None  # a data folder without votes: the FER2013-label figures alone, nothing to note
    try:
        return dataset_votes(dataset, None if votes == "auto" else votes)
    except UserError as exc:
        if votes != "auto":
            raise
        print(f"note: no FER+ figures ({exc})", file=sys.stderr)
        return None


def evaluate_model(model, dataset, out_dir: Path, history: dict | None = None, flip_tta: bool = False,
                   seen: np.ndarray | None = None, votes: str | None = "auto") -> dict:
    """Evaluate a Keras model on a Dataset and write metrics.json + plots into out_dir; with `seen` (which
    faces are copies of training faces) also the accuracy on the others (`unseen_report`); with FER+ votes
    (models.ferplus; `votes` a CSV, "auto" = the data folder's, None = none) the FER+ report leads."""
    probs = keras_probs(model, dataset.x, flip_tta)
    metrics = classification_report(dataset.y, probs.argmax(1), dataset.labels)
    metrics["flip_tta"] = flip_tta
    if seen is not None:
        metrics["unseen"] = unseen_report(dataset.y, probs.argmax(1), seen, dataset.labels)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = "_tta" if flip_tta else ""
    vv = ferplus_votes(dataset, votes)
    if vv is not None:
        from models.ferplus import plot_reliability, report, report_text

        metrics["ferplus"] = report(probs, vv, dataset.y)
        plot_reliability(metrics["ferplus"], out_dir / f"reliability{suffix}.png")
        plot_confusion({**metrics["ferplus"], "accuracy": metrics["ferplus"]["accuracy"]}, out_dir / f"confusion_ferplus{suffix}.png",
                       title=f"FER+ majority: accuracy {metrics['ferplus']['accuracy'] * 100:.1f}% (rows: recall)")
        print(report_text(metrics["ferplus"]))
    (out_dir / f"metrics{suffix}.json").write_text(json.dumps(metrics, indent=2) + "\n")
    plot_confusion(metrics, out_dir / f"confusion{suffix}.png", title=f"FER2013 labels: accuracy {metrics['accuracy'] * 100:.1f}% (rows: recall)")
    if history:
        plot_curves(history, out_dir / "curves.png")
    print(("FER2013-label " if vv is not None else "") + format_report(metrics))
    return metrics


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="python -m models.evaluate",
        description="Accuracy, per-class precision/recall/F1, confusion matrix and curves for a trained model.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", required=True, help="a .keras model (its labels.json must sit next to it)")
    p.add_argument("--data", required=True, help="ROOT with <split>/<class>/ folders, or a fer2013.csv")
    p.add_argument("--split", default="validation", help="which split to evaluate")
    p.add_argument("--out", default=None, help="where to write metrics.json and the PNGs (default: the model's folder)")
    p.add_argument("--tta", action="store_true", help="also average in the horizontally flipped face")
    p.add_argument("--cache-dir", default=None, help="decoded-dataset cache folder")
    p.add_argument("--votes", default="auto", metavar="CSV",
                   help="FER+ votes to score against (auto: DATA/ferplus.csv when there; the FER+ report then leads)")
    p.add_argument("--no-votes", dest="votes", action="store_const", const=None, help="FER2013 labels only")
    p.add_argument("--no-unseen", action="store_true",
                   help="skip the accuracy on faces that are not copies of training faces (needs the train split)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from engine.core.keras_io import load_keras
    from models.data import SPLIT_ALIASES, load_split

    model_path = Path(args.model)
    if not model_path.is_file():
        raise UserError(f"model file {model_path} does not exist")
    spec = ModelSpec.load(model_path.parent)
    ds = load_split(args.data, args.split, parse_classes(",".join(spec.labels)), args.cache_dir)
    model = load_keras(model_path)
    out = Path(args.out) if args.out else model_path.parent
    hist_path = model_path.parent / "history.json"
    history = json.loads(hist_path.read_text()) if hist_path.exists() else None
    is_train = args.split.lower() in SPLIT_ALIASES["train"]
    seen = None if is_train or args.no_unseen else seen_in_train(args.data, ds, args.cache_dir)
    evaluate_model(model, ds, out, history=history, flip_tta=args.tta, seen=seen, votes=args.votes)
    print(f"wrote {out / ('metrics_tta.json' if args.tta else 'metrics.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(main))
