"""One place that finds a TFLite interpreter, lightest runtime first.

Order: `ai_edge_litert` (the maintained LiteRT wheel, works with numpy 2), then
`tflite_runtime` (2.14, numpy 1.x only), then `tensorflow.lite` (the full TensorFlow, only
when nothing lighter is installed: seconds of start-up and ~1.3 GB). A Pi installs
`pip install ".[tflite]"`, which brings ai-edge-litert.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from engine.core.errors import UserError

_warned: list[bool] = []  # the TensorFlow fallback is announced once per process
INSTALL_HINT = 'install ai-edge-litert (pip install ai-edge-litert, or pip install ".[tflite]")'


def interpreter_class():
    """(Interpreter class, runtime name) from the first runtime that imports."""
    errors = []
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai_edge_litert"
    except ImportError as exc:  # not installed, or built for another numpy
        errors.append(f"ai_edge_litert: {exc}")
    try:
        from tflite_runtime.interpreter import Interpreter

        return Interpreter, "tflite_runtime"
    except ImportError as exc:
        errors.append(f"tflite_runtime: {exc}")
    was_loaded = "tensorflow" in sys.modules  # export / the keras backend: nothing new to warn about
    try:
        import tensorflow as tf  # last resort: heavy

        if not _warned and not was_loaded:
            _warned.append(True)
            print(f"warning: no LiteRT runtime, using TensorFlow's interpreter (seconds of start-up, ~1 GB): {INSTALL_HINT}",
                  file=sys.stderr, flush=True)
        return tf.lite.Interpreter, "tensorflow.lite"
    except ImportError as exc:
        errors.append(f"tensorflow: {exc}")
    raise UserError(f"no TFLite runtime found: {INSTALL_HINT} ({'; '.join(errors)})")


def open_interpreter(path: str | os.PathLike, threads: int = 1, allocate: bool = True):
    """(interpreter, runtime name) for the .tflite file at `path`, using `threads` CPU threads.

    The name ("ai_edge_litert", "tflite_runtime" or "tensorflow.lite") is what detectors and
    classifiers report as their `runtime`. `allocate=False` leaves `allocate_tensors()` to the
    caller: the input details can be checked first, before the runtime applies its delegate
    (and logs about it)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model file {path} does not exist")
    cls, runtime = interpreter_class()
    try:
        interp = cls(model_path=str(path), num_threads=max(1, int(threads)))
        if allocate:
            interp.allocate_tensors()
    except ValueError as exc:  # what the runtimes raise for a file that is not a model
        raise UserError(f"{path} is not a TFLite model {runtime} can load: {exc}") from exc
    return interp, runtime
