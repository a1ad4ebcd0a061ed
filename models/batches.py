"""Training batches: (faces, targets[, weights]) for `fit`, and the per-class loss weights.

Targets are one-hot (label-smoothed) answers, mixed with a teacher's probabilities when there is
one: a Keras teacher run on each augmented batch, a teacher pool (augmented copies labelled once,
models.distill), or fixed soft labels per face (`--soft-labels`: out-of-fold answers of teachers
that never trained on the face, models.teacher.oof), which still get fresh augmentation every epoch.
"""
from __future__ import annotations

from models.augment import Augment


def class_weights(y, n: int, mode: str):
    import numpy as np

    counts = np.bincount(y, minlength=n).astype(np.float64)
    if mode == "none":
        return np.ones(n, np.float32)
    w = counts.sum() / (n * np.maximum(counts, 1))
    if mode == "sqrt":
        w = np.sqrt(w)
    return (w / (w * counts).sum() * counts.sum()).astype(np.float32)  # mean weight per sample = 1


def _check_sources(teacher, soft, fixed) -> None:
    """One source of answers besides the label: a teacher, a pool (soft) or fixed soft labels; or fixed votes mixed
    with a teacher (FER+ votes with a distillation teacher)."""
    if sum(v is not None for v in (soft, fixed, teacher)) > 1 and not (fixed is not None and teacher is not None and soft is None):
        raise ValueError("make_dataset: one source of teacher answers: a teacher, a pool (soft) or fixed soft labels "
                         "(or fixed votes with a teacher)")


def make_dataset(x, y, opts, n_classes: int, train: bool, teacher=None, weights=None, soft=None,
                 skip_batches: int = 0, fixed=None, mix: float | None = None, weight_y=None):
    """Batches of (faces, targets[, weights]) for a models.options.TrainOptions `opts`. `teacher`: a Keras
    model run on each augmented batch; `soft`: teacher probabilities already computed for `x` (a teacher
    pool, whose faces are augmented already: only a random mirror is added), repeated without end (a resumed
    run skips the batches its earlier epochs used); `fixed`: one soft label per face of `x` (out-of-fold teachers), the faces
    augmented as without a teacher (the label is the face's, whatever its framing), e.g. FER+ vote shares;
    `mix`: the weight of those answers against the one-hot label (default opts.teacher_weight); `weight_y`: each
    face's class for `weights` where not `y` (FER+: the vote majority, whose rare classes are not FER2013's)."""
    _check_sources(teacher, soft, fixed)
    import tensorflow as tf

    from models.consistency import VIEW_LEVEL, VIEW_RESAMPLE, paired

    pool = soft is not None
    soft = fixed if soft is None else soft
    cols = (x, y, y if weight_y is None else weight_y)
    ds = tf.data.Dataset.from_tensor_slices(cols if soft is None else (*cols, soft))
    if train:
        ds = ds.shuffle(len(y), seed=opts.seed, reshuffle_each_iteration=True)
    if pool:
        ds = ds.repeat()
    # Drop the ragged last batch (noisy BatchNorm statistics) unless the set is tiny.
    ds = ds.batch(opts.batch, drop_remainder=train and len(y) >= 4 * opts.batch)
    if skip_batches:
        ds = ds.skip(skip_batches)  # before the map: skipping costs a copy of uint8 batches, nothing more
    smooth = opts.label_smoothing if train else 0.0
    aug = Augment(opts.augment, opts.seed, opts.resample) if train and not pool else None
    cw = tf.constant(weights) if weights is not None else None
    view = Augment(VIEW_LEVEL, opts.seed + 11, VIEW_RESAMPLE) if train and opts.consistency > 0 else None

    def prep(xb, yb, wyb, pb=None):
        xb = tf.cast(xb, tf.float32)
        target = tf.one_hot(yb, n_classes) * (1 - smooth) + smooth / n_classes
        if aug is not None and aug.active:
            xb = aug(xb)
        if pool:  # pool faces are augmented already
            xb = tf.image.random_flip_left_right(xb, seed=opts.seed)
        elif teacher is not None and pb is not None:  # votes and a teacher: W x votes + (1 - W) x the teacher's answer
            w = opts.teacher_weight if mix is None else mix
            return _finish(xb, w * tf.cast(pb, tf.float32) + (1 - w) * tf.cast(teacher(xb, training=False), tf.float32), wyb)
        elif teacher is not None:
            pb = teacher(xb, training=False)
        if pb is not None:
            w = opts.teacher_weight if mix is None else mix
            target = w * tf.cast(pb, tf.float32) + (1 - w) * target
        return _finish(xb, target, wyb)

    def _finish(xb, target, wyb):
        if train and opts.mixup > 0:
            lam = tf.random.uniform([], 0.0, opts.mixup)
            idx = tf.random.shuffle(tf.range(tf.shape(xb)[0]))
            xb = (1 - lam) * xb + lam * tf.gather(xb, idx)
            target = (1 - lam) * target + lam * tf.gather(target, idx)
        wb = tf.gather(cw, wyb) if cw is not None else None
        if opts.consistency > 0:  # every batch paired, validation with itself (see models.consistency)
            return paired(xb, target, wb, view)
        return (xb, target) if wb is None else (xb, target, wb)

    return ds.map(prep, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
