"""Training half of the project: data, architectures, training and evaluation.

It builds on the runtime below it: the model contract, preprocessing, errors, command-line
argument types and log silencing live in `engine/` (engine.core.contract, engine.core.preprocess,
engine.core.errors, engine.core.cliargs, engine.core.logs) so that the engine never imports this package. Nothing here imports TensorFlow at import
time except `models.train`, `models.archs` and `models.evaluate`, which pull in Keras.
"""
