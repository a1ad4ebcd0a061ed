"""Training half of the project: data, architectures, training and evaluation.

It builds on the runtime below it: the model contract, preprocessing, errors, command-line
argument types and log silencing live in `engine/` (engine.core.contract, engine.core.preprocess,
engine.core.errors, engine.core.cliargs, engine.core.logs) so that the engine never imports this package. Nothing here imports TensorFlow at import
time except `models.archs` and `models.consistency` (Keras layers and a loss); the rest import it inside the functions
that need it. Training: `models.train` (the command line), `models.options` (TrainOptions), `models.trainer` (one
run), `models.finalize` (what a finished run writes); the PyTorch GPU teacher: `models.gpu_teacher` + `models.teacher`.
"""
