"""Export a trained .keras model to TFLite and ONNX, and prove every file matches Keras.

`export_model` converts into a temporary folder next to the output folder, loads every
artifact back with its own runtime (LiteRT / ONNX Runtime through
`engine.classifier.open_model_file`, the exact code the engine runs), compares it with
Keras on held-back validation faces, and only then moves the files into place. A failed
conversion or a failed parity check leaves the output folder as it was.

Formats (file names come from `engine.classifier.artifact_name`):

- `tflite-fp32`  float32 TFLite
- `tflite-fp16`  float16 weights, float32 compute/input/output
- `tflite-int8`  full-integer: int8 weights and activations calibrated on real training
  faces; uint8 input with scale 1.0 / zero point 0, so raw face bytes go straight in;
  float32 probabilities out
- `onnx-fp32`    tf2onnx, opset 17, dynamic batch
- `onnx-int8`    ONNX Runtime static QDQ quantization (uint8 activations, per-channel int8
  weights in 7 bits: exact on x86 without VNNI too) on the same calibration faces; float32 input and output
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from engine.classifier import artifact_name, open_model_file, predict_batched  # noqa: E402
from engine.contract import FACE_SIZE, FER_CLASSES, SPEC_NAME, ModelSpec, sha256_file  # noqa: E402
from engine.errors import UserError  # noqa: E402
from engine.keras_io import load_keras  # noqa: E402
from engine.logs import log, quiet  # noqa: E402
from models.data import IMAGE_EXTS, Dataset  # noqa: E402

FORMATS: tuple[str, ...] = ("tflite-fp32", "tflite-fp16", "tflite-int8", "onnx-fp32", "onnx-int8")
#: format -> (backend, precision) as the engine names them
FORMAT_KIND: dict[str, tuple[str, str]] = {f: (f.split("-")[0], f.split("-")[1]) for f in FORMATS}
ONNX_OPSET = 17
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
REPORT_JSON = "export_report.json"
REPORT_MD = "export_report.md"
SEED = 0


# --------------------------------------------------------------------------- helpers


def parse_formats(formats: str | Iterable[str] | None) -> tuple[str, ...]:
    """`"tflite-int8,onnx-fp32"` or a list -> canonical-order tuple; unknown names are a UserError."""
    if formats is None:
        return FORMATS
    names = formats.split(",") if isinstance(formats, str) else list(formats)
    names = [n.strip().lower() for n in names if n and n.strip()]
    unknown = [n for n in names if n not in FORMATS]
    if unknown:
        raise UserError(f"unknown format {unknown[0]!r}: choose from {', '.join(FORMATS)}")
    if not names:
        raise UserError(f"no format given: choose from {', '.join(FORMATS)}")
    return tuple(f for f in FORMATS if f in names)


def _import_tf():
    try:
        with quiet():
            import tensorflow as tf  # noqa: F401
    except ImportError:
        raise UserError("export needs TensorFlow, tf2onnx and onnx: pip install '.[train]'") from None
    import logging

    tf.get_logger().setLevel(logging.ERROR)
    try:
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
    except ImportError:
        pass
    return tf


def stratified_indices(y: np.ndarray, n: int, n_classes: int, seed: int = SEED) -> np.ndarray:
    """Up to n indices taken round-robin over the classes (each class shuffled), so rare
    classes are as present as common ones until they run out; sorted."""
    rng = np.random.default_rng(seed)
    pools = [list(rng.permutation(np.flatnonzero(y == c))) for c in range(n_classes)]
    picked: list[int] = []
    while len(picked) < n and any(pools):
        for pool in pools:
            if pool and len(picked) < n:
                picked.append(int(pool.pop()))
    return np.sort(np.asarray(picked, dtype=np.int64))


def _subset(ds: Dataset, idx: np.ndarray) -> Dataset:
    return Dataset(x=ds.x[idx], y=ds.y[idx], labels=ds.labels, source=ds.source)


def _check_calib_source(calib: str | os.PathLike, origin: str) -> Path:
    path = Path(calib).expanduser()
    where = f" (from {origin})" if origin else ""
    if not path.exists():
        raise UserError(f"calibration data {path}{where} does not exist")
    if path.is_dir():
        has_image = any(p.suffix.lower() in IMAGE_EXTS for p in path.rglob("*") if p.is_file())
        if not has_image:
            raise UserError(
                f"calibration folder {path}{where} has no images "
                f"(expected {path}/train/<class>/*.jpg and {path}/validation/<class>/*.jpg, or a fer2013.csv)"
            )
    return path


def _source_spec(model_path: Path) -> ModelSpec | None:
    if not (model_path.parent / SPEC_NAME).exists():
        return None
    return ModelSpec.load(model_path.parent)


def _default_calib(spec: ModelSpec | None) -> str | None:
    if spec is None:
        return None
    options = spec.extra.get("options") if isinstance(spec.extra, dict) else None
    data = options.get("data") if isinstance(options, dict) else None
    return str(data) if data else None


# --------------------------------------------------------------------------- converters


def _representative(x: np.ndarray):
    def gen():
        for i in range(len(x)):
            yield [x[i : i + 1].astype(np.float32)]

    return gen


def convert_tflite(model, precision: str, path: Path, calib_x: np.ndarray | None = None) -> None:
    tf = _import_tf()
    with quiet(f"the TFLite converter ({precision})"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Statistics for quantized inputs were expected..." and friends
        conv = tf.lite.TFLiteConverter.from_keras_model(model)
        if precision == "fp16":
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.target_spec.supported_types = [tf.float16]
        elif precision == "int8":
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.representative_dataset = _representative(calib_x)
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            conv.inference_input_type = tf.uint8
            conv.inference_output_type = tf.float32
        data = conv.convert()
    path.write_bytes(data)


def tflite_io(path: Path) -> dict:
    """Input/output dtype, quantization and shape signature of a .tflite, via the runtime."""
    from engine.litert import load_tflite_interpreter

    with quiet():
        it = load_tflite_interpreter(path, 1)
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    scale, zero = inp["quantization"]
    return {
        "input_dtype": np.dtype(inp["dtype"]).name,
        "input_quantization": [float(scale), int(zero)],
        "input_shape_signature": [int(d) for d in inp.get("shape_signature", inp["shape"])],
        "output_dtype": np.dtype(out["dtype"]).name,
    }


def _name_batch_dim(model_proto) -> None:
    """tf2onnx names the dynamic batch `unk__N`; call it `batch` for whoever reads the graph."""
    for vi in list(model_proto.graph.input) + list(model_proto.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if dims and not dims[0].dim_value:
            dims[0].dim_param = "batch"


def _set_onnx_props(path: Path, labels: Sequence[str], extra: dict) -> None:
    import onnx

    m = onnx.load(str(path))
    props = {"labels": json.dumps(list(labels)), "input": "N x 48 x 48 x 1 raw pixels 0..255 (float32)", **extra}
    del m.metadata_props[:]
    for k, v in props.items():
        entry = m.metadata_props.add()
        entry.key, entry.value = k, str(v)
    onnx.save(m, str(path))


def convert_onnx_fp32(model, path: Path, labels: Sequence[str]) -> None:
    tf = _import_tf()
    try:
        with quiet():
            import tf2onnx
    except ImportError:
        raise UserError("ONNX export needs tf2onnx and onnx: pip install '.[train]'") from None
    import logging

    tf2onnx.logging.set_level(logging.ERROR)
    name = getattr(model.inputs[0], "name", None) or "face"
    sig = (tf.TensorSpec((None, FACE_SIZE, FACE_SIZE, 1), tf.float32, name=name.split(":")[0]),)
    with quiet("tf2onnx"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        proto, _ = tf2onnx.convert.from_keras(model, input_signature=sig, opset=ONNX_OPSET)
    _name_batch_dim(proto)
    import onnx

    onnx.save(proto, str(path))
    _set_onnx_props(path, labels, {"precision": "fp32"})


class _CalibReader:
    """onnxruntime CalibrationDataReader over the calibration faces, 32 at a time."""

    def __init__(self, name: str, x: np.ndarray, batch: int = 32):
        self._batches = [x[i : i + batch].astype(np.float32) for i in range(0, len(x), batch)]
        self._name = name
        self._i = 0

    def get_next(self):
        if self._i >= len(self._batches):
            return None
        self._i += 1
        return {self._name: self._batches[self._i - 1]}

    def rewind(self):
        self._i = 0


def convert_onnx_int8(fp32_path: Path, path: Path, calib_x: np.ndarray, work: Path, labels: Sequence[str]) -> None:
    try:
        import onnx
        from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError:
        raise UserError("ONNX int8 export needs onnxruntime and onnx: pip install '.[train]'") from None

    class Reader(_CalibReader, CalibrationDataReader):
        pass

    pre = work / "pre_quant.onnx"
    with quiet("onnxruntime quantization"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=False)
        name = onnx.load(str(pre)).graph.input[0].name
        quantize_static(
            str(pre),
            str(path),
            Reader(name, calib_x),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            # uint8 activations x int8 weights (U8S8), with weights in 7 bits (reduce_range). On x86
            # without VNNI (AVX2, AVX-512 Skylake) ONNX Runtime's U8S8 kernels add pairs of u8 x s8
            # products in int16, which saturates with full-range weights: every shipped model lost
            # 3.4-5.6 points there (S8S8 as much) while the file checked out on the VNNI machine that
            # exported it. 7-bit weights cannot saturate (255 x 64 x 2 < 32768), cost nothing
            # measurable on VNNI or ARM, and keep U8S8's speed. benchmarks/int8_check.py proves it per CPU.
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            reduce_range=True,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
        )
    _set_onnx_props(path, labels, {"precision": "int8 (QDQ: uint8 activations, per-channel 7-bit int8 weights)"})


# --------------------------------------------------------------------------- verification


def _ms_per_face(clf, faces4: np.ndarray, min_seconds: float = 0.4, max_calls: int = 300) -> float:
    """Median time of one batch-4 call, per face, after a warm-up."""
    for _ in range(3):
        clf.predict(faces4)
    times = []
    start = time.perf_counter()
    while len(times) < max_calls and (len(times) < 10 or time.perf_counter() - start < min_seconds):
        t0 = time.perf_counter_ns()
        clf.predict(faces4)
        times.append(time.perf_counter_ns() - t0)
    return float(np.median(times)) / 1e6 / len(faces4)


def verify_artifact(path: Path, val: Dataset, keras_probs: np.ndarray, threads: int = 1) -> dict:
    """Run an exported file with its own runtime on the validation faces and compare with Keras."""
    with quiet():
        clf = open_model_file(path, threads)
    try:
        probs = predict_batched(clf.predict, val.x)
        p1 = clf.predict(val.x[:1])
        p4 = clf.predict(val.x[:4])
        batch_dp = max(float(np.abs(p1 - probs[:1]).max()), float(np.abs(p4 - probs[: len(p4)]).max()))
        ms = _ms_per_face(clf, val.x[:4] if len(val.x) >= 4 else np.repeat(val.x[:1], 4, axis=0))
        input_dtype = getattr(clf, "input_dtype", "")
    finally:
        clf.close()
    pred = probs.argmax(1)
    same = pred == keras_probs.argmax(1)
    top2 = np.sort(keras_probs, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > FLOAT_TIE_MARGIN
    return {
        "file": path.name,
        "bytes": path.stat().st_size,
        "size_kb": round(path.stat().st_size / 1024, 1),
        "accuracy": float((pred == val.y).mean()),
        "agreement": float(same.mean()),
        "agreement_clear": float(same[clear].mean()) if clear.any() else 1.0,
        "max_abs_dp": float(np.abs(probs - keras_probs).max()),
        "ms_per_face": round(ms, 4),
        "cpu_class": _cpu_class(),  # ms/face only means something next to the CPU class it was timed on
        "batch_1_4_max_dp": batch_dp,
        "input_dtype": input_dtype,
    }


def _cpu_class() -> str:
    from engine.cpu import isa_class

    return isa_class()


def _ms_text(r: dict) -> str:
    return f"{r['ms_per_face']:.3f} ({r.get('cpu_class') or 'CPU class not recorded'})"


def check_rows(rows: dict[str, dict], keras_acc: float) -> list[str]:
    """Every parity rule a row breaks, as one readable clause each."""
    failures = []
    for fmt, r in rows.items():
        if FORMAT_KIND[fmt][1] in ("fp32", "fp16"):
            agree = r.get("agreement_clear", r["agreement"])
            if agree < FLOAT_MIN_AGREEMENT:
                failures.append(
                    f"{fmt} agrees with Keras on only {agree * 100:.2f}% of the faces Keras is not torn on "
                    f"(needs {FLOAT_MIN_AGREEMENT * 100:.1f}%)"
                )
        elif keras_acc - r["accuracy"] > INT8_MAX_DROP:
            failures.append(
                f"{fmt} accuracy {r['accuracy'] * 100:.2f}% is {(keras_acc - r['accuracy']) * 100:.2f} points below "
                f"Keras {keras_acc * 100:.2f}% (limit {INT8_MAX_DROP * 100:.1f})"
            )
    return failures


def format_table(report: dict) -> str:
    head = f"{'format':<13}{'size KB':>9}{'accuracy':>10}{'agreement':>11}{'max|dp|':>10}  ms/face (CPU class)"
    lines = [head, "-" * len(head)]
    k = report["keras"]
    lines.append(f"{'keras':<13}{k['size_kb']:>9.1f}{k['accuracy'] * 100:>9.2f}%{'(ref)':>11}{'-':>10}{'-':>9}")
    for fmt, r in report["artifacts"].items():
        lines.append(
            f"{fmt:<13}{r['size_kb']:>9.1f}{r['accuracy'] * 100:>9.2f}%{r['agreement'] * 100:>10.2f}%"
            f"{r['max_abs_dp']:>10.2g}  {_ms_text(r)}"
        )
    return "\n".join(lines)


def format_markdown(report: dict) -> str:
    s = report["settings"]
    k = report["keras"]
    lines = [
        f"# Export report: {report['model']}",
        "",
        f"Verified on {report['verify_faces']} validation faces of `{s['calib']}`; int8 calibrated on "
        f"{report['calib_faces']} class-stratified training faces. Each file was run with its own runtime "
        f"(LiteRT / ONNX Runtime), {s['threads']} thread(s); ms/face at batch 4 on the CPU class named "
        f"(engine.cpu.ISA_CLASSES: milliseconds carry only between machines of one class; MACs carry everywhere).",
        "",
        "| format | file | size KB | accuracy | agreement with Keras | max abs dp | ms/face (CPU class) |",
        "|---|---|---:|---:|---:|---:|---:|",
        f"| keras (reference) | {k['file']} | {k['size_kb']:.1f} | {k['accuracy'] * 100:.2f}% | - | - | - |",
    ]
    for fmt, r in report["artifacts"].items():
        lines.append(
            f"| {fmt} | {r['file']} | {r['size_kb']:.1f} | {r['accuracy'] * 100:.2f}% | {r['agreement'] * 100:.2f}% "
            f"| {r['max_abs_dp']:.2g} | {_ms_text(r)} |"
        )
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


def _versions() -> dict:
    from importlib import metadata

    out = {}
    for pkg in ("tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "ai-edge-litert"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


# --------------------------------------------------------------------------- the export


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
    return [a for a in earlier if a.get("format") in FORMAT_KIND and a["format"] not in files
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
    for fmt in FORMATS:
        stale = out / artifact_name(*FORMAT_KIND[fmt])
        if fmt in files or fmt in kept or not stale.is_file():
            continue
        try:
            stale.unlink()
            log(f"  removed {stale.name}: left by an export of another model, labels.json no longer describes it")
        except OSError as exc:
            log(f"warning: could not remove {stale} ({exc.strerror or exc}): it belongs to another model, delete it")


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
    model_path = Path(model_path).expanduser()
    if not model_path.is_file():
        raise UserError(f"model file {model_path} does not exist")
    if calib_size < 1:
        raise UserError("--calib-size must be at least 1")
    if verify_size is not None and verify_size < 1:
        raise UserError("--verify-size must be at least 1")
    if threads < 1:
        raise UserError("--threads must be at least 1")
    out = Path(out_dir).expanduser() if out_dir else model_path.parent
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")

    spec_src = _source_spec(model_path)
    origin = ""
    if calib is None:
        calib = _default_calib(spec_src)
        origin = f"{model_path.parent / SPEC_NAME} extra.options.data"
        if calib is None:
            raise UserError("no calibration data: pass --calib DATA (a folder with train/ and validation/<class>/ images, or a fer2013.csv)")
    calib_path = _check_calib_source(calib, origin)

    t_start = time.time()
    tf = _import_tf()
    with quiet():
        model = load_keras(model_path)
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise UserError(f"{model_path.name} has {len(model.inputs)} inputs and {len(model.outputs)} outputs; the contract is one face batch in, one probability vector out")
    shape = [d for d in model.input_shape[1:]]
    if shape != [FACE_SIZE, FACE_SIZE, 1]:
        raise UserError(f"{model_path.name} takes input {'x'.join(str(d) for d in shape)}, not the contract's 48x48x1 gray faces")
    n_out = int(model.output_shape[-1])
    if spec_src is None:
        if n_out != len(FER_CLASSES):
            raise UserError(f"no {SPEC_NAME} next to {model_path} and its {n_out} outputs are not the 7 FER2013 classes: add a {SPEC_NAME}")
        log(f"warning: no {SPEC_NAME} next to {model_path}; assuming the 7 FER2013 classes in canonical order")
        spec_src = ModelSpec(labels=list(FER_CLASSES))
    labels = tuple(spec_src.labels)
    if n_out != len(labels):
        raise UserError(f"{model_path.name} outputs {n_out} values but its {SPEC_NAME} lists {len(labels)} classes")
    unknown = [c for c in labels if c not in FER_CLASSES]
    if unknown:
        raise UserError(f"{SPEC_NAME} lists unknown class {unknown[0]!r}")
    log(f"loaded {model_path} ({model.count_params():,} params, {len(labels)} classes: {', '.join(labels)})")

    from models.data import load_split

    log(f"loading calibration and validation faces from {calib_path}...")
    train = load_split(calib_path, "train", labels, cache_dir, quiet=True)
    val = load_split(calib_path, "validation", labels, cache_dir, quiet=True)
    cal = _subset(train, stratified_indices(train.y, calib_size, len(labels)))
    if verify_size is not None and verify_size < len(val):
        rng = np.random.default_rng(SEED)
        val = _subset(val, np.sort(rng.permutation(len(val))[:verify_size]))
    calib_x = cal.x.copy()
    pixel_range = [int(calib_x.min()), int(calib_x.max())]
    if pixel_range != [0, 255]:
        # The int8 input quantization is derived from the calibrated input range; pinning it to
        # 0..255 (one pixel each) gives scale 1.0 / zero point 0 so raw bytes go straight in.
        calib_x[0, 0, 0, 0], calib_x[0, 0, 1, 0] = 0, 255
        log(f"  calibration faces span {pixel_range[0]}..{pixel_range[1]}; pinned one pixel each to 0 and 255")

    log(f"running Keras on {len(val)} validation faces...")
    call = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    keras_probs = predict_batched(lambda xb: call(tf.constant(xb, tf.float32)).numpy(), val.x, batch=256)
    keras_acc = float((keras_probs.argmax(1) == val.y).mean())

    out_abs = out.resolve()
    previous = _previous_export(out)
    out_abs.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_abs.name}.export-", dir=out_abs.parent))
    try:
        work = tmp / ".work"
        work.mkdir()
        spec = ModelSpec(
            labels=list(labels),
            input_shape=list(spec_src.input_shape),
            input_range=list(spec_src.input_range),
            input_dtype=spec_src.input_dtype,
            arch=spec_src.arch,
            source_sha256=sha256_file(model_path),
            extra={k: v for k, v in (spec_src.extra or {}).items() if k != "export"},
        )
        spec.save(tmp)  # the runtimes' classifiers read it during verification

        files: dict[str, Path] = {}
        io_info: dict[str, dict] = {}
        for fmt in formats:
            backend, precision = FORMAT_KIND[fmt]
            path = tmp / artifact_name(backend, precision)
            t0 = time.time()
            if fmt == "tflite-int8":
                log(f"converting {fmt} (calibrating on {len(calib_x)} training faces)...")
            elif fmt == "onnx-int8":
                log(f"converting {fmt} (ONNX Runtime static QDQ, calibrating on {len(calib_x)} training faces)...")
            else:
                log(f"converting {fmt}...")
            try:
                if backend == "tflite":
                    convert_tflite(model, precision, path, calib_x)
                    io_info[fmt] = tflite_io(path)
                elif precision == "fp32":
                    convert_onnx_fp32(model, path, labels)
                else:
                    fp32 = tmp / artifact_name("onnx", "fp32") if "onnx-fp32" in files else work / "fp32.onnx"
                    if not fp32.exists():
                        convert_onnx_fp32(model, fp32, labels)
                    convert_onnx_int8(fp32, path, calib_x, work, labels)
            except UserError:
                raise
            except Exception as exc:  # converter internals: say which step failed, in one line
                msg = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
                raise UserError(f"converting {model_path.name} to {fmt} failed: {type(exc).__name__}: {msg}") from None
            files[fmt] = path
            log(f"  wrote {path.name} ({path.stat().st_size / 1024:.1f} KB) in {time.time() - t0:.1f}s")

        if "tflite-int8" in io_info:
            q = io_info["tflite-int8"]
            if q["input_dtype"] != "uint8" or abs(q["input_quantization"][0] - 1.0) > 1e-6 or q["input_quantization"][1] != 0:
                raise UserError(
                    f"the int8 TFLite input came out {q['input_dtype']} with quantization {tuple(q['input_quantization'])}, "
                    "not uint8 (1.0, 0): does the model start with a Rescaling layer that takes 0..255?"
                )

        rows: dict[str, dict] = {}
        for fmt, path in files.items():
            log(f"verifying {fmt} with {'LiteRT' if path.suffix == '.tflite' else 'ONNX Runtime'} on {len(val)} faces...")
            row = verify_artifact(path, val, keras_probs, threads)
            row.update(io_info.get(fmt, {}))
            row["sha256"] = sha256_file(path)
            if row["batch_1_4_max_dp"] > BATCH_TOLERANCE:
                raise UserError(f"{path.name} gives different results at batch 1/4 than in larger batches (max |dp| {row['batch_1_4_max_dp']:.3g})")
            rows[fmt] = row

        failures = check_rows(rows, keras_acc)
        if failures and check:
            raise UserError(
                f"export check failed: {'; '.join(failures)}. Nothing was written to {out} (pass --no-check to export anyway)"
            )
        for f in failures:
            log(f"warning: {f} (--no-check: exporting anyway)")

        keras_name = model_path.name
        copy_keras = out_abs != model_path.parent.resolve()
        if copy_keras:
            keras_name = artifact_name("keras", "fp32")
            shutil.copy2(model_path, tmp / keras_name)
        report = {
            "model": str(model_path),
            "out": str(out),
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "labels": list(labels),
            "arch": spec.arch,
            "source_sha256": spec.source_sha256,
            "calib_faces": int(len(calib_x)),
            "calib_pixel_range": pixel_range,
            "verify_faces": int(len(val)),
            "keras": {
                "file": keras_name,
                "size_kb": round(model_path.stat().st_size / 1024, 1),
                "accuracy": keras_acc,
            },
            "artifacts": rows,
            "failures": failures,
            "checks": "passed" if not failures else ("failed" if check else "failed (--no-check)"),
            "settings": {
                "formats": list(formats),
                "calib": str(calib_path),
                "calib_size": calib_size,
                "verify_size": verify_size,
                "threads": threads,
                "check": check,
                "onnx_opset": ONNX_OPSET,
                "tflite_int8": "full integer, uint8 input (scale 1.0, zero point 0), float32 output",
                "onnx_int8": "static QDQ, MinMax calibration, uint8 activations, per-channel int8 weights in 7 bits (reduce_range: exact without VNNI)",
                "float_min_agreement": FLOAT_MIN_AGREEMENT,
                "int8_max_drop": INT8_MAX_DROP,
            },
            "versions": _versions(),
            "seconds": 0.0,
        }
        spec.extra["export"] = {
            "date": report["date"],
            "settings": report["settings"],
            "keras_accuracy": keras_acc,
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
                for fmt, r in rows.items()
            ],
        }
        kept = _keep_earlier_exports(previous, spec.source_sha256, files, out)
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
        _remove_stale_exports(out, files, {a["format"] for a in kept})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(format_table(report), flush=True)
    log(f"exported {len(rows)} file(s) to {out} in {report['seconds']:.0f}s ({REPORT_MD}, {SPEC_NAME})")
    return report
