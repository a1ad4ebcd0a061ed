"""Train an emotion classifier: `python -m models.train --data ROOT --arch emonet_n --out runs/n`.

Built for a 2-core CPU as much as for a GPU: every epoch ends in a checkpoint (model with
optimizer state + a JSON state file), so `--resume` continues a run that a stopped session
killed, with the same schedule and early-stopping counters. The learning-rate schedule is
a function of the epoch number only, which is what makes resuming exact.

Augmentation runs in the tf.data pipeline, not inside the model, so the saved model is the
clean inference graph that export converts. Distillation (`--teacher`) mixes the teacher's
probabilities on the *augmented* batch into the targets (KD at temperature 1), which
needs no custom training step and works with plain `fit`; `--teacher-pool P` labels P fixed
augmented copies once instead, for a teacher much slower than its student (models.distill).
`--consistency W` (models.consistency) pairs each face with an engine-like view of it in the same
batch and adds W x the disagreement of the two answers to the loss, still with plain `fit`.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from engine.core.cliargs import Parser, fraction  # noqa: E402
from engine.core.contract import FER_CLASSES, PRESETS, SPEC_NAME, ModelSpec, parse_classes, sha256_file  # noqa: E402
from engine.core.errors import UserError, cli_main  # noqa: E402
from engine.core.keras_io import load_keras  # noqa: E402
from models.augment import LEVELS  # noqa: E402
from models.batches import class_weights, make_dataset  # noqa: E402
from models.checkpoint import BEST_NAME, FINAL_NAME, LAST_NAME, STATE_NAME, Checkpoint, load_state, save_model_atomic, write_json  # noqa: E402
from models.data import seen_mask  # noqa: E402
from models.distill import TARGETS, soft_labels, teacher_pool  # noqa: E402
from models.speed import JIT_CHOICES, SpeedChoice, choose, label, legacy_choice, normalize_jit  # noqa: E402


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


def _float32_copy(model, arch: str, n_classes: int):
    """Rebuild under the float32 policy so the shipped file has no bf16 layers in it; a --rep
    training twin is folded into its plain net here (models.reparam), so nothing after sees branches."""
    import keras

    from models import reparam
    from models.archs import ARCHS

    keras.mixed_precision.set_global_policy("float32")
    clean = ARCHS[arch](n_classes)
    if reparam.is_rep(model):
        twin = reparam.build(arch, n_classes)
        twin.set_weights([w.astype("float32") for w in model.get_weights()])
        reparam.fold(twin, clean)
        return clean
    clean.set_weights([w.astype("float32") for w in model.get_weights()])
    return clean


def _check_model_files(opts: TrainOptions, with_init: bool) -> None:
    """--teacher and --init: the file is there and its labels match --classes (a teacher needs its
    labels.json; an --init model is checked when it has one). Cheap, so done before anything slow."""
    for flag, path, need_labels in (("--teacher", opts.teacher, True), ("--init", opts.init if with_init else None, False)):
        if not path:
            continue
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{flag} {path} does not exist")
        if need_labels or (path.parent / SPEC_NAME).is_file():
            labels = ModelSpec.load(path.parent).labels
            if tuple(labels) != tuple(opts.classes):
                raise UserError(f"{flag} model labels {labels} differ from --classes {list(opts.classes)}")


def _init_from(model, opts: TrainOptions) -> None:
    """Copy the weights of --init (already checked by _check_model_files) into a fresh model; with
    --rep, a plain --init starts the training twin with silent branches (models.reparam)."""
    from models import reparam

    path = Path(opts.init)
    src = load_keras(path)
    if opts.rep and not reparam.is_rep(src):
        reparam.init_from_plain(model, src)
        print(f"initialised from {path} (plain: new branches start silent)", file=sys.stderr)
        return
    shapes = [tuple(w.shape) for w in model.get_weights()]
    if [tuple(w.shape) for w in src.get_weights()] != shapes:
        raise UserError(f"--init {path.name} is not a {opts.arch} with {len(opts.classes)} classes (its weights do not fit)")
    model.set_weights(src.get_weights())
    print(f"initialised from {path}", file=sys.stderr)


def train(opts: TrainOptions, resume: bool = False, keep_epochs: bool = False, jit_override: str | None = None) -> Path:
    """Train (or resume) a run in `opts.out`; return the folder with the final model + spec.

    `jit_override` ("on"/"off") switches XLA for the rest of a resumed run (the checkpoints do not
    depend on it); every other option of a resumed run comes from its state file."""
    opts = replace(opts, extra=dict(opts.extra), jit=normalize_jit(opts.jit))  # the caller's options stay as given
    out = Path(opts.out)
    opts, state, asked_precision = _run_options(opts, out, resume, keep_epochs)
    train_ds, val_ds, held = _load_data(opts)

    import keras

    import models.consistency  # noqa: F401 - registers its loss before a checkpoint or teacher that uses it loads
    from models.archs import ARCHS, count_macs

    if state is None and opts.folds and opts.init:  # a new fold run (also one that --resume found nothing to resume of)
        _check_fold_init(opts.init, opts.folds, opts.fold)
    resuming = state is not None and (out / LAST_NAME).exists()
    _check_model_files(opts, with_init=not resuming)  # a wrong --teacher / --init is one sentence before any timing
    fixed = soft_labels(train_ds, opts.soft_labels) if opts.soft_labels else None  # so is a wrong --soft-labels
    val_fixed = None
    if opts.votes:
        fixed, val_fixed = _vote_targets(opts, train_ds, val_ds)
    speed = _choose_speed(opts, state, asked_precision, jit_override, len(train_ds))
    keras.utils.set_random_seed(opts.seed)
    keras.mixed_precision.set_global_policy(speed.precision)
    teacher = load_keras(opts.teacher) if opts.teacher and not opts.teacher_pool else None

    out.mkdir(parents=True, exist_ok=True)
    model, initial_epoch, history = _build_model(opts, out, state if resuming else None, speed)
    macs = count_macs(ARCHS[opts.arch](len(opts.classes)) if opts.rep else model)  # what ships: the folded net
    print(
        f"arch {opts.arch}: {model.count_params():,} params, {macs / 1e6:.1f}M MACs/face; "
        f"{len(train_ds)} train / {len(val_ds)} validation faces; classes {', '.join(opts.classes)}; "
        f"{label(speed.precision, speed.jit)} ({speed.how})",
        file=sys.stderr,
    )
    tr, va, steps = _build_inputs(opts, train_ds, val_ds, teacher, initial_epoch, fixed, val_fixed)
    checkpoint = Checkpoint(model, out, opts, history, lambda epoch: lr_at(epoch, opts))
    if initial_epoch < opts.epochs:
        model.fit(
            tr,
            validation_data=va,
            epochs=opts.epochs,
            steps_per_epoch=steps,
            initial_epoch=initial_epoch,
            callbacks=[checkpoint.callback()],
            verbose=1 if sys.stderr.isatty() else 2,
        )
    _finalize(model, opts, out, speed, macs, history, checkpoint.best, val_ds, held, seen_mask(val_ds.x, train_ds.x))
    return out


def _run_options(opts: TrainOptions, out: Path, resume: bool, keep_epochs: bool) -> tuple[TrainOptions, dict | None, str]:
    """A new run's options, or a resumed run's own from its state file: (options, state or None, --precision asked)."""
    asked_precision = opts.precision
    state = load_state(out) if resume else None
    if resume and state is None:
        print(f"note: nothing to resume in {out}; starting a new run", file=sys.stderr)
    if not resume and (out / STATE_NAME).exists():
        raise UserError(f"{out} already holds a run: pass --resume to continue it or choose another --out")
    if state is not None:
        saved = state["options"]
        saved["classes"] = tuple(saved["classes"])
        saved["jit"] = normalize_jit(saved.get("jit", "auto"))
        epochs = opts.epochs
        opts = TrainOptions(**saved)
        if not keep_epochs and epochs != opts.epochs:
            print(f"note: resuming with --epochs {epochs} (was {opts.epochs}); the cosine schedule stretches", file=sys.stderr)
            opts.epochs = epochs
    return opts, state, asked_precision


def _load_data(opts: TrainOptions):
    """(training set, validation set, held-out fold or None): --folds and --limit applied; the arch is
    checked first, before anything slow."""
    from models.archs import ARCHS

    if opts.arch not in ARCHS:
        raise UserError(f"unknown arch {opts.arch!r}: choose from {', '.join(ARCHS)}")
    from models.data import load_split

    if opts.folds:
        from models.kfold import check_classes

        check_classes(opts.classes)  # before decoding anything
    train_ds = load_split(opts.data, "train", opts.classes, opts.cache_dir)
    val_ds = load_split(opts.data, "validation", opts.classes, opts.cache_dir)
    held = None
    if opts.folds:
        from models.kfold import split

        train_ds, held = split(train_ds, opts.folds, opts.fold)  # on the whole set: the same folds as every other run
        print(f"k-fold: fold {opts.fold} of {opts.folds} held out ({len(held)} faces, labelled at the end)", file=sys.stderr)
    if opts.limit:
        train_ds = _limit(train_ds, opts.limit, opts.seed)
        val_ds = _limit(val_ds, max(opts.limit // 4, 8), opts.seed)
    return train_ds, val_ds, held


def _choose_speed(opts: TrainOptions, state: dict | None, asked_precision: str, jit_override: str | None,
                  n_train: int) -> SpeedChoice:
    """Precision and XLA: timed for a new run; a resumed run keeps its own (XLA may be switched)."""
    if state is not None:  # a resumed run keeps the setup its checkpoints were made with ...
        speed = SpeedChoice(**opts.extra["speed"]) if "speed" in opts.extra else legacy_choice(opts.precision, opts.jit)
        if asked_precision not in ("auto", speed.precision):
            print(f"note: this run's checkpoints are {speed.precision}; --precision {asked_precision} is ignored with --resume", file=sys.stderr)
        if jit_override in ("on", "off") and speed.jit != (jit_override == "on"):
            speed = replace(speed, jit=jit_override == "on", how="given on resume")  # ... but XLA may change
            opts.jit = jit_override
    else:
        speed = choose(opts.arch, len(opts.classes), opts.batch, opts.precision, opts.jit, n_train // opts.batch)
    opts.extra["speed"] = asdict(speed)
    return speed


def _build_model(opts: TrainOptions, out: Path, state: dict | None, speed: SpeedChoice):
    """(model, first epoch, history): the last checkpoint of a resumed run (`state`), or a new compiled model."""
    if state is not None:
        model = load_keras(out / LAST_NAME, compile=True)
        model.jit_compile = speed.jit  # the saved compile config carries the old setting
        initial_epoch = state["epoch"]
        history = state["history"]
        print(f"resuming {out} at epoch {initial_epoch + 1}/{opts.epochs}", file=sys.stderr)
        return model, initial_epoch, history
    import keras

    from models import reparam
    from models.archs import ARCHS
    from models.consistency import PairConsistencyLoss

    model = reparam.build(opts.arch, len(opts.classes)) if opts.rep else ARCHS[opts.arch](len(opts.classes))
    if opts.init:
        _init_from(model, opts)
    if opts.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(opts.lr, momentum=0.9, nesterov=True, weight_decay=opts.weight_decay)
    else:
        optimizer = keras.optimizers.AdamW(opts.lr, weight_decay=opts.weight_decay)
    model.compile(
        optimizer=optimizer,
        loss=PairConsistencyLoss(opts.consistency) if opts.consistency > 0 else keras.losses.CategoricalCrossentropy(),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
        jit_compile=speed.jit,
    )
    return model, 0, {}


def _vote_targets(opts: TrainOptions, train_ds, val_ds):
    """(training targets, validation targets) from the FER+ votes (models.ferplus), with what was matched said."""
    from models.ferplus import dataset_votes, targets

    csv_path = None if opts.votes == "auto" else opts.votes
    tv, vv = dataset_votes(train_ds, csv_path), dataset_votes(val_ds, csv_path)
    print(f"FER+ votes: {int(tv.has.sum())} of {len(train_ds)} training faces (the rest keep their FER2013 label), "
          f"{int(vv.scored.sum())} of {len(val_ds)} validation faces with a majority", file=sys.stderr)
    return targets(tv, train_ds.y), targets(vv, val_ds.y)


def _build_inputs(opts: TrainOptions, train_ds, val_ds, teacher, initial_epoch: int, fixed=None, val_fixed=None):
    """(training batches, validation batches, steps per epoch or None): targets with class weights and the
    teacher's answers mixed in, or a teacher pool labelled once (models.distill)."""
    n = len(opts.classes)
    weights = class_weights(train_ds.y, n, opts.class_weight) if opts.class_weight != "none" else None
    steps = None
    if opts.teacher_pool:
        px, py, pp = teacher_pool(train_ds, opts.teacher, opts.teacher_pool, opts.augment, opts.resample, opts.seed, opts.cache_dir,
                                  opts.pool_targets)
        steps = max(len(train_ds) // opts.batch, 1)  # an epoch is still one training set's worth of faces
        tr = make_dataset(px, py, opts, n, train=True, weights=weights, soft=pp, skip_batches=initial_epoch * steps)
    else:
        mix = opts.votes_weight if opts.votes else None
        tr = make_dataset(train_ds.x, train_ds.y, opts, n, train=True, teacher=teacher, weights=weights, fixed=fixed, mix=mix)
    va = make_dataset(val_ds.x, val_ds.y, opts, n, train=False, fixed=val_fixed, mix=1.0)
    return tr, va, steps


def _finalize(model, opts: TrainOptions, out: Path, speed: SpeedChoice, macs: int, history: dict, best: float, val_ds,
              held=None, seen=None) -> None:
    """The best epoch's model as float32 emotion.keras, labels.json, history, evaluation, export and card;
    `seen` marks the validation faces that are copies of this run's training faces."""
    best_model = load_keras(out / BEST_NAME) if (out / BEST_NAME).exists() else model
    final = _float32_copy(best_model, opts.arch, len(opts.classes))
    temperature = _calibrate(final, opts, val_ds) if opts.votes else None
    save_model_atomic(final, out / FINAL_NAME)
    spec = ModelSpec(labels=list(opts.classes), arch=opts.arch)
    spec.extra = {
        "macs": macs,
        "params": int(final.count_params()),
        "epochs_run": len(history.get("val_accuracy", [])),
        "best_val_accuracy": best,
        # the setup actually used, so the card's recipe repeats it instead of timing again
        "options": {**{k: v for k, v in asdict(opts).items() if k not in ("extra",)},
                    "precision": speed.precision, "jit": "on" if speed.jit else "off"},
        "speed": asdict(speed),
        **({"temperature": temperature} if temperature else {}),
    }
    spec.source_sha256 = sha256_file(out / FINAL_NAME)
    spec.save(out)
    write_json(out / "history.json", history)

    from models.evaluate import evaluate_model

    evaluate_model(final, val_ds, out, history=history, flip_tta=False, seen=seen,
                   votes=(None if opts.votes == "auto" else opts.votes) or "auto")
    if held is not None:
        from models.kfold import ANSWERS_NAME, write_answers

        meta = dict(arch=opts.arch, seed=opts.seed, folds=opts.folds, fold=opts.fold, epochs=len(history.get("val_accuracy", [])),
                    data=str(opts.data), source_sha256=spec.source_sha256)
        meta = write_answers(final, held, val_ds, meta, out / ANSWERS_NAME)
        print(f"fold {opts.fold}/{opts.folds}: {meta['held_faces']} held-out training faces labelled, accuracy "
              f"{meta['oof_accuracy_tta'] * 100:.2f}% (flip TTA) -> {out / ANSWERS_NAME}", file=sys.stderr)
    if opts.export:
        from export.run import export_model

        # A --limit smoke run is too small for the parity thresholds to mean anything.
        export_model(out / FINAL_NAME, out, calib=opts.data, check=not opts.limit)
    from models.card import write_card

    write_card(out)


def _calibrate(model, opts: TrainOptions, val_ds) -> float:
    """Fold a temperature fitted on the validation majorities into the last layer (models.ferplus.fit_temperature):
    trained on vote shares, the net's confidence is the annotators' spread, not how often it is right."""
    from models.evaluate import keras_probs
    from models.ferplus import apply_temperature, dataset_votes, fit_temperature

    votes = dataset_votes(val_ds, None if opts.votes == "auto" else opts.votes)
    t = fit_temperature(keras_probs(model, val_ds.x), votes.majority)
    apply_temperature(model, t)
    print(f"calibration: logits divided by {t:.3f} (fitted on {int(votes.scored.sum())} validation majorities)", file=sys.stderr)
    return t


def _limit(ds, per_class: int, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    keep = []
    for i in range(len(ds.labels)):
        idx = np.flatnonzero(ds.y == i)
        keep.extend(rng.permutation(idx)[:per_class])
    keep = np.sort(np.asarray(keep))
    return ds.subset(keep)


def _check_fold_init(init: str, folds: int, fold: int) -> None:
    """A k-fold teacher may start only from a run that held out the same fold (e.g. a second cosine
    cycle): any other weights have seen the faces it must answer blind."""
    try:
        o = (ModelSpec.load(Path(init).parent).extra or {}).get("options", {})
    except UserError:  # no or unreadable labels.json: nothing says what it trained on
        o = {}
    if (o.get("folds"), o.get("fold")) != (folds, fold):
        raise UserError(f"--init {init} did not hold out fold {fold} of {folds} (its labels.json says folds={o.get('folds')}, "
                        f"fold={o.get('fold')}): a k-fold teacher may only start from its own fold's run")


def build_parser() -> argparse.ArgumentParser:
    d = TrainOptions(data="", out="")
    p = Parser(
        prog="python -m models.train",
        description="Train a 48x48 facial-emotion classifier on FER2013-style data, checkpointing every epoch.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--data", required=True, help="ROOT with train/ and validation/<class>/*.jpg folders, or a fer2013.csv")
    p.add_argument("--out", required=True, help="run folder: checkpoints, final emotion.keras, labels.json, metrics, plots")
    p.add_argument("--classes", default="7", help=f"preset {'/'.join(PRESETS)} or a comma list of {','.join(FER_CLASSES)}")
    p.add_argument("--arch", default=d.arch, help="emonet_n (fast, default), emonet_n_slim (6.5M MACs), emonet_t (4.8M MACs, ~2.1M AVX2 instructions), emonet_f (6.6M MACs at emonet_t's AVX2 cost: a stride-2 stem), emonet_s (accurate), seed5, seed6")
    p.add_argument("--epochs", type=int, default=None,
                   help=f"total epochs, the LR schedule spans them (default {d.epochs}; with --resume: the run's own)")
    p.add_argument("--batch", type=int, default=d.batch, help="batch size")
    p.add_argument("--optimizer", choices=("adamw", "sgd"), default=d.optimizer, help="AdamW, or SGD with Nesterov momentum")
    p.add_argument("--lr", type=float, default=d.lr, help="peak learning rate")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help="decoupled weight decay")
    p.add_argument("--warmup", type=int, default=d.warmup, help="linear warm-up epochs")
    p.add_argument("--schedule", choices=("cosine", "constant"), default=d.schedule, help="LR decay after warm-up")
    p.add_argument("--label-smoothing", type=float, default=d.label_smoothing, help="label smoothing of the one-hot targets")
    p.add_argument("--class-weight", choices=("none", "balanced", "sqrt"), default=d.class_weight,
                   help="per-class loss weights for rare classes (sqrt = a softer balance)")
    p.add_argument("--augment", choices=LEVELS, default=d.augment,
                   help="flip/shift/rotate/zoom/contrast; strong adds random erasing (with --teacher-pool: how the pool's "
                        "copies are made; training then adds only a random mirror)")
    p.add_argument("--mixup", type=float, default=d.mixup, help="max mixup weight (0 = off)")
    p.add_argument("--init", help="start from this .keras model's weights (same --arch and classes): fine-tuning")
    p.add_argument("--resample", type=fraction, default=d.resample,
                   help="probability of a batch being shrunk to 24-44 px and enlarged back (robustness to the engine's resampled crops) [0]")
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
                   help="with --votes: target = W x vote shares + (1 - W) x the (smoothed) FER2013 label")
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
    p.add_argument("--precision", choices=("auto", "float32", "mixed_bfloat16"), default=None,
                   help=f"auto = time a few training steps of each and keep the faster (a run under 50 batches per epoch "
                        f"takes bf16 where the CPU has it); mixed_bfloat16 is a candidate only with hardware bf16 (emulated "
                        f"it is ~8x slower); fixed for a run once it started (default {d.precision})")
    p.add_argument("--jit", choices=JIT_CHOICES, default=None,
                   help=f"XLA compilation of the training step; auto = time it against plain TensorFlow and keep the faster "
                        f"(it wins on some CPUs, loses on others; off for a run under 50 batches per epoch); with --resume "
                        f"on/off switches it for the rest of the run (default {d.jit})")
    p.add_argument("--no-jit", dest="jit", action="store_const", const="off", help="same as --jit off")
    p.add_argument("--patience", type=int, default=d.patience, help="early-stop after this many epochs without a better val accuracy (0 = never)")
    p.add_argument("--seed", type=int, default=d.seed, help="random seed (weights, shuffling, augmentation)")
    p.add_argument("--limit", type=int, default=0, help="use at most N training faces per class (smoke runs)")
    p.add_argument("--cache-dir", default=None, help="where decoded .npz datasets are cached (default ~/.cache/emotion-engine)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--export", action="store_true", help="after training, export and verify TFLite/ONNX into --out")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
    if args.votes and (args.soft_labels or args.teacher or args.teacher_pool):
        raise UserError("--votes are the training targets: not with --soft-labels / --teacher / --teacher-pool")
    if args.soft_labels and (args.teacher or args.teacher_pool):
        raise UserError("--soft-labels are a teacher's answers already: not with --teacher / --teacher-pool")
    if args.teacher and not args.teacher_pool and not args.resume and Path(args.teacher).suffix != ".keras":
        raise UserError(f"--teacher {Path(args.teacher).name}: an exported teacher (.tflite/.onnx) needs --teacher-pool")
    opts = TrainOptions(
        data=args.data, out=args.out, classes=parse_classes(args.classes), arch=args.arch,
        epochs=args.epochs or TrainOptions.epochs,
        batch=args.batch, optimizer=args.optimizer, lr=args.lr, weight_decay=args.weight_decay, warmup=args.warmup,
        schedule=args.schedule, label_smoothing=args.label_smoothing, class_weight=args.class_weight,
        augment=args.augment, mixup=args.mixup, resample=args.resample, init=args.init, teacher=args.teacher, teacher_weight=args.teacher_weight, teacher_pool=args.teacher_pool,
        pool_targets=args.pool_targets, soft_labels=args.soft_labels, votes=args.votes, votes_weight=args.votes_weight, consistency=args.consistency, rep=args.rep,
        folds=args.folds, fold=args.fold or 0,
        precision=args.precision or TrainOptions.precision, jit=args.jit or TrainOptions.jit, patience=args.patience, seed=args.seed, limit=args.limit,
        cache_dir=args.cache_dir, export=args.export,
    )
    if not Path(opts.data).exists():
        raise UserError(f"data source {opts.data} does not exist")
    out = train(opts, resume=args.resume, keep_epochs=args.resume and args.epochs is None, jit_override=args.jit if args.resume else None)
    print(f"done: {out / FINAL_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(main))
