"""Training half: loaders (folders and CSV agree), the .npz cache, class subsets, a real
one-epoch training that saves/reloads with safe_mode and predicts, resume, and every bad
input ending in one sentence and a non-zero exit."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.core.contract import FER_CLASSES, PRESETS, ModelSpec, parse_classes
from engine.core.errors import UserError, cli_main
from models.data import load_split

REPO = Path(__file__).resolve().parents[1]
HAVE_TF = importlib.util.find_spec("tensorflow") is not None


def _small_tree(src_root: Path, dst: Path, per_class: int = 6) -> Path:
    """Copy a few real faces per class into a private tree the test may modify."""
    for split in ("train", "validation"):
        for cls in FER_CLASSES:
            files = sorted((src_root / split / cls).iterdir())[:per_class]
            (dst / split / cls).mkdir(parents=True)
            for f in files:
                shutil.copy(f, dst / split / cls / f.name)
    return dst


def _write_csv(root: Path, path: Path) -> None:
    rows = ["emotion,pixels,Usage"]
    for split, usage in (("train", "Training"), ("validation", "PublicTest")):
        for ci, cls in enumerate(FER_CLASSES):
            for f in sorted((root / split / cls).iterdir()):
                img = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
                rows.append(f"{ci},{' '.join(map(str, img.flatten()))},{usage}")
    path.write_text("\n".join(rows) + "\n")


def test_parse_classes_presets_and_order():
    assert parse_classes("7") == FER_CLASSES
    assert parse_classes("5") == PRESETS["5"]
    # canonical order whatever the user typed
    assert parse_classes("sad, happy,ANGRY") == ("angry", "happy", "sad")
    with pytest.raises(UserError, match="unknown class 'joy'"):
        parse_classes("happy,joy")
    with pytest.raises(UserError, match="two different"):
        parse_classes("happy,happy")


def test_folder_and_csv_loaders_agree(fer_root, tmp_path):
    tree = _small_tree(fer_root, tmp_path / "tree")
    csv_path = tmp_path / "fer2013.csv"
    _write_csv(tree, csv_path)
    for split in ("train", "validation"):
        a = load_split(tree, split, cache_dir=tmp_path / "cache", quiet=True)
        b = load_split(csv_path, split, cache_dir=tmp_path / "cache", quiet=True)
        assert a.x.shape == b.x.shape and a.x.dtype == np.uint8 and a.x.shape[1:] == (48, 48, 1)
        order_a = np.lexsort((a.x.reshape(len(a), -1).sum(1), a.y))
        order_b = np.lexsort((b.x.reshape(len(b), -1).sum(1), b.y))
        np.testing.assert_array_equal(a.y[order_a], b.y[order_b])
        np.testing.assert_array_equal(a.x[order_a], b.x[order_b])


def test_subset_selection(fer_root, tmp_path):
    tree = _small_tree(fer_root, tmp_path / "tree", per_class=3)
    ds = load_split(tree, "train", parse_classes("3"), cache_dir=tmp_path / "cache", quiet=True)
    assert ds.labels == ("angry", "happy", "sad")
    assert sorted(set(ds.y.tolist())) == [0, 1, 2]
    assert ds.counts() == {"angry": 3, "happy": 3, "sad": 3}


def test_cache_is_reused_and_invalidated(fer_root, tmp_path):
    tree = _small_tree(fer_root, tmp_path / "tree", per_class=3)
    cache = tmp_path / "cache"
    first = load_split(tree, "train", cache_dir=cache, quiet=True)
    files = sorted(cache.glob("*.npz"))
    assert len(files) == 1
    # a hit loads the same arrays without decoding (the file is untouched)
    mtime = files[0].stat().st_mtime_ns
    again = load_split(tree, "train", cache_dir=cache, quiet=True)
    np.testing.assert_array_equal(first.x, again.x)
    assert files[0].stat().st_mtime_ns == mtime
    # changing a source image invalidates the cache
    victim = sorted((tree / "train" / "happy").iterdir())[0]
    time.sleep(0.01)
    cv2.imwrite(str(victim), np.full((48, 48), 7, np.uint8))
    changed = load_split(tree, "train", cache_dir=cache, quiet=True)
    assert len(list(cache.glob("*.npz"))) == 2
    assert (changed.x == 7).all(axis=(1, 2, 3)).sum() == 1
    # a corrupt cache file is rebuilt, never trusted
    for f in cache.glob("*.npz"):
        f.write_bytes(b"not a zip")
    rebuilt = load_split(tree, "train", cache_dir=cache, quiet=True)
    np.testing.assert_array_equal(rebuilt.x, changed.x)


def test_unreadable_image_is_skipped_by_name(fer_root, tmp_path, capsys):
    tree = _small_tree(fer_root, tmp_path / "tree", per_class=3)
    bad = tree / "train" / "fear" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    color = tree / "train" / "fear" / "big_color.png"
    cv2.imwrite(str(color), np.full((100, 80, 3), 200, np.uint8))
    ds = load_split(tree, "train", cache_dir=tmp_path / "cache", quiet=True)
    assert "broken.jpg" in capsys.readouterr().err
    assert ds.counts()["fear"] == 4  # 3 real + the converted colour image, not the broken one


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data", "/nonexistent/data"], "does not exist"),
        (["--classes", "happy,joy"], "unknown class 'joy'"),
        (["--arch", "resnet9000"], "unknown arch 'resnet9000'"),
        (["--epochs", "0"], "--epochs must be at least 1"),
        (["--jit", "sometimes"], "argument --jit: invalid choice: 'sometimes'"),
        (["--teacher-pool", "4"], "--teacher-pool needs a --teacher"),
        (["--teacher-pool", "-1"], "--teacher-pool must be 0 (off) or a number of copies"),
        (["--pool-targets", "clean"], "--pool-targets needs --teacher-pool"),
        (["--consistency", "-1"], "--consistency must be 0 (off) or a positive weight"),
        (["--teacher", "engine/zoo/emonet_s/emotion_int8.tflite"], "an exported teacher (.tflite/.onnx) needs --teacher-pool"),
    ],
)
def test_train_bad_inputs_are_one_sentence(args, message, fer_root, tmp_path, capsys):
    from models.train import main

    base = {"--data": str(fer_root), "--out": str(tmp_path / "run")}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    argv = [x for kv in base.items() for x in kv]
    assert cli_main(main, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0]


def test_rep_with_a_net_it_cannot_fold_is_one_sentence(fer_root, tmp_path, capsys):
    from models.train import main

    assert cli_main(main, ["--data", str(fer_root), "--out", str(tmp_path / "run"), "--arch", "emonet_s", "--rep"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --rep works with the plain nets")


def test_empty_class_folder_is_reported(fer_root, tmp_path, capsys):
    from models.train import main

    tree = _small_tree(fer_root, tmp_path / "tree", per_class=2)
    for f in (tree / "train" / "disgust").iterdir():
        f.unlink()
    assert cli_main(main, ["--data", str(tree), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "class folder" in err and "disgust" in err and "has no images" in err


@pytest.mark.skipif(not HAVE_TF, reason="training needs tensorflow (pip install '.[train]')")
def test_one_epoch_trains_saves_reloads_and_resumes(fer_root, tmp_path):
    """A real run on a few hundred faces: checkpoint, labels, metrics, plots; safe_mode reload;
    then --resume continues at the next epoch instead of starting over."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "models.train", "--data", str(fer_root), "--out", str(out), "--arch", "emonet_n",
           "--epochs", "1", "--limit", "40", "--classes", "3", "--precision", "float32", "--no-jit",
           "--cache-dir", str(tmp_path / "cache")]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    for name in ("emotion.keras", "labels.json", "metrics.json", "confusion.png", "curves.png", "train_state.json", "last.keras"):
        assert (out / name).is_file(), name
    spec = ModelSpec.load(out)
    assert spec.labels == ["angry", "happy", "sad"] and spec.arch == "emonet_n"
    assert spec.extra["macs"] > 1e6
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["per_class"]) == {"angry", "happy", "sad"} and 0 <= metrics["accuracy"] <= 1

    import keras

    model = keras.saving.load_model(out / "emotion.keras", safe_mode=True)
    faces = load_split(fer_root, "validation", parse_classes("3"), tmp_path / "cache", quiet=True).x[:5]
    probs = np.asarray(model(faces.astype(np.float32), training=False))
    assert probs.shape == (5, 3)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-4)
    assert model.dtype_policy.name == "float32"

    # resume a run whose state file predates timed setups (XLA a bool, no recorded setup): its old
    # setup is rebuilt, and --no-jit on the resume command switches XLA off for the rest of the run
    state = json.loads((out / "train_state.json").read_text())
    assert state["options"]["extra"]["speed"] == {"precision": "float32", "jit": False, "timings": {}, "how": "given"}
    state["options"]["jit"] = True
    del state["options"]["extra"]["speed"]
    (out / "train_state.json").write_text(json.dumps(state))
    r2 = subprocess.run(cmd[:cmd.index("--epochs") + 1] + ["2"] + cmd[cmd.index("--epochs") + 2:] + ["--resume"],
                        cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
    assert r2.returncode == 0, r2.stderr[-2000:]
    assert "resuming" in r2.stderr and "epoch 2/2" in r2.stderr
    assert "float32, no XLA (given on resume)" in r2.stderr
    assert "ignored with --resume" not in r2.stderr  # --precision float32 repeats the run's own: no note
    r2b = subprocess.run([*[a if a != "float32" else "mixed_bfloat16" for a in cmd], "--epochs", "2", "--resume"],
                         cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
    assert r2b.returncode == 0 and "checkpoints are float32; --precision mixed_bfloat16 is ignored" in r2b.stderr, r2b.stderr[-2000:]
    assert json.loads((out / "train_state.json").read_text())["options"]["extra"]["speed"]["jit"] is False
    assert "epoch 1/2" not in r2.stderr
    state = json.loads((out / "train_state.json").read_text())
    assert state["epoch"] == 2 and len(state["history"]["val_accuracy"]) == 2

    # a second run into the same folder without --resume is refused, not overwritten
    r3 = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
    assert r3.returncode == 2 and "already holds a run" in r3.stderr and "Traceback" not in r3.stderr

    # --init: a fine-tune starts from the saved weights (at a negligible lr they stay put) ...
    ft = tmp_path / "ft"
    ft_cmd = [*cmd[:cmd.index("--out") + 1], str(ft), *cmd[cmd.index("--out") + 2:], "--init", str(out / "emotion.keras"),
              "--lr", "1e-9", "--weight-decay", "0", "--resample", "1"]
    r4 = subprocess.run(ft_cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
    assert r4.returncode == 0 and "initialised from" in r4.stderr, r4.stderr[-2000:]
    tuned = keras.saving.load_model(ft / "last.keras", safe_mode=True)
    kernel = lambda m: next(w for w in m.get_weights() if w.ndim == 4)  # noqa: E731 - the first conv kernel
    init = keras.saving.load_model(out / "emotion.keras", safe_mode=True)
    np.testing.assert_allclose(kernel(tuned), kernel(init), atol=1e-6)
    # ... and a model that does not fit (3 classes into a 7-class run) is one sentence
    bad = [str(tmp_path / "ft2") if a == str(ft) else a for a in ft_cmd]
    r5 = subprocess.run([*bad[:bad.index("--classes") + 1], "7", *bad[bad.index("--classes") + 2:]],
                        cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
    assert r5.returncode == 2 and "--init model labels" in r5.stderr and "Traceback" not in r5.stderr, r5.stderr[-2000:]

    # the model card: written from the run's files, with its notes and the command that retrains it; shipped
    (ft / "NOTES.md").write_text("Fine-tuned for the test.")
    zoo = tmp_path / "zoo" / "tuned"
    r6 = subprocess.run([sys.executable, "-m", "models.card", str(ft), "--title", "tuned", "--ship", str(zoo)],
                        cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert r6.returncode == 0, r6.stderr[-2000:]
    card = (zoo / "MODEL_CARD.md").read_text()
    assert "## Notes\n\nFine-tuned for the test." in card and "| angry |" in card
    assert f"--init {out / 'emotion.keras'}" in card and "--resample 1.0" in card
    assert "--precision float32" in card and "--no-jit" in card and "| training setup | float32, no XLA (given) |" in card
    assert {"emotion.keras", "labels.json", "NOTES.md", "metrics.json"} <= {p.name for p in zoo.iterdir()}


@pytest.mark.skipif(not HAVE_TF, reason="evaluation needs tensorflow")
def test_evaluate_cli_writes_report_and_plots(fer_root, tmp_path):
    from models.options import TrainOptions
    from models.trainer import train

    run = train(TrainOptions(data=str(fer_root), out=str(tmp_path / "run"), arch="seed5", epochs=1, limit=20,
                             precision="float32", jit=False, cache_dir=str(tmp_path / "cache")))
    out = tmp_path / "eval"
    r = subprocess.run([sys.executable, "-m", "models.evaluate", "--model", str(run / "emotion.keras"), "--data", str(fer_root),
                        "--out", str(out), "--tta", "--cache-dir", str(tmp_path / "cache")],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "accuracy" in r.stdout and "precision" in r.stdout
    m = json.loads((out / "metrics_tta.json").read_text())
    assert m["flip_tta"] is True and len(m["confusion"]) == 7
    assert (out / "confusion_tta.png").stat().st_size > 1000
    bad = subprocess.run([sys.executable, "-m", "models.evaluate", "--model", str(tmp_path / "nope.keras"), "--data", str(fer_root)],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error:") and "Traceback" not in bad.stderr


@pytest.mark.skipif(not HAVE_TF, reason="training needs tensorflow (pip install '.[train]')")
def test_teacher_pool_labels_augmented_copies_once_and_trains_on_them(fer_root, tmp_path):
    """--teacher-pool: P distorted copies of the training set, each labelled by the teacher's
    int8 export (the shipped fast model here), cached, reused by the next run, trained on."""
    from engine.classify.classifier import open_model_file
    from models.data import load_arrays

    teacher = REPO / "models" / "parents" / "emonet_n" / "emotion_int8.tflite"
    cache = tmp_path / "cache"
    cmd = [sys.executable, "-m", "models.train", "--data", str(fer_root), "--arch", "emonet_n", "--epochs", "1",
           "--limit", "6", "--precision", "float32", "--no-jit", "--cache-dir", str(cache),
           "--teacher", str(teacher), "--teacher-pool", "2", "--seed", "3"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    r = subprocess.run([*cmd, "--out", str(tmp_path / "a")], cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "copy 2/2 labelled by emotion_int8.tflite" in r.stderr
    pools = list(cache.glob("teacher-pool-*.npz"))
    assert len(pools) == 1
    x, y, p = load_arrays(pools[0], ("x", "y", "p"))
    n = len(y) // 2
    assert x.shape == (2 * n, 48, 48, 1) and x.dtype == np.uint8 and p.shape == (2 * n, 7)
    np.testing.assert_array_equal(y[:n], y[n:])  # copy 2 repeats copy 1's faces in the same order ...
    assert np.abs(x[:n].astype(int) - x[n:]).mean() > 5  # ... distorted differently
    assert sorted(np.bincount(y, minlength=7)) == [12] * 7  # --limit 6 per class, twice
    clf = open_model_file(teacher)
    np.testing.assert_allclose(p[:16].astype(np.float32), clf.predict(x[:16]), atol=2e-3)  # the teacher's own output
    r2 = subprocess.run([*cmd, "--out", str(tmp_path / "b")], cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
    assert r2.returncode == 0 and f"from {pools[0]}" in r2.stderr and "labelled by" not in r2.stderr, r2.stderr[-2000:]
    assert json.loads((tmp_path / "b" / "train_state.json").read_text())["options"]["teacher_pool"] == 2
    assert "--teacher-pool 2" in (tmp_path / "b" / "MODEL_CARD.md").read_text()  # the recipe repeats it

    # a resumed pool run continues the pool where it stopped: epoch 2 sees other batches than epoch 1 did
    from models.batches import make_dataset
    from models.options import TrainOptions

    opts = TrainOptions(data="", out="", batch=8, seed=3, teacher_pool=2)
    targets = lambda ds: [t.numpy() for _, t in ds]  # noqa: E731 - which faces a batch holds (the mirror is random)
    straight = targets(make_dataset(x, y, opts, 7, train=True, soft=p).take(10))
    resumed = targets(make_dataset(x, y, opts, 7, train=True, soft=p, skip_batches=5).take(5))
    np.testing.assert_array_equal(np.stack(resumed), np.stack(straight[5:]))
    assert not np.array_equal(np.stack(resumed), np.stack(straight[:5]))


@pytest.mark.skipif(not HAVE_TF, reason="the pool's augmentation needs tensorflow")
def test_clean_pool_targets_give_every_framing_of_a_face_one_answer(fer_root, tmp_path):
    """--pool-targets clean: the copies are distorted (the engine's framings), but each copy of a
    face carries the teacher's answer for the undistorted face and its mirror image, averaged."""
    from engine.classify.classifier import open_model_file
    from models.data import load_split
    from models.distill import teacher_pool

    teacher = REPO / "models" / "parents" / "emonet_n" / "emotion_int8.tflite"
    ds = load_split(fer_root, "train", cache_dir=tmp_path / "cache", quiet=True)
    x, y, p = teacher_pool(ds, str(teacher), 2, "framing", 0.3, seed=4, cache_dir=tmp_path / "cache", targets="clean")
    n = len(ds)
    assert x.shape == (2 * n, 48, 48, 1) and p.shape == (2 * n, 7)
    np.testing.assert_array_equal(x[:n], ds.x)  # copy 0: the undistorted faces, the anchor ...
    assert np.abs(x[n:].astype(int) - ds.x).mean() > 5  # ... copy 1: distorted
    np.testing.assert_array_equal(p[:n], p[n:])  # one answer per face, whatever the copy
    clf = open_model_file(teacher)
    want = (clf.predict(ds.x[:16]) + clf.predict(np.ascontiguousarray(ds.x[:16, :, ::-1]))) / 2
    np.testing.assert_allclose(p[:16].astype(np.float32), want, atol=2e-3)
    assert np.abs(p[n:n + 16].astype(np.float32) - clf.predict(x[n:n + 16])).max() > 0.01  # not the distorted copy's answer
    # a "view" pool of the same recipe is a different cache entry
    teacher_pool(ds, str(teacher), 2, "framing", 0.3, seed=4, cache_dir=tmp_path / "cache", targets="view")
    assert len(list((tmp_path / "cache").glob("teacher-pool-*.npz"))) == 2


@pytest.mark.skipif(not HAVE_TF, reason="the pool's augmentation needs tensorflow")
def test_mirror_pool_targets_average_each_view_with_its_mirror_image(fer_root, tmp_path):
    """--pool-targets mirror: the same distorted copies as a view pool of that recipe, each labelled with
    the teacher's answers for the copy and for the copy's mirror image, averaged."""
    from engine.classify.classifier import open_model_file
    from models.data import load_split
    from models.distill import teacher_pool

    teacher = REPO / "models" / "parents" / "emonet_n" / "emotion_int8.tflite"
    ds = load_split(fer_root, "train", cache_dir=tmp_path / "cache", quiet=True)
    x, _, p = teacher_pool(ds, str(teacher), 2, "light", 0.0, seed=4, cache_dir=tmp_path / "cache", targets="mirror")
    xv, _, pv = teacher_pool(ds, str(teacher), 2, "light", 0.0, seed=4, cache_dir=tmp_path / "cache", targets="view")
    np.testing.assert_array_equal(x, xv)  # the same views ...
    n = len(ds)
    clf = open_model_file(teacher)
    views = x[n:n + 16]
    want = (clf.predict(views) + clf.predict(np.ascontiguousarray(views[:, :, ::-1]))) / 2
    np.testing.assert_allclose(p[n:n + 16].astype(np.float32), want, atol=2e-3)  # ... labelled with their mirror too
    assert np.abs(p.astype(np.float32) - pv.astype(np.float32)).max() > 0.01


@pytest.mark.skipif(not HAVE_TF, reason="building an ensemble needs tensorflow")
def test_ensemble_averages_its_members_in_one_model(fer_root, tmp_path):
    """models.ensemble: one safe_mode-loadable model whose output is the mean of its members'
    probabilities; MACs add up; the card says how to rebuild it (a fine-tuned member chained to the
    run it started from); mismatched members are one sentence."""
    import keras

    from models.options import TrainOptions
    from models.trainer import train

    common = dict(data=str(fer_root), arch="emonet_n", epochs=1, limit=20, batch=32, precision="float32", jit=False,
                  augment="light", cache_dir=str(tmp_path / "cache"))
    a = train(TrainOptions(out=str(tmp_path / "a"), seed=1, **common))
    b = train(TrainOptions(out=str(tmp_path / "b"), seed=2, init=str(a / "emotion.keras"), lr=0.05, **common))
    out = tmp_path / "ens"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    # listed child first (b was fine-tuned from a), and as run folders: the card still trains a before b
    r = subprocess.run([sys.executable, "-m", "models.ensemble", str(b), str(a),
                        "--out", str(out), "--data", str(fer_root)], cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "2 members" in r.stdout and "validation accuracy" in r.stdout
    spec = ModelSpec.load(out)
    member_specs = [ModelSpec.load(a), ModelSpec.load(b)]
    assert spec.labels == list(FER_CLASSES) and spec.arch == "emonet_nx2"
    assert spec.extra["macs"] == sum(s.extra["macs"] for s in member_specs)
    assert [m.get("init_member") for m in spec.extra["ensemble"]] == [1, None]

    faces = load_split(fer_root, "validation", FER_CLASSES, tmp_path / "cache", quiet=True).x[:6].astype(np.float32)
    ens = keras.saving.load_model(out / "emotion.keras", safe_mode=True)
    members = [keras.saving.load_model(p / "emotion.keras", safe_mode=True) for p in (b, a)]
    want = np.mean([np.asarray(m(faces, training=False)) for m in members], axis=0)
    got = np.asarray(ens(faces, training=False))
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.abs(np.asarray(members[0](faces)) - np.asarray(members[1](faces))).max() > 1e-4  # two different networks

    r = subprocess.run([sys.executable, "-m", "models.card", str(out)], cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    card = (out / "MODEL_CARD.md").read_text()
    assert "| members | 2 networks" in card and "--init runs/emonet_n_m1/emotion.keras" in card
    assert card.index("--out runs/emonet_n_m1") < card.index("--out runs/emonet_n_m0")  # the parent trains first
    assert "python -m models.ensemble runs/emonet_n_m0/emotion.keras runs/emonet_n_m1/emotion.keras" in card

    # it exports like any model: the float TFLite file gives the Keras probabilities, the int8 one the same
    # within quantisation (on average: a one-epoch toy net quantised from 32 faces can be off on a single face)
    from engine.classify.classifier import open_model_file
    from export.run import export_model

    export_model(out / "emotion.keras", out, calib=fer_root, calib_size=32, verify_size=32, check=False,
                 formats=("tflite-fp32", "tflite-int8"))
    u8 = faces.astype(np.uint8)[..., :1]
    np.testing.assert_allclose(open_model_file(out / "emotion_fp32.tflite").predict(u8), got, atol=1e-4)
    lite = open_model_file(out / "emotion_int8.tflite").predict(u8)
    assert lite.shape == got.shape and np.abs(lite - got).mean() < 0.05

    # members must agree on their classes; one member is no ensemble
    odd = tmp_path / "odd"
    shutil.copytree(b, odd)
    bad_spec = ModelSpec.load(odd)
    bad_spec.labels = list(reversed(bad_spec.labels))
    bad_spec.save(odd)
    for argv, message in (([str(a / "emotion.keras"), str(odd / "emotion.keras")], "members must share their classes"),
                          ([str(a / "emotion.keras")], "at least two member models"),
                          ([str(a / "emotion.keras"), str(tmp_path / "none.keras")], "does not exist"),
                          ([str(a / "emotion.keras"), str(b / "emotion.keras"), "--out", str(a)], "holds a member model"),
                          ([str(a / "emotion.keras"), str(b / "emotion.keras"), "--out", str(odd)], "already holds another model"),
                          ([str(a / "emotion.keras"), str(b / "emotion.keras"), "--out", str(a / "labels.json")], "is a file")):
        argv = argv if "--out" in argv else [*argv, "--out", str(tmp_path / "x")]
        r = subprocess.run([sys.executable, "-m", "models.ensemble", *argv],
                           cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]


@pytest.mark.skipif(not HAVE_TF, reason="timing training steps needs tensorflow")
def test_speed_choice_times_the_open_candidates_and_keeps_the_fastest(capsys):
    """--precision/--jit auto: each candidate left open by the flags is timed on real training steps
    and the fastest kept; explicit flags are obeyed untimed; a short run takes the rule (no XLA)."""
    from models.speed import SpeedChoice, candidates, choose, cpu_has_bf16, label, normalize_jit

    assert candidates("float32", "off", True) == [("float32", False)]
    assert candidates("auto", "on", False) == [("float32", True)]
    assert candidates("auto", "auto", True) == [("float32", False), ("float32", True), ("mixed_bfloat16", False), ("mixed_bfloat16", True)]
    assert normalize_jit(True) == "on" and normalize_jit(False) == "off" and normalize_jit("auto") == "auto"

    assert choose("emonet_n", 3, 8, "float32", "on", batches_per_epoch=1000) == SpeedChoice("float32", True)
    short = choose("emonet_n", 3, 8, "auto", "auto", batches_per_epoch=5)
    assert short.how == "rule" and short.jit is False and short.precision == ("mixed_bfloat16" if cpu_has_bf16() else "float32")

    measured = choose("emonet_n", 3, 8, "float32", "auto", batches_per_epoch=1000)
    assert measured.how == "measured" and set(measured.timings) == {label("float32", False), label("float32", True)}
    assert all(v > 0 for v in measured.timings.values())
    assert measured.timings[label(measured.precision, measured.jit)] == max(measured.timings.values())
    assert "img/s" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [(["--arch", "resnet9000"], "unknown arch 'resnet9000'"), (["--batch", "0"], "--batch: must be at least 1")])
def test_speed_cli_bad_input_is_one_sentence(argv, message, capsys):
    from models.speed import main

    assert cli_main(main, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0]


def test_shipped_emonet_f_card_retrains_it_from_a_checkout():
    """The default fast net's card: what it is for, its FER+ figures first, and the chain from files in a checkout
    (the FER2013 emonet_f of d6ba777, a vote fine-tune, a stage distilled from the FER+ emonet_s, a patient stage through
    a teacher pool with the votes mixed in, a blend with its clear-weighted fine-tune, each start and teacher restored
    from git), ending in --ship."""
    zoo = REPO / "engine" / "zoo" / "emonet_f"
    card = (zoo / "MODEL_CARD.md").read_text()
    spec = json.loads((zoo / "labels.json").read_text())
    assert spec["arch"] == "emonet_f" and spec["extra"]["macs"] <= 6.6e6
    blend = spec["extra"]["interpolate"]
    assert blend["a"] == "runs/emonet_f_a90fc64/emotion.keras" and blend["b"] == "runs/cw5q_f/emotion.keras" and blend["alpha"] == 0.7
    assert "git show d6ba777:models/zoo/emonet_f/$f > runs/emonet_f_d6ba777/$f" in card
    assert "git show c226da1:engine/zoo/emonet_s/$f > runs/emonet_s_c226da1/$f" in card
    assert "git show a90fc64:engine/zoo/emonet_f/$f > runs/emonet_f_a90fc64/$f" in card
    assert "--teacher runs/emonet_s_c226da1/emotion.keras --init runs/fp_f/emotion.keras" in card
    assert "--teacher runs/emonet_s_c226da1/emotion_int8.tflite --teacher-pool 12 --pool-targets mirror" in card
    assert "--clear-weight 5 --class-weight sqrt" in card and "--init runs/emonet_f_a90fc64/emotion.keras" in card
    assert card.count("python -m models.train ") >= 4  # the four trained stages
    assert card.count("python -m models.interpolate runs/emonet_f_a90fc64/emotion.keras runs/cw5q_f/emotion.keras --alpha 0.7") >= 2
    assert "--ship engine/zoo/emonet_f" in card and "**The default fast model" in card
    metrics = json.loads((zoo / "metrics.json").read_text())
    assert card.index("FER+ majority accuracy") < card.index("FER2013-label accuracy")
    assert f"{metrics['ferplus']['accuracy'] * 100:.2f}%" in card and f"{metrics['accuracy'] * 100:.2f}%" in card


def test_card_recipe_repeats_pool_targets_only_where_they_matter():
    """The card's retrain command names --pool-targets for a clean pool, not for the default
    "view" nor for run states written before the option existed."""
    from models.card import retrain_command

    base = {"data": "D", "classes": ["happy", "sad"], "arch": "emonet_n", "teacher": "t.tflite", "teacher_pool": 4}
    assert "--teacher-pool 4 \\\n    --pool-targets clean \\\n" in retrain_command({**base, "pool_targets": "clean"}, "OUT")
    assert "--pool-targets" not in retrain_command({**base, "pool_targets": "view"}, "OUT")
    assert "--pool-targets" not in retrain_command(base, "OUT")  # an older train_state.json
    assert "--pool-targets" not in retrain_command({**base, "teacher_pool": 0, "pool_targets": "clean"}, "OUT")


@pytest.mark.skipif(not HAVE_TF, reason="the consistency loss needs keras")
def test_consistency_loss_is_cross_entropy_plus_the_two_views_disagreement():
    """Rows i and i + N/2 are two views of one face: the same answer adds nothing to the
    cross-entropy, different answers add weight x their KL, and the weight survives saving."""
    import keras

    from models.consistency import PairConsistencyLoss

    y = np.array([[1, 0, 0], [0, 1, 0]] * 2, np.float32)
    same = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]] * 2, np.float32)
    ce = float(keras.losses.CategoricalCrossentropy()(y, same))
    assert float(PairConsistencyLoss(1.0)(y, same)) == pytest.approx(ce, rel=1e-5)
    other = same.copy()
    other[2:] = [[0.2, 0.7, 0.1], [0.4, 0.3, 0.3]]
    ce_other = float(keras.losses.CategoricalCrossentropy()(y, other))
    p, q = other[:2], other[2:]
    kl = (np.sum(q * np.log(q / p), 1) + np.sum(p * np.log(p / q), 1)).mean() / 2  # both halves, averaged over 2N rows
    assert float(PairConsistencyLoss(0.0)(y, other)) == pytest.approx(ce_other, rel=1e-5)
    assert float(PairConsistencyLoss(2.0)(y, other)) == pytest.approx(ce_other + 2.0 * kl, rel=1e-4)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(PairConsistencyLoss(2.5)), safe_mode=True)
    assert isinstance(again, PairConsistencyLoss) and again.weight == 2.5


@pytest.mark.skipif(not HAVE_TF, reason="training needs tensorflow (pip install '.[train]')")
def test_consistency_training_pairs_every_batch_and_resumes(fer_root, tmp_path):
    """--consistency: the batches hold each face and its engine-like view (validation: the face
    twice), the run saves, resumes from a checkpoint compiled with the custom loss under
    safe_mode, and the card's recipe repeats the flag."""
    from models.batches import make_dataset
    from models.options import TrainOptions

    faces = np.random.default_rng(0).integers(0, 256, (10, 48, 48, 1), dtype=np.uint8)
    labels = np.arange(10) % 7
    opts = TrainOptions(data="", out="", batch=4, consistency=1.0, augment="none")
    xb, yb = next(iter(make_dataset(faces, labels, opts, 7, train=True)))
    assert xb.shape == (8, 48, 48, 1) and np.array_equal(yb[:4], yb[4:])
    assert not np.array_equal(xb[:4], xb[4:])  # the second half is a distorted view ...
    xv, yv = next(iter(make_dataset(faces, labels, opts, 7, train=False)))
    np.testing.assert_array_equal(xv[:4], xv[4:])  # ... validation pairs a face with itself

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "models.train", "--data", str(fer_root), "--out", str(out), "--arch", "emonet_n",
           "--epochs", "1", "--limit", "10", "--classes", "3", "--precision", "float32", "--no-jit", "--consistency", "0.5",
           "--cache-dir", str(tmp_path / "cache")]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    r2 = subprocess.run([*cmd[:cmd.index("--epochs") + 1], "2", *cmd[cmd.index("--epochs") + 2:], "--resume"],
                        cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
    assert r2.returncode == 0 and "epoch 2/2" in r2.stderr, r2.stderr[-2000:]
    from models.card import retrain_command

    state = json.loads((out / "train_state.json").read_text())
    assert state["options"]["consistency"] == 0.5 and "--consistency 0.5" in retrain_command(state["options"], "OUT")
    assert "--consistency" not in retrain_command({**state["options"], "consistency": 0.0}, "OUT")


def test_balanced_accuracy_is_the_mean_recall_of_the_classes_present():
    """Beside accuracy in metrics, export reports and cards: a net that always says 'happy' scores FER2013's happy
    share in accuracy but 1/7 here; a class absent from the data does not count."""
    from models.metrics import balanced_accuracy, classification_report

    y = np.array([3] * 8 + [1] * 2 + [2] * 2)
    always_happy = classification_report(y, np.full_like(y, 3), FER_CLASSES)
    assert always_happy["accuracy"] == pytest.approx(8 / 12)
    assert always_happy["balanced_accuracy"] == pytest.approx(1 / 3)  # 3 classes present: recalls 1, 0, 0
    pred = y.copy()
    pred[:4] = 0  # half the happy faces wrong, the rare ones all right
    assert balanced_accuracy(classification_report(y, pred, FER_CLASSES)["confusion"]) == pytest.approx((0.5 + 1 + 1) / 3)


def test_card_quotes_the_hard_crop_benchmark_only_for_the_file_it_measured(tmp_path):
    """crop_hard.json beside a model: its figures go into the card only when the file it ran is the one shipped."""
    import shutil

    from engine.core.contract import sha256_file
    from models.card import write_card

    run = tmp_path / "emonet_n"
    shutil.copytree(REPO / "models" / "parents" / "emonet_n", run)
    crop = json.loads((run / "crop_hard.json").read_text())
    for sha, shown in ((sha256_file(run / "emotion_int8.tflite"), True), ("0" * 64, False)):
        crop["model_sha256"] = sha
        (run / "crop_hard.json").write_text(json.dumps(crop))
        card = write_card(run).read_text()
        assert ("label = direct label on" in card) is shown
        assert ("was measured on another emotion_int8.tflite" in card) is not shown
    assert "| balanced accuracy |" in card and "disgust" in card.split("| balanced accuracy |")[1].splitlines()[0]
