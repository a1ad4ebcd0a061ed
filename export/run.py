"""Export a trained .keras model to TFLite and ONNX, and prove every file matches Keras.

`export_model` converts into a temporary folder next to the output folder, loads every
artifact back with its own runtime (LiteRT / ONNX Runtime through
`engine.classify.classifier.open_model_file`, the exact code the engine runs), compares it with
Keras on held-back validation faces, and only then moves the files into place. A failed
conversion or a failed parity check leaves the output folder as it was.

The formats, their file names and parity limits are the table in `engine/core/formats.py`; the steps:
`export/prepare.py` (arguments, the model, the faces), `export/convert.py` (one converter per
format), `export/verify.py` (each file against Keras), `export/report.py` (export_report.json/.md).
The names other code imported from here before the split are still importable from here.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Iterable

from engine.core.contract import SPEC_NAME, ModelSpec, sha256_file
from engine.core.errors import UserError
from engine.core.formats import (
    BATCH_TOLERANCE, FLOAT_MIN_AGREEMENT, FLOAT_TIE_MARGIN, INT8_MAX_DROP, by_name, exported,
)
from engine.core.logs import log
from export.convert import (
    ONNX_OPSET, Job, convert_all, convert_onnx_fp32, convert_onnx_int8, convert_tflite, import_tf, tflite_io,
)
from export.prepare import (
    FORMATS, SEED, calib_source, check_options, load_checked_model, load_faces, parse_formats, source_spec,
    stratified_indices,
)
from export.report import (
    REPORT_JSON, REPORT_MD, build_report, export_record, format_markdown, format_table,
)
from export.verify import check_rows, ferplus_row, keras_probabilities, verify_all, verify_artifact
from models.metrics import classification_report

#: What other code and tests import from here (most of it lives in the step modules now).
__all__ = [
    "BATCH_TOLERANCE", "FLOAT_MIN_AGREEMENT", "FLOAT_TIE_MARGIN", "FORMATS", "FORMAT_KIND", "INT8_MAX_DROP", "ONNX_OPSET",
    "REPORT_JSON", "REPORT_MD", "SEED", "check_rows", "convert_onnx_fp32", "convert_onnx_int8", "convert_tflite",
    "export_model", "format_markdown", "format_table", "parse_formats", "stratified_indices", "tflite_io",
    "verify_artifact",
]
#: format -> (backend, precision) as the engine names them
FORMAT_KIND: dict[str, tuple[str, str]] = {a.name: (a.backend, a.precision) for a in exported()}


# --------------------------------------------------------------------------- earlier exports in --out


def _previous_export(out: Path) -> ModelSpec | None:
    """The sidecar an earlier export left in `out`, if any (read before it is replaced)."""
    try:
        return ModelSpec.load(out) if (out / SPEC_NAME).is_file() else None
    except (UserError, ValueError, OSError):
        return None


def _keep_earlier_exports(previous: ModelSpec | None, source_sha256: str, files: dict, out: Path) -> list[dict]:
    """Artifact records of formats exported earlier FROM THE SAME model file and not redone now:
    exporting onnx-fp32 today must not throw away yesterday's int8 calibration."""
    if previous is None or previous.source_sha256 != source_sha256:
        return []
    earlier = (previous.extra or {}).get("export", {}).get("artifacts", [])
    return [a for a in earlier if a.get("format") in FORMATS and a["format"] not in files
            and (out / a.get("file", "")).is_file() and sha256_file(out / a["file"]) == a.get("sha256")]


def _earlier_report_rows(out: Path, formats: set[str]) -> dict[str, dict]:
    """The kept formats' verification rows from the report they were written with, so the new report
    (and the model card built from it) still lists every export in the folder."""
    try:
        earlier = json.loads((out / REPORT_JSON).read_text()) if formats else {}
    except (OSError, ValueError):
        return {}
    return {f: {**row, "kept_from_export": earlier.get("date")} for f, row in (earlier.get("artifacts") or {}).items()
            if f in formats}


def _remove_stale_exports(out: Path, files: dict, kept: set[str]) -> None:
    """Exports of another model (or of unknown origin) that this export did not replace: labels.json
    no longer describes them, and the engine would pick them up by name."""
    for art in exported():
        stale = out / art.file
        if art.name in files or art.name in kept or not stale.is_file():
            continue
        try:
            stale.unlink()
            log(f"  removed {stale.name}: left by an export of another model, labels.json no longer describes it")
        except OSError as exc:
            log(f"warning: could not remove {stale} ({exc.strerror or exc}): it belongs to another model, delete it")


# --------------------------------------------------------------------------- checked before any slow work

#: the first bytes of an HDF5 file (a legacy Keras .h5 model)
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def check_model_file(model_path: Path) -> None:
    """A cheap look (no TensorFlow) at whether the model file is a Keras model at all: a .keras zip
    archive holding config.json, or an HDF5 (.h5) file.

    Why: a corrupt model given without --calib was first told "no calibration data" (or waited for
    TensorFlow to load): the file the user named is what to name first. The full load later still
    checks everything else (the contract, the weights)."""
    try:
        with open(model_path, "rb") as f:
            head = f.read(len(HDF5_SIGNATURE))
        if head == HDF5_SIGNATURE:
            return
        if zipfile.is_zipfile(model_path):
            with zipfile.ZipFile(model_path) as z:
                if "config.json" in z.namelist():
                    return
            reason = "a zip archive without config.json"
        else:
            reason = "neither a .keras archive nor an HDF5 file"
    except OSError as exc:
        reason = exc.strerror or str(exc)
    except zipfile.BadZipFile:
        reason = "a damaged zip archive"
    raise UserError(f"{model_path} is not a loadable Keras model ({reason})")


