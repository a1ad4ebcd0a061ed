"""Accuracy apart on validation faces that are pixel copies of training faces (FER2013 has 280 in
PublicTest): models.data.seen_mask finds them, models.evaluate reports both halves, training writes it,
the card shows it. Real faces, a real (1-epoch) Keras net."""
from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.core.contract import FER_CLASSES

REPO = Path(__file__).resolve().parents[1]
HAVE_TF = importlib.util.find_spec("tensorflow") is not None


def test_seen_mask_finds_exact_copies_only(fer_root):
    from models.data import load_split, seen_mask

    tr = load_split(fer_root, "train", quiet=True)
    faces = np.concatenate([tr.x[:3], tr.x[:3] + 1, tr.x[3:4, :, ::-1]])  # copies; one grey level off; a mirror image
    got = seen_mask(faces, tr.x)
    assert got[:3].all()
    # the changed faces count as unseen unless the training set happens to hold that very image too
    others = {f.tobytes() for f in tr.x}
    assert got[3:].tolist() == [f.tobytes() in others for f in faces[3:]]


def test_unseen_report_splits_the_faces():
    from models.evaluate import format_report, unseen_report
    from models.metrics import classification_report

    y = np.array([0, 1, 2, 0, 1])
    pred = np.array([0, 1, 0, 1, 1])
    seen = np.array([True, True, False, False, False])
    u = unseen_report(y, pred, seen, ("a", "b", "c"))
    assert u["faces"] == 3 and u["seen_faces"] == 2 and u["seen_accuracy"] == 1.0
    assert u["accuracy"] == pytest.approx(1 / 3)
    assert u["balanced_accuracy"] == pytest.approx((0 + 1 + 0) / 3)
    m = {**classification_report(y, pred, ("a", "b", "c")), "unseen": u}
    assert "accuracy 33.33% on the 3 faces that are not copies of training faces" in format_report(m)
    every = unseen_report(y, pred, np.ones(5, bool), ("a", "b", "c"))  # e.g. a CSV without Usage: one set in every split
    assert every["faces"] == 0 and every["accuracy"] is None and every["seen_accuracy"] == pytest.approx(0.6)
    assert "all 5 faces are copies of training faces" in format_report({**m, "unseen": every})
    none = unseen_report(y, pred, np.zeros(5, bool), ("a", "b", "c"))
    assert none["seen_faces"] == 0 and none["seen_accuracy"] is None
    assert "copies" not in format_report({**m, "unseen": none})


