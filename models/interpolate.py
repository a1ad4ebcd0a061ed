"""Blend a model and its fine-tune into one net: `python -m models.interpolate A B --alpha 0.5 --out DIR`,
and/or fold logit adjustment into it: `python -m models.interpolate A --tau 0.3 --data ROOT --out DIR`.

Why: stability training (`models.train --consistency`) made emonet_s_steady from emonet_s: steadier
through the engine, less accurate on FER2013's crops and nearly blind to disgust. The two sit in one
basin, so the straight line between their weights holds nets between them (weight-space ensembling,
WiSE-FT, Wortsman et al. 2022), and measured here the middle of that line beats both ends where it
matters, through the engine (hard crop benchmark, engine accuracy 66.6% against 65.3 and 65.6%).

`--tau T` (logit adjustment, Menon et al. 2021) then adds -T x log(training prior) to the last layer's
bias: the rare classes (disgust is 1.5% of FER2013) are no longer traded away for the common ones.
`--class-bias NAME=B` adds B to one class's logit more. `--keep-clear REF` fits one offset per class on the
validation split's FER+ votes instead (models.ferplus.fit_class_bias): the best majority accuracy with every
clear expression (>= 7 of 10 annotators) recognised at least as often as by REF, then refits the temperature.
All are folded into the weights, so the result is a plain net of the same architecture and cost, with the same
model contract.

The folder gets emotion.keras + labels.json (an `interpolate` record: both parents' files and
sha256, alpha, tau, the prior used, the biases) and, with `--data`, metrics.json and confusion.png;
`python -m export` and `python -m models.card` treat it like any run.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from engine.core.cliargs import Parser
from engine.core.contract import ModelSpec, sha256_file
from engine.core.errors import UserError, cli_main

#: the softmax layer every architecture ends in (models.archs); its bias takes the adjustment
HEAD = "probs"


def blend(a, b, alpha: float):
    """Set `a`'s weights to alpha x a + (1 - alpha) x b (BatchNorm statistics included) and return it."""
    wa, wb = a.get_weights(), b.get_weights()
    if len(wa) != len(wb) or any(x.shape != y.shape for x, y in zip(wa, wb)):
        raise UserError("the two models have different architectures: only a model and its fine-tune can be blended")
    a.set_weights([alpha * x + (1 - alpha) * y for x, y in zip(wa, wb)])
    return a


def logit_shift(prior: np.ndarray, tau: float, class_bias: dict[str, float], labels: Sequence[str]) -> np.ndarray:
    """What is added to the head's bias: -tau x log(prior), plus each named class's own bias."""
    shift = -tau * np.log(np.clip(prior, 1e-6, 1.0))
    for name, value in class_bias.items():
        if name not in labels:
            raise UserError(f"--class-bias {name}: not one of this model's classes ({', '.join(labels)})")
        shift[list(labels).index(name)] += value
    return shift


def adjust_head(model, shift: np.ndarray) -> None:
    try:
        head = model.get_layer(HEAD)
    except ValueError:
        head = None
    if head is None or len(head.get_weights()) != 2:  # e.g. an ensemble's averaging layer, also named 'probs'
        raise UserError(f"the model has no '{HEAD}' dense softmax layer to adjust (not a single models.archs net)")
    kernel, bias = head.get_weights()
    head.set_weights([kernel, (bias + shift).astype(bias.dtype)])


def training_prior(data: str, labels: Sequence[str], cache_dir: str | None = None) -> np.ndarray:
    from models.data import load_split

    y = load_split(data, "train", tuple(labels), cache_dir, quiet=True).y
    return np.bincount(y, minlength=len(labels)) / max(len(y), 1)


def _class_bias(items: Sequence[str]) -> dict[str, float]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise UserError(f"--class-bias {item!r}: write NAME=VALUE, e.g. fear=0.2") from None
    return out


def build_parser() -> Parser:
    p = Parser(prog="python -m models.interpolate",
               description="Blend a .keras model and its fine-tune (weight interpolation), optionally with logit adjustment "
                           "folded into the last layer, into one model with its labels.json.")
    p.add_argument("a", help="model A (.keras or a run folder holding emotion.keras); its labels.json must sit beside it")
    p.add_argument("b", nargs="?", help="model B: the same architecture and classes (a fine-tune of A, or A of B); "
                                        "without it, A alone is adjusted (--tau / --class-bias)")
    p.add_argument("--alpha", type=float, default=None, help="weight of A: 1 = A, 0 = B (needed with B)")
    p.add_argument("--tau", type=float, default=0.0, help="logit adjustment: add -TAU x log(training class prior) to the logits (0 = off)")
    p.add_argument("--class-bias", action="append", default=[], metavar="NAME=B", help="add B to one class's logit (repeatable)")
    p.add_argument("--keep-clear", metavar="REF", help="a model folder: fit per-class logit offsets on the validation split's "
                                                      "FER+ votes so that every clear expression is recognised at least as often as "
                                                      "by REF (its int8 TFLite file where it has one), at the best majority accuracy")
    p.add_argument("--data", help="training data ROOT: the class prior for --tau, and evaluation on its validation split")
    p.add_argument("--out", required=True, help="folder for emotion.keras + labels.json")
    p.add_argument("--cache-dir", default=None, help="decoded-dataset cache (default ~/.cache/emotion-engine)")
    return p


