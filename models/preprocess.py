"""Deprecated alias of `engine.preprocess`, where this module moved (the runtime is the bottom layer and
imports nothing from models/). Import from `engine.preprocess`; these names are the very same objects."""
from engine.preprocess import flip_average, to_face48, to_gray  # noqa: F401

__all__ = ["flip_average", "to_face48", "to_gray"]
