"""FER+ votes: reading, the majority protocol, calibration, and training / evaluating / exporting against them."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.core.contract import FER_CLASSES, ModelSpec
from engine.core.errors import UserError
from models import ferplus
from models.paired import mcnemar_exact, paired_clear
from tests.conftest import build_face_folder

REPO = Path(__file__).resolve().parents[1]
HEADER = "file,ferplus_name,corr,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF\n"


def _row(file: str, **votes: int) -> str:
    cols = ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt", "unknown", "NF"]
    return f"{file},x.png,0.99," + ",".join(str(votes.get(c, 0)) for c in cols) + "\n"


def test_votes_follow_the_ferplus_protocol(tmp_path):
    """Shares over the model's classes (unknown / NF / contempt dropped), majority over all ten columns with
    unknown, NF, contempt (for a 7-class model) and ties left out, no row = no votes."""
    csv = tmp_path / "ferplus.csv"
    csv.write_text(HEADER
                   + _row("a.jpg", neutral=6, sadness=2, unknown=2)      # neutral majority, shares 0.75 / 0.25
                   + _row("b.jpg", happiness=4, surprise=4, NF=2)        # tie: no majority, but has shares
                   + _row("c.jpg", unknown=6, anger=4)                   # unknown majority: left out
                   + _row("d.jpg", contempt=8, anger=2)                  # contempt majority: outside 7 classes
                   + _row("e.jpg", NF=10))                               # nothing left: no votes at all
    table = ferplus.read_csv(csv)
    v = ferplus.votes_for(["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg", "missing.jpg"], table, FER_CLASSES)
    neutral, sad, happy, surprise, angry = (FER_CLASSES.index(c) for c in ("neutral", "sad", "happy", "surprise", "angry"))
    assert v.probs[0, neutral] == pytest.approx(0.75) and v.probs[0, sad] == pytest.approx(0.25)
    assert v.probs[1, happy] == pytest.approx(0.5) and v.probs[2, angry] == pytest.approx(1.0) and v.probs[3, angry] == pytest.approx(1.0)
    assert list(v.has) == [True, True, True, True, False, False]
    assert list(v.majority) == [neutral, -1, -1, -1, -1, -1]
    assert list(v.top_votes[:1]) == [6]
    # an 8-class model (contempt included) scores d.jpg
    v8 = ferplus.votes_for(["d.jpg"], table, (*FER_CLASSES, "contempt"))
    assert v8.majority[0] == 7
    # training targets: the votes, or the FER2013 label where there are none
    t = ferplus.targets(v, np.array([0, 0, 0, 0, 5, 3]))
    assert t[4, 5] == 1 and t[5, 3] == 1 and t[0, neutral] == pytest.approx(0.75)


def test_a_file_that_is_not_votes_is_one_sentence(tmp_path):
    bad = tmp_path / "ferplus.csv"
    bad.write_text("file,neutral\nx.jpg,3\n")
    with pytest.raises(UserError, match="not a FER\\+ votes file"):
        ferplus.read_csv(bad)
    with pytest.raises(UserError, match="no FER\\+ votes file"):
        ferplus.find_csv(tmp_path / "nowhere")


def test_calibration_error_and_temperature():
    """ECE is zero for confidences that match accuracy and large for overconfident ones; the fitted
    temperature recovers the one that made probabilities too soft, and folding it into a Dense softmax
    layer divides its logits."""
    rng = np.random.default_rng(0)
    conf = np.full(1000, 0.8)
    correct = rng.random(1000) < 0.8
    assert ferplus.calibration(conf, correct)["ece"] < 0.03
    assert ferplus.calibration(np.full(1000, 0.99), correct)["ece"] > 0.15

    # labels drawn from softmax(z); the model answers softmax(z / 2): too soft, T = 0.5 undoes it
    z = rng.normal(0, 2.5, (4000, 7))
    p_true = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    y = np.array([rng.choice(7, p=p) for p in p_true])
    soft = np.exp(z / 2) / np.exp(z / 2).sum(1, keepdims=True)
    t = ferplus.fit_temperature(soft, y)
    assert 0.4 < t < 0.6

    keras = pytest.importorskip("keras")
    inp = keras.Input((3,))
    model = keras.Model(inp, keras.layers.Dense(4, activation="softmax")(inp))
    x = rng.normal(size=(5, 3)).astype("float32")
    before = np.asarray(model(x))
    ferplus.apply_temperature(model, 0.5)
    after = np.asarray(model(x))
    expect = before ** 2 / (before ** 2).sum(1, keepdims=True)  # softmax(2 z) = p^2 / sum p^2
    np.testing.assert_allclose(after, expect, rtol=1e-4, atol=1e-6)


@pytest.fixture(scope="module")
def voted_tree(tmp_path_factory) -> Path:
    """A tiny real-face tree with a ferplus.csv: most faces voted as their folder, some neutral, one unmatched."""
    root = build_face_folder(tmp_path_factory.mktemp("voted"), {"train": 8, "validation": 6})
    fer_to_column = {"angry": "anger", "disgust": "disgust", "fear": "fear", "happy": "happiness", "sad": "sadness",
                     "surprise": "surprise", "neutral": "neutral"}
    lines = [HEADER]
    for split in ("train", "validation"):
        for cls in FER_CLASSES:
            for i, f in enumerate(sorted((root / split / cls).iterdir())):
                if i == 0 and split == "train":
                    continue  # no votes: keeps its FER2013 label
                votes = {fer_to_column[cls]: 7, "neutral": 3} if cls != "neutral" else {"neutral": 9, "unknown": 1}
                if i == 1:
                    votes = {"neutral": 8, fer_to_column[cls]: 2} if cls != "neutral" else votes
                lines.append(_row(f.relative_to(root).as_posix(), **votes))
    (root / "ferplus.csv").write_text("".join(lines))
    return root


def test_training_on_votes_calibrates_and_the_card_leads_with_ferplus(voted_tree, tmp_path):
    """`models.train --votes`: trains on vote shares (unmatched faces keep their label, said on stderr), folds a
    fitted temperature into the model, and metrics.json, the reliability plot and the card lead with FER+."""
    out = tmp_path / "run"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    cmd = [sys.executable, "-m", "models.train", "--data", str(voted_tree), "--out", str(out), "--arch", "emonet_n",
           "--epochs", "1", "--batch", "16", "--votes", "--precision", "float32", "--no-jit", "--cache-dir", str(tmp_path / "cache")]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "FER+ votes: 49 of 56 training faces" in r.stderr
    assert "calibration: logits divided by" in r.stderr
    spec = ModelSpec.load(out)
    assert spec.extra["options"]["votes"] == "auto" and 0.3 <= spec.extra["temperature"] <= 3.0
    m = json.loads((out / "metrics.json").read_text())
    fp = m["ferplus"]
    assert fp["faces"] == 42 and 0 <= fp["accuracy"] <= 1 and 0 <= fp["ece"] <= 1 and "neutral" in fp["recall"]
    assert fp["clear"]["faces"] == 6 * 5  # >= 7 of 10 for one non-neutral emotion: all but face 1 of each of 6 classes
    assert (out / "reliability.png").stat().st_size > 1000
    card = (out / "MODEL_CARD.md").read_text()
    assert card.index("FER+ majority accuracy") < card.index("FER2013-label accuracy")
    assert "--votes auto" in card

    # models.evaluate scores against the same votes, and --no-votes gives the FER2013 figures alone
    ev = subprocess.run([sys.executable, "-m", "models.evaluate", "--model", str(out / "emotion.keras"), "--data", str(voted_tree),
                         "--out", str(tmp_path / "ev"), "--cache-dir", str(tmp_path / "cache"), "--no-unseen"],
                        cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert ev.returncode == 0, ev.stderr[-2000:]
    assert "FER+ majority accuracy" in ev.stdout and "FER2013-label accuracy" in ev.stdout
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["ferplus"]["accuracy"] == pytest.approx(fp["accuracy"])


def test_votes_with_a_teacher_is_one_sentence(voted_tree, tmp_path, capsys):
    from models.train import main

    from engine.core.errors import cli_main

    rc = cli_main(main, ["--data", str(voted_tree), "--out", str(tmp_path / "x"), "--votes", "--soft-labels", "y.npz"])
    assert rc == 2
    assert "--votes are the training targets" in capsys.readouterr().err


def test_votes_mix_into_a_teacher_pool(voted_tree, tmp_path):
    """`--votes --teacher-pool P`: every pool copy of a face gets W x that face's vote shares + (1 - W) x the teacher's
    answer for the copy (a long distillation at the student's speed that still learns what people see); the run
    says how many faces have votes, and its card repeats both flags."""
    from models.distill import with_votes

    pool = np.array([[0.5, 0.5, 0], [0, 1, 0], [1, 0, 0], [0, 0, 1]], np.float16)  # 2 copies of 2 faces
    votes = np.array([[0, 0, 1], [1, 0, 0]], np.float32)
    mixed = with_votes(pool, votes, 0.25)
    np.testing.assert_allclose(mixed, [[0.375, 0.375, 0.25], [0.25, 0.75, 0], [0.75, 0, 0.25], [0.25, 0, 0.75]])
    assert mixed.dtype == np.float32 and np.allclose(mixed.sum(1), 1)
    with pytest.raises(ValueError, match="not whole copies"):
        with_votes(pool[:3], votes, 0.5)

    # the trainer's own batches: every target is a row of with_votes(pool, votes), none the bare teacher answer
    from models.data import load_split
    from models.distill import teacher_pool
    from models.options import TrainOptions
    from models.trainer import _build_inputs, _vote_targets

    teacher = REPO / "models" / "parents" / "emonet_n" / "emotion_int8.tflite"
    opts = TrainOptions(data=str(voted_tree), out=str(tmp_path / "unused"), batch=8, votes="auto", votes_weight=0.5,
                        teacher=str(teacher), teacher_pool=2, augment="framing", cache_dir=str(tmp_path / "cache"))
    train, val = (load_split(voted_tree, s, cache_dir=opts.cache_dir, quiet=True) for s in ("train", "validation"))
    fixed, val_fixed, _ = _vote_targets(opts, train, val)
    tr, _, _ = _build_inputs(opts, train, val, None, 0, fixed, val_fixed)
    _, _, raw = teacher_pool(train, str(teacher), 2, "framing", 0.0, opts.seed, opts.cache_dir)
    want = with_votes(raw, fixed, 0.5)
    got = np.concatenate([t.numpy() for _, t in tr.take(len(want) // 8)])
    assert np.abs(got[:, None, :] - want[None]).sum(-1).min(1).max() < 1e-3
    bare = np.abs(got[:, None, :] - raw.astype(np.float32)[None]).sum(-1).min(1)
    assert (bare > 0.05).mean() > 0.5  # the votes moved most targets away from the teacher's answer

    out = tmp_path / "run"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    cmd = [sys.executable, "-m", "models.train", "--data", str(voted_tree), "--out", str(out), "--arch", "emonet_n",
           "--epochs", "1", "--batch", "16", "--votes", "--votes-weight", "0.5", "--teacher", str(teacher),
           "--teacher-pool", "2", "--class-weight", "sqrt", "--clear-weight", "2", "--precision", "float32", "--no-jit",
           "--cache-dir", str(tmp_path / "cli-cache")]  # its own cache: the pool is labelled, not found
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "FER+ votes: 49 of 56 training faces" in r.stderr and "copy 2/2 labelled by emotion_int8.tflite" in r.stderr
    assert "clear expressions: 36 training faces weigh 2x" in r.stderr
    card = (out / "MODEL_CARD.md").read_text()
    assert "--votes auto" in card and "--teacher-pool 2" in card and "--votes-weight 0.5" in card
    assert "--clear-weight 2.0 " in card or "--clear-weight 2.0\n" in card


def test_clear_expressions_weigh_more(voted_tree, tmp_path):
    """`--clear-weight K`: a face where >= 7 of 10 chose one non-neutral emotion weighs K x a face of its class that is
    not clear, in the trainer's own batches, with the mean weight per face still 1; without --votes it is one sentence."""
    from models.data import load_split
    from models.options import TrainOptions
    from models.trainer import _build_inputs, _vote_targets

    opts = TrainOptions(data=str(voted_tree), out=str(tmp_path / "unused"), batch=8, votes="auto", clear_weight=3.0,
                        class_weight="sqrt", cache_dir=str(tmp_path / "cache"))
    train, val = (load_split(voted_tree, s, cache_dir=opts.cache_dir, quiet=True) for s in ("train", "validation"))
    fixed, val_fixed, clear = _vote_targets(opts, train, val)
    assert clear.sum() == 36  # six emotions x six faces voted 7 of 10 (one per folder has no votes, one is 8 x neutral)
    tr, _, _ = _build_inputs(opts, train, val, None, 0, fixed, val_fixed, clear)
    got = [(t.numpy().argmax(1), w.numpy()) for _, t, w in tr]
    cls, w = np.concatenate([c for c, _ in got]), np.concatenate([w for _, w in got])
    assert len(w) == len(train) and abs(w.mean() - 1) < 1e-5
    for c in range(6):  # the six emotions: their clear faces weigh 3 x their calm-voted ones (target: 8 x neutral)
        mine = w[cls == c]
        assert len(mine) == 7 and np.isclose(mine.max(), 3 * mine.min()) and (np.isclose(mine, mine.max())).sum() == 6

    # through a teacher pool: the weights are tiled per copy, so one pass over the pool holds every copy's clear faces
    from models.distill import teacher_pool

    teacher = REPO / "models" / "parents" / "emonet_n" / "emotion_int8.tflite"
    popts = TrainOptions(data=str(voted_tree), out=str(tmp_path / "unused"), batch=8, votes="auto", votes_weight=0.5,
                         clear_weight=3.0, teacher=str(teacher), teacher_pool=2, augment="framing",
                         cache_dir=opts.cache_dir)
    tr, _, _ = _build_inputs(popts, train, val, None, 0, fixed, val_fixed, clear)
    px, _, _ = teacher_pool(train, str(teacher), 2, "framing", 0.0, popts.seed, popts.cache_dir)
    pw = np.concatenate([w.numpy() for _, _, w in tr.take(len(px) // 8)])
    assert len(pw) == 2 * len(train) and abs(pw.mean() - 1) < 1e-5
    assert np.isclose(pw.max(), 3 * pw.min()) and np.isclose(pw, pw.max()).sum() == 2 * 36

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    for flags, message in ((["--clear-weight", "2"], "error: --clear-weight weighs faces by their FER+ votes: it needs --votes"),
                           (["--votes", "--clear-weight", "inf"], "error: --clear-weight inf: must be a number in (0, 1000]"),
                           (["--votes", "--clear-weight", "0"], "error: --clear-weight 0.0: must be a number in (0, 1000]")):
        r = subprocess.run([sys.executable, "-m", "models.train", "--data", str(voted_tree), "--out", str(tmp_path / "r"), *flags],
                           cwd=REPO, capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == message


def _votes(labels: tuple[str, ...], majority: np.ndarray, top: np.ndarray) -> ferplus.Votes:
    probs = np.eye(len(labels), dtype=np.float32)[majority]
    return ferplus.Votes(labels=labels, probs=probs, has=np.ones(len(majority), bool), majority=majority.astype(np.int32),
                         top_votes=top.astype(np.int32))


def test_class_offsets_keep_clear_expressions_at_the_best_accuracy():
    """fit_class_bias: a net that calls clear fear faces 'surprise' gets a fear offset until the floor is met, and
    no more than needed (surprise faces stay surprise); with several answer sets the worst one must meet it."""
    labels = ("fear", "surprise", "neutral")
    rng = np.random.default_rng(0)
    majority = np.repeat([0, 1, 2], 40)
    top = np.full(120, 8)
    p = np.full((120, 3), 0.05)
    p[np.arange(120), majority] = 0.6
    margin = rng.uniform(0.02, 0.3, 40)
    p[:40, 1] = 0.6 + margin  # every fear face: surprise wins by a margin
    p /= p.sum(1, keepdims=True)
    votes = _votes(labels, majority, top)
    assert ferplus.clear_correct(p.argmax(1), votes) == {"fear": 0, "surprise": 40}
    bias = ferplus.fit_class_bias(p, votes, {"fear": 30, "surprise": 40})
    got = ferplus.clear_correct((np.log(p) + bias).argmax(1), votes)
    assert got["fear"] >= 30 and got["surprise"] == 40
    assert bias[0] - bias[1] > 0  # fear moved up against surprise
    # a second, harder answer set (the int8 file): the floor must hold there too
    q = p.copy()
    q[:40, 1] *= 1.3
    q /= q.sum(1, keepdims=True)
    both = ferplus.fit_class_bias([p, q], votes, {"fear": 30, "surprise": 40})
    for probs in (p, q):
        assert ferplus.clear_correct((np.log(probs) + both).argmax(1), votes)["fear"] >= 30
    # one floor for all clear faces together, where meeting it costs accuracy: ten clear fear faces look exactly like
    # forty neutral-majority faces (neutral first, fear second), so whatever offset fixes them turns those into fear
    maj = np.repeat([0, 1, 2], [10, 40, 40])
    r = np.array([[0.35, 0.2, 0.45]] * 10 + [[0.2, 0.6, 0.2]] * 40 + [[0.35, 0.2, 0.45]] * 40)
    v2 = _votes(labels, maj, np.full(90, 8))
    free = ferplus.fit_class_bias(r, v2, {})
    assert ferplus.clear_correct((np.log(r) + free).argmax(1), v2)["fear"] == 0  # left alone, the neutral faces win
    total = ferplus.fit_class_bias(r, v2, {}, total=50)
    assert ferplus.clear_correct((np.log(r) + total).argmax(1), v2) == {"fear": 10, "surprise": 40}
    acc = [ferplus.majority_accuracy((np.log(r) + b).argmax(1), v2) for b in (free, total)]
    assert acc[1] < acc[0]  # the floor was met at accuracy's expense
    with pytest.raises(ValueError, match="not 'class' or 'total'"):
        ferplus.cross_fit_class_bias(r, maj, v2, splits=1, floor="totl")
    # no floors: offsets only where they raise the majority accuracy, never lower it
    free = ferplus.fit_class_bias(p, votes, {})
    acc = [((np.log(p) + b).argmax(1) == majority).mean() for b in (np.zeros(3), free)]
    assert acc[1] >= acc[0]


def test_keep_clear_folds_offsets_and_temperature_into_the_head(voted_tree, tmp_path):
    """`models.interpolate A --keep-clear REF`: the saved net answers softmax((log p_A + b) / t) with the fitted
    offsets b and temperature t, keeps REF's clear-expression counts (A alone does not), records the cross-fitted
    figures, and its card gives the command."""
    import keras

    from engine.core.contract import sha256_file
    from engine.core.errors import cli_main
    from engine.core.keras_io import load_keras
    from models.archs import ARCHS
    from models.data import load_split
    from models.evaluate import keras_probs
    from models.interpolate import main

    def untrained(name: str, seed: int) -> Path:
        keras.utils.set_random_seed(seed)
        folder = tmp_path / name
        folder.mkdir()
        ARCHS["emonet_n"](7).save(folder / "emotion.keras")
        spec = ModelSpec(labels=list(FER_CLASSES), arch="emonet_n", extra={"options": {"data": str(voted_tree)}})
        spec.source_sha256 = sha256_file(folder / "emotion.keras")
        spec.save(folder)
        return folder

    a, ref = untrained("a", 3), untrained("ref", 5)  # two untrained nets that call the faces different things
    out = tmp_path / "kept"
    assert cli_main(main, [str(a), "--keep-clear", str(ref), "--data", str(voted_tree), "--out", str(out)]) == 0
    kept = ModelSpec.load(out).extra["interpolate"]["keep_clear"]
    assert any(kept["floors"].values()) and any(kept["bias"])  # REF's faces are A's only with offsets
    assert all(kept["after"]["clear_correct"][k] >= n for k, n in kept["floors"].items())
    assert kept["cross_fitted"]["splits"] == 10 and "fear" in kept["cross_fitted"]["clear_correct"]["after"]
    val = load_split(voted_tree, "validation", FER_CLASSES, quiet=True)
    before = keras_probs(load_keras(a / "emotion.keras"), val.x)
    after = keras_probs(load_keras(out / "emotion.keras"), val.x)
    z = (np.log(before) + np.array(kept["bias"])) / kept["temperature"]
    expect = np.exp(z - z.max(1, keepdims=True))
    np.testing.assert_allclose(after, expect / expect.sum(1, keepdims=True), rtol=1e-3, atol=1e-5)
    from models.card import write_card

    write_card(out)
    assert f"--keep-clear {ref}" in (out / "MODEL_CARD.md").read_text()


def test_paired_clear_counts_the_faces_only_one_model_gets_right():
    """paired_clear: per class and for all clear faces, who is right where, and the exact McNemar p (a 9-to-1 split of
    ten discordant faces is p = 22/1024, a 1-to-1 split p = 1)."""
    labels = ("fear", "surprise", "neutral")
    majority = np.array([0] * 12 + [1] * 4 + [2] * 3)
    votes = _votes(labels, majority, np.array([8] * 16 + [9] * 3))
    old = majority.copy()
    new = majority.copy()
    old[:9] = 1  # old misses nine fear faces the new one gets ...
    new[9] = 1  # ... and the new one misses one the old one gets; surprise: one face each way
    old[12], new[13] = 0, 0
    rows = paired_clear(old, new, votes)
    assert set(rows) == {"fear", "surprise", "all"}  # neutral faces are not clear expressions
    assert rows["fear"] == {"faces": 12, "old": 3, "new": 11, "only_new": 9, "only_old": 1, "p": pytest.approx(22 / 1024)}
    assert rows["surprise"]["only_new"] == rows["surprise"]["only_old"] == 1 and rows["surprise"]["p"] == 1.0
    assert rows["all"]["faces"] == 16 and rows["all"]["new"] - rows["all"]["old"] == 8
    assert mcnemar_exact(0, 0) == 1.0 and mcnemar_exact(0, 3) == pytest.approx(0.25)


def test_ferplus_benchmark_pairs_two_models_on_the_clear_faces(voted_tree, tmp_path):
    """`benchmarks/ferplus.py --pair OLD,NEW`: the real int8 files through the engine's classifier, a paired table whose
    counts agree with each model's own clear recall; a name that is not a --model is one sentence before any scoring."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = tmp_path / "fp"
    models = ["--model", f"n={REPO / 'models' / 'parents' / 'emonet_n'}", "--model", f"f={REPO / 'engine' / 'zoo' / 'emonet_f'}"]
    r = subprocess.run([sys.executable, "benchmarks/ferplus.py", "--data", str(voted_tree), *models, "--pair", "n,f",
                        "--out", str(out)], cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.with_suffix(".json").read_text())
    (pair,) = res["pairs"]
    assert (pair["old"], pair["new"]) == ("n", "f")
    for name, key in (("n", "old"), ("f", "new")):
        clear = res["results"][name]["clear"]
        for c, rec in clear["recall"].items():
            assert pair["rows"][c][key] == round(rec["recall"] * rec["faces"])
        assert pair["rows"]["all"][key] == round(clear["accuracy"] * clear["faces"])
    for row in pair["rows"].values():  # the faces only one model gets right are within its class's clear faces
        assert row["only_new"] <= row["new"] and row["only_old"] <= row["old"] and row["only_new"] + row["only_old"] <= row["faces"]
        assert row["p"] == mcnemar_exact(row["only_new"], row["only_old"])
    assert "Paired on the clear faces: **f** against **n**" in out.with_suffix(".md").read_text()

    bad = subprocess.run([sys.executable, "benchmarks/ferplus.py", "--data", str(voted_tree), *models, "--pair", "n,x",
                          "--out", str(tmp_path / "bad")], cwd=REPO, capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("error: --pair 'n,x': not two --model names")
    assert "scoring" not in bad.stderr
    from benchmarks.ferplus import parse_pairs

    with pytest.raises(UserError, match="paired with itself"):
        parse_pairs(["n,n"], ["n", "f"])
    assert parse_pairs(["old (FER2013, d6ba777),new"], ["old (FER2013, d6ba777)", "new"]) == [("old (FER2013, d6ba777)", "new")]
