"""Train an emotion classifier: `python -m models.train --data ROOT --arch emonet_n --out runs/n`.

The command line only: flags -> checks that need no data -> `TrainOptions` (models.options) ->
`train()` (models.trainer, which says how a run works: checkpoints every epoch, exact `--resume`,
augmentation in tf.data, distillation, stability training). Why apart: every flag is checked
here, in one sentence and before TensorFlow loads, and Python callers skip argparse altogether.
The parser is built in argument groups (one small function each, in `--help`'s order).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from engine.core.cliargs import Parser, fraction  # noqa: E402
from engine.core.contract import FER_CLASSES, PRESETS, parse_classes  # noqa: E402
from engine.core.errors import UserError, cli_main  # noqa: E402
from models.augment import LEVELS  # noqa: E402
from models.checkpoint import FINAL_NAME  # noqa: E402
from models.distill import TARGETS  # noqa: E402
from models.options import TrainOptions  # noqa: E402
from models.speed import JIT_CHOICES  # noqa: E402
from models.trainer import train  # noqa: E402


def _add_run_args(p: argparse.ArgumentParser, d: TrainOptions) -> None:
    """Where the faces come from and go, which net, how long."""
    p.add_argument("--data", required=True, help="ROOT with train/ and validation/<class>/*.jpg folders, or a fer2013.csv")
    p.add_argument("--out", required=True, help="run folder: checkpoints, final emotion.keras, labels.json, metrics, plots")
    p.add_argument("--classes", default="7", help=f"preset {'/'.join(PRESETS)} or a comma list of {','.join(FER_CLASSES)}")
    p.add_argument("--arch", default=d.arch, help="emonet_n (fast, default), emonet_n_slim (6.5M MACs), emonet_t (4.8M MACs, ~2.1M AVX2 instructions), emonet_f (6.6M MACs at emonet_t's AVX2 cost: a stride-2 stem), emonet_s (accurate), seed5, seed6")
    p.add_argument("--epochs", type=int, default=None,
                   help=f"total epochs, the LR schedule spans them (default {d.epochs}; with --resume: the run's own)")
    p.add_argument("--batch", type=int, default=d.batch, help="batch size")


def _add_optimizer_args(p: argparse.ArgumentParser, d: TrainOptions) -> None:
    """The optimiser, its schedule and the loss's label smoothing and class weights."""
    p.add_argument("--optimizer", choices=("adamw", "sgd"), default=d.optimizer, help="AdamW, or SGD with Nesterov momentum")
    p.add_argument("--lr", type=float, default=d.lr, help="peak learning rate")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help="decoupled weight decay")
    p.add_argument("--warmup", type=int, default=d.warmup, help="linear warm-up epochs")
    p.add_argument("--schedule", choices=("cosine", "constant"), default=d.schedule, help="LR decay after warm-up")
    p.add_argument("--label-smoothing", type=float, default=d.label_smoothing, help="label smoothing of the one-hot targets")
    p.add_argument("--class-weight", choices=("none", "balanced", "sqrt"), default=d.class_weight,
                   help="per-class loss weights for rare classes (sqrt = a softer balance)")


def _add_input_args(p: argparse.ArgumentParser, d: TrainOptions) -> None:
    """What the net sees (augmentation, mixup, resampling) and the weights it starts from."""
    p.add_argument("--augment", choices=LEVELS, default=d.augment,
                   help="flip/shift/rotate/zoom/contrast; strong adds random erasing (with --teacher-pool: how the pool's "
                        "copies are made; training then adds only a random mirror)")
    p.add_argument("--mixup", type=float, default=d.mixup, help="max mixup weight (0 = off)")
    p.add_argument("--init", help="start from this .keras model's weights (same --arch and classes): fine-tuning")
    p.add_argument("--resample", type=fraction, default=d.resample,
                   help="probability of a batch being shrunk to 24-44 px and enlarged back (robustness to the engine's resampled crops) [0]")