def check_out_writable(out: Path) -> None:
    """--out must be a folder this user can create and write (and so must the folder that receives the
    temporary export next to it), checked before TensorFlow loads and the faces decode.

    Why: `--out /proc/x` converted for most of a minute, then failed with an OSError traceback and exit 1
    (which reads as "the export failed"), not one sentence and exit 2 (a flag to fix)."""
    target = Path(os.path.abspath(out))
    parent = target.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"--out {out}: {parent} is not a folder")
    for folder in ([target] if target.is_dir() else []) + [parent]:
        try:
            os.rmdir(tempfile.mkdtemp(prefix=".export-probe-", dir=folder))
        except OSError as exc:
            raise UserError(f"--out {out} cannot be written: no folder can be made in {folder} ({exc.strerror or exc})") from None


# --------------------------------------------------------------------------- the export


def _export_spec(src: ModelSpec, model_path: Path) -> ModelSpec:
    """The labels.json written with the exports: the source's, with the model's sha256, minus its old export record."""
    return ModelSpec(
        labels=list(src.labels),
        input_shape=list(src.input_shape),
        input_range=list(src.input_range),
        input_dtype=src.input_dtype,
        arch=src.arch,
        source_sha256=sha256_file(model_path),
        extra={k: v for k, v in (src.extra or {}).items() if k != "export"},
    )


def export_model(
    model_path: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    calib: str | os.PathLike | None = None,
    formats: str | Iterable[str] = FORMATS,
    calib_size: int = 500,
    verify_size: int | None = None,
    check: bool = True,
    threads: int = 1,
    cache_dir: str | os.PathLike | None = None,
) -> dict:
    """Convert, verify and atomically write the requested formats; return the report dict.

    Raises UserError for anything the user can fix (bad paths, bad model, failed parity
    checks when `check` is true); in that case nothing in `out_dir` changed.
    """
    formats = parse_formats(formats)
    model_path, out = check_options(model_path, out_dir, calib_size, verify_size, threads)
    check_out_writable(out)
    check_model_file(model_path)
    spec_src = source_spec(model_path)
    calib_path = calib_source(calib, spec_src, model_path)

    t_start = time.time()
    import_tf()
    model, spec_src = load_checked_model(model_path, spec_src)
    labels = tuple(spec_src.labels)
    faces = load_faces(calib_path, labels, calib_size, verify_size, cache_dir)
    val = faces.val
    log(f"running Keras on {len(val)} validation faces...")
    keras_probs = keras_probabilities(model, val.x)
    keras_quality = classification_report(val.y, keras_probs.argmax(1), val.labels)
    keras_acc, keras_balanced = keras_quality["accuracy"], keras_quality["balanced_accuracy"]

    out_abs = out.resolve()
    previous = _previous_export(out)
    out_abs.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_abs.name}.export-", dir=out_abs.parent))
    try:
        work = tmp / ".work"
        work.mkdir()
        spec = _export_spec(spec_src, model_path)
        spec.save(tmp)  # the runtimes' classifiers read it during verification

        job = Job(model, model_path.name, labels, faces.calib_x, tmp, work)
        convert_all(job, formats)
        rows = verify_all(job.files, val, keras_probs, threads, job.io, faces.val_seen, faces.val_votes)
        failures = check_rows(rows, keras_acc)
        if failures and check:
            raise UserError(
                f"export check failed: {'; '.join(failures)}. Nothing was written to {out} (pass --no-check to export anyway)"
            )
        for f in failures:
            log(f"warning: {f} (--no-check: exporting anyway)")

        keras_name = model_path.name
        if out_abs != model_path.parent.resolve():
            keras_name = by_name("keras").file
            shutil.copy2(model_path, tmp / keras_name)
        settings = {"formats": list(formats), "calib": str(calib_path), "calib_size": calib_size,
                    "verify_size": verify_size, "threads": threads, "check": check}
        report = build_report(model_path=model_path, out=out, spec=spec, keras_file=keras_name, keras_acc=keras_acc,
                              calib_faces=len(faces.calib_x), pixel_range=faces.pixel_range, verify_faces=len(val),
                              rows=rows, failures=failures, settings=settings, keras_balanced=keras_balanced)
        if faces.val_votes is not None:
            report["keras"]["ferplus"] = ferplus_row(keras_probs, faces.val_votes)
        spec.extra["export"] = export_record(report)
        kept = _keep_earlier_exports(previous, spec.source_sha256, job.files, out)
        if kept:
            log(f"  kept {', '.join(a['format'] for a in kept)} from an earlier export of the same model")
        spec.extra["export"]["artifacts"] += kept
        report["artifacts"].update(_earlier_report_rows(out, {a["format"] for a in kept}))
        spec.save(tmp)
        report["seconds"] = round(time.time() - t_start, 1)
        (tmp / REPORT_JSON).write_text(json.dumps(report, indent=2) + "\n")
        (tmp / REPORT_MD).write_text(format_markdown(report))

        shutil.rmtree(work)
        out.mkdir(parents=True, exist_ok=True)
        moved = [p for p in tmp.iterdir() if p.name != SPEC_NAME] + [tmp / SPEC_NAME]  # sidecar last
        for p in moved:
            os.replace(p, out / p.name)
        _remove_stale_exports(out, job.files, {a["format"] for a in kept})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(format_table(report), flush=True)
    log(f"exported {len(rows)} file(s) to {out} in {report['seconds']:.0f}s ({REPORT_MD}, {SPEC_NAME})")
    return report
