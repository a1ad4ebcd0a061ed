"""Training-time augmentation of raw 0..255 face batches, shared by the online training
pipeline and the distillation pool (models.distill), so both see the same distortions.

Augmentation runs on the data side, never inside the model: the saved model stays the clean
inference graph that export converts.
"""
from __future__ import annotations

LEVELS = ("none", "light", "strong", "framing")

#: Per level: (shift, turn, zoom range, contrast, brightness), as the Keras layers take them.
#: "framing" is the engine crop's own variation of a FER face: its side varies by about +-20%
#: around the detector's box (benchmarks/crop_agreement.py), its centre by a few per cent.
_RANGES = {
    "light": (0.08, 0.03, (-0.1, 0.1), 0.2, 0.15),
    "strong": (0.12, 0.06, (-0.2, 0.15), 0.35, 0.25),
    "framing": (0.06, 0.02, (-0.2, 0.2), 0.1, 0.1),
}


def _keras_augmenter(level: str, seed: int):
    import keras
    from keras import layers

    shift, turn, zoom, contrast, brightness = _RANGES[level]
    # float32 whatever the global policy: augmentation is data prep, not part of the bf16 model
    return keras.Sequential(
        [
            layers.RandomFlip("horizontal", seed=seed, dtype="float32"),
            layers.RandomTranslation(shift, shift, fill_mode="reflect", seed=seed + 1, dtype="float32"),
            layers.RandomRotation(turn, fill_mode="reflect", seed=seed + 2, dtype="float32"),
            layers.RandomZoom(zoom, fill_mode="reflect", seed=seed + 3, dtype="float32"),
            layers.RandomContrast(contrast, seed=seed + 4, dtype="float32"),
            layers.RandomBrightness(brightness, value_range=(0, 255), seed=seed + 5, dtype="float32"),
        ],
        name="augment",
    )


def random_erase(x, p: float = 0.5):
    """Cut one random rectangle (up to ~1/3 of the face) per image: makes the net use the
    whole face instead of one feature, the cheapest regularizer that helps on FER."""
    import tensorflow as tf

    n = tf.shape(x)[0]
    size = tf.cast(tf.shape(x)[1], tf.float32)
    h = tf.random.uniform([n], 0.15, 0.45) * size
    w = tf.random.uniform([n], 0.15, 0.45) * size
    cy = tf.random.uniform([n], 0.0, 1.0) * size
    cx = tf.random.uniform([n], 0.0, 1.0) * size
    grid = tf.range(size)
    in_y = tf.abs(grid[None, :] - cy[:, None]) < h[:, None] / 2
    in_x = tf.abs(grid[None, :] - cx[:, None]) < w[:, None] / 2
    box = tf.logical_and(in_y[:, :, None], in_x[:, None, :])
    apply = tf.random.uniform([n]) < p
    box = tf.logical_and(box, apply[:, None, None])[..., None]
    noise = tf.random.uniform(tf.shape(x), 0.0, 255.0)
    return tf.where(box, noise, x)


def random_resample(x, seed: int, p: float):
    """Down- then up-sample a whole batch (one random size per batch) with probability p."""
    import tensorflow as tf

    size = tf.shape(x)[1]
    side = tf.random.uniform([], 24, 45, dtype=tf.int32, seed=seed)

    def resample():
        small = tf.image.resize(x, tf.stack([side, side]), method="area")
        return tf.image.resize(small, tf.stack([size, size]), method="bilinear")

    return tf.cond(tf.random.uniform([], seed=seed + 1) < p, resample, lambda: x)


class Augment:
    """One batch of float32 faces (N, 48, 48, 1) in 0..255 -> the same, distorted.

    `level`: none | light (flip, shift, rotation, zoom, contrast, brightness) | strong (wider
    ranges plus random erasing) | framing (the engine crop's variations: zoom +-20%, small
    shifts and turns, mild contrast); `resample`: chance of a batch being shrunk to 24-44 px and
    enlarged back (the engine's crops are resampled camera pixels)."""

    def __init__(self, level: str, seed: int, resample: float = 0.0):
        if level not in LEVELS:
            raise ValueError(f"augment level {level!r} not in {LEVELS}")
        self.level, self.seed, self.resample = level, seed, resample
        self._layers = None if level == "none" else _keras_augmenter(level, seed)

    @property
    def active(self) -> bool:
        return self._layers is not None or self.resample > 0

    def __call__(self, xb):
        import tensorflow as tf

        if self._layers is not None:
            xb = tf.clip_by_value(self._layers(xb, training=True), 0.0, 255.0)
            if self.level == "strong":
                xb = random_erase(xb)
        if self.resample > 0:
            xb = random_resample(xb, self.seed + 7, self.resample)
        return xb
