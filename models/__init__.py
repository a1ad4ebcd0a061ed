"""Training half of the project: data, architectures, training and evaluation.

Nothing in this package imports TensorFlow at import time: `models.contract` and
`models.preprocess` are shared with the runtime engine, which must run on a Raspberry Pi
without TensorFlow installed. Only `models.train`, `models.archs` and `models.evaluate`
pull in Keras.
"""
