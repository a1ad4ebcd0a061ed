"""Export a trained Keras model to TFLite (fp32 / fp16 / int8) and ONNX (fp32 / int8), and
verify every file against Keras with the runtime that will run it.

    python -m export --model runs/n/emotion.keras [--out DIR] [--formats tflite-int8,onnx-fp32]

`export.run.export_model` is the library entry point (also used by `models.train --export`); the
steps are export.prepare, export.convert, export.verify and export.report. Nothing is imported here,
so `import export` stays free of numpy and TensorFlow.
"""
