"""Run every exported file with the runtime that will run it and compare it with Keras.

Each file is opened through `engine.classify.classifier.open_model_file`, the exact code the engine runs
(LiteRT / ONNX Runtime, never Keras), on held-back validation faces; the limits it must meet are
the table's (engine/core/formats.py: agreement for float files, accuracy drop for int8, batch parity
for all). ms/face is timed the one way the benchmarks time it (engine/core/timing.py).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.classify.classifier import open_model_file, predict_batched
from engine.core.contract import sha256_file
from engine.core.errors import UserError
from engine.core.formats import FLOAT_TIE_MARGIN, by_name
from engine.core.logs import log, quiet
from engine.core.timing import BATCH, ms_per_face
from models.data import Dataset
from models.evaluate import unseen_report
from models.metrics import classification_report


def keras_probabilities(model, faces: np.ndarray) -> np.ndarray:
    """The reference: the Keras model's own probabilities, called directly (no model.predict)."""
    import tensorflow as tf

    call = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    return predict_batched(lambda xb: call(tf.constant(xb, tf.float32)).numpy(), faces, batch=256)


def cpu_class() -> str:
    from engine.core.cpu import isa_class

    return isa_class()


def ferplus_row(probs: np.ndarray, votes, fer_y: np.ndarray | None = None) -> dict:
    """The FER+ figures a report row carries (models.ferplus.report, without the bins and the confusion)."""
    from models.ferplus import report

    r = report(probs, votes, fer_y)
    return {k: r[k] for k in ("faces", "accuracy", "balanced_accuracy", "recall", "ece", "clear")}


def verify_artifact(path: Path, val: Dataset, keras_probs: np.ndarray, threads: int = 1,
                    seen: np.ndarray | None = None, votes=None) -> dict:
    """Run an exported file with its own runtime on the validation faces and compare with Keras; with `seen`
    (validation faces that are copies of training faces) also its accuracy on the others; with `votes` (FER+,
    models.ferplus) its accuracy against the ten annotators' majority, calibration included."""
    with quiet():
        clf = open_model_file(path, threads)
    try:
        probs = predict_batched(clf.predict, val.x)
        p1 = clf.predict(val.x[:1])
        p4 = clf.predict(val.x[:4])
        batch_dp = max(float(np.abs(p1 - probs[:1]).max()), float(np.abs(p4 - probs[: len(p4)]).max()))
        faces = val.x[:BATCH] if len(val.x) >= BATCH else np.repeat(val.x[:1], BATCH, axis=0)
        ms = ms_per_face(clf.predict, faces)
        input_dtype = getattr(clf, "input_dtype", "")
    finally:
        clf.close()
    pred = probs.argmax(1)
    quality = classification_report(val.y, pred, val.labels)  # the rare classes too, not accuracy alone
    same = pred == keras_probs.argmax(1)
    top2 = np.sort(keras_probs, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > FLOAT_TIE_MARGIN
    unseen = unseen_report(val.y, pred, seen, val.labels) if seen is not None and seen.any() else None
    return {
        "file": path.name,
        "bytes": path.stat().st_size,
        "size_kb": round(path.stat().st_size / 1024, 1),
        "accuracy": quality["accuracy"],
        "balanced_accuracy": quality["balanced_accuracy"],
        "recall": {c: round(v["recall"], 4) for c, v in quality["per_class"].items()},
        **({"unseen_accuracy": unseen["accuracy"], "unseen_faces": unseen["faces"]} if unseen else {}),
        **({"ferplus": ferplus_row(probs, votes)} if votes is not None else {}),
        "agreement": float(same.mean()),
        "agreement_clear": float(same[clear].mean()) if clear.any() else 1.0,
        "max_abs_dp": float(np.abs(probs - keras_probs).max()),
        "ms_per_face": round(ms, 4),
        "cpu_class": cpu_class(),  # ms/face only means something next to the CPU class it was timed on
        "batch_1_4_max_dp": batch_dp,
        "input_dtype": input_dtype,
    }


def verify_all(files: dict[str, Path], val: Dataset, keras_probs: np.ndarray, threads: int,
               io: dict[str, dict], seen: np.ndarray | None = None, votes=None) -> dict[str, dict]:
    """format -> its verification row (with its sha256 and input facts); a file that answers
    differently at batch 1/4 than in larger batches is a UserError."""
    rows: dict[str, dict] = {}
    for fmt, path in files.items():
        art = by_name(fmt)
        log(f"verifying {fmt} with {art.runtime} on {len(val)} faces...")
        row = verify_artifact(path, val, keras_probs, threads, seen, votes)
        row.update(io.get(fmt, {}))
        row["sha256"] = sha256_file(path)
        if row["batch_1_4_max_dp"] > art.max_batch_dp:
            raise UserError(f"{path.name} gives different results at batch 1/4 than in larger batches (max |dp| {row['batch_1_4_max_dp']:.3g})")
        rows[fmt] = row
    return rows


def check_rows(rows: dict[str, dict], keras_acc: float) -> list[str]:
    """Every parity rule a row breaks, as one readable clause each."""
    failures = []
    for fmt, r in rows.items():
        art = by_name(fmt)
        if art.min_agreement is not None:
            agree = r.get("agreement_clear", r["agreement"])
            if agree < art.min_agreement:
                failures.append(
                    f"{fmt} agrees with Keras on only {agree * 100:.2f}% of the faces Keras is not torn on "
                    f"(needs {art.min_agreement * 100:.1f}%)"
                )
        if art.max_drop is not None and keras_acc - r["accuracy"] > art.max_drop:
            failures.append(
                f"{fmt} accuracy {r['accuracy'] * 100:.2f}% is {(keras_acc - r['accuracy']) * 100:.2f} points below "
                f"Keras {keras_acc * 100:.2f}% (limit {art.max_drop * 100:.1f})"
            )
    return failures
