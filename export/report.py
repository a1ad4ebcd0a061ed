"""What an export says about itself: export_report.json / .md, the `export` record in labels.json,
and the table printed at the end."""
from __future__ import annotations

import datetime as _dt
from pathlib import Path

from engine.core.formats import FLOAT_MIN_AGREEMENT, INT8_MAX_DROP
from engine.core.timing import MIN_TIME_S, REPEATS, WARMUP
from export.convert import ONNX_OPSET

REPORT_JSON = "export_report.json"
REPORT_MD = "export_report.md"


def versions() -> dict:
    from importlib import metadata

    out = {}
    for pkg in ("tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "ai-edge-litert"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def build_report(*, model_path: Path, out: Path, spec, keras_file: str, keras_acc: float, calib_faces: int,
                 pixel_range: list[int], verify_faces: int, rows: dict[str, dict], failures: list[str],
                 settings: dict, keras_balanced: float | None = None) -> dict:
    """export_report.json's content (`seconds` is filled in when the export is done)."""
    return {
        "model": str(model_path),
        "out": str(out),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "labels": list(spec.labels),
        "arch": spec.arch,
        "source_sha256": spec.source_sha256,
        "calib_faces": int(calib_faces),
        "calib_pixel_range": pixel_range,
        "verify_faces": int(verify_faces),
        "keras": {
            "file": keras_file,
            "size_kb": round(model_path.stat().st_size / 1024, 1),
            "accuracy": keras_acc,
            "balanced_accuracy": keras_balanced,
        },
        "artifacts": rows,
        "failures": failures,
        "checks": "passed" if not failures else ("failed" if settings["check"] else "failed (--no-check)"),
        "settings": {
            **settings,
            "onnx_opset": ONNX_OPSET,
            "tflite_int8": "full integer, uint8 input (scale 1.0, zero point 0), float32 output",
            "onnx_int8": "static QDQ, MinMax calibration, uint8 activations, per-channel uint8 weights (U8U8: exact without VNNI)",
            "float_min_agreement": FLOAT_MIN_AGREEMENT,
            "int8_max_drop": INT8_MAX_DROP,
            "timing": f"engine.core.timing: batch 4, best of {REPEATS} rounds of >= {MIN_TIME_S} s after {WARMUP} warm-up calls",
        },
        "versions": versions(),
        "seconds": 0.0,
    }


def export_record(report: dict) -> dict:
    """The `export` entry of labels.json's `extra`: per file its format, name, size, sha256 and parity."""
    return {
        "date": report["date"],
        "settings": report["settings"],
        "keras_accuracy": report["keras"]["accuracy"],
        "verify_faces": report["verify_faces"],
        "artifacts": [
            {
                "format": fmt,
                "file": r["file"],
                "bytes": r["bytes"],
                "sha256": r["sha256"],
                "input_dtype": r["input_dtype"],
                **({"input_quantization": r["input_quantization"]} if fmt == "tflite-int8" else {}),
                "accuracy": r["accuracy"],
                "agreement": r["agreement"],
            }
            for fmt, r in report["artifacts"].items()
        ],
    }


def _balanced_text(r: dict) -> str:
    """Mean per-class recall; reports written before it was measured show '-'."""
    b = r.get("balanced_accuracy")
    return f"{b * 100:.2f}%" if b is not None else "-"


def _ms_text(r: dict) -> str:
    return f"{r['ms_per_face']:.3f} ({r.get('cpu_class') or 'CPU class not recorded'})"


def _fp_text(r: dict, width: int = 8) -> str:
    """FER+ majority accuracy of a row, or '-' where the data had no votes."""
    f = r.get("ferplus")
    return f"{f['accuracy'] * 100:>{width - 1}.2f}%" if f else f"{'-':>{width}}"


def format_table(report: dict) -> str:
    head = f"{'format':<13}{'size KB':>9}{'FER+':>9}{'ECE':>7}{'FER2013':>9}{'agreement':>11}{'max|dp|':>10}  ms/face (CPU class)"
    lines = [head, "-" * len(head)]
    k = report["keras"]
    ece = lambda r: f"{r['ferplus']['ece']:>7.3f}" if r.get("ferplus") else f"{'-':>7}"  # noqa: E731
    lines.append(f"{'keras':<13}{k['size_kb']:>9.1f}{_fp_text(k, 9)}{ece(k)}{k['accuracy'] * 100:>8.2f}%{'(ref)':>11}{'-':>10}{'-':>9}")
    for fmt, r in report["artifacts"].items():
        lines.append(
            f"{fmt:<13}{r['size_kb']:>9.1f}{_fp_text(r, 9)}{ece(r)}{r['accuracy'] * 100:>8.2f}%{r['agreement'] * 100:>10.2f}%"
            f"{r['max_abs_dp']:>10.2g}  {_ms_text(r)}"
        )
    return "\n".join(lines)


