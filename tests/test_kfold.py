"""k-fold teachers trained with Keras (`models.train --folds K --fold I`, models.kfold): each run holds
out exactly the faces the GPU tool's fold I holds out, answers only those, and `models.gpu_teacher oof`
merges the runs into soft labels that `models.train --soft-labels` finds face by face."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.core.errors import cli_main
from tests.test_gpu_teacher import _jpeg_tree

pytest.importorskip("tensorflow", reason="training needs TensorFlow (pip install '.[train]')")


def _train(root: Path, out: Path, *extra: str) -> int:
    from models.train import main

    return cli_main(main, ["--data", str(root), "--out", str(out), "--arch", "emonet_f", "--epochs", "1", "--batch", "8",
                           "--augment", "none", "--precision", "float32", "--jit", "off", "--cache-dir", str(out.parent / "cache"),
                           *extra])


@pytest.fixture(scope="module")
def kfold_runs(tmp_path_factory, fer_root):
    """A 7-class JPEG tree of real faces (4 per class), its pack, and two 1-epoch Keras fold runs."""
    import cv2

    tmp = tmp_path_factory.mktemp("kfold")
    files = sorted(Path(fer_root, "train").rglob("*.*"))[:30]
    faces = np.stack([cv2.resize(cv2.imread(str(f), cv2.IMREAD_GRAYSCALE), (48, 48)) for f in files])
    root = _jpeg_tree(tmp / "fer", faces, per_class=4)
    from models.gpu_teacher import run

    pack = tmp / "fer.npz"
    assert cli_main(run, ["pack", "--data", str(root), "--out", str(pack)]) == 0
    runs = [tmp / f"fold{i}" for i in range(2)]
    for i, r in enumerate(runs):
        assert _train(root, r, "--folds", "2", "--fold", str(i)) == 0
    return root, pack, runs


def test_a_keras_fold_holds_out_the_gpu_tools_fold_and_answers_only_it(kfold_runs):
    from models.data import face_keys
    from models.kfold import ANSWERS_NAME
    from models.teacher.folds import fold_of
    from models.teacher.pack import load

    root, pack, runs = kfold_runs
    x, y = load(pack, "train")  # the pack's order (FER class order), not models.data's
    keys = face_keys(x)
    fold = fold_of(y, 2, keys)
    for i, r in enumerate(runs):
        d = np.load(r / ANSWERS_NAME)
        meta = json.loads(d["meta"].tobytes())
        assert (meta["folds"], meta["fold"], meta["kind"], meta["arch"]) == (2, i, "keras", "emonet_f")
        assert set(d["oof_keys"].tolist()) == set(keys[fold == i].tolist())
        assert d["oof_probs_tta"].shape == (len(d["oof_keys"]), 7)
        np.testing.assert_allclose(d["oof_probs_tta"].sum(1), 1, rtol=1e-4)
        # both answers come from one pass over faces + mirrors: the same as the net run on each alone
        from engine.core.keras_io import load_keras
        from engine.core.preprocess import flip_average
        from export.verify import keras_probabilities
        from models.data import load_split

        net = load_keras(r / "emotion.keras")
        val = load_split(root, "validation", cache_dir=r.parent / "cache")
        np.testing.assert_allclose(d["val_probs"], keras_probabilities(net, val.x), atol=1e-5)
        np.testing.assert_allclose(d["val_probs_tta"], flip_average(lambda b: keras_probabilities(net, b), val.x), atol=1e-5)
        assert not np.allclose(d["val_probs"], d["val_probs_tta"], atol=1e-5)
        spec = json.loads((r / "labels.json").read_text())
        assert spec["extra"]["options"]["folds"] == 2 and spec["extra"]["options"]["fold"] == i
        # the card's recipe repeats the fold flags
        assert f"--folds 2 \\\n    --fold {i}" in (r / "MODEL_CARD.md").read_text()


def test_oof_merges_keras_folds_alone_and_beside_a_gpu_fold(kfold_runs, tmp_path):
    from models.data import face_keys, load_split
    from models.distill import soft_labels
    from models.kfold import ANSWERS_NAME
    from models.teacher.oof import merge_oof
    from models.teacher.pack import load

    root, pack, runs = kfold_runs
    files = [r / ANSWERS_NAME for r in runs]
    report = merge_oof(files, pack, tmp_path / "oof.npz")
    assert report["answers_per_face"] == 1.0 and report["groups"] == {"emonet_f k=2": [0, 1]}
    ds = load_split(root, "train", cache_dir=tmp_path / "cache", quiet=True)
    got = soft_labels(ds, tmp_path / "oof.npz")
    want = {}
    for f in files:  # each face's label is its own fold run's flip-averaged answer
        d = np.load(f)
        want.update(zip(d["oof_keys"].tolist(), d["oof_probs_tta"]))
    for k, row in zip(face_keys(ds.x).tolist(), got):
        np.testing.assert_allclose(row, want[k] / want[k].sum(), rtol=1e-4)
    # a PyTorch fold (pack positions) and a Keras fold (pixel keys) of the same k merge: 2 answers for fold 1
    x, y = load(pack, "train")
    _, yv = load(pack, "validation")
    from models.teacher.folds import fold_of

    fold = fold_of(y, 2, face_keys(x))  # what `gpu_teacher train --folds 2 --fold 1` holds out (pack positions)
    gpu = tmp_path / "gpu1.npz"
    idx = np.flatnonzero(fold == 1)
    meta = dict(arch="resnet", width=8, folds=2, fold=1)
    np.savez(gpu, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), oof_idx=idx, oof_probs=np.full((len(idx), 7), 1 / 7),
             oof_probs_tta=np.full((len(idx), 7), 1 / 7), val_probs_tta=np.full((len(yv), 7), 1 / 7))
    report = merge_oof([*files, gpu], pack, tmp_path / "mixed.npz")
    assert report["nets"] == 3
    merged = np.load(tmp_path / "mixed.npz")
    assert np.array_equal(merged["keys"], face_keys(x))  # in the pack's order
    for k, f, row in zip(merged["keys"].tolist(), fold, merged["probs"]):
        # fold 1: the Keras net's answer and the GPU net's (uniform) averaged; fold 0: the Keras answer alone
        np.testing.assert_allclose(row, (want[k] + 1 / 7) / 2 if f == 1 else want[k], rtol=1e-4, atol=1e-6)


def test_keras_answers_for_another_data_set_are_refused(kfold_runs, tmp_path, capsys):
    from models.gpu_teacher import run
    from models.kfold import ANSWERS_NAME

    root, pack, runs = kfold_runs
    d = dict(np.load(runs[0] / ANSWERS_NAME))
    d["oof_keys"] = d["oof_keys"] + np.uint64(1)  # faces the pack does not hold
    bad = tmp_path / "bad.npz"
    np.savez(bad, **d)
    assert cli_main(run, ["oof", str(bad), str(runs[1] / ANSWERS_NAME), "--data", str(pack), "--out", str(tmp_path / "o.npz")]) == 2
    assert "not in" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--fold", "1"], "--fold needs --folds"),
    (["--folds", "3"], "needs at least 2 folds and --fold"),
    (["--folds", "3", "--fold", "3"], "I in 0..2"),
    (["--folds", "3", "--fold", "0", "--classes", "5"], "needs all 7 classes"),
    (["--folds", "3", "--fold", "0", "--teacher", "t.keras"], "not with --teacher"),
    (["--folds", "3", "--fold", "0", "--soft-labels", "oof.npz"], "not with --soft-labels"),
])
def test_fold_flags_of_the_trainer_are_one_sentence(tmp_path, fer_root, extra, message, capsys):
    assert _train(fer_root, tmp_path / "r", *extra) == 2
    assert message in capsys.readouterr().err


def test_a_fold_run_starts_only_from_its_own_folds_weights(kfold_runs, tmp_path, capsys):
    root, _, runs = kfold_runs
    assert _train(root, tmp_path / "a", "--folds", "2", "--fold", "1", "--init", str(runs[0] / "emotion.keras")) == 2
    assert "did not hold out fold 1 of 2" in capsys.readouterr().err
    # --resume with nothing to resume starts a new run: the same check
    assert _train(root, tmp_path / "c", "--folds", "2", "--fold", "1", "--init", str(runs[0] / "emotion.keras"), "--resume") == 2
    assert "did not hold out fold 1 of 2" in capsys.readouterr().err
    assert _train(root, tmp_path / "b", "--folds", "2", "--fold", "1", "--init", str(runs[1] / "emotion.keras")) == 0
