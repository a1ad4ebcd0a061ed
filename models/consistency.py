"""Stability training: teach the net to give one answer for a face however the engine frames it.

Why: the engine's crop of a face never equals FER2013's 48x48 framing (the detector's box
varies by about +-13% in scale between faces, and the crop is resampled), and the shipped nets
change their label under a 1-pixel shift on 7-12% of validation faces, under a 2-pixel zoom on 12-16%. Augmentation alone does not
fix that: it spreads the training faces over many framings but never asks the net for the
SAME answer on two framings of one face. Here every batch carries each face twice, as trained
and as a second, engine-like view of it (zoom +-20%, a few pixels of shift, a little turn, a
mirror, a resampled copy half the time); the loss adds a symmetric KL term between the two answers
(Zheng et al. 2016, "Improving the robustness of deep neural networks via stability training").

It works with plain `fit`: the batch is [faces; views] with the targets repeated, and the loss
splits its prediction batch in halves. Validation batches are paired with themselves (the
consistency term is then 0 and accuracy is unchanged), so every batch the loss sees is paired.
"""
from __future__ import annotations

import keras

#: The second view's distortion: the engine crop's own variation (models.augment's "framing"),
#: resampled through 24-44 px half the time (a camera face is resampled, FER's was not).
VIEW_LEVEL = "framing"
VIEW_RESAMPLE = 0.5


@keras.saving.register_keras_serializable(package="emotion_engine")
class PairConsistencyLoss(keras.losses.Loss):
    """Cross-entropy on every row + `weight` x KL between the rows i and i + N/2 of a batch of 2N.

    Each half gets KL(stop_gradient(other) || own), so both answers move towards each other and
    neither is pulled by its own gradient twice."""

    def __init__(self, weight: float = 1.0, name: str = "pair_consistency", **kwargs):
        super().__init__(name=name, **kwargs)
        self.weight = float(weight)

    def call(self, y_true, y_pred):
        from keras import ops

        y_pred = ops.cast(y_pred, "float32")
        ce = keras.losses.categorical_crossentropy(ops.cast(y_true, "float32"), y_pred)
        p = ops.clip(y_pred, 1e-7, 1.0)
        a, b = ops.split(p, 2, axis=0)
        sa, sb = ops.stop_gradient(a), ops.stop_gradient(b)
        kl_a = ops.sum(sb * (ops.log(sb) - ops.log(a)), axis=-1)  # pulls a towards b
        kl_b = ops.sum(sa * (ops.log(sa) - ops.log(b)), axis=-1)
        return ce + self.weight * ops.concatenate([kl_a, kl_b], axis=0)

    def get_config(self):
        return {**super().get_config(), "weight": self.weight}


def paired(xb, target, weights=None, view=None):
    """(faces, targets[, weights]) -> the same with each face followed, half a batch later, by its
    view (`view`: an Augment; None = the face itself, for validation)."""
    import tensorflow as tf

    second = xb if view is None else view(xb)
    out = (tf.concat([xb, second], 0), tf.concat([target, target], 0))
    if weights is not None:
        out += (tf.concat([weights, weights], 0),)
    return out
