"""Average several trained models into ONE model file: `python -m models.ensemble A.keras B.keras --out DIR`.

Why: on FER2013 two networks that reached a similar accuracy by different routes (another seed, a
second learning-rate cycle) make partly different mistakes, and the mean of their probabilities is
right more often than either. The result is an ordinary Keras model (the members nested in it, their
softmax outputs averaged), so export, the engine and the benchmarks treat it like any other: one
batched call per frame, members' cost added up (its card reports the summed MACs).

The folder gets emotion.keras + labels.json (the contract), metrics.json/confusion.png when `--data`
is given, and an `ensemble` record in labels.json naming every member (file, sha256, arch, its own
validation accuracy and training options) so the card can say how to rebuild it.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from engine.core.cliargs import Parser
from engine.core.contract import SPEC_NAME, ModelSpec, parse_classes, sha256_file
from engine.core.errors import UserError, cli_main
from models.card import NOTES_NAME, SHIP_FILES, SHIP_GLOBS
from models.checkpoint import FINAL_NAME

#: files in --out that describe a model (what the card ships, plus the TTA confusion matrix), not the
#: model itself nor its trainer's notes: an earlier ensemble's are removed before a new one is written
_DERIVED = tuple(n for n in SHIP_FILES if n not in (FINAL_NAME, SPEC_NAME, NOTES_NAME)) + ("confusion_tta.png",)


def _prepare_out(out: Path, members: Sequence[Path]) -> None:
    """--out must not hold a member or another run; an earlier ensemble there is replaced whole."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder")
    if any(m.resolve().parent == out.resolve() for m in members):
        raise UserError(f"--out {out} holds a member model: write the ensemble to a folder of its own")
    if (out / "labels.json").is_file():
        if not (ModelSpec.load(out).extra or {}).get("ensemble"):
            raise UserError(f"--out {out} already holds another model (not an ensemble): choose a new folder")
        for name in _DERIVED:
            (out / name).unlink(missing_ok=True)
        for old in [f for pattern in SHIP_GLOBS for f in out.glob(pattern)]:
            old.unlink()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create --out {out}: {exc.strerror or exc}") from None


def build_ensemble(members: Sequence[Path], out: Path) -> ModelSpec:
    """Nest the members under one input, average their probabilities, save model + spec in `out`."""
    from engine.core.keras_io import load_keras
    from models.archs import count_macs
    from models.checkpoint import save_model_atomic

    import keras

    if len(members) < 2:
        raise UserError("an ensemble needs at least two member models")
    members = [Path(m) for m in members]
    if len({m.resolve() for m in members}) < len(members):
        raise UserError("the same member is listed twice: an ensemble of a model with itself is that model")
    specs = [ModelSpec.load(m.parent) for m in members]
    for m, s in zip(members[1:], specs[1:]):
        if s.labels != specs[0].labels:
            raise UserError(f"{m} predicts {', '.join(s.labels)} but {members[0]} predicts {', '.join(specs[0].labels)}: "
                            "members must share their classes and order")
    _prepare_out(out, members)
    models = [load_keras(m) for m in members]
    for m, model in zip(members, models):
        if tuple(model.input_shape[1:]) != tuple(specs[0].input_shape) or model.output_shape[-1] != len(specs[0].labels):
            raise UserError(f"{m} takes {model.input_shape[1:]} and gives {model.output_shape[-1]} outputs, "
                            f"not {tuple(specs[0].input_shape)} -> {len(specs[0].labels)}")

    face = keras.Input(shape=tuple(specs[0].input_shape), name="face")
    # Each member re-wrapped under its own name: two copies of one architecture share layer names.
    outs = [keras.Model(model.inputs[0], model.outputs[0], name=f"member{i}")(face) for i, model in enumerate(models)]
    probs = keras.layers.Average(name="probs")(outs)
    ens = keras.Model(face, probs, name="ensemble")

    save_model_atomic(ens, out / FINAL_NAME)
    archs = [s.arch or "?" for s in specs]
    spec = ModelSpec(labels=list(specs[0].labels), input_shape=list(specs[0].input_shape),
                     arch=archs[0] + f"x{len(archs)}" if len(set(archs)) == 1 else "+".join(archs))
    spec.extra = {
        "macs": count_macs(ens),
        "params": int(ens.count_params()),
        # where the members were trained: export calibrates int8 on it by default
        "options": {"data": (specs[0].extra or {}).get("options", {}).get("data")},
        "ensemble": [{
            "file": str(m), "sha256": sha256_file(m), "arch": s.arch,
            "val_accuracy": (s.extra or {}).get("best_val_accuracy"),
            "epochs_run": (s.extra or {}).get("epochs_run"),
            "options": (s.extra or {}).get("options", {}),
        } for m, s in zip(members, specs)],
    }
    shas = [r["sha256"] for r in spec.extra["ensemble"]]
    for i, rec in enumerate(spec.extra["ensemble"]):
        init = rec["options"].get("init")
        init_sha = sha256_file(init) if init and Path(init).is_file() else None
        parent = shas.index(init_sha) if init_sha in shas else None
        if parent == i:
            rec["init_overwritten"] = True  # the --init file was since replaced by this member itself (a re-shipped model)
        elif parent is not None:
            rec["init_member"] = parent  # the card's rebuild recipe chains the runs
    spec.source_sha256 = sha256_file(out / FINAL_NAME)
    spec.save(out)
    return spec


def build_parser() -> Parser:
    p = Parser(prog="python -m models.ensemble",
               description="Average several trained .keras models (same classes) into one model file with its labels.json.")
    p.add_argument("members", nargs="+", help="two or more .keras files (or run folders holding emotion.keras), each with its labels.json beside it")
    p.add_argument("--out", required=True, help="folder for emotion.keras + labels.json (then: python -m export --model OUT/emotion.keras)")
    p.add_argument("--data", help="also evaluate on this data's validation split (metrics.json, confusion.png)")
    p.add_argument("--tta", action="store_true", help="with --data: also evaluate with flip TTA (metrics_tta.json)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    members = [Path(m) / FINAL_NAME if Path(m).is_dir() else Path(m) for m in args.members]
    for m in members:
        if not m.is_file():
            raise UserError(f"model file {m} does not exist")
    if args.data and not Path(args.data).exists():
        raise UserError(f"data source {args.data} does not exist")
    out = Path(args.out)
    spec = build_ensemble(members, out)
    print(f"wrote {out / FINAL_NAME}: {len(args.members)} members, {spec.extra['params']:,} params, "
          f"{spec.extra['macs'] / 1e6:.1f}M MACs/face")
    if args.data:
        from engine.core.keras_io import load_keras
        from models.data import load_split
        from models.evaluate import evaluate_model, seen_in_train

        ds = load_split(args.data, "validation", parse_classes(",".join(spec.labels)))
        model = load_keras(out / FINAL_NAME)
        seen = seen_in_train(args.data, ds)
        for tta in (False, True) if args.tta else (False,):
            m = evaluate_model(model, ds, out, flip_tta=tta, seen=seen)
            print(f"validation accuracy{' (flip TTA)' if tta else ''}: {m['accuracy'] * 100:.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(main))
