"""models.interpolate: two nets of one architecture blended in weight space, logit adjustment folded into
the softmax layer's bias; the result loads, runs and describes itself like any run."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.core.contract import FER_CLASSES, ModelSpec, sha256_file
from engine.core.errors import cli_main

pytest.importorskip("tensorflow", reason="needs TensorFlow (pip install '.[train]')")


def _save(arch: str, seed: int, out: Path, data: Path) -> Path:
    import keras

    from models.archs import ARCHS

    keras.utils.set_random_seed(seed)
    model = ARCHS[arch](7)
    out.mkdir(parents=True)
    model.save(out / "emotion.keras")
    spec = ModelSpec(labels=list(FER_CLASSES), arch=arch, extra={"options": {"data": str(data)}})
    spec.source_sha256 = sha256_file(out / "emotion.keras")
    spec.save(out)
    return out


@pytest.fixture(scope="module")
def pair(tmp_path_factory, fer_root):
    tmp = tmp_path_factory.mktemp("blend")
    return _save("emonet_f", 1, tmp / "a", fer_root), _save("emonet_f", 2, tmp / "b", fer_root), tmp


def _weights(path: Path):
    from engine.core.keras_io import load_keras

    return load_keras(path / "emotion.keras").get_weights()


def test_alpha_walks_the_line_between_the_two_nets(pair, tmp_path):
    from models.interpolate import main

    a, b, _ = pair
    wa, wb = _weights(a), _weights(b)
    for alpha in (1.0, 0.0, 0.25):
        out = tmp_path / f"x{alpha}"
        assert cli_main(main, [str(a), str(b), "--alpha", str(alpha), "--out", str(out)]) == 0
        for got, x, y in zip(_weights(out), wa, wb):
            np.testing.assert_allclose(got, alpha * x + (1 - alpha) * y, rtol=1e-5, atol=1e-6)
        spec = ModelSpec.load(out)
        assert spec.extra["interpolate"]["alpha"] == alpha and spec.source_sha256 == sha256_file(out / "emotion.keras")


def test_logit_adjustment_is_folded_into_the_head_bias(pair, tmp_path, fer_root):
    from models.data import load_split
    from models.interpolate import HEAD, main

    a, b, _ = pair
    out = tmp_path / "adj"
    assert cli_main(main, [str(a), str(b), "--alpha", "0.5", "--tau", "0.5", "--class-bias", "fear=0.2",
                           "--data", str(fer_root), "--out", str(out), "--cache-dir", str(tmp_path / "cache")]) == 0
    y = load_split(fer_root, "train", cache_dir=tmp_path / "cache", quiet=True).y
    prior = np.bincount(y, minlength=7) / len(y)
    want = -0.5 * np.log(prior)
    want[FER_CLASSES.index("fear")] += 0.2
    from engine.core.keras_io import load_keras

    bias = [load_keras(m / "emotion.keras").get_layer(HEAD).get_weights()[1] for m in (a, b)]
    got = load_keras(out / "emotion.keras").get_layer(HEAD).get_weights()[1]
    np.testing.assert_allclose(got, (bias[0] + bias[1]) / 2 + want, rtol=1e-5, atol=1e-5)
    assert (out / "metrics.json").is_file()  # evaluated on the validation split
    from models.card import write_card

    card = write_card(out).read_text()
    assert "python -m models.interpolate" in card and "--tau 0.5 --class-bias fear=0.2" in card
    assert "balanced accuracy" in card


def test_one_model_alone_gets_only_the_adjustment(pair, tmp_path, fer_root):
    from engine.core.keras_io import load_keras
    from models.interpolate import HEAD, main

    a, _, _ = pair
    out = tmp_path / "only"
    assert cli_main(main, [str(a), "--tau", "0.3", "--data", str(fer_root), "--out", str(out), "--cache-dir", str(tmp_path / "c")]) == 0
    got, plain = (load_keras(m / "emotion.keras") for m in (out, a))
    shift = np.array(ModelSpec.load(out).extra["interpolate"]["shift"])
    for lg, lp in zip(got.layers, plain.layers):
        for wg, wp in zip(lg.get_weights(), lp.get_weights()):
            if lg.name == HEAD and wg.ndim == 1:
                np.testing.assert_allclose(wg, wp + shift, atol=1e-5)
            else:
                np.testing.assert_array_equal(wg, wp)
    from models.card import write_card

    card = write_card(out).read_text()
    assert f"python -m models.interpolate {a / 'emotion.keras'} --tau 0.3 --data" in card


@pytest.mark.parametrize("extra, message", [
    (["--alpha", "1.5"], "must be in [0, 1]"),
    ([], "needs --alpha"),
    (["--alpha", "0.5", "--tau", "0.3"], "need --data"),
    (["--alpha", "0.5", "--tau", "nan"], "--tau must be 0 (off) or a positive number"),
    (["--alpha", "0.5", "--class-bias", "fear"], "write NAME=VALUE"),
])
def test_bad_options_are_one_sentence(pair, tmp_path, extra, message, capsys):
    from models.interpolate import main

    a, b, _ = pair
    assert cli_main(main, [str(a), str(b), "--out", str(tmp_path / "o"), *extra]) == 2
    assert message in capsys.readouterr().err


def test_other_architectures_and_unknown_classes_are_refused(pair, tmp_path, fer_root, capsys):
    from models.interpolate import main

    a, b, tmp = pair
    n = tmp / "n"
    if not n.exists():
        _save("emonet_n", 3, n, fer_root)
    assert cli_main(main, [str(a), str(n), "--alpha", "0.5", "--out", str(tmp_path / "o")]) == 2
    assert "different architectures" in capsys.readouterr().err
    assert cli_main(main, [str(a), str(b), "--alpha", "0.5", "--class-bias", "joy=1", "--data", str(fer_root),
                           "--out", str(tmp_path / "o2"), "--cache-dir", str(tmp_path / "cache")]) == 2
    assert "not one of this model's classes" in capsys.readouterr().err
    assert cli_main(main, [str(a), str(b), "--alpha", "0.5", "--out", str(a)]) == 2
    assert "holds a parent model" in capsys.readouterr().err
    assert cli_main(main, [str(a), "--alpha", "0.5", "--out", str(tmp_path / "o3")]) == 2
    assert "needs a model B" in capsys.readouterr().err
