"""Start a narrower net from a trained one: `python -m models.prune --model A.keras --arch B --out B.keras`.

Why: on 2 CPU cores a small net trained from scratch needs ~100 epochs to reach what its wider
sibling already knows. For two archs with the same layer names (emonet_n -> emonet_n_slim), each
conv keeps the output channels that matter most, ranked by |BN gamma| / sqrt(var) x the L1 norm of
the channel's kernel (a channel that BatchNorm scales to ~0 or whose weights are ~0 adds little),
and the next layer keeps the matching input channels. The result is a sensible start for
`models.train --init` (distillation recovers what the dropped channels carried).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from engine.core.cliargs import Parser
from engine.core.errors import UserError, cli_main


def channel_importance(kernel: np.ndarray, bn: list[np.ndarray] | None, eps: float = 1e-3) -> np.ndarray:
    """One score per output channel of a conv kernel (kh, kw, cin, cout)."""
    l1 = np.abs(kernel).sum(axis=(0, 1, 2))
    if bn is None:
        return l1
    gamma, _beta, _mean, var = bn
    return l1 * np.abs(gamma) / np.sqrt(var + eps)


def prune_into(src, dst) -> dict[str, tuple[int, int]]:
    """Copy `src`'s strongest channels into `dst` (same layer names, narrower or equal convs).

    Returns {conv layer: (kept, of)}. Raises UserError when the two models do not line up.
    """
    import keras

    src_layers = {layer.name: layer for layer in src.layers}
    kept: dict[str, tuple[int, int]] = {}
    prev_keep: np.ndarray | None = None  # output channels kept by the previous conv
    for layer in dst.layers:
        other = src_layers.get(layer.name)
        if not layer.weights:
            continue
        if other is None and isinstance(layer, keras.layers.Dense):
            kept[layer.name] = (0, 0)  # a head the source does not have: starts fresh
            prev_keep = None
            continue
        if other is None:
            raise UserError(f"{src.name} has no layer {layer.name!r}: models.prune needs two archs with the same layer names")
        if isinstance(layer, keras.layers.Conv2D):
            (kernel,) = other.get_weights()
            if prev_keep is not None:
                kernel = kernel[:, :, prev_keep, :]
            bn_name = layer.name.replace("_conv", "_bn")
            bn = src_layers[bn_name].get_weights() if bn_name in src_layers else None
            n = layer.get_weights()[0].shape[-1]
            if n > kernel.shape[-1]:
                raise UserError(f"{layer.name}: {dst.name} is wider ({n}) than {src.name} ({kernel.shape[-1]})")
            keep = np.sort(np.argsort(-channel_importance(kernel, bn))[:n])
            layer.set_weights([kernel[..., keep]])
            kept[layer.name] = (n, int(kernel.shape[-1]))
            prev_keep = keep
        elif isinstance(layer, keras.layers.BatchNormalization):
            layer.set_weights([w[prev_keep] for w in other.get_weights()])
        elif isinstance(layer, keras.layers.Dense):
            kernel, bias = other.get_weights()
            kernel = kernel[prev_keep] if prev_keep is not None else kernel
            if kernel.shape == layer.get_weights()[0].shape:
                layer.set_weights([kernel, bias])
            else:  # its input differs (a flattened map instead of pooled channels): starts fresh
                kept[layer.name] = (0, 0)
            prev_keep = None
        else:
            raise UserError(f"models.prune does not know how to narrow layer {layer.name!r} ({type(layer).__name__})")
    return kept


def main(argv: Sequence[str] | None = None) -> int:
    p = Parser(prog="python -m models.prune", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="the trained wider .keras model (its labels.json beside it)")
    p.add_argument("--arch", required=True, help="the narrower arch (models.archs), same layer names")
    p.add_argument("--out", required=True, help="the .keras file to write (pass it to models.train --init)")
    args = p.parse_args(argv)
    src_path = Path(args.model)
    if not src_path.is_file():
        raise UserError(f"--model {src_path} does not exist")
    from engine.core.keras_io import load_keras
    from models.archs import ARCHS, count_macs

    if args.arch not in ARCHS:
        raise UserError(f"--arch {args.arch!r}: choose from {', '.join(ARCHS)}")
    src = load_keras(src_path)
    dst = ARCHS[args.arch](int(src.output_shape[-1]))
    kept = prune_into(src, dst)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    dst.save(out)
    for name, (n, of) in kept.items():
        print(f"{name:<16} kept {n:>4} of {of:>4} channels" if of else f"{name:<16} starts fresh (not in the source, or fed differently)")
    print(f"{args.arch}: {count_macs(dst) / 1e6:.1f}M MACs (from {count_macs(src) / 1e6:.1f}M) -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(main))
