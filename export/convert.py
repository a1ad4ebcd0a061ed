"""One converter per artefact, picked through the table's `converter` key (engine/core/formats.py).

- `tflite` (tflite-fp32 / -fp16 / -int8): the TFLite converter; fp16 = float16 weights with float32
  compute/input/output; int8 = full integer, int8 weights and activations calibrated on real training
  faces, uint8 input with scale 1.0 / zero point 0 (raw face bytes go straight in), float32 probabilities out
- `onnx_fp32`: tf2onnx, opset 17, dynamic batch
- `onnx_int8`: ONNX Runtime static QDQ quantization of the fp32 file (uint8 activations, per-channel int8
  weights in 7 bits: exact on x86 without VNNI too) on the same calibration faces; float32 input and output
"""
from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from engine.core.contract import FACE_SIZE
from engine.core.errors import UserError
from engine.core.formats import Artifact, by_name
from engine.core.logs import log, quiet

ONNX_OPSET = 17


def import_tf():
    """TensorFlow, its logs quietened; a UserError with the install line if it is missing."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
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


# --------------------------------------------------------------------------- TFLite


def _representative(x: np.ndarray):
    def gen():
        for i in range(len(x)):
            yield [x[i : i + 1].astype(np.float32)]

    return gen


def convert_tflite(model, precision: str, path: Path, calib_x: np.ndarray | None = None) -> None:
    tf = import_tf()
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
    from engine.core.litert import open_interpreter

    with quiet():
        it = open_interpreter(path, 1)[0]
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    scale, zero = inp["quantization"]
    return {
        "input_dtype": np.dtype(inp["dtype"]).name,
        "input_quantization": [float(scale), int(zero)],
        "input_shape_signature": [int(d) for d in inp.get("shape_signature", inp["shape"])],
        "output_dtype": np.dtype(out["dtype"]).name,
    }


# --------------------------------------------------------------------------- ONNX


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
    tf = import_tf()
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
            # uint8 activations x uint8 weights (U8U8), weights in all 8 bits. The x86 kernels without VNNI
            # (AVX2, AVX-512 Skylake) add pairs of u8 x s8 products in int16, which saturates with full-range
            # int8 weights: every shipped model once lost 3.4-5.6 points there (S8S8 as much) while the file
            # checked out on the VNNI machine that exported it. U8U8 widens before it adds, so nothing
            # saturates on any CPU, and unlike 7-bit weights (U8S8 reduce_range, the earlier cure) it keeps
            # the 8th bit: the small fast nets agree with float on 98.5% of faces instead of 97.8%.
            # Cost: ~11% more instructions on AVX2; on AVX-512 VNNI, whose dot-product instruction is u8 x s8,
            # emonet_n 0.233 vs 0.169 ms/face and emonet_s 1.04 vs 0.48 (ONNX is not the default backend;
            # LiteRT's int8 is unaffected). benchmarks/int8_check.py proves exactness per CPU class.
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QUInt8,
            reduce_range=False,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
        )
    _set_onnx_props(path, labels, {"precision": "int8 (QDQ: uint8 activations, per-channel uint8 weights)"})


# --------------------------------------------------------------------------- dispatch


@dataclass
class Job:
    """What every converter reads, and what the conversions so far wrote."""

    model: object  #: the loaded Keras model
    model_name: str  #: its file name, for messages
    labels: tuple[str, ...]
    calib_x: np.ndarray
    folder: Path  #: where the files go (export's temporary folder)
    work: Path  #: scratch space inside it
    files: dict[str, Path] = field(default_factory=dict)  #: format -> file written
    io: dict[str, dict] = field(default_factory=dict)  #: format -> input/output facts for the report


def _write_tflite(job: Job, art: Artifact, path: Path) -> dict:
    convert_tflite(job.model, art.precision, path, job.calib_x)
    io = tflite_io(path)
    if art.precision == "int8" and (io["input_dtype"] != "uint8" or abs(io["input_quantization"][0] - 1.0) > 1e-6
                                    or io["input_quantization"][1] != 0):
        raise UserError(
            f"the int8 TFLite input came out {io['input_dtype']} with quantization {tuple(io['input_quantization'])}, "
            "not uint8 (1.0, 0): does the model start with a Rescaling layer that takes 0..255?"
        )
    return io


def _write_onnx_fp32(job: Job, art: Artifact, path: Path) -> dict:
    convert_onnx_fp32(job.model, path, job.labels)
    return {}


def _write_onnx_int8(job: Job, art: Artifact, path: Path) -> dict:
    """Quantizes the fp32 file written in this export, or a scratch one."""
    fp32 = next((p for f, p in job.files.items() if by_name(f).converter == "onnx_fp32"), job.work / "fp32.onnx")
    if not fp32.exists():
        convert_onnx_fp32(job.model, fp32, job.labels)
    convert_onnx_int8(fp32, path, job.calib_x, job.work, job.labels)
    return {}


#: the table's converter key -> the function that writes that artefact
CONVERTERS: dict[str, Callable[[Job, Artifact, Path], dict]] = {
    "tflite": _write_tflite,
    "onnx_fp32": _write_onnx_fp32,
    "onnx_int8": _write_onnx_int8,
}


def _how(art: Artifact, n_calib: int) -> str:
    if art.precision != "int8":
        return ""
    static = "ONNX Runtime static QDQ, " if art.converter == "onnx_int8" else ""
    return f" ({static}calibrating on {n_calib} training faces)"


def convert_all(job: Job, formats: Sequence[str]) -> None:
    """Write every format into `job.folder` (file names from the table), filling `job.files` and `job.io`.
    A converter's own exception becomes one UserError naming the format."""
    for fmt in formats:
        art = by_name(fmt)
        path = job.folder / art.file
        t0 = time.time()
        log(f"converting {fmt}{_how(art, len(job.calib_x))}...")
        try:
            io = CONVERTERS[art.converter](job, art, path)
        except UserError:
            raise
        except Exception as exc:  # converter internals: say which step failed, in one line
            msg = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
            raise UserError(f"converting {job.model_name} to {fmt} failed: {type(exc).__name__}: {msg}") from None
        if io:
            job.io[fmt] = io
        job.files[fmt] = path
        log(f"  wrote {path.name} ({path.stat().st_size / 1024:.1f} KB) in {time.time() - t0:.1f}s")
