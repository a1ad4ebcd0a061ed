"""Model cards written from what a run measured, never by hand: `python -m models.card RUN_DIR`.

The card is rebuilt from labels.json (recipe, MACs, params), metrics.json (per-class
report) and export_report.json (formats, sizes, parity, ms/face) so a retrain + re-export
refreshes every number in it. `--ship DEST` copies the files the engine and the card need
(not the checkpoints) into the repository's model zoo.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Sequence

from engine.core.cliargs import Parser
from engine.core.contract import SPEC_NAME, ModelSpec
from engine.core.errors import UserError, cli_main
from models.speed import label, normalize_jit

CARD_NAME = "MODEL_CARD.md"
NOTES_NAME = "NOTES.md"
#: `python benchmarks/crop_agreement.py --scenes hard ... --json RUN/crop_hard.json` run on this model: the
#: card quotes how often the engine's label equals the direct 48x48 label (what users see as flicker)
CROP_NAME = "crop_hard.json"
SHIP_FILES = ("emotion.keras", SPEC_NAME, "metrics.json", "metrics_tta.json", "history.json", "confusion.png", "curves.png",
              "reliability.png", "confusion_ferplus.png", "export_report.json", "export_report.md", CROP_NAME, NOTES_NAME, CARD_NAME)
#: the emotions a model goes blind to first (FER2013: 1.5% disgust, fear confused with sad and surprise)
RARE = ("disgust", "fear")
SHIP_GLOBS = ("emotion_*.tflite", "emotion_*.onnx")

#: Recipe flags in the order `models.train --help` lists them, with their option names.
_FLAGS = (("arch", "--arch"), ("epochs", "--epochs"), ("batch", "--batch"), ("optimizer", "--optimizer"), ("lr", "--lr"),
          ("weight_decay", "--weight-decay"), ("warmup", "--warmup"), ("schedule", "--schedule"),
          ("label_smoothing", "--label-smoothing"), ("class_weight", "--class-weight"), ("augment", "--augment"),
          ("mixup", "--mixup"), ("resample", "--resample"), ("init", "--init"), ("teacher", "--teacher"), ("teacher_weight", "--teacher-weight"),
          ("teacher_pool", "--teacher-pool"), ("pool_targets", "--pool-targets"), ("soft_labels", "--soft-labels"), ("votes", "--votes"), ("votes_weight", "--votes-weight"), ("clear_weight", "--clear-weight"), ("consistency", "--consistency"), ("folds", "--folds"), ("fold", "--fold"), ("precision", "--precision"), ("patience", "--patience"), ("seed", "--seed"))


def retrain_command(options: dict, out: str) -> str:
    parts = ["python -m models.train", f"--data {options.get('data', 'DATA')}", f"--classes {','.join(options.get('classes', []))}"]
    for key, flag in _FLAGS:
        value = options.get(key)
        if value is None or (key in ("teacher_weight",) and not options.get("teacher")) or (key == "votes_weight" and not options.get("votes")) or (key == "clear_weight" and value == 1) or (key in ("resample", "teacher_pool", "consistency", "folds") and not value) \
                or (key == "fold" and not options.get("folds")) \
                or (key == "pool_targets" and (value == "view" or not options.get("teacher_pool"))):
            continue
        parts.append(f"{flag} {value}")
    if options.get("rep"):
        parts.append("--rep")
    jit = normalize_jit(options.get("jit"))
    if jit == "off":
        parts.append("--no-jit")
    elif jit == "on":
        parts.append("--jit on")
    parts += [f"--out {out}", "--export"]
    return " \\\n    ".join(parts)


def _ensemble_recipe(members: list[dict], ship_as: str | None) -> list[str]:
    """Each member's own recipe (a member fine-tuned from another after that one), then the command
    that averages them."""
    lines = ["## Recipe", "", f"An average of {len(members)} trained networks (each one's probabilities, equal weights):", "",
             "| member | arch | its own validation accuracy | epochs | sha256 |", "|---|---|---:|---:|---|"]
    for i, m in enumerate(members):
        acc = f"{m['val_accuracy'] * 100:.2f}%" if m.get("val_accuracy") is not None else "?"
        lines.append(f"| {i} | `{m['arch']}` | {acc} | {m.get('epochs_run') or '?'} | `{m['sha256'][:12]}` |")
    lines += ["", "Rebuild: train each member, then average, export and describe them:", "", "```bash"]
    runs = [f"runs/{m['arch'] or 'member'}_m{i}" for i, m in enumerate(members)]
    order, pending = [], list(range(len(members)))
    while pending:  # parents first: a member's --init must exist before it trains
        ready = [i for i in pending if members[i].get("init_member") in (None, *order) or members[i]["init_member"] == i]
        ready = ready or pending  # a cycle cannot come from real runs; print the rest as listed
        order += ready
        pending = [i for i in pending if i not in ready]
    for i in order:
        opts = dict(members[i].get("options") or {})
        if not opts.get("arch") or not opts.get("classes"):  # a hand-made model or a nested ensemble
            lines += [f"# member {i} ({members[i]['arch']}): no training recipe recorded; put its emotion.keras in {runs[i]}/", ""]
            continue
        if members[i].get("init_overwritten"):
            lines.append(f"# member {i}: its --init file has since been replaced by this member itself; the notes say what it started from")
        if members[i].get("init_member") is not None:  # fine-tuned from another member: start from that member's run
            opts["init"] = f"{runs[members[i]['init_member']]}/emotion.keras"
        lines += [retrain_command(opts, runs[i]).replace(" \\\n    --export", ""), ""]
    data = (members[0].get("options") or {}).get("data") or "DATA"
    lines += [f"python -m models.ensemble {' '.join(f'{r}/emotion.keras' for r in runs)} --out runs/ensemble --data {data}",
              "python -m export --model runs/ensemble/emotion.keras", "python -m models.card runs/ensemble", "```", ""]
    if ship_as:
        lines += ["then refresh the shipped copy and this card:", "", "```bash", f"python -m models.card runs/ensemble --ship {ship_as}", "```", ""]
    return lines


def _blend_recipe(blend: dict, arch: str, ship_as: str | None) -> list[str]:
    """The two parents (files and sha256 as they were) and the commands that blend, export and describe them."""
    flags = ([f"--alpha {blend['alpha']!r}"] if blend.get("b") else []) + ([f"--tau {blend['tau']!r}"] if blend.get("tau") else [])
    flags += [f"--class-bias {c}={v!r}" for c, v in (blend.get("class_bias") or {}).items()]
    if blend.get("keep_clear"):
        flags.append(f"--keep-clear {blend['keep_clear']['reference']}")
    if blend.get("data"):
        flags.append(f"--data {blend['data']}")
    run = f"runs/{arch}_blend"
    lines = ["## Recipe", "", "| parent | file when blended | sha256 |", "|---|---|---|",
             f"| A | `{blend['a']}` | `{blend['a_sha256'][:12]}` |"]
    if blend.get("b"):
        lines.append(f"| B | `{blend['b']}` | `{blend['b_sha256'][:12]}` |")
    parents = f"{blend['a']} {blend['b']}" if blend.get("b") else blend["a"]
    lines += ["", "```bash", f"python -m models.interpolate {parents} {' '.join(flags)} --out {run}",
              f"python -m export --model {run}/emotion.keras", f"python -m models.card {run}", "```", ""]
    if ship_as:
        lines += ["then refresh the shipped copy and this card:", "", "```bash", f"python -m models.card {run} --ship {ship_as}", "```", ""]
    return lines


def _count(n) -> str:
    return f"{n:,}" if isinstance(n, int) else "?"


def _recall_text(recall: dict) -> str:
    return ", ".join(f"{c} {recall[c]:.3f}" for c in RARE if c in recall)


def ferplus_rows(m: dict, report: dict | None, extra: dict) -> list[str]:
    """The rows that lead a card: FER+ majority accuracy (what people see), balanced, neutral recall, calibration,
    clear expressions, for the Keras model and the int8 file the engine runs; none for a model evaluated without votes."""
    f = m.get("ferplus")
    if not f:
        return []
    rec = ", ".join(f"{c} {v:.2f}" for c, v in f["recall"].items())
    rows = [f"| **FER+ majority accuracy** (validation) | **{f['accuracy'] * 100:.2f}%** on {f['faces']:,} faces with a clear majority "
            f"of ten annotators; balanced {f['balanced_accuracy'] * 100:.2f}%; recall {rec} |",
            f"| calibration | expected calibration error **{f['ece']:.3f}** ({f['ece_bins']} bins, confidence = top probability; "
            + (f"logits divided by a temperature of {extra['temperature']:.3f} fitted on the validation majorities; " if extra.get("temperature") else "")
            + "see reliability.png) |"]
    c = f.get("clear") or {}
    if c.get("faces"):
        rows.append(f"| clear expressions | {c['accuracy'] * 100:.2f}% of the {c['faces']} faces where >= {c['min_votes']} of 10 chose "
                    "one non-neutral emotion; recall " + ", ".join(f"{k} {v['recall']:.2f}" for k, v in c["recall"].items()) + " |")
    int8 = ((report or {}).get("artifacts", {}).get("tflite-int8") or {}).get("ferplus")
    if int8:
        rows.append(f"| FER+ int8 TFLite (what the engine runs) | {int8['accuracy'] * 100:.2f}%, balanced {int8['balanced_accuracy'] * 100:.2f}%, "
                    f"neutral recall {int8['recall'].get('neutral', float('nan')):.3f}, ECE {int8['ece']:.3f} |")
    return rows


def quality_rows(m: dict, report: dict | None, crop: dict | None) -> list[str]:
    """Card rows beyond plain accuracy: balanced accuracy and the rare classes' recall (float and the
    int8 file the engine runs), speed with its CPU class, and agreement through the engine on the
    hard crop benchmark when it was measured."""
    from models.evaluate import unseen_text
    from models.metrics import balanced_accuracy

    rows = [f"| balanced accuracy | {balanced_accuracy(m['confusion']) * 100:.2f}% (mean per-class recall; "
            f"{_recall_text({c: v['recall'] for c, v in m['per_class'].items()})} recall) |"]
    unseen = unseen_text(m.get("unseen"))
    if unseen:
        rows.append(f"| faces not copied from training | {unseen} |")
    int8 = (report or {}).get("artifacts", {}).get("tflite-int8")
    if int8:
        bal = f", balanced {int8['balanced_accuracy'] * 100:.2f}%" if int8.get("balanced_accuracy") is not None else ""
        rec = f"; {_recall_text(int8['recall'])} recall" if int8.get("recall") else ""
        if int8.get("unseen_accuracy") is not None:
            rec += f"; {int8['unseen_accuracy'] * 100:.2f}% on the {int8['unseen_faces']:,} faces not copied from training"
        rows.append(f"| int8 TFLite (what the engine runs) | {int8['accuracy'] * 100:.2f}%{bal}{rec}; "
                    f"{int8['ms_per_face']:.3f} ms/face at batch 4 ({int8.get('cpu_class') or 'CPU class not recorded'}) |")
    measured_on = {a.get("file"): a.get("sha256") for a in (report or {}).get("artifacts", {}).values()}
    if crop and crop.get("model_sha256") and measured_on.get(Path(str(crop.get("model", ""))).name) != crop["model_sha256"]:
        rows.append(f"| through the engine (hard crop benchmark) | not shown: {CROP_NAME} was measured on another "
                    f"{Path(str(crop.get('model', ''))).name} (sha256 {crop['model_sha256'][:12]}); run the benchmark again |")
        crop = None
    if crop:
        d = crop.get("default_crop", {})
        row = next((r for r in crop.get("rows", []) if r.get("default")), None)
        if row:
            pr = crop.get("params", {})
            rows.append(
                f"| through the engine (hard crop benchmark) | label = direct label on **{row['agreement'] * 100:.1f}%** of "
                f"{_count(crop.get('detected'))} detected faces at the default crop (margin {d.get('margin')}, shift "
                f"{d.get('shift_y')}, {pr.get('views', 1)} view, {pr.get('precision', '?')} {pr.get('backend', '')}); engine accuracy "
                f"{row['engine_accuracy'] * 100:.1f}%"
                + (f" (FER+ majority {row['engine_ferplus_accuracy'] * 100:.1f}%)" if row.get("engine_ferplus_accuracy") is not None else "")
                + f"; detector miss {crop.get('miss_rate', 0) * 100:.1f}%; label kept on the "
                f"mirror image {crop.get('flip_agreement', 0) * 100:.1f}% (`benchmarks/crop_agreement.py --scenes hard`, {crop.get('date', '')[:10]}) |")
    return rows


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _keep_clear_text(kept: dict | None) -> str:
    """The clause a card gives a --keep-clear head: the offsets and what they kept, fitted on the validation faces."""
    if not kept:
        return ""
    labels_bias = ", ".join(f"{v:+.2f}" for v in kept["bias"])
    after, floors = kept["after"]["clear_correct"], kept["floors"]
    kept_all = all(after.get(k, 0) >= n for k, n in floors.items())
    return (f"; per-class logit offsets ({labels_bias}) fitted on the validation votes so that clear expressions are "
            f"recognised at least as often as by `{kept['reference']}` ({'all kept' if kept_all else 'not all kept'}; "
            f"FER+ majority {kept['before']['ferplus_accuracy'] * 100:.2f}% -> {kept['after']['ferplus_accuracy'] * 100:.2f}% float, "
            f"the same faces" + _cross_fit_text(kept.get("cross_fitted")) + ")")


def _cross_fit_text(held: dict | None) -> str:
    from models.ferplus import cross_fit_text

    return f"; {cross_fit_text(held)}" if held else ""


def _how_made_rows(extra: dict, opts: dict) -> list[str]:
    """The row that says how the model was made: an ensemble's members, a blend's parents, or a trained run's
    epochs and training setup."""
    members = extra.get("ensemble") or []
    blend = extra.get("interpolate")
    if members:
        return [f"| members | {len(members)} networks, probabilities averaged in one model (`python -m models.ensemble`) |"]
    if blend:
        return ["| made by | `python -m models.interpolate`: "
                + (f"{blend['alpha']:g} x A + {1 - blend['alpha']:g} x B in weight space" if blend.get("b") else "model A")
                + (f", logit adjustment tau {blend['tau']:g}" if blend.get("tau") else "")
                + "".join(f", {c} {v:+g}" for c, v in (blend.get("class_bias") or {}).items())
                + _keep_clear_text(blend.get("keep_clear")) + " (see Recipe) |"]
    rows = [f"| epochs | {extra.get('epochs_run', '?')} run of {opts.get('epochs', '?')} scheduled; best epoch kept |"]
    speed = extra.get("speed")
    if speed:
        timed = "; ".join(f"{k}: {v:.0f}" for k, v in (speed.get("timings") or {}).items())
        rows.append(f"| training setup | {label(speed['precision'], speed['jit'])} ({speed.get('how', 'given')}"
                    + (f"; images/s timed: {timed}" if timed else "") + ") |")
    return rows


def _summary(spec: ModelSpec, name: str, m: dict, tta: dict | None, report: dict | None, crop: dict | None) -> list[str]:
    """The card's title, where it comes from and its table of figures."""
    extra = spec.extra or {}
    lines = [
        f"# Model card: {name}",
        "",
        "Generated by `python -m models.card` from the run's own measurements (labels.json, metrics.json,",
        "export_report.json); every number below was measured on the files next to this card.",
        "",
        "| | |",
        "|---|---|",
        f"| architecture | `{spec.arch}` ({extra.get('params', 0):,} parameters, {extra.get('macs', 0) / 1e6:.1f}M multiply-accumulates per face) |",
        f"| input | {'x'.join(map(str, spec.input_shape))} raw gray pixels 0..255 (scaling is inside the model) |",
        f"| output | probabilities over: {', '.join(spec.labels)} |",
        *ferplus_rows(m, report, extra),
        f"| FER2013-label accuracy | **{m['accuracy'] * 100:.2f}%** on {m['n']:,} faces (the original single, noisier labels; macro F1 {m['macro_f1']:.3f}), no test-time augmentation |",
    ]
    lines += quality_rows(m, report, crop)
    if tta:
        lines.append(f"| with flip TTA | {tta['accuracy'] * 100:.2f}% (Keras float; the engine does this with `--tta`, off by default) |")
    lines += _how_made_rows(extra, extra.get("options", {}))
    lines.append(f"| source sha256 | `{spec.source_sha256}` |")
    return lines