def _ferplus_markdown(report: dict) -> list[str]:
    """The table that leads the report: what people see (FER+ majority of ten annotators), calibration included."""
    rows = [("keras (reference)", report["keras"])] + list(report["artifacts"].items())
    rows = [(name, r["ferplus"]) for name, r in rows if r.get("ferplus")]
    if not rows:
        return []
    labels = list(rows[0][1]["recall"])
    n = rows[0][1]["faces"]
    out = [f"**FER+ majority accuracy** (what people see: the majority of ten annotators per face, on the {n:,} validation "
           "faces with a clear majority; models.ferplus), balanced accuracy, recall per class and expected calibration "
           "error (15 bins) of `confidence`:", "",
           "| format | FER+ accuracy | balanced | ECE | " + " | ".join(f"{c} recall" for c in labels) + " |",
           "|---|---:|---:|---:|" + "---:|" * len(labels)]
    for name, f in rows:
        out.append(f"| {name} | {f['accuracy'] * 100:.2f}% | {f['balanced_accuracy'] * 100:.2f}% | {f['ece']:.3f} | "
                   + " | ".join(f"{f['recall'][c]:.3f}" for c in labels) + " |")
    return out + ["", "FER2013-label figures (the original single, noisier labels) follow.", ""]


def format_markdown(report: dict) -> str:
    s = report["settings"]
    k = report["keras"]
    lines = [
        f"# Export report: {report['model']}",
        "",
        *_ferplus_markdown(report),
        "Balanced accuracy = mean per-class recall (each emotion counts the same, however rare).",
        "",
        f"Verified on {report['verify_faces']} validation faces of `{s['calib']}`; int8 calibrated on "
        f"{report['calib_faces']} class-stratified training faces. Each file was run with its own runtime "
        f"(LiteRT / ONNX Runtime), {s['threads']} thread(s); ms/face at batch 4 on the CPU class named "
        f"(engine.core.cpu.ISA_CLASSES: milliseconds carry only between machines of one class; MACs carry everywhere).",
        "",
        "| format | file | size KB | FER2013-label accuracy | balanced accuracy | agreement with Keras | max abs dp | ms/face (CPU class) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
        f"| keras (reference) | {k['file']} | {k['size_kb']:.1f} | {k['accuracy'] * 100:.2f}% | {_balanced_text(k)} | - | - | - |",
    ]
    for fmt, r in report["artifacts"].items():
        lines.append(
            f"| {fmt} | {r['file']} | {r['size_kb']:.1f} | {r['accuracy'] * 100:.2f}% | {_balanced_text(r)} | {r['agreement'] * 100:.2f}% "
            f"| {r['max_abs_dp']:.2g} | {_ms_text(r)} |"
        )
    unseen = {fmt: r for fmt, r in report["artifacts"].items() if r.get("unseen_accuracy") is not None}
    if unseen:
        n = next(iter(unseen.values()))["unseen_faces"]
        lines += ["", f"On the {n:,} of those faces that are not pixel copies of training faces (FER2013 repeats some across "
                      "its splits; a memorising net is right on nearly all copies): "
                  + ", ".join(f"{fmt} {r['unseen_accuracy'] * 100:.2f}%" for fmt, r in unseen.items()) + "."]
    lines.append("")
    if report["failures"]:
        lines.append("**Checks failed (exported with --no-check):**")
        lines += [f"- {f}" for f in report["failures"]]
    else:
        lines.append(
            f"All checks passed (float agreement >= {FLOAT_MIN_AGREEMENT * 100:.1f}%, "
            f"int8 accuracy within {INT8_MAX_DROP * 100:.1f} points of Keras)."
        )
    if "tflite-int8" in report["artifacts"]:
        q = report["artifacts"]["tflite-int8"].get("input_quantization")
        lines.append(f"\ntflite-int8 input: uint8, quantization (scale, zero point) = {tuple(q) if q else '?'}: raw face bytes go straight in.")
    lines.append(f"\nVersions: {', '.join(f'{k} {v}' for k, v in report['versions'].items())}. Exported {report['date']}.")
    return "\n".join(lines) + "\n"
