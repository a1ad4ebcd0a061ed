"""Train a large distillation teacher in PyTorch on a CUDA machine, then export it as an ONNX model
that keeps the model contract (optional tool, not part of the product; PyTorch is not a project
dependency).

Why it exists: the shipped nets are distilled (`models.train --teacher ... --teacher-pool`) and a
student rarely ends far above its teacher. The teachers this CPU can train in a session stop at
~68%; an H200 trains three ResNet-18-style nets (6.3M parameters each) at once, ~100 epochs each in
6 minutes (single nets 69.6-70.9% with flip TTA, five averaged 71.8%), but the lent GPU machine has
PyTorch and no TensorFlow, so the teacher is written here in PyTorch and crosses over as ONNX,
which `--teacher-pool` already accepts (it only needs the contract: raw 0..255 NHWC faces in,
probabilities in FER2013 order out, a labels.json beside it).

Caveat, measured: these nets learn their training faces by heart (93.5% right on them, mean top
probability 0.88), and distillation labels exactly those faces, so the students distilled from the
first teacher were more accurate on FER2013's crops but less steady through the engine, and were not
shipped (benchmarks/results/README.md, session 8). A teacher should label faces it did not train on
(`train --folds K --fold I` + `oof`); softer targets (`onnx --temperature`) were tried once and were not enough alone.

Four steps, each a sub-command of `python -m models.gpu_teacher` (run from the repo root; it
needs numpy and opencv, and torch for `train` and `onnx`):
  pack   (here)  FER2013 folders -> one .npz of the JPEG bytes (one shared 328-byte header stored
                 once), small enough to travel to the GPU machine with the repo (~49 MB)
  train  (GPU)   one net per process, for a fixed number of MINUTES (the schedule runs on the
                 clock, so a run always ends in its lease); keeps the raw or the weight-averaged
                 (EMA) net, whichever scores better on validation with flip TTA; writes its
                 weights (float16) and validation probabilities in one .npz
  oof    (here)  k-fold nets (`train --folds K --fold I`: trained without fold I, they label only
                 fold I; or Keras ones, `models.train --folds K --fold I` -> RUN/fold_answers.npz,
                 the same folds) -> one out-of-fold soft label per training face, keyed by the
                 face's pixels, for `models.train --soft-labels`
  onnx   (here)  one or more trained .npz -> one ONNX file averaging their probabilities, +
                 labels.json; with --calib PACK also its int8 twin (export's ONNX quantiser)
The whole GPU lease as one script: models/kfold_teachers.sh. This module is the command line only;
each step lives in the models.teacher package (pack, folds, nets, fit, oof, onnx_export).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.core.errors import UserError, cli_main
from models.teacher.fit import train
from models.teacher.onnx_export import to_onnx
from models.teacher.oof import merge_oof
from models.teacher.pack import pack


def _add_pack(sub) -> None:
    a = sub.add_parser("pack", help="FER2013 folders -> one .npz to carry")
    a.add_argument("--data", type=Path, required=True)
    a.add_argument("--out", type=Path, required=True)


def _add_train(sub) -> None:
    a = sub.add_parser("train", help="train one net for a fixed time (GPU if there is one)")
    a.add_argument("--data", type=Path, required=True, help="the .npz that `pack` wrote")
    a.add_argument("--out", type=Path, required=True, help=".npz with the kept weights and validation probabilities")
    a.add_argument("--arch", choices=("resnet", "vgg"), default="resnet",
                   help="resnet (ResNet-18 layout) or vgg (2 convs x 4 stages, BatchNorm after every layer and in the "
                        "dense head: an earlier VGG without it stuck at chance at lr 0.05)")
    a.add_argument("--width", type=int, default=48, help="first stage's channels (doubling per stage)")
    a.add_argument("--minutes", type=float, default=6.0, help="training time; the cosine schedule runs on this clock")
    a.add_argument("--lr", type=float, default=0.1)
    a.add_argument("--batch", type=int, default=256, help="the H200 runs used 256 with --lr 0.1")
    a.add_argument("--wd", type=float, default=5e-4)
    a.add_argument("--smoothing", type=float, default=0.0)
    a.add_argument("--ema", type=float, default=0.999)
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--limit", type=int, default=0, help="first N training faces only (smoke tests)")
    a.add_argument("--report", type=int, default=5, help="validation print every N epochs")
    a.add_argument("--folds", type=int, default=0,
                   help="k-fold: train without one of K stratified folds of the training faces and write this net's "
                        "answers for that fold (out-of-fold labels; 0 = train on every face)")
    a.add_argument("--fold", type=int, default=None, help="with --folds: which fold (0..K-1) to hold out")


def _add_oof(sub) -> None:
    a = sub.add_parser("oof", help="k-fold nets -> one out-of-fold soft label per training face (.npz for models.train)")
    a.add_argument("files", type=Path, nargs="+",
                   help="the .npz files of `train --folds K --fold I` runs and/or the fold_answers.npz of `models.train "
                        "--folds K --fold I` runs (any mix)")
    a.add_argument("--data", type=Path, required=True, help="the pack they trained on")
    a.add_argument("--out", type=Path, required=True, help="the soft-label .npz to write")


def _add_onnx(sub) -> None:
    a = sub.add_parser("onnx", help="trained .npz files -> one averaging ONNX model + labels.json")
    a.add_argument("files", type=Path, nargs="+")
    a.add_argument("--out", type=Path, required=True, help="the fp32 .onnx to write (labels.json goes beside it)")
    a.add_argument("--calib", type=Path, default=None,
                   help="a pack: also write emotion_int8.onnx beside it, calibrated on 500 of its training faces")
    a.add_argument("--temperature", type=float, default=1.0,
                   help="divide each net's logits by T before its softmax: softer targets for distillation")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for add in (_add_pack, _add_train, _add_oof, _add_onnx):
        add(sub)
    return p


def _check_folds(args: argparse.Namespace) -> None:
    """`train`'s --folds/--fold, one sentence each, before the pack is read."""
    if args.folds and args.folds < 2:
        raise UserError(f"--folds {args.folds}: k-fold needs at least 2 folds (0 = train on every face)")
    if args.folds and args.fold is None:
        raise UserError(f"--folds {args.folds} needs --fold I (0..{args.folds - 1}): which fold this net leaves out")
    if args.fold is not None and not args.folds:
        raise UserError("--fold needs --folds K")
    if args.folds and not 0 <= args.fold < args.folds:
        raise UserError(f"--fold {args.fold} must be 0..{args.folds - 1} with --folds {args.folds}")


def run(argv=None) -> None:
    args = build_parser().parse_args(argv)
    if args.cmd == "train":
        _check_folds(args)
    if args.cmd == "pack":
        pack(args.data, args.out)
    elif args.cmd == "train":
        train(args)
    elif args.cmd == "oof":
        merge_oof(args.files, args.data, args.out)
    else:
        to_onnx(args.files, args.out, args.calib, temperature=args.temperature)


if __name__ == "__main__":
    sys.exit(cli_main(run))