def _data_and_classes(run: Path, m: dict, opts: dict, members: list[dict]) -> list[str]:
    """## Data (what it trained and was validated on) and ## Per-class report, with its plots."""
    lines = [
        "",
        "## Data",
        "",
        f"Trained on `{opts.get('data') or (members[0]['options'].get('data') if members else '?')}` split `train` (FER2013 'Training' rows: 48x48 gray faces),",
        "validated on its `validation` split (FER2013 'PublicTest'). The held-out 'PrivateTest' split was not",
        "used here; the project's published test figure is measured on it elsewhere."
        + (" Targets: the FER+ vote distribution of ten annotators per face (`ferplus.csv`; models.ferplus): unknown / "
           "not-a-face votes and classes outside the model's dropped, faces without votes keep their FER2013 label." if opts.get("votes") else ""),
        "",
        "## Per-class report (validation, FER2013 labels)",
        "",
        "| class | precision | recall | F1 | support |",
        "|---|---:|---:|---:|---:|",
    ]
    for cls, v in m["per_class"].items():
        lines.append(f"| {cls} | {v['precision']:.3f} | {v['recall']:.3f} | {v['f1']:.3f} | {v['support']} |")
    lines += ["", "![confusion matrix against the FER2013 labels](confusion.png)", ""]
    if m.get("ferplus"):
        lines += ["FER+ majority (rows: the ten annotators' majority) and reliability of `confidence`:", "",
                  "![confusion matrix against the FER+ majority](confusion_ferplus.png) ![reliability](reliability.png)", ""]
    if (run / "curves.png").is_file():
        lines += ["![loss and accuracy per epoch](curves.png)", ""]
    return lines