@pytest.mark.skipif(not HAVE_TF, reason="training needs tensorflow (pip install '.[train]')")
def test_training_and_evaluate_report_accuracy_on_faces_not_copied_from_training(fer_root, tmp_path):
    """Two training faces copied into validation: training's metrics.json, the evaluate CLI and the card
    all count them apart (plus any copies the sample already holds, found here by decoding the files)."""
    from models.card import write_card
    from models.options import TrainOptions
    from models.trainer import train

    tree = tmp_path / "tree"
    for split in ("train", "validation"):
        for cls in FER_CLASSES:
            (tree / split / cls).mkdir(parents=True)
            for f in sorted((fer_root / split / cls).iterdir())[:4]:
                shutil.copy(f, tree / split / cls / f.name)
    for cls in ("happy", "sad"):
        src = sorted((tree / "train" / cls).iterdir())[0]
        shutil.copy(src, tree / "validation" / cls / f"copy_{src.name}")

    def pixels(split):
        return [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE).tobytes() for p in sorted((tree / split).rglob("*.*"))]

    train_px = set(pixels("train"))
    expected = sum(p in train_px for p in pixels("validation"))
    assert expected >= 2

    run = train(TrainOptions(data=str(tree), out=str(tmp_path / "run"), arch="seed5", epochs=1, precision="float32",
                             jit=False, cache_dir=str(tmp_path / "cache")))
    u = json.loads((run / "metrics.json").read_text())["unseen"]
    assert u["seen_faces"] == expected and u["faces"] == 7 * 4 + 2 - expected
    card = write_card(run).read_text()
    assert f"| faces not copied from training | {u['accuracy'] * 100:.2f}% on the {u['faces']} faces" in card
    assert f"on the {expected} copies (what memorising scores) |" in card

    r = subprocess.run([sys.executable, "-m", "models.evaluate", "--model", str(run / "emotion.keras"), "--data", str(tree),
                        "--out", str(tmp_path / "ev"), "--cache-dir", str(tmp_path / "cache")],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "faces that are not copies of training faces" in r.stdout and f"on the {expected} copies" in r.stdout
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["unseen"] == u
    r = subprocess.run([sys.executable, "-m", "models.evaluate", "--model", str(run / "emotion.keras"), "--data", str(tree),
                        "--out", str(tmp_path / "ev2"), "--cache-dir", str(tmp_path / "cache"), "--no-unseen"],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "unseen" not in json.loads((tmp_path / "ev2" / "metrics.json").read_text())


@pytest.mark.skipif(not HAVE_TF, reason="evaluation of a Keras model needs tensorflow")
def test_evaluate_without_a_training_split_says_so_in_one_note(fer_root, tmp_path):
    """Only validation/ here (a user's own labelled set): the usual report, one note, no unseen figure."""
    from models.options import TrainOptions
    from models.trainer import train

    run = train(TrainOptions(data=str(fer_root), out=str(tmp_path / "run"), arch="seed5", epochs=1, limit=10,
                             precision="float32", jit=False, cache_dir=str(tmp_path / "cache")))
    only_val = tmp_path / "only_val"
    shutil.copytree(fer_root / "validation", only_val / "validation")
    r = subprocess.run([sys.executable, "-m", "models.evaluate", "--model", str(run / "emotion.keras"), "--data", str(only_val),
                        "--out", str(tmp_path / "ev"), "--cache-dir", str(tmp_path / "cache")],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    notes = [line for line in r.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "no accuracy on unseen faces" in notes[0] and "Traceback" not in r.stderr
    assert "accuracy" in r.stdout and "not copies" not in r.stdout
    assert "unseen" not in json.loads((tmp_path / "ev" / "metrics.json").read_text())


def test_export_verification_reports_each_file_on_faces_not_copied_from_training(fer_root):
    """export's row for a file (here the shipped fast int8 model, run by LiteRT) carries its accuracy on the
    faces that are not copies; the markdown report and the card say it."""
    from engine.classify.classifier import open_model_file
    from export.report import format_markdown
    from export.verify import verify_artifact
    from models.card import quality_rows
    from models.data import load_split

    model = REPO / "engine" / "zoo" / "emonet_f" / "emotion_int8.tflite"
    val = load_split(fer_root, "validation", quiet=True)
    seen = np.zeros(len(val), bool)
    seen[::3] = True
    clf = open_model_file(model, 1)
    try:
        pred = clf.predict(val.x).argmax(1)
    finally:
        clf.close()
    row = verify_artifact(model, val, np.full((len(val), 7), 1 / 7), seen=seen)
    assert row["unseen_faces"] == int((~seen).sum())
    assert row["unseen_accuracy"] == pytest.approx(float((pred[~seen] == val.y[~seen]).mean()))
    assert "unseen_accuracy" not in verify_artifact(model, val, np.full((len(val), 7), 1 / 7))
    report = {"model": "m", "settings": {"calib": "c", "threads": 1}, "verify_faces": len(val), "calib_faces": 1,
              "keras": {"file": "emotion.keras", "size_kb": 1.0, "accuracy": 0.5}, "artifacts": {"tflite-int8": row},
              "failures": [], "versions": {}, "date": "today"}
    md = format_markdown(report)
    assert f"On the {int((~seen).sum()):,} of those faces that are not pixel copies" in md
    assert f"tflite-int8 {row['unseen_accuracy'] * 100:.2f}%" in md
    metrics = {"confusion": np.eye(7, dtype=int).tolist(), "per_class": {c: {"recall": 1.0} for c in FER_CLASSES}}
    card = "\n".join(quality_rows(metrics, report, None))
    assert f"{row['unseen_accuracy'] * 100:.2f}% on the {int((~seen).sum()):,} faces not copied from training" in card
