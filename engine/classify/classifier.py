"""Emotion classifiers behind one interface, one call per batch of faces.

Every backend takes the model contract's input (N, 48, 48, 1) raw pixels 0..255 and
returns (N, C) probabilities in the order of the model's `labels.json`. Export uses these
same classes to verify what it wrote, and the benchmarks time them, so what is verified
and measured is exactly what the engine runs.

TensorFlow is imported only by the Keras backend: a Pi runs tflite or onnx without it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.core.contract import FACE_SIZE, ModelSpec
from engine.core.errors import OptionError, UserError
# The artefact table (engine/core/formats.py) decides the file names; BACKENDS, PRECISIONS, SUFFIX and
# artifact_name stay importable from here, where they used to live.
from engine.core.formats import BACKENDS, PRECISIONS, SUFFIX, artifact_name, by_kind, wheel_precisions
from engine.core.preprocess import flip_average

#: Where the shipped models live; `fast` is the default everywhere.
ZOO = Path(__file__).resolve().parent.parent / "zoo"  # package data: engine/zoo
DEFAULT_MODEL = ZOO / "emonet_f"  # 2x fer's model per face even on plain AVX2 (emonet_n: 0.93x there)


@dataclass
class ClassifierOptions:
    model: str | os.PathLike = DEFAULT_MODEL  # a model file or an export directory
    backend: str = "tflite"
    precision: str = "int8"  # which file to pick from a directory
    threads: int = 1
    #: flip TTA: each face and its mirror image in one batched call, probabilities averaged. Twice
    #: the classifier time for steadier labels (a face's label less often hinges on the crop).
    tta: bool = False

    def __post_init__(self) -> None:
        """Checked when made, from the same tables the command line's choices come from (engine.core.formats)."""
        self.model = str(self.model)  # one form, however given: options compare and hash equal (a batch's resume key)
        if self.backend not in BACKENDS:
            raise OptionError("ClassifierOptions", "backend", f"unknown backend {self.backend!r}: choose from {', '.join(BACKENDS)}")
        if self.precision not in PRECISIONS:
            raise OptionError("ClassifierOptions", "precision", f"unknown precision {self.precision!r}: choose from {', '.join(PRECISIONS)}")
        if self.threads < 1:
            raise OptionError("ClassifierOptions", "threads", "must be at least 1")


def resolve_model(opts: ClassifierOptions) -> Path:
    """A file is used as given; a directory is searched for the backend x precision export."""
    path = Path(opts.model)
    if not path.exists():
        raise OptionError("ClassifierOptions", "model", f"{path} does not exist")
    if path.is_dir():
        candidate = path / artifact_name(opts.backend, opts.precision)
        if not candidate.is_file():
            have = sorted(p.name for p in path.iterdir() if p.suffix in SUFFIX.values())
            hint = ""
            row = by_kind(opts.backend, opts.precision)
            if row is not None and not row.in_wheel and (path.resolve().parent == ZOO.resolve() or row.backend == "keras"):
                hint = (f"; the pip package carries {'/'.join(wheel_precisions())} files only: float32 and .keras files "
                        "are in a checkout of the repository")
            raise OptionError("ClassifierOptions", "model", f"{path} has no {candidate.name} for backend {opts.backend} (it has: {', '.join(have) or 'no models'}){hint}")
        return candidate
    if path.suffix != SUFFIX[opts.backend]:
        raise OptionError("ClassifierOptions", "model", f"{path.name} is not a {SUFFIX[opts.backend]} file, which backend {opts.backend} needs")
    return path


def _shape_text(dims) -> str:
    """(64, 64, 3) / [np.int32(64), ...] / ['height', 48, 1] -> '64x64x3' for messages."""
    return "x".join(str(int(d)) if isinstance(d, (int, np.integer)) else str(d) for d in dims)


