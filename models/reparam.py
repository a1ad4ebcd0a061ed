"""Train a plain net with extra branches, ship it without them (RepVGG structural re-parameterisation).

Why: the fast nets are capacity-bound (each step down in augmentation gained them more than any
teacher did) and their inference cost is fixed by the CPUs users own. During training each 3x3
layer gets two more branches, a 1x1 conv and (where input and output widths match) an identity,
each with its own BatchNorm, summed before the ReLU. That is an easier net to optimise, and a
linear one per layer: at the end every branch folds into one 3x3 kernel and bias, so the shipped
model is exactly the plain net of `models.archs` (same layers, same names, same cost; export,
engine and cards never see the branches). Ding et al., "RepVGG: Making VGG-style ConvNets Great
Again" (CVPR 2021).

Layer names: the 3x3 branch keeps the plain net's `{name}_conv` / `{name}_bn`, so a trained plain
model starts the training twin as it is (`init_from_plain`: the new branches start silent, BN
scale 0); the 1x1 branch is `{name}_pw` / `{name}_pwbn`, the identity `{name}_idbn`.
"""
from __future__ import annotations

import numpy as np

from engine.core.errors import UserError


def _rep_conv_bn(x, filters: int, name: str):
    from keras import layers

    branches = [layers.BatchNormalization(name=f"{name}_bn")(
        layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv")(x))]
    branches.append(layers.BatchNormalization(name=f"{name}_pwbn")(
        layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_pw")(x)))
    if x.shape[-1] == filters:
        branches.append(layers.BatchNormalization(name=f"{name}_idbn")(x))
    return layers.ReLU(name=f"{name}_relu")(layers.Add(name=f"{name}_add")(branches))


def require_plain(arch: str) -> None:
    """A UserError unless `arch` is a plain net (a key of models.archs.PLAIN) of stride-1 convs: only those fold
    (a stride-2 1x1 branch samples another pixel than its 3x3 twin's centre)."""
    from models.archs import PLAIN

    foldable = [name for name, net in PLAIN.items() if net.stem_stride == 1]
    if arch not in foldable:
        raise UserError(f"--rep works with the plain nets of stride-1 convs ({', '.join(foldable)}), not --arch {arch}")


def build(arch: str, n_classes: int):
    """The training twin of plain net `arch` (a key of models.archs.PLAIN)."""
    from models.archs import PLAIN, build_plain

    require_plain(arch)
    return build_plain(n_classes, PLAIN[arch], f"{arch}_rep", conv=_rep_conv_bn)


def _bn_scale_shift(bn) -> tuple[np.ndarray, np.ndarray]:
    gamma, beta, mean, var = (np.asarray(w, np.float64) for w in bn.get_weights())
    scale = gamma / np.sqrt(var + bn.epsilon)
    return scale, beta - mean * scale


def fold_layer(model, name: str) -> tuple[np.ndarray, np.ndarray]:
    """One 3x3 kernel (3, 3, cin, cout) and bias equal to the sum of layer `name`'s branches (eval mode)."""
    by_name = {layer.name: layer for layer in model.layers}
    k3 = np.asarray(by_name[f"{name}_conv"].get_weights()[0], np.float64)
    s, b = _bn_scale_shift(by_name[f"{name}_bn"])
    kernel, bias = k3 * s, b
    k1 = np.asarray(by_name[f"{name}_pw"].get_weights()[0], np.float64)
    s, b = _bn_scale_shift(by_name[f"{name}_pwbn"])
    kernel[1, 1] += k1[0, 0] * s
    bias = bias + b
    if f"{name}_idbn" in by_name:
        s, b = _bn_scale_shift(by_name[f"{name}_idbn"])
        kernel[1, 1] += np.diag(s)
        bias = bias + b
    return kernel, bias


def fold(rep_model, plain_model) -> None:
    """Write `rep_model`'s branches into `plain_model` (its plain twin, built by models.archs):
    each 3x3 layer gets the summed kernel, and its BatchNorm becomes a pure bias (scale 1, mean 0)."""
    from models.archs import PLAIN_3X3

    rep = {layer.name: layer for layer in rep_model.layers}
    for layer in plain_model.layers:
        if layer.name in rep and layer.name.split("_")[0] not in PLAIN_3X3:
            layer.set_weights(rep[layer.name].get_weights())  # the 1x1 expansion, the head
    plain = {layer.name: layer for layer in plain_model.layers}
    for name in PLAIN_3X3:
        kernel, bias = fold_layer(rep_model, name)
        plain[f"{name}_conv"].set_weights([kernel.astype(np.float32)])
        bn = plain[f"{name}_bn"]
        ones = np.ones_like(bias)
        bn.set_weights([ones.astype(np.float32), bias.astype(np.float32), np.zeros_like(ones, np.float32),
                        (ones - bn.epsilon).astype(np.float32)])


def init_from_plain(rep_model, plain_model) -> None:
    """Start the training twin from a trained plain net: its layers copied into the 3x3 branches (and
    the 1x1 expansion and head), the new branches silent (BatchNorm scale 0), so the twin computes
    exactly what the plain net did and training adds what the branches can."""
    rep = {layer.name: layer for layer in rep_model.layers}
    plain = {layer.name: layer for layer in plain_model.layers}
    for name, layer in plain.items():
        if not layer.get_weights():
            continue
        if name not in rep or [w.shape for w in rep[name].get_weights()] != [w.shape for w in layer.get_weights()]:
            raise UserError(f"--init is not this net's plain twin (layer {name} does not fit)")
        rep[name].set_weights(layer.get_weights())
    for name, layer in rep.items():
        if name.endswith(("_pwbn", "_idbn")):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([np.zeros_like(gamma), np.zeros_like(beta), mean, var])


def is_rep(model) -> bool:
    """Whether `model` is a training twin (has branches to fold)."""
    return any(layer.name.endswith("_pwbn") for layer in model.layers)