def _add_teacher_args(p: argparse.ArgumentParser, d: TrainOptions) -> None:
    """Targets other than the one-hot label: a teacher (per batch or a pool), soft labels, FER+ votes."""
    p.add_argument("--teacher", default=None,
                   help="a trained model to distil from (its labels.json must match): a .keras file, or with "
                        "--teacher-pool any export (.tflite/.onnx)")
    p.add_argument("--teacher-weight", type=float, default=d.teacher_weight, help="share of the teacher's probabilities in the targets")
    p.add_argument("--teacher-pool", type=int, default=d.teacher_pool, metavar="P",
                   help="label P augmented copies of the training set with the teacher once (cached) and train on them, "
                        "instead of running the teacher on every batch: for a teacher much slower than the student (0 = off)")
    p.add_argument("--pool-targets", choices=TARGETS, default=d.pool_targets,
                   help="label each pool copy with the teacher's answer for that copy (view), with that answer averaged "
                        "with the copy's mirror image's (mirror: a better teacher, twice the labelling time), or every copy "
                        "of a face with its flip-averaged answer for the undistorted face (clean: one answer however the face "
                        f"is framed; copy 0 is then the undistorted set) [{d.pool_targets}]")
    p.add_argument("--soft-labels", default=None, metavar="NPZ",
                   help="one soft label per training face from k-fold teachers that never trained on it (`python -m "
                        "models.gpu_teacher oof`), mixed in at --teacher-weight; the faces still get --augment every epoch")
    p.add_argument("--votes", nargs="?", const="auto", default=None, metavar="CSV",
                   help="train on the FER+ vote distribution (ten annotators per face; `--votes` alone: DATA/ferplus.csv): "
                        "unknown / not-a-face votes and classes outside --classes dropped, faces without votes keep their "
                        "FER2013 label; validation accuracy and the best epoch are then against the vote majority")
    p.add_argument("--votes-weight", type=fraction, default=TrainOptions.votes_weight, metavar="W",
                   help="with --votes: target = W x vote shares + (1 - W) x the (smoothed) FER2013 label, or with --teacher "
                        "x the teacher's answer for the same augmented face (with --teacher-pool: for that face's pool copy)")
    p.add_argument("--clear-weight", type=float, default=TrainOptions.clear_weight, metavar="K",
                   help="with --votes: faces where >= 7 of 10 annotators chose the same non-neutral emotion weigh K times "
                        "as much in the loss as the rest (mean weight per face kept at 1), so the net keeps clear "
                        "expressions while the ambiguous faces teach it calm [1 = off]")


def _add_variant_args(p: argparse.ArgumentParser, d: TrainOptions) -> None:
    """Other kinds of run: stability training, a k-fold teacher, RepVGG branches."""
    p.add_argument("--consistency", type=float, default=d.consistency, metavar="W",
                   help="stability training: each face also as an engine-like second view (zoom, shift, turn, mirror, "
                        "resampling) and W x the KL between the two answers added to the loss, so a change of framing "
                        "changes the label less (2x the compute per face; 0 = off)")
    p.add_argument("--folds", type=int, default=d.folds, metavar="K",
                   help="a k-fold teacher: train without one of K folds of the training faces (the same stratified, "
                        "duplicate-aware folds as `models.gpu_teacher train --folds`) and write this net's answers for "
                        "that fold to fold_answers.npz; `python -m models.gpu_teacher oof` merges the K runs into "
                        "--soft-labels (7 classes only; 0 = train on every face)")
    p.add_argument("--fold", type=int, default=None, metavar="I", help="with --folds: which fold (0..K-1) to hold out")
    p.add_argument("--rep", action="store_true",
                   help="train with RepVGG branches (a 1x1 conv and an identity beside each 3x3, each with BatchNorm), "
                        "folded into the plain net at the end: the same model to ship, easier to train (plain nets only)")


def _add_speed_args(p: argparse.ArgumentParser, d: TrainOptions) -> None:
    """Precision and XLA (timed when auto, models.speed)."""
    p.add_argument("--precision", choices=("auto", "float32", "mixed_bfloat16"), default=None,
                   help=f"auto = time a few training steps of each and keep the faster (a run under 50 batches per epoch "
                        f"takes bf16 where the CPU has it); mixed_bfloat16 is a candidate only with hardware bf16 (emulated "
                        f"it is ~8x slower); fixed for a run once it started (default {d.precision})")
    p.add_argument("--jit", choices=JIT_CHOICES, default=None,
                   help=f"XLA compilation of the training step; auto = time it against plain TensorFlow and keep the faster "
                        f"(it wins on some CPUs, loses on others; off for a run under 50 batches per epoch); with --resume "
                        f"on/off switches it for the rest of the run (default {d.jit})")
    p.add_argument("--no-jit", dest="jit", action="store_const", const="off", help="same as --jit off")


def _add_control_args(p: argparse.ArgumentParser, d: TrainOptions) -> None:
    """Stopping, seeding, smoke runs, caching, resuming and exporting."""
    p.add_argument("--patience", type=int, default=d.patience, help="early-stop after this many epochs without a better val accuracy (0 = never)")
    p.add_argument("--seed", type=int, default=d.seed, help="random seed (weights, shuffling, augmentation)")
    p.add_argument("--limit", type=int, default=0, help="use at most N training faces per class (smoke runs)")
    p.add_argument("--cache-dir", default=None, help="where decoded .npz datasets are cached (default ~/.cache/emotion-engine)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--export", action="store_true", help="after training, export and verify TFLite/ONNX into --out")


