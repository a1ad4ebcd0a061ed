"""One training run, from its options to its finished folder: `train(TrainOptions(...))`.

Built for a 2-core CPU as much as for a GPU: every epoch ends in a checkpoint (model with
optimizer state + a JSON state file, models.checkpoint), so `resume=True` continues a run that a
stopped session killed, with the same schedule and early-stopping counters; every option of a
resumed run comes from its state file. The learning-rate schedule is a function of the epoch
number only (models.options.lr_at), which is what makes resuming exact.

Augmentation runs in the tf.data pipeline (models.batches), not inside the model, so the saved
model is the clean inference graph that export converts. Distillation (`teacher`) mixes the
teacher's probabilities on the *augmented* batch into the targets (KD at temperature 1), which
needs no custom training step and works with plain `fit`; `teacher_pool` labels P fixed augmented
copies once instead, for a teacher much slower than its student (models.distill). `consistency`
(models.consistency) pairs each face with an engine-like view of it in the same batch and adds
W x the disagreement of the two answers to the loss, still with plain `fit`.

Why apart from the command line (models.train): tests, k-fold scripts and notebooks run training
from Python with the same options the flags fill; what a finished run writes is models.finalize.
"""
from __future__ import annotations

import sys
from dataclasses import asdict, replace
from pathlib import Path

from engine.core.contract import SPEC_NAME, ModelSpec
from engine.core.errors import UserError
from engine.core.keras_io import load_keras
from models.batches import class_weights, make_dataset
from models.checkpoint import LAST_NAME, STATE_NAME, Checkpoint, load_state
from models.data import seen_mask
from models.distill import soft_labels, teacher_pool, with_votes
from models.finalize import finalize
from models.options import TrainOptions, lr_at
from models.speed import SpeedChoice, choose, label, legacy_choice, normalize_jit


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
    val_fixed, clear = None, None
    if opts.votes:
        fixed, val_fixed, clear = _vote_targets(opts, train_ds, val_ds)
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
    tr, va, steps = _build_inputs(opts, train_ds, val_ds, teacher, initial_epoch, fixed, val_fixed, clear)
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
    finalize(model, opts, out, speed, macs, history, checkpoint.best, val_ds, held, seen_mask(val_ds.x, train_ds.x))
    return out


# --------------------------------------------------------------------------- checked before anything slow


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


# --------------------------------------------------------------------------- data


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
        train_ds = limit_per_class(train_ds, opts.limit, opts.seed)
        val_ds = limit_per_class(val_ds, max(opts.limit // 4, 8), opts.seed)
    return train_ds, val_ds, held


def limit_per_class(ds, per_class: int, seed: int):
    """At most `per_class` faces of each class of `ds`, drawn with `seed`, in their original order (--limit)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    keep = []
    for i in range(len(ds.labels)):
        idx = np.flatnonzero(ds.y == i)
        keep.extend(rng.permutation(idx)[:per_class])
    keep = np.sort(np.asarray(keep))
    return ds.subset(keep)


def _vote_targets(opts: TrainOptions, train_ds, val_ds):
    """(training targets, validation targets, clear training faces) from the FER+ votes (models.ferplus), with what
    was matched said."""
    from models.ferplus import dataset_votes, targets

    csv_path = None if opts.votes == "auto" else opts.votes
    tv, vv = dataset_votes(train_ds, csv_path), dataset_votes(val_ds, csv_path)
    print(f"FER+ votes: {int(tv.has.sum())} of {len(train_ds)} training faces (the rest keep their FER2013 label), "
          f"{int(vv.scored.sum())} of {len(val_ds)} validation faces with a majority", file=sys.stderr)
    clear = tv.clear()
    if opts.clear_weight != 1:
        print(f"clear expressions: {int(clear.sum())} training faces weigh {opts.clear_weight:g}x", file=sys.stderr)
    return targets(tv, train_ds.y), targets(vv, val_ds.y), clear


def _build_inputs(opts: TrainOptions, train_ds, val_ds, teacher, initial_epoch: int, fixed=None, val_fixed=None, clear=None):
    """(training batches, validation batches, steps per epoch or None): targets with class weights and the
    teacher's answers mixed in, or a teacher pool labelled once (models.distill). `clear` (FER+: faces with a clear
    expression) weighs opts.clear_weight more."""
    import numpy as np

    n = len(opts.classes)
    # With votes, the class of a face for its loss weight is the vote majority (fear and disgust are rare there, not
    # in FER2013's labels); faces without votes keep their label, as in their targets.
    wy = fixed.argmax(1).astype(train_ds.y.dtype) if fixed is not None else None
    weights = class_weights(train_ds.y if wy is None else wy, n, opts.class_weight) if opts.class_weight != "none" else None
    if clear is not None and opts.clear_weight != 1:
        weights, wy = clear_weights(weights, wy, clear, opts.clear_weight, n)
    steps = None
    if opts.teacher_pool:
        px, py, pp = teacher_pool(train_ds, opts.teacher, opts.teacher_pool, opts.augment, opts.resample, opts.seed, opts.cache_dir,
                                  opts.pool_targets)
        steps = max(len(train_ds) // opts.batch, 1)  # an epoch is still one training set's worth of faces
        mix, pwy = None, None
        if opts.votes and fixed is not None:  # FER+ votes: no one-hot FER2013 label mixed in, as with a per-batch teacher
            pp, mix, pwy = with_votes(pp, fixed, opts.votes_weight), 1.0, np.tile(wy, len(py) // len(train_ds))
        tr = make_dataset(px, py, opts, n, train=True, weights=weights, soft=pp, skip_batches=initial_epoch * steps, mix=mix,
                          weight_y=pwy)
    else:
        mix = opts.votes_weight if opts.votes else None
        tr = make_dataset(train_ds.x, train_ds.y, opts, n, train=True, teacher=teacher, weights=weights, fixed=fixed, mix=mix,
                          weight_y=wy)
    va = make_dataset(val_ds.x, val_ds.y, opts, n, train=False, fixed=val_fixed, mix=1.0)
    return tr, va, steps


def clear_weights(weights, wy, clear, k: float, n: int):
    """(weight table, weight index per face) with clear faces weighing `k` x their class's weight: the table gets a
    second row of classes (index class + n) for them, so the batches still gather one weight per face from one small
    table; scaled so the mean weight per face stays 1 (the learning rate means what it meant)."""
    import numpy as np

    base = np.ones(n, np.float32) if weights is None else np.asarray(weights, np.float32)
    table = np.concatenate([base, base * k])
    idx = (wy + n * clear.astype(wy.dtype)).astype(wy.dtype)
    return (table / table[idx].mean()).astype(np.float32), idx


# --------------------------------------------------------------------------- the model


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
        init_from(model, opts)
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


def init_from(model, opts: TrainOptions) -> None:
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
