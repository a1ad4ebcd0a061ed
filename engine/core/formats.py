"""The model artefacts: one table for export, the engine, the benchmarks and the docs.

Each row is one file a model folder can hold: its export name (`python -m export --formats`), the
engine's `--backend` / `--precision` that pick it, its file name, whether the pip wheel ships it, the
converter export runs to write it, and the limits export's parity check holds it to. Like Ultralytics'
`export_formats()`, everything else reads this table:

- export: `--formats` default, help and validation, which converter writes each file
  (`export/convert.py` maps the `converter` key to a function), the parity limits (`export/verify.py`);
- the engine: `--backend` / `--precision` choices and the file `resolve_model` picks from a folder
  (`artifact_name`);
- benchmarks/zoo.py: the files it times;
- the docs and the wheel: `tests/test_formats.py` checks README's format table and list, and
  pyproject.toml's package-data globs, against `name`, `file` and `in_wheel`.

Adding a format is adding a row (and a converter in export/convert.py; a new runtime also needs a
backend in engine/classify/classifier.py). This module imports nothing: `python -m export --help` stays fast.
"""
from __future__ import annotations

from dataclasses import dataclass

#: A float export must pick the same class as Keras on at least this share of faces ...
FLOAT_MIN_AGREEMENT = 0.995
#: ... of those where Keras' top class leads its runner-up by more than this: fp16 moves
#: probabilities by ~1e-3, so a near tie may swap without anything being wrong (a barely
#: trained model is mostly near ties).
FLOAT_TIE_MARGIN = 0.01
#: An int8 export may lose at most this much accuracy (absolute, 0.015 = 1.5 points).
INT8_MAX_DROP = 0.015
#: Probabilities of different batch sizes must agree this closely (same model, same runtime).
BATCH_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Artifact:
    """One model file: what it is called, what runs it, who writes it and how it is checked."""

    name: str  #: export's format name (`--formats`), e.g. "tflite-int8"
    backend: str  #: the engine's `--backend` that runs it
    runtime: str  #: the runtime library, as messages and reports name it
    precision: str  #: the engine's `--precision` that picks it from a folder
    file: str  #: the file name in a model folder
    in_wheel: bool  #: shipped in the pip wheel for engine/zoo/* (pyproject.toml package-data)
    converter: str | None  #: export/convert.py's key for the function that writes it; None: the source model
    min_agreement: float | None = None  #: floats: least top-1 agreement with Keras on clear faces
    max_drop: float | None = None  #: int8: most accuracy (absolute) it may lose against Keras
    max_batch_dp: float = BATCH_TOLERANCE  #: most |dp| between batch 1/4 and larger batches

    @property
    def exported(self) -> bool:
        """Written by `python -m export` (the Keras source is not)."""
        return self.converter is not None

    @property
    def suffix(self) -> str:
        return self.file[self.file.rindex("."):]


def _float(name, backend, runtime, precision, file, in_wheel, converter) -> Artifact:
    return Artifact(name, backend, runtime, precision, file, in_wheel, converter, min_agreement=FLOAT_MIN_AGREEMENT)


def _int8(name, backend, runtime, file, in_wheel, converter) -> Artifact:
    return Artifact(name, backend, runtime, "int8", file, in_wheel, converter, max_drop=INT8_MAX_DROP)


#: THE table, by export name, in export's order (onnx-int8 after onnx-fp32: it quantizes that file).
ARTIFACTS: dict[str, Artifact] = {a.name: a for a in (
    _float("tflite-fp32", "tflite", "LiteRT", "fp32", "emotion_fp32.tflite", False, "tflite"),
    _float("tflite-fp16", "tflite", "LiteRT", "fp16", "emotion_fp16.tflite", True, "tflite"),
    _int8("tflite-int8", "tflite", "LiteRT", "emotion_int8.tflite", True, "tflite"),
    _float("onnx-fp32", "onnx", "ONNX Runtime", "fp32", "emotion_fp32.onnx", False, "onnx_fp32"),
    _int8("onnx-int8", "onnx", "ONNX Runtime", "emotion_int8.onnx", True, "onnx_int8"),
    # The trained model itself: export reads it (and copies it when --out is another folder).
    Artifact("keras", "keras", "Keras", "fp32", "emotion.keras", False, None),
)}


def _width(precision: str) -> int:
    return int("".join(c for c in precision if c.isdigit()))


#: The engine's `--backend` names, in the table's order.
BACKENDS: tuple[str, ...] = tuple(dict.fromkeys(a.backend for a in ARTIFACTS.values()))
#: The engine's `--precision` names, narrowest (fastest) first: int8, fp16, fp32.
PRECISIONS: tuple[str, ...] = tuple(sorted({a.precision for a in ARTIFACTS.values()}, key=_width))
#: backend -> file suffix
SUFFIX: dict[str, str] = {a.backend: a.suffix for a in ARTIFACTS.values()}


def names(exported: bool = True) -> tuple[str, ...]:
    """Export's format names in canonical order (with `exported=False`, the Keras source row too)."""
    return tuple(a.name for a in ARTIFACTS.values() if a.exported or not exported)


def exported() -> tuple[Artifact, ...]:
    """The rows `python -m export` writes, in its order."""
    return tuple(a for a in ARTIFACTS.values() if a.exported)


def by_name(name: str) -> Artifact:
    """The row of an export name ("tflite-int8"); KeyError if there is none."""
    return ARTIFACTS[name]


def by_kind(backend: str, precision: str) -> Artifact | None:
    """The row the engine picks for `--backend` x `--precision`, or None where no export writes that pair.
    A backend with one file (keras) has it at every precision."""
    rows = [a for a in ARTIFACTS.values() if a.backend == backend]
    if len(rows) == 1:
        return rows[0]
    return next((a for a in rows if a.precision == precision), None)


def artifact_name(backend: str, precision: str) -> str:
    """File name export writes for a backend x precision (the engine finds it by this). A pair no
    export writes (onnx fp16) still gets the name it would have, so a folder search can say it is missing."""
    row = by_kind(backend, precision)
    return row.file if row is not None else f"emotion_{precision}{SUFFIX[backend]}"


def wheel_precisions() -> tuple[str, ...]:
    """Precisions the wheel carries files of (for messages): int8, fp16."""
    return tuple(p for p in PRECISIONS if any(a.in_wheel and a.precision == p for a in ARTIFACTS.values()))