def _recipe(spec: ModelSpec, ship_as: str | None) -> list[str]:
    """## Recipe: how to make this model again (an ensemble's members, a blend's parents, or a training run)."""
    extra = spec.extra or {}
    opts = extra.get("options", {})
    if extra.get("ensemble"):
        return _ensemble_recipe(extra["ensemble"], ship_as)
    if extra.get("interpolate"):
        return _blend_recipe(extra["interpolate"], spec.arch, ship_as)
    lines = ["## Recipe", "", "```"]
    lines += [f"{k}: {opts[k]}" for k in sorted(opts) if k not in ("data", "out", "cache_dir")]
    lines += ["```", "", "Retrain and re-export (one step; the run folder can be passed to `--model` of the engine):", "", "```bash",
              retrain_command(opts, f"runs/{spec.arch}"), "```", ""]
    if ship_as:
        lines += ["then refresh the shipped copy and this card:", "", "```bash",
                  f"python -m models.card runs/{spec.arch} --ship {ship_as}", "```", ""]
    return lines


def _notes_and_exports(run: Path, report: dict | None) -> list[str]:
    """## Notes (the trainer's NOTES.md) and ## Exports (export_report.md without its title)."""
    lines = []
    notes = run / NOTES_NAME
    if notes.is_file():  # what the run's own files cannot say (e.g. a schedule changed mid-run), written by its trainer
        lines += ["## Notes", "", notes.read_text().strip(), ""]
    if report:
        body = (run / "export_report.md").read_text().strip().splitlines()
        if body and body[0].startswith("# "):
            body = body[1:]  # the report's own title; this section has one
        lines += ["## Exports", "", *body, ""]
    return lines


