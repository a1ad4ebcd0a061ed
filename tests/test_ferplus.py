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