class Classifier:
    """Base: `predict(faces) -> probs`. Subclasses wrap one runtime each, set `backend` and, in their
    constructor, `runtime` (the `engine.core.types.Classifier` interface). `tta`: flip TTA (ClassifierOptions.tta)."""

    backend = ""
    runtime = ""

    def __init__(self, path: Path, spec: ModelSpec, tta: bool = False):
        self.path = path
        self.spec = spec
        self.labels: list[str] = list(spec.labels)
        self.tta = bool(tta)

    def predict(self, faces: np.ndarray) -> np.ndarray:
        faces = np.asarray(faces)
        if faces.ndim == 3:
            faces = faces[..., None]
        if faces.shape[1:] != (FACE_SIZE, FACE_SIZE, 1):
            raise ValueError(f"faces must be (N, {FACE_SIZE}, {FACE_SIZE}, 1), got {faces.shape}")
        if len(faces) == 0:
            return np.zeros((0, len(self.labels)), np.float32)
        probs = flip_average(self._run, faces) if self.tta else self._run(faces)
        if probs.shape != (len(faces), len(self.labels)):
            raise UserError(f"{self.path.name} outputs {probs.shape[1:]} values but labels.json lists {len(self.labels)} classes")
        return probs

    def _run(self, faces: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _check_width(self, n_out) -> None:
        """At load, not at the first face: the model's class count must match labels.json."""
        if isinstance(n_out, (int, np.integer)) and int(n_out) > 0 and int(n_out) != len(self.labels):
            raise UserError(f"{self.path.name} outputs {int(n_out)} classes but its labels.json lists {len(self.labels)}")

    def close(self) -> None:
        pass


class TFLiteClassifier(Classifier):
    backend = "tflite"

    def __init__(self, path: Path, spec: ModelSpec, threads: int = 1, tta: bool = False):
        super().__init__(path, spec, tta)
        from engine.core.litert import open_interpreter

        self._it, self.runtime = open_interpreter(path, threads, allocate=False)
        inp = self._it.get_input_details()[0]
        out = self._it.get_output_details()[0]
        # Checked before allocating, so a wrong model ends in one sentence, not runtime logs first.
        if [int(d) for d in inp["shape"][1:]] != [FACE_SIZE, FACE_SIZE, 1]:
            raise UserError(f"{path.name} takes input {_shape_text(inp['shape'][1:])}, not the contract's 48x48x1")
        try:
            self._it.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise UserError(f"{path} cannot be prepared by the TFLite runtime: {exc}") from None
        self._check_width(out["shape"][-1])
        if np.dtype(inp["dtype"]) not in (np.float32, np.uint8, np.int8):
            raise UserError(f"{path.name} takes {np.dtype(inp['dtype']).name} input; the engine feeds float32, uint8 or int8")
        if np.dtype(inp["dtype"]) != np.float32 and not inp.get("quantization", (0.0, 0))[0] > 0:
            raise UserError(f"{path.name} has an integer input without quantization parameters")
        self._in, self._out = inp["index"], out["index"]
        self._in_dtype = inp["dtype"]
        self._in_q = inp.get("quantization", (0.0, 0))
        self._out_q = out.get("quantization", (0.0, 0))
        self._batch = int(inp["shape"][0])
        self.input_dtype = np.dtype(self._in_dtype).name

    def _quantize(self, faces: np.ndarray) -> np.ndarray:
        scale, zero = self._in_q
        if self._in_dtype == np.float32:
            return faces.astype(np.float32, copy=False)
        if self._in_dtype == np.uint8 and scale == 1.0 and zero == 0:
            return faces.astype(np.uint8, copy=False)  # raw bytes straight in: the fast path
        info = np.iinfo(self._in_dtype)
        q = np.round(faces.astype(np.float32) / scale + zero)
        return np.clip(q, info.min, info.max).astype(self._in_dtype)

    def _run(self, faces: np.ndarray) -> np.ndarray:
        n = len(faces)
        if n != self._batch:
            self._it.resize_tensor_input(self._in, [n, FACE_SIZE, FACE_SIZE, 1], strict=False)
            self._it.allocate_tensors()
            self._batch = n
        self._it.set_tensor(self._in, self._quantize(faces))
        self._it.invoke()
        out = self._it.get_tensor(self._out)
        if out.dtype != np.float32:
            scale, zero = self._out_q
            out = (out.astype(np.float32) - zero) * scale
        return out


class OnnxClassifier(Classifier):
    backend = "onnx"
    runtime = "onnxruntime"

    def __init__(self, path: Path, spec: ModelSpec, threads: int = 1, tta: bool = False):
        super().__init__(path, spec, tta)
        try:
            import onnxruntime as ort
        except ImportError:
            raise OptionError("ClassifierOptions", "backend", "onnx needs onnxruntime: pip install onnxruntime") from None
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        try:
            self._sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own types for corrupt files
            raise UserError(f"{path} is not a loadable ONNX model ({type(exc).__name__})") from None
        inp = self._sess.get_inputs()[0]
        if [d if isinstance(d, int) else None for d in inp.shape[1:]] != [FACE_SIZE, FACE_SIZE, 1]:
            raise UserError(f"{path.name} takes input {_shape_text(inp.shape[1:])}, not the contract's 48x48x1")
        self._check_width(self._sess.get_outputs()[0].shape[-1])
        self._name = inp.name
        self._dtype = np.uint8 if "uint8" in inp.type else np.float32
        self.input_dtype = np.dtype(self._dtype).name

    def _run(self, faces: np.ndarray) -> np.ndarray:
        return self._sess.run(None, {self._name: faces.astype(self._dtype, copy=False)})[0]


class KerasClassifier(Classifier):
    """Debugging backend. Calls the model directly (never `model.predict` per frame, which
    builds a tf.data pipeline on every call and is a known Pi bottleneck)."""

    backend = "keras"
    runtime = "tensorflow"

    def __init__(self, path: Path, spec: ModelSpec, threads: int = 1, tta: bool = False):
        super().__init__(path, spec, tta)
        try:
            import tensorflow as tf
        except ImportError:
            raise OptionError("ClassifierOptions", "backend", "keras needs TensorFlow: pip install '.[train]'") from None
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
        except RuntimeError:  # TensorFlow already initialised in this process: keep its setting
            pass
        from engine.core.keras_io import load_keras

        self._model = load_keras(path)
        shape = list(self._model.input_shape[1:])
        if shape != [FACE_SIZE, FACE_SIZE, 1]:
            raise UserError(f"{path.name} takes input {_shape_text(shape)}, not the contract's 48x48x1")
        self._check_width(self._model.output_shape[-1])
        self._call = tf.function(lambda x: self._model(x, training=False), reduce_retracing=True)
        self._tf = tf
        self.input_dtype = "float32"

    def _run(self, faces: np.ndarray) -> np.ndarray:
        return self._call(self._tf.constant(faces, self._tf.float32)).numpy()


_CLASSES = {"tflite": TFLiteClassifier, "onnx": OnnxClassifier, "keras": KerasClassifier}


def create_classifier(opts: ClassifierOptions) -> Classifier:
    """Resolve the model file, read its labels.json and open it with the backend's runtime."""
    path = resolve_model(opts)
    spec = ModelSpec.load(path.parent)
    return _CLASSES[opts.backend](path, spec, opts.threads, tta=opts.tta)


def predict_batched(predict, faces: np.ndarray, batch: int = 64) -> np.ndarray:
    """`predict` (a Classifier's, or any faces -> probabilities function) over many faces, `batch` at a time:
    what export's verification and the benchmarks run over a validation split."""
    outs = [np.asarray(predict(faces[i : i + batch]), dtype=np.float32) for i in range(0, len(faces), batch)]
    return np.concatenate(outs)


def open_model_file(path: str | os.PathLike, threads: int = 1) -> Classifier:
    """Open any exported model file by its suffix (what export verification uses)."""
    path = Path(path)
    backend = {v: k for k, v in SUFFIX.items()}.get(path.suffix)
    if backend is None:
        raise UserError(f"{path.name}: unknown model format (expected .tflite, .onnx or .keras)")
    return create_classifier(ClassifierOptions(model=path, backend=backend, threads=threads))
