"""Deprecated alias of `engine.logs`, where this module moved (the runtime is the bottom layer and
imports nothing from models/). Import from `engine.logs`; these names are the very same objects."""
from engine.logs import log, quiet  # noqa: F401

__all__ = ["log", "quiet"]