def build_parser() -> argparse.ArgumentParser:
    d = TrainOptions(data="", out="")
    p = Parser(
        prog="python -m models.train",
        description="Train a 48x48 facial-emotion classifier on FER2013-style data, checkpointing every epoch.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    for add in (_add_run_args, _add_optimizer_args, _add_input_args, _add_teacher_args, _add_variant_args,
                _add_speed_args, _add_control_args):
        add(p, d)
    return p


def _check_ranges(args: argparse.Namespace) -> None:
    """Numbers out of their range, one sentence each."""
    for name in ("epochs", "batch"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UserError(f"--{name} must be at least 1")
    if args.lr <= 0:
        raise UserError("--lr must be positive")
    if not 0 <= args.teacher_weight <= 1 or not 0 <= args.label_smoothing < 1:
        raise UserError("--teacher-weight must be in [0, 1] and --label-smoothing in [0, 1)")
    if args.consistency < 0:
        raise UserError("--consistency must be 0 (off) or a positive weight")
    if args.teacher_pool < 0:
        raise UserError("--teacher-pool must be 0 (off) or a number of copies")


def _check_combinations(args: argparse.Namespace) -> None:
    """Flags that need another, or exclude one another (a resumed run's own options are checked already)."""
    if args.pool_targets != TrainOptions.pool_targets and not args.teacher_pool and not args.resume:
        raise UserError("--pool-targets needs --teacher-pool")
    if args.rep and not args.resume:
        from models.reparam import require_plain

        require_plain(args.arch)
    if args.teacher_pool and not args.teacher and not args.resume:
        raise UserError("--teacher-pool needs a --teacher")
    if args.folds and (args.folds < 2 or args.fold is None or not 0 <= args.fold < args.folds):
        raise UserError(f"--folds {args.folds} needs at least 2 folds and --fold I with I in 0..{max(args.folds, 2) - 1}")
    if args.fold is not None and not args.folds:
        raise UserError("--fold needs --folds K")
    if args.folds and args.teacher:
        raise UserError("--folds makes a teacher that never saw its fold: not with --teacher (it saw every face)")
    if args.folds and args.soft_labels:
        raise UserError("--folds makes a teacher that never saw its fold: not with --soft-labels (out-of-fold labels of "
                        "other folds' nets, which trained on this fold's faces)")
    if args.votes and args.soft_labels:
        raise UserError("--votes are the training targets: not with --soft-labels (a --teacher, per batch or through "
                        "--teacher-pool, mixes in: target = --votes-weight x votes + the rest x the teacher's answer)")
    if args.clear_weight != TrainOptions.clear_weight and not args.votes and not args.resume:
        raise UserError("--clear-weight weighs faces by their FER+ votes: it needs --votes")
    if not (math.isfinite(args.clear_weight) and 0 < args.clear_weight <= 1000):
        raise UserError(f"--clear-weight {args.clear_weight}: must be a number in (0, 1000]")
    if args.soft_labels and (args.teacher or args.teacher_pool):
        raise UserError("--soft-labels are a teacher's answers already: not with --teacher / --teacher-pool")
    if args.teacher and not args.teacher_pool and not args.resume and Path(args.teacher).suffix != ".keras":
        raise UserError(f"--teacher {Path(args.teacher).name}: an exported teacher (.tflite/.onnx) needs --teacher-pool")


def options_from_args(args: argparse.Namespace) -> TrainOptions:
    """The parsed flags as the run's options (defaults where a flag was not given)."""
    return TrainOptions(
        data=args.data, out=args.out, classes=parse_classes(args.classes), arch=args.arch,
        epochs=args.epochs or TrainOptions.epochs,
        batch=args.batch, optimizer=args.optimizer, lr=args.lr, weight_decay=args.weight_decay, warmup=args.warmup,
        schedule=args.schedule, label_smoothing=args.label_smoothing, class_weight=args.class_weight,
        augment=args.augment, mixup=args.mixup, resample=args.resample, init=args.init, teacher=args.teacher, teacher_weight=args.teacher_weight, teacher_pool=args.teacher_pool,
        pool_targets=args.pool_targets, soft_labels=args.soft_labels, votes=args.votes, votes_weight=args.votes_weight, clear_weight=args.clear_weight, consistency=args.consistency, rep=args.rep,
        folds=args.folds, fold=args.fold or 0,
        precision=args.precision or TrainOptions.precision, jit=args.jit or TrainOptions.jit, patience=args.patience, seed=args.seed, limit=args.limit,
        cache_dir=args.cache_dir, export=args.export,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _check_ranges(args)
    _check_combinations(args)
    opts = options_from_args(args)
    if not Path(opts.data).exists():
        raise UserError(f"data source {opts.data} does not exist")
    out = train(opts, resume=args.resume, keep_epochs=args.resume and args.epochs is None, jit_override=args.jit if args.resume else None)
    print(f"done: {out / FINAL_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(main))
