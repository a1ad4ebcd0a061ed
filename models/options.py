"""A training run's options (`TrainOptions`) and its learning-rate schedule.

Why a module of their own: the options are what a run *is* — the command line fills them
(models.train), the trainer runs them (models.trainer), the state file stores them whole so
`--resume` continues the same run (models.checkpoint), the batches and the finished run's files
read them (models.batches, models.finalize). Keeping them apart from all of those lets each
import them without importing the others. The schedule is here because it is a pure function
of the epoch and these options, which is what makes resuming exact.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from engine.core.contract import FER_CLASSES


@dataclass
class TrainOptions:
    data: str
    out: str
    classes: tuple[str, ...] = FER_CLASSES
    arch: str = "emonet_n"
    epochs: int = 60
    batch: int = 128
    optimizer: str = "adamw"
    lr: float = 3e-3
    weight_decay: float = 0.05
    warmup: int = 2
    schedule: str = "cosine"
    label_smoothing: float = 0.1
    class_weight: str = "none"  # none | balanced | sqrt
    augment: str = "strong"  # none | light | strong | framing
    mixup: float = 0.0
    #: probability of a batch being shrunk to a random 24..44 px and enlarged back: the engine's
    #: crops are resampled from camera pixels, so the net must not hinge on the exact 48x48 grid
    resample: float = 0.0
    #: start from this saved model's weights (same arch and classes): fine-tuning, e.g. a shipped
    #: model with a new augmentation, at a lower --lr and a few epochs
    init: str | None = None
    teacher: str | None = None
    teacher_weight: float = 0.7
    #: >0: distil from P fixed augmented copies labelled once by the teacher (models.distill),
    #: instead of running the teacher on every batch; the teacher may then be any export
    teacher_pool: int = 0
    #: what a pool copy is labelled with: "view" = the teacher's answer for that distorted copy;
    #: "mirror" = the view's answer averaged with its mirror image's;
    #: "clean" = its answer for the undistorted face (every framing of a face, one answer)
    pool_targets: str = "view"
    #: one soft label per training face from teachers that never trained on it (`python -m
    #: models.gpu_teacher oof`), mixed in at teacher_weight; faces augmented afresh every epoch
    soft_labels: str | None = None
    #: FER+ votes (a ferplus.csv, or "auto": the one in --data): train on the ten annotators' vote distribution
    #: (models.ferplus; faces without votes keep their FER2013 label), mixed with the FER2013 label at
    #: votes_weight; validation accuracy (and the best epoch) is then against the vote majority
    votes: str | None = None
    votes_weight: float = 1.0
    #: with votes: each face where >= 7 of 10 annotators chose the same non-neutral emotion weighs this much more in
    #: the loss (models.ferplus Votes.clear): ambiguous faces teach calm-vs-emotion, clear ones what an emotion looks like
    clear_weight: float = 1.0
    #: >0: stability training (models.consistency): each face also as an engine-like second view,
    #: and this weight x the KL between the net's two answers added to the loss (2x the compute)
    consistency: float = 0.0
    #: >0: a k-fold teacher (models.kfold): train without fold `fold` of `folds` and write this net's
    #: answers for that fold (fold_answers.npz), for out-of-fold soft labels (`models.gpu_teacher oof`)
    folds: int = 0
    fold: int = 0
    #: train a plain net with RepVGG branches (models.reparam), folded back into the plain net at the end
    rep: bool = False
    precision: str = "auto"  # auto | float32 | mixed_bfloat16 (auto: timed, see models.speed)
    jit: str = "auto"  # auto | on | off: XLA for the training step (auto: timed, see models.speed)
    patience: int = 15
    seed: int = 42
    limit: int = 0  # use only the first N training faces per class (tests, smoke runs)
    cache_dir: str | None = None
    export: bool = False
    extra: dict = field(default_factory=dict)


def lr_at(epoch: int, opts: TrainOptions) -> float:
    """Warm-up then cosine (or constant) decay, a pure function of the epoch for exact resumes."""
    if epoch < opts.warmup:
        return opts.lr * (epoch + 1) / (opts.warmup + 1)
    if opts.schedule == "constant":
        return opts.lr
    t = (epoch - opts.warmup) / max(1, opts.epochs - opts.warmup)
    return opts.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))
