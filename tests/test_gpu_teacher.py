"""The GPU teacher's data pack (`models.gpu_teacher pack`, models.teacher.pack.load): what crosses to the GPU machine must
decode to exactly the faces training reads here. Training and ONNX export need PyTorch, which is
not a project dependency; they were checked on the lent GPU (see the tool's docstring)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.core.contract import FER_CLASSES
from engine.core.errors import cli_main
from models.gpu_teacher import run
from models.teacher.pack import load


def _jpeg_tree(root: Path, faces: np.ndarray, per_class: int = 2) -> Path:
    """ROOT/{train,validation}/<class>/*.jpg written by cv2, as FER2013's files are 48x48 gray JPEGs."""
    k = 0
    for split in ("train", "validation"):
        for cls in FER_CLASSES:
            (root / split / cls).mkdir(parents=True)
            for j in range(per_class):
                cv2.imwrite(str(root / split / cls / f"{j}.jpg"), faces[k % len(faces)])
                k += 1
    return root


@pytest.fixture()
def faces(fer_root) -> np.ndarray:
    """30 real faces (FER2013's, or the packaged photos' crops on a fresh machine), 48x48 gray."""
    files = sorted(Path(fer_root, "train").rglob("*.*"))[:30]
    return np.stack([cv2.resize(cv2.imread(str(f), cv2.IMREAD_GRAYSCALE), (48, 48)) for f in files])


def test_pack_round_trips_the_decoded_faces_and_labels(tmp_path, faces):
    root = _jpeg_tree(tmp_path / "fer", faces)
    out = tmp_path / "fer.npz"
    assert cli_main(run, ["pack", "--data", str(root), "--out", str(out)]) == 0
    for split in ("train", "validation"):
        x, y = load(out, split)
        files = [(ci, f) for ci, c in enumerate(FER_CLASSES) for f in sorted((root / split / c).glob("*.jpg"))]
        assert x.shape == (len(files), 48, 48) and x.dtype == np.uint8
        assert y.tolist() == [ci for ci, _ in files]
        for got, (_, f) in zip(x, files):
            assert np.array_equal(got, cv2.imread(str(f), cv2.IMREAD_GRAYSCALE))
    # the shared header is stored once: the pack is smaller than the files it holds
    assert out.stat().st_size < sum(f.stat().st_size for f in root.rglob("*.jpg"))


def test_pack_refuses_a_file_with_another_header_and_a_missing_pack(tmp_path, faces, capsys):
    root = _jpeg_tree(tmp_path / "fer", faces)
    cv2.imwrite(str(root / "train" / "happy" / "big.jpg"), cv2.resize(faces[0], (64, 64)))
    assert cli_main(run, ["pack", "--data", str(root), "--out", str(tmp_path / "x.npz")]) == 2
    assert "another JPEG header" in capsys.readouterr().err
    assert cli_main(run, ["train", "--data", str(tmp_path / "none.npz"), "--out", str(tmp_path / "t.npz")]) == 2
    assert "no pack at" in capsys.readouterr().err


# ---------------------------------------------------------------------------- out-of-fold teachers
def test_folds_are_stratified_and_the_same_for_every_net():
    from models.teacher.folds import fold_of

    y = np.repeat(np.arange(7), [40, 5, 41, 72, 48, 32, 50])
    f = fold_of(y, 4)
    assert np.array_equal(f, fold_of(y, 4))  # no seed argument: every arch/seed leaves out the same faces
    assert set(f.tolist()) == {0, 1, 2, 3}
    for c in range(7):  # each class dealt over the folds: sizes differ by at most one
        sizes = np.bincount(f[y == c], minlength=4)
        assert sizes.max() - sizes.min() <= 1, (c, sizes)
    assert not np.array_equal(f[y == 3], np.arange(72) % 4)  # shuffled within a class, not in file order


def _fold_run(path: Path, y: np.ndarray, folds: int, fold: int, probs: np.ndarray, n_val: int) -> None:
    """What `train --folds K --fold I` writes (weights left out): its answers for the held-out fold only."""
    import json

    from models.teacher.folds import fold_of

    idx = np.flatnonzero(fold_of(y, folds) == fold)
    meta = dict(arch="resnet", width=8, folds=folds, fold=fold)
    np.savez(path, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), oof_idx=idx, oof_probs=probs[idx],
             oof_probs_tta=probs[idx], val_probs_tta=np.full((n_val, 7), 1 / 7))


def test_out_of_fold_labels_reach_each_face_in_the_trainers_order(tmp_path, faces, capsys):
    """oof merges the folds' answers; models.train finds each face's label by its pixels although
    models.data reads the class folders in another order than the pack."""
    from models.data import load_split
    from models.distill import soft_labels
    from models.teacher.oof import merge_oof

    root = _jpeg_tree(tmp_path / "fer", faces)
    pack = tmp_path / "fer.npz"
    assert cli_main(run, ["pack", "--data", str(root), "--out", str(pack)]) == 0
    x, y = load(pack, "train")
    _, yv = load(pack, "validation")
    rng = np.random.default_rng(1)
    truth = rng.dirichlet(np.ones(7), len(y))  # a distinct "teacher answer" per face
    runs = [tmp_path / f"fold{i}.npz" for i in range(2)]  # 2 faces per class here: k = 2
    for i, r in enumerate(runs):
        _fold_run(r, y, 2, i, truth, len(yv))
    # a missing fold is named, not silently filled
    assert cli_main(run, ["oof", str(runs[0]), "--data", str(pack), "--out", str(tmp_path / "o.npz")]) == 2
    assert "no out-of-fold answer" in capsys.readouterr().err
    out = tmp_path / "oof.npz"
    report = merge_oof(runs, pack, out)
    assert report["answers_per_face"] == 1.0 and report["groups"] == {"resnet8 k=2": [0, 1]}
    ds = load_split(root, "train", cache_dir=tmp_path / "cache", quiet=True)
    got = soft_labels(ds, out)
    assert got.shape == (len(ds), 7)
    want = {x[i].tobytes(): truth[i] for i in range(len(y))}
    for face, row in zip(ds.x, got):
        np.testing.assert_allclose(row, want[face.tobytes()], rtol=1e-5)
    # a subset of classes: its columns, renormalised
    sub = load_split(root, "train", classes=("happy", "sad", "neutral"), cache_dir=tmp_path / "cache", quiet=True)
    part = soft_labels(sub, out)
    np.testing.assert_allclose(part.sum(1), 1, rtol=1e-5)
    # faces the teachers never labelled are refused
    other = load_split(_jpeg_tree(tmp_path / "other", faces[::-1] // 2 + 7), "train", cache_dir=tmp_path / "cache", quiet=True)
    with pytest.raises(Exception, match="have no label"):
        soft_labels(other, out)


def test_train_refuses_soft_labels_beside_a_teacher(tmp_path, fer_root, capsys):
    from models.train import main

    rc = cli_main(main, ["--data", str(fer_root), "--out", str(tmp_path / "r"), "--soft-labels", str(tmp_path / "x.npz"),
                         "--teacher", str(tmp_path / "t.keras")])
    assert rc == 2 and "not with --teacher" in capsys.readouterr().err


def test_kfold_script_trains_labels_and_exports_on_the_cpu(tmp_path, faces):
    """The one script a GPU lease runs (models/kfold_teachers.sh), in a tiny setting on the CPU."""
    import os
    import subprocess
    import sys

    pytest.importorskip("torch", reason="PyTorch is not a project dependency (the GPU machines have it)")
    root = _jpeg_tree(tmp_path / "fer", faces)
    pack = tmp_path / "fer.npz"
    assert cli_main(run, ["pack", "--data", str(root), "--out", str(pack)]) == 0
    env = dict(os.environ, PY=sys.executable, PACK=str(pack), K="2", MINUTES="0.02", WIDTH="4", OUT=str(tmp_path / "kf"),
               ARCHS="resnet vgg")
    r = subprocess.run(["bash", "models/kfold_teachers.sh"], env=env, capture_output=True, text=True, timeout=600,
                       cwd=Path(__file__).resolve().parents[1])
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "kf" / "oof.npz").is_file() and (tmp_path / "kf" / "teacher" / "emotion.onnx").is_file()
    # two architectures x two folds: every face labelled by the two nets that never saw it, averaged
    assert sorted(p.name for p in (tmp_path / "kf").glob("*fold?.npz")) == ["fold0.npz", "fold1.npz", "vgg_fold0.npz", "vgg_fold1.npz"]
    assert "resnet" in r.stdout and "vgg" in r.stdout


def test_identical_faces_share_a_fold():
    """FER2013 holds exact duplicates (~8% of its training faces): a net must not 'never have seen' a face
    whose twin it trained on, so copies go to one fold, dealt with the class most of them carry."""
    from models.teacher.folds import fold_of

    rng = np.random.default_rng(3)
    y = rng.integers(0, 7, 400)
    keys = np.arange(400, dtype=np.uint64)
    for group in (range(0, 6), range(10, 13), range(100, 140, 10)):  # planted duplicate groups
        keys[list(group)] = keys[group[0]]
    y[10:13] = [2, 2, 5]  # a group whose copies disagree
    f = fold_of(y, 4, keys)
    for group in (range(0, 6), range(10, 13), range(100, 140, 10)):
        assert len(set(f[list(group)].tolist())) == 1, group
    assert set(f.tolist()) == {0, 1, 2, 3}


@pytest.mark.parametrize("argv, message", [
    (["--folds", "1", "--fold", "0"], "at least 2 folds"),
    (["--folds", "4"], "needs --fold"),
    (["--fold", "1"], "--fold needs --folds"),
    (["--folds", "4", "--fold", "4"], "must be 0..3"),
])
def test_fold_flags_are_checked_in_one_sentence(tmp_path, argv, message, capsys):
    rc = cli_main(run, ["train", "--data", str(tmp_path / "none.npz"), "--out", str(tmp_path / "t.npz"), *argv])
    assert rc == 2 and message in capsys.readouterr().err


def test_a_foreign_soft_label_file_is_one_sentence(tmp_path, fer_root, capsys):
    from models.distill import read_soft_labels
    from models.teacher.oof import merge_oof

    bad = [tmp_path / "text.npz", tmp_path / "array.npy", tmp_path / "other.npz", tmp_path / "short.npz"]
    bad[0].write_text("not a zip")
    np.save(bad[1], np.zeros(3))
    np.savez(bad[2], a=np.zeros(3))
    np.savez(bad[3], keys=np.zeros(5, np.uint64), probs=np.zeros((4, 7)), labels=np.array(FER_CLASSES))
    for f in bad:
        with pytest.raises(Exception) as err:
            read_soft_labels(f)
        assert type(err.value).__name__ == "UserError", (f, err.value)
    with pytest.raises(Exception) as err:
        merge_oof([bad[0]], bad[2], tmp_path / "o.npz")
    assert type(err.value).__name__ == "UserError"