def write_card(run: Path, title: str | None = None, ship_as: str | None = None) -> Path:
    """MODEL_CARD.md in `run` from its labels.json, metrics and export report (see the module docstring)."""
    run = Path(run)
    spec = ModelSpec.load(run)
    metrics_path = run / "metrics.json"
    if not metrics_path.is_file():
        raise UserError(f"{run} has no metrics.json: run python -m models.evaluate first")
    m = json.loads(metrics_path.read_text())
    tta = _read_json(run / "metrics_tta.json")
    report = _read_json(run / "export_report.json")
    crop = _read_json(run / CROP_NAME)
    extra = spec.extra or {}
    name = title or f"{spec.arch} ({len(spec.labels)} classes)"
    lines = _summary(spec, name, m, tta, report, crop)
    lines += _data_and_classes(run, m, extra.get("options", {}), extra.get("ensemble") or [])
    lines += _recipe(spec, ship_as)
    lines += _notes_and_exports(run, report)
    path = run / CARD_NAME
    path.write_text("\n".join(lines) + "\n")
    return path


def ship(run: Path, dest: Path) -> list[Path]:
    """Copy the engine's files and the card (not checkpoints) into `dest`, replacing old ones."""
    if dest.resolve() == run.resolve():
        raise UserError("--ship needs a folder other than the run folder itself")
    dest.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in SHIP_FILES:
        if (run / name).is_file():
            copied.append(Path(shutil.copy2(run / name, dest / name)))
        else:
            (dest / name).unlink(missing_ok=True)  # e.g. NOTES.md of an earlier run: not this model's
    for pattern in SHIP_GLOBS:
        for old in dest.glob(pattern):
            old.unlink()
        for f in sorted(run.glob(pattern)):
            copied.append(Path(shutil.copy2(f, dest / f.name)))
    return copied


def main(argv: Sequence[str] | None = None) -> int:
    p = Parser(prog="python -m models.card", description="Write MODEL_CARD.md for a training run, optionally ship it.")
    p.add_argument("run", help="a run folder (labels.json, metrics.json, optionally export_report.json)")
    p.add_argument("--title", help="card title (default: arch and class count)")
    p.add_argument("--ship", metavar="DEST", help="also copy the model, exports and card to DEST (e.g. models/parents/emonet_n)")
    args = p.parse_args(argv)
    run = Path(args.run)
    if not run.is_dir():
        raise UserError(f"run folder {run} does not exist")
    card = write_card(run, args.title, args.ship)
    print(f"wrote {card}")
    if args.ship:
        files = ship(run, Path(args.ship))
        print(f"shipped {len(files)} files to {args.ship}")
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(main))