def _checked_inputs(args) -> tuple[Path, Path, float, dict[str, float], ModelSpec]:
    """(model A, model B (A again without B), alpha, class biases, A's spec): every flag checked, one sentence
    each, before Keras loads."""
    if args.b is None and args.alpha not in (None, 1.0):
        raise UserError(f"--alpha {args.alpha} needs a model B to blend with")
    if args.b is not None and args.alpha is None:
        raise UserError("blending A and B needs --alpha (the weight of A)")
    alpha = 1.0 if args.alpha is None else args.alpha
    a, b = (Path(m) / "emotion.keras" if Path(m).is_dir() else Path(m) for m in (args.a, args.b or args.a))
    for m in (a, b):
        if not m.is_file():
            raise UserError(f"model file {m} does not exist")
    if not 0 <= alpha <= 1:
        raise UserError(f"--alpha {alpha} must be in [0, 1]")
    if not (math.isfinite(args.tau) and args.tau >= 0) or not math.isfinite(alpha):
        raise UserError("--tau must be 0 (off) or a positive number, --alpha a number in [0, 1]")
    biases = _class_bias(args.class_bias)
    if (args.tau or args.class_bias or args.keep_clear) and not args.data:
        raise UserError("--tau / --class-bias / --keep-clear need --data (the training split's class prior and classes)")
    if args.keep_clear and not Path(args.keep_clear, "labels.json").is_file():
        raise UserError(f"--keep-clear {args.keep_clear}: not a model folder (no labels.json)")
    if not all(math.isfinite(v) for v in biases.values()):
        raise UserError("--class-bias values must be finite numbers")
    if args.data and not Path(args.data).exists():
        raise UserError(f"data source {args.data} does not exist")
    spec_a, spec_b = ModelSpec.load(a.parent), ModelSpec.load(b.parent)
    if list(spec_a.labels) != list(spec_b.labels):
        raise UserError(f"the models have different classes ({', '.join(spec_a.labels)} vs {', '.join(spec_b.labels)})")
    if Path(args.out).resolve() in (a.parent.resolve(), b.parent.resolve()):
        raise UserError(f"--out {Path(args.out)} holds a parent model: write the blend to a folder of its own")
    return a, b, alpha, biases, spec_a


def engine_probs(folder: Path, x: np.ndarray) -> np.ndarray | None:
    """A model folder's int8 TFLite answers through the engine's classifier (what the engine runs), or None where
    the folder has no int8 file."""
    if not (folder / "emotion_int8.tflite").is_file():
        return None
    from engine.classify.classifier import ClassifierOptions, create_classifier, predict_batched

    clf = create_classifier(ClassifierOptions(model=folder, backend="tflite", precision="int8"))
    try:
        return predict_batched(clf.predict, x, batch=64)
    finally:
        clf.close()


def reference_answers(ref: Path, val) -> np.ndarray:
    """REF's labels for the validation faces: its int8 TFLite file where it has one (what the engine runs), else its
    Keras model."""
    probs = engine_probs(ref, val.x)
    if probs is None:
        from engine.core.keras_io import load_keras
        from models.evaluate import keras_probs

        probs = keras_probs(load_keras(ref / "emotion.keras"), val.x)
    return probs.argmax(1)


