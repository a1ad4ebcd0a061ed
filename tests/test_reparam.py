"""models.reparam: a training twin with RepVGG branches folds into exactly its plain net."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("keras")


def _randomise(model, rng) -> None:
    """Random weights everywhere, BatchNorm statistics included, so every branch matters in the check."""
    for layer in model.layers:
        ws = layer.get_weights()
        if not ws:
            continue
        if layer.name.endswith("bn"):
            g, b, m, v = ws
            layer.set_weights([rng.uniform(0.5, 1.5, g.shape), rng.normal(0, 0.2, b.shape),
                               rng.normal(0, 0.2, m.shape), rng.uniform(0.5, 2.0, v.shape)])
        else:
            layer.set_weights([rng.normal(0, 0.3, w.shape) for w in ws])


@pytest.mark.parametrize("arch", ["emonet_t", "emonet_n_slim"])
def test_fold_gives_the_plain_net_the_same_answers(arch):
    from models import reparam
    from models.archs import ARCHS, count_macs

    rng = np.random.default_rng(0)
    twin = reparam.build(arch, 7)
    _randomise(twin, rng)
    assert reparam.is_rep(twin)
    # an identity branch where a layer keeps its width (emonet_n_slim's s2c1: 40 -> 40)
    assert any(layer.name.endswith("_idbn") for layer in twin.layers) == (arch == "emonet_n_slim")
    plain = ARCHS[arch](7)
    reparam.fold(twin, plain)
    assert not reparam.is_rep(plain)
    x = rng.integers(0, 256, (8, 48, 48, 1)).astype("float32")
    a = twin.predict(x, verbose=0)
    b = plain.predict(x, verbose=0)
    assert np.abs(a - b).max() < 1e-4
    assert a.argmax(1).tolist() == b.argmax(1).tolist()
    # the twin is more than its plain net during training; what ships costs the plain net's MACs
    assert twin.count_params() > plain.count_params()
    assert count_macs(twin) > count_macs(plain)


def test_init_from_plain_starts_with_the_plain_answers():
    from models import reparam
    from models.archs import ARCHS

    rng = np.random.default_rng(1)
    plain = ARCHS["emonet_t"](7)
    _randomise(plain, rng)
    twin = reparam.build("emonet_t", 7)
    reparam.init_from_plain(twin, plain)
    x = rng.integers(0, 256, (4, 48, 48, 1)).astype("float32")
    assert np.abs(twin.predict(x, verbose=0) - plain.predict(x, verbose=0)).max() < 1e-5


def test_rep_refuses_nets_it_cannot_fold():
    from engine.core.errors import UserError
    from models import reparam

    with pytest.raises(UserError, match="plain nets"):
        reparam.build("emonet_s", 7)
    with pytest.raises(UserError, match="stride-1"):
        reparam.build("emonet_f", 7)  # its stride-2 stem has no 3x3-centred 1x1 branch to fold
    with pytest.raises(UserError, match="plain twin"):
        from models.archs import ARCHS

        reparam.init_from_plain(reparam.build("emonet_t", 7), ARCHS["emonet_n"](7))


def test_rep_training_ships_the_plain_net_and_its_recipe(fer_root, tmp_path):
    """A real --rep run: it trains the twin, checkpoints the twin (resume needs the branches), and
    ships the folded plain emonet_t, whose accuracy is the best epoch's; the card's command repeats --rep;
    a plain --init starts the twin from that model's answers."""
    import keras

    from engine.core.contract import ModelSpec, parse_classes
    from models import reparam
    from models.archs import ARCHS, count_macs
    from models.data import load_split
    from models.options import TrainOptions
    from models.trainer import limit_per_class, train

    opts = TrainOptions(data=str(fer_root), out=str(tmp_path / "a"), arch="emonet_t", epochs=1, limit=30,
                        classes=parse_classes("3"), precision="float32", jit="off", rep=True,
                        cache_dir=str(tmp_path / "cache"))
    out = train(opts)
    shipped = keras.saving.load_model(out / "emotion.keras", safe_mode=True)
    assert not reparam.is_rep(shipped) and reparam.is_rep(keras.saving.load_model(out / "last.keras", safe_mode=True))
    assert [w.shape for w in shipped.get_weights()] == [w.shape for w in ARCHS["emonet_t"](3).get_weights()]
    spec = ModelSpec.load(out)
    assert spec.extra["macs"] == count_macs(ARCHS["emonet_t"](3))
    val = limit_per_class(load_split(fer_root, "validation", parse_classes("3"), tmp_path / "cache", quiet=True), 8, opts.seed)
    acc = float((shipped.predict(val.x.astype("float32"), verbose=0).argmax(1) == val.y).mean())
    assert abs(acc - spec.extra["best_val_accuracy"]) < 1e-6
    assert "    --rep \\\n" in (out / "MODEL_CARD.md").read_text()

    twin = reparam.build("emonet_t", 3)
    opts_b = TrainOptions(**{**opts.__dict__, "out": str(tmp_path / "b"), "init": str(out / "emotion.keras"), "epochs": 0})
    from models.trainer import init_from

    init_from(twin, opts_b)
    x = val.x[:8].astype("float32")
    np.testing.assert_allclose(twin.predict(x, verbose=0), shipped.predict(x, verbose=0), atol=1e-5)
