"""What people see: models scored against the FER+ majority of ten annotators. `python benchmarks/ferplus.py`

Each model runs through the engine's own classifier (LiteRT / ONNX Runtime, the file the engine would load) on
every validation face with FER+ votes; the table gives FER+ majority accuracy, balanced accuracy, neutral recall,
expected calibration error (15 bins) and FER2013-label accuracy, and a second table the recall on **clear
expressions** (faces where >= 7 of 10 annotators chose the same non-neutral emotion): a model that wins FER+ by
calling everything neutral loses there. Models are named `NAME=DIR` (an export folder) and compared in the
order given, so `--model old=...` before the new ones reads as before -> after. `--pair OLD,NEW` adds a paired
table on the clear faces: faces only one of the two gets right and the exact McNemar p-value per class, because
with 26 fear and 5 disgust faces, "fewer right" can be one face.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks import RESULTS, SHARED, machine_info, now_utc, package_versions, rel, write_json, write_text
from engine.classify.classifier import ZOO, ClassifierOptions, create_classifier, predict_batched
from engine.core.cliargs import Parser
from engine.core.contract import ModelSpec
from engine.core.errors import UserError, cli_main


def parse_model(text: str) -> tuple[str, Path]:
    """`NAME=DIR` or a bare DIR (named after the folder)."""
    name, _, path = text.rpartition("=")
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"--model {text}: {path} is not a model folder")
    return (name or path.name), path


def score(model_dir: Path, data: Path, backend: str, precision: str):
    """(the FER+ report (models.ferplus.report) of one model file on the validation split, its label per face,
    the votes)."""
    from models.data import load_split
    from models.evaluate import ferplus_votes
    from models.ferplus import report

    labels = tuple(ModelSpec.load(model_dir).labels)
    ds = load_split(data, "validation", labels, quiet=True)
    votes = ferplus_votes(ds, "auto")
    if votes is None:
        raise UserError(f"{data} has no ferplus.csv: nothing to score against")
    clf = create_classifier(ClassifierOptions(model=model_dir, backend=backend, precision=precision))
    try:
        probs = predict_batched(clf.predict, ds.x, batch=64)
    finally:
        clf.close()
    return report(probs, votes, ds.y), probs.argmax(1), votes


def markdown(results: dict[str, dict], meta: dict, pairs: list[dict] | None = None) -> str:
    names = list(results)
    lines = [f"# FER+ majority accuracy ({meta['backend']} {meta['precision']}, validation)", "",
             f"`{meta['command']}` on {meta['machine']['cpu']} ({meta['machine']['isa_class']}), {meta['date']}.", "",
             "| model | FER+ accuracy | balanced | neutral recall | sad recall | ECE (15 bins) | mean confidence | FER2013-label accuracy |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for n in names:
        r = results[n]
        lines.append(f"| {n} | {r['accuracy'] * 100:.2f}% | {r['balanced_accuracy'] * 100:.2f}% | {r['recall'].get('neutral', 0):.3f} | "
                     f"{r['recall'].get('sad', 0):.3f} | {r['ece']:.3f} | {r['mean_confidence']:.3f} | {r['fer2013_accuracy'] * 100:.2f}% |")
    classes = sorted({c for r in results.values() for c in r["clear"]["recall"]},
                     key=lambda c: list(results[names[0]]["labels"]).index(c) if c in results[names[0]]["labels"] else 99)
    first = results[names[0]]["clear"]
    lines += ["", f"Recall on clear expressions (>= {first['min_votes']} of 10 annotators chose the same non-neutral emotion):", "",
              "| class | faces | " + " | ".join(names) + " |", "|---|---:|" + "---:|" * len(names)]
    for c in classes:
        faces = first["recall"].get(c, {}).get("faces", 0)
        lines.append(f"| {c} | {faces} | " + " | ".join(
            f"{results[n]['clear']['recall'][c]['recall']:.3f}" if c in results[n]["clear"]["recall"] else "-" for n in names) + " |")
    lines.append(f"| all clear faces | {first['faces']} | " + " | ".join(f"{results[n]['clear']['accuracy']:.3f}" for n in names) + " |")
    for pair in pairs or []:
        lines += ["", f"Paired on the clear faces: **{pair['new']}** against **{pair['old']}** (faces right; p: exact "
                  "McNemar test on the faces only one of them gets right):", "",
                  f"| class | faces | {pair['old']} | {pair['new']} | only {pair['new']} | only {pair['old']} | p |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for c, r in pair["rows"].items():
            lines.append(f"| {'all clear faces' if c == 'all' else c} | {r['faces']} | {r['old']} | {r['new']} | "
                         f"{r['only_new']} | {r['only_old']} | {_p_text(r['p'])} |")
    return "\n".join(lines) + "\n"


def _p_text(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="python benchmarks/ferplus.py", description=__doc__.split("\n\n")[0],
               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", action="append", metavar="NAME=DIR",
                   help="a model folder to score (repeatable; default: every shipped model in engine/zoo)")
    p.add_argument("--data", default=str(SHARED / "data" / "fer2013"), help="FER2013 folder with validation/ and ferplus.csv")
    p.add_argument("--backend", choices=("tflite", "onnx"), default="tflite")
    p.add_argument("--precision", default="int8", help="which file of each folder (int8, fp16, fp32)")
    p.add_argument("--pair", action="append", metavar="OLD,NEW", default=[],
                   help="two --model names: a paired table on the clear faces (only one right, exact McNemar p) (repeatable)")
    p.add_argument("--out", default=str(RESULTS / "ferplus"), help="result files: OUT.json and OUT.md")
    return p


def parse_pairs(items: list[str], names: list[str]) -> list[tuple[str, str]]:
    """`--pair OLD,NEW` as (old, new), both among the models' names (checked before anything is scored)."""
    pairs = []
    for item in items:
        cuts = [i for i, ch in enumerate(item) if ch == ","]
        if not cuts:
            raise UserError(f"--pair {item!r}: give two model names as OLD,NEW")
        found = [(item[:i], item[i + 1:]) for i in cuts if item[:i] in names and item[i + 1:] in names]  # names may hold commas
        if not found:
            raise UserError(f"--pair {item!r}: not two --model names joined by a comma (names: {'; '.join(names)})")
        if found[0][0] == found[0][1]:
            raise UserError(f"--pair {item!r}: a model paired with itself")
        pairs.append(found[0])
    return pairs


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    data = Path(args.data)
    if not data.is_dir():
        raise UserError(f"--data {data} does not exist")
    models = [parse_model(m) for m in args.model] if args.model else [(p.name, p) for p in sorted(ZOO.iterdir()) if p.is_dir()]
    pair_names = parse_pairs(args.pair, [n for n, _ in models])
    from models.ferplus import report_text
    from models.paired import paired_clear

    results, preds, votes = {}, {}, {}
    for name, path in models:
        print(f"scoring {name} ({path}) ...", file=sys.stderr, flush=True)
        results[name], preds[name], votes[name] = score(path, data, args.backend, args.precision)
        print(report_text(results[name], name), file=sys.stderr, flush=True)
    pairs = []
    for old, new in pair_names:
        if votes[old].labels != votes[new].labels:
            raise UserError(f"--pair {old},{new}: the two models have different classes")
        pairs.append({"old": old, "new": new, "rows": paired_clear(preds[old], preds[new], votes[new])})
    meta = {"command": "python benchmarks/ferplus.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "date": now_utc(), "machine": machine_info(), "versions": package_versions(),
            "backend": args.backend, "precision": args.precision, "models": {n: rel(p) for n, p in models}}
    out = Path(args.out)
    write_json(out.with_suffix(".json"), {**meta, "results": results, "pairs": pairs})
    write_text(out.with_suffix(".md"), markdown(results, meta, pairs))
    print(markdown(results, meta, pairs))
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(main))
