"""Export a trained Keras model to TFLite (fp32 / fp16 / int8) and ONNX (fp32 / int8), and
verify every file against Keras with the runtime that will run it.

    python -m export --model runs/n/emotion.keras [--out DIR] [--formats tflite-int8,onnx-fp32]

`export.run.export_model` is the library entry point (also used by `models.train --export`).
"""
from __future__ import annotations

__all__ = ["FORMATS", "export_model"]


def __getattr__(name: str):  # keep `import export` free of numpy/TF until something is used
    if name in __all__:
        from export import run

        return getattr(run, name)
    raise AttributeError(name)
