"""Is every shipped int8 file as accurate as its float model on THIS CPU? `python benchmarks/int8_check.py`

int8 kernels differ by CPU class: ONNX Runtime's u8s8 path saturates (int16 pairwise sums) on x86
without VNNI, XNNPACK's int8 uses dot-product instructions on a Pi 5 but not on a Pi 4. An export
verified on one machine can therefore be wrong on another, silently. This check runs each shipped
model's int8 TFLite and ONNX files and its float32 TFLite file on the same validation faces, with the
runtimes installed here (no TensorFlow: it runs on a Pi), and compares: accuracy within
`--max-drop` points of the float file and label agreement >= `--min-agreement`. Exit 1 if any fails.

Run it where you cannot buy the CPU: `qemu-x86_64 -cpu Haswell .venv/bin/python benchmarks/int8_check.py`
(AVX2 only, numpy and both runtimes see no AVX-512/VNNI) and `tests/pi/run.sh a72|a76 --exec ...`
(README "Benchmarks" has the exact commands). The result records the CPU class it ran on.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from benchmarks import SHARED, machine_info, md_table, now_utc, package_versions, rel, write_json, write_text
from engine.classify.classifier import ZOO, ClassifierOptions, create_classifier, predict_batched
from engine.core.cliargs import Parser, positive_int
from engine.core.contract import ModelSpec
from engine.core.errors import UserError, cli_main

#: the int8 files each model is checked for, and the float file they are compared with
INT8_FILES = (("tflite", "int8"), ("onnx", "int8"))
REFERENCE = ("tflite", "fp32")
SEED = 0


def sample_faces(data: Path, labels: tuple[str, ...], n: int, seed: int = SEED) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """n validation faces drawn at random (fixed seed) from the model's classes: accuracy on them
    estimates validation accuracy, and every CPU sees the same faces. Third: their FER+ majority labels
    (-1 where left out; models.ferplus), or None where the data folder has no ferplus.csv."""
    from models.data import load_split

    ds = load_split(data, "validation", labels, quiet=True)
    idx = np.sort(np.random.default_rng(seed).permutation(len(ds.y))[: min(n, len(ds.y))])
    majority = None
    if (data / "ferplus.csv").is_file():
        from models.ferplus import dataset_votes

        majority = dataset_votes(ds.subset(idx)).majority
    return ds.x[idx], ds.y[idx], majority


def _majority_accuracy(probs: np.ndarray, majority: np.ndarray | None) -> float | None:
    if majority is None or not (majority >= 0).any():
        return None
    m = majority >= 0
    return float((probs[m].argmax(1) == majority[m]).mean())


def _predict(model_dir: Path, backend: str, precision: str, x: np.ndarray) -> np.ndarray:
    clf = create_classifier(ClassifierOptions(model=model_dir, backend=backend, precision=precision))
    try:
        return predict_batched(clf.predict, x, batch=32)
    finally:
        clf.close()


def check_model(model_dir: Path, x: np.ndarray, y: np.ndarray, max_drop: float, min_agreement: float,
                majority: np.ndarray | None = None) -> list[dict]:
    """One row per int8 file: accuracy (FER2013 labels, and the FER+ majority where known), the float file's,
    label agreement, max |dp|, ok (both drops within max_drop points)."""
    ref = _predict(model_dir, *REFERENCE, x)
    ref_acc = float((ref.argmax(1) == y).mean())
    ref_fp = _majority_accuracy(ref, majority)
    rows = []
    for backend, precision in INT8_FILES:
        probs = _predict(model_dir, backend, precision, x)
        acc = float((probs.argmax(1) == y).mean())
        agree = float((probs.argmax(1) == ref.argmax(1)).mean())
        ok = round((ref_acc - acc) * 100, 6) <= max_drop and agree >= min_agreement  # one face = 1/n, not float noise
        fp = _majority_accuracy(probs, majority)
        if fp is not None:
            ok = ok and round((ref_fp - fp) * 100, 6) <= max_drop
        rows.append({
            "model": model_dir.name, "file": f"emotion_{precision}.{backend}", "faces": int(len(y)),
            "float_accuracy": round(ref_acc, 4), "accuracy": round(acc, 4), "drop_points": round((ref_acc - acc) * 100, 2),
            "agreement": round(agree, 4), "max_abs_dp": round(float(np.abs(probs - ref).max()), 4), "ok": bool(ok),
            **({"ferplus_faces": int((majority >= 0).sum()), "float_ferplus_accuracy": round(ref_fp, 4), "ferplus_accuracy": round(fp, 4),
                "ferplus_drop_points": round((ref_fp - fp) * 100, 2)} if fp is not None else {}),
        })
    return rows


def zoo_models(names: str | None) -> list[Path]:
    dirs = sorted(p for p in ZOO.iterdir() if (p / "labels.json").is_file())
    if names:
        wanted = [n.strip() for n in names.split(",") if n.strip()]
        found = [ZOO / n if (ZOO / n / "labels.json").is_file() else Path(n) for n in wanted]
        unknown = [n for n, d in zip(wanted, found) if not (d / "labels.json").is_file()]
        if unknown:
            raise UserError(f"--models: {', '.join(unknown)} is neither a shipped model ({', '.join(p.name for p in dirs)}) "
                            "nor an export folder with labels.json")
        dirs = found
    return dirs


def run(args: argparse.Namespace) -> int:
    data = Path(args.data)
    if not (data / "validation").is_dir():
        raise UserError(f"--data {data} has no validation/ folder (FER2013 layout: validation/<class>/*.jpg)")
    if args.faces < 10:
        raise UserError("--faces must be at least 10")
    rows: list[dict] = []
    faces: dict[tuple[str, ...], tuple[np.ndarray, np.ndarray, np.ndarray | None]] = {}  # per label set: decoded once, not per model
    for model_dir in zoo_models(args.models):
        labels = tuple(ModelSpec.load(model_dir).labels)
        if labels not in faces:
            faces[labels] = sample_faces(data, labels, args.faces)
        x, y, majority = faces[labels]
        rows += check_model(model_dir, x, y, args.max_drop, args.min_agreement, majority)
    machine = machine_info()
    result = {
        "benchmark": "int8_check", "date": now_utc(), "machine": machine, "versions": package_versions(),
        "data": rel(str(data)), "faces": args.faces, "max_drop_points": args.max_drop,
        "min_agreement": args.min_agreement, "rows": rows, "ok": all(r["ok"] for r in rows),
    }
    fp = lambda r, k: f"{r[k]:.2%}" if k in r else "-"  # noqa: E731
    table = md_table(
        ["model", "file", "float FER+", "int8 FER+", "FER+ drop", "float acc.", "int8 acc.", "drop (points)", "agreement", "max abs dp", "ok"],
        [[r["model"], r["file"], fp(r, "float_ferplus_accuracy"), fp(r, "ferplus_accuracy"),
          f"{r['ferplus_drop_points']:+.2f}" if "ferplus_drop_points" in r else "-",
          f"{r['float_accuracy']:.2%}", f"{r['accuracy']:.2%}", f"{r['drop_points']:+.2f}",
          f"{r['agreement']:.2%}", f"{r['max_abs_dp']:.3f}", "yes" if r["ok"] else "**NO**"] for r in rows])
    where = machine["isa_class"] + (f", emulated: {machine['emulated']}" if machine.get("emulated") else "")
    print(f"int8 vs float32 on {args.faces} validation faces, CPU class {where} ({machine['cpu']})\n\n{table}")
    if args.out:
        out = Path(args.out)
        write_json(out.with_suffix(".json"), result)
        write_text(out.with_suffix(".md"), f"# int8 check: CPU class {where}\n\n{machine['cpu']}, {now_utc()}, "
                   f"{args.faces} validation faces\n\n{table}\n")
    return 0 if result["ok"] else 1


def _main(argv: list[str] | None = None) -> int:
    p = Parser(prog="python benchmarks/int8_check.py", description=__doc__.split("\n\n")[0],
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(SHARED / "data" / "fer2013"), help="FER2013 folder with validation/<class>/ (default ../shared/data/fer2013)")
    p.add_argument("--faces", type=positive_int, default=400, help="validation faces to run (random, fixed seed; default 400)")
    p.add_argument("--models", default=None, help="comma list of shipped model names or export folders (default: every model in engine/zoo)")
    p.add_argument("--max-drop", type=float, default=1.0, help="largest accuracy drop allowed, in points (default 1)")
    p.add_argument("--min-agreement", type=float, default=0.98, help="smallest label agreement with float allowed (default 0.98)")
    p.add_argument("--out", default=None, help="write OUT.json and OUT.md (e.g. benchmarks/results/int8_check_avx2)")
    return run(p.parse_args(argv))


def main(argv: list[str] | None = None) -> int:
    return cli_main(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
