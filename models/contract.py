"""Deprecated alias of `engine.contract`, where this module moved (the runtime is the bottom layer and
imports nothing from models/). Import from `engine.contract`; these names are the very same objects."""
from engine.contract import ALIASES, FACE_SIZE, FER_CLASSES, PRESETS, SPEC_NAME, ModelSpec, canonical_class, parse_classes, sha256_file  # noqa: F401

__all__ = ["ALIASES", "FACE_SIZE", "FER_CLASSES", "PRESETS", "SPEC_NAME", "ModelSpec", "canonical_class", "parse_classes", "sha256_file"]
