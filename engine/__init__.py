"""Realtime facial-emotion recognition engine (runtime half: no TensorFlow needed).

Integrators: `from engine.api import EmotionRecognizer, EngineOptions`.
Command line: `python -m engine.run --help`.
"""