def keep_clear(model, ref: Path, data: str, labels: Sequence[str], cache_dir: str | None, int8_of: Path | None = None) -> dict:
    """Fold per-class offsets (models.ferplus.fit_class_bias, floors = REF's clear-expression counts) and a refitted
    temperature into `model`'s head; the record of what was fitted, for labels.json and the card. `int8_of`: the
    folder whose int8 file is this very net (A, neither blended nor shifted): the offsets must then hold for it too,
    because the re-exported int8 file keeps every layer but the last one's output range."""
    from models.data import load_split
    from models.evaluate import keras_probs
    from models.ferplus import (apply_temperature, clear_correct, cross_fit_class_bias, cross_fit_text, dataset_votes,
                                fit_class_bias, fit_temperature, majority_accuracy, shifted_probs)

    val = load_split(data, "validation", tuple(labels), cache_dir, quiet=True)
    votes = dataset_votes(val)
    ref_pred = reference_answers(ref, val)
    floors = clear_correct(ref_pred, votes)
    probs = keras_probs(model, val.x)
    int8 = engine_probs(int8_of, val.x) if int8_of is not None else None
    bias = fit_class_bias([probs] if int8 is None else [probs, int8], votes, floors)
    held = cross_fit_class_bias(probs if int8 is None else int8, ref_pred, votes)
    adjust_head(model, bias)
    shifted = shifted_probs(probs, bias)  # the adjusted net's answers, without running it again
    t = fit_temperature(shifted, votes.majority)
    apply_temperature(model, t)
    acc = [majority_accuracy(p.argmax(1), votes) for p in (probs, shifted)]
    rec = {"reference": str(ref), "floors": floors, "int8_checked": int8 is not None, "bias": [round(float(v), 4) for v in bias], "temperature": t,
           "before": {"clear_correct": clear_correct(probs.argmax(1), votes), "ferplus_accuracy": acc[0]},
           "after": {"clear_correct": clear_correct(shifted.argmax(1), votes), "ferplus_accuracy": acc[1]},
           "fitted_on": f"{data} validation (FER+ majorities; the same faces the figures are quoted on)",
           "cross_fitted": held}
    short = {k: f"{rec['after']['clear_correct'].get(k, 0)}/{need}" for k, need in floors.items()
             if rec["after"]["clear_correct"].get(k, 0) < need}
    print(f"keep-clear: logits + {rec['bias']}, / {t:.3f}; FER+ majority {acc[0] * 100:.2f}% -> {acc[1] * 100:.2f}%; "
          + (f"still short of {ref} on {short}" if short else f"every clear expression at least as often as {ref}"),
          file=sys.stderr)
    print(f"keep-clear, {cross_fit_text(held)}", file=sys.stderr)
    return rec


def _blend_spec(args, a: Path, b: Path, alpha: float, biases: dict[str, float], spec_a: ModelSpec, prior, shift,
                out: Path, kept: dict | None = None) -> ModelSpec:
    """labels.json of the blend: A's contract and cost, and an `interpolate` record of how it was made."""
    labels = list(spec_a.labels)
    extra = {k: v for k, v in (spec_a.extra or {}).items() if k in ("macs", "params")}
    if kept:  # A's calibration refitted on top of its own: the card's temperature is the product
        extra["temperature"] = (spec_a.extra or {}).get("temperature", 1.0) * kept["temperature"]
    extra["interpolate"] = {
        "a": str(a), "b": str(b) if args.b else None, "a_sha256": sha256_file(a), "b_sha256": sha256_file(b) if args.b else None,
        "alpha": alpha,
        "tau": args.tau, "class_bias": biases, "prior": None if prior is None else [round(float(p), 6) for p in prior],
        "shift": [round(float(s), 6) for s in shift], "data": args.data,
        **({"keep_clear": kept} if kept else {}),
    }
    if args.data:  # where export calibrates int8 and the card says the data came from, as for a trained run
        extra["options"] = {"data": args.data, "classes": labels}
    spec = ModelSpec(labels=labels, arch=spec_a.arch, extra=extra)
    spec.source_sha256 = sha256_file(out / "emotion.keras")
    return spec


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    a, b, alpha, biases, spec_a = _checked_inputs(args)
    out = Path(args.out)

    from engine.core.keras_io import load_keras
    from models.checkpoint import save_model_atomic

    labels = list(spec_a.labels)
    model = blend(load_keras(a), load_keras(b), alpha) if args.b else load_keras(a)
    prior = training_prior(args.data, labels, args.cache_dir) if args.data else None
    shift = logit_shift(prior, args.tau, biases, labels) if prior is not None else np.zeros(len(labels))
    if shift.any():
        adjust_head(model, shift)
    kept = None
    if args.keep_clear:
        same = not args.b and not shift.any() and spec_a.source_sha256 == sha256_file(a)  # A's int8 file is this net
        kept = keep_clear(model, Path(args.keep_clear), args.data, labels, args.cache_dir, a.parent if same else None)
    out.mkdir(parents=True, exist_ok=True)
    save_model_atomic(model, out / "emotion.keras")
    _blend_spec(args, a, b, alpha, biases, spec_a, prior, shift, out, kept).save(out)
    print(f"wrote {out / 'emotion.keras'}: " + (f"{alpha:g} x {a} + {1 - alpha:g} x {b}" if args.b else str(a))
          + (f", logits + {np.round(shift, 3).tolist()}" if shift.any() else ""))
    if args.data:
        from models.data import load_split
        from models.evaluate import evaluate_model, seen_in_train

        val = load_split(args.data, "validation", tuple(labels), args.cache_dir, quiet=True)
        m = evaluate_model(load_keras(out / "emotion.keras"), val, out, seen=seen_in_train(args.data, val, args.cache_dir))
        print(f"validation accuracy {m['accuracy'] * 100:.2f}%, balanced {m['balanced_accuracy'] * 100:.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(main))
