"""Export a trained .keras model to TFLite and ONNX, and prove every file matches Keras.

`export_model` converts into a temporary folder next to the output folder, loads every
artifact back with its own runtime (LiteRT / ONNX Runtime through
`engine.classify.classifier.open_model_file`, the exact code the engine runs), compares it with
Keras on held-back validation faces, and only then moves the files into place. A failed
conversion or a failed parity check leaves the output folder as it was.

The formats, their file names and parity limits are the table in `engine/core/formats.py`; the steps:
`export/prepare.py` (arguments, the model, the faces), `export/convert.py` (one converter per
format), `export/verify.py` (each file against Keras), `export/report.py` (export_report.json/.md).
This module orchestrates them and owns what is already in the output folder (earlier exports kept
or removed); import each step's names from its own module.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from engine.core.contract import SPEC_NAME, ModelSpec, sha256_file
from engine.core.errors import UserError
from engine.core.formats import by_name, exported
from engine.core.logs import log
from export.convert import Job, convert_all, import_tf
from export.prepare import FORMATS, Faces, calib_source, check_options, load_checked_model, load_faces, parse_formats, source_spec
from export.report import REPORT_JSON, REPORT_MD, build_report, export_record, format_markdown, format_table
from export.verify import check_rows, ferplus_row, keras_probabilities, verify_all
from models.metrics import classification_report

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


@dataclass
class Reference:
    """Keras on the validation faces: what every exported file is compared with."""
    probs: np.ndarray
    accuracy: float
    balanced: float


def _keras_reference(model, val) -> Reference:
    """Keras's own answers and accuracy on the validation faces (logged: it takes a while on a big split)."""
    log(f"running Keras on {len(val)} validation faces...")
    probs = keras_probabilities(model, val.x)
    quality = classification_report(val.y, probs.argmax(1), val.labels)
    return Reference(probs, quality["accuracy"], quality["balanced_accuracy"])


def _convert_and_check(job: Job, formats: tuple[str, ...], faces: Faces, keras: Reference, threads: int, check: bool,
                       out: Path) -> tuple[dict, list[str]]:
    """Every format converted into the temporary folder and verified against Keras: (rows, failures).
    A failed parity check with `check` is a UserError (nothing written); without it, a warning."""
    convert_all(job, formats)
    rows = verify_all(job.files, faces.val, keras.probs, threads, job.io, faces.val_seen, faces.val_votes)
    failures = check_rows(rows, keras.accuracy)
    if failures and check:
        raise UserError(
            f"export check failed: {'; '.join(failures)}. Nothing was written to {out} (pass --no-check to export anyway)"
        )
    for f in failures:
        log(f"warning: {f} (--no-check: exporting anyway)")
    return rows, failures


def _keep_and_write_report(report: dict, spec: ModelSpec, previous: ModelSpec | None, files: dict, out: Path, tmp: Path,
                           t_start: float) -> set[str]:
    """labels.json's export record (earlier exports of the same model kept in it), export_report.json/.md,
    all in the temporary folder; returns the formats kept from an earlier export."""
    spec.extra["export"] = export_record(report)
    kept = _keep_earlier_exports(previous, spec.source_sha256, files, out)
    if kept:
        log(f"  kept {', '.join(a['format'] for a in kept)} from an earlier export of the same model")
    spec.extra["export"]["artifacts"] += kept
    report["artifacts"].update(_earlier_report_rows(out, {a["format"] for a in kept}))
    spec.save(tmp)
    report["seconds"] = round(time.time() - t_start, 1)
    (tmp / REPORT_JSON).write_text(json.dumps(report, indent=2) + "\n")
    (tmp / REPORT_MD).write_text(format_markdown(report))
    return {a["format"] for a in kept}


def _move_into_place(tmp: Path, out: Path, files: dict, kept: set[str]) -> None:
    """The temporary folder's files into `out` (labels.json last), then exports of another model removed."""
    shutil.rmtree(tmp / ".work")
    out.mkdir(parents=True, exist_ok=True)
    moved = [p for p in tmp.iterdir() if p.name != SPEC_NAME] + [tmp / SPEC_NAME]  # sidecar last
    for p in moved:
        os.replace(p, out / p.name)
    _remove_stale_exports(out, files, kept)


def _export_in(tmp: Path, model, model_path: Path, spec_src: ModelSpec, faces: Faces, keras: Reference, out: Path,
               settings: dict) -> tuple[dict, dict, ModelSpec]:
    """Every file of the export made in `tmp` (nothing in `out` yet): (report without the kept formats, files per
    format, the labels.json to write)."""
    (tmp / ".work").mkdir()
    spec = _export_spec(spec_src, model_path)
    spec.save(tmp)  # the runtimes' classifiers read it during verification

    job = Job(model, model_path.name, tuple(spec_src.labels), faces.calib_x, tmp, tmp / ".work")
    rows, failures = _convert_and_check(job, tuple(settings["formats"]), faces, keras, settings["threads"], settings["check"], out)
    keras_name = model_path.name
    if out.resolve() != model_path.parent.resolve():
        keras_name = by_name("keras").file
        shutil.copy2(model_path, tmp / keras_name)
    report = build_report(model_path=model_path, out=out, spec=spec, keras_file=keras_name, keras_acc=keras.accuracy,
                          calib_faces=len(faces.calib_x), pixel_range=faces.pixel_range, verify_faces=len(faces.val),
                          rows=rows, failures=failures, settings=settings, keras_balanced=keras.balanced)
    if faces.val_votes is not None:
        report["keras"]["ferplus"] = ferplus_row(keras.probs, faces.val_votes)
    return report, job.files, spec


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
    faces = load_faces(calib_path, tuple(spec_src.labels), calib_size, verify_size, cache_dir)
    keras = _keras_reference(model, faces.val)
    settings = {"formats": list(formats), "calib": str(calib_path), "calib_size": calib_size,
                "verify_size": verify_size, "threads": threads, "check": check}

    out_abs = out.resolve()
    previous = _previous_export(out)
    out_abs.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_abs.name}.export-", dir=out_abs.parent))
    try:
        report, files, spec = _export_in(tmp, model, model_path, spec_src, faces, keras, out, settings)
        kept = _keep_and_write_report(report, spec, previous, files, out, tmp, t_start)
        _move_into_place(tmp, out, files, kept)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(format_table(report), flush=True)
    # report["artifacts"] is every verified file's row, plus the rows of formats kept from an earlier export
    log(f"exported {len(report['artifacts'])} file(s) to {out} in {report['seconds']:.0f}s ({REPORT_MD}, {SPEC_NAME})")
    return report
