"""What a finished training run leaves in its folder: the best epoch as the shipped model and every
file that describes it.

    emotion.keras   the best epoch's weights, rebuilt as a float32 net (a --rep twin folded into its
                    plain net, a --votes run's temperature folded into its last layer)
    labels.json     the model contract + what the run measured and the setup it used (the card's recipe)
    history.json, metrics.json, plots    (models.evaluate)
    fold_answers.npz                     a --folds run's answers for its held-out fold (models.kfold)
    exports, MODEL_CARD.md               --export (export.run), then models.card

Why apart from the training loop (models.trainer): this is the one step a resumed, a finished and a
stopped-early run all end in, and the only one that writes what the engine loads.
"""
from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

from engine.core.contract import ModelSpec, sha256_file
from engine.core.keras_io import load_keras
from models.checkpoint import BEST_NAME, FINAL_NAME, save_model_atomic, write_json
from models.options import TrainOptions
from models.speed import SpeedChoice


def _float32_copy(model, arch: str, n_classes: int):
    """Rebuild under the float32 policy so the shipped file has no bf16 layers in it; a --rep
    training twin is folded into its plain net here (models.reparam), so nothing after sees branches."""
    import keras

    from models import reparam
    from models.archs import ARCHS

    keras.mixed_precision.set_global_policy("float32")
    clean = ARCHS[arch](n_classes)
    if reparam.is_rep(model):
        twin = reparam.build(arch, n_classes)
        twin.set_weights([w.astype("float32") for w in model.get_weights()])
        reparam.fold(twin, clean)
        return clean
    clean.set_weights([w.astype("float32") for w in model.get_weights()])
    return clean


def _calibrate(model, opts: TrainOptions, val_ds) -> float:
    """Fold a temperature fitted on the validation majorities into the last layer (models.ferplus.fit_temperature):
    trained on vote shares, the net's confidence is the annotators' spread, not how often it is right."""
    from models.evaluate import keras_probs
    from models.ferplus import apply_temperature, dataset_votes, fit_temperature

    votes = dataset_votes(val_ds, None if opts.votes == "auto" else opts.votes)
    t = fit_temperature(keras_probs(model, val_ds.x), votes.majority)
    apply_temperature(model, t)
    print(f"calibration: logits divided by {t:.3f} (fitted on {int(votes.scored.sum())} validation majorities)", file=sys.stderr)
    return t


def _run_spec(final, opts: TrainOptions, out: Path, speed: SpeedChoice, macs: int, history: dict, best: float,
              temperature: float | None) -> ModelSpec:
    """labels.json of the finished run: the contract, the numbers the card quotes and the setup actually used."""
    spec = ModelSpec(labels=list(opts.classes), arch=opts.arch)
    spec.extra = {
        "macs": macs,
        "params": int(final.count_params()),
        "epochs_run": len(history.get("val_accuracy", [])),
        "best_val_accuracy": best,
        # the setup actually used, so the card's recipe repeats it instead of timing again
        "options": {**{k: v for k, v in asdict(opts).items() if k not in ("extra",)},
                    "precision": speed.precision, "jit": "on" if speed.jit else "off"},
        "speed": asdict(speed),
        **({"temperature": temperature} if temperature else {}),
    }
    spec.source_sha256 = sha256_file(out / FINAL_NAME)
    return spec


def _write_fold_answers(final, opts: TrainOptions, out: Path, history: dict, held, val_ds, source_sha256: str) -> None:
    """A --folds run's answers for the fold it never trained on (models.kfold), said on stderr."""
    from models.kfold import ANSWERS_NAME, write_answers

    meta = dict(arch=opts.arch, seed=opts.seed, folds=opts.folds, fold=opts.fold, epochs=len(history.get("val_accuracy", [])),
                data=str(opts.data), source_sha256=source_sha256)
    meta = write_answers(final, held, val_ds, meta, out / ANSWERS_NAME)
    print(f"fold {opts.fold}/{opts.folds}: {meta['held_faces']} held-out training faces labelled, accuracy "
          f"{meta['oof_accuracy_tta'] * 100:.2f}% (flip TTA) -> {out / ANSWERS_NAME}", file=sys.stderr)


def finalize(model, opts: TrainOptions, out: Path, speed: SpeedChoice, macs: int, history: dict, best: float, val_ds,
             held=None, seen=None) -> None:
    """The best epoch's model as float32 emotion.keras, labels.json, history, evaluation, export and card;
    `seen` marks the validation faces that are copies of this run's training faces."""
    best_model = load_keras(out / BEST_NAME) if (out / BEST_NAME).exists() else model
    final = _float32_copy(best_model, opts.arch, len(opts.classes))
    temperature = _calibrate(final, opts, val_ds) if opts.votes else None
    save_model_atomic(final, out / FINAL_NAME)
    spec = _run_spec(final, opts, out, speed, macs, history, best, temperature)
    spec.save(out)
    write_json(out / "history.json", history)

    from models.evaluate import evaluate_model

    evaluate_model(final, val_ds, out, history=history, flip_tta=False, seen=seen,
                   votes=(None if opts.votes == "auto" else opts.votes) or "auto")
    if held is not None:
        _write_fold_answers(final, opts, out, history, held, val_ds, spec.source_sha256)
    if opts.export:
        from export.run import export_model

        # A --limit smoke run is too small for the parity thresholds to mean anything.
        export_model(out / FINAL_NAME, out, calib=opts.data, check=not opts.limit)
    from models.card import write_card

    write_card(out)
