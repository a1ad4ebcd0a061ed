"""models.prune: a narrower net started from a wider one's strongest channels, and the fast model's recipe."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("keras")

REPO = Path(__file__).resolve().parents[1]


def test_prune_keeps_the_strongest_channels_and_their_inputs():
    from models.archs import ARCHS, EMONET_N_SLIM_WIDTHS, count_macs
    from models.prune import channel_importance, prune_into

    src = ARCHS["emonet_n"](7)
    rng = np.random.default_rng(0)
    src.set_weights([rng.normal(size=w.shape).astype("float32") if w.ndim else w for w in src.get_weights()])
    dst = ARCHS["emonet_n_slim"](7)
    kept = prune_into(src, dst)
    assert [n for n, _ in kept.values()] == list(EMONET_N_SLIM_WIDTHS)
    assert count_macs(dst) < 0.45 * count_macs(src)

    # s1c0: the kept output channels are the top-ranked ones, and s2c0 reads exactly those inputs.
    s_k = src.get_layer("s1c0_conv").get_weights()[0][:, :, :16, :]  # the stem keeps all 16
    scores = channel_importance(s_k, src.get_layer("s1c0_bn").get_weights())
    keep = np.sort(np.argsort(-scores)[:16])
    np.testing.assert_array_equal(dst.get_layer("s1c0_conv").get_weights()[0], s_k[..., keep])
    nxt = src.get_layer("s2c0_conv").get_weights()[0][:, :, keep, :]
    nxt_keep = np.sort(np.argsort(-channel_importance(nxt, src.get_layer("s2c0_bn").get_weights()))[:40])
    np.testing.assert_array_equal(dst.get_layer("s2c0_conv").get_weights()[0], nxt[..., nxt_keep])
    np.testing.assert_array_equal(dst.get_layer("s2c0_bn").get_weights()[0], src.get_layer("s2c0_bn").get_weights()[0][nxt_keep])
    # the classifier head reads the kept channels of the last conv
    assert dst.get_layer("probs").get_weights()[0].shape == (EMONET_N_SLIM_WIDTHS[-1], 7)


def test_prune_into_a_spatial_head_starts_the_head_fresh():
    """emonet_t's head (flatten + dense) has no counterpart in emonet_n_slim: the convs are narrowed,
    the head keeps its fresh weights and says so."""
    from models.archs import ARCHS, EMONET_T_WIDTHS
    from models.prune import prune_into

    src = ARCHS["emonet_n_slim"](7)
    dst = ARCHS["emonet_t"](7)
    fresh = dst.get_layer("probs").get_weights()[0].copy()
    kept = prune_into(src, dst)
    assert [kept[f"{n}_conv"][0] for n in ("stem", "s1c0", "s2c0", "s2c1", "s3c0", "s3expand")] == list(EMONET_T_WIDTHS)
    assert kept["fc"] == (0, 0) and kept["probs"] == (0, 0)
    np.testing.assert_array_equal(dst.get_layer("probs").get_weights()[0], fresh)


def test_prune_emonet_n_into_the_stride_2_stem_of_emonet_f():
    """emonet_f fits inside emonet_n channel for channel, so models.prune starts it from the shipped fast net; its
    stem keeps all 16 kernels but computes them at every other pixel (24x24 out, no pooling layer)."""
    from models.archs import ARCHS, EMONET_F_WIDTHS
    from models.prune import prune_into

    src = ARCHS["emonet_n"](7)
    dst = ARCHS["emonet_f"](7)
    kept = prune_into(src, dst)
    assert [kept[f"{n}_conv"][0] for n in ("stem", "s1c0", "s2c0", "s2c1", "s3c0", "s3expand")] == list(EMONET_F_WIDTHS)
    np.testing.assert_array_equal(dst.get_layer("stem_conv").get_weights()[0], src.get_layer("stem_conv").get_weights()[0])
    assert tuple(dst.get_layer("stem_relu").output.shape[1:3]) == (24, 24)
    assert "s1pool" not in [layer.name for layer in dst.layers]


def test_prune_refuses_a_wider_target():
    from engine.core.errors import UserError
    from models.archs import ARCHS
    from models.prune import prune_into

    with pytest.raises(UserError, match="wider"):
        prune_into(ARCHS["emonet_n_slim"](7), ARCHS["emonet_n"](7))


def test_prune_cli_bad_input_is_one_line(tmp_path, capsys):
    from engine.core.errors import cli_main
    from models.prune import main

    assert cli_main(main, ["--model", str(tmp_path / "missing.keras"), "--arch", "emonet_n_slim", "--out", str(tmp_path / "x.keras")]) == 2
    assert capsys.readouterr().err.strip().startswith("error: --model")
